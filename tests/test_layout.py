"""The package's structure: one path grammar (built and parsed by prehab.layout), steps that never
import each other, small modules, one code hash, and configs that cannot touch the committed
results."""

from __future__ import annotations

import ast
import itertools
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from prehab import layout
from prehab.layout import Run, parse_eval_dir
from prehab.steps import STEPS

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "prehab"
MAX_LINES = 400


def every_kind_of_run() -> list[Run]:
    """One run of each kind the grammar knows, compressed or not, with each LoRA schedule."""
    cal = dict(cal_source="train", cal_samples=128)
    uncut = [
        Run("vit-small", 0, "dense", False),
        Run("bert-small", 2, "control", False, surrogate=layout.CONTROL_SURROGATE, lam=0.0, space="weight", **cal),
        Run("llama-small", 1, "prehab", False, surrogate="nuclear_fro", lam=1e-05, space="whitened", **cal),
        Run("llama-small", 1, "prehab", False, surrogate="stable", lam=10.0, space="raw", cal_source="shift",
            cal_samples=32),
    ]
    cut = [Run("vit-small", 0, "svd", True), Run("vit-small", 0, "svd-llm", True, **cal), *uncut[1:]]
    runs = list(uncut)
    for run, ratio, lora in itertools.product(cut, (0.2, 0.65), (layout.NO_LORA, *layout.LORA_SCHEDULES)):
        runs.append(Run(**{**run.axes(), "compressed": True, "ratio": ratio, "lora": lora}))
    return runs


def test_every_run_path_parses_back_to_its_run():
    runs = every_kind_of_run()
    assert len({r.eval_dir for r in runs}) == len(runs)
    for run in runs:
        assert parse_eval_dir(run.eval_dir) == run, run.eval_dir


def test_the_workflow_patterns_match_the_layout_paths():
    """The rules' wildcard constraints (from layout.wildcard_constraints) accept every path the
    layout builds: the multi-level `start`, `compressed` and `model` parts included."""
    constraints = layout.wildcard_constraints()
    for run in every_kind_of_run():
        below_root = run.model_dir.split("/", 2)[2]  # after arch~A/seed~S
        if run.compressed:
            assert re.fullmatch(constraints["compressed"], below_root.rsplit("/ratio~", 1)[0]), run
        else:
            assert re.fullmatch(constraints["model"], below_root), run
        if run.method in ("control", "prehab"):
            part = layout.PREHAB_PART.format(surrogate=run.surrogate, lam=layout.fmt(run.lam), space=run.space)
            assert re.fullmatch(constraints["start"], part)
            assert re.fullmatch(layout.regex(layout.PREHABBED), run.model_dir.split("/method~")[0])


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("step", STEPS)
def test_no_step_imports_another(step):
    imported = _imports(PACKAGE / "steps" / f"{step}.py")
    others = {f"prehab.steps.{other}" for other in STEPS if other != step}
    assert not imported & others, imported & others


def test_every_method_step_has_its_module():
    for step in ("calibrate", "prehab", "compress", "rehab", "evaluate"):
        assert (PACKAGE / "method" / f"{step}.py").is_file()
        assert f"prehab.method.{step}" in {name.rsplit(".", 1)[0] if name.count(".") > 2 else name
                                           for name in _imports(PACKAGE / "steps" / f"{step}.py")}


def test_no_module_is_over_the_limit():
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_outputs_and_rules_share_one_code_hash():
    from prehab.outputs import StepRecord
    from prehab.provenance import step_source_hash

    assert StepRecord("x", {}).write.__module__ == "prehab.outputs"
    from prehab.provenance import code_version

    assert code_version()["source_sha256"] == step_source_hash()
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert re.search(r"from prehab.provenance import .*\bsource_hash, step_source_hash", common)
    assert "hashlib" not in common  # no second algorithm


def test_other_configs_never_write_the_committed_results():
    """Every shipped config but the default has its own results_dir, ignored by git."""
    for name in ("test.yaml", "testbeds.yaml"):
        results_dir = yaml.safe_load((REPO / "config" / name).read_text())["results_dir"]
        assert results_dir != "results"
        ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", f"{results_dir}/tables/main.md"])
        assert ignored.returncode == 0, f"{results_dir} is not ignored by git"


def test_the_report_rule_declares_every_table_the_report_writes(tmp_path):
    """`prehab report` writes runs.csv, <study>.csv|md for each study and the tables of all
    studies together (mechanism.csv|md); the workflow's report rule must declare each file that
    is not per study by name (the per-study ones by pattern), or Snakemake would not know them."""
    from prehab.report.collect import to_frame
    from prehab.report.files import write_tables

    from prehab.report.commands import _pages

    cfg = {"archs": [], "studies": {"only": {"enabled": False}}}
    written = write_tables(to_frame([]), cfg, tmp_path) + _pages(cfg, tmp_path)
    rule = (REPO / "workflow" / "rules" / "report.smk").read_text()
    assert {p.name for p in written} == {"runs.csv", "only.csv", "only.md", "mechanism.csv", "mechanism.md",
                                         "mechanism.html", "findings.md", "findings.html"}
    for path in written:
        if path.stem != "only":
            assert f'f"{{TABLES}}/{path.name}"' in rule, path.name
    for ext in ("csv", "md"):  # the enabled studies' pages by pattern (and their HTML twins)
        assert f'f"{{TABLES}}/{{{{study}}}}.{ext}"' in rule
    assert 'f"{TABLES}/{study}.html"' in rule
