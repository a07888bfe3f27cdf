"""Penalty estimators: the fast (warm-started) estimator's value and gradient match the exact
ones once warm, on flat, decaying and clustered spectra and on real whitened weights; its drift
guard restarts after a large change and is right again; each surrogate's closed-form partial
derivatives equal autograd's; `tail` prices exactly what SVD-LLM's truncation removes, and
`tail_abs` its absolute energy over the constant fixed at the start, by every estimator."""

from __future__ import annotations

import pytest
import torch

from prehab.method.estimators import Matrices, Penalty, TrackedSpectrum, exact_value_and_grad
from prehab.method.lagged import LaggedPenalty
from prehab.method.ratio import rank_for_ratio
from prehab.method.surrogates import NEEDS_RATIO, SURROGATES, Surrogate, gram_eigenvalues
from spectra import SPECTRA, relative, walk, whitened_targets, with_spectrum

TOL = 1e-3
TAIL_RATIO = 0.6


def surrogate(name: str) -> Surrogate:
    return Surrogate(name, TAIL_RATIO if name in NEEDS_RATIO else None)


def start_anchor(R: Surrogate, A: torch.Tensor) -> float | None:
    """An anchored surrogate's constant for a walk that starts at A (its ridged energy)."""
    return float(gram_eigenvalues(A).sum()) if R.anchored else None


@pytest.mark.parametrize("name", SURROGATES.names())
def test_partials_equal_autograd(name):
    lam = gram_eigenvalues(with_spectrum(9, 6, SPECTRA["decaying"][:6])).requires_grad_(True)
    spectral, keep = SURROGATES.get(name), 2
    (auto,) = torch.autograd.grad(spectral.value(lam, keep), lam)
    value, g, _ = spectral.partials(lam.detach(), keep)
    assert float(value) == pytest.approx(float(spectral.value(lam.detach(), keep)), rel=1e-12)
    assert torch.allclose(g, auto, rtol=1e-10, atol=1e-14)


def test_tail_abs_partials_are_one_over_c_in_the_tail_and_zero_for_the_kept():
    lam = gram_eigenvalues(with_spectrum(9, 6, SPECTRA["decaying"][:6]))
    R, c = Surrogate("tail_abs", TAIL_RATIO), 3.0
    keep = R.keep((9, 6))
    value, g, dg = R.partials(lam, (9, 6), c)
    kept = lam.argsort(descending=True)[:keep]
    expected = torch.full_like(lam, 1 / c)
    expected[kept] = 0
    assert torch.equal(g, expected) and not dg.any()
    assert float(value) == pytest.approx(float(lam.sort(descending=True).values[keep:].sum()) / c, rel=1e-12)
    lam_auto = lam.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(R.of_eigenvalues(lam_auto, (9, 6), c), lam_auto)
    assert torch.allclose(g, auto, rtol=1e-12, atol=0)


@pytest.mark.parametrize("spectrum", sorted(SPECTRA))
@pytest.mark.parametrize("shape", [(72, 48), (48, 72)])
@pytest.mark.parametrize("name", SURROGATES.names())
def test_fast_matches_exact_once_warm(name, spectrum, shape):
    R = surrogate(name)
    A = with_spectrum(*shape, SPECTRA[spectrum])
    state, anchor = TrackedSpectrum(), start_anchor(R, A)
    state.estimate(A, R, anchor)  # cold
    for A in walk(A, steps=10, size=1e-4 * float(A.abs().mean())):
        value, grad = state.estimate(A, R, anchor)
        exact_value, exact_grad = exact_value_and_grad(A, R, anchor)
        assert float(abs(value - exact_value) / abs(exact_value)) <= TOL
        assert relative(grad, exact_grad) <= TOL
    assert state.restarts == 1  # warm all along: no cold restart after the first


def test_drift_guard_restarts_after_a_large_change_and_is_right_again():
    R = surrogate("nuclear_fro")
    A = with_spectrum(72, 48, SPECTRA["decaying"])
    state = TrackedSpectrum()
    for A in walk(A, steps=3, size=1e-4):
        state.estimate(A, R)
    before = state.restarts + state.refreshes
    jumped = A + 0.5 * torch.randn(A.shape, generator=torch.Generator().manual_seed(7))
    value, grad = state.estimate(jumped, R)
    assert state.restarts + state.refreshes > before
    exact_value, exact_grad = exact_value_and_grad(jumped, R)
    assert float(abs(value - exact_value) / exact_value) <= TOL and relative(grad, exact_grad) <= TOL


