"""`prehab evaluate`: the task metric (accuracy or perplexity) and the model's size."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch.nn as nn

from prehab import checkpoint, tasks
from prehab.device import resolve_device
from prehab.layers import count_params
from prehab.outputs import StepRecord, atomic_dir
from prehab.registry import ArchSpec
from prehab.steps.common import add_common, add_model, checkpoint_options, file_bytes, positive_int, step_default

HELP = "measure top-1 accuracy or perplexity (non-finite outputs counted, never skipped) and model size"
EVAL_FOLDER = "eval"  # where compress/rehab --evaluate write, as `prehab evaluate --out <model>/eval` would


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p, "model to evaluate")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), help="evaluation batch size (default: per architecture)")
    add_common(p, seed=False)


def add_evaluate_flags(p: argparse.ArgumentParser) -> None:
    """For the steps that make models: evaluate each output in the same process (saves a job's
    start-up and model load per model, the bulk of an evaluation on the embedded testbeds)."""
    p.add_argument("--evaluate", action="store_true",
                   help="also evaluate every output model into <out>/eval, as `prehab evaluate --out <out>/eval`")
    p.add_argument("--eval-batch-size", type=positive_int("--eval-batch-size"),
                   help="batch size of --evaluate (default: per architecture)")


def measure(model: nn.Module, spec: ArchSpec, options: dict[str, Any], *, n_factorized: int,
            history: list, model_file: Path, batch_size: int | None) -> StepRecord:
    """The evaluation record of a model already in memory (`model_file`: its saved checkpoint)."""
    batch_size = step_default(batch_size, spec, "eval_batch_size")
    record = StepRecord("evaluate", {"model": str(model_file), "arch": spec.name, "arch_options": options,
                                     "batch_size": batch_size})
    data = spec.load_split(options, "test", options.get("n_test"), 0)
    record.metrics.update(tasks.evaluate(model, spec.task, data, batch_size))
    record.metrics.update(metric=tasks.METRIC[spec.task], model_params=count_params(model),
                          checkpoint_bytes=file_bytes(model_file), n_factorized=n_factorized)
    record.extra["history"] = history
    return record


def evaluate_saved(model: nn.Module, spec: ArchSpec, options: dict[str, Any], *, n_factorized: int,
                   history: list, model_dir: Path, batch_size: int | None) -> dict:
    """`measure` a model just saved into `model_dir` and write <model_dir>/eval/metrics.json."""
    record = measure(model, spec, options, n_factorized=n_factorized, history=history,
                     model_file=checkpoint.model_path(model_dir), batch_size=batch_size)
    with atomic_dir(Path(model_dir) / EVAL_FOLDER) as out:
        return record.write(out)


def run(args: argparse.Namespace) -> dict:
    path = checkpoint.model_path(args.model)
    ckpt = checkpoint.load(path)
    options = checkpoint_options(ckpt, args.arch_opt)
    ckpt.model.to(resolve_device(args.device))
    record = measure(ckpt.model, ckpt.spec, options, n_factorized=len(ckpt.factorized), history=ckpt.history,
                     model_file=path, batch_size=args.batch_size)
    with atomic_dir(args.out) as out:
        return record.write(out)
