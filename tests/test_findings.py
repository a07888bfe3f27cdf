"""The findings are written by scripts/findings.py from the committed tables: the block in
docs/results.md and its summary in the README must be exactly what the script makes of
results/tables (no number typed by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_findings_follow_from_the_committed_tables():
    proc = subprocess.run([sys.executable, "scripts/findings.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _findings_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("findings", REPO / "scripts" / "findings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_findings_carry_the_drop_and_the_gate(tmp_path):
    """From tables with the seed-level intervals, the drop and the gate (tests/test_report.py's
    runs): the Prehab-vs-control lines gain the drop difference, the counts say how often the
    gate read a cell; from tables without them the block is the one they gave before (the
    README check above)."""
    import json

    import pytest

    pytest.importorskip("torch")
    from test_report import CFG, make_tree

    from prehab.cli import main

    make_tree(tmp_path / "runs")
    assert main(["report", "--runs", str(tmp_path / "runs"), "--studies", json.dumps(CFG),
                 "--tables", str(tmp_path / "tables"), "--figures", str(tmp_path / "figures")]) == 0
    block = _findings_module().findings([tmp_path / "tables"], None)
    assert "| Prehab − control [95%] | drop vs control [95%] | Prehab vs SVD-LLM [95%] |" in block
    # tiny-mlp at R = 0.6 without LoRA: +3.1 against the control, 3.6 points less lost to compression
    assert "| tiny-mlp | 0.6 | no | nuclear λ=1 | 0.63 | +3.1 [+0.6, +5.6] better | +3.6 [+1.1, +6.1] better |" in block
    # one line per testbed says whether the gate was met (the fixture's lambda 1 halves the tail)
    assert "- tiny-mlp: nuclear λ*: met in 4 of 4 cells (tail Prehab / control 0.50)." in block
    assert ("tiny-mlp: Prehab at λ against its control, in the 4 of these 4 cells that have one: better: 3, worse: 1, "
            "no detectable difference: 0 (the gate: penalty did not reach the truncation error: 0, penalty harmed the "
            "model: 0, mechanism not measured: 0)") in block  # counted per testbed
    assert "Their seed-level (t over seeds) 95% intervals" in block
    sweep = [line for line in block.splitlines() if line.startswith("| tiny-mlp | nuclear | 0.1 |")]
    assert sweep and sweep[0].endswith(" penalty did not reach the truncation error |")
    # the README's summary counts the same cells: gate met in 4 of 4, 3 better and 1 worse
    findings = _findings_module()
    main_table, _, _, _ = findings.study_tables([tmp_path / "tables"])
    summary = findings.summary(main_table, None)
    assert "| main | tiny-mlp | nuclear λ=1 | 4 of 4 | 3 / 1 / 0 |" in summary, summary


def test_the_decisive_study_leads_the_findings_with_each_space_and_the_best_control(tmp_path, monkeypatch):
    """A `decisive` table (phase A on seed 0 over two lambdas and two spaces, phase B on seed 1 at
    lambda*) comes first: its Prehab rows name their space, and Prehab against the best control
    of its budget gets a column where that is another run than its own control (the whitened
    control scores 2 points more, so it is the weight-space Prehab's best control)."""
    import json

    import pytest

    pytest.importorskip("torch")
    import test_report
    from test_report import CFG, _study, make_tree

    plain = test_report.accuracy
    monkeypatch.setattr(test_report, "accuracy", lambda run: plain(run) + (
        0.02 if run.method == "control" and run.compressed and run.space == "whitened" else 0.0))

    from prehab.cli import main
    from prehab.studies import chosen_from_json

    decisive = _study(["dense", "svd-llm", "control", "prehab"], page="by_ratio", lora=["none"], seeds=[0],
                      confirm_seeds=[1], lam=[0.1, 1.0])
    decisive["prehab"]["space"] = ["weight", "whitened"]
    cfg = {"archs": ["tiny-mlp"], "studies": {"main": CFG["studies"]["main"], "decisive": decisive}}
    runs, out = tmp_path / "runs", tmp_path / "tables"
    make_tree(runs, cfg)
    assert main(["choose-lambda", "--runs", str(runs), "--studies", json.dumps(cfg), "--study", "decisive",
                 "--out", str(tmp_path / "choice.json")]) == 0
    chosen = chosen_from_json(json.loads((tmp_path / "choice.json").read_text())["lambda_star"])
    make_tree(runs, cfg, chosen={"decisive": chosen})
    assert main(["report", "--runs", str(runs), "--studies", json.dumps(cfg), "--tables", str(out),
                 "--figures", str(tmp_path / "figures")]) == 0
    block = _findings_module().findings([out], None, [out])
    lines = block.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("### The decisive study")))
    assert first < lines.index("### The default run and the other testbeds (`main`)")
    assert "| Prehab − best control [95%] |" in next(line for line in lines[first:] if line.startswith("| testbed |"))
    rows = [line for line in lines if line.startswith("| tiny-mlp | 0.6 | no | nuclear λ*=0.1, ")]
    assert {row.split(" | ")[3] for row in rows} == {"nuclear λ*=0.1, weight", "nuclear λ*=0.1, whitened"}


def test_the_decisive_halves_merge_row_by_row(tmp_path):
    """Two decisive tables of one testbed (its weight- and whitened-space halves, which share
    the dense model and the whitened control): every row once, the first folder's where both
    have it."""
    findings = _findings_module()
    header = ",".join(findings.ROW_KEY + ["mean"])
    rows = {"a": ["vit-small,dense,,none,,,,,,,0.89", "vit-small,control,0.6,none,train,640,none,0.0,whitened,,0.5",
                  "vit-small,prehab,0.6,none,train,640,nuclear,0.1,weight,,0.6"],
            "b": ["vit-small,dense,,none,,,,,,,0.89", "vit-small,control,0.6,none,train,640,none,0.0,whitened,,0.7",
                  "vit-small,prehab,0.6,none,train,640,nuclear,0.1,whitened,,0.4"]}
    for name, lines in rows.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "decisive.csv").write_text("\n".join([header, *lines]) + "\n")
    table, used = findings.merged([tmp_path / "a", tmp_path / "b"], "decisive.csv", by=findings.ROW_KEY)
    assert len(used) == 2 and len(table) == 4
    assert sorted(table["space"].fillna("").tolist()) == ["", "weight", "whitened", "whitened"]
    assert table.loc[table["method"] == "control", "mean"].tolist() == [0.5]  # the first folder's
