"""Helpers of the rules: folder patterns, the study grid, per-architecture CLI flags, targets.

The grid itself is prehab.studies and the folder grammar prehab.layout (the same code
`prehab report` uses to sort runs into studies); this file only turns run folders into targets.
"""

import json
import os
import shlex
import sys

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from prehab import layout
from prehab.layout import NO_LORA, fmt
from prehab.provenance import source_hash, step_source_hash
from prehab.studies import FIGURES as FIGURE_NAMES
from prehab.method.names import NEEDS_RATIO
from prehab.method.recipes import RECIPES
from prehab.studies import (
    chosen_from_json,
    cli_penalty,
    confirming,
    report_studies,
    snapshot_fractions,
)
from prehab.studies import expand as expand_studies

# In every rule's params, so a code change reruns the jobs it can affect; a step's metrics.json
# records the same hash. The report rules depend on all of the package.
CODE = step_source_hash()
CODE_REPORT = source_hash()


def prehab_command():
    """How the rules call the package CLI. With `--sdm conda` the rule's environment
    (envs/prehab.yaml) has `prehab` on its PATH. Otherwise the interpreter running Snakemake,
    which has just imported prehab: `.venv/bin/snakemake` then needs no activated environment, and
    SLURM jobs (started with the same interpreter path on the shared file system) run the same.
    """
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "prehab"
    return f"{shlex.quote(sys.executable)} -m prehab"


PREHAB = prehab_command()

# Everything a config makes lives under its results_dir (the tiny config's never touches the
# committed results/).
RESULTS = config["results_dir"]
RUNS = f"{RESULTS}/runs"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"
MLFLOW_DB = f"{RESULTS}/mlflow.db"
MLFLOW_ARTIFACTS = f"{RESULTS}/mlflow-artifacts"

# Folder patterns relative to RUNS (prehab/layout.py); the multi-level wildcards: `start` is
# what SVD-LLM cuts below a calibration, `compressed` <model>/method~M (cut at every ratio),
# `model` an uncompressed model (compress and rehab evaluate their own outputs).
DENSE = layout.DENSE
CALIBRATION = layout.CALIBRATION
PREHABBED = layout.PREHABBED
TUNED = f"{CALIBRATION}/{{tuned}}"  # a Prehab/control model or its snapshot (snap~F)
RECALIBRATION = f"{TUNED}/{layout.RECAL_DIR}"
SNAPSHOT = layout.SNAPSHOT
SVD = f"{DENSE}/{layout.METHOD_PART.format(method='svd')}"
SVD_LLM = f"{CALIBRATION}/{{start}}/{layout.METHOD_PART.format(method='svd-llm')}"
COMPRESSED = f"{layout.ROOT}/{{compressed}}"
MODEL = f"{layout.ROOT}/{{model}}"
LORA = layout.LORA_PART
MODEL_FILE = layout.MODEL_FILE
METRICS_FILE = layout.METRICS_FILE
EVAL_METRICS = f"{layout.EVAL_DIR}/{layout.METRICS_FILE}"


wildcard_constraints:
    **layout.wildcard_constraints(),


def run_file(folder, name):
    """A file of a run folder pattern, under the runs root."""
    return f"{RUNS}/{folder}/{name}"


def log_file(folder, rule_name):
    """Log of the rule writing `folder`, in a tree mirroring the runs."""
    return f"{LOGS}/{folder}/{rule_name}.log"


def benchmark_file(folder, rule_name):
    return f"{BENCHMARKS}/{folder}/{rule_name}.tsv"


# ---- the grid -------------------------------------------------------------------------------

GRID = expand_studies(config)
STUDIES = [
    name for name, study in config["studies"].items() if study.get("enabled", True)
]
CONFIRMING = confirming(
    config
)  # studies whose phase B waits for the choose_lambda checkpoint
# What `prehab report` / `prehab mlflow-log` need to rebuild the grid (defaults filled in).
STUDIES_JSON = json.dumps(report_studies(config))
# The figures an enabled study declares: the report shows these (the others are written as a note).
REPORTED_FIGURES = [
    name
    for name in FIGURE_NAMES
    if any(name in config["studies"][study].get("figures", []) for study in STUDIES)
]
CAPTIONS = f"{RESULTS}/captions"


def caption(name):
    """The caption `prehab report --captions` wrote for a reported table or figure (absolute:
    Snakemake reads a relative caption path from the rule file's folder)."""
    return os.path.abspath(f"{CAPTIONS}/{name}.rst")


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
SNAPSHOTS = [fmt(f) for f in snapshot_fractions(config)]  # every prehab job saves these
LORA_RATIOS = ratios(with_lora=True)


