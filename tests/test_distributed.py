"""Training across processes (prehab/distributed.py): `torchrun --nproc-per-node 2` on CPU (gloo),
the model sharded per block by torch's FSDP2.

- pretrain of llama-tiny on 2 processes ends with the single process's weights to 1e-5 of each
  tensor's largest entry (float32 rounding of a sum split over two ranks; measured 6e-7).
- bert-tiny (dropout 0: ranks draw other masks than one process would) on 2 processes equals one
  process stepping over the same two row slices (`--micro-batches 2`) to 1e-6. Against the plain
  single step it may not: BERT's attention key biases have a zero gradient up to rounding, and
  Adam turns that rounding noise into steps of +-lr, whichever way the sum was split.
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
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        if wa[key].is_floating_point():
            scale = float(wa[key].abs().max()) or 1.0
            assert float((wa[key] - wb[key]).abs().max()) <= rtol * scale, key


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
    assert "only pretrain runs" in capsys.readouterr().err and not (tmp_path / "e").exists()
