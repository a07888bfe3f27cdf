"""The findings of study tables in prose and markdown: per testbed and ratio, Prehab at lambda*
and each recipe against its lambda = 0 control (and the best control of its budget) and SVD-LLM,
paired, the drop compression causes, the verdicts counted with how often the gate read a cell,
what the intervals could have detected, and whether the controls moved the dense model; and a
one-table summary of the same counts. `prehab report` writes a run's findings page with it;
scripts/findings.py writes the committed studies' into docs/results.md and the README.

Tables made before the seed-level intervals, the drop and the gate existed (no
`vs_control_basis` / `drop_vs_control` columns) give the block they gave then.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from prehab.errors import UsageError
from prehab.layout import NO_LORA, fmt
from prehab.method.recipes import RECIPES
from prehab.report import choice, gate, pages, paired

START, END = "<!-- findings:start -->", "<!-- findings:end -->"
SUMMARY_START, SUMMARY_END = "<!-- summary:start -->", "<!-- summary:end -->"


def _cell(r, name: str) -> str:
    """`estimate [95%] verdict` of one paired comparison (a verdict read from one seed's item
    interval says so); "—" when not paired."""
    if not isinstance(r.get(f"{name}_verdict"), str) or not r[f"{name}_verdict"]:
        return "—"
    p = paired.Paired(r[name], r[f"{name}_low"], r[f"{name}_high"], r[f"{name}_verdict"], ())
    basis = r.get(f"{name}_basis")
    return f"{paired.fmt_paired(p, r['metric'])} {paired.labelled_verdict(r[f'{name}_verdict'], basis)}"


DROP_MEANING = ("Drop vs control: how much less Prehab loses to compression than its control, on the same "
                "seeds and test items (the control's drop minus Prehab's, each before − after; points, positive = "
                "Prehab loses less; perplexity: Prehab's after / before over the control's, below 1 = Prehab "
                "loses less). [95%]: a t-interval over the seeds; the verdicts pass the gate of the tables' NOTE.")


def _has_drop(table) -> bool:
    """Whether the tables carry the drop difference (tables made before it do not)."""
    return "drop_vs_control" in table


def _half_width(r, name: str) -> float:
    return (r[f"{name}_high"] - r[f"{name}_low"]) / 2


def _has_best(table) -> bool:
    """Whether some Prehab row's best control of its budget is another run than its own control
    (then the findings show Prehab against it too; the pages' rule)."""
    return bool(pages.best_headers(table))


def _which(r, star: str, spaces: bool) -> str:
    """A Prehab row's name in the findings: the recipe, or the surrogate at its lambda (and its
    space where the testbed's Prehab rows differ in it)."""
    if r["surrogate"] in RECIPES:
        return r["surrogate"]
    return f"{r['surrogate']} λ{star}={fmt(r['lam'])}" + (f", {r['space']}" if spaces else "")


def main_findings(table) -> list[str]:
    """Markdown lines: Prehab at lambda* and each recipe against its control (and the best
    control of its budget where that is another run) and SVD-LLM, and the verdicts counted for
    each kind."""
    pre = choice.reported(table[(table["method"] == "prehab") & table["compressed"].astype(bool)], table)
    star = "*" if choice.sweeps(table) else ""
    drop, best = _has_drop(table), _has_best(pre)
    plain = pre[~pre["surrogate"].isin(list(RECIPES))]
    spaces = bool((plain.groupby("arch")["space"].nunique() > 1).any()) if not plain.empty else False
    # First whether the penalty did what it is for, then what it achieved after compression.
    lines = ["Did the penalty reach what truncation removes (the gate: the summed absolute whitened tail at "
             f"k(R) cut by at least {100 * (1 - gate.TAIL_GATE):.0f}% against the control, `mechanism.md`)?", ""]
    lines += [gate_line(arch, rows) for arch, rows in pre.groupby("arch", sort=True)] + [""]
    lines += ["| testbed | R | LoRA | Prehab | metric | Prehab − control [95%] | "
             + ("drop vs control [95%] | " if drop else "") + ("Prehab − best control [95%] | " if best else "")
             + "Prehab vs SVD-LLM [95%] |",
             "|---|---|---|---|---|---|---|" + ("---|" if drop else "") + ("---|" if best else "")]
    for _, r in pre.sort_values(["arch", "ratio", "lora", "surrogate", "space"]).iterrows():
        lines.append(f"| {r['arch']} | {fmt(r['ratio'])} | {'no' if r['lora'] == NO_LORA else r['lora']} "
                     f"| {_which(r, star, spaces)} | {r['mean']:.4g} | {_cell(r, 'vs_control')} | "
                     + (f"{_cell(r, 'drop_vs_control')} | " if drop else "")
                     + (f"{_cell(r, 'vs_best_control')} | " if best else "") + f"{_cell(r, 'vs_svdllm')} |")
    lines.append("")
    if drop:
        lines += [DROP_MEANING, ""]
    if best:
        named = sorted(set(pre.loc[pre["best_control"].fillna("").astype(bool), "best_control"]))
        lines += ["Best control: the λ = 0 control of any space with the same steps that scores best on validation "
                  f"where λ is chosen ({'; '.join(named)}); Prehab must beat the best fine-tuning of its budget.", ""]
    for arch, by_arch in pre.groupby("arch", sort=True):  # tables of different dates: counted apart
        recipe = by_arch["surrogate"].isin(list(RECIPES))
        for rows, what in ((by_arch[~recipe], f"{arch}: Prehab at λ{star} against its control"),
                           (by_arch[recipe], f"{arch}: the authors' recipe (scaled) against its own control")):
            if not rows.empty:
                lines += _counted(rows, what)
    return lines


def gate_line(arch: str, rows) -> str:
    """One line per testbed: in how many of its Prehab and recipe cells the penalty cut the
    summed tail at k(R) by the gate's amount, or that its tables predate the readout."""
    measured = rows[rows["tail_vs_control"].notna()] if "tail_vs_control" in rows else rows.iloc[0:0]
    if measured.empty and "tail_vs_control" in rows and not rows["vs_control_verdict"].fillna("").astype(bool).any():
        return f"- {arch}: not measured (this study has no λ = 0 control to measure it against)."
    if measured.empty:
        return (f"- {arch}: not measured (its tables were made before the mechanism readout, with the item-level "
                "verdicts of that time).")
    parts = []
    labels = measured["surrogate"].map(lambda s: s if s in RECIPES else f"{s} λ*")
    for label, part in measured.groupby(labels, sort=True):
        met = int((part["tail_vs_control"] <= gate.TAIL_GATE).sum())
        ratios = ", ".join(f"{v:.2f}" for v in sorted(set(part["tail_vs_control"].round(2))))
        parts.append(f"{label}: met in {met} of {len(part)} cells (tail Prehab / control {ratios})")
    return f"- {arch}: " + "; ".join(parts) + "."


def _verdict_counts(pre, name: str) -> str:
    """`better: n, worse: n, no detectable difference: n` of the interval's verdicts (before the
    gate), then how often the gate read the cells."""
    gated = f"{name}_interval_verdict" in pre and pre[f"{name}_interval_verdict"].fillna("").astype(bool).any()
    column = f"{name}_interval_verdict" if gated else f"{name}_verdict"  # tables made before the gate: theirs
    verdicts = pre[column].fillna("").value_counts()
    counted = ", ".join(f"{v}: {int(verdicts.get(v, 0))}" for v in (paired.BETTER, paired.WORSE, paired.UNDETECTED))
    if column == f"{name}_verdict":
        return counted
    readings = pre[f"{name}_verdict"].fillna("")
    gates = ", ".join(f"{gate}: {int(readings.str.contains(gate, regex=False).sum())}"
                      for gate in (gate.UNREACHED, gate.HARMED, gate.UNMEASURED))
    return f"{counted} (the gate: {gates})"


def _counted(pre, what: str) -> list[str]:
    """The verdicts of these rows counted, and what their intervals could have detected."""
    n_paired = int(pre["vs_control_verdict"].fillna("").astype(bool).sum())
    acc = pre[(pre["metric"] == "accuracy") & pre["vs_control_verdict"].fillna("").astype(bool)]
    widths = [_half_width(r, "vs_control") for _, r in acc.iterrows()]
    lines = [f"{what}, in the {n_paired} of these {len(pre)} cells that have one: {_verdict_counts(pre, 'vs_control')}."]
    if _has_drop(pre) and pre["drop_vs_control_verdict"].fillna("").astype(bool).any():
        n_drop = int(pre["drop_vs_control_verdict"].fillna("").astype(bool).sum())
        lines.append(f"The drop compression causes, Prehab's against its control's, in the {n_drop} cells that have "
                     f"it: {_verdict_counts(pre, 'drop_vs_control')}.")
    seed_level = "vs_control_basis" in pre and pre["vs_control_basis"].fillna("").astype(bool).any()
    kind = "seed-level (t over seeds) " if seed_level else "item-level (test-set noise only, the tables' date) "
    if widths:
        lines.append(f"Their {kind}95% intervals have half-widths {min(widths):.1f} to {max(widths):.1f} points of "
                     f"accuracy (median {sorted(widths)[len(widths) // 2]:.1f}): a true effect of about that "
                     "size or more would have been called better or worse; smaller ones would not.")
    ppl = pre[(pre["metric"] == "perplexity") & pre["vs_control_verdict"].fillna("").astype(bool)]
    spans = sorted(100 * ((r["vs_control_high"] / r["vs_control_low"]) ** 0.5 - 1) for _, r in ppl.iterrows()
                   if r["vs_control_low"] > 0 and math.isfinite(r["vs_control_high"]))
    if spans:
        lines.append(f"Their {kind}95% intervals of the perplexity ratio reach {spans[0]:.2g}% to {spans[-1]:.2g}% "
                     f"either side (median {spans[len(spans) // 2]:.2g}%): a true change of perplexity of about "
                     "that size or more would have been called better or worse; smaller ones would not.")
    return lines


def control_findings(table) -> list[str]:
    """Markdown lines: each control before compression against the dense model."""
    rows = table[(table["method"] == "control") & ~table["compressed"].astype(bool)]
    lines = []
    for (arch, _), g in rows.sort_values(["arch", "surrogate", "space"]).groupby(["arch", "surrogate"], sort=False):
        spaces = g["space"].nunique() > 1  # controls of several spaces read apart
        for _, r in g.iterrows():
            label = r["label"] + (f", space {r['space']}" if spaces else "")
            lines.append(f"- {arch}, {label}: {r['mean']:.4g} before compression; against the dense "
                         f"model: {_cell(r, 'vs_dense')}.")
    return lines


def sweep_findings(table) -> list[str]:
    """Markdown lines: Prehab minus control per lambda (the one-seed sweep), before and after
    compression, so the reader sees which way the penalty moves the model."""
    rows = table[(table["method"] == "prehab") & (table["lora"] == NO_LORA)]
    drop = _has_drop(table)
    lines = ["| testbed | surrogate | λ | before compression: Prehab − control [95%] | after SVD-LLM: R | "
             "Prehab − control [95%] |" + (" drop vs control [95%] |" if drop else ""),
             "|---|---|---|---|---|---|" + ("---|" if drop else "")]
    for (arch, surrogate, lam), g in rows.groupby(["arch", "surrogate", "lam"], sort=True):
        before = g[~g["compressed"].astype(bool)]
        for _, r in g[g["compressed"].astype(bool)].sort_values("ratio").iterrows():
            first = _cell(before.iloc[0], "vs_control") if not before.empty else "—"
            lines.append(f"| {arch} | {surrogate} | {fmt(lam)} | {first} | {fmt(r['ratio'])} | {_cell(r, 'vs_control')} |"
                         + (f" {_cell(r, 'drop_vs_control')} |" if drop else ""))
    return lines


def budget_findings(table) -> list[str]:
    rows = table[(table["method"] == "prehab") & table["vs_control_verdict"].fillna("").astype(bool)]
    drop = _has_drop(table)
    lines = ["| testbed | R | Prehab steps | Prehab − control [95%] |" + (" drop vs control [95%] |" if drop else ""),
             "|---|---|---|---|" + ("---|" if drop else "")]
    for _, r in rows.sort_values(["arch", "ratio", "steps"], na_position="first").iterrows():
        where = "before compression" if not r["compressed"] else fmt(r["ratio"])
        lines.append(f"| {r['arch']} | {where} | {int(r['steps'])} | {_cell(r, 'vs_control')} |"
                     + (f" {_cell(r, 'drop_vs_control')} |" if drop else ""))
    return lines


def _tally(rows, name: str) -> str:
    """`better / worse / no difference` of the interval's verdicts (before the gate), "—" when
    no row has one."""
    column = f"{name}_interval_verdict"
    if column not in rows or not rows[column].fillna("").astype(bool).any():
        column = f"{name}_verdict"  # tables made before the gate: their verdicts
    if column not in rows or not rows[column].fillna("").astype(bool).any():
        return "—"
    counts = rows[column].fillna("").value_counts()
    return " / ".join(str(int(counts.get(v, 0))) for v in (paired.BETTER, paired.WORSE, paired.UNDETECTED))


def _resolution(rows) -> str:
    """The median half-width of the rows' intervals against their control, and what they are over."""
    rows = rows[rows["vs_control_verdict"].fillna("").astype(bool)]
    if rows.empty:
        return "—"
    seeds = "vs_control_basis" in rows and rows["vs_control_basis"].fillna("").astype(bool).any()
    over = "seeds" if seeds else "test items"
    if (rows["metric"] == "perplexity").all():
        spans = sorted(100 * ((r["vs_control_high"] / r["vs_control_low"]) ** 0.5 - 1) for _, r in rows.iterrows()
                       if r["vs_control_low"] > 0 and math.isfinite(r["vs_control_high"]))
        return f"±{spans[len(spans) // 2]:.2g}% ({over})" if spans else "—"
    widths = sorted(_half_width(r, "vs_control") for _, r in rows.iterrows())
    return f"±{widths[len(widths) // 2]:.1f} points ({over})"


def summary_rows(table, study: str) -> list[str]:
    """One markdown row per testbed and Prehab setting (lambda* or a recipe) of a study table:
    in how many cells the penalty met the gate, and the verdicts against the control, on the drop,
    and against the best control, counted."""
    pre = choice.reported(table[(table["method"] == "prehab") & table["compressed"].astype(bool)], table)
    star = "*" if choice.sweeps(table) else ""
    lines = []
    for arch, by_arch in pre.groupby("arch", sort=True):
        spaces = by_arch.loc[~by_arch["surrogate"].isin(list(RECIPES)), "space"].nunique() > 1
        labels = by_arch.apply(lambda r: _which(r, star, spaces), axis=1)
        for label, rows in by_arch.groupby(labels, sort=True):
            measured = rows[rows["tail_vs_control"].notna()] if "tail_vs_control" in rows else rows.iloc[0:0]
            met = (f"{int((measured['tail_vs_control'] <= gate.TAIL_GATE).sum())} of {len(measured)}"
                   if not measured.empty else "not measured")
            lines.append(f"| {study} | {arch} | {label} | {met} | {_tally(rows, 'vs_control')} | "
                         f"{_tally(rows, 'drop_vs_control')} | {_tally(rows, 'vs_best_control')} | {_resolution(rows)} |")
    return lines


def summary(main, decisive) -> str:
    """The README's block: every study's Prehab settings, their verdicts counted (cells: ratios
    x LoRA)."""
    lines = [SUMMARY_START, "",
             "| study | testbed | Prehab | gate met (cells) | vs own control | drop vs control | vs best control "
             "| interval half-width (median) |", "|---|---|---|---|---|---|---|---|"]
    if decisive is not None:
        lines += summary_rows(decisive, "decisive")
    if main is not None:
        lines += summary_rows(main, "main")
    lines += ["", "Counts are better / worse / no detectable difference over the cells (ratio x LoRA) of each row, "
              f"from the 95% paired intervals; the gate: the penalty cut the summed whitened tail at k(R) by at least "
              f"{100 * (1 - gate.TAIL_GATE):.0f}% against its control. Written by `scripts/findings.py` from the same "
              "tables as [the findings](docs/results.md); do not edit by hand.", "", SUMMARY_END]
    return "\n".join(lines)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


# What names one row of a study table: a later folder adds the rows no earlier one has (the
# decisive study's halves share their dense models and one control).
ROW_KEY = ["arch", "method", "ratio", "lora", "cal_source", "cal_samples", "surrogate", "lam", "space", "snapshot"]


def merged(folders: list[Path], name: str, by: list[str] | None = None) -> tuple[pd.DataFrame | None, list[Path]]:
    """The `name` tables of these folders (absent or empty ones skipped), each adding only the
    testbeds no earlier folder had (`by`: only the rows, named by those columns, no earlier
    folder had); and the files that contributed."""
    parts, used, seen = [], [], set()
    for folder in folders:
        path = folder / name
        if not path.is_file() or path.stat().st_size == 0:
            continue
        table = _read(path)
        keys = table[by or ["arch"]].astype(str).apply(tuple, axis=1)
        table = table[~keys.isin(seen)]
        if table.empty:
            continue
        seen |= set(keys[table.index])
        parts.append(table)
        used.append(path)
    return (pd.concat(parts, ignore_index=True) if parts else None), used


def study_tables(tables: list[Path], decisive: list[Path] = ()):
    """(main table or None, its files, decisive table or None, its files); at least one exists."""
    main, used = merged(tables, "main.csv")
    chosen, chosen_used = merged(list(decisive), "decisive.csv", by=ROW_KEY)
    if main is None and chosen is None:
        raise UsageError(f"no main.csv or decisive.csv in {', '.join(map(str, [*tables, *decisive]))}")
    return main, used, chosen, chosen_used


def findings(tables: list[Path], budget: Path | None, decisive: list[Path] = (), by: str = "scripts/findings.py") -> str:
    """The findings block (between START and END) of these tables folders; `by`: what wrote it."""
    main, used, chosen, chosen_used = study_tables(tables, decisive)
    sweep, sweep_used = merged(tables, "lambda_sweep.csv")
    if budget is not None and not (budget / "budget.csv").is_file():
        budget = None
    sources = ([f"`{p}`" for p in chosen_used + used + sweep_used]
               + ([f"`{budget}/budget.csv`"] if budget else []))
    parts = [START, "", f"Written by `{by}` from {', '.join(sources)}; do not edit by hand.", ""]
    if chosen is not None:
        parts += ["### The decisive study (`decisive`: the authors' budget, a converged dense model, λ* of each "
                  "space and surrogate on 3 seeds)", ""]
        parts += main_findings(chosen) + ["", "Each λ = 0 control before compression, against the dense model "
                                          "(paired):", ""]
        parts += control_findings(chosen)
    if main is not None:
        if chosen is not None:
            parts += ["", "### The default run and the other testbeds (`main`)", ""]
        parts += main_findings(main) + ["", "Each λ = 0 control before compression, against the dense model "
                                        "(paired):", ""]
        parts += control_findings(main)
    if sweep is not None:
        parts += ["", "Prehab minus control over the wider λ range (`lambda_sweep`, seed 0):", ""]
        parts += sweep_findings(sweep)
    if budget is not None:
        parts += ["", "Prehab minus control against Prehab steps (`budget`, seed 0):", ""]
        parts += budget_findings(_read(budget / "budget.csv"))
    return "\n".join(parts + ["", END])


def write_page(tables_dir: str | Path) -> Path:
    """`findings.md` of one run's tables folder (its main, decisive, lambda_sweep and budget
    tables), the page `prehab report` puts in the workflow's report."""
    tables_dir = Path(tables_dir)
    try:
        block = findings([tables_dir], tables_dir, [tables_dir], by="prehab report")
        # the tables by name: the page is the same wherever the run's folder is
        body = block.replace(START, "").replace(END, "").replace(f"{tables_dir}/", "").strip()
    except UsageError:
        body = "No `main` or `decisive` study is enabled in this config: there are no Prehab findings to write."
    path = tables_dir / "findings.md"
    path.write_text("# Findings\n\n" + body + "\n")
    return path
