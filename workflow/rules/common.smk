"""Helpers of the rules: folder patterns, the study grid, per-architecture CLI flags, targets.

The grid itself is prehab.studies (the same code `prehab report` uses to sort runs into
studies); this file only turns its run folders into file targets.
"""

import hashlib
import json
import os
import shlex
from pathlib import Path

import prehab
from prehab.studies import NO_LORA, fmt
from prehab.studies import expand as expand_studies


def source_hash(exclude=()):
    """sha256 (16 hex digits) of the installed package's *.py files, minus the top-level
    subpackages in `exclude`."""
    root = Path(prehab.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] not in exclude:
            digest.update(str(relative).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# In every rule's params, so a code change reruns the jobs it can affect (Snakemake does not
# track code inside an installed package). The steps never run prehab/report/; the report
# rules depend on all of the package.
CODE = source_hash(exclude=("report",))
CODE_REPORT = source_hash()

RUNS = config["runs_dir"]
LOGS = "results/logs"
BENCHMARKS = "results/benchmarks"
TABLES = "results/tables"
FIGURES = "results/figures"
MLFLOW_DB = "results/mlflow.db"
MLFLOW_ARTIFACTS = "results/mlflow-artifacts"
FIGURE_NAMES = [
    "metric_vs_ratio",
    "lambda_tradeoff",
    "spectra",
    "trajectories",
    "calibration_size",
]

# Folder patterns relative to RUNS: the path grammar of prehab/studies.py.
DENSE = "arch~{arch}/seed~{seed}/dense"
CALIBRATION = "arch~{arch}/seed~{seed}/cal~{cal}/ncal~{ncal}"
PREHABBED = f"{CALIBRATION}/prehab~{{surrogate}}/lam~{{lam}}/space~{{space}}"
SVD = f"{DENSE}/method~svd"
SVD_LLM = f"{CALIBRATION}/{{start}}/method~svd-llm"
COMPRESSED = (
    "arch~{arch}/seed~{seed}/{compressed}"  # <model>/method~M: cut at every ratio
)
MODEL = "arch~{arch}/seed~{seed}/{model}"


wildcard_constraints:
    arch=r"[^/]+",
    seed=r"\d+",
    cal=r"[^/]+",
    ncal=r"\d+",
    surrogate=r"[^/]+",
    lam=r"[^/]+",
    space=r"[^/]+",
    lora=r"joint|sequential",
    # multi-level wildcards, anchored on their key~value structure:
    start=r"dense|prehab~[^/]+/lam~[^/]+/space~[^/]+",
    compressed=r"(?:[^/]+/)*method~[^/]+",
    # evaluate's models are the uncompressed ones (compress and rehab evaluate their own):
    model=r"(?!method~)[^/]+(?:/(?!method~)[^/]+)*",


def run_file(folder, name):
    """A file of a run folder pattern, under the runs root."""
    return f"{RUNS}/{folder}/{name}"


def log_file(folder, rule_name):
    """Log of the rule writing `folder`, in a tree mirroring the runs."""
    return f"{LOGS}/{folder}/{rule_name}.log"


def benchmark_file(folder, rule_name):
    return f"{BENCHMARKS}/{folder}/{rule_name}.tsv"


# ---- the grid -------------------------------------------------------------------------------

for _name, _study in config["studies"].items():
    if not _study.get("enabled", True):
        continue
    _unknown = sorted(set(_study["archs"]) - set(config["archs"]))
    if _unknown:
        raise ValueError(
            f"studies.{_name}.archs: {_unknown} not in the top-level archs {config['archs']}; "
            "add them there or remove them from the study"
        )

GRID = expand_studies(config)
STUDIES = [
    name for name, study in config["studies"].items() if study.get("enabled", True)
]
# What `prehab report` / `prehab mlflow-log` need to rebuild the grid (defaults filled in).
STUDIES_JSON = json.dumps({"archs": config["archs"], "studies": config["studies"]})


def ratios(with_lora):
    """Sorted union of the ratios of the enabled studies (with_lora: of those running LoRA).

    A compress job cuts its model at every ratio of the union, and a rehab job recovers every
    LoRA ratio: one start-up and one SVD per layer instead of one job per ratio (a job's start-up
    alone is ~9 s here). Ratios no study lists for a model are reported as by-products.
    """
    values = {
        float(ratio)
        for study in config["studies"].values()
        if study.get("enabled", True)
        and (not with_lora or any(kind != NO_LORA for kind in study["lora"]))
        for ratio in study["ratios"]
    }
    return [fmt(ratio) for ratio in sorted(values)]


RATIOS = ratios(with_lora=False)
LORA_RATIOS = ratios(with_lora=True)


def per_ratio(folder, name, ratio_list):
    """`name` in folder/ratio~R (and below) for every R: a compress or rehab job's outputs."""
    return expand(
        run_file(f"{folder}/ratio~{{ratio}}", name),
        ratio=ratio_list,
        allow_missing=True,
    )


def big_models(paths):
    """Compressed/recovered model.pt files: temp() unless `keep_compressed` (they are big, and
    nothing after their evaluation needs them, except rehab, which Snakemake waits for).
    """
    return paths if config["keep_compressed"] else temp(paths)


def out_dirs(wildcards, output):
    """Params function: the quoted run folders of a per-ratio job, in output order."""
    return " ".join(shlex.quote(os.path.dirname(path)) for path in output.models)


def eval_metrics():
    """metrics.json of every evaluated model of the enabled studies."""
    return [run_file(folder, "metrics.json") for folder in GRID.runs]


def prehab_runs():
    """Folders of the Prehab and control models (uncompressed) of the grid."""
    return sorted(
        {
            run.model_dir
            for run in GRID.runs.values()
            if run.method in ("control", "prehab") and not run.compressed
        }
    )


def runs_root(wildcards, input):
    """Params function: the runs root as seen by the job (inferred from its first input, so
    it also holds with a storage prefix)."""
    tail = os.path.join(next(iter(GRID.runs)), "metrics.json")
    first = input.evals[0]
    assert first.endswith(os.sep + tail), (first, tail)
    return first[: -len(tail) - 1]


def final_output():
    return [
        *expand(f"{TABLES}/{{study}}.{{ext}}", study=STUDIES, ext=["csv", "md"]),
        f"{TABLES}/runs.csv",
        *expand(f"{FIGURES}/{{name}}.png", name=FIGURE_NAMES),
        MLFLOW_DB,
    ]


# ---- parameters -----------------------------------------------------------------------------


def flag(option, key):
    """Params function: `OPTION VALUE` from arch_settings.<arch>.<key>, or "" when absent/null
    (the CLI then uses its per-architecture default)."""

    def get(wildcards):
        value = (config["arch_settings"].get(wildcards.arch) or {}).get(key)
        return "" if value is None else f"{option} {shlex.quote(str(value))}"

    return get


def arch_opts(wildcards):
    """`--arch-opt KEY=VALUE` for each non-null arch_settings.<arch>.arch_opts entry."""
    opts = (config["arch_settings"].get(wildcards.arch) or {}).get("arch_opts") or {}
    return " ".join(
        f"--arch-opt {shlex.quote(f'{key}={value}')}"
        for key, value in sorted(opts.items())
        if value is not None
    )


def surrogate(wildcards):
    """The control's path label `none` runs lambda 0 with nuclear_fro (only logged)."""
    if wildcards.surrogate == "none":
        if float(wildcards.lam) != 0:
            raise ValueError(
                f"prehab~none is the lambda 0 control, got lam~{wildcards.lam}"
            )
        return "nuclear_fro"
    return wildcards.surrogate


# ---- input functions ------------------------------------------------------------------------


def svd_llm_source(wildcards):
    """The model SVD-LLM compresses: the dense model for start `dense` (it lives above the
    calibration folder), else the Prehab/control model at `<calibration>/<start>`."""
    folder = DENSE if wildcards.start == "dense" else f"{CALIBRATION}/{wildcards.start}"
    return run_file(folder, "model.pt").format(**dict(wildcards.items()))


def svd_llm_grams(wildcards):
    """The whitening of an SVD-LLM surgery: the dense calibration, or (config
    `prehab.recalibrate`) the same calibration re-done on the Prehab/control model."""
    if wildcards.start != "dense" and config["prehab"].get("recalibrate", True):
        folder = f"{CALIBRATION}/{wildcards.start}/recal"
    else:
        folder = CALIBRATION
    return run_file(folder, "grams.pt").format(**dict(wildcards.items()))
