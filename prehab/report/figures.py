"""Figures from the long table; each draws the studies that declare it (`studies.S.figures`).

The set of files is fixed (prehab.studies.FIGURES): a figure no enabled study declares, or whose
study has no data, is still written, with a note saying why, so the workflow's outputs never
depend on the config. Each figure function returns its Figure (write_figures saves it). The
figures of the Prehab runs themselves are in prehab_figures.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prehab.layout import CONTROL_SURROGATE, NO_LORA, fmt
from prehab.report import choice, paired, plotting, prehab_figures, tables
from prehab.report.collect import declared, no_study_text
from prehab.studies import FIGURES, choice_seeds_of
from prehab.tasks import HIGHER_IS_BETTER

log = logging.getLogger(__name__)
# what the error bars of a paired comparison are: the interval its verdict reads (prehab.report.paired)
INTERVALS = "paired 95% intervals: t over seeds, over test items with one seed"
# lambda_tradeoff's marker per lambda, in increasing lambda (the star is SVD-LLM's)
LAMBDA_MARKERS = "osD^vPXh<>p"


# --------------------------------------------------------------------------- helpers

def _declared_table(df, cfg: dict[str, Any], figure: str) -> tuple[str | None, Any, str]:
    """(the first enabled study declaring `figure`, its table, why there is nothing to draw: ""
    when there is something)."""
    studies = declared(cfg, figure)
    if not studies:
        return None, None, no_study_text(figure)
    study = studies[0]
    table = tables.study_table(df, study, cfg.get("archs"), choice_seeds_of(cfg["studies"][study]))
    return study, table, "" if not table.empty else f"no evaluated models in study {study}"


def _setting_text(r, cols: list[str]) -> str:
    """The axes `cols` of row `r` as a legend says them: "λ=1, space=weight"."""
    return ", ".join(f"{tables.SHORT.get(c, c)}={tables.fmt_axis(c, r[c])}" for c in cols)


def _varying(t, cols: list[str]) -> list[str]:
    """The axes among `cols` on which the Prehab rows of `t` differ: those a legend must name."""
    sub = t[t["method"] == "prehab"]
    return [c for c in cols if sub[c].map(tables.none_if_nan).nunique(dropna=False) > 1]


def _series_label(r, extra: list[str]) -> str:
    label = r["label"]
    if r["method"] == "prehab" and extra:
        label += " " + _setting_text(r, extra)
    return label


def _versus_control(ax, metric: str) -> None:
    """The y axis of a paired Prehab-minus-control figure: points or a ratio, with its no-change line."""
    ax.axhline(0.0 if paired.in_points(metric) else 1.0, color="k", lw=0.8)
    ax.set_ylabel("Prehab − control (points)" if paired.in_points(metric) else "perplexity ratio Prehab / control")
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")


def _interval(g) -> list:
    """The yerr of paired differences: distances to the interval's ends."""
    low, high = g["vs_control"] - g["vs_control_low"], g["vs_control_high"] - g["vs_control"]
    return [low.clip(lower=0), high.clip(lower=0)]


# --------------------------------------------------------------------------- figures

def metric_vs_ratio(df, cfg, runs_dir: Path | None = None):
    """Each method's metric against the compression ratio, one panel per testbed: the mean over
    seeds, with the std as error bars where there are several seeds; one colour per method, dashed
    with LoRA, the dense model dotted; the points of one ratio are dodged sideways so that their bars
    do not overlap."""
    title = "metric vs compression ratio"
    study, table, why = _declared_table(df, cfg, "metric_vs_ratio")
    if why:
        return plotting.note(title, why)
    archs = plotting.arch_order(table, cfg)
    fig, axes = plotting.axes_grid(1, len(archs))
    extra = _varying(table, ["lam", "space", "cal_source", "cal_samples"])
    colors = plotting.SeriesColors()
    for ax, arch in zip(axes[0], archs):
        t = table[table["arch"] == arch]
        metric = t["metric"].iloc[0]
        comp = t[t["compressed"].astype(bool) & t["snapshot"].isna()]
        groups = list(comp.assign(_label=[_series_label(r, extra) for _, r in comp.iterrows()])
                      .groupby(["_label", "lora"], sort=False))
        dodge = plotting.Dodge(comp["ratio"], len(groups))
        hidden = 0
        for i, ((label, lora), g) in enumerate(groups):
            g = g.sort_values("ratio")
            ok = g["mean"].map(plotting.finite)
            hidden += int((~ok).sum())
            g = g[ok]
            if g.empty:
                continue
            name = label if lora == NO_LORA else f"{label} + LoRA({lora})"
            ref = label == "SVD-LLM"  # the reference: square markers, drawn on top
            ax.errorbar(dodge(g["ratio"], i), g["mean"], yerr=g["std"].map(plotting.err), color=colors(label),
                        ls="-" if lora == NO_LORA else "--", marker="s" if ref else "o", ms=5 if ref else 4,
                        capsize=3, label=name, zorder=3 if ref else 2)
        for _, r in t[t["method"] == "dense"].iterrows():
            if plotting.finite(r["mean"]):
                ax.axhline(r["mean"], color=colors("dense"), ls=":", lw=1.2, label="dense")
        ax.set_title(arch if not hidden else f"{arch}\n({hidden} non-finite mean(s) not shown)", fontsize=10)
        ax.set_xlabel("compression ratio")
        dodge.label(ax)
        plotting.metric_axis(ax, metric)
        plotting.clip_to(ax, comp[comp["method"] != "svd"]["mean"], metric, "plain SVD")
        ax.grid(alpha=0.3)
    return plotting.finish(fig, axes, f"{title} (study {study}; {plotting.bars_text(table)}; dashed: with LoRA; "
                                      "points dodged sideways around their ratio)")


