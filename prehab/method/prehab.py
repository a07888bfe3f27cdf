"""The Prehab loop: task loss + lambda(t) * mean_l R(A_l), on whitened or plain weights.

Spaces (what is trained, and which matrix the penalty reads):
- `whitened` (the authors'): train a delta D per target, W = (A0 + D) L^{-1}, penalty on A0 + D
  (A0 = W L fixed, D starts at 0: the model starts exactly where it was; the penalty reads
  A0 + D without a solve, the forward pass pays one triangular solve).
- `weight`: train W itself, penalty on the same whitened A = W L. Same objective, plain step
  geometry: Adam's per-entry steps are not amplified by L^{-1} (docs/method.md, "Spaces").
- `raw` (unwhitened Prehab): train W itself, penalty on W (no whitening anywhere).
Only the target matrices train; everything else is frozen. lambda = 0 is the control: the same
fine-tuning without the penalty. The mean entropy effective rank of the WHITENED weights is
logged in every space, so curves are comparable. docs/method.md, section 4, says why.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from prehab.compute import Compute
from prehab.distributed import World
from prehab.errors import NumericalError, UsageError
from prehab.layers import get_module, replace_modules
from prehab.method import grad_scale, names, sharded
from prehab.method.calibrate import Whitening, whiten
from prehab.method.estimators import MeanPenalty, Penalty, Targets
from prehab.method.grad_scale import GradScale
from prehab.method.lagged import LaggedPenalty
from prehab.method.schedule import LambdaSchedule, PenaltyFrequency
from prehab.method.surrogates import Surrogate, entropy_rank_of, gram_eigenvalues
from prehab.registry import Registry
from prehab.train import train_steps

SPACES = names.SPACES

# The penalty estimators by name: each builds a MeanPenalty over the targets.
PENALTIES: Registry[Callable[[Surrogate, Targets, int], MeanPenalty]] = Registry("estimator")
PENALTIES.register("exact", lambda surrogate, targets, refresh_every: Penalty(surrogate, "exact", targets))
PENALTIES.register("fast", lambda surrogate, targets, refresh_every: Penalty(surrogate, "fast", targets))
PENALTIES.register("lagged", lambda surrogate, targets, refresh_every: LaggedPenalty(surrogate, targets, refresh_every))
assert sorted(PENALTIES.names()) == sorted(names.ESTIMATORS), PENALTIES.names()


class WhitenedDelta(nn.Module):
    """Stands in for an nn.Linear during Prehab; `fold()` gives the trained nn.Linear back."""

    def __init__(self, linear: nn.Linear, L: torch.Tensor, L_work: torch.Tensor | None = None):
        """`L` the calibration's factor (`fold` reads it in float64), `L_work` the same in the
        weight's dtype and device, shared by layers that read one input (else made here)."""
        super().__init__()
        out_f, in_f = linear.weight.shape
        assert L.shape == (in_f, in_f), f"factor {tuple(L.shape)} does not fit weight {tuple(linear.weight.shape)}"
        self.linear = linear  # frozen W0 and bias
        self.factor = L  # not a buffer: no float64 copy per layer, nothing for sharding to move
        if L_work is None:
            L_work = L.to(linear.weight.device, linear.weight.dtype)
        self.register_buffer("L", L_work, persistent=False)  # (in, in)
        A0 = whiten(linear.weight.detach(), L.to(linear.weight.device))  # (out, in)
        self.register_buffer("A0", A0.to(linear.weight.dtype), persistent=False)
        self.delta = nn.Parameter(torch.zeros_like(linear.weight))  # (out, in)

    def whitened(self) -> torch.Tensor:
        """A = A0 + D, the matrix the surrogate and SVD-LLM see."""
        return self.A0 + self.delta

    def weight(self) -> torch.Tensor:
        step = torch.linalg.solve_triangular(self.L, self.delta, upper=False, left=False)  # D L^{-1} (out, in)
        return self.linear.weight + step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.linear.bias)

    @torch.no_grad()
    def fold(self) -> nn.Linear:
        self.linear.weight.copy_(folded_weight(self.linear.weight, self.delta,
                                               self.factor.to(self.delta.device, torch.float64)))
        return self.linear


def folded_weight(W0: torch.Tensor, delta: torch.Tensor, L64: torch.Tensor) -> torch.Tensor:
    """W0 + D L^{-1} in float64, in W0's dtype: the weight a whitened-delta target ends with."""
    step = torch.linalg.solve_triangular(L64, delta.double(), upper=False, left=False)
    return (W0.double() + step).to(W0.dtype)


