"""Peak host memory and time of calibration on LLaMA-shaped models of growing width, FFN width,
depth and token count, each in a fresh process, by both paths in one run: `prehab calibrate`'s
(the checkpoint memory-mapped, block by block, each block's factors written in float32 as they
exist, as config/paper.yaml does for LLaMA-7B: `streaming.write_whitening`) and the
whole-model pass it replaced (the checkpoint loaded, `calibrate.second_moments` over every
block at once, every factor held). Each path's growth is
fitted and extrapolated to LLaMA-7B (4096 wide, 11008 FFN, 32 blocks) calibrated on 256 x 2048
tokens in float32, next to the footprint SVD-LLM reports for its float64 factors (about 57 GB).
Target (issue 12): under 16 GB for LLaMA-7B.

Memory is the process's anonymous resident memory (RssAnon, sampled every 2 ms), above what it
held before loading the model: memory-mapped weights are page cache the kernel can drop and
re-read, not memory the host must provide (ru_maxrss, which counts them, is printed beside).
The fits (least squares, bytes, plus a constant: the libraries' own working memory):
- block by block: a * kept activations (tokens x width x 4) + b * one block's float64 moments
  and float32 factors (one batch's float64 rows, batch tokens x FFN x 8, grow with the FFN width alone
  at one batch size, so they cannot be fitted apart from the moments: added once, unfitted);
- whole model: a * float32 weights + b * every block's float64 moments and factors.
Random weights (memory does not depend on them); one BLAS thread.

    .venv/bin/python benchmarks/calibration_memory.py [--seq-len 128] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from probes import run_probe  # benchmarks/probes.py (scripts run from benchmarks/ as sys.path[0])

BUILD = r"""
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from prehab import checkpoint
from prehab.archs.llama import arch_config_of
from prehab.registry import get_arch
d, ff, blocks, vocab, seq_len = map(int, sys.argv[1:6])
torch.manual_seed(0)
config = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=ff, num_hidden_layers=blocks,
                     num_attention_heads=max(1, d // 64), num_key_value_heads=max(1, d // 64),
                     max_position_embeddings=max(2048, seq_len))
model = LlamaForCausalLM(config).eval()
options = get_arch("llama-tiny").resolve_options({})
checkpoint.save(checkpoint.Checkpoint(model, "llama-tiny", options, arch_config_of(model)), sys.argv[6])
"""

PROBE = r"""
import json, resource, sys, threading, time
import torch
from prehab import checkpoint
from prehab.layers import find_targets
from prehab.archs.llama import LLAMA_TARGETS
from transformers import LlamaForCausalLM  # imported before the base reading: code, not data
path, out, path_kind = sys.argv[1:4]
vocab, windows, seq_len, batch = map(int, sys.argv[4:8])
def anon_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024
peak = [0.0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], anon_mb())
        time.sleep(0.002)
data = {"input_ids": torch.randint(0, vocab, (windows, seq_len), generator=torch.Generator().manual_seed(0))}
base = anon_mb()
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
start = time.perf_counter()
if path_kind == "blocks":
    from prehab.method.streaming import write_whitening
    model = checkpoint.load(path, lazy=True).model
    write_whitening(model, "lm", data, find_targets(model, LLAMA_TARGETS), batch, 0.0, out, torch.float32)
else:
    from prehab.method.calibrate import second_moments, whitening_from_moments
    model = checkpoint.load(path).model
    whitening = whitening_from_moments(*second_moments(model, "lm", data, find_targets(model, LLAMA_TARGETS), batch))
seconds = time.perf_counter() - start
stop.set()
sampler.join()
peak[0] = max(peak[0], anon_mb())
print(json.dumps({"base_mb": base, "peak_mb": peak[0], "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": seconds}))
"""

SHAPES = [  # (width, FFN, blocks, tokens): widths, then FFN, depth and tokens apart
    (256, 688, 4, 4096), (512, 1376, 4, 4096), (768, 2064, 4, 4096), (1024, 2752, 4, 4096),
    (512, 2752, 4, 4096), (512, 1376, 8, 4096), (512, 1376, 4, 16384), (768, 2064, 4, 16384),
]
VOCAB = 1000
LLAMA_7B = dict(d=4096, ff=11008, blocks=32, vocab=32000, tokens=256 * 2048, batch_tokens=4 * 2048)
SVD_LLM_REPORTED_GB = 57
TARGET_GB = 16


def weight_bytes(d: int, ff: int, blocks: int, vocab: int) -> float:
    """float32 bytes of a LLaMA's weights (untied embeddings and head, norms)."""
    return 4.0 * (blocks * (4 * d * d + 3 * d * ff + 2 * d) + 2 * vocab * d + d)


def block_moment_bytes(d: int, ff: int, factor_bytes: int) -> float:
    """Bytes of one block's distinct-input float64 second moments and their factors (4 inputs per
    block: q/k/v share one, o, gate/up share one, down)."""
    return (8.0 + factor_bytes) * (3 * d * d + ff * ff)


