"""Smooth rank surrogates R(A) of a (whitened) weight matrix A, and spectral diagnostics.

All are functions of the eigenvalues lam_i = sigma_i^2 of the smaller Gram matrix (A^T A or
A A^T) with a tiny ridge (1e-6 * tr/n, as the authors), so gradients stay finite when a
singular value reaches zero. The exact path takes them from an fp64 eigen-decomposition and
differentiates through it; the fast estimators (estimators.py) use each surrogate's partial
derivatives dR/dlam_i instead.

| name          | R(A)                                           | scale-free |
|---------------|------------------------------------------------|------------|
| nuclear       | ||A||_* = sum sigma                            | no         |
| nuclear_fro   | ||A||_* / ||A||_F                              | yes        |
| stable        | ||A||_F^2 / ||A||_2^2                          | yes        |
| nuclear_rank  | ||A||_*^2 / ||A||_F^2                          | yes        |
| tail          | sum_{i>k} sigma_i^2 / ||A||_F^2, k = k(R)      | yes        |

`stable` is the stable rank of the paper's BERT code; `nuclear_rank` is the different
effective-rank measure the seed summary called "stable rank": both are offered, by name.
`tail` is what SVD-LLM's truncation at ratio R removes (its theorem): the whitened energy
beyond the rank k = floor(m n (1 - R) / (m + n)) the surgery keeps (`--tail-ratio R`).

docs/method.md, section 3, says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from prehab.method import names
from prehab.method.ratio import rank_for_ratio
from prehab.registry import Registry

RIDGE = 1e-6
Tensor = torch.Tensor


@dataclass(frozen=True)
class Spectral:
    """A surrogate as a function of the Gram eigenvalues lam (any order) and the kept rank
    `keep` (only `tail` reads it): `value` is differentiable (the exact path), `partials`
    gives (R, dR/dlam_i, d/dlam_i of the smooth part of dR/dlam_i) for the fast estimators."""

    value: Callable[[Tensor, int | None], Tensor]
    partials: Callable[[Tensor, int | None], tuple[Tensor, Tensor, Tensor]]


def _nuclear(lam, keep):
    s = lam.sqrt()
    return s.sum(), 0.5 / s, -0.25 / (s * lam)


def _nuclear_fro(lam, keep):
    s, S = lam.sqrt(), lam.sum()
    N, r = s.sum(), S.sqrt()
    return N / r, 0.5 / (s * r) - N / (2 * S * r), -0.25 / (s * lam * r)


def _nuclear_rank(lam, keep):
    s, S = lam.sqrt(), lam.sum()
    N = s.sum()
    return N**2 / S, N / (s * S) - N**2 / S**2, -0.5 * N / (s * lam * S)


def _stable(lam, keep):
    S, top = lam.sum(), int(lam.argmax())
    M = lam[top]
    g = torch.full_like(lam, 1.0) / M
    g[top] -= S / M**2
    return S / M, g, torch.zeros_like(lam)


def _top_mask(lam: Tensor, keep: int) -> Tensor:
    mask = torch.zeros_like(lam, dtype=torch.bool)
    mask[lam.argsort(descending=True)[:keep]] = True
    return mask


def _tail_value(lam, keep):
    S = lam.sum()
    return (S - lam.sort(descending=True).values[:keep].sum()) / S


def _tail(lam, keep):
    S, top = lam.sum(), _top_mask(lam, keep)
    kept = lam[top].sum()
    return (S - kept) / S, kept / S**2 - top.to(lam.dtype) / S, torch.zeros_like(lam)


SURROGATES: Registry[Spectral] = Registry("surrogate")
SURROGATES.register("nuclear", Spectral(lambda lam, keep: lam.sqrt().sum(), _nuclear))
SURROGATES.register("nuclear_fro", Spectral(lambda lam, keep: lam.sqrt().sum() / lam.sum().sqrt(), _nuclear_fro))
SURROGATES.register("stable", Spectral(lambda lam, keep: lam.sum() / lam.max(), _stable))
SURROGATES.register("nuclear_rank", Spectral(lambda lam, keep: lam.sqrt().sum() ** 2 / lam.sum(), _nuclear_rank))
SURROGATES.register("tail", Spectral(_tail_value, _tail))
SCALE_FREE = {"nuclear_fro", "stable", "nuclear_rank", "tail"}
NEEDS_RATIO = names.NEEDS_RATIO
assert sorted(SURROGATES.names()) == sorted(names.SURROGATES), SURROGATES.names()


def ridged_gram(A: Tensor, ridge: float = RIDGE) -> Tensor:
    """The smaller Gram matrix of A (A^T A or A A^T), in A's dtype, shifted by `ridge` * tr/n
    (the trace detached): the matrix every surrogate is a spectral function of."""
    assert A.dim() == 2, f"expected a matrix, got shape {tuple(A.shape)}"
    gram = A.T @ A if A.shape[0] >= A.shape[1] else A @ A.T  # (min, min)
    if ridge:
        n = gram.shape[0]
        shift = ridge * torch.trace(gram).detach() / n
        gram = gram + shift * torch.eye(n, dtype=gram.dtype, device=gram.device)
    return gram


def gram_eigenvalues(A: Tensor, ridge: float = RIDGE) -> Tensor:
    """Squared singular values of A (ascending), from the smaller Gram, float64, shifted by
    `ridge` * tr/n (0: the plain spectrum, as the figures want it)."""
    return torch.linalg.eigvalsh(ridged_gram(A.double(), ridge)).clamp(min=0)


def singular_values(A: Tensor) -> Tensor:
    return gram_eigenvalues(A).sqrt()


@dataclass(frozen=True)
class Surrogate:
    """A named surrogate with its options: R(A) (differentiable, exact) and R of a spectrum."""

    name: str
    tail_ratio: float | None = None

    def __post_init__(self) -> None:
        SURROGATES.get(self.name)  # unknown names: the allowed ones
        names.check_tail_ratio(self.name, self.tail_ratio)

    @property
    def spectral(self) -> Spectral:
        return SURROGATES.get(self.name)

    def keep(self, shape: tuple[int, int]) -> int | None:
        """The rank SVD-LLM keeps at `tail_ratio` for a matrix of this shape (None: not needed)."""
        return None if self.tail_ratio is None else rank_for_ratio(shape[0], shape[1], self.tail_ratio)

    def of_eigenvalues(self, lam: Tensor, shape: tuple[int, int]) -> Tensor:
        return self.spectral.value(lam, self.keep(shape))

    def __call__(self, A: Tensor) -> Tensor:
        return self.of_eigenvalues(gram_eigenvalues(A), tuple(A.shape))


def get_surrogate(name: str, tail_ratio: float | None = None) -> Surrogate:
    """R(A) of the named surrogate, differentiable in A (unknown names: the allowed ones)."""
    return Surrogate(name, tail_ratio)


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
    return float(_tail_value(gram_eigenvalues(A), rank))
