"""Paired comparisons: method A against method B on the same test items and the same seeds.

A comparison is a contrast of evaluations on the same test rows (scores.json), per seed:
  accuracy:   points, 100 * (acc_A - acc_B); positive = A better.
  F1, MCC:    points too, 100 * (metric_A - metric_B), each side's metric computed on the rows
              (prehab.method.metrics), since neither is a mean of per-row scores.
  perplexity: log(ppl_A / ppl_B) per seed, shown as the ratio ppl_A / ppl_B; below 1 = A better.
A - B has the weights (+1, -1); the difference of the drops compression causes (Prehab against
its control) has (+1, -1, -1, +1) on (Prehab after, control after, Prehab before, control before).

Two 95% intervals:
- seed-level, which decides: a t-interval over the per-seed differences (df = n_seeds - 1; for
  perplexity over the per-seed log ratios, shown as a ratio). A verdict about the method must
  include how much training runs differ; each seed's difference already holds its own test-set
  noise, so this one interval carries both. It needs 2+ seeds.
- item-level, test-set noise only: a paired bootstrap over the test items within each seed
  (2,000 replicates resampling every seed's rows, the same rows for every side, the replicate's
  statistic the mean over seeds; a fixed generator, so tables are reproducible). The training
  runs are held fixed, so it ignores the spread between seeds: with 3 seeds it covers the true
  mean far less often than 95% (tests/test_paired.py), and verdicts read from it flipped between
  machines. It is kept beside the seed-level interval, and with 1 seed it is the only interval:
  the verdict reads it and says so (ITEM_BASIS).
Verdict: `better` / `worse` when the deciding interval lies on one side of no difference, else
`no detectable difference`.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from prehab.layout import SCORES_FILE, extra_scores_key
from prehab.method.metrics import classification_metric
from prehab.tasks import HIGHER_IS_BETTER

REPLICATES = 2000
LEVEL = 0.95
BOOTSTRAP_SEED = 0
MIN_SEEDS_FOR_T = 2  # a t-interval needs a spread, so two seeds at least
BETTER, WORSE, UNDETECTED = "better", "worse", "no detectable difference"
ITEM_BASIS = "1 seed: test-set noise only"  # the verdict read the item-level interval
DIFFERENCE = (1.0, -1.0)  # A - B
DROP_DIFFERENCE = (1.0, -1.0, -1.0, 1.0)  # (P after - C after) - (P before - C before): positive = P loses less


def seed_basis(n_seeds: int) -> str:
    """What the verdict read: the seed-level interval with 2+ seeds, else the item-level one."""
    return f"{n_seeds} seeds: t-interval" if n_seeds >= MIN_SEEDS_FOR_T else ITEM_BASIS


@dataclass(frozen=True)
class Paired:
    """A paired difference (accuracy: points; perplexity: ratio): the estimate (mean over seeds),
    the interval the verdict reads [low, high] (seed-level with 2+ seeds, item-level with 1: see
    `basis`), the verdict, the seeds, each seed's own estimate, the rows per seed, and the
    item-level interval [item_low, item_high] (test-set noise only)."""

    estimate: float
    low: float
    high: float
    verdict: str
    seeds: tuple[int, ...]
    per_seed: tuple[float, ...] = field(default=())
    n_items: int = 0
    item_low: float = math.nan
    item_high: float = math.nan
    basis: str = ""


def verdict(low: float, high: float, higher_is_better: bool) -> str:
    """From an interval of A - B (points) or A / B (ratio, centred on 1 for perplexity)."""
    null = 0.0 if higher_is_better else 1.0
    if low > null:
        return BETTER if higher_is_better else WORSE
    if high < null:
        return WORSE if higher_is_better else BETTER
    return UNDETECTED


def in_points(metric: str) -> bool:
    """Higher-is-better metrics (accuracy, F1, MCC) are compared in points, the others (perplexity)
    as ratios."""
    return HIGHER_IS_BETTER.get(metric, True)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the t-interval of the mean of `values` (df = n - 1). Fewer than
    MIN_SEEDS_FOR_T values: no interval (NaN); a non-finite value: no spread to estimate, the
    interval is the mean itself (its sign decides)."""
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mean = float(x.mean()) if len(x) else math.nan
    if len(x) < MIN_SEEDS_FOR_T:
        return mean, math.nan, math.nan
    if not np.all(np.isfinite(x)):
        return mean, mean, mean
    half = float(student_t.ppf(0.5 + level / 2, df=len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def seeds_for_half_width(sd: float, target: float, level: float = LEVEL, most: int = 1000) -> int | None:
    """The fewest seeds whose t-interval (`t_interval`) of a mean has a half-width of at most
    `target` when the per-seed differences spread with standard deviation `sd`; None when even
    `most` seeds would not (or sd is not finite)."""
    from scipy.stats import t as student_t

    if not math.isfinite(sd):
        return None
    for n in range(MIN_SEEDS_FOR_T, most + 1):
        if student_t.ppf(0.5 + level / 2, df=n - 1) * sd / math.sqrt(n) <= target:
            return n
    return None


def _item_arrays(scores: dict, metric: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row values and, alongside, what must be equal on every side for the rows to pair:
    accuracy (correct, None); F1 / MCC (predictions, labels); perplexity (NLL, tokens)."""
    if metric == "accuracy":
        return np.asarray(scores["correct"], dtype=np.float64), None
    if in_points(metric):
        return np.asarray(scores["predicted"]), np.asarray(scores["label"])
    return np.asarray(scores["nll"], dtype=np.float64), np.asarray(scores["tokens"], dtype=np.float64)


def _contrast(values: list[np.ndarray], key: np.ndarray | None, weights: Sequence[float], metric: str,
              index: np.ndarray | None = None):
    """sum_j w_j * statistic_j on the rows (index None: a number) or on each replicate's rows
    (index (B, n): a (B,) array). Points for accuracy, F1 and MCC; per-token NLL for perplexity."""
    rows = slice(None) if index is None else index
    with np.errstate(invalid="ignore", over="ignore"):
        if metric == "accuracy":
            return 100.0 * sum(w * x[rows].mean(axis=-1) for w, x in zip(weights, values))
        if in_points(metric):  # on the rows: key holds the labels
            return 100.0 * sum(w * classification_metric(metric, x, key, index) for w, x in zip(weights, values))
        return sum(w * x[rows].sum(axis=-1) for w, x in zip(weights, values)) / key[rows].sum(axis=-1)


def paired_contrast(groups: dict[int, Sequence[dict]], weights: Sequence[float], metric: str,
                    replicates: int = REPLICATES, seed: int = BOOTSTRAP_SEED) -> Paired | None:
    """The paired contrast sum_j w_j * metric_j from {seed: (scores_1, ..., scores_J)} (test split
    scores, prehab.method.evaluate.item_scores); None when no seed has every side on the same rows."""
    if any(len(sides) != len(weights) for sides in groups.values()):
        raise ValueError(f"each seed needs {len(weights)} evaluations (weights {tuple(weights)})")
    higher = in_points(metric)
    rng = np.random.default_rng(seed)
    per_seed, boots, sizes, seeds = [], [], [], []
    for s in sorted(groups):
        arrays = [_item_arrays(scores, metric) for scores in groups[s]]
        values, keys = [a for a, _ in arrays], [k for _, k in arrays]
        n = len(values[0])
        if n == 0 or any(len(v) != n for v in values) or (
                keys[0] is not None and not all(np.array_equal(keys[0], k) for k in keys[1:])):
            continue
        index = rng.integers(0, n, size=(replicates, n))  # (B, n) the same rows for every side
        per_seed.append(float(_contrast(values, keys[0], weights, metric)))
        boots.append(_contrast(values, keys[0], weights, metric, index))
        sizes.append(n)
        seeds.append(s)
    if not seeds:
        return None
    estimate, low, high = t_interval(per_seed)
    stat = np.mean(boots, axis=0)  # (B,) mean over seeds per replicate
    if not np.all(np.isfinite(stat)):  # a side with non-finite NLL: no interval, the sign decides
        item_low = item_high = estimate
    else:
        tail = 100.0 * (1 - LEVEL) / 2
        item_low, item_high = (float(v) for v in np.percentile(stat, [tail, 100.0 - tail]))
    if len(seeds) < MIN_SEEDS_FOR_T:
        low, high = item_low, item_high
    if not higher:  # log ratio -> ratio
        estimate, low, high, item_low, item_high = (_ratio(v) for v in (estimate, low, high, item_low, item_high))
        per_seed = [_ratio(v) for v in per_seed]
    if math.isnan(estimate):
        return Paired(math.nan, math.nan, math.nan, "both non-finite", tuple(seeds), tuple(per_seed), min(sizes),
                      basis=seed_basis(len(seeds)))
    return Paired(estimate, low, high, verdict(low, high, higher), tuple(seeds), tuple(per_seed), min(sizes),
                  item_low, item_high, seed_basis(len(seeds)))


def _ratio(log_ratio: float) -> float:
    """A log ratio as a ratio: +-inf -> inf / 0, too large -> inf, NaN stays NaN."""
    if math.isinf(log_ratio):
        return math.inf if log_ratio > 0 else 0.0
    try:
        return math.exp(log_ratio)
    except OverflowError:
        return math.inf


def paired_difference(pairs: dict[int, tuple[dict, dict]], metric: str, replicates: int = REPLICATES,
                      seed: int = BOOTSTRAP_SEED) -> Paired | None:
    """The paired difference of A against B from {seed: (scores A, scores B)}; None when no seed
    has both sides on the same rows."""
    return paired_contrast(pairs, DIFFERENCE, metric, replicates, seed)


EXTRA_TEST_MARK = "#"  # eval_dir#label: the rows of an extra test set in that evaluation's scores


def scores_address(eval_dir: str, label: str) -> str:
    """Where the paired statistics find an extra test set's rows (ArchSpec.extra_tests)."""
    return f"{eval_dir}{EXTRA_TEST_MARK}{label}"


@functools.lru_cache(maxsize=4096)
def read_scores(address: str) -> dict | None:
    """The test-split scores of one evaluation folder, or of its extra test set `folder#label`
    (None: the evaluation predates scores.json)."""
    folder, _, label = address.partition(EXTRA_TEST_MARK)
    file = Path(folder) / SCORES_FILE
    if not file.is_file():
        return None
    return json.loads(file.read_text())[extra_scores_key(label) if label else "test"]


def compare_evaluations(runs_dir: Path, sides: Sequence[dict[int, str]], weights: Sequence[float],
                        metric: str) -> Paired | None:
    """The paired contrast of the evaluations {seed: eval_dir} of each side, on the seeds every
    side has with its scores."""
    groups = {}
    for s in sorted(set.intersection(*(set(side) for side in sides))):
        scores = [read_scores(str(Path(runs_dir) / side[s])) for side in sides]
        if all(x is not None for x in scores):
            groups[s] = tuple(scores)
    return paired_contrast(groups, weights, metric) if groups else None


def compare_runs(runs_dir: Path, a: dict[int, str], b: dict[int, str], metric: str) -> Paired | None:
    """Paired difference of the evaluations {seed: eval_dir} of A against those of B."""
    return compare_evaluations(runs_dir, (a, b), DIFFERENCE, metric)


def compare_drops(runs_dir: Path, prehab_after: dict[int, str], control_after: dict[int, str],
                  prehab_before: dict[int, str], control_before: dict[int, str], metric: str) -> Paired | None:
    """How much less Prehab loses to compression than its control, on the same items: per seed
    (before_C - after_C) - (before_P - after_P) in points (positive = Prehab loses less), or the
    ratio (ppl_after / ppl_before of Prehab) / (that of the control) (below 1 = Prehab loses less)."""
    sides = (prehab_after, control_after, prehab_before, control_before)
    return compare_evaluations(runs_dir, sides, DROP_DIFFERENCE, metric)


def fmt_interval(estimate: float, low: float, high: float, metric: str) -> str:
    """`+1.2 [+0.3, +2.1]` points, or `×0.97 [0.95, 0.99]` for a ratio; no brackets without an
    interval (NaN bounds)."""
    if in_points(metric):
        body, bounds = f"{estimate:+.1f}", f" [{low:+.1f}, {high:+.1f}]"
    else:
        def ratio(v: float) -> str:
            return "inf" if math.isinf(v) else f"{v:.3f}"
        body, bounds = f"×{ratio(estimate)}", f" [{ratio(low)}, {ratio(high)}]"
    return body if math.isnan(low) or math.isnan(high) else body + bounds


def fmt_paired(p: Paired | None, metric: str) -> str:
    """The estimate and the interval its verdict reads: `+1.2 [+0.3, +2.1]` points, or
    `×0.97 [0.95, 0.99]` for perplexity; "" when unpaired."""
    if p is None or math.isnan(p.estimate):
        return "" if p is None else "both non-finite"
    return fmt_interval(p.estimate, p.low, p.high, metric)


def fmt_items(p: Paired | None, metric: str) -> str:
    """The item-level (test-set noise) interval `[+0.9, +1.5]`; "" when there is none."""
    if p is None or math.isnan(p.estimate) or math.isnan(p.item_low) or math.isnan(p.item_high):
        return ""
    return fmt_interval(p.estimate, p.item_low, p.item_high, metric).split(" ", 1)[1]


@dataclass(frozen=True)
class SeedRatio:
    """A / B of a per-model quantity (not test items: one number per model), paired by seed: the
    mean of the per-seed ratios, a t-interval on their logs (2+ seeds; NaN with 1), the seeds and
    each seed's ratio."""

    mean: float
    low: float
    high: float
    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]


def seed_ratio(a: dict[int, float], b: dict[int, float]) -> SeedRatio | None:
    """A / B on the seeds where both are finite and B is positive; None when there is no such seed."""
    seeds = tuple(s for s in sorted(set(a) & set(b))
                  if math.isfinite(a[s]) and math.isfinite(b[s]) and b[s] > 0 and a[s] >= 0)
    if not seeds:
        return None
    ratios = tuple(a[s] / b[s] for s in seeds)
    with np.errstate(divide="ignore"):
        _, low, high = t_interval(np.log(ratios))
    return SeedRatio(float(np.mean(ratios)), _ratio(low), _ratio(high), seeds, ratios)


def labelled_verdict(verdict_text: str, basis: str | None) -> str:
    """A verdict as a page shows it: one read from the item-level interval (1 seed) says so,
    inside the parentheses a gated verdict already has."""
    if basis != ITEM_BASIS or not verdict_text:
        return verdict_text
    if verdict_text.endswith(")"):
        return f"{verdict_text[:-1]}; {ITEM_BASIS})"
    return f"{verdict_text} ({ITEM_BASIS})"
