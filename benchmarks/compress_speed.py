"""Calibrate + compress (SVD-LLM at R = 0.6) by the package against a straightforward
implementation, in one run, calibrated on each architecture's `calib_samples` (config/config.yaml:
the size the workflow uses, at least 4 tokens per input of the widest layer). The straightforward
path: a second moment per target layer (q, k and v each their own), float64 throughout, an
explicit inverse of each Cholesky factor. The package as `prehab calibrate` and `prehab compress`
run it by default: text samples batched longest first (`--batching by-length`: less padding),
one second moment per distinct input, its lower half only, each batch's X^T X in float32 summed
in float64 (SVD-LLM's own code sums in float32 too), and each SVD from the
smaller Gram's eigen-decomposition (`compress.gram_svd`, then only the long side's kept singular
vectors). Prints both times and their ratio, the largest difference between the two compressed
weights (relative to the layer's largest entry) and what the float32 products move: per layer,
how much the compressed layer's outputs on the calibration inputs move against a float64-product
cut, relative to how much the truncation itself moved them, sqrt(tr(dW C dW^T) / tr(E C E^T))
with C the float64 second moment, dW the difference of the two cuts and E the truncation error
(the largest over layers, and the median). Then the fraction of the package's time spent inside
the SVDs themselves (the floor the issue names), the time split by stage (the forward passes,
the products of their second moments, the factors, the SVDs, the rest of compress), the share
no calibrate + compress avoids (the SVDs plus the calibration's forward passes) and the
ceiling that puts on the SVDs' share (their share if products, factors and bookkeeping cost
nothing: SVDs / (SVDs + forward)), and the SVDs' share of the compress step alone (SVDs / (SVDs
+ the rest of compress)). A second package run takes the products in float64 and the samples in
the order drawn (`--moment-dtype float64 --batching in-order`, which the committed studies pin:
config/config.yaml) and prints the same; for text, the share of padding either batching
carries. Targets: >= 2x faster; >= 70% of the time in the SVDs on the LLaMA-shaped model
(llama-small: SmolLM2-135M). One BLAS thread, as the workflow runs.

    .venv/bin/python benchmarks/compress_speed.py [--archs A ...] [--samples N]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from prehab import tasks  # noqa: E402
from prehab.layers import find_targets, get_module  # noqa: E402
from prehab.method import calibrate, compress  # noqa: E402
from prehab.method.calibrate import Whitening, robust_cholesky, whitening_from_moments  # noqa: E402
from prehab.method.ratio import rank_for_ratio  # noqa: E402
from prehab.method.streaming import block_moments  # noqa: E402
from prehab.registry import get_arch  # noqa: E402
from settings import REPO, arch_settings  # noqa: E402  (benchmarks/settings.py)

RATIO = 0.6


class Stopwatch:
    """Seconds spent inside module-level functions while it is open: each is replaced by a timed
    wrapper (their callers look them up in the module at call time) and restored on exit."""

    def __init__(self, **functions):
        self.functions = functions  # label -> (module, attribute name)
        self.seconds = dict.fromkeys(functions, 0.0)

    def _wrap(self, label, real):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
        return timed

    def __enter__(self):
        self.real = {label: getattr(module, name) for label, (module, name) in self.functions.items()}
        for label, (module, name) in self.functions.items():
            setattr(module, name, self._wrap(label, self.real[label]))
        return self

    def __exit__(self, *exc):
        for label, (module, name) in self.functions.items():
            setattr(module, name, self.real[label])


def package(model, spec, data, targets, batch_size, product_dtype: torch.dtype
            ) -> tuple[dict[str, torch.Tensor], dict[str, float], Whitening]:
    """({layer: W_u W_v}, seconds per stage, the whitening) of the package's calibrate + compress, as the
    `calibrate` and `compress` steps run them (without their disk writes): the forward passes
    block by block, their second moments' products (`add_lower_gram`), the Cholesky factors, the
    SVDs (`gram_svd`: the smaller Gram's eigen-decomposition, and `GramSVD.top`: the kept singular
    vectors of the long side), and the rest of compress (W L, the triangular solve, the new
    modules)."""
    with Stopwatch(products=(calibrate, "add_lower_gram"), svds=(compress, "gram_svd"),
                   long_sides=(compress.GramSVD, "top")) as watch:
        start = time.perf_counter()
        streaming_seconds, factors, owner, n_tokens = 0.0, {}, {}, 0
        blocks = block_moments(model, spec.task, data, targets, batch_size, product_dtype)
        while True:
            started = time.perf_counter()
            part = next(blocks, None)
            streaming_seconds += time.perf_counter() - started
            if part is None:
                break
            block = whitening_from_moments(part.moments, part.owner, part.n_tokens, consume=True)
            factors.update(block.factors)
            owner.update(part.owner)
            n_tokens = part.n_tokens
        whitening = Whitening(factors, owner, n_tokens)
        factored = time.perf_counter()
        compress.compress_model(model, targets, RATIO, "svd-llm", whitening)
        done = time.perf_counter()
    products, svds = watch.seconds["products"], watch.seconds["svds"] + watch.seconds["long_sides"]
    stages = {"forward": streaming_seconds - products, "moment products": products,
              "factors": factored - start - streaming_seconds, "SVDs": svds, "rest of compress": done - factored - svds}
    with torch.no_grad():
        weights = {name: (get_module(model, name).u.weight @ get_module(model, name).v.weight).double()
                   for name in targets}
    return weights, stages, whitening


@torch.no_grad()
def straightforward(model, spec, data, targets, batch_size) -> dict[str, torch.Tensor]:
    """The textbook path: one Gram per layer, float64, L^-1 by an explicit inverse."""
    grams = {name: None for name in targets}
    counts = dict.fromkeys(targets, 0)
    mask = {"tokens": None}  # real tokens of the current batch (text-cls drops padding)

    def hook(name):
        def record(module, args):
            x = args[0].detach().double()
            x = x[mask["tokens"]] if mask["tokens"] is not None and x.dim() == 3 else x.reshape(-1, x.shape[-1])
            grams[name] = x.T @ x if grams[name] is None else grams[name] + x.T @ x
            counts[name] += x.shape[0]
        return record

    handles = [get_module(model, name).register_forward_pre_hook(hook(name)) for name in targets]
    try:
        for batch in tasks.batches(data, batch_size):
            mask["tokens"] = tasks.token_mask(spec.task, batch)
            tasks.forward(model, spec.task, batch)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name in targets:
        W = get_module(model, name).weight.double()
        L, _ = robust_cholesky(grams[name] / counts[name])
        U, S, Vh = torch.linalg.svd(W @ L, full_matrices=False)
        k = rank_for_ratio(*W.shape, RATIO)
        root = S[:k].sqrt()
        out[name] = (U[:, :k] * root) @ ((root[:, None] * Vh[:k]) @ torch.linalg.inv(L))
    return out


def measure(arch: str, samples: int) -> None:
    spec = get_arch(arch)
    options = spec.resolve_options({})
    torch.manual_seed(0)
    model, _ = spec.build_pretrained(options)
    model.eval()
    data = spec.load_split(options, "train", samples, 0)
    targets = find_targets(model, spec.targets)
    batch = spec.defaults.get("eval_batch_size", 64)
    first, second, third = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    dense = {name: get_module(model, name).weight.double() for name in targets}
    start = time.perf_counter()
    naive = straightforward(first, spec, data, targets, batch)
    naive_s = time.perf_counter() - start
    start = time.perf_counter()
    ours, stages, _ = package(second, spec, tasks.by_length(spec.task, data), targets, batch, torch.float32)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    wide, wide_stages, whitening = package(third, spec, data, targets, batch, torch.float64)
    wide_s = time.perf_counter() - start

    def largest_difference(weights):
        return max(float((weights[n] - naive[n]).abs().max() / naive[n].abs().max()) for n in targets)

    moved = sorted(output_change(ours[n] - wide[n], dense[n] - wide[n], whitening.factor_of(n)) for n in targets)
    print(f"{arch:12s} {len(targets):4d} targets  {samples} samples  straightforward {naive_s:7.1f} s  "
          f"package {ours_s:7.1f} s  ratio {naive_s / ours_s:5.2f}  in SVDs {stages['SVDs'] / ours_s:5.1%}  "
          f"max rel diff {largest_difference(ours):.1e}  output change / truncation's: max {moved[-1]:.1e}, "
          f"median {moved[len(moved) // 2]:.1e}")
    print(f"{'':12s} package's time: " + ", ".join(f"{k} {v / ours_s:.0%}" for k, v in stages.items())
          + f"; SVDs + forward {(stages['SVDs'] + stages['forward']) / ours_s:.0%}; the SVDs' share with everything"
          f" else free but the forward passes {stages['SVDs'] / (stages['SVDs'] + stages['forward']):.0%}; "
          f"of compress alone {stages['SVDs'] / (stages['SVDs'] + stages['rest of compress']):.0%}")
    print(f"{'':12s} float64 products, in-order batches (the studies' pin): package {wide_s:7.1f} s  ratio {naive_s / wide_s:5.2f}  "
          f"in SVDs {wide_stages['SVDs'] / wide_s:5.1%}  max rel diff {largest_difference(wide):.1e}  "
          f"moment products {wide_stages['moment products']:.1f} s (float32: {stages['moment products']:.1f} s)")
    print(f"{'':12s} its time: " + ", ".join(f"{k} {v / wide_s:.0%}" for k, v in wide_stages.items())
          + f"; of compress alone {wide_stages['SVDs'] / (wide_stages['SVDs'] + wide_stages['rest of compress']):.0%}")
    if spec.task == "text-cls":
        print(f"{'':12s} padding carried through the forward passes: {padding_share(spec.task, data, batch):.0%} of the "
              f"tokens in order, {padding_share(spec.task, tasks.by_length(spec.task, data), batch):.0%} by length")


def padding_share(task: str, data: dict[str, torch.Tensor], batch_size: int) -> float:
    """The fraction of the tokens the forward passes carry that are padding (each batch trimmed
    to its longest row, as `tasks.model_inputs` does)."""
    carried = real = 0
    for batch in tasks.batches(data, batch_size):
        _, kwargs = tasks.model_inputs(task, batch)
        carried += kwargs["input_ids"].numel()
        real += int(kwargs["attention_mask"].sum())
    return 1 - real / carried


def output_change(delta: torch.Tensor, error: torch.Tensor, L: torch.Tensor) -> float:
    """sqrt(tr(delta C delta^T) / tr(error C error^T)) with C = L L^T: how far `delta` moves the
    layer's outputs on the calibration inputs, relative to the truncation `error`."""
    L = L.double()
    return float((delta @ L).norm() / (error @ L).norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["vit-small", "bert-small", "llama-small"])
    parser.add_argument("--samples", type=int, default=None,
                        help="calibration samples (default: each architecture's calib_samples in config/config.yaml, "
                             "the size the workflow calibrates on)")
    args = parser.parse_args()
    print(f"SVD-LLM at R = {RATIO}, one BLAS thread")
    for arch in args.archs:
        samples = args.samples or arch_settings(REPO / "config" / "config.yaml", arch)["calib_samples"]
        measure(arch, samples)


if __name__ == "__main__":
    main()