def per_ratio(folder, name, ratio_list):
    """`name` in folder/ratio~R (and below) for every R: a compress or rehab job's outputs."""
    return expand(
        run_file(f"{folder}/{layout.RATIO_PART}", name),
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


def chosen_lambdas():
    """{study: {setting: lambda*}} of the studies with confirm_seeds, read from their
    `choose_lambda` checkpoint outputs (Snakemake re-plans once they exist)."""
    chosen = {}
    for study in CONFIRMING:
        with open(checkpoints.choose_lambda.get(study=study).output[0]) as f:
            chosen[study] = chosen_from_json(json.load(f)["lambda_star"])
    return chosen


def full_grid():
    """The grid with every study's phase B (GRID itself when no study has confirm_seeds)."""
    return expand_studies(config, chosen_lambdas()) if CONFIRMING else GRID


def eval_metrics(wildcards=None):
    """Input function: metrics.json of every evaluated model of the enabled studies."""
    return [run_file(folder, METRICS_FILE) for folder in full_grid().runs]


def prehab_runs():
    """Folders of the Prehab and control models (uncompressed) of the grid."""
    return sorted(
        {
            run.model_dir
            for run in full_grid().runs.values()
            if run.method in ("control", "prehab") and not run.compressed
        }
    )


def prehab_files(name):
    """Input function: file `name` of every Prehab and control model of the grid."""
    return lambda wildcards: [run_file(folder, name) for folder in prehab_runs()]


def phase_a_metrics(wildcards):
    """Input function of choose_lambda: metrics.json of the study's phase-A Prehab cuts without
    LoRA (GRID holds no phase-B Prehab run), what lambda* is chosen from."""
    return [
        run_file(folder, METRICS_FILE)
        for folder, run in GRID.runs.items()
        if wildcards.study in GRID.studies[folder]
        and run.method == "prehab"
        and run.compressed
        and run.lora == NO_LORA
        and run.snapshot is None
    ]


def runs_root(wildcards, input):
    """Params function: the runs root as seen by the job (inferred from its first input, so
    it also holds with a storage prefix). Before a choose_lambda checkpoint has run, Snakemake
    plans the job with the checkpoint's file as its input: RUNS until it re-plans."""
    first = input.evals[0]
    tails = [os.path.join(folder, METRICS_FILE) for folder in GRID.runs]
    tail = next((t for t in tails if first.endswith(os.sep + t)), None)
    return RUNS if tail is None else first[: -len(tail) - 1]


def final_output():
    # every figure is written, drawn or as a note saying why it is empty; with a study's phase B
    # pending, every run known before lambda* too, so they run beside phase A, not after it
    known = (
        [run_file(folder, METRICS_FILE) for folder in GRID.runs] if CONFIRMING else []
    )
    return [
        *known,
        *expand(f"{TABLES}/{{study}}.{{ext}}", study=STUDIES, ext=["csv", "md"]),
        f"{TABLES}/runs.csv",
        *expand(f"{FIGURES}/{{name}}.png", name=FIGURE_NAMES),
        MLFLOW_DB,
    ]


# ---- parameters -----------------------------------------------------------------------------


def flag(option, key, fallback=None):
    """Params function: `OPTION VALUE` from arch_settings.<arch>.<key> (null: from `fallback`,
    another key, when given), or "" when absent/null (the CLI then uses its per-architecture
    default)."""

    def get(wildcards):
        settings = config["arch_settings"].get(wildcards.arch) or {}
        value = settings.get(key)
        if value is None and fallback:
            value = settings.get(fallback)
        return "" if value is None else f"{option} {shlex.quote(str(value))}"

    return get


def compute_flags(wildcards):
    """Params function: a training step's --precision, --micro-batches and --recompute from
    arch_settings.<arch> (absent or null: the plain float32 whole-batch step)."""
    settings = config["arch_settings"].get(wildcards.arch) or {}
    flags = []
    if settings.get("precision"):
        flags.append(f"--precision {settings['precision']}")
    if settings.get("micro_batches"):
        flags.append(f"--micro-batches {settings['micro_batches']}")
    if settings.get("recompute"):
        flags.append("--recompute")
    return " ".join(flags)


# A training job's resources when arch_settings.<arch>.resources.<rule> leaves one out.
TRAINING_RESOURCES = {
    "gpus": 0,
    "processes": 1,
    "nodes": 1,
    "runtime": 60,
    "mem_mb": 8000,
}


def training_resource(rule, key):
    """Resources function: arch_settings.<arch>.resources.<rule>.<key>, else TRAINING_RESOURCES."""

    def get(wildcards):
        settings = config["arch_settings"].get(wildcards.arch) or {}
        return ((settings.get("resources") or {}).get(rule) or {}).get(
            key, TRAINING_RESOURCES[key]
        )

    return get


def gpu_request(rule, key):
    """Resources function of a training job's GPUs: on one node `gpu` (the executor's --gpus, the
    job's total), on several `gres` gpu:N (N per node: --gpus would let SLURM spread the total
    unevenly); the other key is 0 or empty."""
    gpus, nodes = training_resource(rule, "gpus"), training_resource(rule, "nodes")

    def get(wildcards):
        n, k = gpus(wildcards), nodes(wildcards)
        if key == "gpu":
            return n if k == 1 else 0
        return f"gpu:{n}" if k > 1 and n else ""

    return get


def task_count(rule):
    """Resources function: the job's tasks, its processes on every node."""
    processes = training_resource(rule, "processes")
    nodes = training_resource(rule, "nodes")

    def get(wildcards):
        return processes(wildcards) * nodes(wildcards)

    return get


def launcher(rule):
    """Params function, the command a training job calls the CLI with: `PREHAB`, or with more than one
    process (arch_settings.<arch>.resources.<rule>.processes, per node) torch's launcher, one process
    per GPU, a failed rank reported in one line (prehab/launch.py, prehab/distributed.py); on
    several nodes (`nodes`) srun starts one launcher per node, meeting on the job's first node.
    """
    processes = training_resource(rule, "processes")
    nodes = training_resource(rule, "nodes")

    def get(wildcards):
        n, k = processes(wildcards), nodes(wildcards)
        if n * k <= 1:
            return PREHAB
        python = "python" if PREHAB == "prehab" else shlex.quote(sys.executable)
        if k == 1:
            return f"{python} -m prehab.launch --processes {n}"
        return (
            f"srun --overlap --nodes {k} --ntasks-per-node 1 {python} -m prehab.launch --nodes {k} "
            f"--processes {n}"
        )

    return get


def section_flags(section, keys):
    """Params value: `--key-with-dashes VALUE` for each of `keys` set in config[section] (a key
    left out is not passed: the step's Options hold the one default)."""
    values = config.get(section) or {}
    flags = []
    for key in keys:
        value = values.get(key)
        if isinstance(value, bool):  # a switch: present or not
            flags += [f"--{key.replace('_', '-')}"] if value else []
        elif value is not None:
            flags.append(f"--{key.replace('_', '-')} {shlex.quote(str(value))}")
    return " ".join(flags)


def arch_opts(wildcards):
    """`--arch-opt KEY=VALUE` for each non-null arch_settings.<arch>.arch_opts entry."""
    opts = (config["arch_settings"].get(wildcards.arch) or {}).get("arch_opts") or {}
    return " ".join(
        f"--arch-opt {shlex.quote(f'{key}={value}')}"
        for key, value in sorted(opts.items())
        if value is not None
    )


def penalty_flags(wildcards):
    """`--surrogate S --lam L`, or `--recipe R` for a recipe's folder (prehab.studies.cli_penalty),
    with `--tail-ratio` (config prehab.tail_ratio) for the surrogates that price a truncation.
    """
    flags = cli_penalty(wildcards.surrogate, wildcards.lam)
    if wildcards.surrogate in NEEDS_RATIO:
        flags += f" --tail-ratio {config['prehab']['tail_ratio']}"
    return flags


def prehab_steps_flag(wildcards):
    """`--steps N`: arch_settings.<arch>.recipe_steps for a recipe's runs when set, else prehab_steps."""
    settings = config["arch_settings"].get(wildcards.arch) or {}
    if wildcards.surrogate in RECIPES and settings.get("recipe_steps") is not None:
        return flag("--steps", "recipe_steps")(wildcards)
    return flag("--steps", "prehab_steps")(wildcards)


def unless_recipe(params_function):
    """A params function that passes nothing for a recipe's runs (the recipe fixes lr and batch)."""
    return lambda wildcards: (
        "" if wildcards.surrogate in RECIPES else params_function(wildcards)
    )


# ---- input functions ------------------------------------------------------------------------


def svd_llm_source(wildcards):
    """The model SVD-LLM compresses: the dense model for start `dense` (it lives above the
    calibration folder), else the Prehab/control model at `<calibration>/<start>`."""
    folder = DENSE if wildcards.start == "dense" else f"{CALIBRATION}/{wildcards.start}"
    return run_file(folder, MODEL_FILE).format(**dict(wildcards.items()))


def svd_llm_grams(wildcards):
    """The whitening of an SVD-LLM surgery: the dense calibration, or (config
    `prehab.recalibrate`) the same calibration re-done on the Prehab/control model."""
    if wildcards.start != "dense" and config["prehab"]["recalibrate"]:
        folder = f"{CALIBRATION}/{wildcards.start}/{layout.RECAL_DIR}"
    else:
        folder = CALIBRATION
    return run_file(folder, layout.GRAMS_FILE).format(**dict(wildcards.items()))
