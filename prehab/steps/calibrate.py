"""`prehab calibrate`: second moments of every target layer's input and their Cholesky factors."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


from prehab.errors import UsageError
from prehab.steps.options import COUNT, NON_NEGATIVE, StepOptions, option, step_default

log = logging.getLogger(__name__)

HELP = "accumulate each target layer's input second moment (float64) and factor it (Cholesky + damping ladder)"


@dataclass(kw_only=True)
class Options(StepOptions):
    model: Path = option("input model: a step's output folder or its model.pt", type=Path)
    source: str = option("calibration data: `train` (task's training split) or `shift` (another domain, where "
                         "the architecture offers one)", "train")
    samples: int | None = option("number of calibration samples", None, type=int, check=COUNT)
    batch_size: int | None = option("forward batch size (per architecture: its eval batch)", None, type=int,
                                    check=COUNT)
    seed: int = option("seed of the calibration sample", 0, type=int)
    damping: float = option("damping f: factor C + f * mean(diag C) * I (GPTQ's form; 0.01 is GPTQ's default); 0 adds "
                            "only the smallest jitter that makes a singular C factor", 0.0, type=float,
                            check=NON_NEGATIVE)
    factor_dtype: str = option("precision the factors are stored in (one file per block): float64, or float32 to halve "
                               "the disk a large model's factors take (compress still works in float64)", "float64",
                               choices=("float64", "float32"))
    moment_dtype: str = option("precision of each batch's X^T X products, summed in float64 either way: float32 "
                               "(as SVD-LLM's own code, which also sums in float32) costs about 60%% of float64's "
                               "time and moves the compressed layers' outputs by under 1e-3 of what truncation "
                               "moves them (benchmarks/compress_speed.py); the committed studies pin float64",
                               "float32", choices=("float64", "float32"))
    batching: str = option("how the samples are batched: by-length (text longest first, so batches carry less "
                           "padding; images and LM windows are all one length) or in-order (as drawn, which the "
                           "committed bert-small studies pin); the moments differ only by rounding", "by-length",
                           choices=("by-length", "in-order"))
    out: Path = option("output folder (written atomically: all or nothing)", type=Path)


def run(opts: Options) -> dict:
    # imported here: `prehab --help` and `prehab STEP --help` must not load torch
    import torch
    from prehab import checkpoint, tasks
    from prehab.device import resolve_device
    from prehab.layers import find_targets
    from prehab.method.calibrate import TOKENS_PER_INPUT
    from prehab.method.streaming import write_whitening
    from prehab.outputs import StepRecord, atomic_dir
    from prehab.steps.common import checkpoint_options, seed_everything

    ckpt = checkpoint.load(opts.model, lazy=True)  # read block by block: weights stay in the file
    spec = ckpt.spec
    options = checkpoint_options(ckpt, opts)
    if opts.source not in spec.calib_sources:
        raise UsageError(f"calibration source {opts.source!r} is not offered by {spec.name}; allowed: {', '.join(spec.calib_sources)}")
    samples = step_default(opts.samples, spec, "calib_samples")
    batch_size = step_default(opts.batch_size, spec, "eval_batch_size")
    record = StepRecord("calibrate", {"model": str(opts.model), "arch": spec.name, "source": opts.source,
                                      "samples": samples, "batch_size": batch_size, "seed": opts.seed,
                                      "damping": opts.damping, "factor_dtype": opts.factor_dtype,
                                      **({"moment_dtype": opts.moment_dtype}
                                         if opts.moment_dtype != "float64" else {}),
                                      **({"batching": opts.batching} if opts.batching != "in-order" else {})})
    ckpt.model.to(resolve_device(opts.device))
    seed_everything(opts.seed)
    data = spec.load(options, opts.source, samples, opts.seed)
    if opts.batching == "by-length":
        data = tasks.by_length(spec.task, data)
    targets = find_targets(ckpt.model, spec.targets)
    with atomic_dir(opts.out) as out:
        index = write_whitening(ckpt.model, spec.task, data, targets, batch_size, opts.damping, out,
                                getattr(torch, opts.factor_dtype), getattr(torch, opts.moment_dtype))
        n_tokens, widest, damping = index["n_tokens"], index["widest"], index["damping"]
        methods = Counter(d["method"] for d in damping.values())
        deficient = sorted(k for k, d in damping.items() if d["rank_deficient"])
        if n_tokens < TOKENS_PER_INPUT * widest:
            log.warning("calibrated on %d tokens, %.1f per input of the widest target (%d inputs); the token rule "
                        "asks for %d: pass more --samples", n_tokens, n_tokens / widest, widest, TOKENS_PER_INPUT)
        if deficient:
            log.warning("%d of %d second moments are rank-deficient (first: %s)", len(deficient), len(damping),
                        deficient[0])
        record.metrics.update(
            n_samples=samples, n_tokens=n_tokens, n_targets=len(targets), n_factors=len(damping),
            damping=opts.damping, damping_methods=dict(methods),
            max_shift=max(d["shift"] for d in damping.values()),
            tokens_per_input=n_tokens / widest, n_rank_deficient=len(deficient),
        )
        record.extra["damping"] = damping
        return record.write(out)
