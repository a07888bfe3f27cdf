"""What each MLflow run holds, read from the run folders; nothing here writes to MLflow.

An MLflow run belongs to exactly one experiment, so an evaluated model gets one run in EVERY
study (experiment) that uses it, each with the same tags, params and metrics: a study's
experiment then shows all of its models side by side, and `tags.studies` names the others. The
model runs are not nested under a study run: the runs table folds nested runs under their
parent's row, which would hide the very models the experiment is for. Each study instead has
one run of its own (`prehab.role` = study) holding its settings as params and its tables and
figures as artifacts.

A run is identified within its experiment by `prehab.key` (the evaluated model's folder, or
the study) and carries the sha256 of everything it logs (`prehab.import_sha256`), so an import
can tell an unchanged run from a changed one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from prehab.errors import UsageError
from prehab.layout import METRICS_FILE, NO_LORA
from prehab.report.collect import Record

NA = "-"  # tag/param value of something that does not apply to a run (e.g. lam of a dense model)
ROLE, KEY, FINGERPRINT = "prehab.role", "prehab.key", "prehab.import_sha256"
MODEL, STUDY = "model", "study"  # values of ROLE
CURVE_KEYS = ("task_loss", "surrogate", "lambda", "entropy_rank")  # the Prehab step's training curve
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
# Run-name tokens, in name order. The axes of NAMED are shown wherever they apply; the others
# only where they vary between the runs of the experiment (a short name that stays distinct).
TOKENS = {"arch": "{}", "method": "{}", "surrogate": "{}", "lam": "λ{:g}", "space": "{}", "snapshot": "snap{:g}",
          "cal_source": "cal:{}", "cal_samples": "n{}", "ratio": "R{:g}", "lora": "+{}", "seed": "s{}"}
NAMED = ("arch", "method", "surrogate", "lam", "ratio", "lora", "seed")


@dataclass
class RunSpec:
    """One MLflow run as it should be: `study` names its experiment, `key` identifies it there."""

    study: str
    role: str  # MODEL or STUDY
    key: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: list[tuple[str, float, int]]  # (key, value, step)
    start_ms: int
    end_ms: int
    artifacts: list[Path] = field(default_factory=list)
    axes: dict[str, Any] = field(default_factory=dict)  # what the run name is made of (models only)
    name: str = ""

    def fingerprint(self) -> str:
        """sha256 of everything the run logs, artifact contents included."""
        content = {"name": self.name, "tags": self.tags, "params": self.params, "metrics": self.metrics,
                   "start": self.start_ms, "end": self.end_ms,
                   "artifacts": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.artifacts}}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()

    def all_tags(self) -> dict[str, str]:
        return {**self.tags, ROLE: self.role, KEY: self.key, FINGERPRINT: self.fingerprint()}


def text(value: Any) -> str:
    """A tag or param value: numbers as %g, lists as JSON, None as NA."""
    if value is None:
        return NA
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return json.dumps(value)
    return str(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)  # inf is kept: MLflow stores it (as +/-max float in SQL)
    except (TypeError, ValueError):
        return None


def _flat(options: dict[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
    """(prefix.key, text) for every option, nested dicts as prefix.key.inner."""
    for key, value in options.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}", text(value)[:MAX_PARAM_LENGTH]


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not valid JSON ({err})") from None


def step_chain(runs_dir: Path, eval_dir: str) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, metrics.json) of the steps an evaluated model sits below, nearest first, one per
    step kind (a Prehab snapshot's own record, not its full run's): the step that made the model,
    then its cut, Prehab run and calibration where it has them."""
    chain, seen = [], set()
    folder = (runs_dir / eval_dir).parent
    while folder != runs_dir and runs_dir in folder.parents:
        path = folder / METRICS_FILE
        if path.is_file():
            record = _read(path)
            if record.get("step") not in seen:
                seen.add(record.get("step"))
                chain.append((folder, record))
        folder = folder.parent
    return chain


def step_params(evaluation: dict[str, Any], chain: list[tuple[Path, dict[str, Any]]]) -> dict[str, str]:
    """`<step>.<option>` for every option every step behind the model recorded (its chain's
    records, then the history the model carries, which adds the pretraining), and
    `evaluate.<option>`. A step records an option it added later only when it is set, so such
    an option is absent from runs that did not use it."""
    params: dict[str, str] = {}
    recorded = [(record["step"], record.get("params") or {}) for _, record in chain if record.get("step")]
    history = [(step["step"], {k: v for k, v in step.items() if k != "step"})
               for step in evaluation.get("history") or [] if step.get("step")]
    for step, options in [*recorded, *history, ("evaluate", evaluation.get("params") or {})]:
        for key, value in _flat(options, step):
            params.setdefault(key, value)
    return params


def model_metrics(evaluation: dict[str, Any], chain: list[tuple[Path, dict[str, Any]]]) -> list[tuple[str, float, int]]:
    """The evaluation's numbers (plain names), each chain step's numbers and wall time
    (`<step>_<name>`), and the Prehab step's training curve (`curve_<name>`, by step)."""
    out = []
    for key, value in (evaluation.get("metrics") or {}).items():
        if (x := _float(value)) is not None:
            out.append((key, x, 0))
    if (wall := _float(evaluation.get("wall_time_s"))) is not None:
        out.append(("eval_wall_time_s", wall, 0))
    for _, record in chain:
        step = record["step"]
        numbers = {**(record.get("metrics") or {}), "wall_time_s": record.get("wall_time_s")}
        out += [(f"{step}_{key}", x, 0) for key, value in numbers.items() if (x := _float(value)) is not None]
        if step == "prehab":
            for point in record.get("curve") or []:
                at = int(point.get("step", 0))
                out += [(f"curve_{key}", x, at) for key in CURVE_KEYS if (x := _float(point.get(key))) is not None]
    return out