def terms(path_kind: str, d: int, ff: int, blocks: int, vocab: int, tokens: int, batch_tokens: int) -> list[float]:
    """The byte counts each path's fit uses (module docstring)."""
    if path_kind == "blocks":
        return [4.0 * tokens * d, block_moment_bytes(d, ff, factor_bytes=4)]
    return [weight_bytes(d, ff, blocks, vocab), blocks * block_moment_bytes(d, ff, factor_bytes=8)]


def fit(rows: list[dict], path_kind: str):
    """Least squares of (peak - base) on a constant and the path's byte counts: coefficients
    (constant first), largest misfit relative to the largest peak."""
    import torch

    X = torch.tensor([[1.0, *r["terms"][path_kind]] for r in rows], dtype=torch.float64)
    y = torch.tensor([(r[path_kind]["peak_mb"] - r[path_kind]["base_mb"]) * 2**20 for r in rows], dtype=torch.float64)
    coef = torch.linalg.lstsq(X, y[:, None]).solution.flatten()
    return coef.tolist(), float((X @ coef - y).abs().max() / y.abs().max())


TERM_NAMES = {"blocks": ("kept activations", "one block's moments + factors"),
              "whole": ("weights", "every block's moments + factors")}


def extrapolated(path_kind: str, coef: list[float]) -> tuple[float, list[tuple[str, float, float]]]:
    """LLaMA-7B's estimate in bytes and its parts (name, bytes, coefficient): the fitted terms and,
    for the block path, one batch's float64 rows of the widest input, once (unfitted: docstring)."""
    big = LLAMA_7B
    sizes = terms(path_kind, big["d"], big["ff"], big["blocks"], big["vocab"], big["tokens"], big["batch_tokens"])
    parts = list(zip(TERM_NAMES[path_kind], sizes, coef[1:]))
    if path_kind == "blocks":
        parts.append(("one batch's float64 rows (unfitted)", 8.0 * big["batch_tokens"] * big["ff"], 1.0))
    return coef[0] + sum(b * c for _, b, c in parts), parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per calibration window")
    parser.add_argument("--batch", type=int, default=4, help="windows per forward batch")
    args = parser.parse_args()
    batch_tokens = args.batch * args.seq_len
    print(f"calibration (second moments + Cholesky factors), {args.seq_len}-token windows, batches of {args.batch}, "
          f"float32 model, one BLAS thread, each probe in a fresh process; MB above the process before the model")
    print(f"  {'width':>5s} {'FFN':>5s} {'blocks':>6s} {'tokens':>6s} | {'block by block: peak':>20s} "
          f"{'maxrss':>7s} {'s':>6s} | {'whole model: peak':>17s} {'maxrss':>7s} {'s':>6s}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d, ff, blocks, tokens in SHAPES:
            model = os.path.join(tmp, "dense")
            os.makedirs(model, exist_ok=True)
            run_probe(BUILD, d, ff, blocks, VOCAB, args.seq_len, model)
            row = {"terms": {k: terms(k, d, ff, blocks, VOCAB, tokens, batch_tokens) for k in ("blocks", "whole")}}
            for kind in ("blocks", "whole"):
                out = os.path.join(tmp, f"grams-{kind}")
                os.makedirs(out, exist_ok=True)
                row[kind] = json.loads(run_probe(PROBE, model, out, kind, VOCAB, tokens // args.seq_len,
                                                 args.seq_len, args.batch))
            rows.append(row)
            b, w = row["blocks"], row["whole"]
            print(f"  {d:5d} {ff:5d} {blocks:6d} {tokens:6d} | {b['peak_mb'] - b['base_mb']:20.0f} {b['maxrss_mb']:7.0f} "
                  f"{b['seconds']:6.1f} | {w['peak_mb'] - w['base_mb']:17.0f} {w['maxrss_mb']:7.0f} {w['seconds']:6.1f}")
    for kind, label in (("blocks", "block by block (prehab calibrate)"), ("whole", "whole model (before)")):
        coef, misfit = fit(rows, kind)
        estimate, parts = extrapolated(kind, coef)
        formula = f"{coef[0] / 2**20:.0f} MB + " + " + ".join(f"{c:.2f} x {n}" for n, _, c in parts)
        sizes = ", ".join(f"{n} {b / 2**30:.1f} GB" for n, b, _ in parts)
        verdict = f"; target under {TARGET_GB} GB: {'met' if estimate < TARGET_GB * 2**30 else 'NOT met'}"
        print(f"{label}: peak = {formula}; largest misfit {misfit:.0%} of the largest peak")
        print(f"  LLaMA-7B, 256 x 2048 tokens, float32: about {estimate / 2**30:.1f} GB ({sizes})"
              + (verdict if kind == "blocks" else ""))
    print(f"SVD-LLM reports about {SVD_LLM_REPORTED_GB} GB of float64 factors for LLaMA-7B (all held at once)")


if __name__ == "__main__":
    main()
