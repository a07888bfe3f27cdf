"""Language architectures on embedded data: registry entries, builds, from_config round trips,
split rules, corpus sizes and target-layer counts.

Offline by construction (HF_HUB_OFFLINE=1): MiniLM, SmolLM2 and every corpus ship inside
installed packages. The first ever run converts SmolLM2's GGUF file and tokenises the corpora
(~40 s, cached in resources/); later runs take seconds.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn as nn

from prehab import tasks
from prehab.data import splits, text
from prehab.errors import UsageError
from prehab.registry import arch_names, get_arch

LANGUAGE = ("bert-tiny", "bert-small", "bert-base", "llama-tiny", "llama-small", "llama-7b")
TINY = ("bert-tiny", "llama-tiny")
EMBEDDED = ("bert-tiny", "bert-small", "llama-tiny", "llama-small")
EXPECTED_TARGETS = {"bert-tiny": 12, "bert-small": 36, "llama-tiny": 14, "llama-small": 210}
# Linear layers the targets must leave dense (heads), per family.
DENSE_LINEARS = {"bert": {"bert.pooler.dense", "classifier"}, "llama": {"lm_head"}}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _spec_opts(name: str, **overrides):
    spec = get_arch(name)
    return spec, spec.resolve_options({k: str(v) for k, v in overrides.items()})


def _linear_names(model: nn.Module) -> set[str]:
    return {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def _targeted(model: nn.Module, patterns) -> set[str]:
    return {name for name in _linear_names(model) if any(re.fullmatch(p, name) for p in patterns)}


def _meta_model(name: str) -> nn.Module:
    """The arch's module tree on the meta device: names and shapes without weights or init cost."""
    spec, opts = _spec_opts(name)
    if name == "llama-small":
        from transformers import LlamaConfig

        from prehab.weights import smollm2

        config = {"config": LlamaConfig.from_pretrained(smollm2.ensure_cache()).to_dict()}
    elif name == "bert-small":
        from transformers import BertConfig

        from prehab.weights import minilm

        config = {"config": BertConfig.from_pretrained(minilm.model_dir(), num_labels=2).to_dict()}
    else:
        with torch.device("meta"):
            return spec.build_pretrained(opts)[0]
    with torch.device("meta"):
        return spec.from_config(config)


# ----------------------------------------------------------------------------- registry
def test_registry_has_the_six_language_archs():
    assert set(LANGUAGE) <= set(arch_names())
    for name in LANGUAGE:
        spec = get_arch(name)
        assert spec.family == name.split("-")[0]
        assert spec.task == ("text-cls" if spec.family == "bert" else "lm")
        assert spec.note, f"{name} needs a note"
        assert set(spec.defaults) >= {
            "pretrain_steps", "pretrain_lr", "batch_size", "eval_batch_size",
            "prehab_steps", "prehab_lr", "rehab_steps", "rehab_lr", "calib_samples",
        }  # fmt: skip


def test_paper_scale_options_are_the_documented_knobs():
    assert get_arch("bert-base").options == {
        "model": "bert-base-uncased", "glue_task": "sst2", "data_dir": "", "seq_len": 128,
    }  # fmt: skip
    assert get_arch("llama-7b").options == {
        "model": "huggyllama/llama-7b", "dataset": "wikitext2", "data_dir": "",
        "seq_len": 2048, "torch_dtype": "float32", "extra_test": "", "extra_test_dir": "",
    }  # fmt: skip
    assert get_arch("bert-base-cola").options == {**get_arch("bert-base").options, "glue_task": "cola"}
    assert get_arch("bert-small").options == {"seq_len": 48, "n_test": 2000, "n_val": 1000}


# ----------------------------------------------------------------------------- builds
@pytest.mark.parametrize("name", TINY)
def test_tiny_arch_gives_logits_of_the_right_shape(name):
    spec, opts = _spec_opts(name)
    torch.manual_seed(0)
    model, _ = spec.build_pretrained(opts)
    batch = spec.load_split(opts, "train", 4, seed=0)
    logits = tasks.forward(model.eval(), spec.task, batch)
    if spec.task == "text-cls":
        assert logits.shape == (4, 2)
    else:
        assert logits.shape == (4, opts["seq_len"], model.config.vocab_size)
    assert torch.isfinite(tasks.loss(model, spec.task, batch))


@pytest.mark.parametrize("name", (*TINY, "bert-small"))
def test_from_config_rebuilds_the_same_tree_from_json(name):
    spec, opts = _spec_opts(name)
    model, arch_config = spec.build_pretrained(opts)
    rebuilt = spec.from_config(json.loads(json.dumps(arch_config)))  # must survive JSON
    assert type(rebuilt) is type(model)
    ref, new = model.state_dict(), rebuilt.state_dict()
    assert list(new) == list(ref)
    assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in ref.items()}
    rebuilt.load_state_dict(ref)
    batch = spec.load_split(opts, "test", 2, seed=0)
    torch.testing.assert_close(
        tasks.forward(rebuilt.eval(), spec.task, batch), tasks.forward(model.eval(), spec.task, batch)
    )


def test_llama_small_from_config_matches_the_cached_model_keys():
    spec, opts = _spec_opts("llama-small")
    model, arch_config = spec.build_pretrained(opts)
    assert arch_config["torch_dtype"] == "float32"
    assert "quantization_config" not in arch_config["config"]
    with torch.device("meta"):
        rebuilt = spec.from_config(json.loads(json.dumps(arch_config)))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


