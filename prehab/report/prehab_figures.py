"""Figures of the Prehab runs themselves, read from the prehab step's files: the whitened
spectra before/after (spectra.pt) and the training curves (the curve in metrics.json), for the
studies that declare them (`studies.S.figures`). Each returns its Figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from prehab.layout import CONTROL_SURROGATE, Run, fmt
from prehab.report import plotting
from prehab.report.collect import declared, no_study_text, read_prehab, spectra_path
from prehab.report.summary import in_study

SPECTRA_LAYERS = 3
BEFORE = {"color": "black", "ls": "--", "zorder": 3}  # the common start, drawn over the curves after it


def _prehab_runs(df, cfg, figure: str) -> tuple[Any, list[str], str]:
    """(uncompressed Prehab/control rows of the enabled studies that declare `figure`, lowest
    seed and smallest calibration first; those studies; why there is nothing to draw: "" when
    there is something)."""
    used = declared(cfg, figure)
    if not used:
        return None, used, no_study_text(figure)
    import pandas as pd

    rows = pd.concat([in_study(df, s) for s in used]).drop_duplicates("eval_dir")
    rows = rows[~rows["compressed"].astype(bool) & rows["method"].isin(["prehab", "control"])
                & rows["snapshot"].isna()]  # whole runs only (snapshots: the budget figure)
    if rows.empty:
        return None, used, "no uncompressed Prehab/control models evaluated"
    rows = rows.sort_values(["seed", "cal_samples", "cal_source"], kind="stable")
    first = rows.groupby("arch", sort=False)[["seed", "cal_source", "cal_samples"]].first()
    keep = rows.apply(lambda r: (r["seed"], r["cal_source"], r["cal_samples"]) == tuple(first.loc[r["arch"]]), axis=1)
    return rows[keep], used, ""


def _run_of(r) -> Run:
    return Run(r["arch"], int(r["seed"]), r["method"], bool(r["compressed"]), None, r["lora"], r["cal_source"],
               int(r["cal_samples"]), r["surrogate"], float(r["lam"]), r["space"])


def _seeds(rows) -> str:
    return ", ".join(sorted({str(int(s)) for s in rows["seed"]}))


def common_lambda(rows) -> float | None:
    """The largest lambda whose Prehab run (recipes aside) exists on every architecture of `rows`,
    so that every testbed's spectra show the same penalty weight; None if there is none."""
    from prehab.method.recipes import RECIPES

    pre = rows[(rows["method"] == "prehab") & ~rows["surrogate"].isin(list(RECIPES))]
    per_arch = [set(g["lam"]) for _, g in pre.groupby("arch")]
    shared = set.intersection(*per_arch) if per_arch else set()
    return max(shared) if shared else None


def spectra(df, cfg, runs_dir: Path):
    """Normalised whitened singular values (sigma_i / sigma_1) of three layers per testbed: before
    Prehab (dashed, drawn on top, as it is often hidden under the control's curve), after Prehab at
    the largest lambda every testbed ran, and after the lambda = 0 control; the penalty should
    concentrate the energy in the leading directions that SVD-LLM keeps."""
    title = "normalised whitened singular values"
    rows, used, why = _prehab_runs(df, cfg, "spectra")
    if why:
        return plotting.note(title, why)
    import torch

    archs = plotting.arch_order(rows, cfg)
    lam = common_lambda(rows)
    fig, axes = plotting.axes_grid(len(archs), SPECTRA_LAYERS, w=4.2, h=3.2)
    for i, arch in enumerate(archs):
        t = rows[rows["arch"] == arch]
        pre = t[(t["method"] == "prehab") & (t["lam"] == lam)]
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
            for name, color, data in loaded:
                _spectrum(ax, data["after"].get(layer), name, color=color, zorder=2)
            _spectrum(ax, loaded[0][2]["before"].get(layer), "before", **BEFORE)
            ax.set_yscale("log")
            ax.set_title(f"{arch}: {layer}", fontsize=9)
            ax.set_xlabel("i / number of singular values")
            ax.set_ylabel("σ_i / σ_1 (whitened)")
            ax.grid(alpha=0.3)
    shown = "no λ shared by every testbed" if lam is None else f"λ = {fmt(lam)} on every testbed"
    return plotting.finish(fig, axes, f"{title} before/after Prehab ({shown}; {' ∪ '.join(used)}) and control; "
                                      f"seed {_seeds(rows)}")


