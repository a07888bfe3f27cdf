"""The numerical rank of every second moment a calibration factored: how many eigenvalues of
C = L L^T lie above `--floor` times its mean diagonal, the count below it, and the first
eigenvalue above it (relative to the mean diagonal). A factor that needed jitter shows here
whether its input is short of tokens or short of directions (e.g. vit-small's layer-0 q/k/v:
rank 207 of 384 however many images calibrate it, docs/method.md 4.2).

    .venv/bin/python scripts/factor_ranks.py CALIBRATION [--floor 1e-8] [--all]

CALIBRATION is a `prehab calibrate` output folder (or its grams.pt). Without --all only the
factors below full rank are printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from prehab.method.calibrate import load_whitening


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calibration", type=Path, help="a `prehab calibrate` output folder or its grams.pt")
    parser.add_argument("--floor", type=float, default=1e-8, help="eigenvalues below floor x mean diagonal count as zero")
    parser.add_argument("--all", action="store_true", help="print every factor, not only the rank-deficient ones")
    args = parser.parse_args(argv)
    whitening = load_whitening(args.calibration)
    print(f"{args.calibration}: {whitening.n_tokens} tokens; eigenvalues of C = L L^T relative to its mean diagonal, "
          f"floor {args.floor:g}")
    for leader in sorted(whitening.factors):
        L = whitening.factors[leader].double()
        eig = torch.linalg.eigvalsh(L @ L.T)
        relative = eig / (eig.sum() / eig.numel())
        below = int((relative < args.floor).sum())
        if below or args.all:
            above = relative[below] if below < relative.numel() else float("nan")
            how = whitening.damping.get(leader, {})
            print(f"{leader}: rank {relative.numel() - below} of {relative.numel()} ({below} below the floor, the next "
                  f"{float(above):.1e}); factored by {how.get('method', '?')}, shift {how.get('shift', 0.0):.2g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