def fold_state(state: dict[str, torch.Tensor], targets: list[str], whitening: Whitening) -> dict[str, torch.Tensor]:
    """A whitened-delta model's state dict (gathered from its shards) as the plain model's: each
    target's `linear.weight` and `delta` folded into `weight`, `linear.bias` back to `bias`."""
    state = dict(state)
    for name in targets:
        W0, delta = state.pop(f"{name}.linear.weight"), state.pop(f"{name}.delta")
        state[f"{name}.weight"] = folded_weight(W0, delta, whitening.factor_of(name).to(W0.device).double())
        if f"{name}.linear.bias" in state:
            state[f"{name}.bias"] = state.pop(f"{name}.linear.bias")
    return state


class _Targets:
    """The target matrices in the chosen space: trainable parameters and the matrices R reads."""

    def __init__(self, model: nn.Module, names: list[str], whitening: Whitening, space: str):
        if space not in SPACES:
            raise UsageError(f"unknown Prehab space {space!r}; known: {', '.join(SPACES)}")
        self.space, self.names, self.whitening = space, names, whitening
        shared: dict[str, torch.Tensor] = {}  # one working copy per distinct input (its group leader)

        def work(name: str, weight: torch.Tensor) -> torch.Tensor:
            key = whitening.owner[name]
            if key not in shared:
                shared[key] = whitening.factor_of(name).to(weight.device, weight.dtype)
            return shared[key]

        if space == "whitened":
            replace_modules(model, names, lambda name, old: WhitenedDelta(old, whitening.factor_of(name),
                                                                          work(name, old.weight)))
        self.modules = [get_module(model, n) for n in names]
        if space != "whitened":
            self.factors = [work(n, m.weight) for m, n in zip(self.modules, names)]
        self.collect()
        for p in self.params:
            p.requires_grad_(True)

    def keep_only(self, owned: set[int]) -> None:
        """Drop what only the penalty reads (the whitened space's A0, the weight space's factors)
        from the targets this process does not price (sharded.ShardedTargets.owns)."""
        for i, module in enumerate(self.modules):
            if i in owned:
                continue
            if self.space == "whitened":
                module.A0 = None
            elif self.space == "weight":
                self.factors[i] = None

    def collect(self) -> None:
        """The trainable tensors, read again from the modules (sharding replaces them)."""
        self.params = [m.delta if self.space == "whitened" else m.weight for m in self.modules]

    def penalised(self, chosen: list[int]) -> list[torch.Tensor]:
        """The matrices R reads, of the targets numbered `chosen`."""
        return [self.matrix_of(i, self.params[i]) for i in chosen]

    def matrix_of(self, i: int, param: torch.Tensor) -> torch.Tensor:
        """The matrix R reads of target i, given its trainable tensor (the parameter itself, or
        its full copy gathered from a sharded model: prehab/method/sharded.py)."""
        if self.space == "whitened":
            return self.modules[i].A0 + param
        if self.space == "weight":
            return whiten(param, self.factors[i], param.dtype)
        return param

    @torch.no_grad()
    def whitened(self) -> list[torch.Tensor]:
        if self.space == "whitened":
            return [m.whitened() for m in self.modules]
        return [whiten(m.weight, self.whitening.factor_of(n)) for m, n in zip(self.modules, self.names)]

    def fold(self, model: nn.Module) -> None:
        if self.space == "whitened":
            replace_modules(model, self.names, lambda name, old: old.fold())


@dataclass(frozen=True)
class PrehabSettings:
    """Everything `run_prehab` is told, in one place (the CLI's flags, prehab/steps/prehab.py,
    give the per-architecture defaults of steps, lr and batch size).

    Args:
        surrogate: the rank surrogate R.
        schedule: lambda(t).
        space: what trains and which matrix R reads (`SPACES`).
        steps, lr, batch_size: Adam's steps (constant lr) and batch.
        seed: of the data order.
        log_every: the curve's logging interval.
        penalty_every, stagger: `PenaltyFrequency` (1: every matrix on every step; what
            studies should use).
        estimator: how R and its gradient are computed (`PENALTIES`).
        refresh_every: the longest lag of the `lagged` estimator.
        lam_scale: `none`, lambda as given; `grad`, lambda times the gradient-norm ratio rho of
            step 1 (grad_scale.py).
        measure_scale: measure rho at step 1 (recorded with either lam_scale). False only to
            check that measuring changes nothing; `grad` needs it.
        compute: bf16 autocast and micro-batches of each step (prehab/compute.py; the default is
            the plain float32 whole-batch step).
    """

    surrogate: Surrogate
    schedule: LambdaSchedule
    space: str
    steps: int
    lr: float
    batch_size: int
    seed: int
    log_every: int = 10
    penalty_every: int = 1
    stagger: bool = False
    estimator: str = "exact"
    refresh_every: int = names.DEFAULT_REFRESH
    lam_scale: str = "none"
    measure_scale: bool = True
    compute: Compute = Compute()

    def __post_init__(self) -> None:
        for name, value, allowed in (("space", self.space, SPACES), ("estimator", self.estimator, names.ESTIMATORS),
                                     ("lam_scale", self.lam_scale, names.LAM_SCALES)):
            if value not in allowed:
                raise UsageError(f"unknown Prehab {name} {value!r}; known: {', '.join(allowed)}")
        if self.lam_scale == "grad" and not self.measure_scale:
            raise UsageError("lam_scale grad scales lambda by the ratio measured at step 1: it needs measure_scale")
        PenaltyFrequency(self.penalty_every, self.stagger)  # checks the frequency

    @property
    def frequency(self) -> PenaltyFrequency:
        return PenaltyFrequency(self.penalty_every, self.stagger)