@pytest.mark.parametrize("arch", ["vit-tiny", "bert-tiny"])
def test_fast_matches_exact_on_real_whitened_weights(arch, tmp_path):
    from prehab.method.calibrate import whiten

    for name, W, L in whitened_targets(arch, tmp_path):
        A = whiten(W, L).float()
        for R in (surrogate("nuclear_fro"), surrogate("stable"), surrogate("tail"), surrogate("tail_abs")):
            state, anchor = TrackedSpectrum(), start_anchor(R, A)
            for step, B in enumerate(walk(A, steps=4, size=1e-5 * float(A.abs().mean()))):
                value, grad = state.estimate(B, R, anchor)
            exact_value, exact_grad = exact_value_and_grad(B, R, anchor)
            assert float(abs(value - exact_value) / abs(exact_value)) <= TOL, (name, R.name)
            assert relative(grad, exact_grad) <= TOL, (name, R.name)


def test_penalty_is_differentiable_and_equal_for_both_estimators():
    matrices = [with_spectrum(30, 20, SPECTRA["decaying"][:20], seed=s).requires_grad_(True) for s in range(3)]
    targets = Matrices(matrices, lambda i: matrices[i])
    grads = {}
    for estimator in ("exact", "fast"):
        penalty = Penalty(surrogate("nuclear"), estimator, targets)
        assert penalty.is_exact == (estimator == "exact")
        value = penalty(1, [0, 1, 2])
        grads[estimator] = torch.autograd.grad(value, matrices)
        if estimator == "exact":
            exact_value = float(value.detach())
        else:
            assert float(value.detach()) == pytest.approx(exact_value, rel=TOL)
    for fast, exact in zip(grads["fast"], grads["exact"]):
        assert relative(fast, exact) <= TOL
    # a subset is sum over it / n: matrix 1 alone is a third of its own value
    alone = Penalty(surrogate("nuclear"), "exact", targets)(1, [1])
    assert float(alone.detach()) == pytest.approx(float(surrogate("nuclear")(matrices[1]).detach()) / 3, rel=1e-9)


@pytest.mark.parametrize("estimator", ["exact", "fast", "lagged"])
def test_every_estimator_prices_tail_abs_against_the_starting_energy(estimator):
    """The constants are fixed on the starting matrices; after the matrices move (and are
    scaled), each estimator's value and gradient are the exact ones over those constants."""
    R = surrogate("tail_abs")
    start = [with_spectrum(30, 20, SPECTRA["decaying"][:20], seed=s) for s in range(2)]
    params = [A.clone().requires_grad_(True) for A in start]
    targets = Matrices(params, lambda i: params[i])
    penalty = (LaggedPenalty(R, targets, every=1) if estimator == "lagged" else Penalty(R, estimator, targets))
    anchors = [float(gram_eigenvalues(A).sum()) for A in start]
    assert [penalty.anchors.values[i] for i in range(2)] == anchors
    assert float(penalty(1, [0, 1]).detach()) == pytest.approx(float(surrogate("tail")(start[0]) + surrogate("tail")(
        start[1])) / 2, rel=1e-6)  # at the start: the relative tail (float32 matrices)
    for step, scale, noise in ((2, 1.01, 1e-4), (3, 2.0, 0.0)):  # a small step, then twice the matrix
        with torch.no_grad():
            for p in params:
                kick = torch.randn(p.shape, generator=torch.Generator().manual_seed(step))
                p.copy_(scale * (p + noise * float(p.abs().mean()) * kick))
        value = penalty(step, [0, 1])
        grads = torch.autograd.grad(value, params)
        exact = [exact_value_and_grad(p, R, c) for p, c in zip(params, anchors)]
        assert float(value.detach()) == pytest.approx(float(sum(v for v, _ in exact)) / 2, rel=TOL)
        for grad, (_, g) in zip(grads, exact):
            assert relative(grad, g / 2) <= TOL
    assert [penalty.anchors.values[i] for i in range(2)] == anchors  # never re-set


def test_tail_is_what_svd_llm_truncation_removes_and_its_gradient_is_right():
    A = with_spectrum(30, 20, SPECTRA["decaying"][:20]).double()
    R = Surrogate("tail", 0.5)
    k = rank_for_ratio(30, 20, 0.5)
    sigma = torch.linalg.svdvals(A)
    assert float(R(A)) == pytest.approx(float((sigma[k:] ** 2).sum() / (sigma**2).sum()), rel=1e-5)
    assert torch.autograd.gradcheck(R, (A.clone().requires_grad_(True),), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_tail_needs_its_ratio_and_others_refuse_one():
    from prehab.errors import UsageError

    with pytest.raises(UsageError, match="tail-ratio"):
        Surrogate("tail")
    with pytest.raises(UsageError, match="tail-ratio"):
        Surrogate("nuclear", 0.5)
