"""Prehab's parametrisation: train a delta D in whitened coordinates, W(D) = (A0 + D) L^{-1}.

A0 = W L stays fixed; D starts at 0, so the model starts exactly where it was. The rank
penalty reads A = A0 + D directly (no solve); the forward pass pays one triangular solve.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


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
        A0 = linear.weight.detach().double() @ L.double()  # (out, in)
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
