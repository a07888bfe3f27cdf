"""Import the evaluated models into MLflow: the one writer of the SQLite store (WORKFLOW.md).

One experiment per enabled study, all created up front, plus `by-products` for the evaluated
models no study names (made by the studies' shared jobs). Every evaluated model is logged EXACTLY
ONCE, in the experiment of the first study listing it, tagged with every axis, `studies` (all of
them), the code version and the config hash, so `mlflow.search_runs` over all experiments can
rebuild any table. The run name is the eval folder (STYLE.md 12). The db is deleted and rebuilt
on every import, so it always holds one run per model. Writes go through MlflowClient.log_batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from prehab.errors import UsageError
from prehab.studies import BY_PRODUCTS
from prehab.report.collect import Record, config_hash, is_enabled, read_prehab, read_records, study_names

log = logging.getLogger(__name__)

NA = "-"  # tag/param value of an axis that does not apply to a run (e.g. lam of a dense model)
MAX_METRICS, MAX_PARAMS = 1000, 100  # log_batch limits per call
PREHAB_METRICS = ("whitened_surrogate_before", "whitened_surrogate_after", "entropy_rank_before",
                  "entropy_rank_after", "final_task_loss")
CURVE_KEYS = ("task_loss", "surrogate", "lambda", "entropy_rank")


def tracking_uri(db: str | Path) -> str:
    return f"sqlite:///{Path(db).resolve()}"


def _axis_text(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x  # inf is kept: MLflow stores it (as +/-max float in SQL)


def run_tags(rec: Record, cfg_hash: str, primary: str) -> dict[str, str]:
    tags = {axis: _axis_text(v) for axis, v in rec.run.axes().items()}
    code = rec.data.get("code") or {}
    tags.update(
        studies=",".join(rec.studies),
        study=primary,
        eval_dir=rec.eval_dir,
        metric=str(rec.data["metrics"]["metric"]),
        config_sha256=cfg_hash,
        code_version=str(code.get("prehab_version", "unknown")),
        code_source_sha256=str(code.get("source_sha256", "unknown")),
        code_git_commit=str(code.get("git_commit", "unknown")),
    )
    return tags


def run_metrics(rec: Record, prehab: dict[str, Any] | None, timestamp: int) -> list:
    from mlflow.entities import Metric

    out = []
    for key, value in (rec.data.get("metrics") or {}).items():
        x = _float(value)
        if x is not None:
            out.append(Metric(key, x, timestamp, 0))
    wall = _float(rec.data.get("wall_time_s"))
    if wall is not None:
        out.append(Metric("eval_wall_time_s", wall, timestamp, 0))
    if prehab:
        for key in PREHAB_METRICS:
            x = _float((prehab.get("metrics") or {}).get(key))
            if x is not None:
                out.append(Metric(f"prehab_{key}", x, timestamp, 0))
        for point in prehab.get("curve") or []:
            step = int(point.get("step", 0))
            for key in CURVE_KEYS:
                x = _float(point.get(key))
                if x is not None:
                    out.append(Metric(f"curve_{key}", x, timestamp, step))
    return out


def run_params(rec: Record) -> list:
    from mlflow.entities import Param

    params = {f"axis.{k}": _axis_text(v) for k, v in rec.run.axes().items()}
    for key, value in (rec.data.get("params") or {}).items():
        params[f"eval.{key}"] = str(value)[:6000]
    return [Param(k, v) for k, v in params.items()]


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def log_runs(runs_dir: str | Path, cfg: dict[str, Any], db: str | Path, artifacts: str | Path,
             allow_missing: bool = False) -> dict[str, Any]:
    """Rebuild the MLflow db from the runs tree; returns {"runs": n, "experiments": {study: id}, ...}."""
    records, missing = read_records(runs_dir, cfg, allow_missing)
    runs_dir, db, artifacts = Path(runs_dir), Path(db).resolve(), Path(artifacts).resolve()
    prehab_of = {}
    for rec in records:
        if rec.run.method in ("prehab", "control"):
            prehab = read_prehab(runs_dir, rec.run)
            if prehab is None and not allow_missing:
                raise UsageError(f"{rec.eval_dir}: the prehab step's metrics.json (curve) is missing "
                                 "beside its model; pass --allow-missing to log without it")
            prehab_of[rec.eval_dir] = prehab

    db.parent.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    # Build into a fresh file beside the target, then rename it over the old db: the db always
    # holds exactly one run per model, a crash leaves the old db intact, and the build can skip
    # fsync (PRAGMA synchronous=OFF), which made the import ~10x faster.
    for stale in db.parent.glob(f".{db.name}.build-*"):  # left by an import that was killed (one writer)
        stale.unlink()
    build = Path(tempfile.mkstemp(prefix=f".{db.name}.build-", dir=db.parent)[1])
    build.unlink()
    try:
        with _fast_sqlite(build):
            experiments, elapsed = _write(records, prehab_of, cfg, build, artifacts)
        os.replace(build, db)
    finally:
        for leftover in (build, build.with_name(build.name + "-journal")):
            if leftover.exists():
                leftover.unlink()
    log.info("logged %d runs into %d experiments in %.1fs (%s)", len(records), len(experiments), elapsed, db)
    return {"db": str(db), "tracking_uri": tracking_uri(db), "runs": len(records), "missing": len(missing),
            "experiments": experiments, "seconds": round(elapsed, 2)}


@contextlib.contextmanager
def _fast_sqlite(path: Path):
    """No fsync and an in-memory journal for connections to `path` only (a throwaway build file)."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    target = str(path)

    def on_connect(dbapi_conn, _record) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            row = dbapi_conn.execute("PRAGMA database_list").fetchone()
            if row is not None and row[2] == target:
                dbapi_conn.execute("PRAGMA synchronous=OFF")
                dbapi_conn.execute("PRAGMA journal_mode=MEMORY")

    event.listen(Engine, "connect", on_connect)
    try:
        yield
    finally:
        event.remove(Engine, "connect", on_connect)


