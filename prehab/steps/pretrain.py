"""`prehab pretrain`: the dense starting model, trained from scratch or loaded and fine-tuned."""

from __future__ import annotations

import argparse

from prehab import checkpoint, tasks
from prehab.checkpoint import Checkpoint
from prehab.device import resolve_device
from prehab.outputs import StepRecord, atomic_dir
from prehab.registry import get_arch
from prehab.steps.common import (
    add_common, nonneg_int, parse_arch_opts, positive_float, positive_int, seed_everything, step_default,
)
from prehab.train import train_steps

HELP = "build the dense model (random init or pretrained weights) and train it on the task"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True, help="architecture name (`prehab archs` lists them)")
    p.add_argument("--steps", type=nonneg_int("--steps"), help="training steps; 0 keeps the loaded weights (default: per architecture)")
    p.add_argument("--lr", type=positive_float("--lr"), help="Adam learning rate (default: per architecture)")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), help="batch size (default: per architecture)")
    add_common(p)


def run(args: argparse.Namespace) -> dict:
    spec = get_arch(args.arch)
    options = spec.resolve_options(parse_arch_opts(args.arch_opt))
    steps = step_default(args.steps, spec, "pretrain_steps")
    lr = step_default(args.lr, spec, "pretrain_lr")
    batch_size = step_default(args.batch_size, spec, "batch_size")
    record = StepRecord("pretrain", {"arch": spec.name, "arch_options": options, "steps": steps, "lr": lr,
                                     "batch_size": batch_size, "seed": args.seed})
    seed_everything(args.seed)
    model, arch_config = spec.build_pretrained(options)
    model.to(resolve_device(args.device))
    train = spec.load_split(options, "train", None, args.seed) if steps else None
    curve = train_steps(model, spec.task, train, [p for p in model.parameters() if p.requires_grad],
                        steps=steps, lr=lr, batch_size=batch_size, seed=args.seed, desc="pretrain") if steps else []
    record.metrics["final_task_loss"] = curve[-1]["task_loss"] if curve else None
    record.extra["curve"] = curve
    with atomic_dir(args.out) as out:
        history = [{"step": "pretrain", **record.params}]
        checkpoint.save(Checkpoint(model, spec.name, options, arch_config, {}, history), out)
        return record.write(out)
