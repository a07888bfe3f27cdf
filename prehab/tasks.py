"""Task kinds: how a batch reaches a model, which loss trains it and which metric judges it.

Data are plain dicts of tensors aligned on dim 0 (ArchSpec.load_split):
- `image-cls`: `pixel_values` (N, C, H, W) float, `labels` (N,) long.
- `text-cls`:  `input_ids`, `attention_mask` (N, T) long, `labels` (N,) long.
- `lm`:        `input_ids` (N, T) long: non-overlapping windows; the model shifts labels itself.
Calibration splits may omit `labels`.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from prehab.errors import UsageError

TASKS = ("image-cls", "text-cls", "lm")
METRIC = {"image-cls": "accuracy", "text-cls": "accuracy", "lm": "perplexity"}  # unless the arch names its own
HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "mcc": True, "perplexity": False}  # higher: compared in points


def num_rows(data: dict[str, torch.Tensor]) -> int:
    return len(next(iter(data.values())))


def take(data: dict[str, torch.Tensor], index) -> dict[str, torch.Tensor]:
    return {k: v[index] for k, v in data.items()}


def row_slices(batch: dict[str, torch.Tensor], k: int) -> list[tuple[dict[str, torch.Tensor], float]]:
    """The batch as at most k slices of consecutive rows, none empty, each with its share of the
    rows (micro-batches: prehab/compute.py; ranks: prehab/distributed.py)."""
    n = num_rows(batch)
    bounds = torch.linspace(0, n, min(k, n) + 1).round().long().tolist()
    return [(take(batch, torch.arange(lo, hi)), (hi - lo) / n) for lo, hi in zip(bounds, bounds[1:])]


def batches(data: dict[str, torch.Tensor], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """In-order batches (evaluation, calibration)."""
    n = num_rows(data)
    for start in range(0, n, batch_size):
        yield take(data, slice(start, start + batch_size))


def by_length(task: str, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Text rows reordered longest first (a stable sort), other tasks' data as they are: batches
    of similar lengths carry less padding through the forward passes (`model_inputs` trims a
    batch to its longest row; bert-small's calibration: 28% padding against 44% in order,
    benchmarks/compress_speed.py).
    For calibration, whose moments are sums over tokens: the order changes only their rounding."""
    if task != "text-cls":
        return data
    order = torch.sort(data["attention_mask"].sum(dim=1), descending=True, stable=True).indices
    return take(data, order)


def shuffled_batches(
    data: dict[str, torch.Tensor], batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[dict[str, torch.Tensor]]:
    """`steps` training batches, reshuffled each epoch from `generator` (deterministic per seed)."""
    n = num_rows(data)
    if n == 0:
        raise UsageError("training split is empty")
    order = torch.randperm(n, generator=generator)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=generator), 0
        yield take(data, order[pos : pos + batch_size])
        pos += batch_size


def model_inputs(task: str, batch: dict[str, torch.Tensor]) -> tuple[tuple, dict]:
    """(args, kwargs) for `model(*args, **kwargs)`; labels never reach the model."""
    if task == "image-cls":
        return (batch["pixel_values"],), {}
    if task == "text-cls":
        mask = batch["attention_mask"]
        width = int(mask.sum(dim=1).max())  # right padding: columns past the longest row are all padding
        assert bool(mask[:, width:].eq(0).all()), "text batches must be right-padded"
        return (), {"input_ids": batch["input_ids"][:, :width], "attention_mask": mask[:, :width]}
    if task == "lm":
        return (), {"input_ids": batch["input_ids"]}
    raise UsageError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def token_mask(task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """(B, T) bool mask of real tokens, or None when every position counts (images, LM windows)."""
    if task == "text-cls":
        _, kwargs = model_inputs(task, batch)
        return kwargs["attention_mask"].bool()
    return None


def logits_of(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (a parameter-free module computes on the CPU)."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def to_device(batch: dict[str, torch.Tensor], device: torch.device,
              dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The batch on `device`; its floating tensors (images) in `dtype` when given."""
    return {k: v.to(device, dtype=dtype if dtype is not None and v.is_floating_point() else None,
                    non_blocking=True) for k, v in batch.items()}


def forward(model: nn.Module, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of one batch, moved to wherever the model lives, float inputs in its weights' dtype
    (a model cast to bf16 for evaluation takes bf16 images; data stay on the CPU until then)."""
    first = next(model.parameters(), None)
    batch = to_device(batch, model_device(model), None if first is None else first.dtype)
    args, kwargs = model_inputs(task, batch)
    return logits_of(model(*args, **kwargs))


def loss(model: nn.Module, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean training loss of one batch (cross-entropy; next-token cross-entropy for `lm`)."""
    logits = forward(model, task, batch)
    batch = to_device(batch, logits.device)
    if task == "lm":
        ids = batch["input_ids"]
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    return F.cross_entropy(logits, batch["labels"])
