"""Paper-scale text data through `datasets`: GLUE (BERT rows), WikiText-2 / C4 (LLaMA rows), and
the paper models' tokenizers.

Each loader reads either the Hugging Face Hub (`data_dir=""`, needs network or a warm HF cache)
or a local folder, so a cluster without hub access can point at a mirror. A local folder is
either a `Dataset.save_to_disk` / `DatasetDict.save_to_disk` folder, or a folder holding one file
per split named `<split>.<ext>` (ext: csv, json, jsonl, json.gz, jsonl.gz, parquet, txt, raw).
Nothing here falls back from one source to another: a missing split or file is a UsageError.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from prehab.data.splits import check_split
from prehab.errors import UsageError

# ---------------------------------------------------------------------------- local folders
# File suffix -> `datasets` builder. Text files keep their line breaks so that joining rows
# reproduces the hub's WikiText rows (each row is one raw line including its "\n").
FILE_BUILDERS = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".json.gz": "json",
    ".jsonl.gz": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".raw": "text",
}


def _split_file(folder: Path, split: str) -> tuple[Path, str]:
    """The one `<split>.<ext>` file in `folder` and its builder name."""
    found = [(folder / f"{split}{ext}", builder) for ext, builder in FILE_BUILDERS.items()]
    found = [(path, builder) for path, builder in found if path.is_file()]
    if len(found) != 1:
        present = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        how = "no" if not found else "more than one"
        raise UsageError(
            f"{folder} has {how} file for split {split!r}; expected exactly one of "
            f"{', '.join(split + ext for ext in FILE_BUILDERS)} (or a save_to_disk folder). Found: {present}"
        )
    return found[0]


def load_local_split(data_dir: str, split: str):
    """One split of a local dataset folder as a `datasets.Dataset` (never touches the hub)."""
    import datasets

    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise UsageError(f"data_dir={data_dir!r} is not a folder")
    if (folder / "dataset_dict.json").exists():
        saved = datasets.load_from_disk(str(folder))
        if split not in saved:
            raise UsageError(f"{folder} has splits {sorted(saved)}, not {split!r}")
        return saved[split]
    if (folder / split / "dataset_info.json").exists():
        return datasets.load_from_disk(str(folder / split))
    path, builder = _split_file(folder, split)
    extra = {"keep_linebreaks": True} if builder == "text" else {}
    return datasets.load_dataset(builder, data_files={split: str(path)}, split=split, **extra)


# ---------------------------------------------------------------------------- tokenizers
@lru_cache(maxsize=4)
def load_tokenizer(model: str):
    """The tokenizer of a hub name or local model folder, cached: every load_split call needs it."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model)


# ---------------------------------------------------------------------------- GLUE
@dataclass(frozen=True)
class GlueTask:
    """Columns and label count of one GLUE task; `test_split` is the scored (validation) split;
    `metric` the task's standard one (GLUE's: F1 of the positive class for MRPC and QQP, whose
    accuracy is reported beside it, Matthews correlation for CoLA, accuracy elsewhere)."""

    columns: tuple[str, ...]
    num_labels: int
    test_split: str = "validation"
    metric: str = "accuracy"


GLUE_HUB = "nyu-mll/glue"
GLUE_TASKS = {
    "cola": GlueTask(("sentence",), 2, metric="mcc"),
    "sst2": GlueTask(("sentence",), 2),
    "mrpc": GlueTask(("sentence1", "sentence2"), 2, metric="f1"),
    "qqp": GlueTask(("question1", "question2"), 2, metric="f1"),
    "mnli": GlueTask(("premise", "hypothesis"), 3, "validation_matched"),
    "qnli": GlueTask(("question", "sentence"), 2),
    "rte": GlueTask(("sentence1", "sentence2"), 2),
}
# GLUE tasks that exist but that no classification metric (prehab.method.metrics) can score.
GLUE_UNSUPPORTED = {"stsb": "a regression task (similarity scores, scored by correlation), not classification"}


