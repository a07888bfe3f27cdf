"""The rank penalty when the model is sharded across processes (prehab/distributed.py): each
target matrix is priced on exactly one rank, its owner (target i: rank i mod world size), so the
ranks split the spectral work instead of repeating it, and the estimators' state (the lagged
linearisations, the tracked eigenbases) lives on the owner only.

Per step: every chosen target's trainable tensor is gathered in full (an all-gather, in target
order on every rank); the owner makes the gathered copy a leaf, evaluates its estimator's term on
it and differentiates it there; each gradient goes back to the shards with a reduce-scatter
(the owner's gradient, zeros elsewhere), and the terms' sum is all-reduced. The returned term
carries those shard gradients into the parameters' .grad when the step back-propagates it, next
to the task gradient FSDP reduced, so Adam sees what one process would have computed.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Partial

from prehab.distributed import World
from prehab.method.grad_scale import GradScale
from prehab.method.surrogates import entropy_rank_of, gram_eigenvalues

Tensor = torch.Tensor


class _OnShards(torch.autograd.Function):
    """A scalar computed elsewhere whose gradient with respect to the sharded parameters is given."""

    @staticmethod
    def forward(ctx, value: Tensor, *shards_and_grads: Tensor) -> Tensor:
        half = len(shards_and_grads) // 2
        ctx.grads = shards_and_grads[half:]
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        return (None, *(g * grad_out for g in ctx.grads), *(None for _ in ctx.grads))


class ShardedTargets:
    """The estimators' Targets (estimators.Targets) over a sharded model: `params[i]` is target
    i's full trainable tensor, a leaf, on its owner (None on the other ranks until gathered);
    the matrix R reads is made from it as `targets.matrix_of` makes it from the parameter."""

    def __init__(self, targets, world: World):
        self.targets, self.world = targets, world
        self.shards: list[DTensor] = targets.params
        self.params: list[Tensor | None] = [None] * len(self.shards)

    def owns(self, i: int) -> bool:
        return i % self.world.size == self.world.rank

    def owned(self, chosen) -> list[int]:
        return [i for i in chosen if self.owns(i)]

    def gather(self, chosen, everywhere: bool = False) -> None:
        """Target i's full tensor as a fresh leaf on its owner (on every rank with `everywhere`):
        a collective, called by every rank with the same `chosen`."""
        for i in chosen:
            full = self.shards[i].full_tensor().detach()
            if everywhere or self.owns(i):
                self.params[i] = full.requires_grad_(True)
            elif self.params[i] is not None:
                self.params[i] = None

    def release(self) -> None:
        """Drop the full copies of the targets this rank does not own."""
        self.params = [p if self.owns(i) else None for i, p in enumerate(self.params)]

    def penalised(self, chosen) -> list[Tensor]:
        return [self.targets.matrix_of(i, self.params[i]) for i in chosen]

    def to_shards(self, chosen: list[int], grads: dict[int, Tensor]) -> list[DTensor]:
        """Each chosen target's gradient as its shards on this rank: the owner's full gradient
        reduce-scattered (the other ranks contribute zeros)."""
        out = []
        for i in chosen:
            shard = self.shards[i]
            full = grads.get(i)
            if full is None:
                full = torch.zeros(shard.shape, dtype=shard.dtype, device=shard.to_local().device)
            partial = DTensor.from_local(full.to(shard.dtype), shard.device_mesh, [Partial()] * shard.device_mesh.ndim)
            out.append(partial.redistribute(shard.device_mesh, shard.placements))
        return out

    def sum(self, value: float) -> float:
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total)

    def most(self, value: float) -> float:
        top = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        return float(top)


def penalty_term(estimate, sharded: ShardedTargets, step: int, chosen: list[int]) -> Tensor:
    """sum_{i in chosen} R(A_i) / n over every rank (what `estimate(step, chosen)` gives in one
    process), each target evaluated on its owner; back-propagating it adds the penalty's
    gradient to the sharded parameters."""
    sharded.gather(chosen)
    mine = sharded.owned(chosen)
    grads: dict[int, Tensor] = {}
    local = 0.0
    if mine:
        with torch.enable_grad():
            term = estimate(step, mine)
            leaves = [sharded.params[i] for i in mine]
            grads = dict(zip(mine, torch.autograd.grad(term, leaves)))
        local = float(term.detach())
    value = torch.tensor(sharded.sum(local), dtype=torch.float32)
    shards = [sharded.shards[i] for i in chosen]
    return _OnShards.apply(value, *shards, *sharded.to_shards(chosen, grads))


def grad_scale(estimate, sharded: ShardedTargets) -> GradScale:
    """Step 1's two gradient norms over every rank: the task's from the reduced shard gradients,
    the unweighted exact penalty's (the mean over all targets) from each owner's targets."""
    task = sum(float(p.grad.to_local().double().square().sum()) for p in sharded.shards if p.grad is not None)
    n = len(sharded.shards)
    sharded.gather(range(n))
    mine = sharded.owned(range(n))
    penalty = 0.0
    if mine:
        with torch.enable_grad():
            value = torch.stack([estimate.anchors.evaluate(i, A) for A, i in zip(sharded.penalised(mine), mine)]).sum() / n
            grads = torch.autograd.grad(value, [sharded.params[i] for i in mine])
        penalty = sum(float(g.double().square().sum()) for g in grads)
    return GradScale(math.sqrt(sharded.sum(task)), math.sqrt(sharded.sum(penalty)))


def log_row(estimate, sharded: ShardedTargets, surrogate, space: str, *, surrogate_too: bool) -> dict[str, float]:
    """Prehab's logged numbers (run_prehab's log_extra) over every rank, from exact spectra of
    each owner's targets: the mean entropy rank, the estimator's counters and, with
    `surrogate_too`, the exact mean surrogate."""
    n = len(sharded.shards)
    sharded.gather(range(n))
    mine = sharded.owned(range(n))
    ranks = values = 0.0
    with torch.no_grad():
        for i, A in zip(mine, sharded.penalised(mine)):
            lam = gram_eigenvalues(A)
            ranks += float(entropy_rank_of(lam.sqrt()))
            anchor = estimate.anchors.values.get(i)
            values += float(estimate.anchors.evaluate(i, A) if space == "raw" else
                            surrogate.of_eigenvalues(lam, tuple(A.shape), anchor))
    sharded.release()
    row = {"entropy_rank": sharded.sum(ranks) / n, **reduce_stats(estimate.stats(), sharded)}
    if surrogate_too:
        row["surrogate"] = sharded.sum(values) / n
    return row


def reduce_stats(stats: dict[str, float], sharded: ShardedTargets) -> dict[str, float]:
    """An estimator's logged counters over every rank: counts summed, worst cases the largest."""
    return {k: sharded.most(v) if k in ("gradient_drift", "linearisation_error") else sharded.sum(v)
            for k, v in stats.items()}
