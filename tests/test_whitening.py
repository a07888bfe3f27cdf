"""SVD-LLM whitening and truncation: the exactness theorem, the rank formula, damping."""

import math

import pytest
import torch

from prehab.method.calibrate import JITTER_LADDER, robust_cholesky, whitening_from_moments
from prehab.method.compress import truncated_factors
from prehab.method.ratio import rank_for_ratio
from prehab.errors import UsageError


def correlated_inputs(n_features: int, n_tokens: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n_features, n_features, generator=g, dtype=torch.float64)
    scales = torch.logspace(0, -3, n_features, dtype=torch.float64)
    return (mix * scales) @ torch.randn(n_features, n_tokens, generator=g, dtype=torch.float64)  # (n, N)


@pytest.mark.parametrize("rank", [1, 5, 12, 19])
def test_whitened_truncation_error_is_the_discarded_singular_values(rank):
    g = torch.Generator().manual_seed(1)
    W = torch.randn(24, 30, generator=g, dtype=torch.float64)  # (m, n)
    X = correlated_inputs(30, 500)  # (n, N)
    N = X.shape[1]
    L, record = robust_cholesky(X @ X.T / N)
    assert record["method"] == "cholesky"
    W_u, W_v, S = truncated_factors(W, rank, L)
    assert W_u.shape == (24, rank) and W_v.shape == (rank, 30)
    err = torch.linalg.norm((W - W_u @ W_v) @ X)
    expected = math.sqrt(N) * torch.linalg.norm(S[rank:])
    assert abs(float(err) - float(expected)) <= 1e-8 * float(expected)

    # Plain SVD of W at the same rank is never better in the output-error norm.
    P_u, P_v, _ = truncated_factors(W, rank)
    plain_err = torch.linalg.norm((W - P_u @ P_v) @ X)
    assert float(err) <= float(plain_err) * (1 + 1e-12)


@pytest.mark.parametrize(
    "m, n, ratio, k",
    [(768, 768, 0.2, 307), (768, 768, 0.6, 153), (4096, 11008, 0.4, 1791), (64, 48, 0.95, 1), (10, 10, 0.5, 2)],
)
def test_rank_formula(m, n, ratio, k):
    assert rank_for_ratio(m, n, ratio) == k
    assert k * (m + n) <= m * n * (1 - ratio) or k == 1


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_rank_formula_rejects_ratios_outside_unit_interval(ratio):
    with pytest.raises(UsageError, match="outside"):
        rank_for_ratio(10, 10, ratio)


def test_dead_features_factor_with_recorded_damping():
    X = correlated_inputs(16, 200)
    X[[3, 7]] = 0.0  # two dead input features
    C = X @ X.T / X.shape[1]
    L, record = robust_cholesky(C)
    assert record["method"] in ("jitter", "eig_floor")
    assert record["shift"] > 0
    assert torch.isfinite(L).all()
    assert torch.allclose(L @ L.T, C, atol=10 * record["shift"] + 1e-12)


def test_fewer_tokens_than_features_factors():
    X = correlated_inputs(64, 10)  # rank 10 < 64
    L, record = robust_cholesky(X @ X.T / 10)
    assert record["method"] != "cholesky"
    assert torch.isfinite(L).all() and torch.all(torch.diagonal(L) > 0)


def test_zero_matrix_falls_back_to_identity_and_says_so():
    L, record = robust_cholesky(torch.zeros(5, 5, dtype=torch.float64))
    assert record["method"] == "identity"
    assert torch.equal(L, torch.eye(5, dtype=torch.float64))


def test_ladder_is_ordered():
    assert list(JITTER_LADDER) == sorted(JITTER_LADDER)


def test_rank_deficient_calibration_is_flagged():
    """Fewer tokens than inputs, or a dead input, is flagged whatever damping makes it factor."""
    torch.manual_seed(0)
    X = torch.randn(8, 20, dtype=torch.float64)  # 20 tokens of 8 inputs: full rank
    full = X @ X.T / 20
    dead = full.clone()
    dead[3, :] = dead[:, 3] = 0.0  # an input the calibration never saw
    few = torch.randn(8, 5, dtype=torch.float64)
    w = whitening_from_moments({"a": full, "b": dead, "c": few @ few.T / 5}, {"a": "a", "b": "b", "c": "c"}, 20)
    assert [w.damping[k]["rank_deficient"] for k in "abc"] == [False, True, True]
    assert whitening_from_moments({"a": full}, {"a": "a"}, 5).damping["a"]["rank_deficient"]  # 5 tokens < 8 inputs


