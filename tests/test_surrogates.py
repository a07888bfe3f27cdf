"""Rank surrogates: gradients match finite differences; scale-free ones ignore scale."""

import pytest
import torch

from prehab.method.surrogates import (
    NEEDS_RATIO, SCALE_FREE, SURROGATES, entropy_rank, get_surrogate as named, singular_values, tail_energy,
)


def get_surrogate(name):
    return named(name, 0.5 if name in NEEDS_RATIO else None)
from prehab.errors import UsageError


def well_separated(m=7, n=5, seed=0) -> torch.Tensor:
    """A matrix with distinct singular values (eigenvalue gradients are smooth there)."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    S = torch.linspace(3.0, 0.5, min(m, n), dtype=torch.float64)
    return U[:, : len(S)] @ torch.diag(S) @ V[:, : len(S)].T


@pytest.mark.parametrize("name", SURROGATES.names())
@pytest.mark.parametrize("shape", [(7, 5), (5, 7)])
def test_gradient_matches_finite_differences(name, shape):
    A = well_separated(*shape).requires_grad_(True)
    assert torch.autograd.gradcheck(get_surrogate(name), (A,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(SCALE_FREE))
def test_scale_free_surrogates_ignore_scale(name):
    A = well_separated()
    R = get_surrogate(name)
    assert torch.allclose(R(A), R(37.0 * A), rtol=1e-9)


def test_nuclear_is_not_scale_free():
    A = well_separated()
    R = get_surrogate("nuclear")
    assert torch.allclose(R(3 * A), 3 * R(A), rtol=1e-6)


def test_values_against_exact_svd():
    A = well_separated()
    s = torch.linalg.svdvals(A)
    assert torch.allclose(singular_values(A).flip(0), s, rtol=1e-5)
    assert float(get_surrogate("stable")(A)) == pytest.approx(float((s**2).sum() / s[0] ** 2), rel=1e-5)
    assert float(get_surrogate("nuclear_rank")(A)) == pytest.approx(float(s.sum() ** 2 / (s**2).sum()), rel=1e-5)
    assert float(get_surrogate("nuclear_fro")(A)) == pytest.approx(float(s.sum() / (s**2).sum().sqrt()), rel=1e-5)


def test_diagnostics():
    flat = torch.eye(6, dtype=torch.float64)
    assert entropy_rank(flat) == pytest.approx(6.0, rel=1e-4)
    rank_two = torch.diag(torch.tensor([1.0, 1.0, 0, 0, 0, 0], dtype=torch.float64))
    assert entropy_rank(rank_two) == pytest.approx(2.0, rel=1e-2)
    assert tail_energy(rank_two, 2) == pytest.approx(0.0, abs=1e-5)


def test_unknown_surrogate_names_the_known_ones():
    with pytest.raises(UsageError, match="nuclear"):
        get_surrogate("trace")
