"""Tiny "own" models and data, written to disk as a researcher's would be: a LLaMA-style causal LM
(grouped-query attention, tied embeddings) with a text file and a split dataset, a BERT classifier
with a labelled DatasetDict, a timm ViT (timm's save_for_hf folder) with an ImageFolder.

`write_own_models(root)` lays them out at the paths config/own-models.yaml names (relative to the
folder the workflow runs in); the pytest fixtures wrap the same writers for the unit tests.
Tokenizers are the embedded SmolLM2 / MiniLM ones, so nothing comes from the hub.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_paper_loaders_language import SENTENCES, WIKI_LINES

SEQ_LEN = 16
CLASSES = ("neg", "neu", "pos")


def write_causal_lm(folder: Path) -> Path:
    """A random 2-layer LLaMA, 4 query heads over 2 key/value heads, lm_head tied to the embedding."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from prehab.weights import smollm2

    tokenizer = smollm2.load_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_corpus(path: Path, repeats: int = 30) -> Path:
    path.write_text("".join(WIKI_LINES * repeats))
    return path


def write_corpus_splits(folder: Path) -> Path:
    """The same lines as a DatasetDict with `train` and `validation` (a quarter of train's rows)."""
    import datasets

    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": WIKI_LINES * 8}),
        "validation": datasets.Dataset.from_dict({"text": WIKI_LINES * 2}),
    }).save_to_disk(str(folder))
    return folder


def write_seq_cls(folder: Path) -> Path:
    """A random 2-layer BERT with a 2-way head (the data has 3 classes: the head is replaced)."""
    from transformers import BertConfig, BertForSequenceClassification

    from prehab.weights import minilm

    tokenizer = minilm.load_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_labelled_text(folder: Path, n_train: int = 48, n_test: int = 16) -> Path:
    """`train` / `test` rows cycling through SENTENCES, label i % 3 as a ClassLabel."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(CLASSES))})

    def rows(n: int) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"text": [SENTENCES[i % len(SENTENCES)] for i in range(n)],
                                           "label": [i % len(CLASSES) for i in range(n)]}, features=features)

    datasets.DatasetDict({"train": rows(n_train), "test": rows(n_test)}).save_to_disk(str(folder))
    return folder


def write_timm(folder: Path) -> Path:
    """A random 2-block timm ViT for 32x32 images, 3 classes, as timm's save_for_hf writes it."""
    import timm
    from timm.models import save_for_hf

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                                  embed_dim=32, num_heads=2, num_classes=len(CLASSES))
    save_for_hf(model, str(folder), safe_serialization=True)
    return folder


def write_image_folder(root: Path, per_class: dict[str, int] | None = None) -> Path:
    """train/<class>/ and val/<class>/ of random 40x40 PNGs (8 and 4 per class)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (per_class or {"train": 8, "val": 4}).items():
        for name in CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def write_own_models(root: Path) -> dict[str, Path]:
    """Every model and data set under `root`, at the names config/own-models.yaml uses."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "causal-lm": write_causal_lm(root / "causal-lm"),
        "corpus.txt": write_corpus(root / "corpus.txt"),
        "seq-cls": write_seq_cls(root / "seq-cls"),
        "labelled-text": write_labelled_text(root / "labelled-text"),
        "timm-vit": write_timm(root / "timm-vit"),
        "images": write_image_folder(root / "images"),
    }


# ----------------------------------------------------------------------------- pytest fixtures
@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory) -> Path:
    return write_causal_lm(tmp_path_factory.mktemp("causal_lm"))


@pytest.fixture(scope="module")
def corpus_splits(tmp_path_factory) -> Path:
    return write_corpus_splits(tmp_path_factory.mktemp("corpus") / "splits")


@pytest.fixture(scope="module")
def causal_lm_options(tiny_causal_lm, tmp_path_factory) -> dict[str, str]:
    corpus = write_corpus(tmp_path_factory.mktemp("text") / "corpus.txt")
    return {"model": str(tiny_causal_lm), "data": str(corpus), "seq_len": str(SEQ_LEN)}


@pytest.fixture(scope="module")
def tiny_seq_cls(tmp_path_factory) -> Path:
    return write_seq_cls(tmp_path_factory.mktemp("seq_cls"))


@pytest.fixture(scope="module")
def seq_cls_options(tiny_seq_cls, tmp_path_factory) -> dict[str, str]:
    data = write_labelled_text(tmp_path_factory.mktemp("labelled") / "data")
    return {"model": str(tiny_seq_cls), "data": str(data), "seq_len": str(SEQ_LEN)}


@pytest.fixture(scope="module")
def tiny_timm(tmp_path_factory) -> Path:
    return write_timm(tmp_path_factory.mktemp("timm"))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def timm_options(tiny_timm, image_folder) -> dict[str, str]:
    return {"model": str(tiny_timm), "data_dir": str(image_folder)}
