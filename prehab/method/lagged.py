"""The `lagged` penalty estimator: each matrix's surrogate linearised in its trainable parameter,
refreshed exactly every few steps, so a step between refreshes costs one multiply-add per
weight instead of a matrix product and an eigen-solve.

For target i with parameter p (W in the `weight` and `raw` spaces, the delta D in `whitened`),
the penalty term is R_i(p0) + <g, p - p0>, with p0 the parameter at the last refresh and
g = dR_i/dp there (the exact fp64 path, autograd through the whitening W L where there is one).
At a refresh the term is exact in value and gradient; between refreshes its gradient is the
exact gradient of at most `every` - 1 steps ago. Refreshes rotate (a cold start refreshes every
matrix on the first step, then matrix i on step 2 + (i mod every) and every `every` steps
after), so each later step pays 1/every of the exact penalty.

The drift guard: each refresh measures how stale the gradient the matrix used had become,
||g_new - g_old||_F / ||g_new||_F (the old gradient served until this step). When that exceeds
`tol`, the matrix is refreshed twice as often from then on (down to every step: the exact
estimator); when it is below tol / 4, its lag doubles back, up to `every`. So a linearisation
that no longer fits shows up at its next refresh and is shortened, never carried silently. The
value's error (second order in the change since p0) is measured too and logged.
An anchored surrogate (`tail_abs`) is linearised the same way: its constant is fixed at the
start (estimators.MeanPenalty), so dR/dlam_i is 1/c for the tail eigenvalues and 0 for the kept.
docs/method.md, section 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prehab.method import names
from prehab.method.estimators import MeanPenalty, Targets
from prehab.method.surrogates import Surrogate

Tensor = torch.Tensor
TOL = 0.05  # relative staleness of a gradient that halves its matrix's lag


@dataclass
class _Linearisation:
    """R(p) ~ value + <grad, p - p0>, to be refreshed at step `due`."""

    value: Tensor
    grad: Tensor
    p0: Tensor  # the parameter at the refresh
    due: int


class LaggedPenalty(MeanPenalty):
    """The mean surrogate over the target matrices, each linearised between exact refreshes.

    Args:
        surrogate: the rank surrogate R.
        targets: the trainable tensors and the matrices R reads (estimators.Targets).
        every: the longest lag, in steps (1: the exact estimator, by another route).
        tol: the drift guard's bound on a gradient's relative staleness.
    """

    def __init__(self, surrogate: Surrogate, targets: Targets, every: int = names.DEFAULT_REFRESH, tol: float = TOL):
        if every < 1:
            raise ValueError(f"refresh interval must be at least 1 step, got {every}")
        super().__init__(surrogate, targets)
        self.every, self.tol = every, tol
        self.states: dict[int, _Linearisation] = {}
        self.lags = [every] * self.n
        self.shortened = 0  # guard hits: refreshes that found a gradient staler than tol
        self.refreshes = 0
        self.worst_drift = 0.0  # the stalest gradient any refresh found (relative)
        self.worst_value_error = 0.0  # the largest relative error of a linearised value

    def _refresh(self, i: int, param: Tensor, matrix: Tensor, step: int) -> None:
        """The exact value and gradient of R_i at `param`; the guard's check of the old
        linearisation against them sets the lag (a cold start staggers the next refreshes)."""
        value = self.anchors.evaluate(i, matrix)
        (grad,) = torch.autograd.grad(value, param)
        value, grad = value.detach(), grad.detach()
        old = self.states.get(i)
        if old is not None:
            tiny = torch.finfo(value.dtype).tiny
            predicted = old.value + (old.grad.to(value.dtype) * (param.detach() - old.p0).to(value.dtype)).sum()
            error = float((predicted - value).abs() / value.abs().clamp(min=tiny))
            drift = float((grad - old.grad.to(grad.dtype)).norm() / grad.norm().clamp(min=tiny))
            self.worst_value_error = max(self.worst_value_error, error)
            self.worst_drift = max(self.worst_drift, drift)
            if drift > self.tol:
                self.lags[i] = max(1, self.lags[i] // 2)
                self.shortened += 1
            elif drift < self.tol / 4:
                self.lags[i] = min(self.every, 2 * self.lags[i])
        due = step + (self.lags[i] if old is not None else 1 + i % self.every)
        self.states[i] = _Linearisation(value, grad.to(param.dtype), param.detach().clone(), due)
        self.refreshes += 1

    def __call__(self, step: int, chosen: list[int]) -> Tensor:
        """sum_{i in chosen} R(A_i) / n, linearised in each target's trainable tensor."""
        terms = []
        for i in chosen:
            p = self.targets.params[i]
            if i not in self.states or step >= self.states[i].due:
                with torch.enable_grad():
                    self._refresh(i, p, self.targets.penalised([i])[0], step)
            s = self.states[i]
            terms.append(s.value.to(p.dtype) + (s.grad * (p - s.p0)).sum())
        return self._mean(terms, chosen)

    def stats(self) -> dict[str, float]:
        """Cumulative counts for the logged curve."""
        return {"penalty_refreshes": self.refreshes, "guard_shortened": self.shortened,
                "gradient_drift": self.worst_drift, "linearisation_error": self.worst_value_error}
