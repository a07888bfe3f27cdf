"""Model checkpoints that rebuild themselves: architecture name, options, module-tree config and
the ranks of factorised layers sit in the same file as the weights."""

from __future__ import annotations

import contextlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from prehab.errors import UsageError
from prehab.layout import MODEL_FILE
from prehab.registry import ArchSpec, get_arch

FORMAT = "prehab-checkpoint-v1"


@dataclass
class Checkpoint:
    """A model plus what is needed to rebuild it and to load its data."""

    model: nn.Module
    arch: str
    arch_options: dict[str, Any]
    arch_config: dict[str, Any]
    factorized: dict[str, int] = field(default_factory=dict)  # layer name -> rank
    history: list[dict[str, Any]] = field(default_factory=list)  # steps that made it

    @property
    def spec(self) -> ArchSpec:
        return get_arch(self.arch)


def model_path(path: str | Path) -> Path:
    """Accept a step's output folder or the model file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise UsageError(f"checkpoint {str(path)!r} does not exist; pass a step's output folder or its {MODEL_FILE}")
    return path


def save(ckpt: Checkpoint, folder: Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `folder`/model.pt; `state_dict`: the weights to store instead of the model's own (the
    full state gathered from a sharded model, prehab/distributed.py)."""
    path = Path(folder) / MODEL_FILE
    payload = {
        "format": FORMAT,
        "arch": ckpt.arch,
        "arch_options": ckpt.arch_options,
        "arch_config": ckpt.arch_config,
        "factorized": ckpt.factorized,
        "history": ckpt.history,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in (state_dict or ckpt.model.state_dict()).items()},
    }
    torch.save(payload, path)
    return path


def _without_weights(lazy: bool):
    """Parameters created on the meta device (no memory) when `lazy`, buffers as usual: the
    checkpoint's tensors are then assigned in place of the parameters, not copied into them."""
    if not lazy:
        return contextlib.nullcontext()
    from accelerate import init_empty_weights

    return init_empty_weights(include_buffers=False)


REQUIRED = ("arch", "arch_options", "arch_config", "factorized", "state_dict")


def read_torch_file(path: Path, what: str, mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` of a step's output, every failure as one UsageError line:
    a pickled object (refused: loading it could run code), a truncated or corrupt file.
    `mmap`: tensors stay in the file, paged in when read (reclaimable page cache, not process memory)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise UsageError(f"{what} {str(path)!r} holds not only tensors and plain values (refused: loading it "
                         "could run code)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise UsageError(f"{what} {str(path)!r} is truncated, corrupt or not a torch file ({type(err).__name__})") from None


def load(path: str | Path, lazy: bool = False) -> Checkpoint:
    """Rebuild the module tree from the stored config (factorised layers included), then load weights.

    `lazy`: the weights stay memory-mapped in the file (the module tree is built without
    allocating any), so a step that reads the model block by block (calibration) never holds all
    of it in process memory. For reading only: a lazy model must not be trained.

    Raises:
        UsageError: the file is missing, not a prehab checkpoint (a pickled object included:
            weights_only loading refuses it), misses fields, its weights do not fit, or a weight
            is not finite.
    """
    from prehab.layers import factorize_structure

    path = model_path(path)
    payload = read_torch_file(path, "checkpoint", mmap=lazy)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"checkpoint {str(path)!r} is not a {FORMAT} file")
    absent = [key for key in REQUIRED if key not in payload]
    if absent:
        raise UsageError(f"checkpoint {str(path)!r} lacks {', '.join(absent)}: not written by a prehab step")
    for name, tensor in payload["state_dict"].items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UsageError(f"checkpoint {str(path)!r} holds non-finite values in {name}; refusing to use it")
    try:
        spec = get_arch(payload["arch"])
    except UsageError as err:
        raise UsageError(f"checkpoint {str(path)!r}: {err}") from None
    try:  # a module tree other than the architecture's: another family's config or weights
        with _without_weights(lazy):
            model = spec.from_config(payload["arch_config"])
            factorize_structure(model, payload["factorized"])
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False, assign=lazy)
    except (TypeError, KeyError, ValueError, RuntimeError, AttributeError) as err:
        raise UsageError(f"checkpoint {str(path)!r} does not fit architecture {spec.name} "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    if missing or unexpected:
        raise UsageError(
            f"checkpoint {str(path)!r} does not fit architecture {spec.name}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    unloaded = [name for name, p in model.named_parameters() if p.is_meta]
    if unloaded:
        raise UsageError(f"checkpoint {str(path)!r} has no weights for {unloaded[:3]}")
    model.eval()
    return Checkpoint(
        model=model,
        arch=payload["arch"],
        arch_options=payload["arch_options"],
        arch_config=payload["arch_config"],
        factorized=dict(payload["factorized"]),
        history=list(payload.get("history", [])),
    )