def span_ms(eval_path: Path, evaluation: dict[str, Any], chain: list[tuple[Path, dict[str, Any]]]) -> tuple[int, int]:
    """(start, end) in ms: the run ends when its evaluation was written (the records hold wall
    seconds but no clock times, so the file's mtime) and lasts the wall time of the step that
    made the model plus its evaluation's."""
    made_by = [record for folder, record in chain if folder == eval_path.parent.parent]
    seconds = sum(_float(r.get("wall_time_s")) or 0.0 for r in [evaluation, *made_by])
    end = int(eval_path.stat().st_mtime * 1000)
    return end - int(round(seconds * 1000)), end


def model_tags(rec: Record, cfg_hash: str) -> dict[str, str]:
    tags = {axis: text(v) for axis, v in rec.run.axes().items()}
    code = rec.data.get("code") or {}
    tags.update(studies=",".join(rec.studies), eval_dir=rec.eval_dir, metric=str(rec.data["metrics"]["metric"]),
                config_sha256=cfg_hash, code_version=str(code.get("prehab_version", "unknown")),
                code_source_sha256=str(code.get("source_sha256", "unknown")),
                code_git_commit=str(code.get("git_commit", "unknown")))
    return tags


def model_runs(records: list[Record], runs_dir: Path, cfg_hash: str) -> list[RunSpec]:
    """One RunSpec per (study using it, evaluated model), named per study (`name_runs`)."""
    specs = []
    for rec in records:
        eval_path = runs_dir / rec.eval_dir / METRICS_FILE
        chain = step_chain(runs_dir, rec.eval_dir)
        start, end = span_ms(eval_path, rec.data, chain)
        params = {f"axis.{k}": text(v) for k, v in rec.run.axes().items()}
        params.update(step_params(rec.data, chain))
        metrics = model_metrics(rec.data, chain)
        tags = model_tags(rec, cfg_hash)
        for study in rec.studies:
            specs.append(RunSpec(study, MODEL, rec.eval_dir, {**tags, "study": study}, params, metrics, start, end,
                                 axes=rec.run.axes()))
    name_runs(specs)
    return specs


def prehab_chain_missing(runs_dir: Path, rec: Record) -> bool:
    """A Prehab/control model whose Prehab step's metrics.json (its curve) is not beside it."""
    steps = {record.get("step") for _, record in step_chain(runs_dir, rec.eval_dir)}
    return rec.run.method in ("prehab", "control") and "prehab" not in steps


def _token(axis: str, value: Any) -> str | None:
    if value is None or (axis == "lora" and value == NO_LORA):
        return None
    return TOKENS[axis].format(value)


def _varying(runs: list[RunSpec], with_none: bool) -> set[str]:
    """The axes taking more than one value over `runs` (not counting None, unless `with_none`)."""
    return {axis for axis in TOKENS
            if len({text(r.axes.get(axis)) for r in runs if with_none or r.axes.get(axis) is not None}) > 1}


def _name(spec: RunSpec, shown: set[str]) -> str:
    return " ".join(t for axis in TOKENS if axis in shown and (t := _token(axis, spec.axes.get(axis))) is not None)


def name_runs(specs: list[RunSpec]) -> None:
    """Name every model run, e.g. `vit-tiny prehab nuclear λ1 R0.5 +joint s0`: the NAMED axes it
    has, plus any other axis taking several values within its study; runs that still share a
    name also show the axes that tell them apart (a Prehab run and its snapshot), so names are
    distinct within a study (the folder, should that ever fail)."""
    by_study: dict[str, list[RunSpec]] = {}
    for spec in specs:
        by_study.setdefault(spec.study, []).append(spec)
    for runs in by_study.values():
        shown = set(NAMED) | _varying(runs, with_none=False)
        same: dict[str, list[RunSpec]] = {}
        for spec in runs:
            same.setdefault(_name(spec, shown), []).append(spec)
        for name, group in same.items():
            for spec in group:
                spec.name = name if len(group) == 1 else _name(spec, shown | _varying(group, with_none=True))
        names = [spec.name for spec in runs]
        for spec in runs:
            if names.count(spec.name) > 1:
                spec.name = spec.key


def study_run(study: str, settings: dict[str, Any], models: list[RunSpec], cfg_hash: str,
              tables: Path | None, figures: Path | None) -> RunSpec:
    """The study's own run: its settings as `study.<key>` params, its tables (<study>.csv/.md,
    and .html where the report wrote one) and declared figures as artifacts, spanning the time
    of its models' runs."""
    files = []
    if tables is not None:
        files += [tables / f"{study}.{ext}" for ext in ("csv", "md", "html")]
    if figures is not None:
        files += [figures / f"{name}.png" for name in settings.get("figures", [])]
    params = dict(_flat(settings, "study"))
    start = min((m.start_ms for m in models), default=0)
    end = max((m.end_ms for m in models), default=0)
    return RunSpec(study, STUDY, f"study:{study}", {"study": study, "config_sha256": cfg_hash}, params, [], start, end,
                   artifacts=[p for p in files if p.is_file()], name=f"{study}: tables and figures")
