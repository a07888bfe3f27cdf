"""Matplotlib helpers shared by the figure modules: one look for every figure (a grid of panels
per architecture, one legend, metric axes labelled with their direction, a note figure when a
figure has nothing to show)."""

from __future__ import annotations

import math
from pathlib import Path

from prehab.report import tables
from prehab.tasks import HIGHER_IS_BETTER

METHOD_COLORS = {"dense": "0.3", "SVD": "tab:gray", "SVD-LLM": "tab:blue", "control (λ=0)": "tab:green"}
PREHAB_COLORS = ("tab:red", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)


def finish(fig, axes, title: str, path: Path) -> None:
    """One legend, the figure's title, saved."""
    shared_legend(fig, axes)
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def note(path: Path, title: str, text: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11)
    save(fig, path)


def arch_order(df, cfg) -> list[str]:
    present = list(dict.fromkeys(df["arch"]))
    return [a for a in cfg.get("archs", []) if a in present] + [a for a in present if a not in cfg.get("archs", [])]


def axes_grid(n_rows: int, n_cols: int, w: float = 4.6, h: float = 3.6):
    plt = pyplot()
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(w * n_cols, h * n_rows), squeeze=False, layout="constrained")
    return fig, axes


def metric_axis(ax, metric: str) -> None:
    ax.set_ylabel(f"{metric} ({tables.direction(metric)})")
    if not HIGHER_IS_BETTER.get(metric, True):
        log_plain(ax, "y")
    else:  # never an offset ("+7.7e-1"): a reader must see the absolute numbers
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")


def clip_to(ax, values, metric: str, what: str) -> None:
    """Limit a perplexity axis to the range of `values` (with a margin), so that one diverged
    method (e.g. plain SVD at 1e8) does not squash the others; the title says it is off scale."""
    shown = [float(v) for v in values if finite(v)]
    if HIGHER_IS_BETTER.get(metric, True) or not shown:
        return
    low, high = min(shown), max(shown)
    top = ax.get_ylim()[1]
    if top > 3 * high:
        ax.set_ylim(low / 1.5, high * 1.5)
        ax.set_title(ax.get_title() + f"\n({what} above the axis where not shown)", fontsize=9)



def log_plain(ax, which: str) -> None:
    """Log scale with plain numbers (20, 30, 40) instead of 2x10^1."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(FormatStrFormatter(""))


def shared_legend(fig, axes) -> None:
    """One legend for the whole figure, right of the panels, entries unique by label."""
    seen = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside right center", fontsize=8, frameon=False)


def n_text(table) -> str:
    n = sorted({int(x) for x in table["n"].dropna()})
    if not n:
        return "no seeds"
    return f"n={n[0]} seed{'s' if n[-1] > 1 else ''}" if len(n) == 1 else f"n={n[0]}–{n[-1]} seeds"


def finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and (math.isnan(x) or math.isinf(x)))


def err(std) -> float:
    return 0.0 if not finite(std) else float(std)


def concat(*frames):
    import pandas as pd

    return pd.concat([f for f in frames if not f.empty] or [frames[0]])


def label_colors(labels: list[str]) -> dict[str, str]:
    colors, k = {}, 0
    for lab in labels:
        if lab in METHOD_COLORS:
            colors[lab] = METHOD_COLORS[lab]
        elif lab not in colors:
            colors[lab] = PREHAB_COLORS[k % len(PREHAB_COLORS)]
            k += 1
    return colors
