"""Classification metrics from per-row predictions and labels: accuracy, and GLUE's F1 of the
positive class (MRPC, QQP) and Matthews correlation (CoLA). Each is a function of the rows, so
the paired bootstrap (prehab.report.paired) recomputes it on resampled rows: F1 and MCC are
not means of per-row scores, so a row-wise difference would not give their interval.

A row whose logits are not all finite has prediction -1: wrong, whatever the label (for the
binary metrics: the other class).
"""

from __future__ import annotations

import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
NO_PREDICTION = -1


def _binary(pred: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn, tn) along the last axis, a missing prediction counted as the other class."""
    pred = np.where(pred == NO_PREDICTION, 1 - label, pred)
    p, t = pred == 1, label == 1
    return ((p & t).sum(-1), (p & ~t).sum(-1), (~p & t).sum(-1), (~p & ~t).sum(-1))


def classification_metric(metric: str, pred, label, index: np.ndarray | None = None) -> np.ndarray:
    """`metric` of rows (pred, label: (n,) integers), or of each bootstrap replicate's rows
    (`index`: (B, n) row numbers) as a (B,) array. F1 and MCC are 0 where undefined (no positive
    prediction or label; a constant predictor), as scikit-learn and the GLUE scripts do."""
    pred, label = np.asarray(pred), np.asarray(label)
    if index is not None:
        pred, label = pred[index], label[index]
    if metric == "accuracy":
        return (pred == label).mean(-1)
    if metric not in CLASSIFICATION_METRICS:
        raise ValueError(f"unknown classification metric {metric!r}; known: {', '.join(CLASSIFICATION_METRICS)}")
    if np.any((label != 0) & (label != 1)):
        raise ValueError(f"{metric} is a binary metric; labels other than 0 and 1 found")
    tp, fp, fn, tn = (c.astype(np.float64) for c in _binary(pred, label))
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "f1":
            value = 2 * tp / (2 * tp + fp + fn)
        else:
            value = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0)