@pytest.mark.parametrize("name", EMBEDDED)
def test_targets_match_the_expected_linears(name):
    spec = get_arch(name)
    model = _meta_model(name)
    targeted = _targeted(model, spec.targets)
    assert len(targeted) == EXPECTED_TARGETS[name]
    assert _linear_names(model) - targeted == DENSE_LINEARS[spec.family]


# ----------------------------------------------------------------------------- split rules
@pytest.mark.parametrize("name", TINY)
def test_splits_are_deterministic_and_seeded(name):
    spec, opts = _spec_opts(name)
    for split in ("train", "shift"):
        a = spec.load_split(opts, split, 16, seed=3)
        b = spec.load_split(opts, split, 16, seed=3)
        c = spec.load_split(opts, split, 16, seed=4)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not torch.equal(a["input_ids"], c["input_ids"])
    # test: the first n rows of one fixed order, whatever the seed
    full = spec.load_split(opts, "test", None, seed=0)
    first = spec.load_split(opts, "test", 10, seed=99)
    assert all(torch.equal(first[k], full[k][:10]) for k in first)


@pytest.mark.parametrize("name", TINY)
def test_too_large_n_and_unknown_split_raise(name):
    spec, opts = _spec_opts(name)
    available = tasks.num_rows(spec.load_split(opts, "test", None, seed=0))
    with pytest.raises(UsageError, match=rf"n={available + 1}.*only {available}"):
        spec.load_split(opts, "test", available + 1, seed=0)
    with pytest.raises(UsageError, match="allowed: train, test, shift"):
        spec.load_split(opts, "validation", 4, seed=0)


def test_negative_n_is_refused_for_every_split():
    for split in ("train", "test", "shift"):
        with pytest.raises(UsageError, match=r"n=-1 rows requested from five rows .*only 5"):
            splits.choose_rows(split, 5, -1, 0, "five rows")


@pytest.mark.parametrize("name", ("bert-base", "llama-7b"))
def test_paper_archs_offer_no_shift_source(name):
    spec, opts = _spec_opts(name)
    assert set(spec.calib_sources) == {"train"}
    with pytest.raises(UsageError, match="allowed: train, test"):
        spec.load_split(opts, "shift", 4, seed=0)


def test_text_cls_split_tensors_follow_the_task_contract():
    spec, opts = _spec_opts("bert-tiny", seq_len=16)
    data = spec.load_split(opts, "train", 8, seed=0)
    assert set(data) == {"input_ids", "attention_mask", "labels"}
    assert data["input_ids"].shape == data["attention_mask"].shape == (8, 16)
    assert data["labels"].shape == (8,)
    assert all(v.dtype == torch.long for v in data.values())
    shift = spec.load_split(opts, "shift", 8, seed=0)
    assert set(shift) == {"input_ids", "attention_mask"}  # unlabelled second domain


def test_lm_windows_are_non_overlapping_cuts_of_one_stream():
    spec, opts = _spec_opts("llama-tiny")
    t = opts["seq_len"]
    ids = spec.load_split(opts, "test", None, seed=0)["input_ids"]
    longer = spec.load_split(dict(opts, seq_len=2 * t), "test", None, seed=0)["input_ids"]
    assert ids.dtype == torch.long and ids.shape[1] == t
    # The same stream cut twice: the 2T windows are pairs of consecutive T windows.
    assert torch.equal(longer.reshape(-1), ids[: 2 * len(longer)].reshape(-1))


# ----------------------------------------------------------------------------- corpora
def test_rotten_tomatoes_has_12752_sentences_and_a_fixed_split():
    data = text.rotten_tomatoes()
    assert len(data["text"]) == 12_752
    assert sum(data["label"]) / len(data["label"]) == pytest.approx(0.578, abs=1e-3)
    train, test = text.rotten_tomatoes_split("train"), text.rotten_tomatoes_split("test")
    assert (len(train["text"]), len(test["text"])) == (10_752, 2_000)
    assert not set(train["text"]) & set(test["text"])
    spec, opts = _spec_opts("bert-small")
    assert tasks.num_rows(spec.load_split(opts, "test", None, seed=0)) == opts["n_test"] == 2000


def test_wikipedia_and_austen_corpora():
    articles = text.wikipedia_articles()
    assert len(articles) == 106
    assert 470_000 < sum(len(a.split()) for a in articles) < 490_000
    test = text.wikipedia_split("test")
    assert len(test) == 11 and not set(test) & set(text.wikipedia_split("train"))
    sentences = text.wikipedia_sentences()
    assert len(sentences) > 10_000 and all(8 <= len(s.split()) <= 60 for s in sentences)
    books = text.jane_austen()
    assert len(books) == 6
    assert 700_000 < sum(len(b.split()) for b in books.values()) < 730_000
    assert books["prideprejudice"].count("Elizabeth") > 500


@pytest.mark.slow
def test_llama_small_perplexity_on_wikipedia_is_sane():
    spec, opts = _spec_opts("llama-small")
    model, _ = spec.build_pretrained(opts)
    from prehab.method.evaluate import task_metrics

    metrics = task_metrics(model, spec.task, spec.load_split(opts, "test", 32, seed=0), batch_size=16)
    assert 10 < metrics["perplexity"] < 60, metrics
