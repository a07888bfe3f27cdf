"""Penalty estimators: the fast (warm-started) estimator's value and gradient match the exact
ones once warm, on flat, decaying and clustered spectra and on real whitened weights; its drift
guard restarts after a large change and is right again; each surrogate's closed-form partial
derivatives equal autograd's; `tail` prices exactly what SVD-LLM's truncation removes."""

from __future__ import annotations

import pytest
import torch

from prehab.method.estimators import Penalty, TrackedSpectrum, exact_value_and_grad
from prehab.method.ratio import rank_for_ratio
from prehab.method.surrogates import NEEDS_RATIO, SURROGATES, Surrogate, gram_eigenvalues
from spectra import SPECTRA, relative, walk, whitened_targets, with_spectrum

TOL = 1e-3
TAIL_RATIO = 0.6


def surrogate(name: str) -> Surrogate:
    return Surrogate(name, TAIL_RATIO if name in NEEDS_RATIO else None)


@pytest.mark.parametrize("name", SURROGATES.names())
def test_partials_equal_autograd(name):
    lam = gram_eigenvalues(with_spectrum(9, 6, SPECTRA["decaying"][:6])).requires_grad_(True)
    spectral, keep = SURROGATES.get(name), 2
    (auto,) = torch.autograd.grad(spectral.value(lam, keep), lam)
    value, g, _ = spectral.partials(lam.detach(), keep)
    assert float(value) == pytest.approx(float(spectral.value(lam.detach(), keep)), rel=1e-12)
    assert torch.allclose(g, auto, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("spectrum", sorted(SPECTRA))
@pytest.mark.parametrize("shape", [(72, 48), (48, 72)])
@pytest.mark.parametrize("name", SURROGATES.names())
def test_fast_matches_exact_once_warm(name, spectrum, shape):
    R = surrogate(name)
    A = with_spectrum(*shape, SPECTRA[spectrum])
    state = TrackedSpectrum()
    state.estimate(A, R)  # cold
    for A in walk(A, steps=10, size=1e-4 * float(A.abs().mean())):
        value, grad = state.estimate(A, R)
        exact_value, exact_grad = exact_value_and_grad(A, R)
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
        for R in (surrogate("nuclear_fro"), surrogate("stable"), surrogate("tail")):
            state = TrackedSpectrum()
            for step, B in enumerate(walk(A, steps=4, size=1e-5 * float(A.abs().mean()))):
                value, grad = state.estimate(B, R)
            exact_value, exact_grad = exact_value_and_grad(B, R)
            assert float(abs(value - exact_value) / abs(exact_value)) <= TOL, (name, R.name)
            assert relative(grad, exact_grad) <= TOL, (name, R.name)


def test_penalty_is_differentiable_and_equal_for_both_estimators():
    matrices = [with_spectrum(30, 20, SPECTRA["decaying"][:20], seed=s).requires_grad_(True) for s in range(3)]
    grads = {}
    for estimator in ("exact", "fast"):
        penalty = Penalty(surrogate("nuclear"), estimator, len(matrices))
        value = penalty(matrices, [0, 1, 2])
        grads[estimator] = torch.autograd.grad(value, matrices)
        if estimator == "exact":
            exact_value = float(value.detach())
        else:
            assert float(value.detach()) == pytest.approx(exact_value, rel=TOL)
    for fast, exact in zip(grads["fast"], grads["exact"]):
        assert relative(fast, exact) <= TOL
    # a subset is sum over it / n: matrix 1 alone is a third of its own value
    alone = Penalty(surrogate("nuclear"), "exact", 3)([matrices[1]], [1])
    assert float(alone.detach()) == pytest.approx(float(surrogate("nuclear")(matrices[1]).detach()) / 3, rel=1e-9)


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
