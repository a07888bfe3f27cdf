"""Import the evaluated models into MLflow: the one writer of the SQLite store.

One experiment per enabled study, plus `by-products` for the evaluated models no study names
(made by the studies' shared jobs), each opening on MLflow's classic machine-learning view
(EXPERIMENT_KIND) rather than the GenAI one. What each run holds, and why every model has a run
in every study using it, is prehab.report.mlflow_runs.

The import is incremental, so run ids, and the notes and tags a user adds to runs, survive
reimports: a run is found by its experiment and folder (`prehab.key`); an unchanged run is not
written; a changed one is updated in place (its params, metrics and artifacts replaced, its id,
notes and foreign tags kept); a run whose model left its study, and the experiment of a study
no longer enabled, are deleted the restorable MLflow way, and restored if they come back.

The import updates a copy of the store and renames it over the store: a reader (the UI open
during an import) sees the old store or the new one, never a half-written one, a crash or kill
leaves the old one, and the copy can skip fsync. A note added in the UI while an import runs is
lost with the old copy. An import that changes nothing leaves the store's file untouched. Writes
go through MlflowClient, except the two it cannot do to an existing run (drop its old params and
metrics; move its start time), done in SQL on the copy.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from prehab.errors import UsageError
from prehab.studies import BY_PRODUCTS
from prehab.provenance import config_hash
from prehab.report.collect import is_enabled, read_records, study_names
from prehab.report.mlflow_runs import FINGERPRINT, KEY, RunSpec, model_runs, prehab_chain_missing, study_run

log = logging.getLogger(__name__)

# Since MLflow 3.4 an experiment without this tag may open on the GenAI pages (traces); the value
# is the UI's ExperimentKind for model training ("Machine learning" in its type selector).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
STUDY_TAG = "prehab.study"  # marks the experiments this import owns
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # log_batch limits per call
ACTIVE = "active"  # MLflow's lifecycle stage of a run or experiment that is not deleted


def tracking_uri(db: str | Path) -> str:
    return f"sqlite:///{Path(db).resolve()}"


def log_runs(runs_dir: str | Path, cfg: dict[str, Any], db: str | Path, artifacts: str | Path,
             allow_missing: bool = False, tables: str | Path | None = None,
             figures: str | Path | None = None) -> dict[str, Any]:
    """Bring the MLflow db up to date with the runs tree (and the study tables and figures in
    `tables`/`figures`, when given); returns what it found and did."""
    records, missing = read_records(runs_dir, cfg, allow_missing)
    runs_dir, db, artifacts = Path(runs_dir), Path(db).resolve(), Path(artifacts).resolve()
    lacking = [rec.eval_dir for rec in records if prehab_chain_missing(runs_dir, rec)]
    if lacking and not allow_missing:
        raise UsageError(f"{lacking[0]}: the prehab step's metrics.json (curve) is missing above its "
                         "evaluation; pass --allow-missing to log without it")
    cfg_hash = config_hash(cfg)
    specs = model_runs(records, runs_dir, cfg_hash)
    studies = [s for s in study_names(cfg) if is_enabled(cfg, s)]
    if any(spec.study == BY_PRODUCTS for spec in specs):
        studies.append(BY_PRODUCTS)
    specs += [study_run(s, cfg["studies"][s], [m for m in specs if m.study == s], cfg_hash,
                        None if tables is None else Path(tables), None if figures is None else Path(figures))
              for s in studies if s in cfg["studies"]]

    db.parent.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    for stale in db.parent.glob(f".{db.name}.build-*"):  # left by an import that was killed (one writer)
        stale.unlink()
    build = Path(tempfile.mkstemp(prefix=f".{db.name}.build-", dir=db.parent)[1])
    build.unlink()
    try:
        if db.exists():
            _copy_store(db, build)
        with _fast_sqlite(build):
            experiments, counts, elapsed = _sync(specs, studies, cfg_hash, build, artifacts)
        if any(n for key, n in counts.items() if key != "unchanged"):
            os.replace(build, db)
    finally:
        for leftover in (build, build.with_name(build.name + "-journal")):
            leftover.unlink(missing_ok=True)
    log.info("%d MLflow runs in %d experiments (%s) in %.1fs (%s)", len(specs), len(experiments),
             ", ".join(f"{n} {key}" for key, n in counts.items()), elapsed, db)
    return {"db": str(db), "tracking_uri": tracking_uri(db), "models": len(records), "runs": len(specs),
            "missing": len(missing), "experiments": experiments, **counts, "seconds": round(elapsed, 2)}


def _copy_store(db: Path, copy: Path) -> None:
    """A consistent copy of `db` even while a reader, or the UI saving a note, has it open."""
    with contextlib.closing(sqlite3.connect(db)) as source, contextlib.closing(sqlite3.connect(copy)) as target:
        source.backup(target)


@contextlib.contextmanager
def _fast_sqlite(path: Path):
    """No fsync and an in-memory journal for MLflow's connections to `path` only (the copy,
    which is renamed into place only once complete)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    target = str(path)

    def on_connect(dbapi_conn, _record) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            row = dbapi_conn.execute("PRAGMA database_list").fetchone()
            if row is not None and row[2] == target:
                _unsynced(dbapi_conn)

    event.listen(Engine, "connect", on_connect)
    try:
        yield
    finally:
        event.remove(Engine, "connect", on_connect)


def _unsynced(conn: sqlite3.Connection) -> sqlite3.Connection:
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA journal_mode=MEMORY")
    return conn


