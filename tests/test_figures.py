"""What a reviewer checks on every figure, read from the matplotlib objects the figure functions
return (drawn from a hand-made runs tree, as tests/test_report.py makes one): legends outside the
panels, one colour per series, labelled axes, plain-text titles, intervals that do not sit on one
x, a panel per surrogate scale, and the spectrum before Prehab drawn over the curves after it."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("pandas")
pytest.importorskip("torch")
pytest.importorskip("matplotlib")

import test_report  # noqa: E402  (the runs tree every report test reads)
from test_report import _study, make_tree  # noqa: E402

from prehab.report import figures, plotting  # noqa: E402
from prehab.report.collect import collect  # noqa: E402
from prehab.studies import FIGURES  # noqa: E402

TAIL_SCALE = 1e-2  # tail_abs's logged surrogate against nuclear's: two scales a shared axis would flatten
STEPS = 100  # a whole Prehab run; a snapshot ran its fraction of it
CFG = {
    "archs": ["tiny-mlp", "tiny-lm"],
    "studies": {
        "main": _study(["dense", "svd", "svd-llm", "control", "prehab"],
                       prehab={"surrogate": ["nuclear", "tail_abs"], "lam": [1.0, 10.0], "space": ["whitened"]},
                       figures=["metric_vs_ratio", "prehab_vs_control", "spectra", "trajectories"]),
        "lambda_sweep": _study(["svd-llm", "control", "prehab"], seeds=[0], ratios=[0.6], lora=["none"],
                               prehab={"surrogate": ["nuclear", "tail_abs"], "lam": [0.1, 1.0, 10.0],
                                       "space": ["whitened"]}, figures=["lambda_tradeoff"]),
        "calibration_size": _study(["svd-llm", "prehab"], seeds=[0], ratios=[0.6], lora=["none"],
                                   samples=[16, 64, 256], figures=["calibration_size"]),
        "budget": _study(["svd-llm", "control", "prehab"], ratios=[0.6], lora=["none"], snapshots=[0.25, 0.5],
                         figures=["budget"]),
    },
}


ORIGINAL_HISTORY = test_report.history_of


def _history_with_steps(run) -> list[dict]:
    """test_report's history plus the prehab step's step count, which the budget figure reads."""
    history = ORIGINAL_HISTORY(run)
    if run.method in ("prehab", "control"):
        history.insert(1, {"step": "prehab", "steps": round(STEPS * (run.snapshot or 1.0))})
    return history


def _rescale_tail_curves(root) -> None:
    """Each prehab step records the surrogate it logged; tail_abs's curve is 100 times smaller."""
    for path in root.rglob("metrics.json"):
        data = json.loads(path.read_text())
        if data.get("step") != "prehab":
            continue
        tail, control = "prehab~tail_abs/" in str(path), "prehab~none/" in str(path)
        data["params"]["surrogate"] = "tail_abs" if tail else "nuclear_fro" if control else "nuclear"
        if tail:
            data["curve"] = [{**c, "surrogate": c["surrogate"] * TAIL_SCALE} for c in data["curve"]]
        path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """(long table, runs folder) of the figures' config."""
    root = tmp_path_factory.mktemp("figure_runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(test_report, "history_of", _history_with_steps)
        make_tree(root, CFG)
    _rescale_tail_curves(root)
    return collect(root, CFG), root


@pytest.fixture(scope="module")
def drawn(tree):
    """Every figure, drawn (so that extents are known) and closed at the end."""
    df, root = tree
    out = {name: drawer(df, CFG, root) for name, drawer in figures.DRAWERS.items()}
    for fig in out.values():
        fig.canvas.draw()
    yield out
    for fig in out.values():
        plotting.pyplot().close(fig)


def _panels(fig) -> list:
    return [ax for ax in fig.axes if ax.axison]


def _series(ax) -> list:
    """The data lines of a panel's legend entries, each with its entry's label (legend proxies,
    single points and lines across the panel aside)."""
    from matplotlib.container import ErrorbarContainer

    out = []
    for handle, label in zip(*ax.get_legend_handles_labels()):
        line = handle.lines[0] if isinstance(handle, ErrorbarContainer) else handle
        if line.get_transform() == ax.transData and len(line.get_xdata()) > 1:
            out.append((label, line))
    return out


def test_every_figure_is_drawn_with_panels(drawn):
    assert tuple(drawn) == FIGURES
    for name, fig in drawn.items():
        assert _panels(fig), name
        assert not any("no " in t.get_text() for ax in _panels(fig) for t in ax.texts), name  # no "no curve found"


@pytest.mark.parametrize("name", FIGURES)
def test_no_legend_covers_a_panel(drawn, name):
    fig = drawn[name]
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, name
    for legend in legends:
        box = legend.get_window_extent()
        for ax in _panels(fig):
            assert not box.overlaps(ax.get_window_extent()), (name, ax.get_title())


@pytest.mark.parametrize("name", FIGURES)
def test_titles_are_plain_text_and_axes_are_labelled(drawn, name):
    fig = drawn[name]
    titles = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes]
    assert titles[0] and not any("`" in t for t in titles), titles
    for ax in _panels(fig):
        assert ax.get_xlabel() and ax.get_ylabel(), (name, ax.get_title())


