"""Shared test setup: offline, one thread and the pinned math code paths (see prehab/cli.py), and a
trained tiny-mlp chain."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from prehab.numerics import pin_code_paths  # noqa: E402

pin_code_paths()  # before any test imports torch: the CLI's code paths in this process too

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_chain(tmp_path_factory):
    """pretrain -> calibrate for tiny-mlp through the CLI, once per session: {name: folder}."""
    from prehab.cli import main

    root = tmp_path_factory.mktemp("tiny_chain")
    paths = {"dense": root / "dense", "grams": root / "grams"}
    assert main(["pretrain", "--arch", "tiny-mlp", "--out", str(paths["dense"])]) == 0
    assert main(["calibrate", "--model", str(paths["dense"]), "--out", str(paths["grams"])]) == 0
    return paths


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """config/test.yaml run to completion once by the README's command, as a new user would:
    (results, wall s, process). Session-wide: the workflow tests and the SLURM test's local
    reference share it."""
    import shutil
    import time

    from workflow_env import ENV, readme_snakemake

    results = tmp_path_factory.mktemp("tiny_workflow") / "results"
    assert shutil.which("prehab", path=ENV["PATH"]) is None
    start = time.perf_counter()
    proc = readme_snakemake(results, timeout=1800)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return results, elapsed, proc


SUMMARY = pytest.StashKey[list]()


@pytest.fixture
def summary_lines(request):
    """Lines a test wants in the terminal summary (CI's log), e.g. the SLURM job ids it saw."""
    return request.config.stash.setdefault(SUMMARY, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(SUMMARY, [])
    if lines:
        terminalreporter.section("what the tests saw")
        for line in lines:
            terminalreporter.write_line(line)
