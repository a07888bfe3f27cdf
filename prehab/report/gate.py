"""The gate on a compressed Prehab-vs-control verdict: did the penalty reach the truncation error
SVD-LLM pays, and did it harm the model before compression. One home for the rule the study
tables, the pages and the findings all read."""

from __future__ import annotations

import math

from prehab.report import paired
from prehab.report.paired import BETTER, UNDETECTED, WORSE

TAIL_GATE = 0.75  # Prehab must leave at most 75% of its control's summed whitened tail at k(R) (cut it by 25%)
HARM_POINTS = 1.0  # a Prehab more than 1 point below its control before compression was harmed (points)
HARM_RATIO = 1.02  # ... or with a perplexity more than 2% above its control's (ratio)
UNREACHED = "penalty did not reach the truncation error"
HARMED = "penalty harmed the model"
UNMEASURED = "mechanism not measured"


def gated_verdict(interval_verdict: str, tail_ratio: float, before: float, metric: str) -> str:
    """The verdict of a compressed Prehab-vs-control cell, gated by what the penalty did: Prehab
    that left more than TAIL_GATE of its control's summed whitened tail at k(R) (`tail_ratio`,
    NaN: not measured) did not reach the truncation error SVD-LLM pays, and one that lost more
    than HARM_POINTS (perplexity: a ratio above HARM_RATIO) before compression against its
    control (`before`, NaN: unknown) harmed the model. Either reads instead of no detectable
    difference; a better / worse verdict stays, with the gate in parentheses, because the paired
    interval decides and the gate only says why."""
    if interval_verdict not in (BETTER, WORSE, UNDETECTED):
        return interval_verdict
    unmeasured = math.isnan(tail_ratio)
    gates = [UNREACHED] if not unmeasured and tail_ratio > TAIL_GATE else []
    if (before < -HARM_POINTS) if paired.in_points(metric) else (before > HARM_RATIO):
        gates.append(HARMED)
    if interval_verdict == UNDETECTED and gates:
        return "; ".join(gates) + (f" ({UNMEASURED})" if unmeasured else "")
    notes = gates + ([UNMEASURED] if unmeasured else [])
    return interval_verdict + (f" ({'; '.join(notes)})" if notes else "")
