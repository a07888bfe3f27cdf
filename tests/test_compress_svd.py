"""The Gram-based SVD that surgery runs on: the triplets a truncation keeps equal LAPACK's SVD
to float64 rounding, on whitened matrices whose spectra span many decades."""

import pytest
import torch

from prehab.method.calibrate import GRAM_TILE, whiten, whiten_lower
from prehab.method.compress import gram_svd, truncated_factors
from prehab.method.ratio import rank_for_ratio
from spectra import with_spectrum


def decaying(m: int, n: int, decades: float, seed: int = 0) -> torch.Tensor:
    """A float64 (m, n) matrix with singular values spread log-evenly over `decades` decades."""
    sigma = torch.logspace(0, -decades, min(m, n), dtype=torch.float64)
    return with_spectrum(m, n, sigma, seed, dtype=torch.float64)


@pytest.mark.parametrize("m, n", [(96, 40), (40, 96), (64, 64)])
@pytest.mark.parametrize("ratio", [0.2, 0.6, 0.9])
def test_kept_triplets_match_lapack(m, n, ratio):
    A = decaying(m, n, decades=8)  # whitened Grams reach lam_min / lam_max ~ 3e-9 (whitened_spectra.py)
    k = rank_for_ratio(m, n, ratio)
    U, S, Vh = gram_svd(A)
    ref_U, ref_S, ref_Vh = torch.linalg.svd(A, full_matrices=False)
    relative = (S[:k] - ref_S[:k]).abs() / ref_S[:k]
    assert (relative <= 1e-14 * (ref_S[0] / ref_S[:k]) ** 2).all()  # eps (s_max / s)^2, as the docstring says
    kept = (U[:, :k] * S[:k]) @ Vh[:k]
    ref_kept = (ref_U[:, :k] * ref_S[:k]) @ ref_Vh[:k]
    assert float((kept - ref_kept).abs().max()) <= 1e-12 * float(ref_S[0])
    assert float((S - ref_S).abs().max()) <= 1e-7 * float(ref_S[0])  # the tail: absolute accuracy only


def test_truncated_factors_unchanged_against_a_lapack_svd():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(48, 80, generator=g, dtype=torch.float64)
    L = torch.linalg.cholesky(decaying(80, 80, decades=3, seed=4) @ decaying(80, 80, decades=3, seed=4).T
                              + 1e-9 * torch.eye(80, dtype=torch.float64))
    W_u, W_v, _ = truncated_factors(W, 20, L)
    ref = torch.linalg.svd(W @ L, full_matrices=False)
    R_u, R_v, _ = truncated_factors(W, 20, L, svd=ref)
    assert torch.allclose(W_u @ W_v, R_u @ R_v, rtol=0, atol=1e-9 * float((R_u @ R_v).abs().max()))


def test_rank_deficient_matrix_keeps_finite_factors():
    A = torch.zeros(30, 12, dtype=torch.float64)
    A[:, :3] = torch.randn(30, 3, dtype=torch.float64)  # rank 3
    U, S, Vh = gram_svd(A)
    assert torch.isfinite(U).all() and torch.isfinite(Vh).all()
    assert torch.allclose((U[:, :6] * S[:6]) @ Vh[:6], A, atol=1e-12)


@pytest.mark.parametrize("m, n", [(96, 40), (40, 96)])
def test_kept_singular_vectors_alone_equal_the_whole_sides(m, n):
    svd = gram_svd(decaying(m, n, decades=6))
    U, S, Vh = svd  # every singular vector
    U_k, S_all, Vh_k = svd.top(7)
    assert U_k.shape == (m, 7) and Vh_k.shape == (7, n) and torch.equal(S_all, S)
    assert torch.allclose(U_k, U[:, :7], rtol=0, atol=1e-13) and torch.allclose(Vh_k, Vh[:7], rtol=0, atol=1e-13)


@pytest.mark.parametrize("n", [GRAM_TILE - 1, 2 * GRAM_TILE + 5])
def test_triangular_whitening_equals_the_full_product(n):
    g = torch.Generator().manual_seed(7)
    W = torch.randn(50, n, generator=g)
    X = torch.randn(4 * n, n, generator=g, dtype=torch.float64)
    L = torch.linalg.cholesky(X.T @ X / len(X))
    full = whiten(W, L)
    assert torch.allclose(whiten_lower(W, L), full, rtol=0, atol=1e-13 * float(full.abs().max()))
