"""Surgery: truncate each target layer by plain SVD or SVD-LLM and make it a real two-factor layer.

Compression ratio R is the fraction of the target matrices' parameters REMOVED (SVD-LLM's
convention). For an (m x n) matrix the kept rank is k = floor(m n (1 - R) / (m + n)), at least 1.

SVD-LLM: A = W L (L: Cholesky factor of the input second moment), SVD(A) = U S V^T,
W_u = U_k S_k^{1/2} (m x k), W_v = S_k^{1/2} V_k^T L^{-1} (k x n) by a triangular solve. With
C = X X^T / N = L L^T this loses exactly ||(W - W_k) X||_F = sqrt(N) * ||S_tail||_2 (SVD-LLM Thm 3.2).

docs/method.md, section 5, says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from prehab.method.calibrate import Whitening, whiten_lower
from prehab.method import names
from prehab.method.ratio import check_ratio, rank_for_ratio
from prehab.errors import UsageError
from prehab.layers import FactorizedLinear, count_params, replace_modules

METHODS = names.COMPRESSION_METHODS


SVD = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def full_svd(W: torch.Tensor, L: torch.Tensor | None = None) -> "GramSVD":
    """The thin SVD in float64 of W L (SVD-LLM) or of W (plain SVD, `L` None), singular values
    descending, via `gram_svd`."""
    A = W.double() if L is None else whiten_lower(W, L)  # (m, n)
    return gram_svd(A)


@dataclass(frozen=True)
class GramSVD:
    """The thin SVD of A from its smaller Gram matrix's eigen-decomposition: the short side's
    singular vectors and the singular values at once, the long side's on demand (`top`), since a
    truncation to rank k needs only k of them (at R = 0.6 a fifth to a third). Unpacks as the
    whole (U, S, Vh)."""

    A: torch.Tensor  # (m, n)
    S: torch.Tensor  # (r,) descending, r = min(m, n)
    short: torch.Tensor  # (r, r): singular vectors of the short side, as columns, descending
    inverse: torch.Tensor  # (r,) 1 / S, 0 where S carries no energy (see gram_svd)

    def top(self, k: int) -> SVD:
        """(U (m, k), S (r,): all of them, Vh (k, n)): the leading k singular vectors."""
        lead = self.short[:, :k].contiguous()
        if self.A.shape[0] >= self.A.shape[1]:  # tall: U = A V / s
            return (self.A @ lead) * self.inverse[:k], self.S, lead.T
        return lead, self.S, (lead.T @ self.A) * self.inverse[:k, None]  # wide: V^T = U^T A / s

    def __iter__(self):
        return iter(self.top(len(self.S)))


def gram_svd(A: torch.Tensor) -> GramSVD:
    """The thin SVD of A from an eigen-decomposition of its smaller Gram matrix: 3-5x cheaper than
    `torch.linalg.svd` for the rectangular layers (MLPs, GQA projections), the same for square ones.

    Squaring costs accuracy only at the bottom of the spectrum: a singular value s is off by
    about eps (s_max / s)^2 of itself, so the part a truncation keeps is LAPACK's to 1e-12 of
    s_max even when it reaches 1e-4 s_max, while the discarded tail is accurate to about 1e-8
    s_max in absolute terms (tests/test_compress_svd.py; benchmarks/compress_speed.py prints the
    difference to an SVD path on the testbeds). Singular values below 1e-12 s_max get zero
    singular vectors on the long side: they carry no energy to keep."""
    tall = A.shape[0] >= A.shape[1]
    gram = A.T @ A if tall else A @ A.T  # (r, r), r = min(m, n)
    lam, vectors = torch.linalg.eigh(gram)  # ascending
    S = lam.flip(0).clamp(min=0).sqrt()
    inverse = torch.where(S > 1e-12 * S[0].clamp(min=torch.finfo(S.dtype).tiny), 1 / S, torch.zeros_like(S))
    return GramSVD(A, S, vectors.flip(1), inverse)


def truncated_factors(
    W: torch.Tensor, rank: int, L: torch.Tensor | None = None, svd: GramSVD | SVD | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_u (m, k), W_v (k, n), singular values of the matrix that was truncated), in float64.

    With `L` (lower Cholesky factor of the input second moment) this is SVD-LLM; without, plain SVD.
    `svd`: the `full_svd(W, L)` already computed (several ratios of one model share it), or any
    thin (U, S, Vh).
    """
    if L is not None:
        L = L.to(W.device)
    svd = full_svd(W, L) if svd is None else svd
    U, S, Vh = svd.top(rank) if isinstance(svd, GramSVD) else svd
    root = S[:rank].sqrt()
    W_u = U[:, :rank] * root  # (m, k)
    W_v = root[:, None] * Vh[:rank]  # (k, n)
    if L is not None:
        # W_v L^{-1}: solve X L = B for X, never forming inv(L).
        W_v = torch.linalg.solve_triangular(L.double(), W_v, upper=False, left=False)  # (k, n)
    return W_u, W_v, S


def factorized_layer(
    linear: nn.Linear, rank: int, L: torch.Tensor | None, svd: GramSVD | None = None
) -> FactorizedLinear:
    W_u, W_v, _ = truncated_factors(linear.weight.detach(), rank, L, svd)
    layer = FactorizedLinear(
        linear.in_features, linear.out_features, rank, linear.bias is not None,
        dtype=linear.weight.dtype, device=linear.weight.device,
    )
    with torch.no_grad():
        layer.u.weight.copy_(W_u.to(layer.u.weight.dtype))
        layer.v.weight.copy_(W_v.to(layer.v.weight.dtype))
        if linear.bias is not None:
            layer.u.bias.copy_(linear.bias)
    return layer


def compress_model(
    model: nn.Module, targets: list[str], ratio: float, method: str, whitening: Whitening | None,
    svd_cache: dict[str, GramSVD] | None = None,
) -> tuple[dict[str, int], dict[str, float]]:
    """Factorise every target layer in place. Returns ({layer: rank}, parameter report).

    `svd_cache` (layer name -> SVD), filled on first use, lets copies of one model be cut at
    several ratios with one SVD per layer: the SVD, not the truncation, is the cost."""
    check_ratio(ratio)
    if method not in METHODS:
        raise UsageError(f"unknown compression method {method!r}; known: {', '.join(METHODS)}")
    if method == "svd-llm" and whitening is None:
        raise UsageError("method svd-llm needs calibration factors (--grams from `prehab calibrate`)")
    params_before = count_params(model)
    ranks: dict[str, int] = {}
    target_before = target_after = 0

    def make(name: str, old: nn.Module) -> nn.Module:
        nonlocal target_before, target_after
        assert isinstance(old, nn.Linear), f"{name} is {type(old).__name__}, not nn.Linear"
        m, n = old.weight.shape
        k = rank_for_ratio(m, n, ratio)
        ranks[name] = k
        target_before += m * n
        target_after += k * (m + n)
        L = whitening.factor_of(name) if method == "svd-llm" else None
        svd = None
        if svd_cache is not None:
            if name not in svd_cache:
                svd_cache[name] = full_svd(old.weight.detach(), L)
            svd = svd_cache[name]
        return factorized_layer(old, k, L, svd)

    replace_modules(model, targets, make)
    params_after = count_params(model)
    report = {
        "ratio_nominal": ratio,
        "ratio_targets_actual": 1.0 - target_after / target_before,
        "target_params_before": target_before,
        "target_params_after": target_after,
        "model_params_before": params_before,
        "model_params_after": params_after,
        "ratio_model_actual": 1.0 - params_after / params_before,
    }
    return ranks, report
