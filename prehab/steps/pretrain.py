"""`prehab pretrain`: the dense starting model, trained from scratch or loaded and fine-tuned."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prehab.errors import UsageError
from prehab.steps.options import COUNT, NON_NEGATIVE, POSITIVE, TrainingOptions, option, step_default

HELP = "build the dense model (random init or pretrained weights) and train it on the task"


@dataclass(kw_only=True)
class Options(TrainingOptions):
    arch: str = option("architecture name (`prehab archs` lists them)")
    steps: int | None = option("training steps; 0 keeps the loaded weights", None, type=int, check=NON_NEGATIVE)
    lr: float | None = option("Adam learning rate", None, type=float, check=POSITIVE)
    batch_size: int | None = option("batch size", None, type=int, check=COUNT)
    full_steps: int | None = option("after --steps (for vit-small a linear probe, the backbone frozen), train "
                                    "EVERY parameter this many more steps: a converged dense model, as Prehab "
                                    "assumes (0: none)", None, type=int, check=NON_NEGATIVE)
    full_lr: float | None = option("Adam learning rate of the --full-steps", None, type=float, check=POSITIVE)
    val_every: int = option("score the validation split every this many steps of each phase (and at its end) "
                            "and record it in the curve (`val_<metric>`): where training plateaus (0: never)",
                            0, type=int, check=NON_NEGATIVE)
    seed: int = option("seed of data order, sampling and init", 0, type=int)
    out: Path = option("output folder (written atomically: all or nothing)", type=Path)


def run(opts: Options) -> dict:
    # imported here: `prehab --help` and `prehab STEP --help` must not load torch
    from prehab import checkpoint
    from prehab.checkpoint import Checkpoint
    from prehab.compute import enable_recompute
    from prehab.device import resolve_device
    from prehab.distributed import World
    from prehab.layers import find_targets
    from prehab.outputs import StepRecord, atomic_dir
    from prehab.registry import get_arch
    from prehab.steps.common import seed_everything
    from prehab.train import train_steps

    spec = get_arch(opts.arch)
    options = spec.resolve_options(opts.arch_overrides())
    steps = step_default(opts.steps, spec, "pretrain_steps")
    lr = step_default(opts.lr, spec, "pretrain_lr")
    batch_size = step_default(opts.batch_size, spec, "batch_size")
    full_steps = step_default(opts.full_steps, spec, "pretrain_full_steps")
    full_lr = step_default(opts.full_lr, spec, "pretrain_full_lr")
    params = {"arch": spec.name, "arch_options": options, "steps": steps, "lr": lr, "batch_size": batch_size,
              "seed": opts.seed}
    if opts.val_every and not ((steps or full_steps) and options.get("n_val")):
        raise UsageError(f"--val-every {opts.val_every} needs training steps (got --steps {steps}, --full-steps "
                         f"{full_steps}) and a validation split (n_val of {spec.name}: {options.get('n_val')}; "
                         "set it with --arch-opt n_val=N)")
    if full_steps:  # recorded only when used, so the records of probe-only models stay as they were
        params.update(full_steps=full_steps, full_lr=full_lr)
    compute = opts.compute()
    params.update(compute.params())
    record = StepRecord("pretrain", params)
    seed_everything(opts.seed)
    model, arch_config = spec.build_pretrained(options)
    model.to(resolve_device(opts.device))
    train = spec.load(options, "train", None, opts.seed) if steps or full_steps else None
    world = World.from_env()
    if compute.recompute:
        enable_recompute(model, find_targets(model, spec.targets))
    world.shard(model, find_targets(model, spec.targets), compute.precision)

    def phase(n: int, lr: float, desc: str) -> list[dict]:
        """n Adam steps of the parameters that train now (its own optimiser, the same data order)."""
        watch = validation_watch(model, spec, options, opts.val_every, n)
        return train_steps(model, spec.task, train, [p for p in model.parameters() if p.requires_grad], steps=n,
                           lr=lr, batch_size=batch_size, seed=opts.seed, desc=desc, log_extra=watch, compute=compute, world=world,
                           log_at=frozenset(range(opts.val_every, n, opts.val_every)) if watch else frozenset())

    curve = phase(steps, lr, "pretrain") if steps else []
    if full_steps:  # 2) every parameter, from where 1) left it
        model.requires_grad_(True)
        curve += [{**row, "step": row["step"] + steps, "phase": "full"}
                  for row in phase(full_steps, full_lr, "pretrain, all parameters")]
    record.metrics["final_task_loss"] = curve[-1]["task_loss"] if curve else None
    record.extra["curve"] = curve
    state = world.full_state_dict(model)
    written = None
    if world.main:
        with atomic_dir(opts.out) as out:
            history = [{"step": "pretrain", **record.params}]
            checkpoint.save(Checkpoint(model, spec.name, options, arch_config, {}, history), out, state)
            written = record.write(out)
    return written


def validation_watch(model, spec, options: dict, every: int, steps: int):
    """log_extra for train_steps: the validation metric at every `every`-th step and the last
    (None when `every` is 0). Scoring switches the model to eval mode; it is switched back, so
    the steps after it train as before."""
    if not every:
        return None
    from prehab.data.holdout import VAL_SPLIT
    from prehab.method.evaluate import task_metrics

    val = spec.load(options, VAL_SPLIT, None, 0)
    metric = spec.metric_of(options)
    batch_size = step_default(None, spec, "eval_batch_size")

    def scores(step: int) -> dict[str, float]:
        if step % every and step != steps:
            return {}
        value = task_metrics(model, spec.task, val, batch_size, metric)[metric]
        model.train()
        return {f"val_{metric}": value}
    return scores
