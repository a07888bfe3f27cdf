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
| tail_abs      | sum_{i>k} sigma_i^2 / c, c = ||A_start||_F^2   | no (anchored) |

A scale-free surrogate is unchanged when A is scaled, so it reads only the spectrum's shape:
growing the largest singular values lowers it as much as shrinking the small ones, and a
penalty on it can be met by growing ||A||, which leaves what truncation loses (the absolute
tail) almost where it was. `nuclear` and `tail_abs` cannot be met that way.

`stable` is the stable rank of the paper's BERT code; `nuclear_rank` is the different
effective-rank measure the seed summary called "stable rank": both are offered, by name.
`tail` is what SVD-LLM's truncation at ratio R removes (its theorem), relative to the energy:
the whitened energy beyond the rank k = floor(m n (1 - R) / (m + n)) the surgery keeps
(`--tail-ratio R`). `tail_abs` is that energy itself (SVD-LLM's squared output error), divided
by a constant per matrix, its ||A||_F^2 at the start of Prehab (`Anchors`: fixed by the first
evaluation, never differentiated), so one lambda means the same on layers of any size.

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
    `keep` (only the tails read it): `value` is differentiable (the exact path), `partials`
    gives (R, dR/dlam_i, d/dlam_i of the smooth part of dR/dlam_i) for the fast estimators.
    An anchored surrogate's functions leave out its constant (`Surrogate` divides by it)."""

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


def _tail_abs_value(lam, keep):
    return lam.sum() - lam.sort(descending=True).values[:keep].sum()


def _tail_abs(lam, keep):
    top = _top_mask(lam, keep)
    return lam[~top].sum(), (~top).to(lam.dtype), torch.zeros_like(lam)


SURROGATES: Registry[Spectral] = Registry("surrogate")
SURROGATES.register("nuclear", Spectral(lambda lam, keep: lam.sqrt().sum(), _nuclear))
SURROGATES.register("nuclear_fro", Spectral(lambda lam, keep: lam.sqrt().sum() / lam.sum().sqrt(), _nuclear_fro))
SURROGATES.register("stable", Spectral(lambda lam, keep: lam.sum() / lam.max(), _stable))
SURROGATES.register("nuclear_rank", Spectral(lambda lam, keep: lam.sqrt().sum() ** 2 / lam.sum(), _nuclear_rank))
SURROGATES.register("tail", Spectral(_tail_value, _tail))
SURROGATES.register("tail_abs", Spectral(_tail_abs_value, _tail_abs))  # anchored: / c per matrix
SCALE_FREE = names.SCALE_FREE
NEEDS_RATIO = names.NEEDS_RATIO
ANCHORED = names.ANCHORED
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
    """A named surrogate with its options: R(A) (differentiable, exact) and R of a spectrum.

    An anchored surrogate (`tail_abs`) is divided by its matrix's constant c, the `anchor`
    argument (`Anchors` holds them); the others take no anchor and ignore one given."""

    name: str
    tail_ratio: float | None = None

    def __post_init__(self) -> None:
        SURROGATES.get(self.name)  # unknown names: the allowed ones
        names.check_tail_ratio(self.name, self.tail_ratio)

    @property
    def spectral(self) -> Spectral:
        return SURROGATES.get(self.name)

    @property
    def anchored(self) -> bool:
        return self.name in ANCHORED

    def keep(self, shape: tuple[int, int]) -> int | None:
        """The rank SVD-LLM keeps at `tail_ratio` for a matrix of this shape (None: not needed)."""
        return None if self.tail_ratio is None else rank_for_ratio(shape[0], shape[1], self.tail_ratio)

    def _divisor(self, anchor: float | None) -> float | None:
        """The constant to divide by (None: none), refusing an anchored surrogate without one."""
        if not self.anchored:
            return None
        if anchor is None or not anchor > 0:
            raise ValueError(f"surrogate {self.name} is anchored: it needs its matrix's constant c > 0 "
                             f"(surrogates.Anchors), got {anchor}")
        return anchor

    def of_eigenvalues(self, lam: Tensor, shape: tuple[int, int], anchor: float | None = None) -> Tensor:
        value = self.spectral.value(lam, self.keep(shape))
        c = self._divisor(anchor)
        return value if c is None else value / c

    def partials(self, lam: Tensor, shape: tuple[int, int],
                 anchor: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(R, dR/dlam_i, d/dlam_i of the smooth part of dR/dlam_i) of a spectrum (`Spectral`)."""
        value, g, dg = self.spectral.partials(lam, self.keep(shape))
        c = self._divisor(anchor)
        return (value, g, dg) if c is None else (value / c, g / c, dg / c)

    def __call__(self, A: Tensor, anchor: float | None = None) -> Tensor:
        return self.of_eigenvalues(gram_eigenvalues(A), tuple(A.shape), anchor)


class Anchors:
    """The constants c_i of an anchored surrogate, one per target matrix: each is set by the
    first evaluation of its matrix (the sum of its ridged Gram eigenvalues, ||A_i||_F^2 up to
    the ridge, detached) and fixed from then on, so the surrogate keeps A's scale. The
    penalties fix them all on the starting weights (`fix_all`), before any step. For a surrogate
    that is not anchored every constant is None."""

    def __init__(self, surrogate: Surrogate):
        self.surrogate = surrogate
        self.values: dict[int, float] = {}

    def of(self, i: int, lam: Tensor) -> float | None:
        """Matrix i's constant, set from `lam` (its Gram eigenvalues) if this is its first evaluation."""
        if not self.surrogate.anchored:
            return None
        if i not in self.values:
            self.values[i] = float(lam.detach().sum())
        return self.values[i]

    @torch.no_grad()
    def fix_all(self, matrices: list[Tensor]) -> None:
        """Every matrix's constant, from `matrices` (all of them, in order): the starting ones."""
        if self.surrogate.anchored:
            for i, A in enumerate(matrices):
                self.of(i, gram_eigenvalues(A))

    def evaluate(self, i: int, A: Tensor) -> Tensor:
        """R(A) of matrix i, exact and differentiable in A, divided by its constant if anchored."""
        lam = gram_eigenvalues(A)
        return self.surrogate.of_eigenvalues(lam, tuple(A.shape), self.of(i, lam))


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
