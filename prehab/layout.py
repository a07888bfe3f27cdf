"""The run layout: the one grammar of run folders (parameters -> path -> parameters) and the
names of the files steps write. Studies, the report and the workflow's rules all take their
paths from here (a run's name is its parameters, in `key~value` form):

    arch~A/seed~S/dense                                               dense model
    arch~A/seed~S/dense/method~svd/ratio~R                            plain SVD (no calibration)
    arch~A/seed~S/cal~C/ncal~N                                        calibration (grams.pt)
    arch~A/seed~S/cal~C/ncal~N/dense/method~svd-llm/ratio~R           SVD-LLM
    arch~A/seed~S/cal~C/ncal~N/prehab~P/lam~L/space~W                 Prehab (P=none, L=0: control;
                                                                      P a recipe: its lambda or 0)
    arch~A/seed~S/cal~C/ncal~N/prehab~P/lam~L/space~W/recal           its re-calibration
    arch~A/seed~S/cal~C/ncal~N/prehab~P/lam~L/space~W/method~svd-llm/ratio~R
    arch~A/seed~S/cal~C/ncal~N/prehab~P/lam~L/space~W/snap~F          the same model after a fraction
                                                                      F of its steps (then recal, cuts)
    <compressed>/lora~K                                               LoRA rehab of a compressed model
    <model>/eval                                                      evaluation (metrics.json)

Templates use `{field}` placeholders (the workflow's wildcards); FIELDS gives each field's
pattern, from which both the workflow's wildcard constraints and `parse_eval_dir` are built.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from prehab.method import names

# ---- file names -----------------------------------------------------------------------------
MODEL_FILE = "model.pt"  # checkpoint of every step that makes a model
METRICS_FILE = "metrics.json"  # what a step measured, its parameters and code version
GRAMS_FILE = "grams.pt"  # whitening index (calibrate): which factor file holds each layer's L, damping
FACTORS_FILE = "factors-{index:04d}.pt"  # whitening factors of one block, beside grams.pt
SCORES_FILE = "scores.json"  # per-row test (and validation) scores of an evaluation, for paired statistics
MECHANISM_FILE = "mechanism.json"  # per-layer mechanism readout of an SVD-LLM surgery (compress)
# The readout's per-model summary, as the compress step writes it into metrics.json and the report
# reads it (prehab/method/mechanism.py says what each holds).
MECH_KEYS = tuple("mech_" + key for key in (
    "tail_abs_sum", "tail_abs_median", "tail_rel_median", "tail_rel_total", "energy_sum", "energy_median",
    "move_w_median", "move_wl_median", "n_matrices"))
SPECTRA_FILE = "spectra.pt"  # whitened singular values before/after (prehab)
# Every file name a step writes at the top of its --out folder: a folder holding any other file
# belongs to someone else, and no step writes into it (prehab.outputs.check_out).
STEP_FILES = re.compile(r"(model\.pt|metrics\.json|grams\.pt|factors-\d{4}\.pt|scores\.json|mechanism\.json"
                        r"|spectra\.pt)")
EVAL_DIR = "eval"  # evaluation folder below a model
RECAL_DIR = "recal"  # re-calibration below a Prehab/control model


def extra_scores_key(label: str) -> str:
    """The SCORES_FILE key of an extra test set's rows (ArchSpec.extra_tests); "test" holds the
    architecture's own test split."""
    return f"test:{label}"


# ---- labels ---------------------------------------------------------------------------------
METHODS = ("dense", "svd", "svd-llm", "control", "prehab")
CONTROL_SURROGATE = "none"  # path label of the lambda = 0 control (no penalty, surrogate irrelevant)
NO_LORA = "none"
LORA_SCHEDULES = names.LORA_SCHEDULES

# ---- the grammar ----------------------------------------------------------------------------
FIELDS = {  # field -> regex of its value (one path segment)
    "arch": r"[^/]+",
    "seed": r"\d+",
    "cal": r"[^/]+",
    "ncal": r"\d+",
    "surrogate": r"[^/]+",
    "lam": r"[^/]+",
    "space": r"[^/]+",
    "snap": r"[^/]+",
    "method": "|".join(names.COMPRESSION_METHODS),
    "ratio": r"[^/]+",
    "lora": "|".join(LORA_SCHEDULES),
}
ROOT = "arch~{arch}/seed~{seed}"
DENSE = f"{ROOT}/dense"
CALIBRATION = f"{ROOT}/cal~{{cal}}/ncal~{{ncal}}"
PREHAB_PART = "prehab~{surrogate}/lam~{lam}/space~{space}"  # below a calibration
PREHABBED = f"{CALIBRATION}/{PREHAB_PART}"
SNAPSHOT_PART = "snap~{snap}"  # below a Prehab/control model: its snapshot after a fraction of its steps
SNAPSHOT = f"{PREHABBED}/{SNAPSHOT_PART}"
METHOD_PART = "method~{method}"  # below the model that was cut: one folder per method ...
RATIO_PART = "ratio~{ratio}"  # ... and one per ratio below it
CUT_PART = f"{METHOD_PART}/{RATIO_PART}"
LORA_PART = "lora~{lora}"  # below the compressed model


