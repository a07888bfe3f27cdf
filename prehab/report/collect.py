"""Every evaluated model of the study grid -> ONE long table.

One row per evaluated model (`<runs>/<Run.eval_dir>/metrics.json`): the Run axes, the names of
the studies using it, the metric name and value, size, non-finite count, the folder, and the
mechanism readout of the SVD-LLM cut behind it (MECH_KEYS, `read_mechanism`). Tables, figures and
the MLflow import all read this table (or the records behind it), nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prehab.errors import UsageError
from prehab.layout import (CONTROL_SURROGATE, EVAL_DIR, GRAMS_FILE, MECH_KEYS, METRICS_FILE, NO_LORA, SPECTRA_FILE, Run,
                           parse_eval_dir)
from prehab.report import paired
from prehab.report.choice import phase_a_choice
from prehab.report.summary import AXES
from prehab.studies import BY_PRODUCTS, confirming, expand

log = logging.getLogger(__name__)

# MECH_KEYS (prehab.layout): what the SVD-LLM compress step measures on the model it cuts, from that
# model's own re-calibration, over its target matrices at the ratio's kept rank k (the cut's
# metrics.json; prehab/method/mechanism.py says what each holds).
COLUMNS = AXES + ("studies", "metric", "value", "val_value", "prehab_steps", "model_params", "checkpoint_bytes",
                  "nonfinite_rows", "eval_dir") + MECH_KEYS
# --------------------------------------------------------------------------- studies config

def parse_studies(text: str | dict) -> dict[str, Any]:
    """The `--studies` value: a JSON string {"archs": [...], "studies": {...}} (or a path to one)."""
    if isinstance(text, dict):
        cfg = text
    else:
        raw = text.strip()
        if not raw.startswith("{") and Path(raw).is_file():
            raw = Path(raw).read_text()
        try:
            cfg = json.loads(raw)
        except json.JSONDecodeError as err:
            raise UsageError(f"--studies is not valid JSON ({err}): {text[:80]!r}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("studies"), dict) or not isinstance(cfg.get("archs"), list):
        raise UsageError('--studies must be a JSON object {"archs": [...], "studies": {name: {...}}}')
    return cfg


def study_names(cfg: dict[str, Any]) -> list[str]:
    """All studies of the config, enabled or not, in config order."""
    return list(cfg["studies"])


def is_enabled(cfg: dict[str, Any], study: str) -> bool:
    return bool(cfg["studies"][study].get("enabled", True))


def declared(cfg: dict[str, Any], figure: str) -> list[str]:
    """The enabled studies that list `figure` in their `figures`, in config order."""
    return [name for name, study in cfg["studies"].items()
            if is_enabled(cfg, name) and figure in study.get("figures", [])]


def no_study_text(figure: str) -> str:
    return f"no enabled study declares this figure (add `{figure}` to a study's `figures`)"


# --------------------------------------------------------------------------- records

@dataclass
class Record:
    """One evaluated model: its Run, the studies using it (config order) and its metrics.json."""

    run: Run
    studies: list[str]
    data: dict[str, Any]

    @property
    def eval_dir(self) -> str:
        return self.run.eval_dir


def number(value: Any) -> float:
    """JSON value -> float; write_json stores inf/nan as the strings "inf"/"nan"."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def prehab_run(run: Run) -> Run | None:
    """The uncompressed Prehab/control Run whose folder holds the prehab step's outputs."""
    if run.method not in ("prehab", "control"):
        return None
    return dataclasses.replace(run, compressed=False, ratio=None, lora=NO_LORA)


def read_prehab(runs_dir: Path, run: Run) -> dict[str, Any] | None:
    """metrics.json of the prehab step behind a Prehab/control run (curve + prehab metrics)."""
    base = prehab_run(run)
    if base is None:
        return None
    path = Path(runs_dir) / base.model_dir / METRICS_FILE
    if not path.is_file():
        return None
    return _read_json(path)


def spectra_path(runs_dir: Path, run: Run) -> Path | None:
    base = prehab_run(run)
    return None if base is None else Path(runs_dir) / base.model_dir / SPECTRA_FILE


def mechanism_run(run: Run) -> Run | None:
    """The SVD-LLM cut whose compress step measured the mechanism behind `run`: the run itself
    without its LoRA (the folder before rehab); None where SVD-LLM cut nothing (dense, plain SVD,
    uncompressed models)."""
    if not run.compressed or run.method == "svd":
        return None
    return dataclasses.replace(run, lora=NO_LORA)


