"""Figures from the long table (and, for spectra and trajectories, the prehab step's files).

The set of files is fixed (FIGURES): a figure whose study is disabled or has no data is still
written, with a note saying why, so the workflow's outputs never depend on the config.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from prehab.report import tables
from prehab.report.collect import in_study, is_enabled, read_prehab, spectra_path
from prehab.layout import NO_LORA, Run, fmt
from prehab.tasks import HIGHER_IS_BETTER

log = logging.getLogger(__name__)

FIGURES = ("metric_vs_ratio.png", "lambda_tradeoff.png", "spectra.png", "trajectories.png", "calibration_size.png")
MAIN, LAMBDA, CALIBRATION = "main", "lambda_sweep", "calibration_size"
METHOD_COLORS = {"dense": "0.3", "SVD": "tab:gray", "SVD-LLM": "tab:blue", "control (λ=0)": "tab:green"}
PREHAB_COLORS = ("tab:red", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive")
SPECTRA_LAYERS = 3


# --------------------------------------------------------------------------- helpers

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _plt().close(fig)


def _note(path: Path, title: str, text: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11)
    _save(fig, path)


def _resolve(cfg: dict[str, Any], preferred: str, axis: str | None = None) -> tuple[str | None, str]:
    """(study to plot, reason when None). The preferred name if configured; otherwise the first
    enabled study whose grid lists several values of `axis` (so a renamed study still plots)."""
    studies = cfg["studies"]
    if preferred in studies:
        if is_enabled(cfg, preferred):
            return preferred, ""
        return None, f"study disabled: `{preferred}` has enabled: false"
    if axis is not None:
        for name, s in studies.items():
            if not is_enabled(cfg, name):
                continue
            values = s.get("calibration", {}).get("samples", []) if axis == "cal_samples" else s.get("prehab", {}).get(axis, [])
            if len(values) > 1:
                return name, ""
    return None, f"study disabled: no study `{preferred}` in the config"


def _arch_order(df, cfg) -> list[str]:
    present = list(dict.fromkeys(df["arch"]))
    return [a for a in cfg.get("archs", []) if a in present] + [a for a in present if a not in cfg.get("archs", [])]


def _axes_grid(n_rows: int, n_cols: int, w: float = 4.6, h: float = 3.6):
    plt = _plt()
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(w * n_cols, h * n_rows), squeeze=False, layout="constrained")
    return fig, axes


def _metric_axis(ax, metric: str) -> None:
    ax.set_ylabel(f"{metric} ({tables.direction(metric)})")
    if not HIGHER_IS_BETTER.get(metric, True):
        _log_plain(ax, "y")


def _log_plain(ax, which: str) -> None:
    """Log scale with plain numbers (20, 30, 40) instead of 2x10^1."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(FormatStrFormatter(""))


def _shared_legend(fig, axes) -> None:
    """One legend for the whole figure, right of the panels, entries unique by label."""
    seen = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside right center", fontsize=8, frameon=False)


def _n_text(table) -> str:
    n = sorted({int(x) for x in table["n"].dropna()})
    if not n:
        return "no seeds"
    return f"n={n[0]} seed{'s' if n[-1] > 1 else ''}" if len(n) == 1 else f"n={n[0]}–{n[-1]} seeds"


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and (math.isnan(x) or math.isinf(x)))


def _err(std) -> float:
    return 0.0 if not _finite(std) else float(std)


def _label_colors(labels: list[str]) -> dict[str, str]:
    colors, k = {}, 0
    for lab in labels:
        if lab in METHOD_COLORS:
            colors[lab] = METHOD_COLORS[lab]
        elif lab not in colors:
            colors[lab] = PREHAB_COLORS[k % len(PREHAB_COLORS)]
            k += 1
    return colors


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
    study, why = _resolve(cfg, MAIN)
    table = tables.study_table(df, study, cfg.get("archs")) if study else None
    if table is None or table.empty:
        return _note(path, title, why or f"no evaluated models in study `{study}`")
    archs = _arch_order(table, cfg)
    fig, axes = _axes_grid(1, len(archs))
    extra = _varying(table, ["lam", "space", "cal_source", "cal_samples"])
    for ax, arch in zip(axes[0], archs):
        t = table[table["arch"] == arch]
        metric = t["metric"].iloc[0]
        comp = t[t["compressed"].astype(bool)]
        labels = [_series_label(r, extra) for _, r in comp.iterrows()]
        colors = _label_colors(list(dict.fromkeys(labels)))
        hidden = 0
        for (label, lora), g in comp.assign(_label=labels).groupby(["_label", "lora"], sort=False):
            g = g.sort_values("ratio")
            ok = g["mean"].map(_finite)
            hidden += int((~ok).sum())
            g = g[ok]
            if g.empty:
                continue
            ls = "-" if lora == NO_LORA else "--"
            name = label if lora == NO_LORA else f"{label} + LoRA({lora})"
            ref = label == "SVD-LLM"  # the reference: square markers, drawn on top
            ax.errorbar(g["ratio"], g["mean"], yerr=g["std"].map(_err), color=colors[label], ls=ls,
                        marker="s" if ref else "o", ms=5 if ref else 4, capsize=3, label=name, zorder=3 if ref else 2)
        for _, r in t[t["method"] == "dense"].iterrows():
            if _finite(r["mean"]):
                ax.axhline(r["mean"], color="0.3", ls=":", lw=1.2, label="dense")
        ax.set_title(arch if not hidden else f"{arch}\n({hidden} non-finite mean(s) not shown)", fontsize=10)
        ax.set_xlabel("compression ratio")
        _metric_axis(ax, metric)
        ax.grid(alpha=0.3)
    _shared_legend(fig, axes)
    fig.suptitle(f"{title} (study `{study}`; error bars: std over seeds, {_n_text(table)}; dashed: with LoRA)", fontsize=10)
    _save(fig, path)