def fmt(value: float) -> str:
    """Canonical number text for paths and tables: 0.1, 1e-05, 10."""
    return f"{float(value):g}"


def regex(template: str) -> str:
    """The regex of a template: each `{field}` becomes a named group of its FIELDS pattern."""
    return re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m[1]}>{FIELDS[m[1]]})", re.escape(template))


def wildcard_constraints() -> dict[str, str]:
    """Patterns of the workflow's wildcards: the one-segment fields, and the multi-level parts
    (`start`: what SVD-LLM cuts below a calibration; `tuned`: a Prehab/control model or its
    snapshot below a calibration; `compressed`: <model>/method~M; `model`: an uncompressed model
    below arch/seed)."""
    plain = {name: pattern for name, pattern in FIELDS.items() if name != "method"}
    unnamed = lambda template: re.sub(r"\(\?P<\w+>", "(?:", regex(template))  # noqa: E731
    tuned = f"{unnamed(PREHAB_PART)}(?:/{unnamed(SNAPSHOT_PART)})?"
    return {
        **plain,
        "start": f"dense|{tuned}",
        "tuned": tuned,
        "compressed": r"(?:[^/]+/)*method~[^/]+",
        "model": r"(?!method~)[^/]+(?:/(?!method~)[^/]+)*",
    }


@dataclass(frozen=True)
class Run:
    """One evaluated model: its axes (None where an axis does not apply) and its folders."""

    arch: str
    seed: int
    method: str  # one of METHODS
    compressed: bool
    ratio: float | None = None
    lora: str = NO_LORA
    cal_source: str | None = None
    cal_samples: int | None = None
    surrogate: str | None = None
    lam: float | None = None
    space: str | None = None
    snapshot: float | None = None  # fraction of the Prehab/control run's steps (None: all of them)

    @property
    def model_dir(self) -> str:
        """The folder of the model (the uncompressed base, then its cut, then its LoRA)."""
        fields = dict(arch=self.arch, seed=self.seed, cal=self.cal_source, ncal=self.cal_samples,
                      surrogate=self.surrogate, lam=None if self.lam is None else fmt(self.lam), space=self.space)
        if self.method in ("dense", "svd"):  # plain SVD needs no calibration
            base = DENSE.format(**fields)
        elif self.method == "svd-llm":
            base = f"{CALIBRATION}/dense".format(**fields)
        elif self.snapshot is None:
            base = PREHABBED.format(**fields)
        else:
            base = SNAPSHOT.format(**fields, snap=fmt(self.snapshot))
        if not self.compressed:
            return base
        method = "svd" if self.method == "svd" else "svd-llm"
        path = f"{base}/{CUT_PART.format(method=method, ratio=fmt(self.ratio))}"
        return path if self.lora == NO_LORA else f"{path}/{LORA_PART.format(lora=self.lora)}"

    @property
    def eval_dir(self) -> str:
        return f"{self.model_dir}/{EVAL_DIR}"

    def axes(self) -> dict[str, Any]:
        return asdict(self)


# The uncompressed base of each kind of run, then its optional cut and LoRA, then eval/.
_BASES = {"dense": regex(DENSE), "svd-llm": regex(f"{CALIBRATION}/dense"),
          "prehab": regex(PREHABBED) + f"(?:/{regex(SNAPSHOT_PART)})?"}
_TAIL = f"(?:/{regex(CUT_PART)}(?:/{regex(LORA_PART)})?)?/{EVAL_DIR}"
_EVAL_DIRS = {kind: re.compile(base + _TAIL) for kind, base in _BASES.items()}


def parse_eval_dir(eval_dir: str) -> Run | None:
    """The Run whose `eval_dir` is `eval_dir` (the inverse of `Run.eval_dir`), else None."""
    for kind, pattern in _EVAL_DIRS.items():
        m = pattern.fullmatch(eval_dir)
        if m:
            break
    else:
        return None
    g = m.groupdict()
    try:
        cut = {"ratio": float(g["ratio"]), "lora": g["lora"] or NO_LORA} if g["method"] else {}
        common = dict(arch=g["arch"], seed=int(g["seed"]), compressed=bool(cut), **cut)
        if kind == "dense":  # the dense model and its plain SVD
            run = Run(method="svd" if cut else "dense", **common)
        elif kind == "svd-llm":  # SVD-LLM of the dense model: always a cut
            run = Run(method="svd-llm", cal_source=g["cal"], cal_samples=int(g["ncal"]), **common) if cut else None
        else:
            method = "control" if float(g["lam"]) == 0 else "prehab"  # a recipe's control keeps its label
            run = Run(method=method, cal_source=g["cal"], cal_samples=int(g["ncal"]), surrogate=g["surrogate"],
                      lam=float(g["lam"]), space=g["space"], snapshot=float(g["snap"]) if g["snap"] else None,
                      **common)
    except ValueError:  # a number field that is not a number
        return None
    return run if run is not None and run.eval_dir == eval_dir else None  # e.g. svd-llm below dense/
