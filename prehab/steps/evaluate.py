"""`prehab evaluate`: the task metric (accuracy or perplexity) and the model's size."""

from __future__ import annotations

import argparse

from prehab import checkpoint, tasks
from prehab.device import resolve_device
from prehab.layers import count_params
from prehab.outputs import StepRecord, atomic_dir
from prehab.steps.common import add_common, add_model, checkpoint_options, file_bytes, positive_int, step_default

HELP = "measure top-1 accuracy or perplexity (non-finite outputs counted, never skipped) and model size"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p, "model to evaluate")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), help="evaluation batch size (default: per architecture)")
    add_common(p, seed=False)


def run(args: argparse.Namespace) -> dict:
    path = checkpoint.model_path(args.model)
    ckpt = checkpoint.load(path)
    spec = ckpt.spec
    options = checkpoint_options(ckpt, args.arch_opt)
    batch_size = step_default(args.batch_size, spec, "eval_batch_size")
    record = StepRecord("evaluate", {"model": str(args.model), "arch": spec.name, "arch_options": options,
                                     "batch_size": batch_size})
    ckpt.model.to(resolve_device(args.device))
    data = spec.load_split(options, "test", options.get("n_test"), 0)
    record.metrics.update(tasks.evaluate(ckpt.model, spec.task, data, batch_size))
    record.metrics.update(metric=tasks.METRIC[spec.task], model_params=count_params(ckpt.model),
                          checkpoint_bytes=file_bytes(path), n_factorized=len(ckpt.factorized))
    record.extra["history"] = ckpt.history
    with atomic_dir(args.out) as out:
        return record.write(out)
