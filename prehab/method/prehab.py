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

from typing import Callable


import torch
import torch.nn as nn
import torch.nn.functional as F

from prehab.errors import UsageError
from prehab.layers import get_module, replace_modules
from prehab.method import names
from prehab.method.calibrate import Whitening, whiten
from prehab.method.schedule import LambdaSchedule
from prehab.method.estimators import Penalty
from prehab.method.lagged import LaggedPenalty
from prehab.method.surrogates import Surrogate, entropy_rank_of, gram_eigenvalues
from prehab.train import train_steps

SPACES = names.SPACES


class WhitenedDelta(nn.Module):
    """Stands in for an nn.Linear during Prehab; `fold()` gives the trained nn.Linear back."""

    def __init__(self, linear: nn.Linear, L: torch.Tensor):
        super().__init__()
        out_f, in_f = linear.weight.shape
        assert L.shape == (in_f, in_f), f"factor {tuple(L.shape)} does not fit weight {tuple(linear.weight.shape)}"
        self.linear = linear  # frozen W0 and bias
        L = L.to(linear.weight.device)
        self.register_buffer("L", L.to(linear.weight.dtype), persistent=False)  # (in, in)
        self.register_buffer("L64", L.double(), persistent=False)
        A0 = whiten(linear.weight.detach(), L)  # (out, in)
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
        step = torch.linalg.solve_triangular(self.L64, self.delta.double(), upper=False, left=False)
        self.linear.weight.copy_((self.linear.weight.double() + step).to(self.linear.weight.dtype))
        return self.linear


class _Targets:
    """The target matrices in the chosen space: trainable parameters and the matrices R reads."""

    def __init__(self, model: nn.Module, names: list[str], whitening: Whitening, space: str):
        if space not in SPACES:
            raise UsageError(f"unknown Prehab space {space!r}; known: {', '.join(SPACES)}")
        self.space, self.names, self.whitening = space, names, whitening
        if space == "whitened":
            replace_modules(model, names, lambda name, old: WhitenedDelta(old, whitening.factor_of(name)))
            self.modules = [get_module(model, n) for n in names]
            self.params = [m.delta for m in self.modules]
        else:
            self.modules = [get_module(model, n) for n in names]
            self.params = [m.weight for m in self.modules]
            self.factors = [whitening.factor_of(n).to(m.weight.device, m.weight.dtype) for m, n in zip(self.modules, names)]
        for p in self.params:
            p.requires_grad_(True)

    def penalised(self, chosen: list[int]) -> list[torch.Tensor]:
        """The matrices R reads, of the targets numbered `chosen`."""
        if self.space == "whitened":
            return [self.modules[i].whitened() for i in chosen]
        if self.space == "weight":
            return [whiten(self.modules[i].weight, self.factors[i], self.modules[i].weight.dtype) for i in chosen]
        return [self.modules[i].weight for i in chosen]

    @torch.no_grad()
    def whitened(self) -> list[torch.Tensor]:
        if self.space == "whitened":
            return [m.whitened() for m in self.modules]
        return [whiten(m.weight, self.whitening.factor_of(n)) for m, n in zip(self.modules, self.names)]

    def fold(self, model: nn.Module) -> None:
        if self.space == "whitened":
            replace_modules(model, self.names, lambda name, old: old.fold())


def whitened_spectra(model: nn.Module, names: list[str], whitening: Whitening) -> dict[str, torch.Tensor]:
    """Singular values (descending, float32) of W L for every target: the figures' spectra.

    From the smaller Gram's eigenvalues in float64 (3x cheaper than an SVD here; accurate to
    ~1e-8 of the largest singular value, far below what a spectrum plot or a rank measure sees)."""
    out = {}
    with torch.no_grad():
        for name in names:
            W = get_module(model, name).weight
            A = whiten(W, whitening.factor_of(name))
            out[name] = gram_eigenvalues(A, ridge=0).flip(0).sqrt().float().cpu()
    return out


