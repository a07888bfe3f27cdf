"""A researcher's own text data on disk, for the bring-your-own-model archs (hf-causal-lm,
hf-seq-cls): one plain text file, one `datasets.Dataset` saved to disk, or a dataset with splits
(a `DatasetDict.save_to_disk` folder or a folder of `<split>.<ext>` files, read by
prehab.data.hf_text.load_local_split). Never the hub: an unknown path is an error, not a download.

A text file or a single saved Dataset is ONE corpus without splits; its LM windows are cut into
train and test by `one_corpus_split`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prehab.data import hf_text
from prehab.errors import UsageError


def local_path(data: str) -> Path:
    path = Path(data).expanduser()
    if not path.exists():
        raise UsageError(f"data={data!r} does not exist (a text file, a saved `datasets` dataset or a folder of "
                         "split files; hub datasets are not read: save_to_disk them first)")
    return path


def is_one_corpus(data: str) -> bool:
    """A text file or a single saved Dataset: rows without train/test splits."""
    path = local_path(data)
    return path.is_file() or (path / "dataset_info.json").is_file()


def load_rows(data: str, split_name: str):
    """`split_name` of a dataset with splits, or every row of a single saved Dataset."""
    path = local_path(data)
    if (path / "dataset_info.json").is_file():
        import datasets

        return datasets.load_from_disk(str(path))
    return hf_text.load_local_split(str(path), split_name)


def column(rows, name: str, data: str) -> list:
    if name not in rows.column_names:
        raise UsageError(f"{data} has columns {rows.column_names}, not {name!r} (set the column option)")
    return list(rows[name])


def corpus_texts(data: str, split_name: str, text_column: str) -> list[str]:
    """The texts of one split: a text file whole, or the `text_column` of the dataset's rows."""
    path = local_path(data)
    if path.is_file():
        return [path.read_text()]
    return [str(t) for t in column(load_rows(data, split_name), text_column, data)]


def one_corpus_split(ids: torch.Tensor, split: str, test_fraction: float, data: str) -> torch.Tensor:
    """Rows of `split` of a corpus without splits: the last `test_fraction` of its windows are
    test (at least one), the rest train. Fixed, seed-free, so every run scores the same windows."""
    if not 0 < test_fraction < 1:
        raise UsageError(f"test_fraction={test_fraction} must lie strictly between 0 and 1")
    n_test = max(1, round(test_fraction * len(ids)))
    if n_test >= len(ids):
        raise UsageError(f"{data} gives {len(ids)} window(s): too few to cut into train and test "
                         "(more text, or a shorter seq_len)")
    return ids[-n_test:] if split == "test" else ids[:-n_test]
