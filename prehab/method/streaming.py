"""Calibration block by block: one block's inputs in flight, one block's second moments held.

SVD-LLM's low-resource path. The calibration batches run through the model once, up to its first
block, and that block's inputs are kept for every batch (a model's blocks read nothing else).
Then, block after block, the block runs on the kept inputs while its target layers accumulate
their second moments, its outputs overwrite its inputs in place, and its moments are handed to
the caller (to factor and write) before the next block starts. Peak memory is then the calibration
activations plus one block's moments, not every block's, and a model whose weights are
memory-mapped (`checkpoint.load(lazy=True)`) reads each block's weights once, in order.

The moments equal those of a whole-model pass (`calibrate.second_moments`) bit for bit on CPU:
each block sees the same inputs, and each sum runs over the batches in the same order
(tests/test_streaming.py checks it on every testbed family).

docs/method.md, section 2, says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn
from tqdm import tqdm

from prehab import tasks
from prehab.layout import GRAMS_FILE
from prehab.method.calibrate import GRAMS_FORMAT, _MomentHooks, factors_file, second_moments, whitening_from_moments


@dataclass
class BlockMoments:
    """The second moments of the targets inside one block."""

    block: str  # the block's module name ("" when the model is streamed as one piece)
    moments: dict[str, torch.Tensor]  # group leader -> C (n, n) float64
    owner: dict[str, str]  # target layer -> group leader
    n_tokens: int  # tokens per matrix


def find_blocks(model: nn.Module, targets: list[str]) -> list[tuple[str, nn.Module]]:
    """The model's blocks in call order: the entries of the ModuleList or Sequential that holds
    every target (transformer blocks), or the whole model as one block when none does (an MLP).
    """
    for name, module in model.named_modules():
        if name and isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > 1:
            entries = [(f"{name}.{i}", block) for i, block in enumerate(module)]
            if all(any(t.startswith(entry + ".") for entry, _ in entries) for t in targets):
                return entries
    return [("", model)]


class _Reached(Exception):
    """Raised by the first block's hook: the rest of the forward pass is not needed."""


def _same(a: Any, b: Any) -> bool:
    """Equal tensors (or equal tuples of them); anything else counts as different."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return False


def _share_repeats(kwargs: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Keep one copy of keyword inputs that are the same in every batch (masks, position tables
    of equal-length windows): each batch then holds only its own hidden states (never shared,
    even when equal: `block_moments` overwrites them in place)."""
    if previous is None:
        return kwargs
    return {key: previous[key] if key != "hidden_states" and _same(value, previous.get(key)) else value
            for key, value in kwargs.items()}