def prehab_vs_control(df, cfg, runs_dir: Path | None = None):
    """The comparison that decides: Prehab minus its lambda = 0 control (paired, 95% interval)
    against the compression ratio, per testbed, at lambda* (chosen on validation) and for each
    recipe; the points of one ratio are dodged sideways so that their intervals do not overlap."""
    title = "Prehab minus its λ = 0 control vs compression ratio"
    study, table, why = _declared_table(df, cfg, "prehab_vs_control")
    if why:
        return plotting.note(title, why)
    rows = table[(table["method"] == "prehab") & table["compressed"].astype(bool) & table["snapshot"].isna()
                 & table["vs_control_verdict"].fillna("").astype(bool)]
    rows = choice.reported(rows, table)  # a sweep: lambda* only
    if rows.empty:
        return plotting.note(title, f"no paired Prehab-vs-control cells in study {study}")
    archs = [a for a in plotting.arch_order(table, cfg) if a in set(rows["arch"])]
    fig, axes = plotting.axes_grid(1, len(archs))
    colors = plotting.SeriesColors()
    for ax, arch in zip(axes[0], archs):
        t = rows[rows["arch"] == arch]
        groups = list(t.groupby(["label", "lam", "lora"], sort=False))
        dodge = plotting.Dodge(t["ratio"], len(groups))
        for i, ((label, lam, lora), g) in enumerate(groups):
            g = g.sort_values("ratio")
            name = f"{label} λ={fmt(lam)}" + ("" if lora == NO_LORA else f" + LoRA({lora})")
            ax.errorbar(dodge(g["ratio"], i), g["vs_control"], yerr=_interval(g), color=colors(name), marker="o",
                        ms=4, capsize=3, ls="-" if lora == NO_LORA else "--", label=name)
        _versus_control(ax, t["metric"].iloc[0])
        ax.set_title(arch)
        ax.set_xlabel("compression ratio")
        dodge.label(ax)
        ax.grid(alpha=0.3)
    return plotting.finish(fig, axes, f"{title} (study {study}; {INTERVALS}, {plotting.n_text(table)}; "
                                      "points dodged sideways around their ratio; dashed: with LoRA)")


