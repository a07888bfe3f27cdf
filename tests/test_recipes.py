"""The authors' recipes as presets: what a recipe fixes, its control at lambda 0, scaling by
--steps (recorded beside the recipe's own count), contradictions refused; and the studies'
per-architecture values (`per_arch`) for calibration sizes and recipes."""

from __future__ import annotations

import json

import pytest

from prehab.cli import main
from prehab.errors import UsageError
from prehab.method.recipes import RECIPES
from prehab.studies import cli_penalty, study_runs


@pytest.fixture(scope="module")
def base(tiny_chain, tmp_path_factory):
    """This module's output folder, holding links to the session's dense tiny-mlp and its grams
    (the inputs every test here reads as base / "dense" and base / "grams")."""
    root = tmp_path_factory.mktemp("recipe")
    for key in ("dense", "grams"):
        (root / key).symlink_to(tiny_chain[key], target_is_directory=True)
    return root


def _prehab(base, out, *args) -> int:
    return main(["prehab", "--model", str(base / "dense"), "--grams", str(base / "grams"), "--out", str(base / out),
                 *args])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_recipe_fixes_its_settings_and_records_the_scaling(base, name):
    assert _prehab(base, name, "--recipe", name, "--steps", "4") == 0
    params = json.loads((base / name / "metrics.json").read_text())["params"]
    recipe = RECIPES[name]
    assert (params["surrogate"], params["lam"], params["space"], params["lr"], params["batch_size"]) == (
        recipe.surrogate, recipe.lam, recipe.space, recipe.lr, recipe.batch_size)
    assert params["recipe"] == name and params["steps"] == 4 and params["recipe_steps"] == recipe.steps
    assert _prehab(base, f"{name}-control", "--recipe", name, "--lam", "0", "--steps", "4") == 0
    control = json.loads((base / f"{name}-control" / "metrics.json").read_text())["params"]
    assert control["lam"] == 0 and control["lr"] == recipe.lr and control["space"] == recipe.space


def test_a_contradicting_flag_is_refused(base, capsys):
    assert _prehab(base, "bad", "--recipe", "authors-vit", "--surrogate", "stable") == 2
    assert "contradicts --recipe authors-vit" in capsys.readouterr().err
    assert not (base / "bad").exists()


def test_the_workflow_passes_the_recipe():
    assert cli_penalty("authors-bert", 10.0) == "--recipe authors-bert"
    assert cli_penalty("authors-bert", 0.0) == "--recipe authors-bert --lam 0"
    assert cli_penalty("none", 0.0) == "--surrogate nuclear_fro --lam 0.0"


def _study(**prehab):
    return {"seeds": [0], "methods": ["control", "prehab"], "ratios": [0.6], "lora": ["none"],
            "calibration": {"source": ["train"], "samples": ["per_arch"]},
            "prehab": {"surrogate": ["nuclear"], "lam": [1.0], "space": ["weight"], **prehab}}


def test_per_arch_values_and_their_errors():
    runs = study_runs("s", _study(recipes=["per_arch"]), ["vit-small", "bert-small"],
                      {"vit-small": 640, "bert-small": 256}, {"vit-small": "authors-vit", "bert-small": "authors-bert"})
    labels = {(r.arch, r.surrogate, r.lam, r.cal_samples) for r in runs if not r.compressed}
    assert ("vit-small", "authors-vit", 5.0, 640) in labels and ("vit-small", "authors-vit", 0.0, 640) in labels
    assert ("bert-small", "authors-bert", 10.0, 256) in labels and ("bert-small", "none", 0.0, 256) in labels
    with pytest.raises(UsageError, match="arch_settings.bert-small.calib_samples"):
        study_runs("s", _study(), ["bert-small"], {}, {})
    with pytest.raises(UsageError, match="arch_settings.vit-small.recipe"):
        study_runs("s", _study(recipes=["per_arch"]), ["vit-small"], {"vit-small": 64}, {})
