"""Numerical faults and unsafe files: a loss that turns non-finite stops training naming the step
and the term, writing nothing; a checkpoint with non-finite weights, with fields missing, or with
a pickled object smuggled in is refused in one line (exit 2)."""

from __future__ import annotations

import math

import pytest
import torch

from prehab.cli import main
from prehab.errors import NumericalError
from prehab.train import train_steps


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    assert main(["pretrain", "--arch", "tiny-mlp", "--steps", "5", "--out", str(root / "dense")]) == 0
    return root


def _tiny_data(n=32):
    return {"pixel_values": torch.randn(n, 1, 8, 8), "labels": torch.randint(0, 10, (n,))}


def test_a_non_finite_penalty_stops_training_at_its_step():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    penalty = lambda step: (torch.tensor(math.nan) if step == 3 else torch.tensor(0.0), {})  # noqa: E731
    with pytest.raises(NumericalError, match="step 3: the penalty is nan"):
        train_steps(model, "image-cls", _tiny_data(), list(model.parameters()), steps=5, lr=1e-3, batch_size=8,
                    seed=0, penalty=penalty)


def test_a_non_finite_task_loss_stops_training():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    data = _tiny_data()
    data["pixel_values"][:] = math.inf
    with pytest.raises(NumericalError, match="step 1: the task loss is nan"):
        train_steps(model, "image-cls", data, list(model.parameters()), steps=2, lr=1e-3, batch_size=8, seed=0)


def test_divergence_through_the_cli_writes_nothing(dense, capsys):
    out = dense / "blown"
    code = main(["pretrain", "--arch", "tiny-mlp", "--steps", "50", "--lr", "1e30", "--out", str(out)])
    assert code == 3
    assert "diverged at step" in capsys.readouterr().err
    assert not out.exists()


def _rewrite(src, dst, change):
    payload = torch.load(src / "model.pt", weights_only=True)
    change(payload)
    dst.mkdir()
    torch.save(payload, dst / "model.pt")


def test_a_checkpoint_with_non_finite_weights_is_refused(dense, capsys):
    bad = dense / "nan-weights"
    _rewrite(dense / "dense", bad, lambda p: next(iter(p["state_dict"].values())).fill_(math.nan))
    assert main(["evaluate", "--model", str(bad), "--out", str(bad / "eval")]) == 2
    assert "non-finite values" in capsys.readouterr().err
    assert not (bad / "eval").exists()


def test_a_checkpoint_missing_fields_is_refused(dense, capsys):
    bad = dense / "no-config"
    _rewrite(dense / "dense", bad, lambda p: p.pop("arch_config"))
    assert main(["evaluate", "--model", str(bad), "--out", str(bad / "eval")]) == 2
    assert "lacks arch_config" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["vit-tiny", "resnet-50"])
def test_a_checkpoint_of_another_architecture_is_refused(dense, capsys, arch):
    # tiny-mlp weights and config under another (or an unknown) architecture's name
    bad = dense / f"claims-{arch}"
    _rewrite(dense / "dense", bad, lambda p: p.update(arch=arch))
    assert main(["evaluate", "--model", str(bad), "--out", str(bad / "eval")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and str(bad) in err[0] and arch in err[0], err
    assert not (bad / "eval").exists()


class Smuggled:
    """Would run code when unpickled by a full (unsafe) pickle load."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickled_object_in_a_checkpoint_is_refused(dense, capsys):
    bad = dense / "pickled"
    bad.mkdir()
    payload = torch.load(dense / "dense" / "model.pt", weights_only=True)
    payload["history"].append(Smuggled())
    torch.save(payload, bad / "model.pt")
    assert main(["evaluate", "--model", str(bad), "--out", str(bad / "eval")]) == 2
    err = capsys.readouterr()
    assert "not only tensors and plain values" in err.err and "pwned" not in err.out


def test_evaluation_counts_non_finite_rows():
    class Half(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(len(x), 10)
            logits[::2] = math.nan
            return logits

    from prehab.method.evaluate import task_metrics

    metrics = task_metrics(Half(), "image-cls", _tiny_data(8), batch_size=4)
    assert metrics["nonfinite_rows"] == 4 and metrics["n_eval"] == 8


def test_an_output_folder_holding_another_steps_output_is_refused(dense, capsys):
    # evaluate into the dense model's own folder: it would overwrite pretrain's metrics.json
    assert main(["evaluate", "--model", str(dense / "dense"), "--out", str(dense / "dense")]) == 2
    assert "input folder" in capsys.readouterr().err
    calib = dense / "calib"
    assert main(["calibrate", "--model", str(dense / "dense"), "--samples", "32", "--out", str(calib)]) == 0
    before = (calib / "metrics.json").read_text()
    assert main(["evaluate", "--model", str(dense / "dense"), "--out", str(calib)]) == 2
    assert "holds the output of step 'calibrate'" in capsys.readouterr().err
    assert (calib / "metrics.json").read_text() == before  # nothing overwritten
    assert main(["calibrate", "--model", str(dense / "dense"), "--samples", "32", "--out", str(calib)]) == 0  # rerun


def test_second_moments_of_another_model_are_refused_by_every_step_reading_them(dense, tmp_path, capsys):
    """tiny-mlp with hidden 48 vs one with hidden 24: same layer names, other input widths."""
    other = tmp_path / "narrow"
    assert main(["pretrain", "--arch", "tiny-mlp", "--arch-opt", "hidden=24", "--steps", "2", "--out", str(other)]) == 0
    assert main(["calibrate", "--model", str(other), "--samples", "32", "--out", str(tmp_path / "g")]) == 0
    for step in (["prehab", "--steps", "1"], ["compress", "--ratio", "0.5"]):
        out = tmp_path / step[0]
        assert main([step[0], "--model", str(dense / "dense"), "--grams", str(tmp_path / "g"), *step[1:],
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "made for another model" in err and "factor for layer" in err, err
        assert not out.exists()


def test_an_output_folder_of_someone_elses_files_is_left_as_it_was(dense, capsys):
    """A folder holding files no step writes (here a user's own model.pt beside their notes) is
    refused before any work, by every step, and keeps its files byte for byte."""
    theirs = dense / "theirs"
    theirs.mkdir()
    (theirs / "model.pt").write_bytes(b"my own model")
    (theirs / "notes.txt").write_text("mine")
    for argv in (["compress", "--model", str(dense / "dense"), "--method", "svd", "--ratio", "0.5"],
                 ["evaluate", "--model", str(dense / "dense")]):
        assert main(argv + ["--out", str(theirs)]) == 2
        err = capsys.readouterr().err
        assert "holds files no prehab step writes ('notes.txt')" in err and err.count("\n") == 1
    assert sorted(p.name for p in theirs.iterdir()) == ["model.pt", "notes.txt"]
    assert (theirs / "model.pt").read_bytes() == b"my own model"


def test_the_staging_folder_of_a_killed_step_goes_with_the_next_run(dense):
    out = dense / "again"
    stale = dense / ".again.tmp-killed"  # what a SIGKILL mid-step leaves beside --out
    stale.mkdir()
    (stale / "model.pt").write_bytes(b"half")
    other = dense / ".another.tmp-killed"  # another folder's staging is not this step's to remove
    other.mkdir()
    assert main(["pretrain", "--arch", "tiny-mlp", "--steps", "2", "--out", str(out)]) == 0
    assert (out / "metrics.json").is_file() and not stale.exists() and other.exists()
