"""Bring-your-own-model architectures (hf-causal-lm, hf-seq-cls, timm-image-cls) on tiny local
models and data written by the tests: generic targets (GQA included), tied embeddings through
every step, data options, refusals, and pretrain -> calibrate -> prehab -> compress -> evaluate
through the `prehab` CLI, and through the Snakemake workflow from config/own-models.yaml. The
network is cut (tests/test_paper_loaders_language.py's fixture).
"""

from __future__ import annotations

import json
import math
import re
import subprocess

import pytest
import torch
import torch.nn as nn
import yaml
from own_model_fixtures import (causal_lm_options, corpus_splits, image_folder, seq_cls_options,  # noqa: F401
                                timm_options, tiny_causal_lm, tiny_seq_cls, tiny_timm, write_own_models)
from test_paper_loaders_language import datasets_cache, no_network  # noqa: F401  (autouse fixtures)
from workflow_env import BIN, DEFAULT_CONFIG, ENV, REPO, read_csv

from prehab import checkpoint
from prehab.archs.own_models import BLOCK_LINEARS
from prehab.cli import main
from prehab.errors import UsageError
from prehab.registry import get_arch

OWN = ("hf-causal-lm", "hf-seq-cls", "timm-image-cls")


def _targets(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.fullmatch(BLOCK_LINEARS, n)}


def _built(arch: str, options: dict[str, str]):
    spec = get_arch(arch)
    return spec, spec.build_pretrained(spec.resolve_options(options))


# ----------------------------------------------------------------------------- registry, listing
def test_prehab_archs_lists_the_own_model_archs_with_their_options(capsys):
    table = main(["archs", "--json"]) or json.loads(capsys.readouterr().out)
    expected = {"hf-causal-lm": ("lm", "perplexity", "data"), "hf-seq-cls": ("text-cls", "accuracy", "data"),
                "timm-image-cls": ("image-cls", "accuracy", "data_dir")}
    for name, (task, metric, data_key) in expected.items():
        info = table[name]
        assert (info["task"], info["metric"]) == (task, metric)
        assert info["options"]["model"] == "" and data_key in info["options"] and "n_val" in info["options"]
        assert "model=" in info["note"]


@pytest.mark.parametrize("arch", OWN)
def test_a_missing_model_option_is_refused_naming_it(arch):
    spec = get_arch(arch)
    with pytest.raises(UsageError, match="model="):
        spec.build_pretrained(spec.resolve_options({}))


# ----------------------------------------------------------------------------- targets
def test_causal_lm_targets_every_block_linear_with_narrow_gqa_projections(causal_lm_options):
    _, (model, _) = _built("hf-causal-lm", causal_lm_options)
    names = _targets(model)
    per_layer = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    assert names == {f"model.layers.{i}.{p}" for i in range(2) for p in per_layer}
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.out_features == attn.v_proj.out_features == attn.q_proj.out_features // 2  # GQA 4/2
    assert "lm_head" not in names and model.lm_head.weight is model.model.embed_tokens.weight  # tied


def test_seq_cls_targets_the_encoder_not_pooler_or_classifier(seq_cls_options):
    _, (model, _) = _built("hf-seq-cls", seq_cls_options)
    names = _targets(model)
    assert len(names) == 2 * 6 and all(n.startswith("bert.encoder.layer.") for n in names)
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert linears - names == {"bert.pooler.dense", "classifier"}