def _without_caches(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword inputs with any key/value cache (transformers' `Cache`) replaced by None: a
    kept cache would grow by every block's keys and values for every batch (the blocks compute
    the same outputs without one)."""
    import sys

    cache_utils = sys.modules.get("transformers.cache_utils")  # no transformers model, no cache
    if cache_utils is None:
        return dict(kwargs)
    return {k: None if isinstance(v, cache_utils.Cache) else v for k, v in kwargs.items()}


def _first_block_inputs(model: nn.Module, first: nn.Module, task: str, data: dict[str, torch.Tensor],
                        batch_size: int) -> list[tuple[list, dict[str, Any], torch.Tensor | None]]:
    """(positional args, keyword args, token mask) of the first block's call, per batch."""
    kept: list[tuple[list, dict[str, Any], torch.Tensor | None]] = []
    calls: list[tuple[tuple, dict]] = []

    def reached(module, args, kwargs):
        calls.append((args, kwargs))
        raise _Reached

    handle = first.register_forward_pre_hook(reached, with_kwargs=True)
    try:
        for batch in tasks.batches(data, batch_size):
            calls.clear()
            try:
                tasks.forward(model, task, batch)
            except _Reached:
                pass
            if not calls:
                raise RuntimeError("calibration never reached the model's first block")
            args, kwargs = calls[0]
            kwargs = _share_repeats(_without_caches(kwargs), kept[-1][1] if kept else None)
            kept.append((list(args), kwargs, tasks.token_mask(task, batch)))
    finally:
        handle.remove()
    return kept


def _hidden_of(output: Any) -> torch.Tensor:
    """A block's output hidden states (HF blocks may return a tuple whose first entry they are)."""
    return output if isinstance(output, torch.Tensor) else output[0]


@torch.no_grad()
def block_moments(model: nn.Module, task: str, data: dict[str, torch.Tensor], targets: list[str],
                  batch_size: int, product_dtype: torch.dtype = torch.float64) -> Iterator[BlockMoments]:
    """Stream `data` through the model block by block; yield each block's second moments (each
    batch's products in `product_dtype`, summed in float64).

    A model without blocks (see `find_blocks`) is one block fed with the model's own inputs.
    """
    model.eval()
    blocks = find_blocks(model, targets)
    if blocks[0][0] == "":  # no blocks: the whole model in one pass
        yield BlockMoments("", *second_moments(model, task, data, targets, batch_size, product_dtype))
        return
    inputs = _first_block_inputs(model, blocks[0][1], task, data, batch_size)
    done: set[str] = set()
    for name, block in tqdm(blocks, desc="calibrate", unit="block", leave=False):
        inside = [t for t in targets if t.startswith(name + ".")]
        hooks = _MomentHooks(model, inside, product_dtype) if inside else None
        try:
            for entry in inputs:
                args, kwargs, mask = entry
                if hooks is not None:
                    hooks.start_batch(mask)
                hidden = args[0] if args else kwargs["hidden_states"]
                out = _hidden_of(block(*args, **kwargs))
                if out.shape == hidden.shape and out.dtype == hidden.dtype and hidden.is_contiguous():
                    hidden.copy_(out)  # in place: the kept activations are allocated once, never twice
                elif args:
                    args[0] = out
                else:
                    kwargs["hidden_states"] = out
                del out
        finally:
            if hooks is not None:
                hooks.close()
        if hooks is None:
            continue
        done.update(inside)
        part = BlockMoments(name, *hooks.moments(inside))
        del hooks  # before the caller factors: one copy per moment
        yield part
        del part
    outside = [t for t in targets if t not in done]
    if outside:
        raise RuntimeError(f"target layers outside the model's blocks: {outside[:3]}")


def write_whitening(model: nn.Module, task: str, data: dict[str, torch.Tensor], targets: list[str], batch_size: int,
                    damping: float, folder: Path, dtype: torch.dtype = torch.float64,
                    product_dtype: torch.dtype = torch.float64) -> dict[str, Any]:
    """Calibrate block by block into `folder`: each block's factors go to their own file, in
    `dtype`, as soon as they exist (`calibrate.factors_file`), then grams.pt indexes them. Returns the index
    (files, owner, damping records, n_tokens) plus `widest`, the widest factor's size."""
    files, owner, records = {}, {}, {}
    n_tokens, widest = None, 0
    for index, part in enumerate(block_moments(model, task, data, targets, batch_size, product_dtype)):
        whitening = whitening_from_moments(part.moments, part.owner, part.n_tokens, damping, consume=True, dtype=dtype)
        factors = whitening.factors
        records.update(whitening.damping)
        del whitening
        torch.save(factors, Path(folder) / factors_file(index))
        files.update(dict.fromkeys(factors, factors_file(index)))
        owner.update(part.owner)
        n_tokens = part.n_tokens if n_tokens is None else min(n_tokens, part.n_tokens)
        widest = max([widest, *(L.shape[0] for L in factors.values())])
        del part, factors
    index = {"format": GRAMS_FORMAT, "files": files, "owner": owner, "n_tokens": n_tokens, "damping": records}
    torch.save(index, Path(folder) / GRAMS_FILE)
    return {**index, "widest": widest}