def lambda_tradeoff(df, cfg, path: Path) -> None:
    title = "pre- vs post-compression metric per λ"
    study, why = _resolve(cfg, LAMBDA, "lam")
    table = tables.study_table(df, study, cfg.get("archs")) if study else None
    if table is None or table.empty:
        return _note(path, title, why or f"no evaluated models in study `{study}`")
    comp = table[table["compressed"].astype(bool)]
    archs = _arch_order(table, cfg)
    fig, axes = _axes_grid(1, len(archs), w=5.2, h=4.2)
    for ax, arch in zip(axes[0], archs):
        t = comp[comp["arch"] == arch]
        if t.empty:
            ax.text(0.5, 0.5, "no compressed models", ha="center", transform=ax.transAxes)
            continue
        metric = t["metric"].iloc[0]
        tuned = t[t["method"].isin(["prehab", "control"])]
        series = tuned.groupby(["ratio", "lora", "cal_source", "cal_samples"], dropna=False, sort=True)
        for i, ((ratio, lora, *_), g) in enumerate(series):
            color = PREHAB_COLORS[i % len(PREHAB_COLORS)]
            control = g[g["method"] == "control"]
            for sur, gs in g[g["method"] == "prehab"].groupby("surrogate", sort=False):
                gs = _concat(control, gs).sort_values("lam", na_position="first")
                gs = gs[gs["mean"].map(_finite) & gs["pre_mean"].map(_finite)]
                name = f"{sur}, ratio {fmt(ratio)}" + ("" if lora == NO_LORA else f" + LoRA({lora})")
                ax.errorbar(gs["pre_mean"], gs["mean"], xerr=gs["pre_std"].map(_err), yerr=gs["std"].map(_err),
                            color=color, marker="o", ms=4, capsize=2, ls="-" if lora == NO_LORA else "--", label=name)
                for _, r in gs.iterrows():
                    ax.annotate(f"λ={fmt(0 if r['method'] == 'control' else r['lam'])}", (r["pre_mean"], r["mean"]),
                                fontsize=7, xytext=(3, 3), textcoords="offset points")
            ref = t[(t["method"] == "svd-llm") & (t["ratio"] == ratio) & (t["lora"] == lora)]
            for _, r in ref.iterrows():
                if _finite(r["pre_mean"]) and _finite(r["mean"]):
                    ax.errorbar([r["pre_mean"]], [r["mean"]], xerr=[_err(r["pre_std"])], yerr=[_err(r["std"])],
                                color=color, marker="*", ms=12, ls="none", capsize=2,
                                label=f"SVD-LLM (dense → compressed), ratio {fmt(ratio)}")
        ax.set_title(arch)
        ax.set_xlabel(f"{metric} before compression")
        ax.set_ylabel(f"{metric} after SVD-LLM ({tables.direction(metric)})")
        if not HIGHER_IS_BETTER.get(metric, True):
            _log_plain(ax, "x")
            _log_plain(ax, "y")
        ax.grid(alpha=0.3)
    _shared_legend(fig, axes)
    fig.suptitle(f"{title} (study `{study}`; error bars: std over seeds, {_n_text(table)})", fontsize=10)
    _save(fig, path)


def _concat(*frames):
    import pandas as pd

    return pd.concat([f for f in frames if not f.empty] or [frames[0]])


