"""Where a step computes: `auto` takes the GPU when there is one (paper-scale runs on a
cluster), the CPU otherwise. Data stay on the CPU and move batch by batch (prehab.tasks)."""

from __future__ import annotations

import os

import torch

from prehab.errors import UsageError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """The device a step runs on; a GPU is this process's own under torchrun (LOCAL_RANK), so
    every rank loads its model where its process group will use it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but torch sees no CUDA device; use auto or cpu")
    if name not in DEVICES:
        raise UsageError(f"unknown device {name!r}; allowed: {', '.join(DEVICES)}")
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)
