"""Rank surrogates: gradients match finite differences; scale-free ones ignore scale, while the
anchored absolute tail keeps it (fixed constant per matrix, set by its first evaluation)."""

import pytest
import torch

from prehab.method.surrogates import (
    NEEDS_RATIO, SCALE_FREE, SURROGATES, Anchors, entropy_rank, get_surrogate as named, gram_eigenvalues,
    singular_values, tail_energy,
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
    R = get_surrogate(name)
    anchor = 2.5 if R.anchored else None  # an anchored surrogate's constant (fixed, never differentiated)
    assert torch.autograd.gradcheck(lambda X: R(X, anchor), (A,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(SCALE_FREE))
def test_scale_free_surrogates_ignore_scale(name):
    A = well_separated()
    R = get_surrogate(name)
    assert torch.allclose(R(A), R(37.0 * A), rtol=1e-9)


def test_the_absolute_tail_keeps_the_scale_the_relative_one_drops():
    """Over one constant c, tail_abs of 2A is 4x that of A (what truncation loses grows as
    ||A||^2), while the scale-free surrogates, tail among them, do not move."""
    A = well_separated()
    R, c = get_surrogate("tail_abs"), 7.0
    assert float(R(2 * A, c)) == pytest.approx(4 * float(R(A, c)), rel=1e-9)
    for name in ("tail", "nuclear_fro"):
        assert float(get_surrogate(name)(2 * A)) == pytest.approx(float(get_surrogate(name)(A)), rel=1e-9)
    s = torch.linalg.svdvals(A)
    k = R.keep(tuple(A.shape))
    assert float(R(A, c)) == pytest.approx(float((s[k:] ** 2).sum()) / c, rel=1e-5)
    assert "tail_abs" not in SCALE_FREE and "tail" in SCALE_FREE


def test_anchors_are_set_by_the_first_evaluation_and_fixed():
    A = well_separated()
    R = get_surrogate("tail_abs")
    anchors = Anchors(R)
    first = anchors.evaluate(0, A)
    assert anchors.values == {0: pytest.approx(float(gram_eigenvalues(A).sum()), rel=1e-15)}
    assert float(first) == pytest.approx(float(get_surrogate("tail")(A)), rel=1e-9)  # at its anchor: the relative tail
    assert float(anchors.evaluate(0, 2 * A)) == pytest.approx(4 * float(first), rel=1e-9)  # the constant stayed
    assert Anchors(get_surrogate("tail")).evaluate(0, A) == get_surrogate("tail")(A)  # others have none
    with pytest.raises(ValueError, match="tail_abs is anchored"):
        R(A)


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
