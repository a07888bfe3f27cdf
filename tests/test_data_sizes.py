"""The row counts that architectures declare (ArchSpec.split_rows, read by the workflow's early
size check before any job) equal what their loaders actually return."""

from __future__ import annotations

import pytest

from prehab.archs import llama, tiny_mlp
from prehab.data import images, text
from prehab.registry import arch_names, get_arch


def test_fashion_mnist_and_mnist_rows():
    for part, rows in images.FASHION_MNIST_ROWS.items():
        assert len(images.fashion_mnist(part)[1]) == rows
    assert len(images.mnist_digits()[1]) == images.MNIST_DIGITS_ROWS


def test_review_and_wikipedia_sentence_rows():
    rows = get_arch("bert-tiny").split_rows({})
    assert len(text.rotten_tomatoes_split("train")["text"]) == rows["train"]
    assert len(text.rotten_tomatoes_split("test")["text"]) == rows["test"]
    assert len(text.wikipedia_sentences()) == rows["shift"]


@pytest.mark.parametrize("split", sorted(llama.EMBEDDED_TOKENS))
def test_lm_stream_tokens_and_windows(split):
    assert len(llama._stream(split)) == llama.EMBEDDED_TOKENS[split]
    options = dict(get_arch("llama-tiny").options)
    windows = get_arch("llama-tiny").load_split(options, split, None)["input_ids"]
    assert len(windows) == llama.embedded_lm_rows(options)[split]


def test_digit_rows():
    spec = get_arch("tiny-mlp")
    rows = spec.split_rows(spec.options)
    for split in ("train", "test"):
        assert len(spec.load_split(spec.options, split, None, 0)["labels"]) == rows[split]
    assert rows["train"] + rows["test"] == tiny_mlp.N_DIGITS


def test_every_embedded_arch_declares_rows_for_each_calibration_source_and_test():
    for name in arch_names():
        spec = get_arch(name)
        if spec.split_rows is None:  # paper-scale: only loading can tell
            continue
        rows = spec.split_rows(dict(spec.options))
        assert {"train", "test", *spec.calib_sources} <= set(rows), name
