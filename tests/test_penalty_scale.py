"""Lambda on one scale, and the penalty applied as scheduled.

- The gradient-norm ratio rho recorded in the prehab step's metrics.json equals one computed by
  hand (step 1's batch drawn the same way, the task and the unweighted penalty gradients taken
  with autograd apart), in every space, for a scale-free and an anchored surrogate.
- Measuring rho changes nothing: the trained weights and curves are bit-identical with and
  without it, for every estimator, and for the control.
- `--lam-scale grad` trains with lambda * rho (recorded as lam_effective): bit-identical to a run
  given that lambda with `none`.
- With `--penalty-every 1` every matrix is penalised on every step with weight lambda(t); a
  larger k concentrates k * lambda(t) on one step in k, which under Adam moves a weight less
  than lambda on every step (the reason studies use 1).
"""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from prehab import checkpoint, tasks
from prehab.cli import main
from prehab.layers import find_targets, get_module
from prehab.method import prehab as prehab_module
from prehab.method.calibrate import load_whitening, whiten
from prehab.method.prehab import PrehabSettings, run_prehab
from prehab.method.schedule import LambdaSchedule, PenaltyFrequency
from prehab.method.surrogates import Surrogate, gram_eigenvalues

SEED, BATCH = 3, 16


@pytest.fixture(scope="module")
def base(tiny_chain, tmp_path_factory):
    """This module's output folder, holding links to the session's dense tiny-mlp and its grams."""
    root = tmp_path_factory.mktemp("scale")
    for key in ("dense", "grams"):
        (root / key).symlink_to(tiny_chain[key], target_is_directory=True)
    return root


def _prehab(base, out, *extra) -> dict:
    args = ["prehab", "--model", str(base / "dense"), "--grams", str(base / "grams"), "--out", str(base / out),
            "--seed", str(SEED), "--batch-size", str(BATCH), *extra]
    assert main(args) == 0
    return json.loads((base / out / "metrics.json").read_text())


def _weights(folder):
    return torch.load(folder / "model.pt", weights_only=True)["state_dict"]


def _norm(grads) -> float:
    return float(torch.sqrt(sum(g.double().square().sum() for g in grads)))


def ratio_by_hand(base, space: str, R: Surrogate) -> tuple[float, float, dict[str, float]]:
    """(||grad task loss||, ||grad mean_l R(A_l)||, an anchored surrogate's constants) at step 1
    over the trainable tensors of `space`, from the dense model and step 1's batch, each
    gradient by autograd on its own."""
    ckpt = checkpoint.load(base / "dense")
    model, spec = ckpt.model, ckpt.spec
    data = spec.load(ckpt.arch_options, "train", None, SEED)
    batch = next(tasks.shuffled_batches(data, BATCH, 1, torch.Generator().manual_seed(SEED)))
    whitening = load_whitening(base / "grams")
    names = find_targets(model, spec.targets)
    Ws = [get_module(model, n).weight for n in names]
    Ls = [whitening.factor_of(n) for n in names]
    for p in model.parameters():
        p.requires_grad_(False)
    for W in Ws:
        W.requires_grad_(True)
    model.train()
    task_w = torch.autograd.grad(tasks.loss(model, spec.task, batch), Ws)
    if space == "whitened":  # the trained tensor is D in W = W0 + D L^-1, at D = 0
        Ds = [torch.zeros_like(W, requires_grad=True) for W in Ws]
        steps = [torch.linalg.solve_triangular(L.float(), D, upper=False, left=False) for L, D in zip(Ls, Ds)]
        task = [torch.autograd.grad(s, D, grad_outputs=g)[0] for s, D, g in zip(steps, Ds, task_w)]
        trained, penalised = Ds, [whiten(W.detach(), L).float() + D for W, L, D in zip(Ws, Ls, Ds)]
    else:
        task, trained = task_w, Ws
        penalised = [whiten(W, L, W.dtype) for W, L in zip(Ws, Ls)] if space == "weight" else Ws
    anchors = [float(gram_eigenvalues(A.detach()).sum()) if R.anchored else None for A in penalised]
    mean = torch.stack([R(A, c) for A, c in zip(penalised, anchors)]).mean()
    constants = {name: c for name, c in zip(names, anchors) if c is not None}
    return _norm(task), _norm(torch.autograd.grad(mean, trained)), constants


@pytest.mark.parametrize("space,surrogate", [("weight", "nuclear_fro"), ("whitened", "tail_abs"), ("raw", "stable"),
                                             ("weight", "tail_abs")])
