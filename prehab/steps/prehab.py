"""`prehab prehab`: rank-regularised fine-tuning of the target layers (the method's core)."""

from __future__ import annotations

import argparse

import torch

from prehab import checkpoint
from prehab.device import resolve_device
from prehab.errors import UsageError
from prehab.layers import find_targets
from prehab.outputs import StepRecord, atomic_dir
from prehab.regularize import SPACES, LambdaSchedule, run_prehab, whitened_spectra
from prehab.steps.common import (
    add_common, add_model, checkpoint_options, load_whitening, nonneg_float, nonneg_int,
    positive_float, positive_int, seed_everything, step_default,
)
from prehab.surrogates import FROM_EIGENVALUES, SURROGATES, entropy_rank_of, get_surrogate

HELP = "fine-tune with task loss + lambda * rank surrogate of the whitened weights (lambda 0 = control)"
SPECTRA_FILE = "spectra.pt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument("--grams", required=True, help="`prehab calibrate` output (folder or grams.pt): the whitening factors L")
    p.add_argument("--surrogate", default="nuclear", help=f"rank surrogate; one of {', '.join(SURROGATES.names())} (default nuclear)")
    p.add_argument("--lam", type=nonneg_float("--lam"), default=1.0, help="penalty weight lambda >= 0; 0 = the control run (default 1.0)")
    p.add_argument("--lam-start", type=nonneg_float("--lam-start"), default=0.0, help="first lambda of the geometric warm-up (needs --lam-warmup-steps)")
    p.add_argument("--lam-warmup-steps", type=nonneg_int("--lam-warmup-steps"), default=0, help="steps of geometric warm-up from --lam-start to --lam (default 0: constant)")
    p.add_argument("--space", choices=SPACES, default="whitened", help="whitened: train a delta D in whitened coordinates (authors'); weight: train W, penalty on W L; raw: train W, penalty on W (unwhitened ablation)")
    p.add_argument("--steps", type=nonneg_int("--steps"), help="Prehab steps (default: per architecture)")
    p.add_argument("--lr", type=positive_float("--lr"), help="Adam learning rate (default: per architecture)")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), help="batch size (default: per architecture)")
    p.add_argument("--penalty-every", type=positive_int("--penalty-every"), default=1, help="apply k * lambda * R every k-th step only (1/k of the spectral cost; default 1 = every step)")
    p.add_argument("--log-every", type=positive_int("--log-every"), default=10, help="curve logging interval in steps (default 10)")
    add_common(p)


def run(args: argparse.Namespace) -> dict:
    get_surrogate(args.surrogate)  # fail on a bad name before any loading
    schedule = LambdaSchedule(args.lam, args.lam_start, args.lam_warmup_steps)
    ckpt = checkpoint.load(args.model)
    spec = ckpt.spec
    options = checkpoint_options(ckpt, args.arch_opt)
    whitening = load_whitening(args.grams)
    steps = step_default(args.steps, spec, "prehab_steps")
    lr = step_default(args.lr, spec, "prehab_lr")
    batch_size = step_default(args.batch_size, spec, "batch_size")
    params = {"model": str(args.model), "grams": str(args.grams), "arch": spec.name, "surrogate": args.surrogate,
              "lam": args.lam, "lam_start": args.lam_start, "lam_warmup_steps": args.lam_warmup_steps,
              "space": args.space, "penalty_every": args.penalty_every, "steps": steps, "lr": lr, "batch_size": batch_size, "seed": args.seed}
    record = StepRecord("prehab", params)
    ckpt.model.to(resolve_device(args.device))
    seed_everything(args.seed)
    targets = find_targets(ckpt.model, spec.targets)
    missing = [t for t in targets if t not in whitening.owner]
    if missing:
        raise UsageError(f"calibration {args.grams} has no factor for {missing[0]} (it was made for another model)")
    data = spec.load_split(options, "train", None, args.seed)
    before = whitened_spectra(ckpt.model, targets, whitening)
    curve = run_prehab(ckpt.model, spec.task, data, whitening, targets, surrogate=args.surrogate, schedule=schedule,
                       space=args.space, steps=steps, lr=lr, batch_size=batch_size, seed=args.seed,
                       log_every=args.log_every, penalty_every=args.penalty_every)
    after = whitened_spectra(ckpt.model, targets, whitening)
    R = FROM_EIGENVALUES[args.surrogate]
    # Both measured on the WHITENED weights (in either space), from the stored spectra.
    record.metrics.update(
        whitened_surrogate_before=_mean_over(lambda s: float(R(s.double() ** 2)), before),
        whitened_surrogate_after=_mean_over(lambda s: float(R(s.double() ** 2)), after),
        entropy_rank_before=_mean_over(entropy_rank_of, before), entropy_rank_after=_mean_over(entropy_rank_of, after),
        final_task_loss=curve[-1]["task_loss"] if curve else None,
    )
    record.extra["curve"] = curve
    with atomic_dir(args.out) as out:
        history = ckpt.history + [{"step": "prehab", **params}]
        checkpoint.save(checkpoint.Checkpoint(ckpt.model, spec.name, options, ckpt.arch_config, {}, history), out)
        torch.save({"before": before, "after": after}, out / SPECTRA_FILE)
        return record.write(out)


@torch.no_grad()
def _mean_over(fn, spectra: dict[str, torch.Tensor]) -> float:
    """Mean over layers of a function of the singular values."""
    return float(sum(float(fn(s.double())) for s in spectra.values()) / len(spectra))
