"""The MLflow import: every study shows every model it uses, each run holds every option of the
steps behind its model as params, its wall time and its study's tables and figures, and a
reimport keeps run ids (changing nothing when nothing changed), updating a changed run in
place; a kill or a reader during an import never sees a half-written store."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import pytest

from prehab.cli import main
from prehab.studies import expand
from test_report import CFG, perplexity, tree  # noqa: F401 (tree: the fixture of the runs tree and its report)

mlflow = pytest.importorskip("mlflow")
from mlflow.entities import ViewType  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.file_utils import local_file_uri_to_path  # noqa: E402

from prehab.report.mlflow_log import log_runs, tracking_uri  # noqa: E402

STUDIES = ("main", "lambda_sweep", "calibration_size")  # CFG's enabled studies


@pytest.fixture(autouse=True)
def fresh_reads(monkeypatch):
    """Every query opens the store's current file, as `mlflow ui` does with this setting (a
    pooled connection would keep reading the file an import renamed a new one over)."""
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")


def runs_of(db, deleted: bool = False) -> dict[tuple[str, str], object]:
    """{(experiment name, prehab.key): run} of every experiment of the store at `db`."""
    client = MlflowClient(tracking_uri=tracking_uri(db))
    view = ViewType.ALL if deleted else ViewType.ACTIVE_ONLY
    found = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], run_view_type=view, max_results=10000):
            found[exp.name, run.data.tags["prehab.key"]] = run
    return found


def ids(runs: dict) -> dict:
    return {slot: run.info.run_id for slot, run in runs.items()}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def imported(tree, tmp_path_factory):  # noqa: F811
    """The tree and its report imported through the CLI, as the workflow does: (db, artifacts)."""
    out = tmp_path_factory.mktemp("mlflow")
    db, artifacts = out / "mlflow.db", out / "artifacts"
    assert main(["mlflow-log", "--runs", str(tree["root"]), "--studies", json.dumps(CFG), "--db", str(db),
                 "--artifacts", str(artifacts), "--tables", str(tree["tables"]),
                 "--figures", str(tree["figures"])]) == 0
    return db, artifacts


def test_every_study_shows_every_model_it_uses_and_a_run_of_its_own(imported):
    db, _ = imported
    client = MlflowClient(tracking_uri=tracking_uri(db))
    runs = runs_of(db)
    union = expand(CFG)
    for study in STUDIES:
        exp = client.get_experiment_by_name(study)
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the classic ML view
        mine = {key: run for (name, key), run in runs.items() if name == study}
        assert set(mine) == {f"study:{study}"} | {d for d, using in union.studies.items() if study in using}
        assert mine.pop(f"study:{study}").info.run_name == f"{study}: tables and figures"
        names = [run.info.run_name for run in mine.values()]
        assert len(set(names)) == len(names) and max(map(len, names)) <= 50, names
        assert {run.data.tags["study"] for run in mine.values()} == {study}
    assert client.get_experiment_by_name("space_ablation") is None  # disabled
    shared = "arch~tiny-lm/seed~0/cal~train/ncal~64/prehab~nuclear/lam~1/space~whitened/method~svd-llm/ratio~0.6/eval"
    in_main, in_sizes = runs[("main", shared)], runs[("calibration_size", shared)]
    assert in_main.info.run_name == "tiny-lm prehab nuclear λ1 R0.6 s0"
    assert in_sizes.info.run_name == "tiny-lm prehab nuclear λ1 n64 R0.6 s0"  # the axis that study varies
    assert in_main.info.run_id != in_sizes.info.run_id
    assert in_main.data.tags["studies"] == "main,lambda_sweep,calibration_size"
    assert in_main.data.params == in_sizes.data.params and in_main.data.metrics == in_sizes.data.metrics
    assert in_main.data.metrics["perplexity"] == pytest.approx(perplexity(union.runs[shared]))
    assert in_main.data.tags["code_git_commit"] == "deadbee" and len(in_main.data.tags["config_sha256"]) == 64
    assert in_main.data.params["axis.lam"] == "1" and in_main.data.params["compress.ratio"] == "0.6"
    history = client.get_metric_history(in_main.info.run_id, "curve_surrogate")
    assert [m.step for m in history] == [1, 10, 20, 50, 100]
    dense = runs[("main", "arch~tiny-mlp/seed~0/dense/eval")]
    assert dense.info.run_name == "tiny-mlp dense s0" and dense.data.tags["lam"] == "-"


def test_each_study_run_holds_its_tables_and_figures(imported, tree):  # noqa: F811
    db, _ = imported
    client = MlflowClient(tracking_uri=tracking_uri(db))
    runs = runs_of(db)
    for study in STUDIES:
        run = runs[(study, f"study:{study}")]
        declared = CFG["studies"][study].get("figures", [])
        files = {f"{study}.{ext}": tree["tables"] for ext in ("csv", "md", "html")
                 if ext != "html" or (tree["tables"] / f"{study}.html").is_file()}
        files.update({f"{name}.png": tree["figures"] for name in declared})
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == set(files)
        stored = Path(local_file_uri_to_path(run.info.artifact_uri))
        for name, folder in files.items():
            assert (stored / name).read_bytes() == (folder / name).read_bytes()
        assert json.loads(run.data.params["study.seeds"]) == CFG["studies"][study]["seeds"]
        assert run.info.end_time > run.info.start_time  # the span of its models' runs


@pytest.fixture(scope="module")
def chain(tiny_chain, tmp_path_factory):
    """Real step records: tiny-mlp pretrained and calibrated (the session's chain, copied into
    their run folders), Prehab with a lagged estimator and damping, cut by SVD-LLM at 0.5 and
    evaluated, and imported: (runs root, config, db)."""
    from prehab.layout import Run

    root = tmp_path_factory.mktemp("chain") / "runs"
    cfg = {"archs": ["tiny-mlp"], "studies": {"one": {
        "seeds": [0], "methods": ["dense", "prehab"], "ratios": [0.5], "lora": ["none"],
        "calibration": {"source": ["train"], "samples": [64]},
        "prehab": {"surrogate": ["nuclear"], "lam": [1.0], "space": ["whitened"]}}}}
    dense = Run(arch="tiny-mlp", seed=0, method="dense", compressed=False)
    tuned = Run(arch="tiny-mlp", seed=0, method="prehab", compressed=False, cal_source="train", cal_samples=64,
                surrogate="nuclear", lam=1.0, space="whitened")
    cut = Run(**{**tuned.axes(), "compressed": True, "ratio": 0.5})
    grams = root / "arch~tiny-mlp/seed~0/cal~train/ncal~64"
    shutil.copytree(tiny_chain["dense"], root / dense.model_dir)
    shutil.copytree(tiny_chain["grams"], grams)
    for argv in (["evaluate", "--model", str(root / dense.model_dir), "--out", str(root / dense.eval_dir)],
                 ["prehab", "--model", str(root / dense.model_dir), "--grams", str(grams), "--steps", "4",
                  "--estimator", "lagged", "--damping", "0.01", "--lam-warmup-steps", "2", "--lam-start", "0.1",
                  "--out",
                  str(root / tuned.model_dir)],
                 ["evaluate", "--model", str(root / tuned.model_dir), "--out", str(root / tuned.eval_dir)],
                 ["compress", "--model", str(root / tuned.model_dir), "--grams", str(grams), "--ratio", "0.5",
                  "--evaluate", "--out", str(root / cut.model_dir)]):
        assert main(argv) == 0, argv
    db = root.parent / "mlflow.db"
    log_runs(root, cfg, db, root.parent / "artifacts")
    return root, cut, db


def test_a_run_has_every_option_of_the_steps_behind_its_model_as_params(chain):
    root, cut, db = chain
    params = runs_of(db)[("one", cut.eval_dir)].data.params
    evaluation = json.loads((root / cut.eval_dir / "metrics.json").read_text())
    records = [json.loads(p.read_text()) for p in
               (root / cut.model_dir / "metrics.json", root / cut.model_dir / "../../metrics.json",
                root / cut.model_dir / "../../../../../metrics.json")]
    assert [r["step"] for r in records] == ["compress", "prehab", "calibrate"]
    steps = [(r["step"], r["params"]) for r in records] + [("evaluate", evaluation["params"])]
    steps += [(s["step"], {k: v for k, v in s.items() if k != "step"}) for s in evaluation["history"]]
    assert {step for step, _ in steps} == {"pretrain", "calibrate", "prehab", "compress", "evaluate"}
    for step, options in steps:
        for key, value in options.items():
            if isinstance(value, dict):  # arch_options: one param per option
                for inner, x in value.items():
                    assert params[f"{step}.{key}.{inner}"] == (f"{x:g}" if isinstance(x, float) else str(x))
            else:
                assert f"{step}.{key}" in params, (step, key)
    for key in ("lr", "steps", "batch_size", "lam_start", "lam_warmup_steps", "penalty_every", "space"):
        assert params[f"prehab.{key}"] not in ("", "-"), key
    assert params["prehab.estimator"] == "lagged" and params["prehab.damping"] == "0.01"
    assert params["prehab.steps"] == "4" and params["prehab.lam_start"] == "0.1"
    assert params["calibrate.samples"] == str(records[2]["params"]["samples"])
    assert params["compress.ratio"] == "0.5" and params["pretrain.arch"] == "tiny-mlp"


def test_a_run_lasts_the_wall_time_of_its_step_and_evaluation(chain):
    root, cut, db = chain
    run = runs_of(db)[("one", cut.eval_dir)]
    walls = [json.loads((root / d / "metrics.json").read_text())["wall_time_s"] for d in (cut.model_dir, cut.eval_dir)]
    assert run.info.end_time - run.info.start_time == round(sum(walls) * 1000) > 0
    assert run.info.end_time == int((root / cut.eval_dir / "metrics.json").stat().st_mtime * 1000)
    assert run.data.metrics["compress_wall_time_s"] == walls[0] and run.data.metrics["eval_wall_time_s"] == walls[1]
    assert run.data.metrics["prehab_wall_time_s"] > 0  # every step behind it, as metrics


def test_a_second_import_keeps_every_run_id_and_leaves_the_store_untouched(imported, tree):  # noqa: F811
    db, artifacts = imported
    before, digest = ids(runs_of(db)), sha(db)
    summary = log_runs(tree["root"], CFG, db, artifacts, tables=tree["tables"], figures=tree["figures"])
    assert (summary["created"], summary["updated"], summary["deleted"]) == (0, 0, 0)
    assert summary["unchanged"] == len(before) == summary["runs"]
    assert ids(runs_of(db)) == before and sha(db) == digest


def test_a_changed_run_is_updated_in_place_keeping_ids_and_notes(tmp_path, tree):  # noqa: F811
    root = tmp_path / "runs"
    shutil.copytree(tree["root"], root)
    db, artifacts = tmp_path / "mlflow.db", tmp_path / "artifacts"
    log_runs(root, CFG, db, artifacts)
    before = runs_of(db)
    changed = "arch~tiny-mlp/seed~1/cal~train/ncal~64/prehab~nuclear/lam~1/space~whitened/method~svd-llm/ratio~0.6/eval"
    note = before[("main", changed)].info.run_id
    MlflowClient(tracking_uri=tracking_uri(db)).set_tag(note, "mlflow.note.content", "a user's note")
    record = json.loads((root / changed / "metrics.json").read_text())
    record["metrics"]["accuracy"] = 0.5
    (root / changed / "metrics.json").write_text(json.dumps(record))
    summary = log_runs(root, CFG, db, artifacts)
    after = runs_of(db)
    assert ids(after) == ids(before)
    updated = {slot for slot in after if slot[1] == changed}
    assert {name for name, _ in updated} == {"main", "lambda_sweep"}
    assert summary["updated"] == len(updated) + 2  # and the two studies' own runs (their span moved)
    for slot in updated:
        history = MlflowClient(tracking_uri=tracking_uri(db)).get_metric_history(after[slot].info.run_id, "accuracy")
        assert [m.value for m in history] == [0.5]  # replaced, not appended
    assert after[("main", changed)].data.tags["mlflow.note.content"] == "a user's note"
    untouched = [slot for slot in after if slot not in updated and not slot[1].startswith("study:")]
    assert all(after[s].data.tags["prehab.import_sha256"] == before[s].data.tags["prehab.import_sha256"]
               for s in untouched)

    gone = root / changed / "metrics.json"
    gone.rename(tmp_path / "held")
    summary = log_runs(root, CFG, db, artifacts, allow_missing=True)
    assert summary["deleted"] == len(updated)
    assert all(runs_of(db, deleted=True)[s].info.lifecycle_stage == "deleted" for s in updated)
    (tmp_path / "held").rename(gone)
    log_runs(root, CFG, db, artifacts)
    assert ids(runs_of(db)) == ids(before)  # back, under its old ids


KILL_MID_IMPORT = """
import os, signal, sys
from mlflow.tracking import MlflowClient
from prehab.cli import main
real, calls = MlflowClient.log_batch, []
def log_batch(self, *args, **kwargs):  # SIGKILL once a few runs are written into the new store
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *args, **kwargs)
MlflowClient.log_batch = log_batch
sys.exit(main(sys.argv[1:]))
"""


def only(study: str) -> dict:
    """CFG with `study` its one enabled study."""
    return {**CFG, "studies": {name: {**s, "enabled": name == study} for name, s in CFG["studies"].items()}}


def test_mlflow_import_killed_half_way_leaves_the_previous_store(tmp_path, tree):  # noqa: F811
    import signal
    import subprocess
    import sys

    db = tmp_path / "mlflow.db"
    args = ["mlflow-log", "--runs", str(tree["root"]), "--studies", json.dumps(CFG), "--db", str(db),
            "--artifacts", str(tmp_path / "artifacts")]
    log_runs(tree["root"], only("calibration_size"), db, tmp_path / "artifacts")  # the rest: by-products
    before, digest = ids(runs_of(db)), sha(db)
    killed = subprocess.run([sys.executable, "-c", KILL_MID_IMPORT, *args], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list(tmp_path.glob(".mlflow.db.build-*")), "the kill should have hit the build of the new store"
    assert sha(db) == digest  # the previous store, untouched
    assert main(args) == 0  # the next import starts clean
    assert not list(tmp_path.glob(".mlflow.db.build-*"))
    after = ids(runs_of(db))
    assert {key for _, key in after} == set(expand(CFG).runs) | {f"study:{s}" for s in STUDIES}
    kept = {slot: run_id for slot, run_id in before.items() if slot[0] == "calibration_size"}
    assert kept and {slot: after[slot] for slot in kept} == kept


def test_a_reader_during_an_import_sees_the_old_or_the_new_store(tmp_path, tree):  # noqa: F811
    db, artifacts = tmp_path / "mlflow.db", tmp_path / "artifacts"
    log_runs(tree["root"], only("calibration_size"), db, artifacts)
    old = len(runs_of(db))
    seen, errors, done = [], [], threading.Event()

    def read() -> None:
        while not done.wait(0.02):  # a pause: the import is not starved of the interpreter
            try:
                seen.append(len(runs_of(db)))
            except Exception as err:  # noqa: BLE001 (what the test is for)
                errors.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        new = log_runs(tree["root"], CFG, db, artifacts)["runs"]
    finally:
        done.set()
        reader.join()
    seen.append(len(runs_of(db)))
    assert not errors, errors[:3]
    assert len(seen) > 2 and set(seen) <= {old, new} and seen[-1] == new != old
