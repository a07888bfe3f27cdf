"""The validation split and per-row scores: `val` is disjoint from `train` (and so from calibration
from `train`) and from `test`, the same rows for every seed; evaluation scores every row in the
split's own order, and the metric is their summary."""

from __future__ import annotations

import math

import pytest
import torch

from prehab import tasks
from prehab.data import holdout
from prehab.errors import UsageError
from prehab.method.evaluate import item_scores, summary
from prehab.registry import get_arch

EMBEDDED = ("tiny-mlp", "vit-tiny", "bert-tiny", "llama-tiny")


def _rows_as_set(data: dict[str, torch.Tensor]) -> set[bytes]:
    first = next(iter(data.values()))
    return {row.numpy().tobytes() for row in first.reshape(len(first), -1)}


@pytest.mark.parametrize("arch", EMBEDDED)
def test_val_is_held_out_of_train_and_fixed(arch, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = get_arch(arch)
    opts = spec.resolve_options()
    val = spec.load(opts, "val")
    train_all = spec.load(opts, "train")
    calib = spec.load(opts, "train", 16, 3)
    raw_train = spec.load_split(opts, "train", None, 0)
    assert tasks.num_rows(val) == opts["n_val"]
    assert tasks.num_rows(train_all) + opts["n_val"] == tasks.num_rows(raw_train)
    val_rows, train_rows = _rows_as_set(val), _rows_as_set(train_all)
    # a corpus may hold a few identical rows (same image, same window): by content, allow 1%
    assert len(val_rows & train_rows) <= 0.01 * len(val_rows)
    assert _rows_as_set(calib) <= train_rows
    # the same rows whatever the seed; calibration draws depend on the seed
    for key, value in val.items():
        assert torch.equal(value, spec.load(opts, "val", None, 7)[key])
    assert not torch.equal(next(iter(calib.values())), next(iter(spec.load(opts, "train", 16, 4).values())))


def test_held_out_rows_partition_the_training_rows():
    val, train = holdout.held_out_rows(100, 10)
    assert len(val) == 10 and len(train) == 90
    assert sorted(torch.cat([val, train]).tolist()) == list(range(100))
    assert torch.equal(val, holdout.held_out_rows(100, 10)[0])  # fixed, no run seed involved


def test_calibration_never_draws_validation_rows():
    """By index: the loader's row numbers of `train` draws never include a `val` row."""
    n = 50
    pool = {"x": torch.arange(n)}
    load = lambda options, split, n_rows, seed: pool  # noqa: E731  (one split of 50 numbered rows)
    opts = {"n_val": 10}
    val = set(holdout.load(load, opts, "val", None, 0, "fake")["x"].tolist())
    for seed in range(5):
        drawn = set(holdout.load(load, opts, "train", 40, seed, "fake")["x"].tolist())
        assert not drawn & val and len(drawn) == 40
    assert len(holdout.load(load, opts, "val", 4, 0, "fake")["x"]) == 4


def test_val_errors_name_the_problem():
    pool = {"x": torch.arange(20)}
    load = lambda options, split, n_rows, seed: pool  # noqa: E731
    with pytest.raises(UsageError, match="no validation split"):
        holdout.load(load, {}, "val", None, 0, "fake")
    with pytest.raises(UsageError, match="n_val=20"):
        holdout.load(load, {"n_val": 20}, "val", None, 0, "fake")
    with pytest.raises(UsageError, match="only 15 are available"):
        holdout.load(load, {"n_val": 5}, "train", 16, 0, "fake")


class _Parity(torch.nn.Module):
    """Predicts class (row length parity) from the attention mask: a known answer per row."""

    def forward(self, input_ids, attention_mask, **_):
        length = attention_mask.sum(dim=1)
        logits = torch.stack([(length % 2 == 0).float(), (length % 2 == 1).float()], dim=1)
        return type("Out", (), {"logits": logits})()


def test_item_scores_follow_the_splits_row_order():
    """Evaluation sorts rows by length for speed; the scores must come back in row order."""
    lengths = torch.tensor([5, 2, 7, 3, 3, 6, 1, 4])
    mask = (torch.arange(8)[None, :] < lengths[:, None]).long()
    labels = torch.tensor([1, 0, 0, 1, 0, 0, 1, 1])  # right where parity matches
    data = {"input_ids": mask.clone(), "attention_mask": mask, "labels": labels}
    scores = item_scores(_Parity(), "text-cls", data, batch_size=3)
    expected = [int(x) for x in ((lengths % 2) == labels)]
    assert scores["correct"] == expected
    assert scores["finite"] == [1] * 8
    assert summary(scores, "text-cls")["accuracy"] == sum(expected) / 8


def test_perplexity_summary_of_window_scores():
    scores = {"nll": [2.0, 4.0], "tokens": [3, 3], "finite": [1, 1]}
    metrics = summary(scores, "lm")
    assert metrics["perplexity"] == pytest.approx(math.exp(1.0))
    assert metrics["eval_tokens"] == 6 and metrics["nonfinite_rows"] == 0
    assert summary({"nll": [math.inf], "tokens": [3], "finite": [0]}, "lm")["perplexity"] == math.inf
