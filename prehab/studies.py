"""Named studies -> the set of evaluated models, each with its axes and its run folder.

A study is a sub-grid over the axes (arch, seed, method, surrogate, lambda, space, calibration
source and size, ratio, LoRA). The suite runs the UNION of the studies' grids: every model has
one folder whose path is its parameters in `key~value` form, so a model that two studies need
is one folder, made once, and the path alone says what it is (STYLE.md 12):

    arch~A/seed~S/dense                                               dense model
    arch~A/seed~S/dense/method~svd/ratio~R                            plain SVD (no calibration)
    arch~A/seed~S/cal~C/ncal~N                                        calibration (grams.pt)
    arch~A/seed~S/cal~C/ncal~N/dense/method~svd-llm/ratio~R           SVD-LLM
    arch~A/seed~S/cal~C/ncal~N/prehab~P/lam~L/space~W                 Prehab (P=none, L=0: control)
    arch~A/seed~S/cal~C/ncal~N/prehab~P/lam~L/space~W/method~svd-llm/ratio~R
    <compressed>/lora~K                                               LoRA rehab of a compressed model
    <model>/eval                                                      evaluation (metrics.json)

This module is plain Python (no Snakemake): the workflow imports it to build its targets and
`prehab report` uses it to know which rows belong to which study.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from prehab.errors import UsageError

METHODS = ("dense", "svd", "svd-llm", "control", "prehab")
CONTROL_SURROGATE = "none"  # path label of the lambda = 0 control (no penalty, surrogate irrelevant)
NO_LORA = "none"
# Models that shared jobs make but no study names (a compress job cuts every ratio of the
# union, so a ratio-0.6 study's model is also cut at main's ratios): reported under this name.
BY_PRODUCTS = "by-products"


def fmt(value: float) -> str:
    """Canonical number text for paths and tables: 0.1, 1e-05, 10."""
    return f"{float(value):g}"


@dataclass(frozen=True)
class Run:
    """One evaluated model: its axes (None where an axis does not apply) and its folder."""

    arch: str
    seed: int
    method: str  # dense | svd | svd-llm | control | prehab
    compressed: bool
    ratio: float | None = None
    lora: str = NO_LORA
    cal_source: str | None = None
    cal_samples: int | None = None
    surrogate: str | None = None
    lam: float | None = None
    space: str | None = None

    @property
    def model_dir(self) -> str:
        root = f"arch~{self.arch}/seed~{self.seed}"
        if self.method in ("dense", "svd"):  # plain SVD needs no calibration
            base = f"{root}/dense"
        else:
            cal = f"{root}/cal~{self.cal_source}/ncal~{self.cal_samples}"
            if self.method == "svd-llm":
                base = f"{cal}/dense"
            else:
                base = f"{cal}/prehab~{self.surrogate}/lam~{fmt(self.lam)}/space~{self.space}"
        if not self.compressed:
            return base
        method = "svd" if self.method == "svd" else "svd-llm"
        path = f"{base}/method~{method}/ratio~{fmt(self.ratio)}"
        return path if self.lora == NO_LORA else f"{path}/lora~{self.lora}"

    @property
    def eval_dir(self) -> str:
        return f"{self.model_dir}/eval"

    def axes(self) -> dict[str, Any]:
        return asdict(self)


_EVAL_DIR = re.compile(
    r"arch~(?P<arch>[^/]+)/seed~(?P<seed>\d+)/"
    r"(?:dense|cal~(?P<cal>[^/]+)/ncal~(?P<ncal>\d+)/"
    r"(?:(?P<cal_dense>dense)|prehab~(?P<surrogate>[^/]+)/lam~(?P<lam>[^/]+)/space~(?P<space>[^/]+)))"
    r"(?:/method~(?P<method>svd|svd-llm)/ratio~(?P<ratio>[^/]+)(?:/lora~(?P<lora>[^/]+))?)?/eval"
)


def parse_eval_dir(eval_dir: str) -> Run | None:
    """The Run whose `eval_dir` is `eval_dir` (the inverse of the path grammar), else None."""
    m = _EVAL_DIR.fullmatch(eval_dir)
    if not m:
        return None
    g = m.groupdict()
    try:
        cut = {"ratio": float(g["ratio"]), "lora": g["lora"] or NO_LORA} if g["method"] else {}
        common = dict(arch=g["arch"], seed=int(g["seed"]), compressed=bool(cut), **cut)
        if g["cal"] is None:  # the dense model and its plain SVD
            if g["method"] == "svd-llm":
                return None
            run = Run(method="svd" if g["method"] else "dense", **common)
        elif g["cal_dense"]:  # SVD-LLM of the dense model
            if g["method"] != "svd-llm":
                return None
            run = Run(method="svd-llm", cal_source=g["cal"], cal_samples=int(g["ncal"]), **common)
        else:
            method = "control" if g["surrogate"] == CONTROL_SURROGATE else "prehab"
            run = Run(method=method, cal_source=g["cal"], cal_samples=int(g["ncal"]), surrogate=g["surrogate"],
                      lam=float(g["lam"]), space=g["space"], **common)
    except ValueError:  # a number field that is not a number
        return None
    return run if run.eval_dir == eval_dir else None  # e.g. svd under a calibration: not ours


@dataclass
class StudyRuns:
    """The union of all studies: run folder -> Run, and run folder -> names of studies using it."""

    runs: dict[str, Run] = field(default_factory=dict)
    studies: dict[str, list[str]] = field(default_factory=dict)

    def add(self, study: str, run: Run) -> None:
        self.runs.setdefault(run.eval_dir, run)
        names = self.studies.setdefault(run.eval_dir, [])
        if study not in names:
            names.append(study)

    def of_study(self, study: str) -> list[Run]:
        return [self.runs[p] for p, names in self.studies.items() if study in names]


def study_runs(name: str, study: dict[str, Any], all_archs: Iterable[str]) -> list[Run]:
    """Expand one study's sub-grid (schema-validated dict) into its runs."""
    archs = study.get("archs") or list(all_archs)
    methods = study["methods"]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UsageError(f"study {name}: unknown methods {unknown}; allowed: {', '.join(METHODS)}")
    cal = study["calibration"]
    pre = study["prehab"]
    out: list[Run] = []
    for arch, seed in itertools.product(archs, study["seeds"]):
        if "dense" in methods:
            out.append(Run(arch, seed, "dense", compressed=False))
        for source, n in itertools.product(cal["source"], cal["samples"]):
            uncompressed = []
            if "control" in methods:  # one per space: lambda 0 with the same parametrisation
                for space in pre["space"]:
                    uncompressed.append(dict(surrogate=CONTROL_SURROGATE, lam=0.0, space=space, method="control"))
            if "prehab" in methods:
                for sur, lam, space in itertools.product(pre["surrogate"], pre["lam"], pre["space"]):
                    if float(lam) == 0:
                        raise UsageError(f"study {name}: lambda 0 is the control; list method `control` instead")
                    uncompressed.append(dict(surrogate=sur, lam=float(lam), space=space, method="prehab"))
            for u in uncompressed:
                out.append(Run(arch, seed, compressed=False, cal_source=source, cal_samples=n, **u))
            for ratio, lora in itertools.product(study["ratios"], study["lora"]):
                if "svd-llm" in methods:
                    out.append(Run(arch, seed, "svd-llm", True, ratio, lora, source, n))
                for u in uncompressed:
                    out.append(Run(arch, seed, compressed=True, ratio=ratio, lora=lora,
                                   cal_source=source, cal_samples=n, **u))
        if "svd" in methods:
            for ratio, lora in itertools.product(study["ratios"], study["lora"]):
                out.append(Run(arch, seed, "svd", True, ratio, lora))
    return out


def expand(config: dict[str, Any]) -> StudyRuns:
    """All enabled studies of a workflow config, deduplicated by folder."""
    union = StudyRuns()
    for name, study in config["studies"].items():
        if not study.get("enabled", True):
            continue
        for run in study_runs(name, study, config["archs"]):
            union.add(name, run)
    return union