@dataclass
class PrehabResult:
    """What a Prehab run reports besides the trained model.

    Attributes:
        curve: the logged rows (task loss, lambda, surrogate, entropy rank, estimator stats).
        scale: step 1's gradient norms and their ratio rho (None: no step ran, or not measured).
        lam_scale: how lambda was scaled (`names.LAM_SCALES`).
        lam: the schedule's lambda, before scaling.
        anchors: an anchored surrogate's constant per target name (empty for the others).
    """

    curve: list[dict[str, float]] = field(default_factory=list)
    scale: GradScale | None = None
    lam_scale: str = "none"
    lam: float = 0.0
    anchors: dict[str, float] = field(default_factory=dict)

    @property
    def factor(self) -> float | None:
        """What lambda(t) is multiplied by (None: `grad`, not measured yet)."""
        if self.lam_scale == "none":
            return 1.0
        return None if self.scale is None else self.scale.ratio

    def metrics(self) -> dict[str, float | None]:
        """For metrics.json: rho, both norms and the lambda used (lam x the factor)."""
        ratio = self.scale.metrics() if self.scale else dict.fromkeys(("grad_norm_ratio", "task_grad_norm",
                                                                        "penalty_grad_norm"))
        factor = self.factor
        return {**{k: _finite(v) for k, v in ratio.items()},
                "lam_effective": None if factor is None else _finite(self.lam * factor)}


def _finite(x: float | None) -> float | None:
    """JSON has no inf or NaN: those are recorded as null."""
    return x if x is not None and math.isfinite(x) else None


