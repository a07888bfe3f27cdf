"""Bad input exits non-zero with ONE line naming the bad value and what is allowed, and writes nothing."""

import os
import subprocess
import sys

from pathlib import Path

import pytest

PREHAB = [sys.executable, "-m", "prehab.cli"]


def run_cli(*argv, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*PREHAB, *map(str, argv)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    error_lines = [line for line in lines if "error" in line]
    assert len(error_lines) == 1, proc.stderr
    for needle in needles:
        assert needle in error_lines[0], (needle, error_lines[0])


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert run_cli("pretrain", "--arch", "tiny-mlp", "--steps", 5, "--out", root / "dense", cwd=root).returncode == 0
    assert run_cli("calibrate", "--model", root / "dense", "--samples", 64, "--out", root / "grams", cwd=root).returncode == 0
    return root


CASES = {
    "ratio above 1": (["compress", "--model", "{dense}", "--grams", "{grams}", "--ratio", "1.5"], ["1.5", "(0, 1)"]),
    "ratio zero": (["compress", "--model", "{dense}", "--grams", "{grams}", "--ratio", "0"], ["0", "(0, 1)"]),
    "negative lambda": (["prehab", "--model", "{dense}", "--grams", "{grams}", "--lam", "-1"], ["-1", ">= 0"]),
    "unknown arch": (["pretrain", "--arch", "resnet-50"], ["resnet-50", "tiny-mlp"]),
    "unknown surrogate": (["prehab", "--model", "{dense}", "--grams", "{grams}", "--surrogate", "trace"], ["trace", "nuclear"]),
    "missing checkpoint": (["evaluate", "--model", "{root}/nope"], ["nope", "does not exist"]),
    "corrupt checkpoint": (["evaluate", "--model", "{root}/corrupt"], ["corrupt"]),
    "truncated checkpoint": (["evaluate", "--model", "{root}/truncated"], ["truncated"]),
    "truncated second moments": (["compress", "--model", "{dense}", "--grams", "{root}/truncated-grams", "--ratio",
                                  "0.5"], ["truncated-grams"]),
    "too many calibration samples": (["calibrate", "--model", "{dense}", "--samples", "99999"], ["99999", "1336"]),
    "unknown calibration source": (["calibrate", "--model", "{dense}", "--source", "moon"], ["moon", "train"]),
    "unknown arch option": (["pretrain", "--arch", "tiny-mlp", "--arch-opt", "depth=3"], ["depth", "hidden"]),
    "mistyped arch option": (["pretrain", "--arch", "tiny-mlp", "--arch-opt", "hidden=wide"], ["wide", "int"]),
    "svd-llm without grams": (["compress", "--model", "{dense}", "--ratio", "0.5"], ["--grams"]),
    "unknown LoRA schedule": (["rehab", "--model", "{dense}", "--schedule", "both"], ["both", "joint"]),
    # the case's own --out is appended: two ratios, one folder
    "fewer outs than ratios": (["compress", "--model", "{dense}", "--grams", "{grams}", "--ratio", "0.2", "0.4"],
                               ["2 --ratio", "1 --out"]),
}


class InProcess:
    """What a subprocess would show, from `main()` in this process (8 s of imports saved per case)."""

    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def run_in_process(argv, capsys):
    from prehab.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse rejects a flag's value
        code = exit_.code
    return InProcess(code, capsys.readouterr().err)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_cleanly(chain, case, capsys):
    argv, needles = CASES[case]
    (chain / "corrupt").mkdir(exist_ok=True)
    (chain / "corrupt" / "model.pt").write_bytes(b"not a checkpoint")
    for folder, source in (("truncated", "dense/model.pt"), ("truncated-grams", "grams/grams.pt")):
        whole = (chain / source).read_bytes()  # the first half of a real file, as a killed copy leaves it
        (chain / folder).mkdir(exist_ok=True)
        (chain / folder / Path(source).name).write_bytes(whole[: len(whole) // 2])
    fmt = {"root": chain, "dense": chain / "dense", "grams": chain / "grams"}
    out = chain / f"out-{case.replace(' ', '-')}"
    proc = run_in_process([*[a.format(**fmt) for a in argv], "--out", out], capsys)
    assert_one_line_error(proc, *needles)
    assert not out.exists()
    assert not [p for p in chain.iterdir() if p.name.startswith(f".{out.name}")]  # no temp leftovers


@pytest.mark.parametrize("argv, needles", [
    (["compress", "--model", "{dense}", "--grams", "{grams}", "--ratio", "2"], ["2", "(0, 1)"]),
    (["calibrate", "--model", "{dense}", "--samples", "99999"], ["99999", "1336"]),
])
def test_real_process_exit_code_and_one_line(chain, argv, needles):
    fmt = {"dense": chain / "dense", "grams": chain / "grams"}
    out = chain / "out-subprocess"
    proc = run_cli(*[a.format(**fmt) for a in argv], "--out", out, cwd=chain)
    assert proc.returncode == 2
    assert_one_line_error(proc, *needles)
    assert not out.exists()


def test_every_step_has_help(tmp_path):
    top = run_cli("--help", cwd=tmp_path)
    assert top.returncode == 0
    from prehab.cli import build_parser

    parser = build_parser()
    for step in ("pretrain", "calibrate", "prehab", "compress", "rehab", "evaluate"):
        assert step in top.stdout
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([step, "--help"])
        assert exit_.value.code == 0


@pytest.mark.parametrize("argv", [["--help"], *([step, "--help"] for step in
                                   ("pretrain", "calibrate", "prehab", "compress", "rehab", "evaluate"))])
def test_help_loads_no_deep_learning_library(argv, tmp_path):
    """`--help` is instant: torch, transformers, timm and peft load only when a step runs."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "prehab", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert not imported & {"torch", "transformers", "timm", "peft"}
