"""Penalty estimators: the value and gradient of a rank surrogate R(A) for every target matrix,
every step. `exact` differentiates through an fp64 eigen-decomposition of each Gram matrix
(the reference). `fast` tracks each Gram matrix's eigenbasis across steps (the weights move a
little per step), so a step costs a handful of matrix products instead of an eigen-solver:

    P = A^T A + ridge (the smaller Gram, as the exact path), T = V^T P V = D + O, O small,
    lam ~ diag(T) (exact to second order in O), and to first order (Daleckii-Krein)
    dR/dP = V (diag(g) + G o O) V^T, g_i = dR/dlam_i, G_ij = (g_i - g_j) / (d_i - d_j)
    (the derivative of g where d_i ~ d_j), dR/dA = 2 A dR/dP.

V then takes one Jacobi-like rotation towards the new eigenbasis (E_ij = O_ij / (d_j - d_i),
re-orthonormalised by one Newton-Schulz step), so O stays of the order of one step's change.
The drift guard: when some off-diagonal entry is not small against its eigenvalue gap (the
first-order formulas would be off), the estimator re-diagonalises exactly the block of
eigenvalues involved, growing it up to MAX_REFRESHES times, and else restarts cold from an fp64
eigen-solve, so an estimate can never degrade silently. docs/method.md, section 3.

Every estimator, `lagged` too (lagged.py), is a `MeanPenalty` over the targets: built once on
the trainable tensors and the matrices R reads (`Targets`), called as `penalty(step, chosen)`
for the differentiable sum_{i in chosen} R(A_i) / n (the mean when all are chosen), so the
Prehab loop never asks which estimator it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

import torch

from prehab.method import names
from prehab.method.surrogates import Anchors, Surrogate, ridged_gram

ESTIMATORS = ("exact", "fast")  # of the matrices themselves; `lagged` (lagged.py) reads the parameters
assert set(ESTIMATORS) | {"lagged"} == set(names.ESTIMATORS)
MAX_REFRESHES = 3  # block re-diagonalisations per step before a cold restart
Tensor = torch.Tensor


class _Estimated(torch.autograd.Function):
    """A scalar whose value and gradient were computed outside autograd."""

    @staticmethod
    def forward(ctx, A: Tensor, value: Tensor, grad: Tensor) -> Tensor:
        ctx.save_for_backward(grad)
        return value.detach().to(A.dtype).clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad,) = ctx.saved_tensors
        return grad_out * grad, None, None


class TrackedSpectrum:
    """The warm state of one matrix: its Gram eigenbasis V, carried from step to step.

    Args:
        guard: re-diagonalise (a block, else all) when some |O_ij| exceeds `guard` * |d_i - d_j|
            outside a cluster.
        tie: relative size below which a pair's gap and coupling make it one cluster (the
            derivative replaces the divided difference, and V is not rotated within it).
        dtype: of the matrix products. float64: whitened Gram matrices span more decades than
            float32 resolves (benchmarks/whitened_spectra.py).
    """

    def __init__(self, guard: float = 0.05, tie: float = 1e-3, dtype: torch.dtype = torch.float64):
        self.guard, self.tie, self.dtype = guard, tie, dtype
        self.V: Tensor | None = None
        self.restarts = 0  # cold eigen-solves of the whole Gram
        self.refreshes = 0  # exact re-diagonalisations of a block of it

    def _cold(self, P: Tensor) -> None:
        _, V = torch.linalg.eigh(P.double())
        self.V = V.to(self.dtype)
        self.restarts += 1

    def _split(self, P: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """T = V^T P V as (its diagonal d in float64, its off-diagonal part O, the gaps
        d_i - d_j, the mask of pairs treated as one cluster: gap and coupling both below `tie`
        of their size, where the derivative replaces the divided difference and the error is
        second order in `tie`; the diagonal is such a pair)."""
        T = self.V.T @ P @ self.V
        T = 0.5 * (T + T.T)
        d = T.diagonal().clone()
        O = T - torch.diag(d)
        gap = d[:, None] - d[None, :]
        size = 0.5 * (d.abs()[:, None] + d.abs()[None, :])
        tied = gap.abs() + O.abs() <= self.tie * size
        return d.double(), O, gap, tied

    def _failing(self, O: Tensor, gap: Tensor, tied: Tensor) -> Tensor:
        """The drift guard: pairs outside a cluster whose coupling is not small against their
        gap (where the first-order formulas would be off)."""
        return ~tied & (O.abs() > self.guard * gap.abs())

    def _refresh(self, P: Tensor, mask: Tensor) -> None:
        """Re-diagonalise exactly the block of eigenvalues that moved too much against their
        gaps (small eigenvalues, typically): an eigen-solve of that block only."""
        block = mask.nonzero().flatten()
        T = self.V[:, block].T @ P @ self.V[:, block]
        _, U = torch.linalg.eigh(0.5 * (T + T.T).double())
        self.V[:, block] = self.V[:, block] @ U.to(self.dtype)
        self.refreshes += 1

    @torch.no_grad()
    def estimate(self, A: Tensor, surrogate: Surrogate, anchor: float | None = None) -> tuple[Tensor, Tensor]:
        """(R(A), dR/dA) from the warm eigenbasis, re-diagonalising what no longer fits
        (`anchor`: the matrix's constant, for an anchored surrogate)."""
        X = A.detach().to(self.dtype)
        P = ridged_gram(X)  # (k, k), k = min(m, n), as the exact path
        if self.V is None or self.V.shape[0] != P.shape[0]:
            self._cold(P)
        d, O, gap, tied = self._split(P)
        block = torch.zeros(P.shape[0], dtype=torch.bool, device=P.device)
        for attempt in range(MAX_REFRESHES + 1):
            failing = self._failing(O, gap, tied).any(dim=1)
            if not failing.any():
                break
            if attempt == MAX_REFRESHES:  # the block does not settle: start afresh
                self._cold(P)
            else:
                block |= failing  # grow the block until its couplings to the rest are first order
                self._refresh(P, block)
            d, O, gap, tied = self._split(P)
        value, g, dg = surrogate.partials(d.clamp(min=torch.finfo(torch.float64).tiny), tuple(A.shape), anchor)
        g, dg = g.to(self.dtype), dg.to(self.dtype)
        safe_gap = torch.where(tied, torch.ones_like(gap), gap)
        divided = torch.where(tied, 0.5 * (dg[:, None] + dg[None, :]), (g[:, None] - g[None, :]) / safe_gap)
        M = divided * O  # dR/dT, (k, k): first order off the diagonal ...
        M.diagonal().copy_(g)  # ... and the partials on it
        dP = self.V @ M @ self.V.T  # dR/dP
        grad = 2 * (X @ dP if X.shape[0] >= X.shape[1] else dP @ X)  # (m, n)
        self._rotate(torch.where(tied, torch.zeros_like(O), -O / safe_gap))
        return value, grad.to(A.dtype)

    def _rotate(self, E: Tensor) -> None:
        """One Jacobi-like step towards the new eigenbasis (E skew, first order), then one
        Newton-Schulz step back to orthonormal columns (the rotation leaves an error of order
        |E|^2, which would otherwise accumulate)."""
        W = self.V + self.V @ E
        eye = torch.eye(W.shape[1], dtype=W.dtype, device=W.device)
        self.V = W @ (1.5 * eye - 0.5 * (W.T @ W))


class Targets(Protocol):
    """What a penalty is built over: each target's trainable tensor, and the matrices R reads
    (differentiable in those tensors)."""

    params: list[Tensor]

    def penalised(self, chosen: Iterable[int]) -> list[Tensor]: ...


@dataclass
class Matrices:
    """`Targets` given as tensors and a function: target i's trainable tensor `params[i]` and
    the matrix R reads, `matrix_of(i)` (tests and benchmarks; Prehab has its own)."""

    params: list[Tensor]
    matrix_of: Callable[[int], Tensor]

    def penalised(self, chosen: Iterable[int]) -> list[Tensor]:
        return [self.matrix_of(i) for i in chosen]


class MeanPenalty:
    """The mean surrogate over the target matrices, the interface every estimator shares:
    `penalty(step, chosen)` is sum_{i in chosen} R(A_i) / n (differentiable in the trainable
    tensors; all chosen: the mean), `exact()` the exact mean over all of them (the reference,
    whatever the estimator), `stats()` numbers for the logged curve. An anchored surrogate's
    constants are fixed here, on the starting matrices (`anchors`).

    Attributes:
        is_exact: whether `penalty(step, chosen)`'s value is the exact R (else an estimate).
    """

    is_exact = False

    def __init__(self, surrogate: Surrogate, targets: Targets):
        self.surrogate, self.targets, self.n = surrogate, targets, len(targets.params)
        self.anchors = Anchors(surrogate)
        if surrogate.anchored:
            with torch.no_grad():
                self.anchors.fix_all(targets.penalised(range(self.n)))

    def __call__(self, step: int, chosen: list[int]) -> Tensor:
        raise NotImplementedError

    def exact(self) -> Tensor:
        """mean_i R(A_i) over every target, by autograd through the fp64 eigen-decompositions;
        no estimator state is read or changed."""
        return torch.stack([self.anchors.evaluate(i, A)
                            for i, A in enumerate(self.targets.penalised(range(self.n)))]).mean()

    def stats(self) -> dict[str, float]:
        return {}

    def _mean(self, values: list[Tensor], chosen: list[int]) -> Tensor:
        stacked = torch.stack(values)
        return stacked.mean() if len(chosen) == self.n else stacked.sum() / self.n


class Penalty(MeanPenalty):
    """The `exact` and `fast` estimators (one warm state per matrix for `fast`)."""

    def __init__(self, surrogate: Surrogate, estimator: str, targets: Targets):
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
        super().__init__(surrogate, targets)
        self.estimator, self.is_exact = estimator, estimator == "exact"
        self.states = [TrackedSpectrum() for _ in range(self.n)] if estimator == "fast" else []

    def __call__(self, step: int, chosen: list[int]) -> Tensor:
        """sum_{i in chosen} R(A_i) / n (all: the mean); `step` is not read."""
        matrices = self.targets.penalised(chosen)
        if self.estimator == "exact":
            values = [self.anchors.evaluate(i, A) for A, i in zip(matrices, chosen, strict=True)]
        else:
            values = [_Estimated.apply(A, *self.states[i].estimate(A, self.surrogate, self.anchors.values.get(i)))
                      for A, i in zip(matrices, chosen, strict=True)]
        return self._mean(values, chosen)


def exact_value_and_grad(A: Tensor, surrogate: Surrogate, anchor: float | None = None) -> tuple[Tensor, Tensor]:
    """The reference: R(A) and dR/dA by autograd through the fp64 eigen-decomposition."""
    X = A.detach().double().requires_grad_(True)
    value = surrogate(X, anchor)
    (grad,) = torch.autograd.grad(value, X)
    return value.detach(), grad