def run_prehab(
    model: nn.Module,
    task: str,
    data: dict[str, torch.Tensor],
    whitening: Whitening,
    targets: list[str],
    settings: PrehabSettings,
    snapshots: tuple[set[int], Callable[[int, nn.Module, PrehabResult], None]] | None = None,
    world: World = World(),
) -> PrehabResult:
    """Regularised fine-tuning in place; returns the curve (task loss, surrogate, lambda, entropy
    rank) and step 1's gradient-norm ratio.

    The penalty is `settings.estimator`'s MeanPenalty over the targets (the logged diagnostics
    always use the exact spectrum). `penalty_every` = k > 1 applies k * lambda(t) * R to each
    matrix on one step in k (`PenaltyFrequency`): 1/k of the spectral cost, but not the push of
    lambda on every step, since under Adam the k-times gradient raises the second-moment
    estimate and the penalty moves the weights less; studies use 1. At step 1 the ratio rho of
    the task gradient's norm to the (unweighted, exact) penalty gradient's is measured on that
    step's batch, without changing the trajectory (grad_scale.py); with `lam_scale` `grad` the
    weight is rho * lambda(t). `snapshots` = (steps, callback): after each of those steps the
    callback gets (step, a copy of the model as a k-step run would return it, the result so
    far). Nothing here depends on the total step count (constant lr, schedules in absolute
    steps, data order drawn as it goes), so that copy equals a separate run of that many steps.

    `world`: across processes (prehab/distributed.py) the model is sharded per block here, after
    the targets are set up, each target priced on one rank (sharded.py); the trained model
    stays sharded and unfolded (the caller gathers and folds it: `fold_state`), and snapshots
    are not taken.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    mats = _Targets(model, targets, whitening, settings.space)
    n = len(targets)
    shards = None
    if world.sharded:
        if snapshots is not None and snapshots[0]:
            raise UsageError("snapshots are not taken across processes; run Prehab in one process for them")
        world.shard(model, targets, settings.compute.precision)
        mats.collect()
        shards = sharded.ShardedTargets(mats, world)
        if settings.surrogate.anchored:  # fixes its constants on every target, on every rank
            shards.gather(range(n), everywhere=True)
    estimate = PENALTIES.get(settings.estimator)(settings.surrogate, shards or mats, settings.refresh_every)
    if shards:  # each rank holds the penalty's inputs of its own targets only
        mats.keep_only(set(shards.owned(range(n))))
    result = PrehabResult(lam_scale=settings.lam_scale, lam=settings.schedule.lam,
                          anchors={name: estimate.anchors.values[i] for i, name in enumerate(targets)
                                   if i in estimate.anchors.values})
    frequency = settings.frequency

    def chosen_at(step: int) -> list[int]:
        """The matrices penalised at this step."""
        return [] if settings.schedule(step) == 0 else frequency.chosen(step, n)

    def inspect(step: int, task_loss: torch.Tensor | None) -> None:
        if step == 1 and settings.measure_scale:
            result.scale = (sharded.grad_scale(estimate, shards) if shards else
                            grad_scale.measure(task_loss, estimate.exact(), mats.params))
            tqdm.write(f"prehab: step 1 gradient norms: task {result.scale.task_norm:.4g}, penalty "
                       f"{result.scale.penalty_norm:.4g} ({settings.surrogate.name}, unweighted), ratio "
                       f"{result.scale.ratio:.4g}", file=sys.stderr)
            ratio = result.scale.ratio
            if settings.lam_scale == "grad" and not (math.isfinite(ratio) and ratio > 0):
                raise NumericalError(f"--lam-scale grad: the gradient-norm ratio at step 1 is {ratio} "
                                     "(task / penalty); it must be finite and > 0")

    def penalty(step: int):
        lam, chosen = settings.schedule(step), chosen_at(step)
        if settings.lam_scale != "none":
            lam = lam * result.factor
        if not chosen:
            return None, {"lambda": lam}
        value = sharded.penalty_term(estimate, shards, step, chosen) if shards else estimate(step, chosen)  # sum / n
        name = "surrogate" if estimate.is_exact else "surrogate_estimate"  # else log_extra's is exact
        logged = {name: float(value.detach())} if len(chosen) == n else {}
        return (settings.penalty_every * lam * value).to(torch.float32), {"lambda": lam, **logged}

    def log_extra(step: int) -> dict[str, float]:
        if shards:  # the same numbers over every rank, each target's on its owner
            return sharded.log_row(estimate, shards, settings.surrogate, settings.space,
                                   surrogate_too=len(chosen_at(step)) < n or not estimate.is_exact)
        with torch.no_grad():  # one eigen-decomposition per matrix serves both numbers
            whitened = mats.whitened()
            eigenvalues = [gram_eigenvalues(A) for A in whitened]
            ranks = [entropy_rank_of(lam.sqrt()) for lam in eigenvalues]
            row = {"entropy_rank": sum(ranks) / len(ranks), **estimate.stats()}
            if len(chosen_at(step)) < n or not estimate.is_exact:  # else penalty() logged it already
                if settings.space == "raw":  # penalised matrices are not the whitened ones
                    row["surrogate"] = float(torch.stack([estimate.anchors.evaluate(i, A) for i, A in
                                                          enumerate(mats.penalised(range(n)))]).mean())
                else:
                    anchors = estimate.anchors.values
                    values = [settings.surrogate.of_eigenvalues(lam, tuple(A.shape), anchors.get(i))
                              for i, (lam, A) in enumerate(zip(eigenvalues, whitened))]
                    row["surrogate"] = float(torch.stack(values).mean())
        return row

    def on_step(step: int, curve: list) -> None:
        if snapshots is not None and step in snapshots[0]:
            copy = finished(copy_module(model))
            snapshots[1](step, copy, dataclasses.replace(result, curve=curve))

    def finished(m: nn.Module) -> nn.Module:
        mats.fold(m)
        for p in m.parameters():
            p.requires_grad_(True)
        return m.eval()

    if shards:
        shards.release()
    result.curve = train_steps(
        model, task, data, mats.params, steps=settings.steps, lr=settings.lr, batch_size=settings.batch_size,
        seed=settings.seed, penalty=penalty, log_every=settings.log_every, log_extra=log_extra,
        desc=f"prehab {settings.surrogate.name} lam={settings.schedule.lam:g}", on_step=on_step,
        log_at=frozenset(snapshots[0]) if snapshots else frozenset(), inspect=inspect, compute=settings.compute,
        world=world,
    )
    if not world.sharded:
        finished(model)
    return result


def copy_module(model: nn.Module) -> nn.Module:
    """A deep copy that leaves the original (and the random streams) untouched."""
    import copy

    return copy.deepcopy(model)
