"""`hf-causal-lm`: your own Hugging Face causal LM (task `lm`), scored by perplexity on your text.

    prehab pretrain --arch hf-causal-lm --steps 0 --arch-opt model=MODEL --arch-opt data=DATA --out dense

`model`: a hub name or a folder saved with `save_pretrained` (any AutoModelForCausalLM whose
blocks are nn.Linear: LLaMA, Mistral, Qwen, OPT, ...). `data`: a text file or a saved
`datasets.Dataset` (one corpus, its last `test_fraction` of windows are test), or a dataset with
`train_split` / `test_split` (a DatasetDict folder or `<split>.txt|jsonl|csv|parquet` files);
rows of `text_column` are joined by blank lines, as WikiText-2 is in SVD-LLM, and cut into
non-overlapping windows of `seq_len` tokens.

Targets: every nn.Linear inside the decoder blocks (prehab.archs.own_models). Grouped-query
attention needs nothing special: k_proj / v_proj are narrower targets of their own. Tied
embeddings stay tied: `lm_head` is a head, never factorised, and from_config rebuilds the tie.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

from prehab.archs.own_models import (GENERIC_TARGETS, hf_arch_config, hf_from_config, hf_pretrained,
                                     load_tokenizer, required, rows_asked, tokenizer_name)
from prehab.data import local_text, text
from prehab.data.splits import check_split
from prehab.registry import ArchSpec, register_arch

NAME = "hf-causal-lm"
AUTO_CLASS = "AutoModelForCausalLM"
SEPARATOR = "\n\n"  # between rows, as SVD-LLM joins WikiText-2's


def build(options: dict[str, Any]) -> tuple[PreTrainedModel, dict[str, Any]]:
    """`options["model"]` as saved, in `options["torch_dtype"]`."""
    model = hf_pretrained(AUTO_CLASS, options, NAME)
    return model, hf_arch_config(model)


@lru_cache(maxsize=4)
def _windows(tokenizer: str, data: str, split_name: str, text_column: str, seq_len: int) -> torch.Tensor:
    """(N, seq_len) windows of one split's token stream, cached: every step loads a split several
    times (train for the hold-out, test for each evaluation)."""
    texts = local_text.corpus_texts(data, split_name, text_column)
    return text.windows(text.token_stream(load_tokenizer(tokenizer), texts, SEPARATOR), seq_len)


def load_split(options: dict[str, Any], split: str, n: int | None = None, seed: int = 0) -> dict:
    """Windows of `seq_len` tokens of the local data's `train` or `test` split."""
    check_split(split, ("train", "test"), NAME)
    data = required(options, "data", NAME, "a text file or a local dataset folder")
    tokenizer = tokenizer_name(options, NAME)
    if local_text.is_one_corpus(data):
        every = _windows(tokenizer, data, "", options["text_column"], options["seq_len"])
        ids = local_text.one_corpus_split(every, split, options["test_fraction"], data)
    else:
        ids = _windows(tokenizer, data, options[f"{split}_split"], options["text_column"], options["seq_len"])
    what = f"{data} {split} windows of {options['seq_len']} tokens"
    return text.subset({"input_ids": ids}, split, rows_asked(split, n), seed, what)


register_arch(
    ArchSpec(
        name=NAME,
        family="hf",
        task="lm",
        build_pretrained=build,
        from_config=hf_from_config(AUTO_CLASS),
        load_split=load_split,
        targets=GENERIC_TARGETS,
        options={
            "model": "",  # hub name or save_pretrained folder (required)
            "tokenizer": "",  # "": the model's own
            "torch_dtype": "float32",
            "data": "",  # text file, saved Dataset, or dataset folder with splits (required)
            "text_column": "text",
            "train_split": "train",
            "test_split": "test",
            "test_fraction": 0.1,  # of a corpus without splits: its last windows are test
            "seq_len": 512,
            "n_test": 0,  # test windows scored, 0: all
            "n_val": 0,  # training windows held out as validation
        },
        defaults={
            "pretrain_steps": 0,  # used as loaded
            "pretrain_lr": 1e-5,
            "batch_size": 4,
            "eval_batch_size": 4,
            "prehab_steps": 200,
            "prehab_lr": 1e-5,
            "rehab_steps": 200,
            "rehab_lr": 1e-4,
            "calib_samples": 128,
        },
        calib_sources={"train": "windows of the data's training split"},
        note="your own causal LM: --arch-opt model=<hub name|folder> --arch-opt data=<text file|dataset folder>",
    )
)
