"""Paired comparisons: method A against method B on the same test items and the same seeds.

The difference is taken where it is paired: per seed, on the same test rows (both models were
scored on the identical split, scores.json), then averaged over the seeds both sides have.
  accuracy:   points, 100 * (acc_A - acc_B); positive = A better.
  F1, MCC:    points too, 100 * (metric_A - metric_B), each side's metric computed on the rows
              (prehab.method.metrics), since neither is a mean of per-row scores.
  perplexity: log(ppl_A / ppl_B) per seed, shown as the ratio ppl_A / ppl_B; below 1 = A better.
Interval: a paired bootstrap over test items within each seed (each replicate resamples the rows
of every seed with replacement, the same rows for A and B), the replicate's statistic is the mean
over seeds; the 95% percentile interval of 2,000 replicates, from a fixed generator so the tables
are reproducible. It measures test-set sampling noise given these training runs (the seeds are
held fixed, not resampled: with 3 seeds a seed bootstrap would be unreliable); the per-seed
differences are returned too, so a reader sees whether the seeds agree.
Verdict: `better` / `worse` when the whole interval lies on one side of no difference, else
`no detectable difference`.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prehab.layout import SCORES_FILE, extra_scores_key
from prehab.method.metrics import classification_metric
from prehab.tasks import HIGHER_IS_BETTER

REPLICATES = 2000
LEVEL = 0.95
BOOTSTRAP_SEED = 0
BETTER, WORSE, UNDETECTED = "better", "worse", "no detectable difference"


@dataclass(frozen=True)
class Paired:
    """A paired difference: estimate, 95% interval (accuracy: points; perplexity: ratio), the
    verdict, the seeds it used, each seed's own estimate, and the rows per seed."""

    estimate: float
    low: float
    high: float
    verdict: str
    seeds: tuple[int, ...]
    per_seed: tuple[float, ...] = field(default=())
    n_items: int = 0


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


def _item_arrays(scores: dict, metric: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row values and, alongside, what must be equal on both sides for the rows to pair:
    accuracy (correct, None); F1 / MCC (predictions, labels); perplexity (NLL, tokens)."""
    if metric == "accuracy":
        return np.asarray(scores["correct"], dtype=np.float64), None
    if in_points(metric):
        return np.asarray(scores["predicted"]), np.asarray(scores["label"])
    return np.asarray(scores["nll"], dtype=np.float64), np.asarray(scores["tokens"], dtype=np.float64)


def paired_difference(pairs: dict[int, tuple[dict, dict]], metric: str, replicates: int = REPLICATES,
                      seed: int = BOOTSTRAP_SEED) -> Paired | None:
    """The paired difference of A against B from {seed: (scores A, scores B)} (test split scores,
    prehab.method.evaluate.item_scores); None when no seed has both sides on the same rows."""
    higher = in_points(metric)
    rng = np.random.default_rng(seed)
    per_seed, boots, sizes, seeds = [], [], [], []
    for s in sorted(pairs):
        a, b = pairs[s]
        xa, tok = _item_arrays(a, metric)
        xb, tok_b = _item_arrays(b, metric)
        if len(xa) != len(xb) or len(xa) == 0 or (tok is not None and not np.array_equal(tok, tok_b)):
            continue
        n = len(xa)
        index = rng.integers(0, n, size=(replicates, n))  # (B, n) the same rows for A and B
        if higher and metric != "accuracy":  # on the rows: tok holds the labels
            per_seed.append(100.0 * float(classification_metric(metric, xa, tok) - classification_metric(metric, xb, tok)))
            boots.append(100.0 * (classification_metric(metric, xa, tok, index)
                                  - classification_metric(metric, xb, tok, index)))
        elif higher:
            diff = xa - xb
            per_seed.append(100.0 * diff.mean())
            boots.append(100.0 * diff[index].mean(axis=1))
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                per_seed.append((xa.sum() - xb.sum()) / tok.sum())
                boots.append((xa[index].sum(axis=1) - xb[index].sum(axis=1)) / tok[index].sum(axis=1))
        sizes.append(n)
        seeds.append(s)
    if not seeds:
        return None
    estimate = float(np.mean(per_seed))
    stat = np.mean(boots, axis=0)  # (B,) mean over seeds per replicate
    if not np.all(np.isfinite(stat)):  # a side with non-finite NLL: no interval, the sign decides
        low = high = estimate
    else:
        tail = 100.0 * (1 - LEVEL) / 2
        low, high = (float(v) for v in np.percentile(stat, [tail, 100.0 - tail]))
    if not higher:  # log ratio -> ratio
        estimate, low, high = (math.exp(v) if math.isfinite(v) else (math.inf if v > 0 else 0.0)
                               for v in (estimate, low, high))
        per_seed = [math.exp(v) if math.isfinite(v) else math.inf for v in per_seed]
    if math.isnan(estimate):
        return Paired(math.nan, math.nan, math.nan, "both non-finite", tuple(seeds), tuple(per_seed), min(sizes))
    return Paired(estimate, low, high, verdict(low, high, higher), tuple(seeds), tuple(per_seed), min(sizes))


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


def compare_runs(runs_dir: Path, a: dict[int, str], b: dict[int, str], metric: str) -> Paired | None:
    """Paired difference of the evaluations {seed: eval_dir} of A against those of B."""
    pairs = {}
    for s in sorted(set(a) & set(b)):
        sa, sb = read_scores(str(Path(runs_dir) / a[s])), read_scores(str(Path(runs_dir) / b[s]))
        if sa is not None and sb is not None:
            pairs[s] = (sa, sb)
    return paired_difference(pairs, metric) if pairs else None


def fmt_paired(p: Paired | None, metric: str) -> str:
    """`+1.2 [+0.3, +2.1]` points, or `×0.97 [0.95, 0.99]` for perplexity; "" when unpaired."""
    if p is None or math.isnan(p.estimate):
        return "" if p is None else "both non-finite"
    if in_points(metric):
        return f"{p.estimate:+.1f} [{p.low:+.1f}, {p.high:+.1f}]"

    def ratio(v: float) -> str:
        return "inf" if math.isinf(v) else f"{v:.3f}"
    return f"×{ratio(p.estimate)} [{ratio(p.low)}, {ratio(p.high)}]"
