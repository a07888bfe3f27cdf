"""The lambda schedule of Prehab, in plain Python (the CLI checks it before loading torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prehab.errors import UsageError


@dataclass(frozen=True)
class LambdaSchedule:
    """lambda(t): 1) geometric warm-up from `start` to `lam` over `warmup` steps; 2) constant `lam`."""

    lam: float
    start: float = 0.0
    warmup: int = 0

    def __post_init__(self):
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise UsageError(f"lambda {self.lam} must be a finite number >= 0")
        if self.warmup and not (0 < self.start <= self.lam):
            raise UsageError(f"lambda warm-up start {self.start} must lie in (0, lambda={self.lam}] when warm-up steps > 0")

    def __call__(self, step: int) -> float:
        if self.warmup and step <= self.warmup:
            return self.start * (self.lam / self.start) ** ((step - 1) / max(self.warmup - 1, 1))
        return self.lam


@dataclass(frozen=True)
class PenaltyFrequency:
    """On which steps each matrix is penalised, and the factor its term then gets.

    `every` = 1 (what studies should use): every matrix on every step, weight lambda(t).
    `every` = k > 1: weight k * lambda(t) on one step in k: all matrices on steps 1, k+1, ...,
    or with `stagger` a rotating 1/k of them on every step (matrix i on steps t = i + 1 mod k).
    That is 1/k of the spectral cost but NOT the same push as lambda on every step: under Adam
    the k-times gradient on one step in k raises the second-moment estimate, which normalises
    every step, so the penalty moves the weights less than lambda on every step would
    (docs/method.md, 4.3).
    """

    every: int = 1
    stagger: bool = False

    def __post_init__(self):
        if self.every < 1:
            raise UsageError(f"penalty frequency {self.every} must be a whole number >= 1 (1: every step)")

    def chosen(self, step: int, n: int) -> list[int]:
        """The numbers of the matrices (of `n`) penalised at `step` (1-based)."""
        if self.stagger:
            return [i for i in range(n) if (step - 1 - i) % self.every == 0]
        return list(range(n)) if (step - 1) % self.every == 0 else []
