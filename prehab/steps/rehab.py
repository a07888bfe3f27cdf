"""`prehab rehab`: LoRA recovery (peft) of a compressed model's factor layers, merged afterwards.

Several --model values (e.g. one model compressed at several ratios) run one after the other
in one process: one start-up, one peft import, one load of the training data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prehab.method.names import LORA_SCHEDULES
from prehab.steps.options import (COUNT, NON_NEGATIVE, POSITIVE, TrainingOptions, distinct_outputs,
                                  eval_precision_option, option, step_default)

HELP = "recover a compressed model with LoRA on its factors (joint, or sequential U then V as SVD-LLM)"


@dataclass(kw_only=True)
class Options(TrainingOptions):
    model: list[Path] = option("compressed model(s): a step's output folder or its model.pt; one --out each",
                               type=Path, many=True)
    schedule: str = option("joint: u and v together; sequential: u, merge, then v", "sequential",
                           choices=LORA_SCHEDULES)
    rank: int = option("LoRA rank r", 8, type=int, check=COUNT)
    alpha: float = option("LoRA alpha", 16.0, type=float, check=POSITIVE)
    dropout: float = option("LoRA dropout", 0.05, type=float, check=NON_NEGATIVE)
    steps: int | None = option("steps per phase", None, type=int, check=NON_NEGATIVE)
    lr: float | None = option("Adam learning rate", None, type=float, check=POSITIVE)
    batch_size: int | None = option("batch size", None, type=int, check=COUNT)
    evaluate: bool = option("also evaluate every output model into <out>/eval, as `prehab evaluate --out "
                            "<out>/eval`", False, action="store_true")
    eval_batch_size: int | None = option("batch size of --evaluate", None, type=int, check=COUNT)
    eval_precision: str = eval_precision_option()
    seed: int = option("seed of LoRA init, dropout and data order", 0, type=int)
    out: list[Path] = option("output folders, one per --model value in the same order (each written "
                             "atomically)", type=Path, many=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        distinct_outputs(self.model, self.out, "--model")


def run(opts: Options) -> dict | list[dict]:
    records = [rehab_one(opts, model, out) for model, out in zip(opts.model, opts.out)]
    return records if len(records) > 1 else records[0]


def rehab_one(opts: Options, model_path: Path, out_dir: Path) -> dict:
    # imported here: `prehab --help` and `prehab STEP --help` must not load torch
    from prehab import checkpoint
    from prehab.device import resolve_device
    from prehab.distributed import World
    from prehab.method.evaluate import evaluate_saved
    from prehab.method.rehab import lora_rehab
    from prehab.outputs import StepRecord, atomic_dir
    from prehab.steps.common import checkpoint_options, seed_everything

    ckpt = checkpoint.load(model_path)
    spec = ckpt.spec
    options = checkpoint_options(ckpt, opts)
    steps = step_default(opts.steps, spec, "rehab_steps")
    lr = step_default(opts.lr, spec, "rehab_lr")
    batch_size = step_default(opts.batch_size, spec, "batch_size")
    params = {"model": str(model_path), "arch": spec.name, "schedule": opts.schedule, "rank": opts.rank,
              "alpha": opts.alpha, "dropout": opts.dropout, "steps": steps, "lr": lr, "batch_size": batch_size,
              "seed": opts.seed, **opts.compute().params()}
    record = StepRecord("rehab", params)
    ckpt.model.to(resolve_device(opts.device))
    seed_everything(opts.seed)
    data = spec.load(options, "train", None, opts.seed)
    world = World.from_env()
    model, curve = lora_rehab(ckpt.model, list(ckpt.factorized), spec.task, data, schedule=opts.schedule,
                              rank=opts.rank, alpha=opts.alpha, dropout=opts.dropout, steps=steps, lr=lr,
                              batch_size=batch_size, seed=opts.seed, compute=opts.compute(), world=world)
    record.metrics["final_task_loss"] = curve[-1]["task_loss"] if curve else None
    record.extra["curve"] = curve
    history = ckpt.history + [{"step": "rehab", **params}]
    if not world.main:  # every rank holds the merged model; rank 0 writes and evaluates it
        return None
    with atomic_dir(out_dir) as out:
        checkpoint.save(checkpoint.Checkpoint(model, spec.name, options, ckpt.arch_config, ckpt.factorized, history), out)
        written = record.write(out)
    if opts.evaluate:
        evaluate_saved(model, spec, options, n_factorized=len(ckpt.factorized), history=history, model_dir=out_dir,
                       batch_size=step_default(opts.eval_batch_size, spec, "eval_batch_size"),
                           precision=opts.eval_precision)
    return written
