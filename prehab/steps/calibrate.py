"""`prehab calibrate`: second moments of every target layer's input and their Cholesky factors."""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from prehab import checkpoint
from prehab.device import resolve_device
from prehab.calibrate import second_moments, whitening_from_moments
from prehab.layers import find_targets
from prehab.outputs import StepRecord, atomic_dir
from prehab.errors import UsageError
from prehab.steps.common import add_common, add_model, checkpoint_options, positive_int, seed_everything, step_default

HELP = "accumulate each target layer's input second moment (float64) and factor it (Cholesky + damping ladder)"
GRAMS_FILE = "grams.pt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument("--source", default="train", help="calibration data: `train` (task's training split) or `shift` (another domain, where the architecture offers one)")
    p.add_argument("--samples", type=positive_int("--samples"), help="number of calibration samples (default: per architecture)")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), help="forward batch size (default: per architecture eval batch)")
    add_common(p)


def run(args: argparse.Namespace) -> dict:
    ckpt = checkpoint.load(args.model)
    spec = ckpt.spec
    options = checkpoint_options(ckpt, args.arch_opt)
    if args.source not in spec.calib_sources:
        raise UsageError(f"calibration source {args.source!r} is not offered by {spec.name}; allowed: {', '.join(spec.calib_sources)}")
    samples = step_default(args.samples, spec, "calib_samples")
    batch_size = step_default(args.batch_size, spec, "eval_batch_size")
    record = StepRecord("calibrate", {"model": str(args.model), "arch": spec.name, "source": args.source,
                                      "samples": samples, "batch_size": batch_size, "seed": args.seed})
    ckpt.model.to(resolve_device(args.device))
    seed_everything(args.seed)
    data = spec.load_split(options, args.source, samples, args.seed)
    targets = find_targets(ckpt.model, spec.targets)
    moments, owner, n_tokens = second_moments(ckpt.model, spec.task, data, targets, batch_size)
    whitening = whitening_from_moments(moments, owner, n_tokens)
    methods = Counter(d["method"] for d in whitening.damping.values())
    record.metrics.update(
        n_samples=samples, n_tokens=n_tokens, n_targets=len(targets), n_factors=len(whitening.factors),
        damping_methods=dict(methods), max_shift=max(d["shift"] for d in whitening.damping.values()),
    )
    record.extra["damping"] = whitening.damping
    with atomic_dir(args.out) as out:
        torch.save(whitening.to_payload(), out / GRAMS_FILE)
        return record.write(out)