def test_damping_adds_a_fraction_of_the_mean_diagonal():
    torch.manual_seed(1)
    X = torch.randn(6, 30, dtype=torch.float64)
    C = X @ X.T / 30
    L, record = robust_cholesky(C, damping=0.01)
    shift = 0.01 * float(torch.trace(C)) / 6
    assert record["method"] == "damped" and record["shift"] == pytest.approx(shift)
    assert torch.allclose(L @ L.T, C + shift * torch.eye(6, dtype=torch.float64))
    assert not record["rank_deficient"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_damped_whitening_equals_a_damped_calibration(dtype):
    """Whitening.damped re-makes each factor from L L^T: the factor `calibrate --damping` would have
    made from the same moment, in the stored dtype; damping 0 changes nothing."""
    torch.manual_seed(2)
    X = torch.randn(40, 8, dtype=torch.float64) * torch.logspace(0, -3, 8, dtype=torch.float64)
    C = X.T @ X / 40
    plain = whitening_from_moments({"a": C.clone()}, {"a": "a", "b": "a"}, 40, dtype=dtype)
    calibrated = whitening_from_moments({"a": C.clone()}, {"a": "a", "b": "a"}, 40, damping=0.01, dtype=dtype)
    damped = plain.damped(0.01)
    assert damped.factor_of("b").dtype == dtype and list(damped.factors) == ["a"]
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    scale = float(calibrated.factor_of("a").abs().max())
    assert float((damped.factor_of("b") - calibrated.factor_of("a")).abs().max()) < tol * scale
    assert float((damped.factor_of("a") - plain.factor_of("a")).abs().max()) > 100 * tol * scale  # it did damp
    assert plain.damped(0.0) is plain


@pytest.mark.parametrize("damping", [0.0, 0.01])
def test_factoring_in_place_gives_the_same_factor(monkeypatch, damping):
    """overwrite=True symmetrises tile by tile inside C (tiles smaller than C here, so the
    off-diagonal tiles are exercised): the factor is bit for bit the copying path's."""
    from prehab.method import calibrate

    monkeypatch.setattr(calibrate, "SYMMETRISE_TILE", 7)
    torch.manual_seed(2)
    X = torch.randn(300, 20, dtype=torch.float64)
    C = X.T @ X / 300
    C += 1e-12 * torch.randn(20, 20, dtype=torch.float64)  # not exactly symmetric, as sums of X^T X are not
    L_copy, record_copy = robust_cholesky(C, damping)
    kept = C.clone()
    L_in_place, record_in_place = robust_cholesky(C, damping, overwrite=True)
    assert torch.equal(L_copy, L_in_place) and record_copy == record_in_place
    assert torch.equal(C, 0.5 * (kept + kept.T))  # overwritten with its symmetric part
    assert not torch.equal(C, kept)


def test_consuming_moments_empties_them_and_keeps_the_factors():
    torch.manual_seed(3)
    X = torch.randn(50, 6, dtype=torch.float64)
    moments = {"a": X.T @ X / 50, "b": (X[:, :4].T @ X[:, :4]) / 50}
    plain = whitening_from_moments(dict((k, v.clone()) for k, v in moments.items()), {"a": "a", "b": "b"}, 50)
    consumed = whitening_from_moments(moments, {"a": "a", "b": "b"}, 50, consume=True, dtype=torch.float32)
    assert moments == {}
    assert all(consumed.factors[k].dtype == torch.float32 for k in "ab")
    assert all(torch.equal(consumed.factors[k], plain.factors[k].float()) for k in "ab")


@pytest.mark.parametrize("width", [5, 768, 800, 1600])
def test_lower_tiles_and_their_mirror_give_the_full_second_moment(width):
    """Second moments are accumulated on and below the diagonal, tile by tile, then mirrored:
    the result is X^T X over every batch, widths under, at and over the tile size included."""
    from prehab.method.calibrate import add_lower_gram, mirror_lower

    g = torch.Generator().manual_seed(width)
    batches = [torch.randn(rows, width, generator=g, dtype=torch.float64) for rows in (300, 41)]
    total = torch.zeros(width, width, dtype=torch.float64)
    for X in batches:
        add_lower_gram(total, X)
    expected = sum(X.T @ X for X in batches)
    assert torch.allclose(mirror_lower(total), expected, rtol=1e-12, atol=1e-10)


def test_float32_products_summed_in_float64_stay_close():
    """`--moment-dtype float32`: each batch's product in float32, the sum in float64 and mirrored
    as before; entries within float32's accumulation error of the float64 moment, and not equal
    to it (the option does change the numbers: benchmarks/compress_speed.py prints by how much the
    compressed layers' outputs move)."""
    from prehab.method.calibrate import GRAM_TILE, add_lower_gram, mirror_lower

    g = torch.Generator().manual_seed(5)
    width = GRAM_TILE + 40
    batches = [torch.randn(256, width, generator=g) * torch.logspace(0, -2, width) for _ in range(3)]
    exact, cheap = (torch.zeros(width, width, dtype=torch.float64) for _ in range(2))
    for X in batches:
        add_lower_gram(exact, X.double())
        add_lower_gram(cheap, X)
    exact, cheap = mirror_lower(exact), mirror_lower(cheap)
    assert cheap.dtype == torch.float64 and torch.equal(cheap, cheap.T)
    error = float((cheap - exact).abs().max() / exact.abs().max())
    assert 0 < error < 1e-6, error