def _sync(specs: list[RunSpec], studies: list[str], cfg_hash: str, db: Path, artifacts: Path):
    """Make the store at `db` hold exactly `specs`: ({study: experiment id}, counts, seconds)."""
    from mlflow.tracking import MlflowClient

    start = time.perf_counter()  # includes creating the schema
    client = MlflowClient(tracking_uri=tracking_uri(db))
    experiments, changed = _experiments(client, studies, cfg_hash, artifacts)
    counts = {"experiments_changed": changed, "created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
    existing, surplus = _existing_runs(client, list(experiments.values()))
    with contextlib.closing(_unsynced(sqlite3.connect(db))) as sql:
        for spec in specs:
            old = existing.pop((experiments[spec.study], spec.key), None)
            tags = spec.all_tags()
            if old is None:
                run = client.create_run(experiments[spec.study], start_time=spec.start_ms, tags=tags,
                                        run_name=spec.name)
                _log(client, run.info.run_id, spec)
                counts["created"] += 1
            elif old.info.lifecycle_stage != ACTIVE or old.data.tags.get(FINGERPRINT) != tags[FINGERPRINT]:
                _update(client, sql, old, spec, tags)
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
    for run in [*existing.values(), *surplus]:
        if run.info.lifecycle_stage == ACTIVE:
            client.delete_run(run.info.run_id)
            counts["deleted"] += 1
    elapsed = time.perf_counter() - start
    try:  # close the copy's connections before it is renamed (private attribute: best effort)
        client._tracking_client.store.engine.dispose()
    except AttributeError:
        pass
    return experiments, counts, elapsed


def _experiments(client, studies: list[str], cfg_hash: str, artifacts: Path) -> tuple[dict[str, str], int]:
    """({study: experiment id}, how many experiments were created, restored, retagged or deleted):
    each study's experiment, active and tagged; those of studies no longer imported deleted."""
    from mlflow.entities import ViewType

    ids, changed = {}, 0
    for study in studies:
        tags = {**EXPERIMENT_KIND, STUDY_TAG: study, "config_sha256": cfg_hash}
        exp = client.get_experiment_by_name(study)
        if exp is None:
            ids[study] = client.create_experiment(study, artifact_location=(artifacts / study).as_uri(), tags=tags)
            changed += 1
            continue
        ids[study] = exp.experiment_id
        if exp.lifecycle_stage != ACTIVE:
            client.restore_experiment(exp.experiment_id)
            changed += 1
        for key, value in tags.items():
            if exp.tags.get(key) != value:
                client.set_experiment_tag(exp.experiment_id, key, value)
                changed += 1
    for exp in client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=50000):
        if STUDY_TAG in exp.tags and exp.experiment_id not in ids.values():
            client.delete_experiment(exp.experiment_id)
            changed += 1
    return ids, changed


def _existing_runs(client, experiment_ids: list[str]) -> tuple[dict[tuple[str, str], Any], list]:
    """({(experiment id, key): run} of the runs this import made before, deleted ones included,
    [runs with a key already taken]); runs without a key (logged by hand) are left alone. Runs
    of the stores made before `prehab.key` existed are found by their `eval_dir` tag."""
    from mlflow.entities import ViewType

    found: dict[tuple[str, str], Any] = {}
    surplus, token = [], None
    while True:
        page = client.search_runs(experiment_ids, run_view_type=ViewType.ALL, max_results=50000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        for run in page:
            key = run.data.tags.get(KEY) or run.data.tags.get("eval_dir")
            if key is None:
                continue
            slot = (run.info.experiment_id, key)
            kept = found.get(slot)
            if kept is not None and (kept.info.lifecycle_stage == ACTIVE or run.info.lifecycle_stage != ACTIVE):
                surplus.append(run)
                continue
            if kept is not None:
                surplus.append(kept)  # an active run wins over a deleted one
            found[slot] = run
        token = page.token
        if not token:
            return found, surplus


def _update(client, sql: sqlite3.Connection, old, spec: RunSpec, tags: dict[str, str]) -> None:
    """Rewrite a run in place: same id; its tags upserted (a user's own tags and notes kept)."""
    from mlflow.entities import RunTag

    run_id = old.info.run_id
    if old.info.lifecycle_stage != ACTIVE:
        client.restore_run(run_id)
    for table in ("params", "metrics", "latest_metrics"):
        sql.execute(f"DELETE FROM {table} WHERE run_uuid = ?", (run_id,))
    sql.execute("UPDATE runs SET start_time = ? WHERE run_uuid = ?", (spec.start_ms, run_id))
    sql.commit()
    client.update_run(run_id, name=spec.name)
    items = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, len(items), MAX_TAGS):
        client.log_batch(run_id, tags=items[i:i + MAX_TAGS])
    if old.info.artifact_uri.startswith("file:"):
        from mlflow.utils.file_utils import local_file_uri_to_path

        shutil.rmtree(local_file_uri_to_path(old.info.artifact_uri), ignore_errors=True)
    _log(client, run_id, spec)


def _log(client, run_id: str, spec: RunSpec) -> None:
    """Params, metrics (stamped with the run's end) and artifacts of a run, then its end."""
    from mlflow.entities import Metric, Param, RunStatus

    metrics = [Metric(key, value, spec.end_ms, step) for key, value, step in spec.metrics]
    params = [Param(key, value) for key, value in spec.params.items()]
    batches = max(math.ceil(len(metrics) / MAX_METRICS), math.ceil(len(params) / MAX_PARAMS))
    for i in range(batches):
        client.log_batch(run_id, metrics=metrics[i * MAX_METRICS:(i + 1) * MAX_METRICS],
                         params=params[i * MAX_PARAMS:(i + 1) * MAX_PARAMS])
    for path in spec.artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED), end_time=spec.end_ms)
