"""The one split rule every loader follows, so all architectures draw their subsets the same way:
`test` is the first n rows of a fixed order (every run and seed scores the same rows); `train`
and calibration sources are a seeded random choice of n rows."""

from __future__ import annotations

import torch

from prehab.errors import UsageError


def check_split(split: str, allowed: tuple[str, ...], what: str) -> None:
    """Raises UsageError naming the split, the loader `what` and the splits it offers."""
    if split not in allowed:
        raise UsageError(f"unknown split {split!r} for {what}; allowed: {', '.join(allowed)}")


def choose_rows(split: str, available: int, n: int | None, seed: int, what: str) -> torch.Tensor:
    """Row indices (n,) out of `available`: all of them (in order) when n is None.

    Raises:
        UsageError: n is negative or larger than `available`; `what` names the rows' source.
    """
    if n is None:
        return torch.arange(available)
    if n < 0 or n > available:
        raise UsageError(f"n={n} rows requested from {what} (split {split!r}), but only {available} are available")
    if split == "test":
        return torch.arange(n)
    return torch.randperm(available, generator=torch.Generator().manual_seed(seed))[:n]
