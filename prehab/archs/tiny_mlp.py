"""`tiny-mlp`: a 64 -> 48 -> 48 -> 10 MLP on scikit-learn's 8x8 digits, for the engine's unit tests.

Registered like any real model so every step runs on it in well under a second.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from prehab.data.splits import check_split, choose_rows
from prehab.registry import ArchSpec, register_arch

N_DIGITS = 1_797  # sklearn's digits (tests/test_data_sizes.py checks every declared size against the loader)
N_TEST = 397  # the last 397 digits are test; the first 1,400 train


class DigitsMLP(nn.Module):
    def __init__(self, hidden: int = 48, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.flatten(1)  # (B, 64)
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _build(options: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    config = {"hidden": options["hidden"]}
    return DigitsMLP(**config), config


def _from_config(config: dict[str, Any]) -> nn.Module:
    return DigitsMLP(**config)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8)
    return (images - 0.3) / 0.4, torch.tensor(digits.target, dtype=torch.long)


def _load_split(options: dict[str, Any], split: str, n: int | None, seed: int) -> dict[str, torch.Tensor]:
    check_split(split, ("train", "test"), "tiny-mlp")
    images, labels = _digits()
    if split == "test":
        images, labels = images[-N_TEST:], labels[-N_TEST:]
    else:
        images, labels = images[:-N_TEST], labels[:-N_TEST]
    index = choose_rows(split, len(labels), n, seed, "the sklearn digits")
    return {"pixel_values": images[index], "labels": labels[index]}


register_arch(ArchSpec(
    name="tiny-mlp",
    family="mlp",
    task="image-cls",
    build_pretrained=_build,
    from_config=_from_config,
    load_split=_load_split,
    targets=(r"fc1", r"fc2"),
    options={"hidden": 48, "n_val": 64},
    split_rows=lambda options: {"train": N_DIGITS - N_TEST, "test": N_TEST},
    defaults={"pretrain_steps": 300, "pretrain_lr": 3e-3, "batch_size": 64, "eval_batch_size": 512,
              "prehab_steps": 100, "prehab_lr": 1e-3, "rehab_steps": 100, "rehab_lr": 3e-3, "calib_samples": 512},
    note="engine test fixture",
))
