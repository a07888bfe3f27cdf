"""Training across processes: one per GPU (or CPU process), started by `torchrun`, the model
sharded per transformer block with torch's FSDP2 (`torch.distributed.fsdp.fully_shard`).

Without torchrun (no WORLD_SIZE, or 1) nothing here changes a step: `World.single()` slices
nothing, shards nothing, gathers nothing, and the step is today's, bit for bit.

With N processes every rank draws the same batches (the same seeded order) and takes its own
contiguous rows of each (`World.rows`); its loss is weighted by its share of the rows times N, so
FSDP's gradient reduction, which averages over ranks, gives the whole batch's gradient (up to
rounding). The checkpoint is the full state dict, gathered to rank 0, which alone writes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from prehab import tasks
from prehab.errors import UsageError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1

    @classmethod
    def single(cls) -> World:
        return cls()

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes in the environment (RANK, WORLD_SIZE), its process group
        joined (nccl on GPUs, gloo on CPUs); one process without torchrun."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls.single()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return cls(rank=dist.get_rank(), size=dist.get_world_size())

    @property
    def main(self) -> bool:
        """The rank that writes outputs and prints progress."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.size > 1

    def rows(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
        """This rank's contiguous rows of a batch and the weight of its mean loss (its share of
        the rows times the world size; 1 in one process)."""
        if not self.sharded:
            return batch, 1.0
        n = tasks.num_rows(batch)
        if n < self.size:
            raise UsageError(f"a batch of {n} rows cannot be split over {self.size} processes; "
                             f"use a batch size of at least {self.size}")
        rows, share = tasks.row_slices(batch, self.size)[self.rank]
        return rows, share * self.size

    def mean_over_ranks(self, value: float) -> float:
        """The mean of a per-rank number (the batch's task loss from each rank's weighted one)."""
        if not self.sharded:
            return value
        import torch.distributed as dist

        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total) / self.size

    def shard(self, model: nn.Module, targets: list[str], precision: str = "float32") -> None:
        """FSDP2 over each transformer block (streaming.find_blocks), then the rest of the model;
        a no-op in one process. `precision` bf16: the gathered weights and the forward pass in
        bfloat16, the shards (master weights), their gradients' reduction and Adam in float32."""
        if not self.sharded:
            return
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from prehab.method.streaming import find_blocks

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if precision == "bf16" else MixedPrecisionPolicy()
        for name, block in find_blocks(model, targets):
            if name:
                fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The model's full state dict on rank 0 (None elsewhere), gathered from the shards; the
        model's own in one process."""
        if not self.sharded:
            return model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if self.main else None


def leave() -> None:
    """Leave the process group if this process joined one (torchrun's processes exit cleanly)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