def test_the_recorded_ratio_equals_one_computed_by_hand(base, space, surrogate):
    R = Surrogate(surrogate, 0.5 if surrogate.startswith("tail") else None)
    ratio = ["--tail-ratio", "0.5"] if R.tail_ratio else []
    record = _prehab(base, f"hand-{space}-{surrogate}", "--space", space, "--surrogate", surrogate, *ratio,
                     "--lam", "3", "--steps", "2")
    metrics = record["metrics"]
    task, penalty, anchors = ratio_by_hand(base, space, R)
    assert record.get("surrogate_anchors", {}) == pytest.approx(anchors, rel=1e-12)
    if R.anchored:  # at the start the absolute tail over its constant is the relative tail
        assert anchors and metrics["whitened_surrogate_before"] == pytest.approx(
            _prehab(base, f"hand-{space}-tail", "--space", space, "--surrogate", "tail", *ratio, "--lam", "3",
                    "--steps", "1")["metrics"]["whitened_surrogate_before"], rel=1e-12)
    assert metrics["task_grad_norm"] == pytest.approx(task, rel=1e-6)
    assert metrics["penalty_grad_norm"] == pytest.approx(penalty, rel=1e-6)
    assert metrics["grad_norm_ratio"] == pytest.approx(task / penalty, rel=1e-6)
    assert metrics["lam_effective"] == 3.0  # --lam-scale none: lambda as given


def test_the_control_records_the_ratio_too(base):
    metrics = _prehab(base, "control", "--space", "weight", "--surrogate", "nuclear_fro", "--lam", "0",
                      "--steps", "2")["metrics"]
    task, penalty, _ = ratio_by_hand(base, "weight", Surrogate("nuclear_fro"))
    assert metrics["grad_norm_ratio"] == pytest.approx(task / penalty, rel=1e-6)
    assert metrics["lam_effective"] == 0.0


def _tiny(base):
    ckpt = checkpoint.load(base / "dense")
    data = ckpt.spec.load(ckpt.arch_options, "train", None, SEED)
    return ckpt.model, ckpt.spec, data, load_whitening(base / "grams"), find_targets(ckpt.model, ckpt.spec.targets)


@pytest.mark.parametrize("estimator,space,lam", [("exact", "weight", 1.0), ("fast", "whitened", 1.0),
                                                 ("lagged", "weight", 1.0), ("exact", "whitened", 0.0)])
def test_measuring_the_ratio_changes_nothing(base, estimator, space, lam):
    model, spec, data, whitening, targets = _tiny(base)
    settings = PrehabSettings(surrogate=Surrogate("nuclear_fro"), schedule=LambdaSchedule(lam), space=space, steps=6,
                              lr=1e-3, batch_size=BATCH, seed=SEED, log_every=1, estimator=estimator, refresh_every=2)
    runs = {}
    for measure in (True, False):
        trained = copy.deepcopy(model)
        result = run_prehab(trained, spec.task, data, whitening, targets,
                            dataclasses.replace(settings, measure_scale=measure))
        runs[measure] = (trained.state_dict(), result)
    (a, measured), (b, unmeasured) = runs[True], runs[False]
    assert measured.scale is not None and unmeasured.scale is None
    assert all(torch.equal(a[k], b[k]) for k in a) and measured.curve == unmeasured.curve
    assert any(not torch.equal(a[k], v) for k, v in model.state_dict().items())  # it trained


def test_lam_scale_grad_trains_with_lambda_times_the_ratio(base):
    common = ["--space", "weight", "--surrogate", "tail", "--tail-ratio", "0.5", "--steps", "4", "--lr", "1e-3",
              "--log-every", "1"]
    scaled = _prehab(base, "grad", *common, "--lam", "1", "--lam-scale", "grad")
    rho = scaled["metrics"]["grad_norm_ratio"]
    assert scaled["metrics"]["lam_effective"] == rho and scaled["params"]["lam_scale"] == "grad"
    assert all(row["lambda"] == rho for row in scaled["curve"])
    given = _prehab(base, "given", *common, "--lam", repr(rho))
    assert "lam_scale" not in given["params"]
    a, b = _weights(base / "grad"), _weights(base / "given")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_unknown_lam_scale_is_refused(base, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["prehab", "--model", str(base / "dense"), "--grams", str(base / "grams"), "--lam-scale", "adam",
              "--out", str(base / "bad")])
    assert exit.value.code == 2 and "'adam'" in capsys.readouterr().err and not (base / "bad").exists()
    with pytest.raises(Exception, match="lam_scale 'adam'; known: none, grad"):
        PrehabSettings(surrogate=Surrogate("nuclear"), schedule=LambdaSchedule(1.0), space="weight", steps=1, lr=1.0,
                       batch_size=1, seed=0, lam_scale="adam")


