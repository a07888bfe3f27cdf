"""Lambda on one scale for every surrogate: the ratio of the task gradient's norm to the
penalty gradient's at the first step.

The surrogates' gradients differ by orders of magnitude on the same weights (`tail`'s is far
smaller than `nuclear_fro`'s: issue 25), so one lambda grid cannot serve them all. At step 1, on
that step's batch, rho = ||d task loss / d theta|| / ||d mean_l R(A_l) / d theta||, theta the
trainable tensors of the targets, R unweighted by lambda and exact (the estimators' step-1
values: `lagged` refreshes exactly then, `fast` starts cold from an exact eigen-solve).
`--lam-scale grad` trains with lambda * rho, so lambda 1 means equal gradient norms at the
start; `none` (the default) records rho and trains with lambda as given.

Measuring changes nothing else: the task gradient is taken from the step's own loss (no second
forward pass, no random numbers drawn) with its graph kept for the step's backward, and the
penalty is evaluated apart from the estimator's state (docs/method.md, 4.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class GradScale:
    """The two gradient norms of step 1 (over all trainable tensors) and their ratio."""

    task_norm: float
    penalty_norm: float

    @property
    def ratio(self) -> float:
        """rho = task / penalty (inf where the penalty's gradient is 0)."""
        return self.task_norm / self.penalty_norm if self.penalty_norm > 0 else math.inf

    def metrics(self) -> dict[str, float]:
        return {"grad_norm_ratio": self.ratio, "task_grad_norm": self.task_norm,
                "penalty_grad_norm": self.penalty_norm}


def grad_norm(value: Tensor, params: list[Tensor], keep_graph: bool = False) -> float:
    """||d value / d params||_2 over all of them together, summed in float64."""
    grads = torch.autograd.grad(value, params, retain_graph=keep_graph, allow_unused=True)
    return math.sqrt(sum(float(g.double().square().sum()) for g in grads if g is not None))


def measure(task_loss: Tensor | None, penalty: Tensor, params: list[Tensor]) -> GradScale:
    """rho's two norms: the task loss's graph is kept (the step's backward still needs it). A
    task loss of None: the step accumulated it over micro-batches, and its gradient is the
    parameters' .grad (nothing else has been back-propagated yet in that step)."""
    if task_loss is None:
        task = math.sqrt(sum(float(p.grad.double().square().sum()) for p in params if p.grad is not None))
    else:
        task = grad_norm(task_loss, params, keep_graph=True)
    return GradScale(task, grad_norm(penalty, params))
