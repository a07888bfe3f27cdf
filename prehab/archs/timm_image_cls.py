"""`timm-image-cls`: your own timm image classifier (task `image-cls`), scored by accuracy on an
ImageFolder.

    prehab pretrain --arch timm-image-cls --arch-opt model=MODEL --arch-opt data_dir=DIR --out dense

`model`: a timm name (`vit_small_patch16_224`, `hf-hub:timm/...`; weights from the hub when
`pretrained`, else random), or a local folder as timm's `save_for_hf` writes it (config.json +
model.safetensors). `checkpoint`: a local weights file loaded over a timm name (timm's
pretrained_cfg `file` overlay). A head of another class count than `num_classes` is replaced by a
new one (train it with the pretrain step's `--steps`). `data_dir`: an ImageFolder root with
`train/<class>/` and `val/<class>/` (val is the test split); `num_classes` 0 counts the classes of
`train/`. Images are resized and center-cropped to `image_size` (0: the model's own input size)
and normalised with the model's mean and std (its pretrained config).

Targets: every nn.Linear inside the numbered blocks (ViT, DeiT, Swin, ConvNeXt MLPs, ...); the
head stays dense. Models without Linear layers in their blocks (ResNets) are refused.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch.nn as nn

from prehab.archs.own_models import GENERIC_TARGETS, check_targets, required, rows_asked
from prehab.data import images
from prehab.data.splits import check_split
from prehab.errors import UsageError
from prehab.registry import ArchSpec, register_arch

NAME = "timm-image-cls"


def source(options: dict[str, Any]) -> str:
    """What timm.create_model reads: a local folder as `local-dir:<folder>`, else the name."""
    model = required(options, "model", NAME, "a timm model name or a folder written by timm's save_for_hf")
    return f"local-dir:{model}" if Path(model).expanduser().is_dir() else model


def num_classes(options: dict[str, Any]) -> int:
    """Option `num_classes`, or (0) the class folders of data_dir/train."""
    if options["num_classes"] > 0:
        return options["num_classes"]
    from torchvision.datasets.folder import find_classes

    train = Path(required(options, "data_dir", NAME, "an ImageFolder root with train/ and val/")) / "train"
    if not train.is_dir():
        raise UsageError(f"{train} does not exist (data_dir must hold train/<class>/ and val/<class>/)")
    return len(find_classes(str(train))[0])


def model_args(options: dict[str, Any]) -> dict[str, Any]:
    """create_model's keyword arguments this architecture sets: the head size, and the input size
    when `image_size` is given (models with position embeddings are built for one size)."""
    args = {"num_classes": num_classes(options)}
    if options["image_size"]:
        args["img_size"] = options["image_size"]
    return args


def create(name: str, pretrained: bool, **kwargs) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (RuntimeError, TypeError) as err:  # unknown name, a keyword the model does not take
        first_line = str(err).splitlines()[0][:200] if str(err) else ""
        raise UsageError(f"{NAME}: timm cannot build {name!r} ({type(err).__name__}: {first_line})") from None


def build(options: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The model with its weights (hub, local folder or checkpoint file) or random ones; the
    config records the architecture and every argument it was built with, as timm keeps them."""
    overlay = {"file": options["checkpoint"]} if options["checkpoint"] else None
    pretrained = options["pretrained"] or bool(overlay)
    model = create(source(options), pretrained, pretrained_cfg_overlay=overlay, **model_args(options))
    check_targets(model, NAME)
    config = {"architecture": model.pretrained_cfg["architecture"], "model_args": dict(model._model_args)}
    return model, config


def from_config(config: dict[str, Any]) -> nn.Module:
    """Same module tree, random weights, never the hub (pretrained=False)."""
    return create(config["architecture"], False, **config["model_args"])


@lru_cache(maxsize=4)
def _data_config(name: str, args: tuple) -> dict[str, Any]:
    """timm's input size, crop, mean and std of the model as built (on the meta device: no
    weights, no download)."""
    import torch
    from timm.data import resolve_data_config

    with torch.device("meta"):
        model = create(name, False, **dict(args))
    return resolve_data_config({}, model=model)


def transform(options: dict[str, Any]):
    cfg = _data_config(source(options), tuple(sorted(model_args(options).items())))
    size = options["image_size"] or cfg["input_size"][-1]
    return images.eval_transform(size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("crop_pct", 0.875))


def load_split(options: dict[str, Any], split: str, n: int | None = None, seed: int = 0) -> dict:
    """Images of data_dir/train or data_dir/val (test); only the chosen files are decoded."""
    check_split(split, tuple(images.FOLDER_SPLITS), NAME)
    root = Path(required(options, "data_dir", NAME, "an ImageFolder root with train/ and val/"))
    return images.image_folder_split(root / images.FOLDER_SPLITS[split], split, rows_asked(split, n), seed,
                                     transform(options))


register_arch(ArchSpec(
    name=NAME,
    family="timm",
    task="image-cls",
    build_pretrained=build,
    from_config=from_config,
    load_split=load_split,
    targets=GENERIC_TARGETS,
    options={
        "model": "",  # timm name or save_for_hf folder (required)
        "pretrained": True,  # a name's hub weights (False: random init)
        "checkpoint": "",  # local weights file over a timm name
        "data_dir": "",  # ImageFolder root: train/, val/ (required)
        "num_classes": 0,  # 0: class folders of train/
        "image_size": 0,  # 0: the model's own
        "n_test": 0,  # test images scored, 0: all (at most images.MAX_EAGER_IMAGES)
        "n_val": 0,  # training images held out as validation
    },
    defaults={
        "pretrain_steps": 0, "pretrain_lr": 1e-5, "batch_size": 64, "eval_batch_size": 128,
        "prehab_steps": 200, "prehab_lr": 1e-5, "rehab_steps": 200, "rehab_lr": 1e-5, "calib_samples": 256,
    },
    calib_sources={"train": "images of data_dir/train"},
    note=("your own timm classifier: --arch-opt model=<timm name|save_for_hf folder> "
          "--arch-opt data_dir=<ImageFolder root>"),
))