def _spectrum(ax, s, label: str, **style) -> None:
    if s is None:
        return
    s = s.double().flatten().sort(descending=True).values
    if len(s) == 0 or float(s[0]) <= 0:
        return
    import numpy as np

    x = (np.arange(len(s)) + 1) / len(s)
    ax.plot(x, (s / s[0]).clamp_min(1e-12).numpy(), lw=1.4, label=label, **style)


def trajectories(df, cfg, runs_dir: Path):
    """Training curves of the Prehab and control runs, per testbed: the surrogate each run logged,
    one panel per surrogate and space (each in its own scale: one surrogate's values say nothing on
    another's axis), and the entropy effective rank of the whitened weights, measured alike for
    every run, in one panel; one colour per run, controls dashed."""
    title = "Prehab trajectories"
    rows, used, why = _prehab_runs(df, cfg, "trajectories")
    if why:
        return plotting.note(title, why)
    archs = plotting.arch_order(rows, cfg)
    curves = {arch: _curves(rows[rows["arch"] == arch].sort_values("lam"), runs_dir) for arch in archs}
    groups = {arch: list(dict.fromkeys(scale for _, scale, _, _ in curves[arch])) or [None] for arch in archs}
    n_cols = 1 + max(len(g) for g in groups.values())
    fig, axes = plotting.axes_grid(len(archs), n_cols, w=4.2, h=3.2)
    colors = plotting.SeriesColors()
    for i, arch in enumerate(archs):
        panels = dict(zip(groups[arch], axes[i]))
        entropy = axes[i][len(groups[arch])]
        for name, scale, dashed, curve in curves[arch]:
            style = dict(color=colors(name), ls="--" if dashed else "-", label=name)
            _plot_key(panels[scale], curve, "surrogate", **style)
            _plot_key(entropy, curve, "entropy_rank", **style)
        for scale, ax in panels.items():
            ax.set_title(f"{arch}: surrogate" if scale is None else f"{arch}: {scale[0]} ({scale[1]})", fontsize=9)
            ax.set_ylabel("rank surrogate (mean over layers)")
        entropy.set_title(f"{arch}: entropy effective rank", fontsize=9)
        entropy.set_ylabel("entropy effective rank (mean)")
        for ax in axes[i][:len(groups[arch]) + 1]:
            ax.set_xlabel("Prehab step")
            ax.grid(alpha=0.3)
            if not curves[arch]:
                ax.text(0.5, 0.5, "no curve found", ha="center", transform=ax.transAxes)
        for ax in axes[i][len(groups[arch]) + 1:]:
            ax.axis("off")
    return plotting.finish(fig, axes, f"{title} ({' ∪ '.join(used)}; seed {_seeds(rows)}; one panel per surrogate "
                                      "and space, each in its own scale; dashed: controls)")


def _curves(rows, runs_dir: Path) -> list[tuple[str, tuple[str, str], bool, list[dict]]]:
    """(legend name, (surrogate the curve measured, space), is a control, curve) per run with a curve."""
    out = []
    for _, r in rows.iterrows():
        rec = read_prehab(runs_dir, _run_of(r)) or {}
        if rec.get("curve"):
            control = r["method"] == "control"
            name = (("control (λ=0)" if r["surrogate"] == CONTROL_SURROGATE else f"{r['surrogate']} control (λ=0)")
                    if control else f"{r['surrogate']} λ={fmt(r['lam'])}")
            space = r["space"] if isinstance(r["space"], str) else "whitened"
            if space != "whitened":
                name += f" ({space})"
            out.append((name, (_measured(r, rec), space), control, rec["curve"]))
    return out


def _measured(r, rec: dict) -> str:
    """The surrogate a run's curve logged: the step's --surrogate as its metrics.json records it;
    else the one its folder implies (a recipe's own, the controls' logged one)."""
    from prehab.method.recipes import RECIPES
    from prehab.studies import CONTROL_LOGGED_SURROGATE

    recorded = (rec.get("params") or {}).get("surrogate")
    if recorded:
        return recorded
    label = r["surrogate"]
    return RECIPES[label].surrogate if label in RECIPES else CONTROL_LOGGED_SURROGATE if label == CONTROL_SURROGATE \
        else label


def _plot_key(ax, curve: list[dict], key: str, **style) -> None:
    pts = [(c["step"], _num(c.get(key))) for c in curve if plotting.finite(_num(c.get(key)))]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], **style)


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
