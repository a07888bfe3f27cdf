"""Snapshots: a Prehab job's model after a fraction of its steps equals a separate run of that many
steps (weights identical on CPU), in both trainable spaces; a control (lambda 0) too."""

from __future__ import annotations

import json

import pytest
import torch

from prehab.cli import main

STEPS = 12


@pytest.fixture(scope="module")
def base(tiny_chain, tmp_path_factory):
    """This module's output folder, holding links to the session's dense tiny-mlp and its grams
    (the inputs every test here reads as base / "dense" and base / "grams")."""
    root = tmp_path_factory.mktemp("snap")
    for key in ("dense", "grams"):
        (root / key).symlink_to(tiny_chain[key], target_is_directory=True)
    return root


def _prehab(base, out, steps, *extra):
    args = ["prehab", "--model", str(base / "dense"), "--grams", str(base / "grams"), "--steps", str(steps),
            "--log-every", "5", "--out", str(out), *extra]
    assert main(args) == 0


def _weights(folder):
    return torch.load(folder / "model.pt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("space,lam", [("weight", "1.0"), ("whitened", "1.0"), ("weight", "0")])
def test_a_snapshot_equals_a_separate_run(base, space, lam):
    common = ["--space", space, "--lam", lam, "--penalty-every", "2", "--penalty-stagger"]
    long = base / f"long-{space}-{lam}"
    _prehab(base, long, STEPS, *common, "--snapshots", "0.25", "0.5")
    for fraction, steps in (("0.25", 3), ("0.5", 6)):
        short = base / f"short-{space}-{lam}-{steps}"
        _prehab(base, short, steps, *common)
        snap = long / f"snap~{fraction}"
        a, b = _weights(snap), _weights(short)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        record = json.loads((snap / "metrics.json").read_text())
        assert record["params"]["steps"] == steps and record["params"]["snapshot"] == float(fraction)
        alone = json.loads((short / "metrics.json").read_text())
        assert record["metrics"]["final_task_loss"] == alone["metrics"]["final_task_loss"]
    full, half = _weights(long), _weights(base / f"short-{space}-{lam}-6")
    assert any(not torch.equal(full[k], half[k]) for k in full)  # the comparison can fail: training moved on


def test_snapshot_fractions_are_checked(base, capsys):
    assert main(["prehab", "--model", str(base / "dense"), "--grams", str(base / "grams"), "--steps", "4",
                 "--snapshots", "0.3", "0.35", "--out", str(base / "bad")]) == 2
    assert "both fall on step 1 of 4" in capsys.readouterr().err
    assert main(["prehab", "--model", str(base / "dense"), "--grams", str(base / "grams"), "--steps", "4",
                 "--snapshots", "1.5", "--out", str(base / "bad2")]) == 2
    assert not (base / "bad").exists() and not (base / "bad2").exists()
