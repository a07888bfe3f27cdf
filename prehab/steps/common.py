"""What every step shares: option parsing helpers, defaults from the architecture, seeding."""

from __future__ import annotations

import argparse
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prehab.errors import UsageError
from prehab.registry import ArchSpec

# Fallbacks when neither the flag nor the architecture's defaults give a value.
STEP_DEFAULTS = {
    "pretrain_steps": 100,
    "pretrain_lr": 1e-3,
    "batch_size": 32,
    "eval_batch_size": 64,
    "prehab_steps": 100,
    "prehab_lr": 2e-5,
    "rehab_steps": 100,
    "rehab_lr": 1e-4,
    "calib_samples": 256,
}


def add_common(parser: argparse.ArgumentParser, *, seed: bool = True, many: str = "") -> None:
    """Flags every step has. `many`: the repeated input (e.g. "--ratio") whose values each get
    their own --out folder, so one process (one start-up, one model load) makes several outputs."""
    if many:
        parser.add_argument("--out", type=Path, nargs="+", required=True,
                            help=f"output folders, one per {many} value in the same order (each written atomically)")
    else:
        parser.add_argument("--out", type=Path, required=True, help="output folder (written atomically: all or nothing)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to compute: auto = the GPU if torch sees one, else the CPU")
    parser.add_argument(
        "--arch-opt", action="append", default=[], metavar="KEY=VALUE",
        help="override an architecture option (typed like its default; see `prehab archs`)",
    )
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="seed of data order, sampling and init (default 0)")


def add_model(parser: argparse.ArgumentParser, what: str = "input model") -> None:
    parser.add_argument("--model", type=Path, required=True, help=f"{what}: a step's output folder or its model.pt")


def parse_arch_opts(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--arch-opt {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def step_default(value: Any, spec: ArchSpec, key: str) -> Any:
    """The flag if given, else the architecture's default, else the global fallback."""
    if value is not None:
        return value
    return spec.defaults.get(key, STEP_DEFAULTS[key])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _number(name: str, cast: type, bound: str, limit: float):
    """argparse type: a finite int/float satisfying `value >= limit` or `value > limit`."""
    kind = "a whole number" if cast is int else "a number"

    def parse(raw: str):
        try:
            value = cast(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {kind}, got {raw!r}") from None
        ok = math.isfinite(value) and (value >= limit if bound == ">=" else value > limit)
        if not ok:
            raise argparse.ArgumentTypeError(f"{name} must be a finite number {bound} {limit:g}, got {raw}")
        return value

    return parse


def positive_int(name: str):
    return _number(name, int, ">=", 1)


def nonneg_int(name: str):
    return _number(name, int, ">=", 0)


def nonneg_float(name: str):
    return _number(name, float, ">=", 0)


def positive_float(name: str):
    return _number(name, float, ">", 0)


def pair_outputs(values: list, outs: list[Path], flag: str) -> list[tuple[Any, Path]]:
    """Match each value of a repeated flag to its --out folder; mismatches are usage errors."""
    if len(values) != len(outs):
        raise UsageError(f"{len(values)} {flag} value(s) but {len(outs)} --out folder(s); give one --out per {flag}")
    if len(set(map(str, values))) != len(values) or len(set(outs)) != len(outs):
        raise UsageError(f"{flag} values and --out folders must each be distinct")
    return list(zip(values, outs))


def file_bytes(path: Path) -> int:
    return os.path.getsize(path)


def checkpoint_options(ckpt, items: list[str]) -> dict[str, Any]:
    """The options a checkpoint was made with, updated by `--arch-opt` overrides (typed, known keys)."""
    given = parse_arch_opts(items)
    typed = ckpt.spec.resolve_options(given)  # checks the keys and casts the values
    return {**ckpt.arch_options, **{k: typed[k] for k in given}}


def load_whitening(path: Path):
    """Calibration output (folder or grams.pt) -> Whitening, with a one-line error when unusable."""
    import pickle
    import zipfile

    from prehab.calibrate import Whitening

    path = Path(path)
    if path.is_dir():
        path = path / "grams.pt"
    if not path.is_file():
        raise UsageError(f"calibration file {str(path)!r} does not exist; pass a `prehab calibrate` output folder")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return Whitening.from_payload(payload)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"calibration file {str(path)!r} is corrupt ({type(err).__name__})") from None
