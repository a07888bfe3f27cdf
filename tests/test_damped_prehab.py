"""`prehab prehab --damping f`: training through a damped whitening made from the undamped
calibration equals training on a calibration damped at the source, and is recorded."""

from __future__ import annotations

import json

import torch

from prehab.cli import main


def _weights(folder):
    return torch.load(folder / "model.pt", weights_only=True)["state_dict"]


def test_prehab_damping_equals_a_damped_calibration(tiny_chain, tmp_path):
    dense, grams = tiny_chain["dense"], tiny_chain["grams"]
    damped_grams = tmp_path / "grams-damped"
    assert main(["calibrate", "--model", str(dense), "--damping", "0.01", "--out", str(damped_grams)]) == 0
    common = ["--model", str(dense), "--space", "whitened", "--lam", "1", "--steps", "6", "--log-every", "3"]
    assert main(["prehab", *common, "--grams", str(grams), "--damping", "0.01", "--out", str(tmp_path / "a")]) == 0
    assert main(["prehab", *common, "--grams", str(damped_grams), "--out", str(tmp_path / "b")]) == 0
    assert main(["prehab", *common, "--grams", str(grams), "--out", str(tmp_path / "c")]) == 0
    a, b, c = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float((a[k] - c[k]).abs().max()) for k in a)
    assert gap < 1e-5 and moved > 1e3 * max(gap, 1e-9), (gap, moved)  # the same run, and not the undamped one
    record = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert record["params"]["damping"] == 0.01
    assert "damping" not in json.loads((tmp_path / "c" / "metrics.json").read_text())["params"]


def test_negative_damping_is_refused(tiny_chain, tmp_path, capsys):
    assert main(["prehab", "--model", str(tiny_chain["dense"]), "--grams", str(tiny_chain["grams"]),
                 "--damping", "-0.1", "--out", str(tmp_path / "bad")]) == 2
    assert "--damping" in capsys.readouterr().err and not (tmp_path / "bad").exists()
