"""`prehab rehab`: LoRA recovery (peft) of a compressed model's factor layers, merged afterwards.

Several --model values (e.g. one model compressed at several ratios) run one after the other
in one process: one start-up, one peft import, one load of the training data."""

from __future__ import annotations

import argparse
from pathlib import Path

from prehab import checkpoint
from prehab.device import resolve_device
from prehab.outputs import StepRecord, atomic_dir
from prehab.recover import SCHEDULES, lora_rehab
from prehab.steps.common import (
    add_common, checkpoint_options, nonneg_float, nonneg_int, pair_outputs, positive_float, positive_int,
    seed_everything, step_default,
)
from prehab.steps.evaluate import add_evaluate_flags, evaluate_saved

HELP = "recover a compressed model with LoRA on its factors (joint, or sequential U then V as SVD-LLM)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, nargs="+", required=True,
                   help="compressed model(s): a step's output folder or its model.pt; one --out each")
    p.add_argument("--schedule", choices=SCHEDULES.names(), default="sequential", help="joint: u and v together; sequential: u, merge, then v (default)")
    p.add_argument("--rank", type=positive_int("--rank"), default=8, help="LoRA rank r (default 8)")
    p.add_argument("--alpha", type=positive_float("--alpha"), default=16.0, help="LoRA alpha (default 16)")
    p.add_argument("--dropout", type=nonneg_float("--dropout"), default=0.05, help="LoRA dropout (default 0.05)")
    p.add_argument("--steps", type=nonneg_int("--steps"), help="steps per phase (default: per architecture)")
    p.add_argument("--lr", type=positive_float("--lr"), help="Adam learning rate (default: per architecture)")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), help="batch size (default: per architecture)")
    add_evaluate_flags(p)
    add_common(p, many="--model")


def run(args: argparse.Namespace) -> dict | list[dict]:
    jobs = pair_outputs(args.model, args.out, "--model")
    records = [rehab_one(args, model, out) for model, out in jobs]
    return records if len(records) > 1 else records[0]


def rehab_one(args: argparse.Namespace, model_path: Path, out_dir: Path) -> dict:
    ckpt = checkpoint.load(model_path)
    spec = ckpt.spec
    options = checkpoint_options(ckpt, args.arch_opt)
    steps = step_default(args.steps, spec, "rehab_steps")
    lr = step_default(args.lr, spec, "rehab_lr")
    batch_size = step_default(args.batch_size, spec, "batch_size")
    params = {"model": str(model_path), "arch": spec.name, "schedule": args.schedule, "rank": args.rank,
              "alpha": args.alpha, "dropout": args.dropout, "steps": steps, "lr": lr, "batch_size": batch_size,
              "seed": args.seed}
    record = StepRecord("rehab", params)
    ckpt.model.to(resolve_device(args.device))
    seed_everything(args.seed)
    data = spec.load_split(options, "train", None, args.seed)
    model, curve = lora_rehab(ckpt.model, list(ckpt.factorized), spec.task, data, schedule=args.schedule,
                              rank=args.rank, alpha=args.alpha, dropout=args.dropout, steps=steps, lr=lr,
                              batch_size=batch_size, seed=args.seed)
    record.metrics["final_task_loss"] = curve[-1]["task_loss"] if curve else None
    record.extra["curve"] = curve
    history = ckpt.history + [{"step": "rehab", **params}]
    with atomic_dir(out_dir) as out:
        checkpoint.save(checkpoint.Checkpoint(model, spec.name, options, ckpt.arch_config, ckpt.factorized, history), out)
        written = record.write(out)
    if args.evaluate:
        evaluate_saved(model, spec, options, n_factorized=len(ckpt.factorized), history=history, model_dir=out_dir,
                       batch_size=args.eval_batch_size)
    return written
