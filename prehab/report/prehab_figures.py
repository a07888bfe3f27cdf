"""Figures of the Prehab runs themselves, read from the prehab step's files: the whitened
spectra before/after (spectra.pt) and the training curves (the curve in metrics.json), for the
studies that declare them (`studies.S.figures`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from prehab.layout import Run, fmt
from prehab.report import plotting
from prehab.report.collect import declared, in_study, no_study_text, read_prehab, spectra_path

SPECTRA_LAYERS = 3


def _prehab_runs(df, cfg, figure: str, title: str, path: Path) -> tuple[Any, list[str]] | None:
    """(uncompressed Prehab/control rows of the enabled studies that declare `figure`, lowest
    seed and smallest calibration first; those studies); None, after writing a note saying why,
    when there are none (as figures._declared_table)."""
    used = declared(cfg, figure)
    if not used:
        plotting.note(path, title, no_study_text(figure))
        return None
    import pandas as pd

    rows = pd.concat([in_study(df, s) for s in used]).drop_duplicates("eval_dir")
    rows = rows[~rows["compressed"].astype(bool) & rows["method"].isin(["prehab", "control"])
                & rows["snapshot"].isna()]  # whole runs only (snapshots: the budget figure)
    if rows.empty:
        plotting.note(path, title, "no uncompressed Prehab/control models evaluated")
        return None
    rows = rows.sort_values(["seed", "cal_samples", "cal_source"], kind="stable")
    first = rows.groupby("arch", sort=False)[["seed", "cal_source", "cal_samples"]].first()
    keep = rows.apply(lambda r: (r["seed"], r["cal_source"], r["cal_samples"]) == tuple(first.loc[r["arch"]]), axis=1)
    return rows[keep], used


def _run_of(r) -> Run:
    return Run(r["arch"], int(r["seed"]), r["method"], bool(r["compressed"]), None, r["lora"], r["cal_source"],
               int(r["cal_samples"]), r["surrogate"], float(r["lam"]), r["space"])


def common_lambda(rows) -> float | None:
    """The largest lambda whose Prehab run (recipes aside) exists on every architecture of `rows`,
    so that every testbed's spectra show the same penalty weight; None if there is none."""
    from prehab.method.recipes import RECIPES

    pre = rows[(rows["method"] == "prehab") & ~rows["surrogate"].isin(list(RECIPES))]
    per_arch = [set(g["lam"]) for _, g in pre.groupby("arch")]
    shared = set.intersection(*per_arch) if per_arch else set()
    return max(shared) if shared else None


def spectra(df, cfg, runs_dir: Path, path: Path) -> None:
    title = "normalised whitened singular values"
    found = _prehab_runs(df, cfg, "spectra", title, path)
    if found is None:
        return
    rows, used = found
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
    shown = "no λ shared by every testbed" if lam is None else f"λ = {fmt(lam)} on every testbed"
    fig.suptitle(f"{title} before/after Prehab ({shown}; {' ∪ '.join(used)}) and control; seed {seeds}", fontsize=10)
    plotting.save(fig, path)


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
    found = _prehab_runs(df, cfg, "trajectories", title, path)
    if found is None:
        return
    rows, used = found
    import matplotlib

    archs = plotting.arch_order(rows, cfg)
    fig, axes = plotting.axes_grid(len(archs), 2, w=5.0, h=3.4)
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
                pts = [(s, c.get(key)) for s, c in zip(steps, curve) if plotting.finite(_num(c.get(key)))]
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
    plotting.save(fig, path)


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
