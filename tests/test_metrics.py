"""GLUE's metrics: F1 and Matthews correlation from per-row predictions (a non-finite row counted
wrong), the same on bootstrap replicates as row by row, the paired comparison of two models in
points with its interval (resampling rows, since neither metric is a mean of per-row scores),
and a GLUE architecture's evaluation reporting its task's metric beside accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prehab.method.metrics import NO_PREDICTION, classification_metric
from prehab.report.paired import BETTER, UNDETECTED, WORSE, paired_difference

PRED = [1, 1, 0, 0, 1, 0, 1, NO_PREDICTION]
LABEL = [1, 0, 0, 1, 1, 0, 1, 1]  # tp 3 (+ the missing row: fn), fp 1, fn 1 + 1, tn 2


def test_f1_and_mcc_by_hand():
    tp, fp, fn, tn = 3, 1, 2, 2
    assert classification_metric("accuracy", PRED, LABEL) == pytest.approx(5 / 8)
    assert classification_metric("f1", PRED, LABEL) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert classification_metric("mcc", PRED, LABEL) == pytest.approx(mcc)


def test_a_missing_prediction_is_wrong_whatever_the_label():
    assert classification_metric("f1", [NO_PREDICTION], [0]) == 0.0  # a false positive, no true one
    assert classification_metric("mcc", [1, 0, NO_PREDICTION, NO_PREDICTION], [1, 0, 1, 0]) == pytest.approx(0.0)
    assert classification_metric("mcc", [1, 0], [1, 0]) == pytest.approx(1.0)


def test_undefined_cases_are_zero_and_binary_metrics_refuse_three_classes():
    assert classification_metric("mcc", [1, 1, 1], [1, 0, 1]) == 0.0  # a constant predictor
    assert classification_metric("f1", [0, 0], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="binary"):
        classification_metric("f1", [0, 2], [0, 2])
    with pytest.raises(ValueError, match="unknown classification metric 'auc'"):
        classification_metric("auc", [0], [0])


@pytest.mark.parametrize("metric", ["accuracy", "f1", "mcc"])
def test_replicates_equal_the_metric_of_their_rows(metric):
    rng = np.random.default_rng(0)
    pred, label = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    index = rng.integers(0, 50, size=(7, 50))
    many = classification_metric(metric, pred, label, index)
    assert many.shape == (7,)
    for row, value in zip(index, many):
        assert value == pytest.approx(float(classification_metric(metric, pred[row], label[row])))


def _scores(rng, labels: np.ndarray, skill: float) -> dict:
    right = rng.random(len(labels)) < skill
    predicted = np.where(right, labels, 1 - labels)
    return {"predicted": predicted.tolist(), "label": labels.tolist(), "correct": right.astype(int).tolist()}


@pytest.mark.parametrize("metric", ["f1", "mcc"])
def test_paired_f1_and_mcc_in_points(metric):
    rng = np.random.default_rng(1)
    labels = {s: rng.integers(0, 2, 2000) for s in range(3)}
    pairs = {s: (_scores(rng, y, 0.85), _scores(rng, y, 0.75)) for s, y in labels.items()}
    result = paired_difference(pairs, metric)
    expected = np.mean([100 * (classification_metric(metric, a["predicted"], a["label"])
                               - classification_metric(metric, b["predicted"], b["label"])) for a, b in pairs.values()])
    assert result.estimate == pytest.approx(expected)
    assert result.verdict == BETTER and result.low < result.estimate < result.high
    assert paired_difference({s: (b, a) for s, (a, b) in pairs.items()}, metric).verdict == WORSE


def test_paired_mcc_nulls_are_mostly_undetected():
    rng = np.random.default_rng(2)
    calls = []
    for trial in range(100):
        labels = {s: rng.integers(0, 2, 1000) for s in range(3)}
        pairs = {s: (_scores(rng, y, 0.8), _scores(rng, y, 0.8)) for s, y in labels.items()}
        calls.append(paired_difference(pairs, "mcc", replicates=500, seed=trial).verdict)
    assert calls.count(UNDETECTED) >= 88, {v: calls.count(v) for v in set(calls)}


def test_rows_with_different_labels_do_not_pair():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 100)
    a, b = _scores(rng, y, 0.8), _scores(rng, 1 - y, 0.8)
    assert paired_difference({0: (a, b)}, "f1") is None


@pytest.mark.parametrize("arch, metric", [("bert-base", "accuracy"), ("bert-base-cola", "mcc"),
                                          ("bert-base-mrpc", "f1"), ("bert-base-mnli", "accuracy")])
def test_each_glue_architecture_names_its_task_metric(arch, metric):
    from prehab.registry import get_arch

    spec = get_arch(arch)
    assert spec.metric_of(spec.options) == metric
    assert spec.options["glue_task"] == (arch.removeprefix("bert-base-") if arch != "bert-base" else "sst2")


def test_an_evaluation_reports_the_task_metric_beside_accuracy():
    from prehab.method.evaluate import summary

    scores = {"finite": [1] * 7 + [0], "correct": [int(p == y) for p, y in zip(PRED, LABEL)],
              "predicted": PRED, "label": LABEL}
    metrics = summary(scores, "text-cls", "f1")
    assert metrics["accuracy"] == pytest.approx(5 / 8)
    assert metrics["f1"] == pytest.approx(classification_metric("f1", PRED, LABEL))
    assert metrics["nonfinite_rows"] == 1
    assert "f1" not in summary(scores, "text-cls")  # the task's default: accuracy only
