"""Paper-scale language archs (bert-base on GLUE, llama-7b on WikiText-2 / C4) on tiny local
fixtures: random-weight models saved with save_pretrained, a few GLUE-like rows and a few lines of
WikiText / C4 text. Every test runs with the network cut (sockets raise), so passing proves the
local-folder code paths never reach the hub.
"""

from __future__ import annotations

import json
import math
import socket

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from prehab import tasks
from prehab.data import hf_text
from prehab.errors import UsageError
from prehab.registry import get_arch
from prehab.weights import minilm, smollm2

SEQ_LEN = 16
SENTENCES = [
    "a gripping, beautifully shot film",
    "dull and far too long",
    "the cast is wonderful",
    "i wanted my two hours back",
    "an uneven but heartfelt debut",
    "flat jokes and a tired plot",
]


class NetworkTouched(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """HF offline, and any socket connection or DNS lookup fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise NetworkTouched(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """`datasets` writes its Arrow cache under tmp_path, not the user's home."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A random 2-layer BertForSequenceClassification + the MiniLM WordPiece tokenizer."""
    folder = tmp_path_factory.mktemp("bert")
    tokenizer = minilm.load_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A random 2-layer LlamaForCausalLM + the SmolLM2 tokenizer."""
    folder = tmp_path_factory.mktemp("llama")
    tokenizer = smollm2.load_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _write_csv(path, rows):
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.fixture(scope="module")
def glue_dirs(tmp_path_factory):
    """sst2 as csv files, mrpc as a save_to_disk DatasetDict, mnli as jsonl (validation_matched)."""
    import datasets

    root = tmp_path_factory.mktemp("glue")
    sst2 = root / "sst2"
    sst2.mkdir()
    rows = [{"idx": i, "sentence": s, "label": i % 2} for i, s in enumerate(SENTENCES)]
    _write_csv(sst2 / "train.csv", rows)
    _write_csv(sst2 / "validation.csv", rows[:4])

    pairs = {"sentence1": SENTENCES[:4], "sentence2": SENTENCES[2:], "label": [0, 1, 1, 0]}
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(pairs), "validation": datasets.Dataset.from_dict(pairs)}
    ).save_to_disk(str(root / "mrpc"))

    mnli = root / "mnli"
    mnli.mkdir()
    lines = [
        json.dumps({"premise": a, "hypothesis": b, "label": i % 3})
        for i, (a, b) in enumerate(zip(SENTENCES, SENTENCES[1:]))
    ]
    (mnli / "train.jsonl").write_text("\n".join(lines) + "\n")
    (mnli / "validation_matched.jsonl").write_text("\n".join(lines[:3]) + "\n")
    return root


WIKI_LINES = [
    " = Valkyria Chronicles III = \n",
    "\n",
    " Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role @-@ playing video game developed by Sega . \n",
    " The game began development in 2010 , carrying over a large portion of the work done on Valkyria Chronicles II . \n",
    "\n",
    " = = Gameplay = = \n",
    " As with previous Valkyira Chronicles games , Valkyria Chronicles III is a tactical role @-@ playing game . \n",
]
C4_DOCS = [
    "Beginners BBQ Class Taking Place in Missoula! Do you want to get better at making delicious BBQ?",
    "Discussion in 'Mac OS X Lion (10.7)' started by axboi87, Jan 20, 2012. I've got a 500gb internal drive.",
    "Foil plaid lycra and spandex shortall with metallic slinky insets. Attached metallic elastic belt.",
    "How many backlinks per day for new site? Discussion in 'Black Hat SEO' started by Omoplata, Dec 3, 2010.",
]


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory):
    """wikitext2 as raw text files, c4 as jsonl, and wikitext2 again as a save_to_disk folder."""
    import datasets

    root = tmp_path_factory.mktemp("lm")
    wiki = root / "wikitext2"
    wiki.mkdir()
    (wiki / "train.txt").write_text("".join(WIKI_LINES * 4))
    (wiki / "test.txt").write_text("".join(WIKI_LINES * 2))
    c4 = root / "c4"
    c4.mkdir()
    (c4 / "train.jsonl").write_text("".join(json.dumps({"text": d, "url": ""}) + "\n" for d in C4_DOCS * 3))
    (c4 / "validation.jsonl").write_text("".join(json.dumps({"text": d, "url": ""}) + "\n" for d in C4_DOCS))
    saved = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": WIKI_LINES * 4}),
         "test": datasets.Dataset.from_dict({"text": WIKI_LINES * 2})}
    )  # fmt: skip
    saved.save_to_disk(str(root / "wikitext2_saved"))
    return root


def _bert_opts(bert_dir, data_dir, task="sst2"):
    return get_arch("bert-base").resolve_options(
        {"model": str(bert_dir), "data_dir": str(data_dir), "glue_task": task, "seq_len": str(SEQ_LEN)}
    )


def _llama_opts(llama_dir, data_dir, dataset="wikitext2"):
    return get_arch("llama-7b").resolve_options(
        {"model": str(llama_dir), "data_dir": str(data_dir), "dataset": dataset, "seq_len": str(SEQ_LEN)}
    )


# ----------------------------------------------------------------------------- bert-base / GLUE
@pytest.mark.parametrize(
    "task, n_train, n_test, num_labels", [("sst2", 6, 4, 2), ("mrpc", 4, 4, 2), ("mnli", 5, 3, 3)]
)
def test_bert_base_on_local_glue(bert_dir, glue_dirs, task, n_train, n_test, num_labels):
    spec = get_arch("bert-base")
    opts = _bert_opts(bert_dir, glue_dirs / task, task)
    model, arch_config = spec.build_pretrained(opts)
    assert isinstance(model, BertForSequenceClassification)
    assert model.config.num_labels == num_labels
    json.dumps(arch_config)

    train = spec.load_split(opts, "train", None, seed=0)
    test = spec.load_split(opts, "test", None, seed=0)
    assert train["input_ids"].shape == train["attention_mask"].shape == (n_train, SEQ_LEN)
    assert train["labels"].shape == (n_train,) and test["labels"].shape == (n_test,)
    assert int(train["labels"].max()) == num_labels - 1
    assert tasks.forward(model, spec.task, test).shape == (n_test, num_labels)
    with pytest.raises(UsageError, match=rf"n={n_train + 1}.*only {n_train}"):
        spec.load_split(opts, "train", n_train + 1, seed=0)


def test_glue_pairs_are_tokenised_as_pairs(bert_dir, glue_dirs):
    spec = get_arch("bert-base")
    data = spec.load_split(_bert_opts(bert_dir, glue_dirs / "mrpc", "mrpc"), "test", 1, seed=0)
    sep = minilm.load_tokenizer().sep_token_id
    assert int((data["input_ids"][0] == sep).sum()) == 2  # [CLS] a [SEP] b [SEP]


def test_glue_seeded_train_choice(bert_dir, glue_dirs):
    spec = get_arch("bert-base")
    opts = _bert_opts(bert_dir, glue_dirs / "sst2")
    a, b = (spec.load_split(opts, "train", 3, seed=5) for _ in range(2))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])


def test_glue_bad_task_and_missing_files_are_usage_errors(bert_dir, glue_dirs, tmp_path):
    spec = get_arch("bert-base")
    with pytest.raises(UsageError, match="stsb.*not supported.*regression"):
        spec.build_pretrained(_bert_opts(bert_dir, glue_dirs / "sst2", "stsb"))
    with pytest.raises(UsageError, match="glue_task='sst5' is unknown; allowed: cola, sst2"):
        spec.load_split(_bert_opts(bert_dir, glue_dirs / "sst2", "sst5"), "train", 2, seed=0)
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(UsageError, match=r"no file for split 'train'.*Found: notes.txt"):
        spec.load_split(_bert_opts(bert_dir, tmp_path), "train", 2, seed=0)
    with pytest.raises(UsageError, match="missing \\['sentence'\\]"):
        spec.load_split(_bert_opts(bert_dir, glue_dirs / "mrpc", "sst2"), "train", 2, seed=0)


# ----------------------------------------------------------------------------- llama-7b / LM
def _expected_windows(llama_dir, text: str) -> torch.Tensor:
    from transformers import AutoTokenizer

    ids = torch.tensor(AutoTokenizer.from_pretrained(llama_dir)(text)["input_ids"])
    n = len(ids) // SEQ_LEN
    return ids[: n * SEQ_LEN].view(n, SEQ_LEN)


@pytest.mark.parametrize(
    "dataset, folder, test_text",
    [
        ("wikitext2", "wikitext2", "\n\n".join(WIKI_LINES * 2)),
        ("wikitext2", "wikitext2_saved", "\n\n".join(WIKI_LINES * 2)),
        ("c4", "c4", " ".join(C4_DOCS)),
    ],
)
def test_llama_7b_on_local_text(llama_dir, lm_dirs, dataset, folder, test_text):
    spec = get_arch("llama-7b")
    opts = _llama_opts(llama_dir, lm_dirs / folder, dataset)
    model, arch_config = spec.build_pretrained(opts)
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.float32
    rebuilt = spec.from_config(json.loads(json.dumps(arch_config)))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }

    test = spec.load_split(opts, "test", None, seed=0)
    # Rows joined by the corpus separator (as SVD-LLM does), cut into non-overlapping windows.
    assert torch.equal(test["input_ids"], _expected_windows(llama_dir, test_text))
    train = spec.load_split(opts, "train", 3, seed=0)
    assert train["input_ids"].shape == (3, SEQ_LEN) and train["input_ids"].dtype == torch.long
    logits = tasks.forward(model, spec.task, train)
    assert logits.shape == (3, SEQ_LEN, model.config.vocab_size)
    n_test = len(test["input_ids"])
    with pytest.raises(UsageError, match=rf"n={n_test + 1}.*only {n_test}"):
        spec.load_split(opts, "test", n_test + 1, seed=0)


def test_llama_7b_bad_options_are_usage_errors(llama_dir, lm_dirs):
    spec = get_arch("llama-7b")
    with pytest.raises(UsageError, match="dataset='ptb' is unknown; allowed: wikitext2, c4"):
        spec.load_split(_llama_opts(llama_dir, lm_dirs / "wikitext2", "ptb"), "test", 1, seed=0)
    bad_dtype = dict(_llama_opts(llama_dir, lm_dirs / "wikitext2"), torch_dtype="float8")
    with pytest.raises(UsageError, match="torch_dtype='float8' is unknown"):
        spec.build_pretrained(bad_dtype)
    # c4 reads `validation.*` as its test split: a folder with only test.* is an error, not a fallback
    with pytest.raises(UsageError, match="no file for split 'validation'"):
        spec.load_split(_llama_opts(llama_dir, lm_dirs / "wikitext2", "c4"), "test", 1, seed=0)


def test_bf16_build_round_trips_dtype(llama_dir, lm_dirs):
    spec = get_arch("llama-7b")
    opts = dict(_llama_opts(llama_dir, lm_dirs / "wikitext2"), torch_dtype="bfloat16")
    model, arch_config = spec.build_pretrained(opts)
    assert model.dtype == torch.bfloat16 and arch_config["torch_dtype"] == "bfloat16"
    assert spec.from_config(arch_config).dtype == torch.bfloat16


def test_hub_names_are_the_papers():
    assert hf_text.LM_SOURCES["wikitext2"].hub == ("Salesforce/wikitext", "wikitext-2-raw-v1")
    assert hf_text.LM_SOURCES["c4"].max_windows == {"validation": 256}
    assert hf_text.glue_split_name("mnli", "test") == "validation_matched"


def test_a_glue_task_is_evaluated_by_its_own_metric(bert_dir, glue_dirs, tmp_path):
    """bert-base-mrpc reports F1 (GLUE's MRPC metric) with accuracy beside it, per-row
    predictions and labels in its scores for the paired bootstrap."""
    from prehab.method.evaluate import evaluate_model
    from prehab.method.metrics import classification_metric

    spec = get_arch("bert-base-mrpc")
    opts = spec.resolve_options({"model": str(bert_dir), "data_dir": str(glue_dirs / "mrpc"), "seq_len": str(SEQ_LEN)})
    model, _ = spec.build_pretrained(opts)
    (tmp_path / "model.pt").write_bytes(b"x")
    metrics, scores = evaluate_model(model, spec, opts, n_factorized=0, model_file=tmp_path / "model.pt", batch_size=2)
    assert metrics["metric"] == "f1" and 0 <= metrics["f1"] <= 1 and "accuracy" in metrics
    test = scores["test"]
    assert metrics["f1"] == pytest.approx(float(classification_metric("f1", test["predicted"], test["label"])))
    assert test["label"] == spec.load_split(opts, "test", None, 0)["labels"].tolist()


def test_llama_7b_scores_c4_beside_wikitext2(llama_dir, lm_dirs, tmp_path):
    """SVD-LLM's protocol: one model (calibrated on WikiText-2) scored on WikiText-2 test and C4
    validation. The evaluation records both; the report reads C4 as a block `llama-7b:c4` whose
    paired statistics use the C4 rows."""
    from prehab.method.evaluate import evaluate_model
    from prehab.report.collect import extra_arch
    from prehab.report.paired import read_scores, scores_address

    spec = get_arch("llama-7b")
    opts = spec.resolve_options({"model": str(llama_dir), "data_dir": str(lm_dirs / "wikitext2"),
                                 "seq_len": str(SEQ_LEN), "extra_test": "c4", "extra_test_dir": str(lm_dirs / "c4")})
    model, _ = spec.build_pretrained(opts)
    (tmp_path / "model.pt").write_bytes(b"x")
    metrics, scores = evaluate_model(model, spec, opts, n_factorized=0, model_file=tmp_path / "model.pt", batch_size=2)
    assert metrics["extra_tests"] == ["c4"] and math.isfinite(metrics["c4_perplexity"])
    c4_windows = _expected_windows(llama_dir, " ".join(C4_DOCS))
    assert metrics["c4_n_eval"] == len(c4_windows) != metrics["n_eval"]
    assert metrics["c4_perplexity"] != metrics["perplexity"]
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "scores.json").write_text(json.dumps(scores))
    assert read_scores(scores_address(str(tmp_path / "eval"), "c4"))["tokens"] == [SEQ_LEN - 1] * len(c4_windows)
    assert extra_arch("llama-7b", "c4") == "llama-7b:c4"
    with pytest.raises(UsageError, match="dataset='ptb' is unknown"):
        spec.extra_tests({**opts, "extra_test": "ptb"})