def lambda_tradeoff(df, cfg, runs_dir: Path | None = None):
    """The penalty's trade-off: per lambda, the metric before compression against the metric after
    SVD-LLM, one curve per setting through its lambdas from its control (lambda = 0), each lambda
    its own marker, SVD-LLM on the dense model a star; std over seeds as error bars only where there
    are several seeds.

    Markers named in the legend, not labels beside the points: those overprint where neighbouring
    lambdas land close together."""
    title = "pre- vs post-compression metric per λ"
    study, table, why = _declared_table(df, cfg, "lambda_tradeoff")
    if why:
        return plotting.note(title, why)
    comp = table[table["compressed"].astype(bool) & table["snapshot"].isna()]
    bars = plotting.several_seeds(table)
    lams = sorted({0.0} | {float(x) for x in comp.loc[comp["method"] == "prehab", "lam"].dropna()})
    marker = {lam: LAMBDA_MARKERS[i % len(LAMBDA_MARKERS)] for i, lam in enumerate(lams)}
    extra = _varying(comp, ["space", "cal_source", "cal_samples"])
    archs = plotting.arch_order(table, cfg)
    fig, axes = plotting.axes_grid(1, len(archs), w=5.2, h=4.2)
    colors = plotting.SeriesColors()
    for ax, arch in zip(axes[0], archs):
        t = comp[comp["arch"] == arch]
        if t.empty:
            ax.text(0.5, 0.5, "no compressed models", ha="center", transform=ax.transAxes)
            continue
        metric = t["metric"].iloc[0]
        tuned = t[t["method"].isin(["prehab", "control"])]
        # one curve per (ratio, LoRA, calibration, space, surrogate), through its lambdas in order,
        # starting at its own control: curves of different settings are never joined
        series = tuned.groupby(["ratio", "lora", "cal_source", "cal_samples", "space"], dropna=False, sort=True)
        for (ratio, lora, *_), g in series:
            control = g[(g["method"] == "control") & (g["surrogate"] == CONTROL_SURROGATE)]
            for sur, gs in g[g["method"] == "prehab"].groupby("surrogate", sort=False):
                gs = plotting.concat(control, gs).sort_values("lam", na_position="first")
                gs = gs[gs["mean"].map(plotting.finite) & gs["pre_mean"].map(plotting.finite)]
                if gs.empty:
                    continue
                name = (f"{sur}, ratio {fmt(ratio)}" + (f", {_setting_text(gs.iloc[-1], extra)}" if extra else "")
                        + ("" if lora == NO_LORA else f" + LoRA({lora})"))
                color = colors(name)
                ax.plot(gs["pre_mean"], gs["mean"], color=color, ls="-" if lora == NO_LORA else "--", label=name)
                for _, r in gs.iterrows():
                    _point(ax, r, bars, color=color, marker=marker[0.0 if r["method"] == "control" else r["lam"]])
            ref = t[(t["method"] == "svd-llm") & (t["ratio"] == ratio) & (t["lora"] == lora)]
            for _, r in ref.iterrows():
                if plotting.finite(r["pre_mean"]) and plotting.finite(r["mean"]):
                    name = f"SVD-LLM (dense → compressed), ratio {fmt(ratio)}"
                    _point(ax, r, bars, color=colors(name), marker="*", ms=12, label=name)
        ax.set_title(arch)
        ax.set_xlabel(f"{metric} before compression")
        ax.set_ylabel(f"{metric} after SVD-LLM ({tables.direction(metric)})")
        if not HIGHER_IS_BETTER.get(metric, True):
            plotting.log_plain(ax, "x")
            plotting.log_plain(ax, "y")
        ax.grid(alpha=0.3)
    for lam in lams:  # the markers' legend entries (no data)
        axes[0][0].plot([], [], ls="none", color="0.35", marker=marker[lam],
                        label=f"λ = {fmt(lam)}" + (" (control)" if lam == 0 else ""))
    return plotting.finish(fig, axes, f"{title} (study {study}; {plotting.bars_text(table)}; marker: λ; "
                                      "dashed: with LoRA)")


def _point(ax, r, bars: bool, ms: float = 6, **style) -> None:
    """One (before, after) point of lambda_tradeoff, with its std over seeds both ways when `bars`."""
    if bars:
        ax.errorbar([r["pre_mean"]], [r["mean"]], xerr=[plotting.err(r["pre_std"])], yerr=[plotting.err(r["std"])],
                    ls="none", ms=ms, capsize=2, **style)
    else:
        ax.plot([r["pre_mean"]], [r["mean"]], ls="none", ms=ms, **style)


