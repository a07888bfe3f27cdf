"""How a training step computes when a model outgrows float32 whole-batch steps: bf16 autocast,
gradient accumulation over micro-batches, activation recomputation per block.

The defaults are the step every embedded testbed takes (float32, the whole batch at once,
activations kept), and `train_steps` runs it exactly as before, bit for bit. Each switch trades
something for memory or speed:

- `precision="bf16"`: the forward pass and the task loss under torch.autocast in bfloat16
  (matrix products in bf16, reductions and norms in float32 as autocast decides); the weights,
  their gradients and Adam's state stay float32, and the rank penalty is computed outside
  autocast (its eigen-decompositions in float64 as always).
- `micro_batches=k`: each batch is cut into k row slices, each slice's loss back-propagated
  weighted by its share of the rows, so the summed gradient is the batch's (up to rounding);
  the penalty is added once per step. Peak activation memory falls by about k.
- `recompute=True`: each transformer block (streaming.find_blocks) keeps only its input and
  recomputes its activations in the backward pass (torch's non-reentrant checkpointing around
  the block's forward, which leaves parameter names and the saved state dict as they are); the
  gradients are the same, memory falls to about one block's activations, a step costs about
  one more forward pass.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
import torch.nn as nn

from prehab import tasks
from prehab.method.names import PRECISIONS


@dataclass(frozen=True)
class Compute:
    """What `train_steps` does per step beyond Adam on the loss (module docstring)."""

    precision: str = "float32"
    micro_batches: int = 1
    recompute: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        if self.micro_batches < 1:
            raise ValueError(f"micro_batches {self.micro_batches}; allowed: a whole number >= 1")

    @property
    def plain(self) -> bool:
        """Today's step: float32, the whole batch, activations kept."""
        return self == Compute()

    def autocast(self, model: nn.Module):
        """The context the forward pass runs in (a no-op in float32)."""
        if self.precision == "float32":
            return contextlib.nullcontext()
        device = next(model.parameters()).device.type
        return torch.autocast(device_type=device, dtype=torch.bfloat16)

    def slices(self, batch: dict[str, torch.Tensor]) -> list[tuple[dict[str, torch.Tensor], float]]:
        """The batch as (micro-batch, share of the rows) pairs: at most `micro_batches` slices
        of consecutive rows, none empty."""
        return tasks.row_slices(batch, self.micro_batches)

    def params(self) -> dict[str, object]:
        """The settings as a step's metrics.json states them: none for the plain step, so the
        records of runs made before these switches existed stay as they were."""
        if self.plain:
            return {}
        return {"precision": self.precision, "micro_batches": self.micro_batches, "recompute": self.recompute}


def enable_recompute(model: nn.Module, targets: list[str]) -> int:
    """Recompute each block's activations in the backward pass; returns how many blocks. A model
    without blocks (one MLP) is left as it is (0). Each block's forward is wrapped in torch's
    non-reentrant checkpoint, which recomputes as often as the graph is differentiated (Prehab's
    first step differentiates the task loss twice: once for the gradient-norm ratio)."""
    from torch.utils.checkpoint import checkpoint

    from prehab.method.streaming import find_blocks

    blocks = [block for name, block in find_blocks(model, targets) if name]
    for block in blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
    return len(blocks)