def _write(records: list[Record], prehab_of: dict, cfg: dict[str, Any], db: Path, artifacts: Path):
    from mlflow.entities import RunStatus
    from mlflow.tracking import MlflowClient

    start = time.perf_counter()  # includes creating the schema
    client = MlflowClient(tracking_uri=tracking_uri(db))
    cfg_hash = config_hash(cfg)
    enabled = [s for s in study_names(cfg) if is_enabled(cfg, s)]
    if any(rec.studies == [BY_PRODUCTS] for rec in records):
        enabled.append(BY_PRODUCTS)
    experiments = {}
    for study in enabled:  # all up front, one writer
        experiments[study] = client.create_experiment(
            study, artifact_location=(artifacts / study).as_uri(),
            tags={"config_sha256": cfg_hash, "prehab.study": study})
    now = int(time.time() * 1000)
    for rec in records:
        primary = rec.studies[0]
        tags = run_tags(rec, cfg_hash, primary)
        run = client.create_run(experiments[primary], start_time=now, tags=tags, run_name=rec.eval_dir)
        run_id = run.info.run_id
        metrics = run_metrics(rec, prehab_of.get(rec.eval_dir), now)
        params = run_params(rec)
        n_batches = max(math.ceil(len(metrics) / MAX_METRICS), math.ceil(len(params) / MAX_PARAMS), 1)
        m_chunks, p_chunks = list(_chunks(metrics, MAX_METRICS)), list(_chunks(params, MAX_PARAMS))
        for i in range(n_batches):
            client.log_batch(run_id, metrics=m_chunks[i] if i < len(m_chunks) else [],
                             params=p_chunks[i] if i < len(p_chunks) else [])
        client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED), end_time=now)
    elapsed = time.perf_counter() - start
    try:  # close the build file's connections before it is renamed (private attribute: best effort)
        client._tracking_client.store.engine.dispose()
    except AttributeError:
        pass
    return experiments, elapsed
