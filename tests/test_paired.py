"""The paired verdict on simulated data at the testbeds' sizes (vit-small: 1,000 test images,
bert-small: 2,000 sentences; 3 seeds): a true 2-point effect is called better, and nulls are
called "no detectable difference" at least 90% of the time (95% intervals: about 95% expected)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prehab.report.paired import BETTER, UNDETECTED, WORSE, fmt_paired, paired_difference, verdict

SEEDS = (0, 1, 2)


def _simulated_pair(rng, n: int, effect: float, base: float = 0.70, redraw: float = 0.15) -> tuple[dict, dict]:
    """B correct with probability `base`, A with `base + effect`, on the same items: both read one
    latent difficulty per item; a fraction `redraw` of A's items is decided independently (two
    models disagree on some items even when equally good)."""
    u = rng.random(n)
    b = u < base
    own = rng.random(n) < redraw
    a = np.where(own, rng.random(n) < base + effect, u < base + effect)
    return {"correct": a.astype(int).tolist()}, {"correct": b.astype(int).tolist()}


@pytest.mark.parametrize("n_test", [1000, 2000])
def test_a_two_point_effect_is_called_better(n_test):
    rng = np.random.default_rng(1)
    for trial in range(10):
        pairs = {s: _simulated_pair(rng, n_test, 0.02) for s in SEEDS}
        result = paired_difference(pairs, "accuracy", seed=trial)
        assert result.verdict == BETTER, result
        assert result.low > 0 and 1.0 < result.estimate < 3.0
        flipped = paired_difference({s: (b, a) for s, (a, b) in pairs.items()}, "accuracy", seed=trial)
        assert flipped.verdict == WORSE


@pytest.mark.parametrize("n_test", [1000, 2000])
def test_nulls_are_mostly_undetected(n_test):
    rng = np.random.default_rng(2)
    calls = [paired_difference({s: _simulated_pair(rng, n_test, 0.0) for s in SEEDS}, "accuracy",
                               replicates=1000, seed=trial).verdict for trial in range(200)]
    assert calls.count(UNDETECTED) >= 180, {v: calls.count(v) for v in set(calls)}


def test_interval_half_width_at_the_testbed_sizes():
    """What the tables can resolve: the 95% half-width in points for 3 seeds and 15% of items
    decided independently (printed by the report as [low, high])."""
    rng = np.random.default_rng(3)
    result = paired_difference({s: _simulated_pair(rng, 2000, 0.0) for s in SEEDS}, "accuracy")
    assert (result.high - result.low) / 2 < 1.0


def test_perplexity_is_a_ratio_and_lower_is_better():
    rng = np.random.default_rng(4)
    tokens = [63] * 64
    pairs = {}
    for s in SEEDS:
        base = rng.gamma(50.0, 63 * 3.0 / 50.0, size=64)  # per-window NLL sums, mean NLL ~3
        pairs[s] = ({"nll": (base - 63 * 0.2).tolist(), "tokens": tokens},  # A: 0.2 nats/token lower
                    {"nll": base.tolist(), "tokens": tokens})
    result = paired_difference(pairs, "perplexity")
    assert result.estimate == pytest.approx(math.exp(-0.2))
    assert result.verdict == BETTER and result.high < 1.0
    assert fmt_paired(result, "perplexity").startswith("×0.819")


def test_unpaired_and_diverged_sides():
    a = {"correct": [1, 0, 1]}
    assert paired_difference({0: (a, {"correct": [1, 0]})}, "accuracy") is None  # different rows
    diverged = paired_difference({0: ({"nll": [math.inf, 1.0], "tokens": [3, 3]},
                                      {"nll": [2.0, 1.0], "tokens": [3, 3]})}, "perplexity")
    assert diverged.verdict == WORSE and math.isinf(diverged.estimate)


def test_verdict_reads_the_interval():
    assert verdict(0.1, 2.0, True) == BETTER
    assert verdict(-2.0, -0.1, True) == WORSE
    assert verdict(-0.1, 2.0, True) == UNDETECTED
    assert verdict(0.9, 0.99, False) == BETTER
    assert verdict(0.99, 1.01, False) == UNDETECTED
