"""What the steps share at run time: seeding and a checkpoint's options."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from prehab import checkpoint
from prehab.steps.options import StepOptions


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def checkpoint_options(ckpt: checkpoint.Checkpoint, opts: StepOptions) -> dict[str, Any]:
    """The options a checkpoint was made with, updated by `--arch-opt` overrides (typed, known keys)."""
    given = opts.arch_overrides()
    typed = ckpt.spec.resolve_options(given)  # checks the keys and casts the values
    return {**ckpt.arch_options, **{k: typed[k] for k in given}}
