"""Why the authors' whitened-delta Prehab diverges, and whether damping the whitening fixes it.

Adam moves every entry of the delta D by about lr, whatever its gradient's scale; the layer then
uses W + D L^-1. On inputs x like the calibration's, L^-1 x is white, so the output change is as
small as a plain Adam step's. On inputs with a component in a direction the calibration barely
saw (a small eigenvalue of C), L^-1 amplifies it by 1/sqrt(eigenvalue). Fine-tuning moves
earlier layers, so later layers' inputs drift into exactly those directions. The hypothesis:
the divergence is that amplification, and damping C by f * mean(diag C) (GPTQ's form) bounds it
by 1/sqrt(f * mean diag) at little cost to SVD-LLM.

This script runs, from one dense model (a `prehab pretrain` folder), the lambda = 0 control in
the whitened space at the authors' lr and batch (2e-5, 64) with whitening damped by each
`--damping` value, plus the same control in the weight space, and prints per run: the largest
and final task loss of the curve, the validation and test accuracy before compression, and the
amplification the whitening gives Adam's steps. An Adam step moves every entry of D by about
lr, so on calibration-like inputs x (L^-1 x white) its output change is lr * sqrt(n) per
output, where the same step on W gives lr * sqrt(tr C) = lr * sqrt(n * mean eigenvalue of C):
the whitened step is 1 / sqrt(mean eigenvalue) times larger (`typical`), and in the direction
of C's smallest eigenvalue 1 / sqrt(smallest eigenvalue) (`worst`), both printed as the
median and the largest over the factors. `SVD-LLM` is the dense model cut at R = 0.6 with
that calibration (the test accuracy): what the damping costs the surgery.

    .venv/bin/python benchmarks/whitened_delta.py --dense results/runs/arch~vit-small/seed~0/dense \\
        --samples 640 --steps 200 [--damping 0 0.01 0.1] [--work /tmp/whitened-delta]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def prehab(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "prehab", *args], check=True, stdout=subprocess.DEVNULL)


def amplification(grams: Path) -> tuple[float, float, float, float]:
    """(median, largest) over the factors L of 1 / sqrt(mean eigenvalue of C = L L^T), then of
    1 / sqrt(smallest eigenvalue): how much larger a whitened Adam step acts than a plain one."""
    import torch

    from prehab.method.calibrate import load_whitening

    typical, worst = [], []
    for L in load_whitening(grams).factors.values():
        L = L.double()
        typical.append(float((L.shape[0] / L.square().sum()).sqrt()))
        worst.append(float(1 / torch.linalg.svdvals(L).min()))
    return statistics.median(typical), max(typical), statistics.median(worst), max(worst)


def surgery(dense: Path, grams: Path) -> float:
    """Test accuracy of the dense model cut by SVD-LLM at R = 0.6 with this calibration (made
    once per calibration, beside it)."""
    out = grams.parent / f"{grams.name}-svdllm-0.6"
    if not (out / "eval" / "metrics.json").exists():
        prehab("compress", "--model", str(dense), "--grams", str(grams), "--ratio", "0.6", "--evaluate", "--out", str(out))
    return json.loads((out / "eval" / "metrics.json").read_text())["metrics"]["accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense", type=Path, required=True, help="a `prehab pretrain` output folder")
    parser.add_argument("--samples", type=int, default=640)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--damping", type=float, nargs="+", default=[0.0, 0.01, 0.1])
    parser.add_argument("--work", type=Path, default=Path("/tmp/whitened-delta"))
    args = parser.parse_args()
    runs = [("whitened", d) for d in args.damping] + [("weight", args.damping[0])]
    print(f"# from {args.dense}; lambda 0, lr {args.lr:g}, batch {args.batch_size}, {args.steps} steps, "
          f"{args.samples} calibration samples")
    print(f"{'space':<9} {'damping':>8} {'max loss':>9} {'final loss':>11} {'val acc':>8} {'test acc':>9}"
          f" {'SVD-LLM':>8}   amplification typical (median, max), worst (median, max)")
    for space, damping in runs:
        grams = args.work / f"grams-{damping:g}"
        if not grams.exists():
            prehab("calibrate", "--model", str(args.dense), "--samples", str(args.samples), "--damping", f"{damping:g}",
                   "--out", str(grams))
        out = args.work / f"{space}-{damping:g}"
        if not out.exists():
            prehab("prehab", "--model", str(args.dense), "--grams", str(grams), "--lam", "0", "--space", space,
                   "--steps", str(args.steps), "--lr", f"{args.lr:g}", "--batch-size", str(args.batch_size),
                   "--log-every", "10", "--out", str(out))
            prehab("evaluate", "--model", str(out), "--out", str(out / "eval"))
        curve = json.loads((out / "metrics.json").read_text())["curve"]
        metrics = json.loads((out / "eval" / "metrics.json").read_text())["metrics"]
        losses = [row["task_loss"] for row in curve]
        gain = "   " + " ".join(f"{x:9.3g}" for x in amplification(grams)) if space == "whitened" else ""
        print(f"{space:<9} {damping:>8g} {max(losses):>9.3f} {losses[-1]:>11.3f} {metrics['val_accuracy']:>8.4f} "
              f"{metrics['accuracy']:>9.4f} {surgery(args.dense, grams):8.4f}{gain}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
