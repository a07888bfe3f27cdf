"""Figures from the long table; each draws the studies that declare it (`studies.S.figures`).

The set of files is fixed (prehab.studies.FIGURES): a figure no enabled study declares, or whose
study has no data, is still written, with a note saying why, so the workflow's outputs never
depend on the config. The figures of the Prehab runs themselves are in prehab_figures.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prehab.layout import CONTROL_SURROGATE, NO_LORA, fmt
from prehab.report import paired, plotting, prehab_figures, tables
from prehab.report.collect import declared, no_study_text
from prehab.studies import FIGURES, choice_seeds_of
from prehab.tasks import HIGHER_IS_BETTER

log = logging.getLogger(__name__)
# what the error bars of a paired comparison are: the interval its verdict reads (prehab.report.paired)
INTERVALS = "paired 95% intervals: t over seeds, over test items with one seed"



# --------------------------------------------------------------------------- helpers

def _study_of(cfg: dict[str, Any], figure: str) -> tuple[str | None, str]:
    """(the first enabled study declaring `figure`, reason when there is none)."""
    studies = declared(cfg, figure)
    return (studies[0], "") if studies else (None, no_study_text(figure))


def _declared_table(df, cfg, figure: str, title: str, path: Path):
    """(study, its table) for `figure`; None, after writing a note saying why, when there is none."""
    study, why = _study_of(cfg, figure)
    table = (tables.study_table(df, study, cfg.get("archs"), choice_seeds_of(cfg["studies"][study]))
             if study else None)
    if table is None or table.empty:
        plotting.note(path, title, why or f"no evaluated models in study `{study}`")
        return None
    return study, table


def _series_label(r, extra: list[str]) -> str:
    label = r["label"]
    if r["method"] == "prehab" and extra:
        label += " " + ", ".join(f"{tables.SHORT.get(c, c)}={tables.fmt_axis(c, r[c])}" for c in extra)
    return label


def _varying(t, cols: list[str]) -> list[str]:
    sub = t[t["method"] == "prehab"]
    return [c for c in cols if sub[c].map(tables._none).nunique(dropna=False) > 1]


# --------------------------------------------------------------------------- figures

def metric_vs_ratio(df, cfg, path: Path) -> None:
    title = "metric vs compression ratio"
    found = _declared_table(df, cfg, "metric_vs_ratio", title, path)
    if found is None:
        return
    study, table = found
    archs = plotting.arch_order(table, cfg)
    fig, axes = plotting.axes_grid(1, len(archs))
    extra = _varying(table, ["lam", "space", "cal_source", "cal_samples"])
    for ax, arch in zip(axes[0], archs):
        t = table[table["arch"] == arch]
        metric = t["metric"].iloc[0]
        comp = t[t["compressed"].astype(bool) & t["snapshot"].isna()]
        labels = [_series_label(r, extra) for _, r in comp.iterrows()]
        colors = plotting.label_colors(list(dict.fromkeys(labels)))
        hidden = 0
        for (label, lora), g in comp.assign(_label=labels).groupby(["_label", "lora"], sort=False):
            g = g.sort_values("ratio")
            ok = g["mean"].map(plotting.finite)
            hidden += int((~ok).sum())
            g = g[ok]
            if g.empty:
                continue
            ls = "-" if lora == NO_LORA else "--"
            name = label if lora == NO_LORA else f"{label} + LoRA({lora})"
            ref = label == "SVD-LLM"  # the reference: square markers, drawn on top
            ax.errorbar(g["ratio"], g["mean"], yerr=g["std"].map(plotting.err), color=colors[label], ls=ls,
                        marker="s" if ref else "o", ms=5 if ref else 4, capsize=3, label=name, zorder=3 if ref else 2)
        for _, r in t[t["method"] == "dense"].iterrows():
            if plotting.finite(r["mean"]):
                ax.axhline(r["mean"], color="0.3", ls=":", lw=1.2, label="dense")
        ax.set_title(arch if not hidden else f"{arch}\n({hidden} non-finite mean(s) not shown)", fontsize=10)
        ax.set_xlabel("compression ratio")
        plotting.metric_axis(ax, metric)
        plotting.clip_to(ax, comp[comp["method"] != "svd"]["mean"], metric, "plain SVD")
        ax.grid(alpha=0.3)
    plotting.finish(fig, axes, f"{title} (study `{study}`; error bars: std over seeds, {plotting.n_text(table)}; dashed: with LoRA)", path)


def prehab_vs_control(df, cfg, path: Path) -> None:
    """The comparison that decides: Prehab minus its control (paired, 95% interval) against the
    compression ratio, per testbed, at lambda* (chosen on validation) and for each recipe."""
    from prehab.report import choice

    title = "Prehab minus its λ = 0 control vs compression ratio"
    found = _declared_table(df, cfg, "prehab_vs_control", title, path)
    if found is None:
        return
    study, table = found
    rows = table[(table["method"] == "prehab") & table["compressed"].astype(bool) & table["snapshot"].isna()
                 & table["vs_control_verdict"].fillna("").astype(bool)]
    rows = choice.reported(rows, table)  # a sweep: lambda* only
    if rows.empty:
        return plotting.note(path, title, f"no paired Prehab-vs-control cells in study `{study}`")
    archs = [a for a in plotting.arch_order(table, cfg) if a in set(rows["arch"])]
    fig, axes = plotting.axes_grid(1, len(archs))
    for ax, arch in zip(axes[0], archs):
        t = rows[rows["arch"] == arch]
        metric = t["metric"].iloc[0]
        for (label, lam, lora), g in t.groupby(["label", "lam", "lora"], sort=False):
            g = g.sort_values("ratio")
            low = (g["vs_control"] - g["vs_control_low"]).clip(lower=0)
            high = (g["vs_control_high"] - g["vs_control"]).clip(lower=0)
            name = f"{label} λ={fmt(lam)}" + ("" if lora == NO_LORA else f" + LoRA({lora})")
            ax.errorbar(g["ratio"], g["vs_control"], yerr=[low, high], marker="o", ms=4, capsize=3,
                        ls="-" if lora == NO_LORA else "--", label=name)
        ax.axhline(0.0 if paired.in_points(metric) else 1.0, color="k", lw=0.8)
        ax.set_title(arch)
        ax.set_xlabel("compression ratio")
        ax.set_ylabel("Prehab − control (points)" if paired.in_points(metric) else "perplexity ratio Prehab / control")
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.grid(alpha=0.3)
    plotting.finish(fig, axes, f"{title} (study `{study}`; {INTERVALS}, seeds "
                    f"{plotting.n_text(table)}; dashed: with LoRA)", path)


def lambda_tradeoff(df, cfg, path: Path) -> None:
    title = "pre- vs post-compression metric per λ"
    found = _declared_table(df, cfg, "lambda_tradeoff", title, path)
    if found is None:
        return
    study, table = found
    comp = table[table["compressed"].astype(bool) & table["snapshot"].isna()]
    archs = plotting.arch_order(table, cfg)
    fig, axes = plotting.axes_grid(1, len(archs), w=5.2, h=4.2)
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
        for i, ((ratio, lora, *_), g) in enumerate(series):
            color = plotting.PREHAB_COLORS[i % len(plotting.PREHAB_COLORS)]
            control = g[(g["method"] == "control") & (g["surrogate"] == CONTROL_SURROGATE)]
            for sur, gs in g[g["method"] == "prehab"].groupby("surrogate", sort=False):
                gs = plotting.concat(control, gs).sort_values("lam", na_position="first")
                gs = gs[gs["mean"].map(plotting.finite) & gs["pre_mean"].map(plotting.finite)]
                name = f"{sur}, ratio {fmt(ratio)}" + ("" if lora == NO_LORA else f" + LoRA({lora})")
                ax.errorbar(gs["pre_mean"], gs["mean"], xerr=gs["pre_std"].map(plotting.err), yerr=gs["std"].map(plotting.err),
                            color=color, marker="o", ms=4, capsize=2, ls="-" if lora == NO_LORA else "--", label=name)
                for _, r in gs.iterrows():
                    ax.annotate(f"λ={fmt(0 if r['method'] == 'control' else r['lam'])}", (r["pre_mean"], r["mean"]),
                                fontsize=7, xytext=(3, 3), textcoords="offset points")
            ref = t[(t["method"] == "svd-llm") & (t["ratio"] == ratio) & (t["lora"] == lora)]
            for _, r in ref.iterrows():
                if plotting.finite(r["pre_mean"]) and plotting.finite(r["mean"]):
                    ax.errorbar([r["pre_mean"]], [r["mean"]], xerr=[plotting.err(r["pre_std"])], yerr=[plotting.err(r["std"])],
                                color=color, marker="*", ms=12, ls="none", capsize=2,
                                label=f"SVD-LLM (dense → compressed), ratio {fmt(ratio)}")
        ax.set_title(arch)
        ax.set_xlabel(f"{metric} before compression")
        ax.set_ylabel(f"{metric} after SVD-LLM ({tables.direction(metric)})")
        if not HIGHER_IS_BETTER.get(metric, True):
            plotting.log_plain(ax, "x")
            plotting.log_plain(ax, "y")
        ax.grid(alpha=0.3)
    plotting.finish(fig, axes, f"{title} (study `{study}`; error bars: std over seeds, {plotting.n_text(table)})", path)


def calibration_size(df, cfg, path: Path) -> None:
    title = "metric vs calibration samples"
    found = _declared_table(df, cfg, "calibration_size", title, path)
    if found is None:
        return
    study, table = found
    comp = table[table["compressed"].astype(bool) & table["method"].isin(["svd-llm", "control", "prehab"])]
    if comp.empty:
        return plotting.note(path, title, f"study `{study}` has no calibrated compressed models")
    archs = plotting.arch_order(comp, cfg)
    fig, axes = plotting.axes_grid(1, len(archs))
    extra = _varying(comp, ["lam", "space"])
    ratios = sorted(comp["ratio"].dropna().unique())
    markers = "osD^v<>"
    for ax, arch in zip(axes[0], archs):
        t = comp[comp["arch"] == arch]
        metric = t["metric"].iloc[0]
        labels = [_series_label(r, extra) for _, r in t.iterrows()]
        colors = plotting.label_colors(list(dict.fromkeys(labels)))
        for (label, ratio, lora, source), g in t.assign(_label=labels).groupby(
                ["_label", "ratio", "lora", "cal_source"], sort=False):
            g = g.sort_values("cal_samples")
            g = g[g["mean"].map(plotting.finite)]
            if g.empty:
                continue
            name = f"{label}, ratio {fmt(ratio)}" + ("" if lora == NO_LORA else f" + LoRA({lora})")
            if comp["cal_source"].nunique() > 1:
                name += f", cal {source}"
            ax.errorbar(g["cal_samples"], g["mean"], yerr=g["std"].map(plotting.err), color=colors[label],
                        ls="-" if lora == NO_LORA else "--", marker=markers[ratios.index(ratio) % len(markers)],
                        ms=4, capsize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(comp["cal_samples"].dropna().unique()), [fmt(x) for x in sorted(comp["cal_samples"].dropna().unique())])
        ax.set_title(arch)
        ax.set_xlabel("calibration samples")
        plotting.metric_axis(ax, metric)
        ax.grid(alpha=0.3)
    plotting.finish(fig, axes, f"{title} (study `{study}`; error bars: std over seeds, {plotting.n_text(table)})", path)


def budget(df, cfg, path: Path) -> None:
    """Prehab minus its control (paired, 95% interval) against Prehab steps, per testbed: does
    the penalty's effect on the compressed model grow with the budget?"""
    title = "Prehab minus control vs Prehab steps"
    found = _declared_table(df, cfg, "budget", title, path)
    if found is None:
        return
    study, table = found
    rows = budget_rows(table)
    if rows.empty:
        plotting.note(path, title, f"no paired Prehab-vs-control cells in study `{study}`")
        return
    archs = [a for a in plotting.arch_order(table, cfg) if a in set(rows["arch"])]
    fig, axes = plotting.axes_grid(1, len(archs))
    for ax, arch in zip(axes[0], archs):
        t = rows[rows["arch"] == arch]
        metric = t["metric"].iloc[0]
        for (ratio, lam), g in t.groupby(["ratio", "lam"], sort=True, dropna=False):
            g = g.sort_values("steps")
            where = "before compression" if ratio != ratio else f"R = {fmt(ratio)}"  # NaN: uncompressed
            low, high = g["vs_control"] - g["vs_control_low"], g["vs_control_high"] - g["vs_control"]
            ax.errorbar(g["steps"], g["vs_control"], yerr=[low.clip(lower=0), high.clip(lower=0)], marker="o", ms=4,
                        capsize=3, label=f"{where}, λ={fmt(lam)}")
        ax.axhline(0.0 if paired.in_points(metric) else 1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(arch)
        ax.set_xlabel("Prehab steps")
        ax.set_ylabel("Prehab − control (points)" if paired.in_points(metric) else "perplexity ratio Prehab / control")
        ax.grid(alpha=0.3)
    plotting.finish(fig, axes, f"{title} (study `{study}`; {INTERVALS})", path)


def budget_rows(table):
    """The Prehab rows of a study table that have a paired comparison with their control, without
    LoRA, each with its Prehab step count (snapshots and the full runs)."""
    t = table[(table["method"] == "prehab") & (table["lora"] == NO_LORA) & (table["vs_control_verdict"] != "")]
    return t[t["vs_control_verdict"].notna() & t["steps"].notna()]


def write_figures(df, cfg: dict[str, Any], runs_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Every figure of FIGURES into out_dir; each is written even when no study declares it (a note)."""
    out_dir, runs_dir = Path(out_dir), Path(runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"{name}.png" for name in FIGURES}
    metric_vs_ratio(df, cfg, paths["metric_vs_ratio"])
    prehab_vs_control(df, cfg, paths["prehab_vs_control"])
    lambda_tradeoff(df, cfg, paths["lambda_tradeoff"])
    prehab_figures.spectra(df, cfg, runs_dir, paths["spectra"])
    prehab_figures.trajectories(df, cfg, runs_dir, paths["trajectories"])
    calibration_size(df, cfg, paths["calibration_size"])
    budget(df, cfg, paths["budget"])
    log.info("wrote %d figures to %s", len(paths), out_dir)
    return list(paths.values())
