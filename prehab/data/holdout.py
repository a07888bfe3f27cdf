"""The validation split: a fixed block of an architecture's training rows, held out of `train`.

Lambda (and any other choice a study makes) is picked on `val`, never on `test`, so the chosen
configuration's test metric stays an honest estimate. `val` is the same rows in every run and
seed; `train` (training and calibration from `train`) is what remains, so the three are
disjoint. An architecture opts in with its option `n_val` > 0; paper-scale loaders that cannot
hold their training split in memory keep `n_val` = 0 and have no `val`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from prehab import tasks
from prehab.errors import UsageError

VAL_SPLIT = "val"
HOLDOUT_SEED = 1234  # fixes which training rows are held out; independent of every run seed


def held_out_rows(available: int, n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation rows (n_val,), remaining training rows (available - n_val,)), both sorted.

    Raises:
        UsageError: n_val leaves no training rows.
    """
    if not 0 < n_val < available:
        raise UsageError(f"option n_val={n_val} must be > 0 and below the {available} training rows")
    order = torch.randperm(available, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return order[:n_val].sort().values, order[n_val:].sort().values


def load(load_split: Callable[..., dict], options: dict[str, Any], split: str, n: int | None, seed: int,
         arch: str) -> dict[str, torch.Tensor]:
    """`split` as the steps see it: `val` and `train` drawn from the loader's training rows by the
    hold-out rule (`train` with n: a seeded choice of n remaining rows), every other split from
    the loader itself."""
    n_val = int(options.get("n_val") or 0)
    if split == VAL_SPLIT and not n_val:
        raise UsageError(f"architecture {arch} has no validation split (its option n_val is 0 or absent)")
    if split not in ("train", VAL_SPLIT) or not n_val:
        return load_split(options, split, n, seed)
    pool = load_split(options, "train", None, 0)
    val_rows, train_rows = held_out_rows(len(next(iter(pool.values()))), n_val)
    rows = val_rows if split == VAL_SPLIT else train_rows
    if n is not None:
        if not 0 <= n <= len(rows):
            raise UsageError(f"n={n} rows requested from {arch} split {split!r}, but only {len(rows)} are available")
        if split == VAL_SPLIT:
            rows = rows[:n]
        else:
            rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:n]]
    return tasks.take(pool, rows)
