"""Matplotlib helpers shared by the figure modules: one look for every figure (a grid of panels
per architecture, one legend outside the panels so no entry hides a point, one colour per series,
metric axes labelled with their direction, a note figure when a figure has nothing to show).

Figure functions build and return their Figure, and the writer saves it (`save`), so that tests
can inspect what a figure draws."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from prehab.layout import fmt
from prehab.report import tables
from prehab.tasks import HIGHER_IS_BETTER

METHOD_COLORS = {"dense": "0.3", "SVD": "tab:gray", "SVD-LLM": "tab:blue", "control (λ=0)": "tab:green"}
# every other series: tab10 without the methods' blue, green and grey, then the lighter tab20
# shades of the same hues; past these, hues spread over turbo
SERIES_COLORS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                 "#ff9896", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
LEGEND_ROW_IN = 0.2  # height of one legend entry at fontsize 8, in inches: when to add a column


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    """Written with every artist inside the image: the legend lies right of the panels."""
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)


def finish(fig, axes, title: str):
    """One legend and the figure's title; returns the figure."""
    shared_legend(fig, axes)
    fig.suptitle(title, fontsize=10)
    return fig


def note(title: str, text: str):
    """A figure that says why there is nothing to draw. The reasons are written for Markdown pages;
    a figure prints them as plain text (no backticks)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, text.replace("`", ""), ha="center", va="center", wrap=True, fontsize=11)
    return fig


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
    """One legend for the whole figure, entries unique by label, anchored right of the figure's
    area (save keeps it in the image) so that it never covers a panel, however many entries it
    has; in columns where one column would outgrow the figure's height."""
    seen = {}
    for ax in getattr(axes, "flat", axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        rows = max(1, int(fig.get_figheight() / LEGEND_ROW_IN))
        fig.legend(list(seen.values()), list(seen), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   frameon=False, ncols=math.ceil(len(seen) / rows))


class SeriesColors:
    """One colour per series name, the same in every panel of a figure and never shared by two
    names (the methods keep their fixed colours)."""

    def __init__(self) -> None:
        self.given: dict[str, Any] = {}

    def __call__(self, name: str):
        if name not in self.given:
            self.given[name] = METHOD_COLORS.get(name) or self._next()
        return self.given[name]

    def _next(self):
        k = sum(1 for name in self.given if name not in METHOD_COLORS)
        if k < len(SERIES_COLORS):
            return SERIES_COLORS[k]
        import matplotlib

        return matplotlib.colormaps["turbo"]((0.05 + 0.618 * k) % 1.0)


class Dodge:
    """Small sideways offsets, one per series, so that the intervals of several series at one x
    sit side by side instead of on top of each other; the axis keeps its ticks at the true x."""

    # fractions of the smallest gap between two x values: between neighbouring series, and at most
    # for all of them together (points stay nearer their own x than any other)
    STEP, MOST = 0.04, 0.3

    def __init__(self, xs, n_series: int, log: bool = False) -> None:
        self.ticks = sorted({float(x) for x in xs if finite(x)})
        self.n, self.log = n_series, log
        where = [math.log2(x) for x in self.ticks] if log else self.ticks
        gaps = [b - a for a, b in zip(where, where[1:])]
        lone = 1.0 if log else 0.2 * (abs(where[0]) if where and where[0] else 1.0)  # one x: a span of its own
        self.width = min(self.MOST, self.STEP * (n_series - 1)) * (min(gaps) if gaps else lone)

    def __call__(self, x, i: int):
        """`x` (a number or a Series) where series i of n draws it."""
        shift = 0.0 if self.n < 2 else (i / (self.n - 1) - 0.5) * self.width
        return x * 2 ** shift if self.log else x + shift

    def label(self, ax) -> None:
        """Ticks at the true x values only."""
        ax.set_xticks(self.ticks, [fmt(x) for x in self.ticks])
        ax.set_xticks([], minor=True)


def n_text(table) -> str:
    n = sorted({int(x) for x in table["n"].dropna()})
    if not n:
        return "no seeds"
    return f"n={n[0]} seed{'s' if n[-1] > 1 else ''}" if len(n) == 1 else f"n={n[0]}–{n[-1]} seeds"


def several_seeds(table) -> bool:
    """Whether any cell has a spread over seeds to draw (a std of one value does not exist)."""
    return bool((table["n"].dropna() > 1).any())


def bars_text(table) -> str:
    """What the error bars of a mean over seeds are, as a title says it: none with one seed."""
    if not several_seeds(table):
        return f"{n_text(table)}: no error bars"
    one = " (none with one seed)" if (table["n"].dropna() == 1).any() else ""
    return f"error bars: std over seeds, {n_text(table)}{one}"


def finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and (math.isnan(x) or math.isinf(x)))


def err(std) -> float:
    return 0.0 if not finite(std) else float(std)


def concat(*frames):
    import pandas as pd

    return pd.concat([f for f in frames if not f.empty] or [frames[0]])
