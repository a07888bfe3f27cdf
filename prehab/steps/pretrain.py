"""`prehab pretrain`: the dense starting model, trained from scratch or loaded and fine-tuned."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prehab.steps.options import COUNT, NON_NEGATIVE, POSITIVE, StepOptions, option, step_default

HELP = "build the dense model (random init or pretrained weights) and train it on the task"


@dataclass(kw_only=True)
class Options(StepOptions):
    arch: str = option("architecture name (`prehab archs` lists them)")
    steps: int | None = option("training steps; 0 keeps the loaded weights", None, type=int, check=NON_NEGATIVE)
    lr: float | None = option("Adam learning rate", None, type=float, check=POSITIVE)
    batch_size: int | None = option("batch size", None, type=int, check=COUNT)
    seed: int = option("seed of data order, sampling and init", 0, type=int)
    out: Path = option("output folder (written atomically: all or nothing)", type=Path)


def run(opts: Options) -> dict:
    # imported here: `prehab --help` and `prehab STEP --help` must not load torch
    from prehab import checkpoint
    from prehab.checkpoint import Checkpoint
    from prehab.device import resolve_device
    from prehab.outputs import StepRecord, atomic_dir
    from prehab.registry import get_arch
    from prehab.steps.common import seed_everything
    from prehab.train import train_steps

    spec = get_arch(opts.arch)
    options = spec.resolve_options(opts.arch_overrides())
    steps = step_default(opts.steps, spec, "pretrain_steps")
    lr = step_default(opts.lr, spec, "pretrain_lr")
    batch_size = step_default(opts.batch_size, spec, "batch_size")
    record = StepRecord("pretrain", {"arch": spec.name, "arch_options": options, "steps": steps, "lr": lr,
                                     "batch_size": batch_size, "seed": opts.seed})
    seed_everything(opts.seed)
    model, arch_config = spec.build_pretrained(options)
    model.to(resolve_device(opts.device))
    train = spec.load(options, "train", None, opts.seed) if steps else None
    curve = train_steps(model, spec.task, train, [p for p in model.parameters() if p.requires_grad],
                        steps=steps, lr=lr, batch_size=batch_size, seed=opts.seed, desc="pretrain") if steps else []
    record.metrics["final_task_loss"] = curve[-1]["task_loss"] if curve else None
    record.extra["curve"] = curve
    with atomic_dir(opts.out) as out:
        history = [{"step": "pretrain", **record.params}]
        checkpoint.save(Checkpoint(model, spec.name, options, arch_config, {}, history), out)
        return record.write(out)