def _prehab_runs(df, cfg) -> tuple[Any, list[str], str]:
    """Uncompressed Prehab/control rows of main ∪ lambda_sweep (enabled ones), lowest seed and
    smallest calibration first; (rows, studies used, reason when empty)."""
    used = [s for s in (MAIN, LAMBDA) if s in cfg["studies"] and is_enabled(cfg, s)]
    if not used:
        return None, used, f"study disabled: neither `{MAIN}` nor `{LAMBDA}` is enabled"
    import pandas as pd

    rows = pd.concat([in_study(df, s) for s in used]).drop_duplicates("eval_dir")
    rows = rows[~rows["compressed"].astype(bool) & rows["method"].isin(["prehab", "control"])]
    if rows.empty:
        return None, used, "no uncompressed Prehab/control models evaluated"
    rows = rows.sort_values(["seed", "cal_samples", "cal_source"], kind="stable")
    first = rows.groupby("arch", sort=False)[["seed", "cal_source", "cal_samples"]].first()
    keep = rows.apply(lambda r: (r["seed"], r["cal_source"], r["cal_samples"]) == tuple(first.loc[r["arch"]]), axis=1)
    return rows[keep], used, ""


def _run_of(r) -> Run:
    return Run(r["arch"], int(r["seed"]), r["method"], bool(r["compressed"]), None, r["lora"], r["cal_source"],
               int(r["cal_samples"]), r["surrogate"], float(r["lam"]), r["space"])


