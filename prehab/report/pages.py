"""The Markdown pages of the study tables (prehab.report.tables makes the numbers): a generic page
per study, the headline page (by ratio, lambda* on validation) and the budget page (by steps)."""

from __future__ import annotations

import math
from collections import Counter

from prehab.layout import fmt
from prehab.method.recipes import RECIPES
from prehab.report import choice, paired
from prehab.report.tables import (
    NOTE,
    SHORT,
    _none,
    control_key,
    direction,
    fmt_axis,
    fmt_mean_std,
    fmt_value,
)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    def esc(x: str) -> str:
        return str(x).replace("|", "\\|")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _arch_heading(arch: str, metric: str) -> str:
    return f"## {arch} — {metric} ({direction(metric)})"


def fmt_comparison(r, name: str) -> tuple[str, str]:
    """(estimate [low, high], verdict) of one paired comparison column, "" when not paired."""
    if not r.get(f"{name}_verdict"):
        return "", ""
    result = paired.Paired(r[name], r[f"{name}_low"], r[f"{name}_high"], r[f"{name}_verdict"], ())
    return paired.fmt_paired(result, r["metric"]), r[f"{name}_verdict"]


def warnings_for(table, deficient: dict[str, list[str]] | None) -> list[str]:
    """Lines a page must lead with: controls that lost before compression, rank-deficient whitening
    (`deficient`: collect.rank_deficient_calibrations)."""
    lines = []
    lost = table[(table["method"] == "control") & ~table["compressed"].astype(bool) & (table["vs_dense_verdict"] == "worse")]
    for _, r in lost.iterrows():
        text, _ = fmt_comparison(r, "vs_dense")
        lines.append(f"**Warning: the λ = 0 control lost against the dense model before compression** on {r['arch']} "
                     f"(space {r['space']}): {text}. Its fine-tuning recipe harms the model; read Prehab against "
                     "the control, not against SVD-LLM.")
    if deficient:
        folders = list(deficient)
        layers = Counter(layer for names in deficient.values() for layer in names)
        at = "; ".join(f"{layer} in {n}" for layer, n in sorted(layers.items()))
        shown = ", ".join(folders[:5]) + (f", ... ({len(folders)} in all)" if len(folders) > 5 else "")
        lines.append(f"**Warning: rank-deficient whitening** (fewer calibration tokens than inputs, or a second "
                     f"moment that does not factor without jitter) in {len(folders)} calibration(s)"
                     + (f", the factor of {at}" if at else "") + f": {shown}.")
    return lines


def _opening(title: str, missing: list[str]) -> list[str]:
    """A page's first lines: its title, the note on the numbers, how many models are missing."""
    parts = [title, "", NOTE, ""]
    if missing:
        parts += [f"**{len(missing)} evaluated model(s) missing** (reported without them).", ""]
    return parts


NO_MODELS = "No evaluated models found for this study."


def study_markdown(table, study: str, missing: list[str], deficient: dict[str, list[str]] | None = None) -> str:
    """Generic study page: per architecture, the columns that vary in the study."""
    parts = _opening(f"# Study `{study}`", missing)
    if table.empty:
        return "\n".join(parts + [NO_MODELS, ""])
    parts += [line + "\n" for line in warnings_for(table, deficient)]
    shown = [c for c in ("surrogate", "lam", "space", "cal_source", "cal_samples", "ratio", "lora")
             if table[c].map(_none).nunique(dropna=False) > 1]
    has_pre = table["pre_mean"].notna().any()
    for arch, t in table.groupby("arch", sort=False):
        metric = t["metric"].iloc[0]
        headers = ["method"] + [SHORT.get(c, c) for c in shown]
        headers += [metric, "n", f"val {metric}", "vs control [95%]", "verdict", "vs SVD-LLM [95%]", "verdict"]
        headers += ["before compression", "vs dense [95%]"] if has_pre else []
        body = []
        for _, r in t.iterrows():
            row = [r["label"]] + [fmt_axis(c, r[c]) for c in shown]
            row += [fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric), str(int(r["n"])),
                    fmt_value(r["val_mean"], metric), *fmt_comparison(r, "vs_control"), *fmt_comparison(r, "vs_svdllm")]
            if has_pre:
                row += [fmt_mean_std(r["pre_mean"], r["pre_std"], 0 if math.isnan(r["pre_n"]) else int(r["pre_n"]), metric),
                        fmt_comparison(r, "vs_dense")[0]]
            body.append(row)
        parts += [_arch_heading(arch, metric), "", md_table(headers, body), ""]
    return "\n".join(parts)


