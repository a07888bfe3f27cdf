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