def test_the_schema_offers_the_code_s_lam_scales():
    import yaml

    from prehab.method.names import LAM_SCALES
    from prehab.paths import REPO_ROOT

    schema = yaml.safe_load((REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["prehab"]["properties"]["lam_scale"]["enum"] == list(LAM_SCALES)


def _applied_terms(base, monkeypatch, frequency: PenaltyFrequency, schedule: LambdaSchedule, steps: int):
    """What run_prehab adds to the loss on every step, beside what the estimator returned:
    [(step, chosen, estimator value, term, logged lambda)]."""
    model, spec, data, whitening, targets = _tiny(base)
    seen = []
    factories = prehab_module.PENALTIES

    class Spy(prehab_module.Registry):
        def get(self, name):
            build = factories.get(name)

            def spied(surrogate, targets, refresh_every):
                penalty = build(surrogate, targets, refresh_every)
                inner = penalty.__call__

                class Recording(type(penalty)):
                    def __call__(self, step, chosen):
                        value = inner(step, chosen)
                        seen.append({"step": step, "chosen": list(chosen), "value": value.detach()})
                        return value

                penalty.__class__ = Recording
                return penalty
            return spied

    terms = []
    real_train = prehab_module.train_steps

    def train(*args, penalty, **kwargs):
        def recorded(step):
            term, logged = penalty(step)
            terms.append({"step": step, "term": term, "lambda": logged["lambda"]})
            return term, logged
        return real_train(*args, penalty=recorded, **kwargs)

    monkeypatch.setattr(prehab_module, "PENALTIES", Spy("estimator"))
    monkeypatch.setattr(prehab_module, "train_steps", train)
    settings = PrehabSettings(surrogate=Surrogate("nuclear_fro"), schedule=schedule, space="weight", steps=steps,
                              lr=1e-3, batch_size=BATCH, seed=SEED, penalty_every=frequency.every,
                              stagger=frequency.stagger)
    run_prehab(model, spec.task, data, whitening, targets, settings)
    return seen, terms, len(targets)


def test_penalty_every_1_applies_lambda_t_to_every_matrix_on_every_step(base, monkeypatch):
    schedule = LambdaSchedule(2.0, start=0.01, warmup=4)  # lambda(t) changes over the first steps
    seen, terms, n = _applied_terms(base, monkeypatch, PenaltyFrequency(1), schedule, steps=7)
    assert [s["step"] for s in seen] == [t["step"] for t in terms] == list(range(1, 8))
    for call, applied in zip(seen, terms):
        assert call["chosen"] == list(range(n))
        assert applied["lambda"] == schedule(applied["step"])
        assert torch.equal(applied["term"], (schedule(applied["step"]) * call["value"]).to(torch.float32))


def test_penalty_every_k_puts_k_lambda_on_one_step_in_k(base, monkeypatch):
    seen, terms, n = _applied_terms(base, monkeypatch, PenaltyFrequency(3), LambdaSchedule(2.0), steps=7)
    assert [s["step"] for s in seen] == [1, 4, 7] and all(s["chosen"] == list(range(n)) for s in seen)
    for call in seen:
        applied = terms[call["step"] - 1]
        assert torch.equal(applied["term"], (3 * 2.0 * call["value"]).to(torch.float32))
    assert all(t["term"] is None for t in terms if t["step"] not in (1, 4, 7))


def test_staggered_frequency_rotates_matrices():
    every = PenaltyFrequency(3, stagger=True)
    assert [every.chosen(step, 4) for step in range(1, 5)] == [[0, 3], [1], [2], [0, 3]]
    assert all(PenaltyFrequency(1, stagger=s).chosen(step, 4) == [0, 1, 2, 3] for s in (False, True)
               for step in range(1, 6))


def test_under_adam_k_times_the_gradient_on_one_step_in_k_moves_a_weight_less():
    """Why penalty_every > 1 is not the same average weight: a constant gradient g on every step
    against k g on every k-th step (and nothing in between), the same sum over the run."""
    def moved(every: int, steps: int = 60) -> float:
        w = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.Adam([w], lr=1e-2)
        for step in range(1, steps + 1):
            optimizer.zero_grad()
            w.grad = torch.full_like(w, float(every) if (step - 1) % every == 0 else 0.0)
            optimizer.step()
        return float(w.detach().abs())

    assert moved(4) < 0.75 * moved(1)
