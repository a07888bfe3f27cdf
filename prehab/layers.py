"""Finding target layers and swapping modules in place (one replacement helper)."""

from __future__ import annotations

import logging
import re
from typing import Callable, Iterable

import torch
import torch.nn as nn

from prehab.errors import UsageError

log = logging.getLogger(__name__)


class FactorizedLinear(nn.Module):
    """A rank-k linear layer: x -> u(v(x)), `v`: in -> k (no bias), `u`: k -> out (bias).

    The stable child names let peft target `.u` or `.v` by suffix (joint or sequential LoRA).
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool, dtype=None, device=None):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.v = nn.Linear(in_features, rank, bias=False, dtype=dtype, device=device)
        self.u = nn.Linear(rank, out_features, bias=bias, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.u(self.v(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def find_targets(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Names of the nn.Linear modules whose full name matches one of the regex patterns.

    Raises:
        UsageError: nothing matched (a silent no-op would compress nothing).
    """
    patterns = list(patterns)
    compiled = [re.compile(p) for p in patterns]
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(c.fullmatch(name) for c in compiled)
    ]
    if not names:
        raise UsageError(f"no nn.Linear layer matches the target patterns {patterns}")
    return names


def get_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def replace_modules(model: nn.Module, names: Iterable[str], make: Callable[[str, nn.Module], nn.Module]) -> list[str]:
    """Replace each named module by `make(name, old)`; return the replaced names in order."""
    replaced = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        setattr(parent, child, make(name, old))
        replaced.append(name)
    log.debug("replaced %d modules", len(replaced))
    return replaced


def factorize_structure(model: nn.Module, ranks: dict[str, int]) -> None:
    """Give `model` empty FactorizedLinear layers of the recorded ranks (before loading weights)."""

    def make(name: str, old: nn.Module) -> nn.Module:
        if not isinstance(old, nn.Linear):
            raise UsageError(f"layer {name} is {type(old).__name__}, not nn.Linear; cannot factorise it")
        return FactorizedLinear(
            old.in_features, old.out_features, ranks[name], old.bias is not None,
            dtype=old.weight.dtype, device=old.weight.device,
        )

    replace_modules(model, list(ranks), make)


def count_params(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
