"""A one-time cache build (converting the shipped SmolLM2 / DINOv2 weights) leaves the caller's
random stream where it was: otherwise the first run on a fresh machine, which builds the cache
inside its step, would differ from every later run (seen: llama-tiny's dense loss 10.7716 on
the first run, 10.7663 after)."""

from __future__ import annotations

import pytest
import torch

from prehab.weights import dinov2_onnx, smollm2


def _draws_after(build) -> torch.Tensor:
    torch.manual_seed(0)
    build()
    return torch.rand(4)


@pytest.fixture
def fresh_resources(tmp_path, monkeypatch):
    monkeypatch.setenv("PREHAB_RESOURCES", str(tmp_path))
    return tmp_path


def test_smollm2_conversion_keeps_the_random_stream(fresh_resources, monkeypatch):
    def convert(target):  # stands in for the GGUF conversion, which initialises a model at random
        torch.randn(1000)
        (target / smollm2.DONE_MARKER).write_text("converted\n")

    monkeypatch.setattr(smollm2, "convert_gguf", convert)
    assert torch.equal(_draws_after(smollm2.ensure_cache), _draws_after(lambda: None))
    assert (smollm2.cache_dir() / smollm2.DONE_MARKER).is_file()


def test_dinov2_conversion_keeps_the_random_stream(fresh_resources, monkeypatch):
    def convert():
        torch.randn(1000)
        dinov2_onnx.cache_dir().mkdir(parents=True, exist_ok=True)
        (dinov2_onnx.cache_dir() / "config.json").write_text("{}")

    monkeypatch.setattr(dinov2_onnx, "convert_and_cache", convert)
    assert torch.equal(_draws_after(dinov2_onnx.ensure_cache), _draws_after(lambda: None))


def test_parallel_builds_of_the_smollm2_cache_keep_the_first(fresh_resources, monkeypatch):
    """Seen on a fresh clone: two llama-small pretrain jobs converted the weights at once and the
    second failed renaming onto the first's finished folder."""

    def convert(target):  # another job finishes its build while this one converts
        other = smollm2.cache_dir()
        other.mkdir(parents=True)
        (other / smollm2.DONE_MARKER).write_text("the other job\n")
        (target / smollm2.DONE_MARKER).write_text("this job\n")

    monkeypatch.setattr(smollm2, "convert_gguf", convert)
    assert smollm2.ensure_cache() == smollm2.cache_dir()
    assert (smollm2.cache_dir() / smollm2.DONE_MARKER).read_text() == "the other job\n"
    assert [p.name for p in fresh_resources.iterdir()] == [smollm2.cache_dir().name]  # no leftover copy


def test_an_ordinary_atomic_folder_still_refuses_an_existing_target(tmp_path):
    from prehab.outputs import atomic_folder

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_text("x")
    with pytest.raises(OSError), atomic_folder(tmp_path / "out") as tmp:
        (tmp / "g").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