def glue_task(name: str) -> GlueTask:
    if name in GLUE_UNSUPPORTED:
        raise UsageError(f"glue_task={name!r} is not supported: it is {GLUE_UNSUPPORTED[name]}")
    if name not in GLUE_TASKS:
        raise UsageError(f"glue_task={name!r} is unknown; allowed: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[name]


def glue_split_name(task: str, split: str) -> str:
    """prehab split -> GLUE split: `test` is GLUE validation (GLUE test labels are hidden)."""
    names = {"train": "train", "test": glue_task(task).test_split}
    check_split(split, tuple(names), f"GLUE {task}")
    return names[split]


def load_glue(task: str, data_dir: str, split: str):
    """One GLUE split as a `datasets.Dataset` with the task's text columns and `label`."""
    import datasets

    spec, name = glue_task(task), glue_split_name(task, split)
    if data_dir:
        data = load_local_split(data_dir, name)
    else:
        data = datasets.load_dataset(GLUE_HUB, task, split=name)
    missing = [c for c in (*spec.columns, "label") if c not in data.column_names]
    if missing:
        raise UsageError(f"GLUE {task} {name} data has columns {data.column_names}; missing {missing}")
    return data


# ---------------------------------------------------------------------------- WikiText-2 / C4
@dataclass(frozen=True)
class LMSource:
    """How one paper LM corpus becomes a token stream (conventions of SVD-LLM / GPTQ).

    Attributes:
        hub: (path, config name) for `datasets.load_dataset`.
        hub_files: split -> data file inside the hub repo (C4 is read one shard per split).
        splits: prehab split -> split name of the source.
        separator: rows are joined with this before tokenising (WikiText "\\n\\n", C4 " ").
        max_docs: split -> rows kept from the start (C4 shards are far larger than needed).
        max_windows: split -> windows kept from the start (C4 test: 256 windows, as GPTQ).
    """

    hub: tuple[str, str | None]
    splits: dict[str, str]
    separator: str
    hub_files: dict[str, str] | None = None
    max_docs: dict[str, int] | None = None
    max_windows: dict[str, int] | None = None


LM_SOURCES = {
    "wikitext2": LMSource(
        hub=("Salesforce/wikitext", "wikitext-2-raw-v1"),
        splits={"train": "train", "test": "test"},
        separator="\n\n",
    ),
    "c4": LMSource(
        hub=("allenai/c4", None),
        hub_files={
            "train": "en/c4-train.00000-of-01024.json.gz",
            "validation": "en/c4-validation.00000-of-00008.json.gz",
        },
        splits={"train": "train", "test": "validation"},
        separator=" ",
        # 1,100 validation documents and 256 windows are the GPTQ / SVD-LLM C4 test set; 20,000
        # training documents (~10M tokens) are ample for 256 calibration windows of 2,048.
        max_docs={"train": 20_000, "validation": 1_100},
        max_windows={"validation": 256},
    ),
}


def lm_source(name: str) -> LMSource:
    if name not in LM_SOURCES:
        raise UsageError(f"dataset={name!r} is unknown; allowed: {', '.join(LM_SOURCES)}")
    return LM_SOURCES[name]


def load_lm_rows(name: str, data_dir: str, split: str) -> list[str]:
    """The `text` rows of one split of a paper LM corpus (hub or local folder)."""
    import datasets

    source = lm_source(name)
    check_split(split, tuple(source.splits), name)
    part = source.splits[split]
    if data_dir:
        data = load_local_split(data_dir, part)
    elif source.hub_files:
        data = datasets.load_dataset(source.hub[0], data_files={part: source.hub_files[part]}, split=part)
    else:
        data = datasets.load_dataset(*source.hub, split=part)
    if "text" not in data.column_names:
        raise UsageError(f"{name} {part} data has columns {data.column_names}; a 'text' column is required")
    limit = (source.max_docs or {}).get(part)
    if limit:
        data = data.select(range(min(limit, len(data))))
    return list(data["text"])


def lm_windows(name: str, data_dir: str, split: str, tokenizer, seq_len: int) -> torch.Tensor:
    """(N, seq_len) non-overlapping windows of the split's token stream.

    As SVD-LLM does, the rows are joined by the corpus separator and tokenised once with the
    tokenizer's special tokens (one BOS at the very start for LLaMA).
    """
    from prehab.data.text import windows

    source = lm_source(name)
    text = source.separator.join(load_lm_rows(name, data_dir, split))
    stream = torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)
    out = windows(stream, seq_len)
    limit = (source.max_windows or {}).get(source.splits[split])
    return out[:limit] if limit else out
