"""The six steps on tiny-mlp (engine behaviour) and the shared-input detection of calibration."""

import json

import pytest
import torch
import torch.nn as nn

from prehab import checkpoint
from prehab.cli import main
from prehab.layers import FactorizedLinear, count_params
from prehab.method.calibrate import second_moments
from prehab.method.evaluate import task_metrics


def metrics(folder):
    return json.loads((folder / "metrics.json").read_text())["metrics"]


def run_ok(*argv):
    assert main([str(a) for a in argv]) == 0


class SharedInputs(nn.Module):
    """q, k, v read one tensor (one second moment); o reads another."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(6, 6) for _ in range(4))

    def forward(self, pixel_values):
        x = pixel_values
        return self.o(self.q(x) + self.k(x) * self.v(x))


def test_shared_inputs_get_one_matrix():
    data = {"pixel_values": torch.randn(40, 6), "labels": torch.zeros(40, dtype=torch.long)}
    moments, owner, n_tokens = second_moments(SharedInputs(), "image-cls", data, ["q", "k", "v", "o"], 16)
    assert owner == {"q": "q", "k": "q", "v": "q", "o": "o"}
    assert set(moments) == {"q", "o"}
    assert n_tokens == 40
    x = data["pixel_values"].double()
    assert torch.allclose(moments["q"], x.T @ x / 40)


def test_compressed_model_is_smaller_and_round_trips(tiny_chain, tmp_path):
    out = tmp_path / "c"
    run_ok("compress", "--model", tiny_chain["dense"], "--grams", tiny_chain["grams"], "--ratio", 0.5, "--out", out)
    m = metrics(out)
    dense = checkpoint.load(tiny_chain["dense"]).model
    ranks = json.loads((out / "metrics.json").read_text())["ranks"]
    # fc1 64->48, fc2 48->48 at R=0.5: k = floor(mn/2/(m+n))
    assert ranks == {"fc1": 13, "fc2": 12}
    expected = count_params(dense) - (48 * 64 + 48 * 48) + 13 * (64 + 48) + 12 * (48 + 48)
    assert m["model_params_after"] == expected
    assert m["checkpoint_bytes_after"] < m["checkpoint_bytes_before"]

    loaded = checkpoint.load(out)
    assert isinstance(loaded.model.fc1, FactorizedLinear) and loaded.model.fc1.rank == 13
    assert count_params(loaded.model) == expected
    x = torch.randn(5, 1, 8, 8)
    again = tmp_path / "again"
    checkpoint.save(loaded, again.mkdir() or again)
    assert torch.equal(loaded.model(x), checkpoint.load(again).model(x))


@pytest.mark.parametrize("method", ["svd", "svd-llm"])
def test_several_ratios_in_one_call_match_one_call_each(tiny_chain, tmp_path, method):
    """A batched compress (one SVD per layer, in-process evaluation) makes the same models and
    the same metrics as one `compress` and one `evaluate` per ratio."""
    grams = ["--grams", tiny_chain["grams"]] if method == "svd-llm" else []
    ratios, outs = [0.3, 0.6, 0.9], [tmp_path / f"batch{i}" for i in range(3)]
    run_ok("compress", "--model", tiny_chain["dense"], "--method", method, *grams, "--ratio", *ratios,
           "--evaluate", "--out", *outs)
    for ratio, out in zip(ratios, outs):
        single = tmp_path / f"single{ratio}"
        run_ok("compress", "--model", tiny_chain["dense"], "--method", method, *grams, "--ratio", ratio, "--out", single)
        run_ok("evaluate", "--model", single, "--out", single / "eval")
        a, b = checkpoint.load(out).model.state_dict(), checkpoint.load(single).model.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), ratio
        assert metrics(out)["ratio_nominal"] == ratio
        assert metrics(out / "eval") == metrics(single / "eval")


def test_rehab_of_several_models_matches_one_call_each(tiny_chain, tmp_path):
    models = [tmp_path / "c5", tmp_path / "c8"]
    run_ok("compress", "--model", tiny_chain["dense"], "--method", "svd", "--ratio", 0.5, 0.8, "--out", *models)
    run_ok("rehab", "--model", *models, "--steps", 5, "--evaluate", "--out", *[m / "both" for m in models])
    for model in models:
        run_ok("rehab", "--model", model, "--steps", 5, "--out", model / "one")
        run_ok("evaluate", "--model", model / "one", "--out", model / "one" / "eval")
        assert metrics(model / "both" / "eval") == metrics(model / "one" / "eval")
        assert metrics(model / "both")["final_task_loss"] == metrics(model / "one")["final_task_loss"]


def test_prehab_lowers_rank_and_keeps_accuracy_control_does_not(tiny_chain, tmp_path):
    common = ["--model", tiny_chain["dense"], "--grams", tiny_chain["grams"], "--steps", 150, "--lr", 1e-3]
    run_ok("prehab", *common, "--surrogate", "nuclear_fro", "--lam", 0.5, "--out", tmp_path / "p")
    run_ok("prehab", *common, "--surrogate", "nuclear_fro", "--lam", 0, "--out", tmp_path / "c")
    for name in ("p", "c", "dense"):
        folder = tiny_chain["dense"] if name == "dense" else tmp_path / name
        run_ok("evaluate", "--model", folder, "--out", tmp_path / f"e_{name}")
    reg, ctl = metrics(tmp_path / "p"), metrics(tmp_path / "c")
    acc = {n: metrics(tmp_path / f"e_{n}")["accuracy"] for n in ("p", "c", "dense")}

    assert reg["whitened_surrogate_after"] < 0.9 * reg["whitened_surrogate_before"]
    assert reg["entropy_rank_after"] < 0.8 * reg["entropy_rank_before"]
    assert abs(acc["p"] - acc["dense"]) <= 0.03  # stated tolerance: 3 points on 397 digits
    # The control moves the spectrum far less than the penalty does.
    assert ctl["entropy_rank_after"] > 0.95 * ctl["entropy_rank_before"]
    assert ctl["whitened_surrogate_after"] > 0.97 * ctl["whitened_surrogate_before"]
    curve = json.loads((tmp_path / "p" / "metrics.json").read_text())["curve"]
    assert curve[-1]["step"] == 150 and {"task_loss", "surrogate", "lambda", "entropy_rank"} <= set(curve[-1])


# The last curve row (task loss, surrogate, entropy rank) of short Prehab runs on the session's
# tiny-mlp, as the code before the penalty interface and PrehabSettings (issue 25) made them (the
# refactor trained bit-identical weights), re-recorded with the CLI's pinned AVX2 code paths
# (prehab/numerics.py). Other kernels round differently: this machine's AVX-512 ones moved the
# whitened-space row by 1.2e-4 relative and the others by at most 3e-6, hence rel 1e-3.
REFERENCE = {
    "whitened nuclear exact": (["--space", "whitened", "--surrogate", "nuclear", "--lam", 1, "--steps", 8],
                               (0.02668498270213604, 53.90523273989724, 10.937136294119988)),
    "weight nuclear_fro fast": (["--space", "weight", "--surrogate", "nuclear_fro", "--lam", 10, "--estimator", "fast",
                                 "--steps", 8], (0.033886972814798355, 2.5373289379899493, 11.293242992838273)),
    "raw stable warm-up": (["--space", "raw", "--surrogate", "stable", "--lam", 1, "--lam-start", 1e-3,
                            "--lam-warmup-steps", 4, "--steps", 8],
                           (0.02691180631518364, 6.130851759384845, 12.092686894146603)),
    "weight tail lagged": (["--space", "weight", "--surrogate", "tail", "--tail-ratio", 0.5, "--lam", 10, "--estimator",
                            "lagged", "--refresh-every", 3, "--steps", 9, "--lr", 1e-3],
                           (0.016535580158233643, 0.002928563303773812, 11.900903002444142)),
    "weight nuclear_rank staggered": (["--space", "weight", "--surrogate", "nuclear_rank", "--lam", 1,
                                       "--penalty-every", 2, "--penalty-stagger", "--steps", 8],
                                      (0.025107234716415405, 6.708631498477528, 11.551591731759522)),
}


@pytest.mark.parametrize("label", sorted(REFERENCE))
def test_prehab_reproduces_the_reference_curves(tiny_chain, tmp_path, label):
    args, expected = REFERENCE[label]
    run_ok("prehab", "--model", tiny_chain["dense"], "--grams", tiny_chain["grams"], "--log-every", 2, *args,
           "--out", tmp_path / "p")
    last = json.loads((tmp_path / "p" / "metrics.json").read_text())["curve"][-1]
    assert (last["task_loss"], last["surrogate"], last["entropy_rank"]) == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("space", ["weight", "raw"])
def test_weight_and_raw_space_prehab_lower_their_penalised_rank(tiny_chain, tmp_path, space):
    run_ok("prehab", "--model", tiny_chain["dense"], "--grams", tiny_chain["grams"], "--steps", 60, "--lr", 1e-3,
           "--surrogate", "nuclear_fro", "--lam", 0.5, "--space", space, "--out", tmp_path / "w")
    from prehab.method.calibrate import load_whitening
    from prehab.method.surrogates import get_surrogate

    nuclear_fro = get_surrogate("nuclear_fro")

    L = load_whitening(tiny_chain["grams"]).factor_of("fc1")
    before = checkpoint.load(tiny_chain["dense"]).model.fc1.weight.double()
    after = checkpoint.load(tmp_path / "w").model.fc1.weight.double()
    if space == "weight":
        before, after = before @ L, after @ L
    with torch.no_grad():
        assert float(nuclear_fro(after)) < 0.97 * float(nuclear_fro(before))


@pytest.mark.parametrize("schedule", ["joint", "sequential"])
def test_lora_rehab_improves_a_compressed_model(tiny_chain, tmp_path, schedule):
    run_ok("compress", "--model", tiny_chain["dense"], "--method", "svd", "--ratio", 0.9, "--out", tmp_path / "c")
    run_ok("rehab", "--model", tmp_path / "c", "--schedule", schedule, "--steps", 150, "--out", tmp_path / "r")
    run_ok("evaluate", "--model", tmp_path / "c", "--out", tmp_path / "ec")
    run_ok("evaluate", "--model", tmp_path / "r", "--out", tmp_path / "er")
    before, after = metrics(tmp_path / "ec")["accuracy"], metrics(tmp_path / "er")["accuracy"]
    assert after > before + 0.02, (before, after)
    assert metrics(tmp_path / "er")["model_params"] == metrics(tmp_path / "ec")["model_params"]


def test_same_seed_same_numbers(tmp_path):
    for name in ("a", "b"):
        run_ok("pretrain", "--arch", "tiny-mlp", "--steps", 30, "--seed", 3, "--out", tmp_path / name)
    a = checkpoint.load(tmp_path / "a").model.state_dict()
    b = checkpoint.load(tmp_path / "b").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_counts_nonfinite_rows():
    class Broken(nn.Module):
        def forward(self, pixel_values):
            out = torch.zeros(len(pixel_values), 3)
            out[0] = float("nan")
            return out

    data = {"pixel_values": torch.zeros(4, 2), "labels": torch.zeros(4, dtype=torch.long)}
    m = task_metrics(Broken(), "image-cls", data, 4)  # row 0 of the one batch
    assert m["nonfinite_rows"] == 1 and m["accuracy"] == 0.75


def test_registry_import_stays_light():
    """Every CLI call imports the registry: transformers/timm/peft must load only when used."""
    import subprocess
    import sys

    code = "import sys, prehab.cli as c, prehab.registry as r; c.build_parser(); r.arch_names(); " \
           "print(sorted(m for m in ('transformers', 'timm', 'peft', 'mlflow', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
