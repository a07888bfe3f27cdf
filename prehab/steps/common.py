"""What the steps share at run time: seeding, a checkpoint's options, and the evaluation record
that `evaluate` writes and `compress`/`rehab --evaluate` write for each model they make."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from prehab import checkpoint
from prehab.layout import EVAL_DIR
from prehab.method.evaluate import evaluate_model
from prehab.outputs import StepRecord, atomic_dir
from prehab.registry import ArchSpec
from prehab.steps.options import StepOptions, step_default


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def checkpoint_options(ckpt: checkpoint.Checkpoint, opts: StepOptions) -> dict[str, Any]:
    """The options a checkpoint was made with, updated by `--arch-opt` overrides (typed, known keys)."""
    given = opts.arch_overrides()
    typed = ckpt.spec.resolve_options(given)  # checks the keys and casts the values
    return {**ckpt.arch_options, **{k: typed[k] for k in given}}


def evaluation_record(model: nn.Module, spec: ArchSpec, options: dict[str, Any], *, n_factorized: int,
                      history: list, model_file: Path, batch_size: int | None) -> StepRecord:
    """The `evaluate` step's record of a model in memory (`model_file`: its saved checkpoint)."""
    batch_size = step_default(batch_size, spec, "eval_batch_size")
    record = StepRecord("evaluate", {"model": str(model_file), "arch": spec.name, "arch_options": options,
                                     "batch_size": batch_size})
    record.metrics.update(evaluate_model(model, spec, options, n_factorized=n_factorized, model_file=model_file,
                                         batch_size=batch_size))
    record.extra["history"] = history
    return record


def evaluate_saved(model: nn.Module, spec: ArchSpec, options: dict[str, Any], *, n_factorized: int,
                   history: list, model_dir: Path, batch_size: int | None) -> dict:
    """Evaluate a model just saved into `model_dir` into <model_dir>/eval, as `prehab evaluate
    --out <model_dir>/eval` would (saves a job's start-up and model load per model)."""
    record = evaluation_record(model, spec, options, n_factorized=n_factorized, history=history,
                               model_file=checkpoint.model_path(model_dir), batch_size=batch_size)
    with atomic_dir(Path(model_dir) / EVAL_DIR) as out:
        return record.write(out)
