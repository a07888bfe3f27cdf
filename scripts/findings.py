"""Write the README's findings from the committed tables (results/tables), never by hand.

Reads `main.csv` (and, when present, config/recipes.yaml's `main.csv` and config/budget.yaml's
`budget.csv`, each copied from its own results tree) and replaces the block
between the README's `<!-- findings:start -->` and `<!-- findings:end -->` markers with:
per testbed and ratio, Prehab at lambda* (chosen on validation) and each recipe against its
lambda = 0 control and against SVD-LLM, paired, with the verdicts counted; what the intervals
could have detected; whether the control harmed the model before compression.

    .venv/bin/python scripts/findings.py [--tables results/tables] [--recipes results/recipes/tables]
        [--budget results/budget] [--readme README.md] [--check]

`--check` exits 1 when the README's block differs from what the tables give (a test runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from prehab.layout import NO_LORA, fmt
from prehab.method.recipes import RECIPES
from prehab.report import choice, paired

START, END = "<!-- findings:start -->", "<!-- findings:end -->"


def _cell(r, name: str) -> str:
    if not isinstance(r.get(f"{name}_verdict"), str) or not r[f"{name}_verdict"]:
        return "—"
    p = paired.Paired(r[name], r[f"{name}_low"], r[f"{name}_high"], r[f"{name}_verdict"], ())
    return f"{paired.fmt_paired(p, r['metric'])} {r[f'{name}_verdict']}"


def _half_width(r, name: str) -> float:
    return (r[f"{name}_high"] - r[f"{name}_low"]) / 2


def main_findings(table, recipes_only: bool = False) -> list[str]:
    """Markdown lines: the Prehab-vs-control table and the counted verdicts (of the recipes'
    rows only, for config/recipes.yaml's tables)."""
    pre = choice.reported(table[(table["method"] == "prehab") & table["compressed"].astype(bool)], table)
    if recipes_only:
        pre = pre[pre["surrogate"].isin(list(RECIPES))]
    star = "*" if choice.sweeps(table) else ""
    lines = ["| testbed | R | LoRA | Prehab | metric | Prehab − control [95%] | Prehab vs SVD-LLM [95%] |",
             "|---|---|---|---|---|---|---|"]
    for _, r in pre.sort_values(["arch", "ratio", "lora", "surrogate"]).iterrows():
        which = r["surrogate"] if r["surrogate"] in RECIPES else f"λ{star}={fmt(r['lam'])}"
        lines.append(f"| {r['arch']} | {fmt(r['ratio'])} | {'no' if r['lora'] == NO_LORA else r['lora']} | {which} "
                     f"| {r['mean']:.4g} | {_cell(r, 'vs_control')} | {_cell(r, 'vs_svdllm')} |")
    verdicts = pre["vs_control_verdict"].fillna("").value_counts()
    counted = ", ".join(f"{name}: {int(verdicts.get(name, 0))}" for name in
                        (paired.BETTER, paired.WORSE, paired.UNDETECTED))
    n_paired = int(pre["vs_control_verdict"].fillna("").astype(bool).sum())
    acc = pre[(pre["metric"] == "accuracy") & pre["vs_control_verdict"].fillna("").astype(bool)]
    widths = [_half_width(r, "vs_control") for _, r in acc.iterrows()]
    lines += ["", f"Prehab against its control, in the {n_paired} of these {len(pre)} cells that have one: {counted}."]
    if widths:
        lines.append(f"The paired 95% intervals have half-widths {min(widths):.1f} to {max(widths):.1f} points of "
                     f"accuracy (median {sorted(widths)[len(widths) // 2]:.1f}): a true Prehab effect of about that "
                     "size or more would have been called better or worse; smaller ones would not.")
    return lines


def control_findings(table) -> list[str]:
    """Markdown lines: each control before compression against the dense model."""
    rows = table[(table["method"] == "control") & ~table["compressed"].astype(bool)]
    lines = []
    for _, r in rows.sort_values(["arch", "surrogate"]).iterrows():
        lines.append(f"- {r['arch']}, {r['label']}: {r['mean']:.4g} before compression; against the dense "
                     f"model: {_cell(r, 'vs_dense')}.")
    return lines


def sweep_findings(table) -> list[str]:
    """Markdown lines: Prehab minus control per lambda (the one-seed sweep), before and after
    compression, so the reader sees which way the penalty moves the model."""
    rows = table[(table["method"] == "prehab") & (table["lora"] == NO_LORA)]
    lines = ["| testbed | λ | before compression: Prehab − control [95%] | after SVD-LLM: R | Prehab − control [95%] |",
             "|---|---|---|---|---|"]
    for (arch, lam), g in rows.groupby(["arch", "lam"], sort=True):
        before = g[~g["compressed"].astype(bool)]
        for _, r in g[g["compressed"].astype(bool)].sort_values("ratio").iterrows():
            first = _cell(before.iloc[0], "vs_control") if not before.empty else "—"
            lines.append(f"| {arch} | {fmt(lam)} | {first} | {fmt(r['ratio'])} | {_cell(r, 'vs_control')} |")
    return lines


def budget_findings(table) -> list[str]:
    rows = table[(table["method"] == "prehab") & table["vs_control_verdict"].fillna("").astype(bool)]
    lines = ["| testbed | R | Prehab steps | Prehab − control [95%] |", "|---|---|---|---|"]
    for _, r in rows.sort_values(["arch", "ratio", "steps"], na_position="first").iterrows():
        where = "before compression" if not r["compressed"] else fmt(r["ratio"])
        lines.append(f"| {r['arch']} | {where} | {int(r['steps'])} | {_cell(r, 'vs_control')} |")
    return lines


def findings(tables: Path, budget: Path | None, recipes: Path | None = None) -> str:
    main = pd.read_csv(tables / "main.csv", keep_default_na=False, na_values=[""])
    if budget is not None and not (budget / "budget.csv").is_file():
        budget = None
    if recipes is not None and not (recipes / "main.csv").is_file():
        recipes = None
    sources = [f"`{tables}/main.csv`"] + ([f"`{recipes}/main.csv`"] if recipes else []) + (
        [f"`{budget}/budget.csv`"] if budget else [])
    parts = [START, "", f"Written by `scripts/findings.py` from {', '.join(sources)}; do not edit by hand.", ""]
    parts += main_findings(main) + ["", "The λ = 0 control before compression, against the dense model (paired):", ""]
    parts += control_findings(main)
    sweep = tables / "lambda_sweep.csv"
    if sweep.is_file() and sweep.stat().st_size > 0:
        table = pd.read_csv(sweep, keep_default_na=False, na_values=[""])
        if not table.empty:
            parts += ["", "Prehab minus control over the wider λ range (`lambda_sweep`, seed 0):", ""]
            parts += sweep_findings(table)
    if recipes is not None:
        parts += ["", "The authors' recipes against their own λ = 0 control (`config/recipes.yaml`, 3 seeds; the "
                  "step count is scaled, see the table's notes):", ""]
        parts += main_findings(pd.read_csv(recipes / "main.csv", keep_default_na=False, na_values=[""]),
                               recipes_only=True)
        recipe_table = pd.read_csv(recipes / "main.csv", keep_default_na=False, na_values=[""])
        controls = recipe_table[recipe_table["surrogate"].isin(list(RECIPES))]
        parts += ["", "The recipes' controls before compression, against the dense model (paired):", ""]
        parts += control_findings(controls)
    if budget is not None:
        parts += ["", "Prehab minus control against Prehab steps (`budget`, seed 0):", ""]
        parts += budget_findings(pd.read_csv(budget / "budget.csv", keep_default_na=False, na_values=[""]))
    return "\n".join(parts + ["", END])


def replace_block(text: str, block: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"README has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    return head + block + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=Path, default=Path("results/tables"))
    parser.add_argument("--budget", type=Path, default=Path("results/budget"),
                        help="folder holding budget.csv (config/budget.yaml's tables; skipped when absent)")
    parser.add_argument("--recipes", type=Path, default=Path("results/recipes/tables"),
                        help="folder holding config/recipes.yaml's main.csv (skipped when absent)")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's block is stale")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new = replace_block(text, findings(args.tables, args.budget, args.recipes))
    if args.check:
        if new != text:
            print(f"{args.readme}: the findings block differs from {args.tables}; run scripts/findings.py",
                  file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
