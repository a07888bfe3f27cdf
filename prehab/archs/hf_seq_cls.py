"""`hf-seq-cls`: your own Hugging Face sequence classifier (task `text-cls`), scored by accuracy.

    prehab pretrain --arch hf-seq-cls --arch-opt model=MODEL --arch-opt data=DATA --out dense

`model`: a hub name or a `save_pretrained` folder, loaded by AutoModelForSequenceClassification
(BERT, RoBERTa, DeBERTa, a decoder with a `score` head, ...). A model without a classifier of
`num_labels` outputs gets a new one (transformers' load report lists it): train it with the
pretrain step's `--steps` before compressing. `data`: a local dataset with `train_split` and
`test_split` (a DatasetDict folder or `<split>.csv|jsonl|parquet` files), a `text_column`, an
optional `text_pair_column` (sentence pairs are tokenised as pairs) and an integer
`label_column` (0..num_labels-1; `num_labels` 0 counts them from the training split).

Targets: every nn.Linear inside the encoder (or decoder) blocks; pooler and classifier stay dense.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from prehab.archs.own_models import (GENERIC_TARGETS, hf_arch_config, hf_from_config, hf_pretrained,
                                     load_tokenizer, required, rows_asked, tokenizer_name)
from prehab.data import local_text, text
from prehab.data.splits import check_split, choose_rows
from prehab.errors import UsageError
from prehab.registry import ArchSpec, register_arch

NAME = "hf-seq-cls"
AUTO_CLASS = "AutoModelForSequenceClassification"


def _rows(options: dict[str, Any], split: str):
    data = required(options, "data", NAME, "a local dataset folder with train and test splits")
    if local_text.is_one_corpus(data):
        raise UsageError(f"{NAME}: data={data!r} has no splits; give a DatasetDict folder or a folder of "
                         f"<split> files holding {options['train_split']!r} and {options['test_split']!r}")
    return local_text.load_rows(data, options[f"{split}_split"])


@lru_cache(maxsize=8)
def _counted_labels(data: str, split_name: str, label_column: str) -> int:
    """Classes of the training split: a ClassLabel's count, else the largest label plus one."""
    rows = local_text.load_rows(data, split_name)
    feature = rows.features.get(label_column)
    if hasattr(feature, "num_classes"):
        return int(feature.num_classes)
    return int(max(local_text.column(rows, label_column, data))) + 1


def num_labels(options: dict[str, Any]) -> int:
    """Option `num_labels`, or (0) the number of classes in the training split."""
    if options["num_labels"] > 0:
        return options["num_labels"]
    _rows(options, "train")  # the same refusals as loading
    return _counted_labels(options["data"], options["train_split"], options["label_column"])


def build(options: dict[str, Any]) -> tuple[PreTrainedModel, dict[str, Any]]:
    """The model with a head of `num_labels` outputs (a new head where it had none or another
    size) and the tokenizer's pad token, which decoder classifiers need to find each row's end."""
    required(options, "model", NAME, "a hub name or a local folder saved with save_pretrained")
    model = hf_pretrained(AUTO_CLASS, options, NAME, num_labels=num_labels(options), ignore_mismatched_sizes=True)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(tokenizer_name(options, NAME)).pad_token_id
    return model, hf_arch_config(model)


def _labels(rows, options: dict[str, Any], where: str) -> torch.Tensor:
    values = local_text.column(rows, options["label_column"], where)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise UsageError(f"{where}: column {options['label_column']!r} must hold integer class ids "
                         "(datasets' class_encode_column turns string labels into them)")
    labels = torch.tensor(values, dtype=torch.long)  # (N,)
    count = num_labels(options)
    bad = labels[(labels < 0) | (labels >= count)]
    if len(bad):
        raise UsageError(f"{where} has labels {sorted(set(bad.tolist()))} outside 0..{count - 1} (num_labels {count})")
    return labels


def load_split(options: dict[str, Any], split: str, n: int | None = None, seed: int = 0) -> dict:
    """Tokenised rows (right-padded to `seq_len`) and labels of the `train` or `test` split. Rows
    are chosen before tokenising, so a few rows of a large dataset stay cheap."""
    check_split(split, ("train", "test"), NAME)
    rows = _rows(options, split)
    where = f"{options['data']} {options[f'{split}_split']}"
    n = rows_asked(split, n)
    if n is not None:
        rows = rows.select(choose_rows(split, len(rows), n, seed, where).tolist())
    texts = [str(t) for t in local_text.column(rows, options["text_column"], where)]
    pairs = options["text_pair_column"]
    pairs = [str(t) for t in local_text.column(rows, pairs, where)] if pairs else None
    data = text.encode_sentences(load_tokenizer(tokenizer_name(options, NAME)), texts, options["seq_len"], pairs)
    data["labels"] = _labels(rows, options, where)
    return data


register_arch(
    ArchSpec(
        name=NAME,
        family="hf",
        task="text-cls",
        build_pretrained=build,
        from_config=hf_from_config(AUTO_CLASS),
        load_split=load_split,
        targets=GENERIC_TARGETS,
        options={
            "model": "",  # hub name or save_pretrained folder (required)
            "tokenizer": "",  # "": the model's own
            "torch_dtype": "float32",
            "data": "",  # local dataset with train and test splits (required)
            "text_column": "text",
            "text_pair_column": "",  # second sentence of pair tasks, "": none
            "label_column": "label",
            "num_labels": 0,  # 0: counted from the training split
            "train_split": "train",
            "test_split": "test",
            "seq_len": 128,
            "n_test": 0,  # test rows scored, 0: all
            "n_val": 0,  # training rows held out as validation
        },
        defaults={
            "pretrain_steps": 0,  # used as loaded; give steps when the head is new
            "pretrain_lr": 2e-5,
            "batch_size": 32,
            "eval_batch_size": 64,
            "prehab_steps": 200,
            "prehab_lr": 2e-5,
            "rehab_steps": 200,
            "rehab_lr": 1e-4,
            "calib_samples": 256,
        },
        calib_sources={"train": "rows of the data's training split"},
        note=("your own text classifier: --arch-opt model=<hub name|folder> "
              "--arch-opt data=<dataset folder with splits>"),
    )
)