def test_timm_targets_the_blocks_not_the_head(timm_options):
    _, (model, _) = _built("timm-image-cls", timm_options)
    names = _targets(model)
    assert names == {f"blocks.{i}.{p}" for i in range(2) for p in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    assert model.num_classes == 3  # counted from the class folders


def test_a_model_without_block_linears_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(tmp_path)
    spec = get_arch("hf-causal-lm")
    with pytest.raises(UsageError, match="no nn.Linear inside a numbered block"):
        spec.build_pretrained(spec.resolve_options({"model": str(tmp_path)}))


# ----------------------------------------------------------------------------- from_config
@pytest.mark.parametrize("arch, fixture", [("hf-causal-lm", "causal_lm_options"), ("hf-seq-cls", "seq_cls_options"),
                                           ("timm-image-cls", "timm_options")])
def test_from_config_rebuilds_the_tree_from_json(arch, fixture, request):
    spec, (model, config) = _built(arch, request.getfixturevalue(fixture))
    rebuilt = spec.from_config(json.loads(json.dumps(config)))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    if arch == "hf-causal-lm":
        assert rebuilt.lm_head.weight is rebuilt.model.embed_tokens.weight


# ----------------------------------------------------------------------------- data
def test_one_text_file_is_cut_into_train_and_test_windows(causal_lm_options):
    spec = get_arch("hf-causal-lm")
    opts = spec.resolve_options({**causal_lm_options, "test_fraction": "0.25"})
    train, test = (spec.load_split(opts, s)["input_ids"] for s in ("train", "test"))
    assert train.shape[1] == test.shape[1] == 16
    assert len(test) == round(0.25 * (len(train) + len(test)))
    assert spec.load_split(opts, "test", 3)["input_ids"].equal(test[:3])  # test: the first n, fixed


def test_a_dataset_with_splits_reads_each_split(causal_lm_options, corpus_splits):
    spec = get_arch("hf-causal-lm")
    opts = spec.resolve_options({**causal_lm_options, "data": str(corpus_splits), "test_split": "validation"})
    train, test = (spec.load_split(opts, s)["input_ids"] for s in ("train", "test"))
    assert len(train) > 2 * len(test) > 0  # train holds four times test's rows
    bad = spec.resolve_options({**causal_lm_options, "data": str(corpus_splits), "text_column": "body"})
    with pytest.raises(UsageError, match="'body'"):
        spec.load_split(bad, "train")


def test_seq_cls_rows_labels_and_counted_classes(seq_cls_options):
    spec = get_arch("hf-seq-cls")
    opts = spec.resolve_options(seq_cls_options)
    train, test = spec.load_split(opts, "train"), spec.load_split(opts, "test", 5)
    assert train["input_ids"].shape == train["attention_mask"].shape == (48, 16)
    assert test["labels"].tolist() == [i % 3 for i in range(5)]
    assert spec.load_split(opts, "train", 8, seed=1)["labels"].shape == (8,)
    _, (model, _) = _built("hf-seq-cls", seq_cls_options)
    assert model.config.num_labels == 3  # counted from the ClassLabel, the saved 2-way head replaced
    few = spec.resolve_options({**seq_cls_options, "num_labels": "2"})
    with pytest.raises(UsageError, match="outside 0..1"):
        spec.load_split(few, "train")


def test_a_decoder_classifier_gets_a_pad_token_and_keeps_its_score_head_dense(tiny_causal_lm, seq_cls_options,
                                                                              tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from prehab import tasks

    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)  # a fresh copy: the cached one is shared
    tokenizer.pad_token = None
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, num_labels=3)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    options = {**seq_cls_options, "model": str(tmp_path)}
    spec, (model, _) = _built("hf-seq-cls", options)
    assert model.config.pad_token_id == tokenizer.eos_token_id  # decoders find each row's end by it
    assert "score" not in _targets(model) and len(_targets(model)) == 7
    batch = spec.load_split(spec.resolve_options(options), "test", 4)
    assert tasks.forward(model, "text-cls", batch).shape == (4, 3)


def test_timm_reads_the_image_folder_at_the_models_size(timm_options):
    spec = get_arch("timm-image-cls")
    opts = spec.resolve_options(timm_options)
    data = spec.load_split(opts, "test")
    assert data["pixel_values"].shape == (12, 3, 32, 32) and set(data["labels"].tolist()) == {0, 1, 2}
    with pytest.raises(UsageError, match="does not exist"):
        spec.load_split(spec.resolve_options({**timm_options, "data_dir": "/nonexistent"}), "train")


# ----------------------------------------------------------------------------- end to end (CLI)
def _chain(arch: str, options: dict[str, str], root, pretrain_steps: int) -> dict:
    """pretrain -> calibrate -> prehab -> compress -> evaluate through `prehab`: {step: folder}."""
    opt = [f"--arch-opt={k}={v}" for k, v in options.items()]
    out = {s: root / s for s in ("dense", "grams", "prehab", "cut", "eval")}
    steps = [
        ["pretrain", "--arch", arch, *opt, "--steps", str(pretrain_steps), "--batch-size", "4", "--out", out["dense"]],
        ["calibrate", "--model", out["dense"], "--samples", "8", "--out", out["grams"]],
        ["prehab", "--model", out["dense"], "--grams", out["grams"], "--steps", "2", "--batch-size", "4",
         "--lam", "1.0", "--out", out["prehab"]],
        ["compress", "--model", out["prehab"], "--grams", out["grams"], "--ratio", "0.5", "--out", out["cut"]],
        ["evaluate", "--model", out["cut"], "--out", out["eval"]],
    ]
    for argv in steps:
        assert main([str(a) for a in argv]) == 0, argv[0]
    return out


def _metrics(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())["metrics"]


