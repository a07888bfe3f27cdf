"""Smooth rank surrogates R(A) of a (whitened) weight matrix A, and spectral diagnostics.

All are functions of the singular values sigma_i of A, taken exactly from the eigenvalues of
the smaller Gram matrix (A^T A or A A^T) in float64 with a tiny ridge (1e-6 * tr/n, as the
authors), so gradients stay finite when a singular value reaches zero.

| name          | R(A)                          | scale-free |
|---------------|-------------------------------|------------|
| nuclear       | ||A||_* = sum sigma           | no         |
| nuclear_fro   | ||A||_* / ||A||_F             | yes        |
| stable        | ||A||_F^2 / ||A||_2^2         | yes        |
| nuclear_rank  | ||A||_*^2 / ||A||_F^2         | yes        |

`stable` is the stable rank of the paper's BERT code; `nuclear_rank` is the different
effective-rank measure the seed summary called "stable rank": both are offered, by name.

docs/method.md, section 3, says why.
"""

from __future__ import annotations

from typing import Callable

import torch

from prehab.registry import Registry

RIDGE = 1e-6

# Each surrogate as a function of the Gram eigenvalues lam = sigma^2 (any order): the training
# path differentiates through them, the diagnostics reuse one eigen-decomposition for all.
FromEigenvalues = Callable[[torch.Tensor], torch.Tensor]
SURROGATES: Registry[FromEigenvalues] = Registry("surrogate")
SURROGATES.register("nuclear", lambda lam: lam.sqrt().sum())
SURROGATES.register("nuclear_fro", lambda lam: lam.sqrt().sum() / lam.sum().sqrt())
SURROGATES.register("stable", lambda lam: lam.sum() / lam.max())
SURROGATES.register("nuclear_rank", lambda lam: lam.sqrt().sum() ** 2 / lam.sum())
SCALE_FREE = {"nuclear_fro", "stable", "nuclear_rank"}


def gram_eigenvalues(A: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """Squared singular values of A (ascending), from the smaller Gram, float64, shifted by
    `ridge` * tr/n (0: the plain spectrum, as the figures want it)."""
    assert A.dim() == 2, f"expected a matrix, got shape {tuple(A.shape)}"
    A = A.double()
    gram = A.T @ A if A.shape[0] >= A.shape[1] else A @ A.T  # (min, min)
    if ridge:
        n = gram.shape[0]
        shift = ridge * torch.trace(gram).detach() / n
        gram = gram + shift * torch.eye(n, dtype=gram.dtype, device=gram.device)
    return torch.linalg.eigvalsh(gram).clamp(min=0)


def singular_values(A: torch.Tensor) -> torch.Tensor:
    return gram_eigenvalues(A).sqrt()


def get_surrogate(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """R(A) of the named surrogate, differentiable in A (unknown names: the allowed ones)."""
    from_eigenvalues = SURROGATES.get(name)
    return lambda A: from_eigenvalues(gram_eigenvalues(A))


@torch.no_grad()
def entropy_rank(A: torch.Tensor) -> float:
    """exp(H(p)), p_i = sigma_i / sum sigma: the authors' logged diagnostic (never optimised here)."""
    return entropy_rank_of(singular_values(A))


@torch.no_grad()
def entropy_rank_of(sigma: torch.Tensor) -> float:
    """`entropy_rank` from singular values already computed."""
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def tail_energy(A: torch.Tensor, rank: int) -> float:
    """Fraction of ||A||_F^2 beyond the top `rank` singular values: what truncation at `rank` loses."""
    lam = gram_eigenvalues(A).flip(0)
    return float(lam[rank:].sum() / lam.sum())
