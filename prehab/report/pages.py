"""The Markdown pages of the study tables (prehab.report.tables makes the numbers): a generic page
per study, the headline page (by ratio, lambda* on validation), the budget page (by steps), and
the mechanism page (prehab.report.mechanism makes its numbers)."""

from __future__ import annotations

import math
from collections import Counter

from prehab.layout import fmt
from prehab.method.recipes import RECIPES
from prehab.report import choice, paired
from prehab.report.gate import TAIL_GATE
from prehab.report.summary import control_key, none_if_nan
from prehab.report.tables import NOTE, SHORT, budget_rows, direction, fmt_axis, fmt_mean_std, fmt_value


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    def esc(x: str) -> str:
        return str(x).replace("|", "\\|")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _arch_heading(arch: str, metric: str) -> str:
    return f"## {arch} — {metric} ({direction(metric)})"


def fmt_comparison(r, name: str) -> tuple[str, str, str]:
    """(estimate [the interval the verdict reads], verdict, [test-set noise interval]) of one
    paired comparison column, "" when not paired."""
    verdict = r.get(f"{name}_verdict")
    if not isinstance(verdict, str) or not verdict:
        return "", "", ""
    result = paired.Paired(r[name], r[f"{name}_low"], r[f"{name}_high"], verdict, (),
                           item_low=r.get(f"{name}_item_low", math.nan), item_high=r.get(f"{name}_item_high", math.nan))
    return (paired.fmt_paired(result, r["metric"]), paired.labelled_verdict(verdict, r.get(f"{name}_basis")),
            paired.fmt_items(result, r["metric"]))


def comparison_headers(what: str) -> list[str]:
    """The three columns of one paired comparison (fmt_comparison)."""
    return [f"{what} [95%]", "verdict", "test-set noise [95%]"]


def drop_headers(table) -> list[str]:
    """The drop-difference columns, where any row of the table has one (a Prehab row with its
    control and both uncompressed twins)."""
    found = "drop_vs_control_verdict" in table and table["drop_vs_control_verdict"].fillna("").astype(bool).any()
    return comparison_headers("drop vs control") if found else []


def drop_cells(r, headers: list[str]) -> tuple[str, ...]:
    """A row's drop-difference cells under `drop_headers` (none where the page has no such column)."""
    return fmt_comparison(r, "drop_vs_control") if headers else ()


def best_headers(table) -> list[str]:
    """The columns against the best control of the same steps (choice.best_controls), where some
    Prehab row's best control is another run than its own control (else they would repeat it)."""
    if "vs_best_control_verdict" not in table:
        return []
    paired_rows = table["vs_best_control_verdict"].fillna("").astype(bool)
    other = table["vs_best_control_per_seed"].fillna("") != table["vs_control_per_seed"].fillna("")
    return comparison_headers("vs best control") if (paired_rows & other).any() else []


def best_cells(r, headers: list[str]) -> tuple[str, ...]:
    """A row's best-control cells under `best_headers`."""
    return fmt_comparison(r, "vs_best_control") if headers else ()


