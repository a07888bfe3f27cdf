"""Shared test setup: offline, one thread (see prehab/cli.py), and a trained tiny-mlp chain."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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
