"""The `lagged` estimator: exact value and gradient at each refresh (through the whitening, in the
parameter), the refresh-time gradient in between, refreshes spread in rotation so every step
pays about 1/k of the exact cost, and a drift guard that shortens a matrix's lag once its
gradient goes stale; a Prehab run with k = 1 trains the same weights as the exact estimator;
over a whole default lag of Adam-sized steps (synthetic spectra, real whitened weights) the
linearised value stays within 1e-3 of the exact one and the gradient within the guard's bound;
an anchored surrogate (`tail_abs`) keeps the constant fixed at the start."""

from __future__ import annotations

import pytest
import torch

from prehab.method.estimators import Matrices
from prehab.method.lagged import LaggedPenalty
from prehab.method.names import DEFAULT_REFRESH
from prehab.method.surrogates import NEEDS_RATIO, SURROGATES, Surrogate
from spectra import SPECTRA, relative, walk, whitened_targets, with_spectrum

K = 24


def surrogate(name: str) -> Surrogate:
    return Surrogate(name, 0.6 if name in NEEDS_RATIO else None)


def weights_and_factors(n: int, seed: int = 0):
    """n weights W (trainable, float32) with factors L: the `weight` space's A = W L."""
    g = torch.Generator().manual_seed(seed)
    Ws = [torch.randn(36, K, generator=g).requires_grad_(True) for _ in range(n)]
    Ls = [torch.linalg.cholesky(torch.eye(K) + 0.3 * (X := torch.randn(K, K, generator=g)) @ X.T / K) for _ in range(n)]
    return Ws, Ls


def targets(Ws: list[torch.Tensor], Ls: list[torch.Tensor | None]) -> Matrices:
    """Target i: the trainable W = Ws[i] (read when called: tests swap it) and the matrix W L."""
    found = Matrices(Ws, lambda i: found.params[i] if Ls[i] is None else found.params[i] @ Ls[i])
    return found


def exact_grad(R: Surrogate, W: torch.Tensor, L: torch.Tensor,
               anchor: float | None = None) -> tuple[float, torch.Tensor]:
    W = W.detach().clone().requires_grad_(True)
    value = R(W @ L, anchor)
    (grad,) = torch.autograd.grad(value, W)
    return float(value.detach()), grad


@pytest.mark.parametrize("name", SURROGATES.names())
def test_refresh_is_exact_and_the_lag_serves_the_refresh_gradient(name):
    R = surrogate(name)
    Ws, Ls = weights_and_factors(1)
    penalty = LaggedPenalty(R, targets(Ws, Ls), every=3)
    anchor = penalty.anchors.values.get(0)  # tail_abs: the starting energy; else None
    penalty(1, [0])  # cold
    value = penalty(2, [0])  # the first refresh of the rotation
    (grad,) = torch.autograd.grad(value, Ws)
    exact_value, exact = exact_grad(R, Ws[0], Ls[0], anchor)
    assert float(value.detach()) == pytest.approx(exact_value, rel=1e-6)
    assert torch.allclose(grad, exact, rtol=1e-5, atol=1e-8)
    for step in (3, 4):  # within the lag of 3: linearised
        with torch.no_grad():
            Ws[0] += 1e-3 * torch.randn(Ws[0].shape, generator=torch.Generator().manual_seed(step))
        moved = penalty(step, [0])
        (stale,) = torch.autograd.grad(moved, Ws)
        assert torch.equal(stale, grad)
        assert float(moved.detach()) == pytest.approx(exact_grad(R, Ws[0], Ls[0], anchor)[0], rel=1e-4)  # 2nd order
    assert penalty.refreshes == 2 and penalty.anchors.values.get(0) == anchor  # fixed, however W moved
    penalty(5, [0])
    assert penalty.refreshes == 3


def test_refreshes_rotate_so_each_step_pays_one_kth():
    R = surrogate("nuclear_fro")
    Ws, Ls = weights_and_factors(8)
    penalty = LaggedPenalty(R, targets(Ws, Ls), every=4)
    per_step = []
    for step in range(1, 14):
        before = penalty.refreshes
        penalty(step, list(range(8)))
        per_step.append(penalty.refreshes - before)
    assert per_step[0] == 8  # the cold start
    assert per_step[1:] == [2] * 12  # then 8 / 4 per step, every matrix once every 4 steps
    assert penalty.shortened == 0  # nothing moved


def test_drift_guard_shortens_the_lag_of_a_matrix_that_moved_and_is_exact_again():
    R = surrogate("nuclear")
    Ws, Ls = weights_and_factors(2)
    penalty = LaggedPenalty(R, targets(Ws, Ls), every=4)

    def at(step):
        return penalty(step, [0, 1])

    at(1)
    with torch.no_grad():  # a large change of matrix 0 only
        Ws[0] += 0.5 * torch.randn(Ws[0].shape, generator=torch.Generator().manual_seed(7))
    step = 2
    while penalty.shortened == 0 and step < 10:
        value = at(step)
        step += 1
    assert penalty.shortened == 1 and penalty.lags == [2, 4]
    assert penalty.worst_drift > penalty.tol
    (grad,) = torch.autograd.grad(value, Ws[0])  # the step of that refresh: exact again
    assert torch.allclose(grad, exact_grad(R, Ws[0], Ls[0])[1] / 2, rtol=1e-5, atol=1e-8)