def read_mechanism(runs_dir: Path, run: Run) -> dict[str, float]:
    """{MECH_KEYS: value} of the SVD-LLM cut behind `run` (`mechanism_run`), read from the
    "metrics" of its compress step's metrics.json; NaN for every key that is not there (runs cut
    before the readout existed, models SVD-LLM did not cut)."""
    base = mechanism_run(run)
    path = None if base is None else Path(runs_dir) / base.model_dir / METRICS_FILE
    metrics = (_read_json(path).get("metrics") or {}) if path is not None and path.is_file() else {}
    return {key: number(metrics.get(key)) for key in MECH_KEYS}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not valid JSON ({err})") from None


def read_records(runs_dir: str | Path, cfg: dict[str, Any], allow_missing: bool = False
                 ) -> tuple[list[Record], list[str]]:
    """(records of every evaluated model found, eval_dirs with no metrics.json).

    The studies' models come first; then every other evaluation found under `runs_dir` (made
    by the studies' shared jobs, see BY_PRODUCTS), so the report and MLflow hold every evaluated
    model exactly once. A missing metrics.json of a study's model is an error naming the
    folders, unless `allow_missing`."""
    runs_dir = Path(runs_dir)
    union = expand(cfg)
    records, missing = _read_union(runs_dir, union)
    if confirming(cfg):  # phase B's Prehab runs are those at the lambda* phase A's runs choose
        union = expand(cfg, phase_a_choice(to_frame(records), cfg))
        records, missing = _read_union(runs_dir, union)
    records.extend(_by_products(runs_dir, set(union.runs)))
    if missing:
        listed = "\n  ".join(str(runs_dir / m / METRICS_FILE) for m in missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        message = f"{len(missing)} of {len(union.runs)} evaluated models have no {METRICS_FILE}:\n  {listed}{more}"
        if not allow_missing:
            raise UsageError(message + "\n(run them first, or pass --allow-missing to report without them)")
        log.warning("%s\n(--allow-missing: reported without them)", message)
    return records, missing


def _read_union(runs_dir: Path, union) -> tuple[list[Record], list[str]]:
    """(records of the union's runs that have a metrics.json, eval_dirs of those without)."""
    records, missing = [], []
    for eval_dir, run in union.runs.items():
        path = runs_dir / eval_dir / METRICS_FILE
        if not path.is_file():
            missing.append(eval_dir)
            continue
        records.append(Record(run, list(union.studies[eval_dir]), _read_evaluation(path)))
    return records, missing


def _by_products(runs_dir: Path, named: set[str]) -> list[Record]:
    """Evaluations under `runs_dir` that no study names, in path order. Their axes are the ones
    their metrics.json states; the folder supplies only what no step records (the calibration's
    source and size), and must agree with the rest."""
    found = []
    for path in sorted(runs_dir.rglob(f"{EVAL_DIR}/{METRICS_FILE}")):
        eval_dir = path.parent.relative_to(runs_dir).as_posix()
        run = parse_eval_dir(eval_dir) if eval_dir not in named else None
        if run is None:
            continue
        data = _read_evaluation(path)
        axes = stated_axes(data)
        stated = dataclasses.replace(run, compressed=axes["ratio"] is not None, **axes)
        if stated.eval_dir != eval_dir:
            described = ", ".join(f"{k} {v}" for k, v in axes.items())
            raise UsageError(f"{path}: its metrics.json states {described}, which is not the folder it sits in")
        found.append(Record(stated, [BY_PRODUCTS], data))
    return found


def stated_axes(data: dict[str, Any]) -> dict[str, Any]:
    """The run axes an evaluation's metrics.json states through its history of steps (ratio
    None: not compressed). The lambda 0 control's surrogate is its folder label."""
    axes: dict[str, Any] = {"ratio": None, "lora": NO_LORA}
    for step in data.get("history") or []:
        kind = step.get("step")
        if kind == "pretrain":
            axes.update(arch=step["arch"], seed=int(step["seed"]))
        elif kind == "prehab":
            lam = float(step["lam"])
            label = step.get("recipe") or (step["surrogate"] if lam else CONTROL_SURROGATE)
            axes.update(lam=lam, space=step["space"], surrogate=label, snapshot=step.get("snapshot"))
        elif kind == "compress":
            axes["ratio"] = float(step["ratio"])
        elif kind == "rehab":
            axes["lora"] = step["schedule"]
    return axes


def prehab_steps(data: dict[str, Any]) -> float:
    """The Prehab/control steps behind an evaluated model (its history's prehab step), else NaN."""
    steps = [step.get("steps") for step in data.get("history") or [] if step.get("step") == "prehab"]
    return number(steps[-1]) if steps else math.nan


def _read_evaluation(path: Path) -> dict[str, Any]:
    """An evaluation's metrics.json; one without its metric's value is an error naming it."""
    data = _read_json(path)
    metrics = data.get("metrics") or {}
    if metrics.get("metric") not in metrics:
        raise UsageError(f"{path}: metrics has no metric name/value (metric={metrics.get('metric')!r})")
    return data


def rank_deficient_calibrations(runs_dir: str | Path) -> dict[str, list[str]]:
    """{calibration folder (relative to runs_dir): its rank-deficient factors' layer names} for
    every calibration whose metrics.json counts rank-deficient second moments (prehab calibrate:
    fewer tokens than inputs, or C does not factor without jitter)."""
    found = {}
    for grams in sorted(Path(runs_dir).rglob(GRAMS_FILE)):
        path = grams.parent / METRICS_FILE
        if not path.is_file():
            continue
        record = _read_json(path)
        if number(record.get("metrics", {}).get("n_rank_deficient")) > 0:
            layers = [name for name, how in (record.get("damping") or {}).items() if how.get("rank_deficient")]
            found[grams.parent.relative_to(runs_dir).as_posix()] = layers
    return found


def extra_arch(arch: str, label: str) -> str:
    """The table name of an architecture's extra test set (ArchSpec.extra_tests): its rows form
    a block of their own, e.g. `llama-7b:c4` beside `llama-7b` (WikiText-2)."""
    return f"{arch}:{label}"


def to_frame(records: list[Record], runs_dir: str | Path | None = None):
    """The long table: one row per evaluated model and test set, columns `COLUMNS`. An extra test
    set's row repeats the model's axes under `extra_arch`, with the validation value of its own
    test set's model (choices read the architecture's validation split) and `eval_dir` naming
    its scores (paired.scores_address). The MECH_KEYS columns are read from `runs_dir` (NaN
    without it)."""
    import pandas as pd

    rows = []
    mechanism: dict[str, dict[str, float]] = {}  # a cut's readout, read once for it and its LoRA
    for rec in records:
        metrics = rec.data["metrics"]
        name = metrics["metric"]
        row = rec.run.axes()
        row.update(
            studies=",".join(rec.studies),
            metric=name,
            value=number(metrics[name]),
            val_value=number(metrics.get(f"val_{name}")),  # validation split: what choices read
            prehab_steps=prehab_steps(rec.data),
            model_params=number(metrics.get("model_params")),
            checkpoint_bytes=number(metrics.get("checkpoint_bytes")),
            nonfinite_rows=number(metrics.get("nonfinite_rows")),
            eval_dir=rec.eval_dir,
        )
        base = mechanism_run(rec.run)
        if runs_dir is not None and base is not None and base.model_dir not in mechanism:
            mechanism[base.model_dir] = read_mechanism(Path(runs_dir), rec.run)
        row.update(mechanism.get(base.model_dir, {}) if base is not None else {})
        rows.append(row)
        for label in metrics.get("extra_tests") or []:  # the same model on another test set
            rows.append({**row, "arch": extra_arch(row["arch"], label), "value": number(metrics[f"{label}_{name}"]),
                         "nonfinite_rows": number(metrics.get(f"{label}_nonfinite_rows")),
                         "eval_dir": paired.scores_address(rec.eval_dir, label)})
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in ("seed",):
        df[col] = df[col].astype("int64")
    for col in ("ratio", "lam", "cal_samples", "snapshot", "value", "val_value", "prehab_steps", "model_params",
                "checkpoint_bytes", "nonfinite_rows", *MECH_KEYS):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["compressed"] = df["compressed"].astype(bool)
    return df


def collect(runs_dir: str | Path, cfg: dict[str, Any], allow_missing: bool = False):
    """Read the whole grid into the long table; `df.attrs["missing"]` lists absent eval folders."""
    records, missing = read_records(runs_dir, cfg, allow_missing)
    df = to_frame(records, runs_dir)
    df.attrs["missing"] = missing
    df.attrs["runs_dir"] = str(runs_dir)  # where the paired statistics find each row's scores.json
    df.attrs["rank_deficient"] = rank_deficient_calibrations(runs_dir)
    return df