def main_markdown(table, study: str, missing: list[str], deficient: dict[str, list[str]] | None = None) -> str:
    """The headline page: per architecture and ratio, dense, SVD, SVD-LLM, control and Prehab
    (at lambda*, chosen on validation data, when the study sweeps lambda), each without and with
    LoRA, with the paired comparisons against the control and SVD-LLM."""
    parts = _opening(f"# Main results (study `{study}`)", missing)
    if table.empty:
        return "\n".join(parts + [NO_MODELS, ""])
    parts += [line + "\n" for line in warnings_for(table, deficient)]
    swept = choice.sweeps(table)
    if swept:
        lams = ", ".join(fmt(v) for v in choice.swept_lambdas(table))
        parts += [f"**Prehab (λ\\*)**: per architecture, the λ among {{{lams}}} whose compressed models score best "
                  f"on the validation split at R = {fmt(choice.choice_ratio(table))} without LoRA (mean over seeds; the "
                  "test split is never read for the choice); the other λ are in the `lambda_sweep` page.", ""]
    for arch, t in table.groupby("arch", sort=False):
        metric = t["metric"].iloc[0]
        extra = [c for c in ("space", "cal_source", "cal_samples")  # what varies on this architecture
                 if t.loc[t["method"] == "prehab", c].map(_none).nunique(dropna=False) > 1]
        headers = ["ratio", "method", "LoRA", metric, "n", "vs control [95%]", "verdict", "vs SVD-LLM [95%]",
                   "verdict", "before compression", "params (M)"]
        body = []
        dense = t[t["method"] == "dense"]
        comp = choice.reported(t[t["compressed"].astype(bool)], table)
        for ratio in sorted(comp["ratio"].dropna().unique()):
            for _, r in dense.iterrows():
                body.append([fmt(ratio), "dense (uncompressed)", "—", fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric),
                             str(int(r["n"])), "", "", "", "", "", _mparams(r["model_params"])])
            for _, r in comp[comp["ratio"] == ratio].iterrows():
                label = _row_label(r, swept, extra)
                pre_n = 0 if math.isnan(r["pre_n"]) else int(r["pre_n"])
                body.append([fmt(ratio), label, fmt_axis("lora", r["lora"]),
                             fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric), str(int(r["n"])),
                             *fmt_comparison(r, "vs_control"), *fmt_comparison(r, "vs_svdllm"),
                             fmt_mean_std(r["pre_mean"], r["pre_std"], pre_n, metric), _mparams(r["model_params"])])
        if comp.empty:  # e.g. a study of uncompressed models only
            for _, r in t.iterrows():
                body.append(["—", r["label"], fmt_axis("lora", r["lora"]), fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric),
                             str(int(r["n"])), "", "", "", "", "", _mparams(r["model_params"])])
        parts += [_arch_heading(arch, metric), "", md_table(headers, body), ""]
        before = choice.reported(t[~t["compressed"].astype(bool) & t["method"].isin(["control", "prehab"])], table)
        if not before.empty:
            lines = [f"{_row_label(r, False, extra, recipe_lam=True)}: "
                     f"{fmt_mean_std(r['mean'], r['std'], int(r['n']), metric)} before compression, vs dense "
                     f"{fmt_comparison(r, 'vs_dense')[0] or '(unpaired)'} {fmt_comparison(r, 'vs_dense')[1]}"
                     for _, r in before.iterrows()]
            parts += ["Fine-tuning before compression: " + "; ".join(lines) + ".", ""]
    return "\n".join(parts)


def _row_label(r, swept: bool, extra: list[str], recipe_lam: bool = False) -> str:
    """A row's method label; a Prehab row adds its lambda (starred when chosen from a sweep), and
    Prehab and control rows the axes that vary among the architecture's Prehab runs (`extra`),
    so that two controls of different spaces read apart. Recipes carry their own settings (and
    their lambda only where `recipe_lam`)."""
    label = r["label"]
    if r["method"] not in ("prehab", "control") or r["surrogate"] in RECIPES:
        return label + (f" λ={fmt(r['lam'])}" if recipe_lam and r["method"] == "prehab" else "")
    if r["method"] == "prehab":
        label += f" λ{'*' if swept else ''}={fmt(r['lam'])}"
    if extra:
        label += " " + ", ".join(f"{SHORT.get(c, c)}={fmt_axis(c, r[c])}" for c in extra)
    return label


def steps_markdown(table, study: str, missing: list[str], deficient: dict[str, list[str]] | None = None) -> str:
    """The budget page: per architecture, Prehab minus its control against Prehab steps (the
    snapshots of one long run and the run itself), before compression and at each ratio."""
    from prehab.report.figures import budget_rows

    parts = _opening(f"# Prehab budget (study `{study}`)", missing)
    rows = budget_rows(table) if not table.empty else table
    if table.empty or rows.empty:
        return "\n".join(parts + ["No paired Prehab-vs-control cells found for this study.", ""])
    parts += [line + "\n" for line in warnings_for(table, deficient)]
    controls = {control_key(c): c for _, c in table[table["method"] == "control"].iterrows()}
    for arch, t in rows.groupby("arch", sort=False):
        metric = t["metric"].iloc[0]
        headers = ["ratio", "λ", "steps", "n", f"control {metric}", f"Prehab {metric}", "Prehab − control [95%]",
                   "verdict"]
        body = []
        for _, r in t.sort_values(["ratio", "lam", "steps"], na_position="first").iterrows():
            c = controls.get(control_key(r))
            body.append(["before compression" if not r["compressed"] else fmt(r["ratio"]), fmt(r["lam"]),
                         str(int(r["steps"])), str(int(r["n"])),
                         "" if c is None else fmt_mean_std(c["mean"], c["std"], int(c["n"]), metric),
                         fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric), *fmt_comparison(r, "vs_control")])
        parts += [_arch_heading(arch, metric), "", md_table(headers, body), ""]
    return "\n".join(parts)


def _mparams(x: float) -> str:
    return "" if math.isnan(x) else f"{x / 1e6:.3g}"


