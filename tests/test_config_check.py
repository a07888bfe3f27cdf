"""Invalid workflow configs are refused before any job, with one line naming the key, the bad value
and what is allowed (prehab.config_check): 30+ cases checked in-process on config/test.yaml, and
the Snakefile's path once through snakemake (tests/test_workflow.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from prehab.config_check import ConfigError, check

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
BASE = yaml.safe_load((REPO / "config" / "test.yaml").read_text())


def _set(config: dict, path: str, value) -> None:
    keys = path.split(".")
    node = config
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is DELETE:
        del node[keys[-1]]
    elif isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


DELETE = object()

# (what is wrong, key path, bad value, words the one-line message must hold)
CASES = [
    ("wrong type", "keep_compressed", "yes", ["keep_compressed", "'yes'", "boolean"]),
    ("1e-3 read as a string", "studies.main.prehab.lam", ["1e-3"], ["studies.main.prehab.lam[0]", "'1e-3'", "1.0e-3"]),
    ("negative lambda", "studies.main.prehab.lam", [-1.0], ["studies.main.prehab.lam[0]", "-1.0", "> 0"]),
    ("ratio 1.5", "studies.main.ratios", [1.5], ["studies.main.ratios[0]", "1.5", "< 1"]),
    ("ratio 0", "studies.main.ratios", [0.0], ["studies.main.ratios[0]", "0.0", "> 0"]),
    ("ratio as text", "studies.main.ratios", ["half"], ["studies.main.ratios[0]", "'half'", "number"]),
    ("unknown architecture", "archs", ["vit-huge"], ["archs[0]", "vit-huge", "vit-small"]),
    ("unknown architecture in arch_settings", "arch_settings.vit-huge", {"prehab_steps": 3},
     ["arch_settings.vit-huge", "unknown architecture"]),
    ("unknown arch option", "arch_settings.vit-tiny.arch_opts", {"n_tset": 4}, ["n_tset", "n_test"]),
    ("unknown surrogate", "studies.main.prehab.surrogate", ["nucleus"], ["surrogate[0]", "nucleus", "nuclear_fro"]),
    ("unknown space", "studies.main.prehab.space", ["latent"], ["space[0]", "latent", "whitened"]),
    ("unknown estimator", "prehab.estimator", "slow", ["prehab.estimator", "'slow'", "exact"]),
    ("refresh interval without the lagged estimator", "prehab.refresh_every", 4,
     ["prehab.refresh_every = 4", "estimator lagged"]),
    ("unknown LoRA schedule", "studies.main.lora", ["both"], ["lora[0]", "both", "sequential"]),
    ("unknown method", "studies.main.methods", ["magic"], ["methods[0]", "magic", "svd-llm"]),
    ("unknown study key", "studies.main.ratio", [0.5], ["unknown key studies.main.ratio", "ratios"]),
    ("unknown top-level key", "studys", {}, ["unknown key studys", "studies"]),
    ("unknown prehab key", "prehab.warmup_steps", 3, ["unknown key prehab.warmup_steps", "lam_warmup_steps"]),
    ("unknown arch setting", "arch_settings.vit-tiny.steps", 3, ["unknown key arch_settings.vit-tiny.steps",
                                                                  "prehab_steps"]),
    ("unknown figure", "studies.main.figures", ["heatmap"], ["figures[0]", "heatmap", "budget"]),
    ("unknown page", "studies.main.page", "by_seed", ["studies.main.page", "by_ratio"]),
    ("empty ratio list", "studies.main.ratios", [], ["studies.main.ratios", "at least 1"]),
    ("empty seeds", "studies.main.seeds", [], ["studies.main.seeds", "at least 1"]),
    ("empty archs", "archs", [], ["archs", "at least 1"]),
    ("duplicate ratio", "studies.main.ratios", [0.5, 0.5], ["studies.main.ratios", "0.5", "listed twice"]),
    ("duplicate seed", "studies.main.seeds", [0, 0], ["studies.main.seeds", "listed twice"]),
    ("duplicate lambda", "studies.main.prehab.lam", [1.0, 1.0], ["studies.main.prehab.lam", "listed twice"]),
    ("negative seed", "studies.main.seeds", [-1], ["studies.main.seeds[0]", "-1", ">= 0"]),
    ("zero calibration samples", "studies.main.calibration.samples", [0], ["calibration.samples[0]", "0"]),
    ("unknown calibration source", "studies.main.calibration.source", ["web"], ["source[0]", "web", "shift"]),
    ("negative prehab steps", "arch_settings.vit-tiny.prehab_steps", -5, ["prehab_steps", "-5", ">= 0"]),
    ("zero batch size", "arch_settings.vit-tiny.batch_size", 0, ["batch_size", "0", ">= 1"]),
    ("negative lr", "arch_settings.vit-tiny.prehab_lr", -1.0e-4, ["prehab_lr", "-0.0001", "> 0"]),
    ("snapshot fraction 1", "studies.main.snapshots", [1.0], ["studies.main.snapshots[0]", "1.0", "< 1"]),
    ("unknown recipe", "studies.main.prehab.recipes", ["mine"], ["recipes[0]", "mine", "authors-vit"]),
    ("study missing methods", "studies.main.methods", DELETE, ["studies.main", "methods"]),
    ("study arch not in archs", "studies.main.archs", ["llama-small"], ["studies.main.archs", "llama-small",
                                                                        "top-level archs"]),
    ("results_dir inside the package", "results_dir", str(REPO / "prehab" / "out"), ["results_dir", "inside the prehab"]),
    ("empty results_dir", "results_dir", "", ["results_dir", "non-empty"]),
    ("negative LoRA rank", "lora.rank", -8, ["lora.rank", "-8"]),
    ("penalty every 0", "prehab.penalty_every", 0, ["prehab.penalty_every", "0", ">= 1"]),
    ("a phase-B seed phase A runs too", "studies.main.confirm_seeds", [0, 3],
     ["studies.main.confirm_seeds", "[0] also in seeds", "does not run"]),
    ("a batch too small for its processes", "arch_settings.vit-tiny.resources", {"prehab": {"processes": 1000}},
     ["arch_settings.vit-tiny.", "1000 processes x 1 micro-batches", "at least 1000 rows"]),
    # values that pass a type check but not the run folders or the CLI (one rule for both)
    ("a NaN lambda", "studies.main.prehab.lam", [float("nan")], ["studies.main.prehab.lam[0] = nan", "finite"]),
    ("an infinite lambda", "studies.main.prehab.lam", [float("inf")], ["studies.main.prehab.lam[0] = inf", "finite"]),
    ("ratios that share a run folder", "studies.main.ratios", [0.5, 0.5000001],
     ["studies.main.ratios", "0.5 and 0.5000001", "share the run folder ~0.5"]),
    ("a ratio its folder would round to 1", "studies.main.ratios", [0.9999999],
     ["studies.main.ratios[0] = 0.9999999", "ratio~1", "(0, 1)"]),
    ("lambdas that share a run folder", "studies.main.prehab.lam", [1.0, 1.0000001],
     ["studies.main.prehab.lam", "1.0 and 1.0000001", "share the run folder ~1"]),
    ("a negative test size", "arch_settings.vit-tiny.arch_opts", {"n_train": 512, "n_test": -5},
     ["arch_settings.vit-tiny.arch_opts.n_test = -5", "row count", ">= 1"]),
    ("no training rows", "arch_settings.vit-tiny.arch_opts", {"n_train": 0, "n_test": 256},
     ["arch_settings.vit-tiny.arch_opts.n_train = 0", ">= 1"]),
    ("a test size in words", "arch_settings.vit-tiny.arch_opts", {"n_test": "abc"},
     ["arch_settings.vit-tiny.arch_opts.n_test = 'abc'", "is not a int"]),
    ("a test size given as true", "arch_settings.vit-tiny.arch_opts", {"n_test": True},
     ["arch_settings.vit-tiny.arch_opts.n_test = True", "is not a int"]),
    # sizes against what the data holds (ArchSpec.split_rows; vit-tiny: 512 training rows, 128 of them validation)
    ("more calibration samples than the source holds", "studies.main.calibration.samples", [1000],
     ["studies.main.calibration.samples = 1000", "vit-tiny", "'train' holds 384 rows", "at most 384"]),
    ("a test set above what the data holds", "arch_settings.vit-tiny.arch_opts", {"n_train": 512, "n_test": 20000},
     ["arch_settings.vit-tiny.arch_opts.n_test = 20000", "holds 10000 rows", "at most 10000"]),
    ("more test windows than the text holds", "arch_settings.llama-tiny.arch_opts", {"n_test": 10**8},
     ["arch_settings.llama-tiny.arch_opts.n_test = 100000000", "test split holds"]),
    ("validation rows leave no training rows", "arch_settings.bert-tiny.arch_opts", {"n_test": 128, "n_val": 50000},
     ["arch_settings.bert-tiny.arch_opts.n_val = 50000", "no training rows"]),
]


def test_a_config_with_every_study_disabled_is_refused():
    config = copy.deepcopy(BASE)
    for study in config["studies"].values():
        study["enabled"] = False
    with pytest.raises(ConfigError, match="every study is disabled"):
        check(config, SCHEMA)


def test_the_cli_and_the_config_check_apply_one_rule_to_an_arch_option():
    from prehab.errors import UsageError
    from prehab.registry import get_arch

    spec = get_arch("vit-tiny")
    assert spec.resolve_options({"n_test": "7"})["n_test"] == 7
    for raw in ("-5", "0", "abc", "True"):
        with pytest.raises(UsageError) as cli:
            spec.resolve_options({"n_test": raw})
        config = copy.deepcopy(BASE)
        config["arch_settings"]["vit-tiny"]["arch_opts"] = {"n_test": raw}
        with pytest.raises(ConfigError) as workflow:
            check(config, SCHEMA)
        assert str(cli.value) in str(workflow.value)
    assert get_arch("hf-causal-lm").option_value("n_test", "0") == 0  # 0 = every row, where that is the default


def test_the_base_config_passes():
    check(copy.deepcopy(BASE), SCHEMA)


@pytest.mark.parametrize("what,path,value,words", CASES, ids=[c[0] for c in CASES])
def test_an_invalid_config_is_refused_in_one_line(what, path, value, words):
    config = copy.deepcopy(BASE)
    _set(config, path, value)
    with pytest.raises(ConfigError) as caught:
        check(config, SCHEMA)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 500, message  # one line; the longest lists every arch setting
    for word in words:
        assert word in message, (word, message)


def test_per_arch_calibration_samples_are_checked_against_their_source():
    config = copy.deepcopy(BASE)
    config["studies"]["main"]["calibration"] = {"source": ["shift"], "samples": ["per_arch"]}
    for arch in config["archs"]:
        config["arch_settings"][arch]["calib_samples"] = 32
    check(copy.deepcopy(config), SCHEMA)
    config["arch_settings"]["vit-tiny"]["calib_samples"] = 6000  # MNIST digits: 5,000
    with pytest.raises(ConfigError, match=r"arch_settings.vit-tiny.calib_samples = 6000: .*'shift' holds 5000 rows"):
        check(config, SCHEMA)


def test_there_are_at_least_thirty_cases():
    assert len({c[0] for c in CASES}) >= 30


def test_the_schema_names_what_the_code_knows():
    """Enums written in the schema are the code's own lists (one home per name, checked)."""
    from prehab.method.names import ESTIMATORS, SPACES, SURROGATES
    from prehab.method.recipes import RECIPES
    from prehab.studies import FIGURES, PAGES

    study = SCHEMA["$defs"]["study"]["properties"]
    assert study["figures"]["items"]["enum"] == list(FIGURES)
    assert study["page"]["enum"] == list(PAGES)
    assert set(study["prehab"]["properties"]["recipes"]["items"]["enum"]) == set(RECIPES) | {"per_arch"}
    assert set(study["prehab"]["properties"]["space"]["items"]["enum"]) == set(SPACES)
    assert set(study["prehab"]["properties"]["surrogate"]["items"]["enum"]) <= set(SURROGATES)
    assert set(SCHEMA["properties"]["prehab"]["properties"]["estimator"]["enum"]) == set(ESTIMATORS)


def test_every_figure_has_its_report_caption():
    """The report's figure captions are their drawing functions' docstrings (prehab.report.captions):
    every figure has one, and a caption names only the enabled studies that declare it."""
    from prehab.report import captions, figures
    from prehab.studies import FIGURES

    assert tuple(figures.DRAWERS) == FIGURES
    missing = [name for name, drawer in figures.DRAWERS.items() if len(captions._first_paragraph(drawer.__doc__)) < 40]
    assert not missing, missing
    cfg = {"archs": ["vit-small"], "studies": {
        "on": {"enabled": True, "figures": ["spectra"]}, "off": {"enabled": False, "figures": ["spectra", "budget"]}}}
    text = captions.figure_caption(cfg, "spectra", figures.DRAWERS["spectra"])
    assert "``on``" in text and "off" not in text
