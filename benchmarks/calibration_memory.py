"""Peak host memory and time of calibrate + compress (SVD-LLM at R = 0.6) on LLaMA-shaped models
of growing width and depth, each in a fresh process, with the growth fitted and extrapolated to
LLaMA-7B (4096 wide, 11008 FFN, 32 blocks, 32,000-token vocabulary) calibrated on 256 x 2048
tokens, next to the footprint SVD-LLM reports for its float64 factors (about 57 GB).

The fit: peak - (the process before the model is built) = a * bytes of the model's float32
weights + b * bytes of the float64 second moments and factors the package holds at once (the
two grow differently with the FFN width and the vocabulary, which the shapes vary apart). The
coefficients say how many copies of each the implementation holds at its peak; one batch's
activations are small at these shapes and are not fitted. Target (issue 12):
under 16 GB for LLaMA-7B. Random weights (the memory does not depend on them); one BLAS thread.

    .venv/bin/python benchmarks/calibration_memory.py [--tokens 4096] [--seq-len 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROBE = r"""
import json, resource, sys, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from prehab.layers import find_targets
from prehab.archs.llama import LLAMA_TARGETS
from prehab.method.calibrate import second_moments, whitening_from_moments
from prehab.method.compress import compress_model
d, ff, blocks, vocab, n_windows, seq_len = map(int, sys.argv[1:7])
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = rss_mb()
torch.manual_seed(0)
config = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=ff, num_hidden_layers=blocks,
                     num_attention_heads=max(1, d // 64), num_key_value_heads=max(1, d // 64),
                     max_position_embeddings=max(2048, seq_len))
model = LlamaForCausalLM(config).eval()
data = {"input_ids": torch.randint(0, vocab, (n_windows, seq_len))}
targets = find_targets(model, LLAMA_TARGETS)
start = time.perf_counter()
moments, owner, n_tokens = second_moments(model, "lm", data, targets, batch_size=4)
calibrated = time.perf_counter()
whitening = whitening_from_moments(moments, owner, n_tokens)
compress_model(model, targets, 0.6, "svd-llm", whitening)
done = time.perf_counter()
print(json.dumps({"base_mb": base, "peak_mb": rss_mb(), "calibrate_s": calibrated - start, "total_s": done - start}))
"""

SHAPES = [  # (width, FFN, blocks, vocabulary): widths, depths, then FFN and vocabulary apart
    (256, 688, 4, 1000), (384, 1032, 4, 1000), (512, 1376, 4, 1000), (768, 2064, 4, 1000),
    (512, 1376, 2, 1000), (512, 1376, 8, 1000), (512, 2752, 4, 1000), (512, 1376, 4, 16000),
]
LLAMA_7B = dict(d=4096, ff=11008, blocks=32, vocab=32000)
SVD_LLM_REPORTED_GB = 57


def weight_bytes(d: int, ff: int, blocks: int, vocab: int) -> float:
    """float32 bytes of a LLaMA's weights (untied embeddings and head, norms)."""
    per_block = 4 * d * d + 3 * d * ff + 2 * d
    return 4.0 * (blocks * per_block + 2 * vocab * d + d)


def moment_bytes(d: int, ff: int, blocks: int) -> float:
    """float64 bytes of every block's distinct-input second moments and their factors (4 inputs
    per block: q/k/v share one, o, gate/up share one, down), all held at once, as now."""
    return 2 * 8.0 * blocks * (3 * d * d + ff * ff)


def run(shape: tuple[int, int, int, int], windows: int, seq_len: int) -> dict:
    d, ff, blocks, vocab = shape
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(d), str(ff), str(blocks), str(vocab), str(windows),
                          str(seq_len)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"probe failed for {shape}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit(rows: list[dict]):
    """Least squares of (peak - base) on the two byte counts, no intercept: the coefficients and
    the largest misfit relative to the largest peak."""
    import torch

    X = torch.tensor([[r["weights"], r["moments_b"]] for r in rows], dtype=torch.float64)
    y = torch.tensor([(r["peak_mb"] - r["base_mb"]) * 2**20 for r in rows], dtype=torch.float64)
    coef = torch.linalg.lstsq(X, y[:, None]).solution.flatten()
    residual = (X @ coef - y).abs().max() / y.abs().max()
    return coef.tolist(), float(residual)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4096, help="calibration tokens per probe")
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    windows = max(1, args.tokens // args.seq_len)
    print(f"calibrate + compress (SVD-LLM, R = 0.6), {windows} x {args.seq_len} tokens, "
          f"one BLAS thread, each shape in a fresh process")
    print(f"  {'width':>5s} {'FFN':>5s} {'blocks':>6s} {'vocab':>6s} {'weights MB':>10s} {'moments MB':>10s} "
          f"{'peak - base MB':>14s} {'calibrate s':>11s} {'total s':>8s}")
    rows = []
    for shape in SHAPES:
        d, ff, blocks, vocab = shape
        r = run(shape, windows, args.seq_len)
        r.update(weights=weight_bytes(d, ff, blocks, vocab), moments_b=moment_bytes(d, ff, blocks))
        rows.append(r)
        print(f"  {d:5d} {ff:5d} {blocks:6d} {vocab:6d} {r['weights'] / 2**20:10.0f} {r['moments_b'] / 2**20:10.0f} "
              f"{r['peak_mb'] - r['base_mb']:14.0f} {r['calibrate_s']:11.1f} {r['total_s']:8.1f}")
    coef, residual = fit(rows)
    print(f"fit: peak - base = {coef[0]:.2f} x weights + {coef[1]:.2f} x (moments + factors); "
          f"largest misfit {residual:.0%} of the largest peak")
    big = LLAMA_7B
    parts = (weight_bytes(big["d"], big["ff"], big["blocks"], big["vocab"]),
             moment_bytes(big["d"], big["ff"], big["blocks"]))
    estimate = sum(c * p for c, p in zip(coef, parts)) / 2**30
    print(f"LLaMA-7B, float32 weights: about {estimate:.0f} GB peak above the process (weights "
          f"{parts[0] / 2**30:.0f} GB, float64 moments + factors {parts[1] / 2**30:.0f} GB), whatever the number of "
          f"calibration tokens (moments are accumulated batch by batch), plus one batch's activations; SVD-LLM "
          f"reports about {SVD_LLM_REPORTED_GB} GB of float64 factors; target: under 16 GB with 256 x 2048 tokens")


if __name__ == "__main__":
    main()
