"""Step options as dataclasses: each option's default, help text and check live in
one field, and the CLI flags are generated from the fields, so a default is written once.

A field whose default is None takes the architecture's default at run time (`step_default`).
Checks run in `__post_init__` and raise a UsageError naming the flag, what is allowed and the
bad value, before any file is read.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Callable

from prehab.errors import UsageError
from prehab.method.names import PRECISIONS

Check = Callable[[Any], bool]
PER_ARCH = "per architecture"  # how help texts show a None default

# Fallbacks when neither the flag nor the architecture's defaults give a value.
STEP_DEFAULTS = {
    "pretrain_steps": 100,
    "pretrain_lr": 1e-3,
    "pretrain_full_steps": 0,
    "pretrain_full_lr": 2e-5,
    "batch_size": 32,
    "eval_batch_size": 64,
    "prehab_steps": 100,
    "prehab_lr": 2e-5,
    "rehab_steps": 100,
    "rehab_lr": 1e-4,
    "calib_samples": 256,
}


def option(help: str, default: Any = dataclasses.MISSING, *, type: Callable = str, choices=None,
           check: tuple[str, Check] | None = None, many: bool = False, action: str | None = None,
           metavar: str | None = None) -> Any:
    """A dataclass field that is also a CLI flag `--name-with-dashes`.

    Args:
        help: what the option does (the default is appended by the CLI).
        default: MISSING for a required flag; None for "per architecture".
        type: parses one command-line value.
        choices: the allowed values (argparse rejects others, naming them).
        check: (what is allowed, predicate), applied to each value in `__post_init__`.
        many: the flag takes one or more values (a list).
        action: "store_true" for a switch, "append" for a repeatable flag.
    """
    meta = dict(help=help, type=type, choices=choices, check=check, many=many, action=action, metavar=metavar)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def eval_precision_option() -> Any:
    """The precision an evaluation runs in: one help text for `evaluate --precision` and the
    `--eval-precision` of the steps that evaluate what they write."""
    return option("float32, or bf16: the weights (and float inputs) cast to bfloat16 before evaluating, half "
                  "the memory of float32 weights; losses and metrics still summed in float32/float64",
                  "float32", choices=PRECISIONS)


def finite(bound: str, limit: float) -> tuple[str, Check]:
    """A finite number `>= limit` or `> limit`."""
    test = (lambda v: v >= limit) if bound == ">=" else (lambda v: v > limit)
    return f"a finite number {bound} {limit:g}", lambda v: math.isfinite(v) and test(v)


POSITIVE = finite(">", 0)
NON_NEGATIVE = finite(">=", 0)
COUNT = finite(">=", 1)  # a whole number >= 1 (the flag's type is int)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclasses.dataclass(kw_only=True)
class StepOptions:
    """Options every step has; subclasses add their own fields and contradiction checks."""

    device: str = option("where to compute: auto = the GPU if torch sees one, else the CPU", "auto",
                         choices=("auto", "cpu", "cuda"))
    arch_opt: list[str] = option("override an architecture option (typed like its default; see `prehab archs`)",
                                 [], action="append", metavar="KEY=VALUE")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check = f.metadata.get("check")
            value = getattr(self, f.name)
            if check is None or value is None:
                continue
            allowed, ok = check
            for one in value if isinstance(value, list) else [value]:
                if not ok(one):
                    raise UsageError(f"{flag_name(f.name)} must be {allowed}, got {one}")

    def arch_overrides(self) -> dict[str, str]:
        """`--arch-opt KEY=VALUE` items as a dict (typed later against the architecture)."""
        out = {}
        for item in self.arch_opt:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"--arch-opt {item!r} is not KEY=VALUE")
            out[key] = value
        return out


@dataclasses.dataclass(kw_only=True)
class TrainingOptions(StepOptions):
    """What the training steps (pretrain, prehab, rehab) share: how each step computes
    (prehab/compute.py). The defaults are the plain float32 whole-batch step."""

    precision: str = option("float32, or bf16: the forward pass under autocast in bfloat16, float32 weights, "
                            "gradients and Adam state, the rank penalty outside it", "float32",
                            choices=PRECISIONS)
    micro_batches: int = option("cut each batch into this many slices and accumulate their gradients (the same "
                                "step up to rounding, about 1/N of the activation memory)", 1, type=int, check=COUNT)
    recompute: bool = option("recompute each transformer block's activations in the backward pass (the same "
                             "gradients, about one block's activation memory, one more forward pass per step)",
                             False, action="store_true")

    def compute(self):
        from prehab.compute import Compute

        return Compute(precision=self.precision, micro_batches=self.micro_batches, recompute=self.recompute)


def _help(f: dataclasses.Field) -> str:
    text = f.metadata["help"]
    if f.metadata["action"]:
        return text
    if f.default is None:
        return f"{text} (default: {PER_ARCH})"
    if f.default is not dataclasses.MISSING:
        return f"{text} (default: {f.default})"
    return text


def add_options(parser: argparse.ArgumentParser, cls: type[StepOptions]) -> None:
    """One flag per field of `cls`, in field order (the step's own options first)."""
    shared = [base for base in (TrainingOptions, StepOptions) if issubclass(cls, base)]  # most specific first
    names = {f.name for base in shared for f in dataclasses.fields(base)}
    own = [f for f in dataclasses.fields(cls) if f.name not in names]
    tiers = [[f for f in dataclasses.fields(base) if f.name not in {g.name for g in dataclasses.fields(StepOptions)}]
             for base in shared if base is not StepOptions]
    for f in own + [f for tier in tiers for f in tier] + list(dataclasses.fields(StepOptions)):
        meta = f.metadata
        kwargs: dict[str, Any] = {"help": _help(f), "dest": f.name}
        if meta["action"] == "store_true":
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=meta["type"], choices=meta["choices"], metavar=meta["metavar"])
            if meta["action"] == "append":
                kwargs.update(action="append", default=[])
            elif meta["many"]:
                kwargs["nargs"] = "+"
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            kwargs["required"] = required
            if not required and meta["action"] != "append":
                kwargs["default"] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        parser.add_argument(flag_name(f.name), **kwargs)


def from_args(cls: type[StepOptions], args: argparse.Namespace) -> StepOptions:
    """The parsed flags as `cls` (its checks run here, before any work)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def step_default(value: Any, spec, key: str) -> Any:
    """The flag if given, else the architecture's default, else the global fallback."""
    if value is not None:
        return value
    return spec.defaults.get(key, STEP_DEFAULTS[key])


def distinct_outputs(values: list, outs: list, flag: str) -> None:
    """A repeated input flag and its --out folders pair one to one, each distinct."""
    if len(values) != len(outs):
        raise UsageError(f"{len(values)} {flag} value(s) but {len(outs)} --out folder(s); give one --out per {flag}")
    if len(set(map(str, values))) != len(values) or len(set(map(str, outs))) != len(outs):
        raise UsageError(f"{flag} values and --out folders must each be distinct")