def warnings_for(table, deficient: dict[str, list[str]] | None) -> list[str]:
    """Lines a page must lead with: controls that lost before compression, rank-deficient whitening
    (`deficient`: collect.rank_deficient_calibrations)."""
    lines = []
    lost = table[(table["method"] == "control") & ~table["compressed"].astype(bool) & (table["vs_dense_verdict"] == "worse")]
    for _, r in lost.iterrows():
        text = fmt_comparison(r, "vs_dense")[0]
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
             if table[c].map(none_if_nan).nunique(dropna=False) > 1]
    has_pre = table["pre_mean"].notna().any()
    drops = drop_headers(table)
    for arch, t in table.groupby("arch", sort=False):
        metric = t["metric"].iloc[0]
        headers = ["method"] + [SHORT.get(c, c) for c in shown]
        headers += [metric, "n", f"val {metric}"] + comparison_headers("vs control")
        headers += drops + comparison_headers("vs SVD-LLM")
        headers += ["before compression", "vs dense [95%]"] if has_pre else []
        body = []
        for _, r in t.iterrows():
            row = [r["label"]] + [fmt_axis(c, r[c]) for c in shown]
            row += [fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric), str(int(r["n"])),
                    fmt_value(r["val_mean"], metric), *fmt_comparison(r, "vs_control"),
                    *drop_cells(r, drops), *fmt_comparison(r, "vs_svdllm")]
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
                  f"on the validation split at R = {fmt(choice.choice_ratio(table))} without LoRA (mean over the seeds "
                  "the study chooses on: all of them, or phase A's `seeds` in a study with `confirm_seeds`, whose "
                  "other seeds run λ* only; the test split is never read for the choice); the other λ are in the "
                  "study's CSV.", ""]
    for arch, t in table.groupby("arch", sort=False):
        metric = t["metric"].iloc[0]
        tuned = t["method"].isin(("prehab", "control"))  # what varies among its fine-tuned runs
        extra = [c for c in ("space", "cal_source", "cal_samples") if t.loc[tuned, c].map(none_if_nan).nunique(dropna=False) > 1]
        drops, bests = drop_headers(t), best_headers(t)
        headers = ["ratio", "method", "LoRA", metric, "n", *comparison_headers("vs control"), *drops, *bests,
                   *comparison_headers("vs SVD-LLM"), "tail vs control",
                   "before compression", "params (M)"]
        blank = [""] * (len(headers) - 6)  # the comparisons and "before compression" of a row without them
        body = []
        dense = t[t["method"] == "dense"]
        comp = choice.reported(t[t["compressed"].astype(bool)], table)
        for ratio in sorted(comp["ratio"].dropna().unique()):
            for _, r in dense.iterrows():
                body.append([fmt(ratio), "dense (uncompressed)", "—", fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric),
                             str(int(r["n"])), *blank, _mparams(r["model_params"])])
            for _, r in comp[comp["ratio"] == ratio].iterrows():
                label = _row_label(r, swept, extra)
                pre_n = 0 if math.isnan(r["pre_n"]) else int(r["pre_n"])
                body.append([fmt(ratio), label, fmt_axis("lora", r["lora"]),
                             fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric), str(int(r["n"])),
                             *fmt_comparison(r, "vs_control"), *drop_cells(r, drops), *best_cells(r, bests),
                             *fmt_comparison(r, "vs_svdllm"), _ratio_cell(r["tail_vs_control"]),
                             fmt_mean_std(r["pre_mean"], r["pre_std"], pre_n, metric),
                             _mparams(r["model_params"])])
        if comp.empty:  # e.g. a study of uncompressed models only
            for _, r in t.iterrows():
                body.append(["—", r["label"], fmt_axis("lora", r["lora"]), fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric),
                             str(int(r["n"])), *blank, _mparams(r["model_params"])])
        parts += [_arch_heading(arch, metric), "", md_table(headers, body), ""]
        if bests:
            named = sorted(set(t.loc[t["best_control"].fillna("").astype(bool), "best_control"]))
            parts += ["**vs best control**: against the λ = 0 control of any space with the same steps whose compressed "
                      f"models score best on validation at R = {fmt(choice.choice_ratio(table))} without LoRA ("
                      + "; ".join(named) + "): Prehab must beat the best fine-tuning of its budget, not only its own.", ""]
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
    parts = _opening(f"# Prehab budget (study `{study}`)", missing)
    rows = budget_rows(table) if not table.empty else table
    if table.empty or rows.empty:
        return "\n".join(parts + ["No paired Prehab-vs-control cells found for this study.", ""])
    parts += [line + "\n" for line in warnings_for(table, deficient)]
    controls = {control_key(c): c for _, c in table[table["method"] == "control"].iterrows()}
    for arch, t in rows.groupby("arch", sort=False):
        metric = t["metric"].iloc[0]
        drops = drop_headers(t)
        headers = ["ratio", "λ", "steps", "n", f"control {metric}", f"Prehab {metric}",
                   *comparison_headers("Prehab − control"), *drops]
        body = []
        for _, r in t.sort_values(["ratio", "lam", "steps"], na_position="first").iterrows():
            c = controls.get(control_key(r))
            body.append(["before compression" if not r["compressed"] else fmt(r["ratio"]), fmt(r["lam"]),
                         str(int(r["steps"])), str(int(r["n"])),
                         "" if c is None else fmt_mean_std(c["mean"], c["std"], int(c["n"]), metric),
                         fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric), *fmt_comparison(r, "vs_control"),
                         *drop_cells(r, drops)])
        parts += [_arch_heading(arch, metric), "", md_table(headers, body), ""]
    return "\n".join(parts)


