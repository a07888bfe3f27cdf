"""The compression-ratio convention (SVD-LLM's): R is the fraction of a target matrix's
parameters REMOVED, and an (m x n) matrix keeps rank k = floor(m n (1 - R) / (m + n)), at least
1. Plain Python, so the CLI can check a ratio without loading torch. docs/method.md, section 5.
"""

from __future__ import annotations

import math

from prehab.errors import UsageError

RATIO_RULE = "a number in (0, 1): the fraction of the target matrices' parameters removed"


def valid_ratio(ratio: float) -> bool:
    return 0.0 < ratio < 1.0  # False for NaN too


def check_ratio(ratio: float) -> float:
    if not valid_ratio(ratio):
        raise UsageError(f"compression ratio {ratio} is outside (0, 1); it is the fraction of target parameters removed")
    return ratio


def rank_for_ratio(m: int, n: int, ratio: float) -> int:
    """k = floor(m n (1 - R) / (m + n)), at least 1 (a rank-0 layer would delete the layer)."""
    check_ratio(ratio)
    return max(1, math.floor(m * n * (1.0 - ratio) / (m + n)))