def calibration_size(df, cfg, runs_dir: Path | None = None):
    """The metric after compression against the number of calibration samples, per testbed:
    SVD-LLM, the control and Prehab at each ratio (by marker), the mean over seeds with the std as
    error bars where there are several seeds; the points of one sample count are dodged sideways."""
    title = "metric vs calibration samples"
    study, table, why = _declared_table(df, cfg, "calibration_size")
    if why:
        return plotting.note(title, why)
    comp = table[table["compressed"].astype(bool) & table["method"].isin(["svd-llm", "control", "prehab"])]
    if comp.empty:
        return plotting.note(title, f"study {study} has no calibrated compressed models")
    archs = plotting.arch_order(comp, cfg)
    fig, axes = plotting.axes_grid(1, len(archs))
    extra = _varying(comp, ["lam", "space"])
    ratios = sorted(comp["ratio"].dropna().unique())
    markers = "osD^v<>"
    colors = plotting.SeriesColors()
    for ax, arch in zip(axes[0], archs):
        t = comp[comp["arch"] == arch]
        groups = list(t.assign(_label=[_series_label(r, extra) for _, r in t.iterrows()])
                      .groupby(["_label", "ratio", "lora", "cal_source"], sort=False))
        dodge = plotting.Dodge(comp["cal_samples"], len(groups), log=True)
        for i, ((label, ratio, lora, source), g) in enumerate(groups):
            g = g.sort_values("cal_samples")
            g = g[g["mean"].map(plotting.finite)]
            if g.empty:
                continue
            name = f"{label}, ratio {fmt(ratio)}" + ("" if lora == NO_LORA else f" + LoRA({lora})")
            if comp["cal_source"].nunique() > 1:
                name += f", cal {source}"
            ax.errorbar(dodge(g["cal_samples"], i), g["mean"], yerr=g["std"].map(plotting.err), color=colors(label),
                        ls="-" if lora == NO_LORA else "--", marker=markers[ratios.index(ratio) % len(markers)],
                        ms=4, capsize=3, label=name)
        ax.set_xscale("log", base=2)
        dodge.label(ax)
        ax.set_title(arch)
        ax.set_xlabel("calibration samples")
        plotting.metric_axis(ax, t["metric"].iloc[0])
        ax.grid(alpha=0.3)
    return plotting.finish(fig, axes, f"{title} (study {study}; {plotting.bars_text(table)}; marker: ratio; "
                                      "dashed: with LoRA)")


def budget(df, cfg, runs_dir: Path | None = None):
    """Prehab minus its control (paired, 95% interval) against Prehab steps, per testbed: does
    the penalty's effect on the compressed model grow with the budget? The points of one step count
    are dodged sideways so that their intervals do not overlap."""
    title = "Prehab minus control vs Prehab steps"
    study, table, why = _declared_table(df, cfg, "budget")
    if why:
        return plotting.note(title, why)
    rows = tables.budget_rows(table)
    if rows.empty:
        return plotting.note(title, f"no paired Prehab-vs-control cells in study {study}")
    archs = [a for a in plotting.arch_order(table, cfg) if a in set(rows["arch"])]
    fig, axes = plotting.axes_grid(1, len(archs))
    colors = plotting.SeriesColors()
    for ax, arch in zip(axes[0], archs):
        t = rows[rows["arch"] == arch]
        groups = list(t.groupby(["ratio", "lam"], sort=True, dropna=False))
        dodge = plotting.Dodge(t["steps"], len(groups), log=True)
        for i, ((ratio, lam), g) in enumerate(groups):
            g = g.sort_values("steps")
            where = "before compression" if ratio != ratio else f"R = {fmt(ratio)}"  # NaN: uncompressed
            name = f"{where}, λ={fmt(lam)}"
            ax.errorbar(dodge(g["steps"], i), g["vs_control"], yerr=_interval(g), color=colors(name), marker="o",
                        ms=4, capsize=3, label=name)
        _versus_control(ax, t["metric"].iloc[0])
        ax.set_xscale("log", base=2)
        dodge.label(ax)
        ax.set_title(arch)
        ax.set_xlabel("Prehab steps")
        ax.grid(alpha=0.3)
    return plotting.finish(fig, axes, f"{title} (study {study}; {INTERVALS}; points dodged sideways around their "
                                      "step count)")


# every figure of FIGURES by its drawer: (long table, config, runs folder) -> Figure; the long
# table's figures need no runs folder. A drawer's docstring is its figure's caption (captions.py).
DRAWERS = {"metric_vs_ratio": metric_vs_ratio, "prehab_vs_control": prehab_vs_control,
           "lambda_tradeoff": lambda_tradeoff, "spectra": prehab_figures.spectra,
           "trajectories": prehab_figures.trajectories, "calibration_size": calibration_size, "budget": budget}


def write_figures(df, cfg: dict[str, Any], runs_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Every figure of FIGURES into out_dir; each is written even when no study declares it (a note)."""
    out_dir, runs_dir = Path(out_dir), Path(runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png" for name in FIGURES]
    for name, path in zip(FIGURES, paths):
        plotting.save(DRAWERS[name](df, cfg, runs_dir), path)  # one figure open at a time
    log.info("wrote %d figures to %s", len(paths), out_dir)
    return paths