def _ratio_cell(x: float) -> str:
    """Prehab's summed whitened tail at k(R) over its control's (what the gate reads)."""
    return "" if x is None or math.isnan(x) else f"{x:.2f}"


def _mparams(x: float) -> str:
    return "" if math.isnan(x) else f"{x / 1e6:.3g}"




MECHANISM_NOTE = (
    "What SVD-LLM truncates, measured by the compress step on each model it cuts, from that model's own "
    "re-calibration (C = X Xᵀ / tokens, C = L Lᵀ), over its target matrices at the ratio's kept rank k(R); s_i: "
    "the singular values of W L. **tail Σ**: Σ over matrices of Σ_{i>k} s_i², SVD-LLM's squared output error "
    "per calibration token (`mech_tail_abs_sum`). **tail median**: its median over matrices. **tail/energy "
    "median**, **tail/energy total**: the median of each matrix's tail / ||W L||_F², and the summed tail / "
    "summed energy (fractions). **energy Σ**: Σ ||W L||_F². **move W**, **move WL**: the median over matrices "
    "of ||W − W_dense||_F / ||W_dense||_F and of ||(W − W_dense) L||_F / ||W_dense L||_F (0 for the dense "
    "model). Each value is the mean over the seeds measured (n). **P/C**: Prehab over its λ = 0 control, "
    "paired by seed: the mean of the per-seed ratios, with a 95% t-interval on their logs when there are 2+ "
    "seeds (none with 1); below 1 = Prehab left less. The first row of each block is the dense model's own "
    "SVD-LLM cut (reference). A LoRA model shares its cut's readout. `not measured`: the cut predates the "
    f"readout. The study tables' gate reads tail Σ P/C (above {TAIL_GATE:g}: the penalty did not reach the "
    "truncation error).")
NOT_MEASURED = "not measured"  # a cut made before the compress step wrote the readout
MECHANISM_COLUMNS = ("mech_tail_abs_sum", "mech_tail_abs_median", "mech_tail_rel_median", "mech_tail_rel_total",
                     "mech_energy_sum", "mech_move_w_median", "mech_move_wl_median")


def _num(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _seed_ratio(r, name: str) -> str:
    """`0.412 [0.35, 0.48]`: a P/C ratio with its interval over seeds (none with 1 seed)."""
    mean, low, high = r[f"{name}_ratio"], r[f"{name}_ratio_low"], r[f"{name}_ratio_high"]
    if _num(mean) == "":
        return ""
    return f"{mean:.3f}" + ("" if _num(low) == "" or _num(high) == "" else f" [{low:.3f}, {high:.3f}]")


def mechanism_markdown(table) -> str:
    """The mechanism page: per architecture, ratio and calibration, the dense model's cut, then
    each control and its Prehab settings, with their P/C ratios."""
    parts = ["# Mechanism: the truncation error SVD-LLM pays", "", MECHANISM_NOTE, ""]
    if table.empty:
        return "\n".join(parts + ["No SVD-LLM cuts of Prehab or control models found.", ""])
    headers = ["R", "cal", "model", "n", "tail Σ", "tail median", "tail/energy median", "tail/energy total",
               "energy Σ", "move W", "move WL", "tail Σ P/C [95%]", "tail median P/C [95%]", "energy Σ P/C [95%]"]
    for arch, t in table.groupby("arch", sort=False):
        body = []
        for _, r in t.iterrows():
            row = [fmt(r["ratio"]), f"{r['cal_source']} {fmt(r['cal_samples'])}", r["label"], str(int(r["n"]))]
            if r["measured"]:
                row += [_num(r[c]) for c in MECHANISM_COLUMNS]
            else:
                row += [NOT_MEASURED] + [""] * (len(MECHANISM_COLUMNS) - 1)
            row += [_seed_ratio(r, name) for name in ("tail_abs_sum", "tail_abs_median", "energy_sum")]
            body.append(row)
        parts += [f"## {arch}", "", md_table(headers, body), ""]
    return "\n".join(parts)