@pytest.mark.parametrize("name", ["prehab_vs_control", "lambda_tradeoff", "trajectories", "budget"])
def test_one_colour_per_series(drawn, name):
    """Two series never share a colour, and a series keeps its colour in every panel."""
    colour_of = {}
    for ax in _panels(drawn[name]):
        for label, line in _series(ax):
            colour_of.setdefault(label, set()).add(line.get_color())
    assert len(colour_of) >= 2, name
    assert all(len(c) == 1 for c in colour_of.values()), colour_of
    assert len({next(iter(c)) for c in colour_of.values()}) == len(colour_of), colour_of


def test_metric_vs_ratio_gives_each_method_its_colour_and_lora_the_same_dashed(drawn):
    ax = _panels(drawn["metric_vs_ratio"])[0]
    solid = {label: line.get_color() for label, line in _series(ax) if line.get_linestyle() == "-"}
    dashed = {label: line.get_color() for label, line in _series(ax) if line.get_linestyle() == "--"}
    assert len(solid) >= 6 and len(set(solid.values())) == len(solid), solid
    for label, colour in dashed.items():
        assert colour == solid[label.rsplit(" + LoRA", 1)[0]], label


@pytest.mark.parametrize("name", ["metric_vs_ratio", "prehab_vs_control", "calibration_size", "budget"])
def test_intervals_at_one_x_are_dodged(drawn, name):
    """The series' points at one x value sit apart, within the gap to the next x value, whose tick
    stays at the true value."""
    for ax in _panels(drawn[name]):
        where = math.log2 if ax.get_xscale() == "log" else float
        xs = [where(x) for _, line in _series(ax) for x in line.get_xdata()]
        ticks = sorted(where(t) for t in ax.get_xticks())
        half_gap = 0.5 * min(b - a for a, b in zip(ticks, ticks[1:]))
        nearest = [min(ticks, key=lambda t: abs(x - t)) for x in xs]
        assert all(abs(x - t) < half_gap for x, t in zip(xs, nearest)), (name, xs, ticks)
        for tick in set(nearest):
            at = [x for x, t in zip(xs, nearest) if t == tick]
            assert len(set(at)) == len(at) > 1, (name, tick, at)


def test_lambda_tradeoff_names_each_lambda_once_and_promises_no_bars_with_one_seed(drawn):
    fig = drawn["lambda_tradeoff"]
    assert not [t for ax in fig.axes for t in ax.texts]  # no label per point to overprint
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [x for x in labels if x.startswith("λ = ")] == ["λ = 0 (control)", "λ = 0.1", "λ = 1", "λ = 10"]
    title = fig.get_suptitle()
    assert "no error bars" in title and "error bars: std" not in title, title
    assert not any(c for ax in fig.axes for c in ax.containers)  # no errorbar drawn


def test_bars_are_promised_where_there_are_several_seeds(drawn):
    assert "error bars: std over seeds, n=2 seeds" in drawn["metric_vs_ratio"].get_suptitle()


def test_trajectories_give_each_surrogate_its_own_panel(drawn):
    """nuclear, tail_abs (100 times smaller) and the controls' nuclear_fro: three surrogate panels
    per testbed, then the entropy rank; tail_abs shares no axis with nuclear."""
    fig = drawn["trajectories"]
    titles = [ax.get_title() for ax in _panels(fig)]
    for arch in CFG["archs"]:
        assert sorted(t for t in titles if t.startswith(arch)) == sorted(
            f"{arch}: {s}" for s in ("nuclear (whitened)", "tail_abs (whitened)", "nuclear_fro (whitened)",
                                     "entropy effective rank")), titles
    for ax in _panels(fig):
        if "tail_abs" in ax.get_title():
            assert {label for label, _ in _series(ax)} == {"tail_abs λ=1", "tail_abs λ=10"}
            assert max(max(line.get_ydata()) for _, line in _series(ax)) <= 10 * TAIL_SCALE
    assert "one panel per surrogate" in fig.get_suptitle()


def test_spectrum_before_is_drawn_over_the_curves_after(drawn):
    for ax in _panels(drawn["spectra"]):
        lines = {line.get_label(): line for line in ax.get_lines()}
        before = lines.pop("before")
        assert before.get_linestyle() == "--" and lines
        assert all(before.get_zorder() > line.get_zorder() and before.get_color() != line.get_color()
                   for line in lines.values())


def test_a_figure_without_a_study_is_a_plain_note(tree):
    df, root = tree
    fig = figures.budget(df, {**CFG, "studies": {"main": CFG["studies"]["main"]}})
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes]
    assert any("budget" in t for t in texts) and not any("`" in t for t in texts), texts
    plotting.pyplot().close(fig)


def test_write_figures_saves_each_as_a_png(tree, tmp_path):
    df, root = tree
    open_before = plotting.pyplot().get_fignums()
    paths = figures.write_figures(df, CFG, root, tmp_path)
    assert [p.name for p in paths] == [f"{name}.png" for name in FIGURES]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert plotting.pyplot().get_fignums() == open_before  # each closed once saved
