"""scripts/compare_results.py: exact by default, within a stated tolerance on request (the GPU
check compares a GPU run with a CPU run that way)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_results.py"


def _tree(root: Path, accuracy: float, device: str = "cpu") -> Path:
    run = root / "runs" / "arch~x" / "seed~0" / "dense" / "eval"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(
        {"metrics": {"accuracy": accuracy, "n": 2000}, "params": {"device": device}, "wall_time_s": 1.0}))
    torch.save({"s": torch.tensor([1.0, accuracy])}, run.parent / "spectra.pt")
    (root / "tables").mkdir()
    (root / "tables" / "main.md").write_text(f"{accuracy:.4f}\n")
    return root


def _compare(a: Path, b: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(a), str(b), *flags], capture_output=True, text=True)


def test_exact_by_default_and_within_a_tolerance_on_request(tmp_path):
    a = _tree(tmp_path / "a", 0.8)
    same = tmp_path / "same"
    shutil.copytree(a, same)
    assert _compare(a, same).returncode == 0
    b = _tree(tmp_path / "b", 0.8 * (1 + 1e-4), device="cuda")
    exact = _compare(a, b)
    assert exact.returncode == 1 and "differs" in exact.stdout
    close = _compare(a, b, "--rtol", "1e-3")
    assert close.returncode == 0, close.stdout
    assert "tables: skipped" in close.stdout
    assert _compare(a, b, "--rtol", "1e-6").returncode == 1
    other = _tree(tmp_path / "c", 0.8 * (1 + 1e-4), device="cuda")
    (other / "runs" / "arch~x" / "seed~0" / "dense" / "eval" / "metrics.json").write_text(json.dumps(
        {"metrics": {"accuracy": 0.8, "n": 1999}, "params": {"device": "cuda"}, "wall_time_s": 2.0}))
    assert _compare(a, other, "--rtol", "1e-3").returncode == 1  # integers stay exact


def test_rows_moved_pairs_evaluations_by_folder():
    import sys

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from rows_moved import moved

    def table(values):
        return pd.DataFrame([{"eval_dir": f"e{i}", "method": "svd-llm", "space": None, "lora": "none", "metric": "accuracy",
                              "value": v}
                             for i, v in enumerate(values)])

    lines = moved(table([0.5, 0.6, 0.7]), table([0.5, 0.6, 0.701]).iloc[:3], None)
    assert lines[0] == "3 evaluations on both sides"
    assert "2 of   3 equal, largest difference 0.10 points" in lines[1]
    assert moved(table([0.5]), table([0.5, 0.6]), None)[-1] == "1 evaluations on one side only"
