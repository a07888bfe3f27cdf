"""How often the lagged estimator's drift guard refreshes, by learning rate: the cost of
`--estimator lagged` is set by its refreshes per step (each one an exact penalty), so this
prints, for a short Prehab run of vit-small (nuclear_fro, lambda 1, weight space, batch 64,
--refresh-every K) at each learning rate, the cumulative refreshes, guard hits, the stalest
gradient a refresh found and the largest error of a linearised value, at the logged steps.
Without the guard a run of S steps would refresh 72 + 72 (S - 1) / K times.

    .venv/bin/python benchmarks/lagged_refreshes.py [--lrs 3e-5 1e-4] [--steps 33] [--refresh 16]
"""

from __future__ import annotations

import argparse
import copy
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from prehab.layers import find_targets  # noqa: E402
from prehab.method import names  # noqa: E402
from prehab.method.calibrate import second_moments, whitening_from_moments  # noqa: E402
from prehab.method.prehab import PrehabSettings, run_prehab  # noqa: E402
from prehab.method.schedule import LambdaSchedule  # noqa: E402
from prehab.method.surrogates import Surrogate  # noqa: E402
from prehab.registry import get_arch  # noqa: E402

KEYS = ("step", "penalty_refreshes", "guard_shortened", "gradient_drift", "linearisation_error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-5, 1e-4])
    parser.add_argument("--steps", type=int, default=2 * names.DEFAULT_REFRESH + 1)
    parser.add_argument("--refresh", type=int, default=names.DEFAULT_REFRESH)
    args = parser.parse_args()
    spec = get_arch("vit-small")
    options = spec.resolve_options({})
    torch.manual_seed(0)
    model, _ = spec.build_pretrained(options)
    train = spec.load_split(options, "train", 8 * 64, 0)
    targets = find_targets(model, spec.targets)
    whitening = whitening_from_moments(*second_moments(model, spec.task, train, targets, 64))
    for lr in args.lrs:
        settings = PrehabSettings(surrogate=Surrogate("nuclear_fro"), schedule=LambdaSchedule(1.0), space="weight",
                                  steps=args.steps, lr=lr, batch_size=64, seed=0, log_every=8, estimator="lagged",
                                  refresh_every=args.refresh)
        curve = run_prehab(copy.deepcopy(model), spec.task, train, whitening, targets, settings).curve
        print(f"lr {lr:g}, K {args.refresh}, {len(targets)} matrices:")
        for row in curve:
            print("  " + ", ".join(f"{k} {row[k]:.4g}" for k in KEYS))


if __name__ == "__main__":
    main()
