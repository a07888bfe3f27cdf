"""How a training step computes (prehab/compute.py), through the CLI of the three training steps.

- Micro-batches: the accumulated step is the whole batch's step up to rounding (weights within
  1e-5 relative after 5 Prehab steps in the weight and the whitened space, with the exact and
  the lagged estimator; the recorded gradient-norm ratio within 1e-5), and LoRA rehab too.
- Recompute: each block's activations recomputed in the backward pass give the same weights as
  keeping them (llama-tiny Prehab, pretrain and rehab, to 1e-6), and each block does run twice.
- bf16: the task loss of 6 bf16 steps tracks the float32 loss within 5% at every logged step;
  an evaluation with bf16 weights tracks the float32 one (perplexity within 2%, accuracy within
  2 points), says so in metrics.json, and leaves the saved float32 checkpoint as it was.
- The plain step is recorded as before: no compute keys in metrics.json.
"""

from __future__ import annotations

import json

import pytest
import torch

from prehab.cli import main
from prehab.compute import Compute

STEPS = 5


def _run(*argv) -> None:
    assert main([str(a) for a in argv]) == 0


def _weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", weights_only=True)["state_dict"]


def _close(a, b, rtol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        if wa[key].is_floating_point():
            scale = float(wa[key].abs().max()) or 1.0
            assert float((wa[key] - wb[key]).abs().max()) <= rtol * scale, key


def _record(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """llama-tiny: dense (5 pretrain steps), its calibration and its SVD-LLM cut at R 0.5."""
    root = tmp_path_factory.mktemp("compute")
    _run("pretrain", "--arch", "llama-tiny", "--steps", 5, "--batch-size", 4, "--out", root / "dense")
    _run("calibrate", "--model", root / "dense", "--samples", 16, "--out", root / "grams")
    _run("compress", "--model", root / "dense", "--grams", root / "grams", "--method", "svd-llm", "--ratio", 0.5,
         "--out", root / "cut")
    return root


@pytest.mark.parametrize("space,estimator", [("weight", "exact"), ("whitened", "lagged")])
def test_micro_batches_make_the_whole_batch_step(tiny_chain, tmp_path, space, estimator):
    # the whitened space through a damped factor: undamped, W = W0 + D L^-1 multiplies D's last-digit
    # differences by up to 1e5 in the directions tiny-mlp's calibration barely saw (docs/method.md 4.2)
    common = ["prehab", "--model", tiny_chain["dense"], "--grams", tiny_chain["grams"], "--surrogate", "nuclear",
              "--lam", 1, "--lam-scale", "grad", "--space", space, "--estimator", estimator, "--steps", STEPS,
              "--batch-size", 12, *(["--damping", 0.01] if space == "whitened" else [])]
    _run(*common, "--out", tmp_path / "whole")
    _run(*common, "--micro-batches", 3, "--out", tmp_path / "sliced")
    _close(tmp_path / "whole", tmp_path / "sliced", 1e-5)
    whole, sliced = (_record(tmp_path / n) for n in ("whole", "sliced"))
    assert sliced["metrics"]["grad_norm_ratio"] == pytest.approx(whole["metrics"]["grad_norm_ratio"], rel=1e-5)
    assert sliced["params"]["micro_batches"] == 3 and "micro_batches" not in whole["params"]
    for a, b in zip(whole["curve"], sliced["curve"]):
        assert b["task_loss"] == pytest.approx(a["task_loss"], rel=1e-5)


def test_micro_batches_in_lora_rehab(llama, tmp_path):
    common = ["rehab", "--model", llama / "cut", "--steps", 3, "--batch-size", 4, "--dropout", 0]
    _run(*common, "--out", tmp_path / "whole")
    _run(*common, "--micro-batches", 2, "--out", tmp_path / "sliced")
    _close(tmp_path / "whole", tmp_path / "sliced", 1e-5)


def test_recompute_gives_the_same_weights(llama, tmp_path):
    prehab = ["prehab", "--model", llama / "dense", "--grams", llama / "grams", "--surrogate", "nuclear", "--lam", 1,
              "--space", "whitened", "--estimator", "lagged", "--steps", 3, "--batch-size", 4]
    _run(*prehab, "--out", tmp_path / "kept")
    _run(*prehab, "--recompute", "--out", tmp_path / "recomputed")
    _close(tmp_path / "kept", tmp_path / "recomputed", 1e-6)
    assert _record(tmp_path / "recomputed")["params"]["recompute"] is True
    pretrain = ["pretrain", "--arch", "llama-tiny", "--steps", 3, "--batch-size", 4]
    _run(*pretrain, "--out", tmp_path / "p-kept")
    _run(*pretrain, "--recompute", "--out", tmp_path / "p-recomputed")
    _close(tmp_path / "p-kept", tmp_path / "p-recomputed", 1e-6)
    rehab = ["rehab", "--model", llama / "cut", "--steps", 2, "--batch-size", 4, "--dropout", 0]
    _run(*rehab, "--out", tmp_path / "r-kept")
    _run(*rehab, "--recompute", "--out", tmp_path / "r-recomputed")
    _close(tmp_path / "r-kept", tmp_path / "r-recomputed", 1e-6)


def test_bf16_tracks_float32(tmp_path):
    common = ["pretrain", "--arch", "llama-tiny", "--steps", 6, "--batch-size", 4]
    _run(*common, "--out", tmp_path / "f32")
    _run(*common, "--precision", "bf16", "--out", tmp_path / "bf16")
    f32, bf16 = (_record(tmp_path / n)["curve"] for n in ("f32", "bf16"))
    assert [r["step"] for r in f32] == [r["step"] for r in bf16]
    for a, b in zip(f32, bf16):
        assert abs(b["task_loss"] - a["task_loss"]) <= 0.05 * a["task_loss"], (a, b)
    weights = _weights(tmp_path / "bf16")
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())  # float32 master weights


def _metrics(folder) -> dict:
    return _record(folder)["metrics"]


@pytest.mark.parametrize("which", ["llama-cut", "mlp-dense"])
def test_bf16_evaluation_tracks_float32(llama, tiny_chain, tmp_path, which):
    model = llama / "cut" if which == "llama-cut" else tiny_chain["dense"]  # factorised LM; images as input
    saved = (model / "model.pt").read_bytes()
    _run("evaluate", "--model", model, "--out", tmp_path / "f32")
    _run("evaluate", "--model", model, "--precision", "bf16", "--out", tmp_path / "bf16")
    f32, bf16 = _metrics(tmp_path / "f32"), _metrics(tmp_path / "bf16")
    assert (f32["eval_precision"], bf16["eval_precision"]) == ("float32", "bf16")
    assert bf16["model_params"] == f32["model_params"] and bf16["nonfinite_rows"] == 0
    if "perplexity" in f32:
        assert abs(bf16["perplexity"] / f32["perplexity"] - 1) <= 0.02, (f32["perplexity"], bf16["perplexity"])
    else:
        assert abs(bf16["accuracy"] - f32["accuracy"]) <= 0.02, (f32["accuracy"], bf16["accuracy"])
    assert (model / "model.pt").read_bytes() == saved


def test_compress_evaluates_in_bf16_after_saving_float32(llama, tmp_path):
    _run("compress", "--model", llama / "dense", "--grams", llama / "grams", "--method", "svd-llm", "--ratio", 0.5,
         "--evaluate", "--eval-precision", "bf16", "--out", tmp_path / "cut")
    assert _metrics(tmp_path / "cut" / "eval")["eval_precision"] == "bf16"
    assert all(w.dtype == torch.float32 for w in _weights(tmp_path / "cut").values() if w.is_floating_point())


def test_the_plain_step_is_recorded_as_before(tiny_chain, tmp_path):
    assert Compute().plain and Compute().params() == {}
    _run("prehab", "--model", tiny_chain["dense"], "--grams", tiny_chain["grams"], "--steps", 2, "--out", tmp_path / "p")
    assert not {"precision", "micro_batches", "recompute"} & set(_record(tmp_path / "p")["params"])


def test_slices_cover_the_batch_once():
    batch = {"x": torch.arange(10), "labels": torch.arange(10)}
    slices = Compute(micro_batches=3).slices(batch)
    assert [part["x"].tolist() for part, _ in slices] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert sum(share for _, share in slices) == pytest.approx(1.0)
    assert len(Compute(micro_batches=32).slices(batch)) == 10  # never an empty slice


def test_recompute_runs_each_block_again_in_the_backward_pass(llama):
    """The switch does what it says: each block's layers run once in the forward pass and once
    more when the loss is differentiated (without it, once)."""
    from prehab import checkpoint
    from prehab.compute import enable_recompute
    from prehab.layers import find_targets
    from prehab.method.streaming import find_blocks

    def forward_calls(recompute: bool) -> int:
        ckpt = checkpoint.load(llama / "dense")
        targets = find_targets(ckpt.model, ckpt.spec.targets)
        blocks = [block for name, block in find_blocks(ckpt.model, targets) if name]
        if recompute:
            assert enable_recompute(ckpt.model, targets) == len(blocks) > 0
        calls = []
        for block in blocks:
            next(iter(block.children())).register_forward_hook(lambda *_: calls.append(1))
        ckpt.model.train()
        ckpt.model(input_ids=torch.arange(8).reshape(1, 8)).logits.square().mean().backward()
        return len(calls), len(blocks)

    plain, blocks = forward_calls(False)
    recomputed, _ = forward_calls(True)
    assert plain == blocks and recomputed == 2 * blocks