def spectra(df, cfg, runs_dir: Path, path: Path) -> None:
    title = "normalised whitened singular values"
    rows, used, why = _prehab_runs(df, cfg)
    if rows is None:
        return _note(path, title, why)
    import torch

    archs = _arch_order(rows, cfg)
    fig, axes = _axes_grid(len(archs), SPECTRA_LAYERS, w=4.2, h=3.2)
    for i, arch in enumerate(archs):
        t = rows[rows["arch"] == arch]
        pre = t[t["method"] == "prehab"].sort_values("lam", ascending=False)
        ctl = t[t["method"] == "control"]
        picks = []
        if not pre.empty:
            r = pre.iloc[0]
            picks.append((f"after Prehab({r['surrogate']}, λ={fmt(r['lam'])})", "tab:red", r))
        if not ctl.empty:
            picks.append(("after control (λ=0)", "tab:green", ctl.iloc[0]))
        loaded = []
        for name, color, r in picks:
            p = spectra_path(runs_dir, _run_of(r))
            if p is not None and p.is_file():
                loaded.append((name, color, torch.load(p, map_location="cpu", weights_only=True)))
        if not loaded:
            for ax in axes[i]:
                ax.text(0.5, 0.5, f"{arch}: no spectra.pt found", ha="center", transform=ax.transAxes)
            continue
        layers = list(loaded[0][2]["before"])
        idx = sorted({0, len(layers) // 2, len(layers) - 1})[:SPECTRA_LAYERS]
        for j in range(SPECTRA_LAYERS):
            ax = axes[i][j]
            if j >= len(idx):
                ax.axis("off")
                continue
            layer = layers[idx[j]]
            _spectrum(ax, loaded[0][2]["before"].get(layer), "before", "black", ls=":")
            for name, color, data in loaded:
                _spectrum(ax, data["after"].get(layer), name, color)
            ax.set_yscale("log")
            ax.set_title(f"{arch}: {layer}", fontsize=9)
            ax.set_xlabel("i / number of singular values")
            ax.set_ylabel("σ_i / σ_1 (whitened)")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.legend(fontsize=7)
    seeds = ", ".join(sorted({str(int(s)) for s in rows["seed"]}))
    fig.suptitle(f"{title} before/after Prehab (highest λ of {' ∪ '.join(used)}) and control; seed {seeds}", fontsize=10)
    _save(fig, path)


def _spectrum(ax, s, label: str, color: str, ls: str = "-") -> None:
    if s is None:
        return
    s = s.double().flatten().sort(descending=True).values
    if len(s) == 0 or float(s[0]) <= 0:
        return
    import numpy as np

    x = (np.arange(len(s)) + 1) / len(s)
    ax.plot(x, (s / s[0]).clamp_min(1e-12).numpy(), color=color, ls=ls, lw=1.4, label=label)


def trajectories(df, cfg, runs_dir: Path, path: Path) -> None:
    title = "Prehab trajectories"
    rows, used, why = _prehab_runs(df, cfg)
    if rows is None:
        return _note(path, title, why)
    import matplotlib

    archs = _arch_order(rows, cfg)
    fig, axes = _axes_grid(len(archs), 2, w=5.0, h=3.4)
    for i, arch in enumerate(archs):
        t = rows[rows["arch"] == arch].sort_values("lam")
        lams = sorted({float(x) for x in t["lam"]})
        cmap = matplotlib.colormaps["viridis"].resampled(max(len(lams), 2))
        drawn = 0
        for _, r in t.iterrows():
            rec = read_prehab(runs_dir, _run_of(r))
            curve = (rec or {}).get("curve") or []
            if not curve:
                continue
            drawn += 1
            color = cmap(lams.index(float(r["lam"])))
            name = "control (λ=0)" if r["method"] == "control" else f"{r['surrogate']} λ={fmt(r['lam'])}"
            if r["space"] not in (None, "whitened"):
                name += f" ({r['space']})"
            steps = [c["step"] for c in curve]
            for ax, key in zip(axes[i], ("surrogate", "entropy_rank")):
                pts = [(s, c.get(key)) for s, c in zip(steps, curve) if _finite(_num(c.get(key)))]
                if pts:
                    ax.plot([p[0] for p in pts], [_num(p[1]) for p in pts], color=color,
                            ls="--" if r["method"] == "control" else "-", label=name)
        for ax, key, lab in zip(axes[i], ("surrogate", "entropy_rank"),
                                ("rank surrogate (mean over layers)", "entropy effective rank (mean)")):
            ax.set_title(f"{arch}: {key}", fontsize=9)
            ax.set_xlabel("Prehab step")
            ax.set_ylabel(lab)
            ax.grid(alpha=0.3)
            if not drawn:
                ax.text(0.5, 0.5, "no curve found", ha="center", transform=ax.transAxes)
        if drawn:
            axes[i][1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    seeds = ", ".join(sorted({str(int(s)) for s in rows["seed"]}))
    fig.suptitle(f"{title} ({' ∪ '.join(used)}; seed {seeds}; each surrogate in its own scale)", fontsize=10)
    _save(fig, path)


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def calibration_size(df, cfg, path: Path) -> None:
    title = "metric vs calibration samples"
    study, why = _resolve(cfg, CALIBRATION, "cal_samples")
    table = tables.study_table(df, study, cfg.get("archs")) if study else None
    if table is None or table.empty:
        return _note(path, title, why or f"no evaluated models in study `{study}`")
    comp = table[table["compressed"].astype(bool) & table["method"].isin(["svd-llm", "control", "prehab"])]
    if comp.empty:
        return _note(path, title, f"study `{study}` has no calibrated compressed models")
    archs = _arch_order(comp, cfg)
    fig, axes = _axes_grid(1, len(archs))
    extra = _varying(comp, ["lam", "space"])
    ratios = sorted(comp["ratio"].dropna().unique())
    markers = "osD^v<>"
    for ax, arch in zip(axes[0], archs):
        t = comp[comp["arch"] == arch]
        metric = t["metric"].iloc[0]
        labels = [_series_label(r, extra) for _, r in t.iterrows()]
        colors = _label_colors(list(dict.fromkeys(labels)))
        for (label, ratio, lora, source), g in t.assign(_label=labels).groupby(
                ["_label", "ratio", "lora", "cal_source"], sort=False):
            g = g.sort_values("cal_samples")
            g = g[g["mean"].map(_finite)]
            if g.empty:
                continue
            name = f"{label}, ratio {fmt(ratio)}" + ("" if lora == NO_LORA else f" + LoRA({lora})")
            if comp["cal_source"].nunique() > 1:
                name += f", cal {source}"
            ax.errorbar(g["cal_samples"], g["mean"], yerr=g["std"].map(_err), color=colors[label],
                        ls="-" if lora == NO_LORA else "--", marker=markers[ratios.index(ratio) % len(markers)],
                        ms=4, capsize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(comp["cal_samples"].dropna().unique()), [fmt(x) for x in sorted(comp["cal_samples"].dropna().unique())])
        ax.set_title(arch)
        ax.set_xlabel("calibration samples")
        _metric_axis(ax, metric)
        ax.grid(alpha=0.3)
    _shared_legend(fig, axes)
    fig.suptitle(f"{title} (study `{study}`; error bars: std over seeds, {_n_text(table)})", fontsize=10)
    _save(fig, path)


def write_figures(df, cfg: dict[str, Any], runs_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """All FIGURES into out_dir; each is written even when its study is disabled (with a note)."""
    out_dir, runs_dir = Path(out_dir), Path(runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in FIGURES]
    metric_vs_ratio(df, cfg, paths[0])
    lambda_tradeoff(df, cfg, paths[1])
    spectra(df, cfg, runs_dir, paths[2])
    trajectories(df, cfg, runs_dir, paths[3])
    calibration_size(df, cfg, paths[4])
    log.info("wrote %d figures to %s", len(paths), out_dir)
    return paths