def test_lagged_with_a_one_step_lag_trains_what_the_exact_estimator_trains(tmp_path):
    from prehab import checkpoint
    from prehab.cli import main

    assert main(["pretrain", "--arch", "tiny-mlp", "--steps", "5", "--out", str(tmp_path / "dense")]) == 0
    assert main(["calibrate", "--model", str(tmp_path / "dense"), "--samples", "64", "--out", str(tmp_path / "cal")]) == 0
    runs = {"exact": [], "lagged": ["--refresh-every", "1"], "lagged4": ["--refresh-every", "4"]}
    weights = {}
    for label, extra in runs.items():
        estimator = "exact" if label == "exact" else "lagged"
        assert main(["prehab", "--model", str(tmp_path / "dense"), "--grams", str(tmp_path / "cal"),
                     "--surrogate", "nuclear_fro", "--lam", "10", "--space", "weight", "--steps", "6",
                     "--estimator", estimator, *extra, "--out", str(tmp_path / label)]) == 0
        weights[label] = checkpoint.load(tmp_path / label).model.state_dict()
    dense = checkpoint.load(tmp_path / "dense").model.state_dict()
    for key, exact in weights["exact"].items():
        assert torch.allclose(weights["lagged"][key], exact, rtol=1e-5, atol=1e-7), key
    moved = [key for key in dense if not torch.equal(dense[key], weights["lagged4"][key])]
    assert moved and any(not torch.equal(weights["lagged4"][k], weights["exact"][k]) for k in moved)


def test_refresh_every_needs_the_lagged_estimator():
    from prehab.errors import UsageError
    from prehab.steps.prehab import Options

    with pytest.raises(UsageError, match="--refresh-every 4 needs --estimator lagged"):
        Options(model="m", grams="g", refresh_every=4, out="o")


def served(penalty: LaggedPenalty, W: torch.Tensor, step: int):
    """(value, gradient in W) of a one-matrix lagged penalty at `step`, its weight now W."""
    penalty.targets.params[0] = W
    value = penalty(step, [0])
    (grad,) = torch.autograd.grad(value, W)
    return float(value.detach()), grad


@pytest.mark.parametrize("spectrum", sorted(SPECTRA))
@pytest.mark.parametrize("shape", [(72, 48), (48, 72)])
@pytest.mark.parametrize("name", SURROGATES.names())
def test_between_refreshes_the_value_is_exact_to_1e3_and_the_gradient_as_stale_as_the_guard_allows(
        name, spectrum, shape):
    """A whole default lag of Adam-sized steps (every entry moved by 1e-4 of its mean size per
    step): the linearised value stays within 1e-3 of the exact one and the served gradient
    within the drift guard's tolerance of the exact gradient where it is."""
    R = surrogate(name)
    A = with_spectrum(*shape, SPECTRA[spectrum])
    W = A.clone().requires_grad_(True)
    penalty = LaggedPenalty(R, targets([W], [None]), every=DEFAULT_REFRESH)
    anchor = penalty.anchors.values.get(0)
    served(penalty, W, 1)  # the cold start
    for step, B in enumerate(walk(A, steps=DEFAULT_REFRESH, size=1e-4 * float(A.abs().mean())), start=2):
        W = B.clone().requires_grad_(True)
        value, grad = served(penalty, W, step)
        exact_value, exact = exact_grad(R, W, torch.eye(W.shape[1]), anchor)
        assert abs(value - exact_value) <= 1e-3 * abs(exact_value), step
        assert relative(grad, exact) <= penalty.tol, step
    assert penalty.refreshes == 2  # the cold start and step 2's: the rest was linearised


@pytest.mark.parametrize("arch", ["vit-tiny", "bert-tiny"])
def test_lagged_tracks_exact_on_real_whitened_weights(arch, tmp_path):
    """As above, on the whitened weights W L of a real (tiny) model: the parameter is W."""
    for name, W0, L in whitened_targets(arch, tmp_path):
        L = L.float()  # the `weight` space's W L, in the weight's dtype
        for R in (surrogate("nuclear_fro"), surrogate("stable"), surrogate("tail"), surrogate("tail_abs")):
            W = W0.clone().requires_grad_(True)
            penalty = LaggedPenalty(R, targets([W], [L]), every=DEFAULT_REFRESH)
            anchor = penalty.anchors.values.get(0)
            served(penalty, W, 1)
            for step, B in enumerate(walk(W0, steps=DEFAULT_REFRESH, size=1e-4 * float(W0.abs().mean())), start=2):
                W = B.clone().requires_grad_(True)
                value, grad = served(penalty, W, step)
                exact_value, exact = exact_grad(R, W, L, anchor)
                if step == 2:  # a refresh: exact
                    assert value == pytest.approx(exact_value, rel=1e-6) and relative(grad, exact) <= 1e-5
                assert abs(value - exact_value) <= 1e-3 * abs(exact_value), (name, R.name, step)
                assert relative(grad, exact) <= penalty.tol, (name, R.name, step)