def run_prehab(
    model: nn.Module,
    task: str,
    data: dict[str, torch.Tensor],
    whitening: Whitening,
    targets: list[str],
    *,
    surrogate: Surrogate,
    schedule: LambdaSchedule,
    space: str,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    log_every: int = 10,
    penalty_every: int = 1,
    stagger: bool = False,
    estimator: str = "exact",
    refresh_every: int = names.DEFAULT_REFRESH,
    snapshots: tuple[set[int], Callable[[int, nn.Module, list], None]] | None = None,
) -> list[dict[str, float]]:
    """Regularised fine-tuning in place; returns the curve (task loss, surrogate, lambda, entropy rank).

    `penalty_every` = k > 1 applies k * lambda(t) * R to each matrix on every k-th step only
    (same average weight, 1/k of the spectral cost): all matrices on the same steps, or with
    `stagger` a rotating 1/k of them on every step (matrix i on steps t = i + 1 mod k).
    `estimator`: how R and its gradient are computed (estimators.py; `lagged`: lagged.py, each
    matrix refreshed exactly at most every `refresh_every` steps); the logged diagnostics
    always use the exact spectrum. `snapshots` = (steps, callback): after each of those steps the
    callback gets (step, a copy of the model as a k-step run would return it, the curve so far).
    Nothing here depends on the total step count (constant lr, schedules in absolute steps, data
    order drawn as it goes), so that copy equals a separate run of that many steps.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    mats = _Targets(model, targets, whitening, space)
    n = len(targets)
    if estimator == "lagged":
        lagged = LaggedPenalty(surrogate, n, refresh_every)

        def estimate(chosen: list[int], step: int) -> torch.Tensor:
            return lagged(mats.params, lambda i: mats.penalised([i])[0], chosen, step)

        estimator_stats = lagged.stats
    else:
        plain = Penalty(surrogate, estimator, n)

        def estimate(chosen: list[int], step: int) -> torch.Tensor:
            return plain(mats.penalised(chosen), chosen)

        estimator_stats = dict

    def chosen_at(step: int) -> list[int]:
        """The matrices penalised at this step."""
        if schedule(step) == 0:
            return []
        if stagger:
            return [i for i in range(n) if (step - 1 - i) % penalty_every == 0]
        return list(range(n)) if (step - 1) % penalty_every == 0 else []

    def penalty(step: int):
        lam, chosen = schedule(step), chosen_at(step)
        if not chosen:
            return None, {"lambda": lam}
        value = estimate(chosen, step)  # sum over `chosen` / n
        name = "surrogate" if estimator == "exact" else "surrogate_estimate"  # else log_extra's is exact
        logged = {name: float(value.detach())} if len(chosen) == n else {}
        return (penalty_every * lam * value).to(torch.float32), {"lambda": lam, **logged}

    def log_extra(step: int) -> dict[str, float]:
        with torch.no_grad():  # one eigen-decomposition per matrix serves both numbers
            whitened = mats.whitened()
            eigenvalues = [gram_eigenvalues(A) for A in whitened]
            ranks = [entropy_rank_of(lam.sqrt()) for lam in eigenvalues]
            row = {"entropy_rank": sum(ranks) / len(ranks), **estimator_stats()}
            if len(chosen_at(step)) < n or estimator != "exact":  # else penalty() logged it already
                if space == "raw":  # penalised matrices are not the whitened ones
                    row["surrogate"] = float(torch.stack([surrogate(A) for A in mats.penalised(range(n))]).mean())
                else:
                    values = [surrogate.of_eigenvalues(lam, tuple(A.shape)) for lam, A in zip(eigenvalues, whitened)]
                    row["surrogate"] = float(torch.stack(values).mean())
        return row

    def on_step(step: int, curve: list) -> None:
        if snapshots is not None and step in snapshots[0]:
            copy = finished(copy_module(model))
            snapshots[1](step, copy, curve)

    def finished(m: nn.Module) -> nn.Module:
        mats.fold(m)
        for p in m.parameters():
            p.requires_grad_(True)
        return m.eval()

    curve = train_steps(
        model, task, data, mats.params, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
        penalty=penalty, log_every=log_every, log_extra=log_extra, desc=f"prehab {surrogate.name} lam={schedule.lam:g}",
        on_step=on_step, log_at=frozenset(snapshots[0]) if snapshots else frozenset(),
    )
    finished(model)
    return curve


def copy_module(model: nn.Module) -> nn.Module:
    """A deep copy that leaves the original (and the random streams) untouched."""
    import copy

    return copy.deepcopy(model)
