"""BERT-family architectures (task `text-cls`): a random fixture, the embedded MiniLM testbed, and
the paper's BERT-base on GLUE.

| name       | weights                              | data                                       |
|------------|--------------------------------------|--------------------------------------------|
| bert-tiny  | random, hidden 32, 2 layers          | Rotten Tomatoes (embedded), MiniLM tokens   |
| bert-small | all-MiniLM-L6-v2 (embedded)          | Rotten Tomatoes; shift = Wikipedia sentences|
| bert-base  | bert-base-uncased (hub/local folder) | GLUE SST-2 (hub or local folder)           |
| bert-base-TASK | the same                         | GLUE TASK: mnli qnli qqp cola mrpc rte     |
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # transformers costs seconds to import: only the functions that build pay
    from transformers import BertForSequenceClassification

from prehab.data import hf_text, text
from prehab.data.splits import check_split, choose_rows
from prehab.errors import UsageError
from prehab.registry import ArchSpec, register_arch
from prehab.weights import minilm

# Every encoder Linear: Q, K, V, attention output, FFN up (intermediate) and FFN down (output).
# The pooler, classifier and embeddings stay dense.
BERT_TARGETS = (
    r"bert\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
    r"|intermediate\.dense|output\.dense)",
)
NUM_LABELS = 2  # Rotten Tomatoes: rotten / fresh
EMBEDDED_TEXT_SOURCES = {  # the embedded review-classifier testbeds' calibration sources
    "train": "Rotten Tomatoes training sentences",
    "shift": "Wikipedia sentences (gensim test dump): another text domain, no labels",
}


# ----------------------------------------------------------------------------- shared
def arch_config_of(model: BertForSequenceClassification) -> dict[str, Any]:
    """JSON-able description from which `bert_from_config` rebuilds the module tree."""
    return {"config": model.config.to_dict()}


def bert_from_config(arch_config: dict[str, Any]) -> BertForSequenceClassification:
    """Same module names and shapes as the saved model; weights are freshly initialised."""
    from transformers import BertConfig, BertForSequenceClassification
    return BertForSequenceClassification(BertConfig.from_dict(arch_config["config"]))


# ----------------------------------------------------------------------------- embedded data
# Tokenising ~30k sentences takes seconds, so the tensors are cached (resources_dir()/tokens),
# keyed by split and seq_len; the tokenizer is always the embedded MiniLM one.
def _encode_rotten_tomatoes(split: str, seq_len: int) -> dict[str, torch.Tensor]:
    rows = text.rotten_tomatoes_split(split)
    data = text.encode_sentences(minilm.load_tokenizer(), rows["text"], seq_len)
    data["labels"] = torch.tensor(rows["label"], dtype=torch.long)  # (N,)
    return data


@lru_cache(maxsize=4)
def _rotten_tomatoes_tensors(split: str, seq_len: int) -> dict[str, torch.Tensor]:
    name = f"minilm_rotten_tomatoes_{split}_{seq_len}"
    return text.cached_tensor(name, lambda: _encode_rotten_tomatoes(split, seq_len))


@lru_cache(maxsize=2)
def _wikipedia_sentence_tensors(seq_len: int) -> dict[str, torch.Tensor]:
    name = f"minilm_wikipedia_sentences_{seq_len}"
    return text.cached_tensor(
        name, lambda: text.encode_sentences(minilm.load_tokenizer(), text.wikipedia_sentences(), seq_len)
    )


def rotten_tomatoes_rows(options: dict[str, Any]) -> dict[str, int]:
    """ArchSpec.split_rows of the embedded review classifiers."""
    return {"train": text.RT_N_SENTENCES - text.RT_TEST_SIZE, "test": text.RT_TEST_SIZE,
            "shift": text.WIKI_N_SENTENCES}


def load_rotten_tomatoes(options: dict[str, Any], split: str, n: int | None = None, seed: int = 0) -> dict:
    """Rotten Tomatoes `train`/`test` (fixed split: 2,000 test sentences), or `shift`: unlabelled
    Wikipedia sentences, a second domain for calibration. Tokenised at options["seq_len"]."""
    check_split(split, ("train", "test", "shift"), "the Rotten Tomatoes archs")
    seq_len = options["seq_len"]
    if split == "shift":
        data, what = _wikipedia_sentence_tensors(seq_len), "Wikipedia sentences (shift)"
    else:
        data, what = _rotten_tomatoes_tensors(split, seq_len), f"Rotten Tomatoes {split}"
    return text.subset(dict(data), split, n, seed, what)


# ----------------------------------------------------------------------------- bert-tiny
def build_bert_tiny(options: dict[str, Any]) -> tuple[BertForSequenceClassification, dict]:
    """A random 2-layer BERT over the MiniLM vocabulary: a fast fixture for the whole pipeline.
    Option `dropout` (BERT's 0.1): 0 makes a training step independent of how its batch is split
    (over micro-batches or processes, which draw other dropout masks)."""
    from transformers import BertConfig, BertForSequenceClassification
    config = BertConfig(
        vocab_size=len(minilm.load_tokenizer()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max(512, options["seq_len"]),
        num_labels=NUM_LABELS,
        hidden_dropout_prob=float(options["dropout"]),
        attention_probs_dropout_prob=float(options["dropout"]),
    )
    model = BertForSequenceClassification(config)
    return model, arch_config_of(model)


register_arch(
    ArchSpec(
        name="bert-tiny",
        family="bert",
        task="text-cls",
        build_pretrained=build_bert_tiny,
        from_config=bert_from_config,
        load_split=load_rotten_tomatoes,
        targets=BERT_TARGETS,
        options={"seq_len": 32, "n_test": 512, "n_val": 128, "dropout": 0.1},
        defaults={
            "pretrain_steps": 30,
            "pretrain_lr": 1e-3,
            "batch_size": 32,
            "eval_batch_size": 256,
            "prehab_steps": 20,
            "prehab_lr": 1e-3,
            "rehab_steps": 10,
            "rehab_lr": 1e-3,
            "calib_samples": 64,
        },
        calib_sources=EMBEDDED_TEXT_SOURCES,
        split_rows=rotten_tomatoes_rows,
        note="random-weight test fixture (hidden 32, 2 layers); numbers mean nothing",
    )
)


# ----------------------------------------------------------------------------- bert-small
def build_bert_small(options: dict[str, Any]) -> tuple[BertForSequenceClassification, dict]:
    """all-MiniLM-L6-v2 with a fresh 2-way head (head init follows the global torch seed)."""
    model = minilm.load_classifier(NUM_LABELS)
    return model, arch_config_of(model)


register_arch(
    ArchSpec(
        name="bert-small",
        family="bert",
        task="text-cls",
        build_pretrained=build_bert_small,
        from_config=bert_from_config,
        load_split=load_rotten_tomatoes,
        targets=BERT_TARGETS,
        options={"seq_len": 48, "n_test": 2000, "n_val": 1000},
        defaults={
            "pretrain_steps": 250,  # ~82% test accuracy on 2 CPU cores in a few minutes
            "pretrain_lr": 5e-5,
            "batch_size": 32,
            "eval_batch_size": 128,
            "prehab_steps": 60,
            "prehab_lr": 5e-5,
            "rehab_steps": 40,
            "rehab_lr": 1e-4,
            "calib_samples": 256,
        },
        calib_sources=EMBEDDED_TEXT_SOURCES,
        split_rows=rotten_tomatoes_rows,
        note="all-MiniLM-L6-v2 (contrastively tuned 6-layer MiniLM, 22.7M params), not BERT-base",
    )
)


# ----------------------------------------------------------------------------- bert-base
def build_bert_base(options: dict[str, Any]) -> tuple[BertForSequenceClassification, dict]:
    """`options["model"]` (hub name or local folder) with a head of the GLUE task's label count.

    bert-base-uncased has no classifier, so its head is new. A local checkpoint whose head has
    another label count (e.g. an SST-2 model used for MNLI) gets a new head too: transformers'
    load report lists the re-initialised keys.
    """
    from transformers import BertForSequenceClassification
    task = hf_text.glue_task(options["glue_task"])
    model = BertForSequenceClassification.from_pretrained(
        options["model"], num_labels=task.num_labels, ignore_mismatched_sizes=True
    )
    return model, arch_config_of(model)


def load_glue_split(options: dict[str, Any], split: str, n: int | None = None, seed: int = 0) -> dict:
    """GLUE `train`, or `test` = GLUE validation (validation_matched for MNLI).

    Rows are chosen before tokenising, so n=256 from QQP's 364k rows stays cheap. Sentence pairs
    are tokenised as pairs (truncating the longer one first).
    """
    check_split(split, ("train", "test"), "bert-base")
    name, seq_len = options["glue_task"], options["seq_len"]
    task = hf_text.glue_task(name)
    rows = hf_text.load_glue(name, options["data_dir"], split)
    if n is not None:
        rows = rows.select(choose_rows(split, len(rows), n, seed, f"GLUE {name} {split}").tolist())
    columns = [list(rows[c]) for c in task.columns]
    data = text.encode_sentences(hf_text.load_tokenizer(options["model"]), columns[0], seq_len, *columns[1:])
    labels = torch.tensor(list(rows["label"]), dtype=torch.long)  # (N,)
    bad = labels[(labels < 0) | (labels >= task.num_labels)]
    if len(bad):
        raise UsageError(
            f"GLUE {name} {split} has labels {sorted(set(bad.tolist()))} outside 0..{task.num_labels - 1} "
            "(hidden test labels?); use the train or validation split"
        )
    data["labels"] = labels
    return data


# About one epoch at batch 32 (three for the small tasks, as usual for GLUE fine-tuning).
GLUE_PRETRAIN_STEPS = {"sst2": 2000, "mnli": 12000, "qnli": 3300, "qqp": 11400, "cola": 800, "mrpc": 350,
                       "rte": 240}


def glue_metric(options: dict[str, Any]) -> str:
    """ArchSpec.metric of bert-base: the GLUE task's own."""
    return hf_text.glue_task(options["glue_task"]).metric


def bert_base_name(task: str) -> str:
    """`bert-base` is SST-2 (its name before the other tasks came); every other GLUE task has its
    own name, so one workflow config runs several tasks side by side (folders, tables, plots)."""
    return "bert-base" if task == "sst2" else f"bert-base-{task}"


for _task, _steps in GLUE_PRETRAIN_STEPS.items():
    register_arch(
        ArchSpec(
            name=bert_base_name(_task),
            family="bert",
            task="text-cls",
            build_pretrained=build_bert_base,
            from_config=bert_from_config,
            load_split=load_glue_split,
            targets=BERT_TARGETS,
            options={"model": "bert-base-uncased", "glue_task": _task, "data_dir": "", "seq_len": 128},
            defaults={
                "pretrain_steps": _steps,
                "pretrain_lr": 2e-5,
                "batch_size": 32,
                "eval_batch_size": 128,
                "prehab_steps": 500,
                "prehab_lr": 2e-5,
                "rehab_steps": 500,
                "rehab_lr": 1e-4,
                "calib_samples": 256,
            },
            calib_sources={"train": "the GLUE task's training split"},
            note=f"paper scale: bert-base-uncased fine-tuned on GLUE {_task} (needs the hub or a local copy)",
            metric=glue_metric,
        )
    )
