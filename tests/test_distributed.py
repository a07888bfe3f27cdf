"""Training across processes (prehab/distributed.py): `torchrun --nproc-per-node 2` on CPU (gloo),
the model sharded per block by torch's FSDP2.

- pretrain of llama-tiny on 2 processes ends with the single process's weights to 1e-5 of each
  tensor's norm (float32 rounding of a sum split over two ranks).
- bert-tiny (dropout 0: ranks draw other masks than one process would) on 2 processes equals one
  process stepping over the same two row slices (`--micro-batches 2`) to 1e-6. Against the plain
  single step it may not: BERT's attention key biases have a zero gradient up to rounding, and
  Adam turns that rounding noise into steps of +-lr, whichever way the sum was split.
- Prehab of llama-tiny on 2 processes, each target priced on one rank (sharded.py): the weight
  space (exact and lagged estimators) ends with the single process's weights to 1e-5; the
  whitened space (damped 0.01: exact nuclear, and lagged tail_abs, whose constants every rank
  fixes) to 1e-4,
  because W = W0 + D L^-1 multiplies D's float32 rounding by L^-1, while the whitened matrices
  agree to 1e-7 (the logged entropy rank); step 1's gradient-norm ratio agrees to 1e-8; the
  lagged estimator's refreshes summed over both ranks equal one process's (each matrix priced
  once, not once per rank).
- bert-tiny Prehab (dropout 0, weight space, exact) and then rehab on 2 processes equal one
  process stepping over the same two row slices to 1e-6; a rank keeps the penalty's inputs (A0, factors) of its
  own targets only, and the whitened space holds one float32 factor per input, no float64 copy.
- Rehab (sequential LoRA, dropout 0, blocks recomputed) of a compressed llama-tiny on 2 processes ends with the
  single process's weights to 1e-5.
- Two nodes (two launchers meeting at a c10d rendezvous, one process each) equal one node's two
  processes to 1e-6.
- bf16 on 2 processes (FSDP's mixed-precision policy) tracks one float32 process's loss within 5%.
- A rank killed mid-training: the launcher (prehab.launch) fails in one line, nothing written.
- Only rank 0 writes: one output folder, one JSON line. A step that does not train across
  processes yet refuses torchrun (one line, nothing written).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from prehab.cli import main


def _run(*argv) -> None:
    assert main([str(a) for a in argv]) == 0


def _torchrun(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "prehab",
           *map(str, argv)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", weights_only=True)["state_dict"]


def _close(a, b, rtol: float) -> None:
    """Every floating tensor of b within rtol of a's, relative in the Frobenius norm (Adam turns
    a gradient that is zero up to rounding into a step of +-lr, whichever way its sum was split:
    a few such entries decide a largest-entry comparison and say nothing about the step)."""
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        if wa[key].is_floating_point():
            scale = float(wa[key].norm()) or 1.0
            assert float((wa[key] - wb[key]).norm()) <= rtol * scale, (key, float((wa[key] - wb[key]).norm()) / scale)


def test_pretrain_on_two_processes_matches_one(tmp_path):
    common = ["pretrain", "--arch", "llama-tiny", "--steps", 3, "--batch-size", 4]
    _run(*common, "--out", tmp_path / "one")
    done = _torchrun(*common, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-2000:]
    _close(tmp_path / "one", tmp_path / "two", 1e-5)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and lines[0]["out"] == str(tmp_path / "two")  # rank 0 alone reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # and writes


@pytest.mark.parametrize("arch", ["bert-tiny"])
def test_two_processes_equal_two_micro_batches(tmp_path, arch):
    common = ["pretrain", "--arch", arch, "--arch-opt", "dropout=0", "--steps", 3, "--batch-size", 4]
    _run(*common, "--micro-batches", 2, "--out", tmp_path / "sliced")
    done = _torchrun(*common, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-2000:]
    _close(tmp_path / "sliced", tmp_path / "two", 1e-6)


def test_a_step_that_runs_in_one_process_refuses_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["evaluate", "--model", str(tmp_path / "absent"), "--out", str(tmp_path / "e")]) == 2
    assert "only pretrain, prehab, rehab run" in capsys.readouterr().err and not (tmp_path / "e").exists()


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """llama-tiny: dense (3 pretrain steps) and its calibration."""
    root = tmp_path_factory.mktemp("distributed")
    _run("pretrain", "--arch", "llama-tiny", "--steps", 3, "--batch-size", 4, "--out", root / "dense")
    _run("calibrate", "--model", root / "dense", "--samples", 16, "--out", root / "grams")
    return root


def _record(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.mark.parametrize("space,estimator,surrogate,rtol", [
    ("weight", "exact", "nuclear", 1e-5), ("weight", "lagged", "nuclear", 1e-5),
    ("whitened", "exact", "nuclear", 1e-4), ("whitened", "lagged", "tail_abs", 1e-4)])
def test_prehab_on_two_processes_matches_one(llama, tmp_path, space, estimator, surrogate, rtol):
    common = ["prehab", "--model", llama / "dense", "--grams", llama / "grams", "--surrogate", surrogate,
              *(["--tail-ratio", 0.5] if surrogate == "tail_abs" else []), "--lam", 1, "--lam-scale", "grad",
              "--space", space, "--estimator", estimator, "--steps", 3, "--batch-size", 4,
              *(["--damping", 0.01] if space == "whitened" else [])]
    _run(*common, "--out", tmp_path / "one")
    done = _torchrun(*common, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-2000:]
    _close(tmp_path / "one", tmp_path / "two", rtol)
    one, two = _record(tmp_path / "one"), _record(tmp_path / "two")
    assert two["metrics"]["grad_norm_ratio"] == pytest.approx(one["metrics"]["grad_norm_ratio"], rel=1e-8)
    last_one, last_two = one["curve"][-1], two["curve"][-1]
    assert last_two["entropy_rank"] == pytest.approx(last_one["entropy_rank"], rel=1e-6)
    assert last_two["task_loss"] == pytest.approx(last_one["task_loss"], rel=1e-6)
    if estimator == "lagged":
        assert last_two["penalty_refreshes"] == last_one["penalty_refreshes"] > 0
    assert one.get("surrogate_anchors") == two.get("surrogate_anchors")


def test_two_nodes_equal_one_node_with_two_processes(tmp_path):
    """Two launchers (`--nodes 2 --processes 1`, as srun starts one per node) meeting at a c10d
    rendezvous on this machine train as one node's two processes do, and write one output."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["pretrain", "--arch", "llama-tiny", "--steps", 3, "--batch-size", 4]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "prehab.launch"]
    done = subprocess.run([*launch, "--processes", "2", *map(str, common), "--out", str(tmp_path / "one-node")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    nodes = [subprocess.Popen([*map(str, launch), "--nodes", "2", "--processes", "1", "--rdzv-endpoint",
                               f"127.0.0.1:{port}", *map(str, common), "--out", str(tmp_path / "two-nodes")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    _close(tmp_path / "one-node", tmp_path / "two-nodes", 1e-6)
    assert sum(out.count('"out"') for out, _ in outputs) == 1  # one rank 0, one record


def test_bert_prehab_and_rehab_on_two_processes_equal_two_micro_batches(tmp_path):
    _run("pretrain", "--arch", "bert-tiny", "--arch-opt", "dropout=0", "--steps", 2, "--batch-size", 4,
         "--out", tmp_path / "dense")
    _run("calibrate", "--model", tmp_path / "dense", "--samples", 16, "--out", tmp_path / "grams")
    common = ["prehab", "--model", tmp_path / "dense", "--grams", tmp_path / "grams", "--surrogate", "nuclear",
              "--lam", 1, "--space", "weight", "--estimator", "exact", "--steps", 3, "--batch-size", 4]
    _run(*common, "--micro-batches", 2, "--out", tmp_path / "sliced")
    done = _torchrun(*common, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-2000:]
    _close(tmp_path / "sliced", tmp_path / "two", 1e-6)
    _run("compress", "--model", tmp_path / "sliced", "--grams", tmp_path / "grams", "--method", "svd-llm",
         "--ratio", 0.5, "--out", tmp_path / "cut")
    rehab = ["rehab", "--model", tmp_path / "cut", "--dropout", 0, "--steps", 3, "--batch-size", 4]
    _run(*rehab, "--micro-batches", 2, "--out", tmp_path / "rehab-sliced")
    done = _torchrun(*rehab, "--out", tmp_path / "rehab-two")
    assert done.returncode == 0, done.stderr[-2000:]
    _close(tmp_path / "rehab-sliced", tmp_path / "rehab-two", 1e-6)


@pytest.mark.parametrize("space", ["whitened", "weight"])
def test_a_rank_keeps_the_penalty_inputs_of_its_own_targets_only(space):
    from prehab.method.calibrate import Whitening
    from prehab.method.prehab import _Targets

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    L = torch.linalg.cholesky(torch.eye(4, dtype=torch.float64) + 0.1)
    whitening = Whitening({"0": L, "2": 2 * L}, {"0": "0", "1": "0", "2": "2"}, 10)
    mats = _Targets(model, ["0", "1", "2"], whitening, space)
    held = [m.L for m in mats.modules] if space == "whitened" else mats.factors
    assert held[0] is held[1] and held[0] is not held[2]  # one working copy per input, shared
    assert all(t.dtype == torch.float32 for t in held)
    assert not any(b.dtype == torch.float64 for b in model.buffers())
    mats.keep_only({1})
    if space == "whitened":
        assert [m.A0 is None for m in mats.modules] == [True, False, True]
        assert mats.modules[0].L is not None  # the forward pass still reads it
    else:
        assert [f is None for f in mats.factors] == [True, False, True]
    assert mats.penalised([1])[0].shape == (4, 4)


def test_rehab_on_two_processes_matches_one(llama, tmp_path):
    _run("compress", "--model", llama / "dense", "--grams", llama / "grams", "--method", "svd-llm", "--ratio", 0.5,
         "--out", tmp_path / "cut")
    common = ["rehab", "--model", tmp_path / "cut", "--schedule", "sequential", "--dropout", 0, "--steps", 3,
              "--batch-size", 4, "--recompute"]  # the sharded copy's blocks recompute their own activations
    _run(*common, "--out", tmp_path / "one")
    done = _torchrun(*common, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-2000:]
    _close(tmp_path / "one", tmp_path / "two", 1e-5)
    cut, one = _weights(tmp_path / "cut"), _weights(tmp_path / "one")
    moved = max(float((one[k] - cut[k]).norm() / cut[k].norm()) for k in cut if cut[k].is_floating_point())
    assert moved > 1e-3  # LoRA moved the factors far beyond the tolerance
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut", "one", "two"]


def test_bf16_on_two_processes_tracks_float32(tmp_path):
    """FSDP's bf16 policy (bf16 gathers and forward, float32 shards and reduction): the task loss
    of 6 steps within 5% of one float32 process's at every logged step, float32 weights saved."""
    common = ["pretrain", "--arch", "llama-tiny", "--steps", 6, "--batch-size", 4]
    _run(*common, "--out", tmp_path / "f32")
    done = _torchrun(*common, "--precision", "bf16", "--out", tmp_path / "bf16")
    assert done.returncode == 0, done.stderr[-2000:]
    f32, bf16 = (_record(tmp_path / n)["curve"] for n in ("f32", "bf16"))
    assert [r["step"] for r in f32] == [r["step"] for r in bf16]
    for a, b in zip(f32, bf16):
        assert abs(b["task_loss"] - a["task_loss"]) <= 0.05 * a["task_loss"], (a, b)
    assert all(w.dtype == torch.float32 for w in _weights(tmp_path / "bf16").values() if w.is_floating_point())


def _rank_pid(marker: str, rank: int) -> int | None:
    """The pid of the process whose command line holds `marker` and whose RANK is `rank`."""
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in cmdline and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


def test_a_killed_rank_fails_the_job_in_one_line_and_writes_nothing(tmp_path):
    """prehab.launch (what the workflow starts for a multi-process job): rank 1 killed mid-training
    stops rank 0, the launcher says so in one line, exits 1, and no output folder (nor a staging
    one) is left."""
    import signal
    import time

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "prehab.launch", "--processes", "2", "pretrain", "--arch", "llama-tiny",
           "--steps", "100000", "--batch-size", "4", "--out", str(out)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline, pid = time.time() + 300, None
    while time.time() < deadline and pid is None:
        time.sleep(0.5)
        pid = _rank_pid(str(out), 1)
    assert pid is not None, "rank 1 not found"
    time.sleep(20)  # loading, joining the group, training
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("prehab pretrain: rank 1 of 2 killed by SIGKILL (rank 0: ") and last.endswith(
        "); the other ranks were stopped and nothing was written"), stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]  # rank 0 says in one line why it stopped
    assert list(tmp_path.iterdir()) == []