def test_causal_lm_end_to_end_and_lora_keep_the_tied_head_untouched(causal_lm_options, tmp_path):
    out = _chain("hf-causal-lm", causal_lm_options, tmp_path, pretrain_steps=0)
    assert math.isfinite(_metrics(out["eval"])["perplexity"]) and _metrics(out["eval"])["perplexity"] > 1
    before, after = checkpoint.load(out["prehab"]).model, checkpoint.load(out["cut"])
    assert len(after.factorized) == 14
    attn = after.model.model.layers[0].self_attn
    assert after.factorized["model.layers.0.self_attn.k_proj"] <= attn.k_proj.out_features == 16  # narrow GQA
    assert after.model.lm_head.weight is after.model.model.embed_tokens.weight  # still tied after save/load
    assert torch.equal(after.model.lm_head.weight, before.model.embed_tokens.weight)  # compress left it alone
    assert "lm_head" not in after.factorized
    lora = tmp_path / "lora"  # LoRA recovery trains the factor layers only: the tie and the head hold
    assert main(["rehab", "--model", str(out["cut"]), "--steps", "2", "--batch-size", "4", "--out", str(lora)]) == 0
    recovered = checkpoint.load(lora).model
    assert recovered.lm_head.weight is recovered.model.embed_tokens.weight
    assert torch.equal(recovered.lm_head.weight, before.model.embed_tokens.weight)


def test_seq_cls_end_to_end(seq_cls_options, tmp_path):
    out = _chain("hf-seq-cls", seq_cls_options, tmp_path, pretrain_steps=2)
    assert 0 <= _metrics(out["eval"])["accuracy"] <= 1
    assert len(checkpoint.load(out["cut"]).factorized) == 12


def test_timm_end_to_end(timm_options, tmp_path):
    out = _chain("timm-image-cls", timm_options, tmp_path, pretrain_steps=2)
    assert 0 <= _metrics(out["eval"])["accuracy"] <= 1
    assert len(checkpoint.load(out["cut"]).factorized) == 8


# ----------------------------------------------------------------------------- the workflow
OWN_CONFIG = REPO / "config" / "own-models.yaml"
# Over config/own-models.yaml: a few steps and rows, Prehab at one lambda, no recalibration.
TINY_OVERLAY = {
    "arch_settings": {
        "hf-causal-lm": {"prehab_steps": 2, "batch_size": 4, "calib_samples": 16,
                         "arch_opts": {"seq_len": 16, "n_val": 8}},
        "hf-seq-cls": {"pretrain_steps": 2, "prehab_steps": 2, "batch_size": 4, "calib_samples": 16,
                       "arch_opts": {"seq_len": 16, "n_val": 8}},
        "timm-image-cls": {"prehab_steps": 2, "batch_size": 4, "calib_samples": 8, "arch_opts": {"n_val": 4}},
    },
    "prehab": {"recalibrate": False, "log_every": 1},
    "studies": {"main": {"methods": ["dense", "svd-llm", "prehab"], "ratios": [0.5],
                         "prehab": {"surrogate": ["nuclear"], "lam": [1.0], "space": ["weight"], "recipes": []}}},
}


def _snakemake(workdir, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(DEFAULT_CONFIG), str(OWN_CONFIG), *args]
    return subprocess.run(cmd, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_own_models_config_plans_every_arch(tmp_path):
    # per arch: dense; control and Prehab at lambda 1 and 10, each recalibrated; SVD-LLM of all four
    proc = _snakemake(tmp_path, "--dry-run", "--quiet", "rules")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rule, per_arch in {"pretrain": 1, "calibrate": 1, "prehab": 3, "recalibrate": 3, "compress_svd_llm": 4,
                           "evaluate": 4}.items():
        assert re.search(rf"^{rule}\s+{3 * per_arch}$", proc.stdout, re.M), (rule, proc.stdout)


@pytest.mark.slow
def test_own_models_run_through_the_workflow_with_no_code(tmp_path):
    """config/own-models.yaml as committed, the tiny models at the paths it names, an overlay of
    step counts and sizes: every arch reaches the report, with finite metrics."""
    work = tmp_path / "work"
    write_own_models(work / "own-models")
    overlay = tmp_path / "tiny.yaml"
    overlay.write_text(yaml.safe_dump(TINY_OVERLAY))
    proc = _snakemake(work, str(overlay), "--cores", "2", timeout=3600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    main_rows = read_csv(work / "results" / "own-models-run" / "tables" / "main.csv")
    seen = {(r["arch"], r["method"], r["compressed"]) for r in main_rows}
    assert seen == {(arch, method, compressed) for arch in OWN
                    for method, compressed in (("dense", "False"), ("prehab", "False"), ("svd-llm", "True"),
                                               ("prehab", "True"))}
    for row in main_rows:
        assert math.isfinite(float(row["mean"])) and math.isfinite(float(row["val_mean"])), row  # n_val held out
