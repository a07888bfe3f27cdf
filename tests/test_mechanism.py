"""The mechanism readout that `prehab compress --method svd-llm` writes: it must equal an
independent computation from the saved model and its calibration (a LAPACK SVD of W L, the norms
of W - W0), and it must be what SVD-LLM's truncation really loses."""

import json
import math

import pytest
import torch

from prehab import checkpoint
from prehab.cli import main
from prehab.layers import find_targets, get_module
from prehab.method.calibrate import load_whitening
from prehab.method.mechanism import layer_readout, movement, readout
from prehab.method.ratio import rank_for_ratio

RATIOS = (0.4, 0.7)


@pytest.fixture(scope="module")
def moved_chain(tiny_chain, tmp_path_factory):
    """A tiny-mlp fine-tuned for a few Prehab steps from the dense model, re-calibrated, then cut by
    SVD-LLM at two ratios with the dense model as --reference: {name: folder}."""
    root = tmp_path_factory.mktemp("mechanism")
    paths = dict(tiny_chain, tuned=root / "tuned", recal=root / "recal", cut=[root / f"cut{r}" for r in RATIOS])
    assert main(["prehab", "--model", str(tiny_chain["dense"]), "--grams", str(tiny_chain["grams"]), "--space",
                 "weight", "--surrogate", "nuclear", "--lam", "1", "--steps", "5", "--lr", "1e-3",
                 "--out", str(paths["tuned"])]) == 0
    assert main(["calibrate", "--model", str(paths["tuned"]), "--out", str(paths["recal"])]) == 0
    assert main(["compress", "--method", "svd-llm", "--model", str(paths["tuned"]), "--grams", str(paths["recal"]),
                 "--reference", str(tiny_chain["dense"]), "--ratio", *map(str, RATIOS),
                 "--out", *map(str, paths["cut"])]) == 0
    return paths


def test_readout_equals_an_independent_computation(moved_chain):
    tuned = checkpoint.load(moved_chain["tuned"]).model
    dense = checkpoint.load(moved_chain["dense"]).model
    whitening = load_whitening(moved_chain["recal"])
    names = find_targets(tuned, checkpoint.load(moved_chain["tuned"]).spec.targets)
    for ratio, folder in zip(RATIOS, moved_chain["cut"]):
        record = json.loads((folder / "metrics.json").read_text())["metrics"]
        layers = json.loads((folder / "mechanism.json").read_text())
        assert sorted(layers) == sorted(names)
        tails, energies = [], []
        for name in names:
            W = get_module(tuned, name).weight.detach().double()
            W0 = get_module(dense, name).weight.detach().double()
            L = whitening.factor_of(name).double()
            s = torch.linalg.svdvals(W @ L)  # LAPACK, not the Gram path surgery uses
            k = rank_for_ratio(*W.shape, ratio)
            tail, energy = float((s[k:] ** 2).sum()), float((s**2).sum())
            tails.append(tail)
            energies.append(energy)
            row = layers[name]
            assert row["rank"] == k
            assert row["tail_abs"] == pytest.approx(tail, rel=1e-6, abs=1e-9 * energy)
            assert row["energy"] == pytest.approx(energy, rel=1e-9)
            assert row["move_w"] == pytest.approx(float(torch.linalg.norm(W - W0) / torch.linalg.norm(W0)), rel=1e-9)
            assert row["move_wl"] == pytest.approx(
                float(torch.linalg.norm((W - W0) @ L) / torch.linalg.norm(W0 @ L)), rel=1e-9)
            assert row["move_w"] > 0  # five steps at lr 1e-3 moved the weights
        assert record["mech_tail_abs_sum"] == pytest.approx(sum(tails), rel=1e-6)
        assert record["mech_energy_sum"] == pytest.approx(sum(energies), rel=1e-9)
        assert record["mech_tail_rel_total"] == pytest.approx(sum(tails) / sum(energies), rel=1e-6)
        assert record["mech_n_matrices"] == len(names)


def test_tail_is_what_truncation_loses_on_the_calibration_outputs():
    """SVD-LLM's theorem, the readout's reason to exist: ||(W - W_k) X||_F^2 / N = tail_abs."""
    from prehab.method.compress import truncated_factors

    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 500, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 30, dtype=torch.float64)[:, None]
    W = torch.randn(20, 30, generator=g, dtype=torch.float64)
    L = torch.linalg.cholesky(X @ X.T / X.shape[1])
    ratio = 0.6
    k = rank_for_ratio(20, 30, ratio)
    W_u, W_v, S = truncated_factors(W, k, L)
    lost = float(torch.linalg.norm((W - W_u @ W_v) @ X) ** 2 / X.shape[1])
    assert layer_readout(S, (20, 30), ratio)["tail_abs"] == pytest.approx(lost, rel=1e-9)


def test_scaling_the_weights_scales_the_absolute_tail_not_the_relative_one():
    s = torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    one, two = layer_readout(s, (5, 5), 0.6), layer_readout(2 * s, (5, 5), 0.6)
    assert two["tail_abs"] == pytest.approx(4 * one["tail_abs"])
    assert two["tail_rel"] == pytest.approx(one["tail_rel"])


def test_summary_and_movement_of_an_unmoved_model():
    W = torch.randn(6, 4, dtype=torch.float64)
    L = torch.eye(4, dtype=torch.float64)
    assert movement(W, W, L) == {"move_w": 0.0, "move_wl": 0.0}
    summary, layers = readout({"a": (6, 4), "b": (6, 4)}, {"a": torch.tensor([2.0, 1.0, 0.5, 0.1]),
                                                           "b": torch.tensor([1.0, 1.0, 1.0, 1.0])}, 0.5)
    assert summary["mech_n_matrices"] == 2 and math.isnan(summary["mech_move_w_median"])
    assert summary["mech_tail_abs_sum"] == pytest.approx(layers["a"]["tail_abs"] + layers["b"]["tail_abs"])


def test_reference_is_refused_for_plain_svd(tiny_chain, tmp_path):
    code = main(["compress", "--method", "svd", "--model", str(tiny_chain["dense"]), "--reference",
                 str(tiny_chain["dense"]), "--ratio", "0.5", "--out", str(tmp_path / "cut")])
    assert code == 2 and not (tmp_path / "cut").exists()
