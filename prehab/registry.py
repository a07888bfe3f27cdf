"""Name -> thing registries: architectures and small named variants (surrogates, LoRA schedules).

One registry per kind keeps per-architecture facts in tables instead of `if "llama" in name`
branches inside the algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

import torch.nn as nn

from prehab.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named variants that rejects duplicates and names the known keys on a miss."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def __call__(self, name: str) -> Callable[[T], T]:
        """Decorator form: `@SURROGATES("nuclear")`."""
        return lambda item: self.register(name, item)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UsageError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


@dataclass(frozen=True)
class ArchSpec:
    """Everything the steps need to know about one architecture, and nothing about the steps.

    Attributes:
        name: short registry name (`vit-small`, `bert-base`, ...).
        family: `vit`, `bert` or `llama` (for tables and plots only; algorithms never branch on it).
        task: `image-cls`, `text-cls` or `lm`; picks the loss and metric (prehab.tasks).
        build_pretrained: `(options) -> (model, arch_config)`: the starting weights (random for
            fixtures and from-scratch testbeds, loaded for pretrained ones). `arch_config` is a
            JSON-able dict from which `from_config` rebuilds the same module tree.
        from_config: `(arch_config) -> model` with the same module names and shapes, weights
            arbitrary: used to load checkpoints without touching the original weights.
        load_split: `(options, split, n, seed) -> dict[str, Tensor]` of tensors aligned on dim 0;
            `split` is `train`, `test` or a calibration source (`train`, `shift`). `n=None` = all.
            Raises UsageError when `n` exceeds what exists. Steps call `load`, never this.
        targets: regex patterns (fullmatch on `named_modules()` names) of the nn.Linear layers
            that Prehab regularises and surgery factorises. Heads and embeddings stay dense.
        options: typed defaults of the architecture's own knobs (paths, seq_len, image size,
            `n_val`: training rows held out as the validation split, prehab.data.holdout...),
            overridden by `--arch-opt key=value` with the default's type.
        defaults: per-architecture defaults of step options (steps, lr, batch size) used when
            the CLI flag is not given.
        calib_sources: calibration sources this architecture offers, with a one-line description.
        split_rows: `(options) -> {split: rows}`: how many rows each split's pool holds before the
            validation hold-out, from the data's fixed sizes, without loading it, so that a
            workflow config asking for more is refused before any job (prehab.config_check);
            None where only loading can tell (paper-scale paths: the steps' own checks refuse).
        note: what a reader must know next to a number (e.g. "MiniLM, not BERT-base").
        metric: `(options) -> name` of the metric that judges it, where it is not the task's
            (prehab.tasks.METRIC): GLUE scores CoLA by Matthews correlation, MRPC by F1.
        extra_tests: `(options) -> {label: options}`: further test sets every evaluation also
            scores, each loaded as `load(options_of_it, "test")` (LLaMA: C4 beside WikiText-2).
    """

    name: str
    family: str
    task: str
    build_pretrained: Callable[[dict[str, Any]], tuple[nn.Module, dict[str, Any]]]
    from_config: Callable[[dict[str, Any]], nn.Module]
    load_split: Callable[..., dict]
    targets: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    calib_sources: dict[str, str] = field(default_factory=lambda: {"train": "the task's training split"})
    split_rows: Callable[[dict[str, Any]], dict[str, int]] | None = None
    note: str = ""
    metric: Callable[[dict[str, Any]], str] | None = None
    extra_tests: Callable[[dict[str, Any]], dict[str, dict[str, Any]]] | None = None

    def metric_of(self, options: dict[str, Any]) -> str:
        """The name of the metric evaluations report for these options."""
        from prehab import tasks

        return self.metric(options) if self.metric is not None else tasks.METRIC[self.task]

    def resolve_options(self, overrides: dict[str, str] | None = None) -> dict[str, Any]:
        """Defaults updated by string overrides, each cast to its default's type."""
        opts = dict(self.options)
        for key, raw in (overrides or {}).items():
            opts[key] = self.option_value(key, raw)
        return opts

    def option_value(self, key: str, raw: str) -> Any:
        """One option's value from its text, typed like its default and checked: the one rule the
        CLI's `--arch-opt` and the workflow's config check both apply. A row count (`n_...`)
        is a whole number >= 0, and >= 1 where the default counts rows (0 rows is no data) but
        for `n_val`, whose 0 means no validation split."""
        if key not in self.options:
            known = ", ".join(sorted(self.options)) or "none"
            raise UsageError(f"unknown option {key!r} for architecture {self.name}; known: {known}")
        default = self.options[key]
        value = cast_like(default, raw, f"{self.name} option {key}")
        if key.startswith("n_") and isinstance(value, int) and not isinstance(value, bool):
            least = 1 if isinstance(default, int) and default >= 1 and key != "n_val" else 0
            if value < least:
                raise UsageError(f"{self.name} option {key}={raw!r}: a row count; allowed: a whole number >= {least}")
        return value

    def load(self, options: dict[str, Any], split: str, n: int | None = None, seed: int = 0) -> dict:
        """`split` as every step must read it: `load_split` plus the validation hold-out
        (prehab.data.holdout): `val` rows never appear in `train`."""
        from prehab.data import holdout

        return holdout.load(self.load_split, options, split, n, seed, self.name)


def cast_like(default: Any, raw: str, what: str) -> Any:
    """Cast a command-line string to the type of `default` (None defaults accept any string)."""
    if default is None or isinstance(default, str):
        return raw
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return raw.lower() in ("true", "1")
        return type(default)(raw)
    except ValueError:
        raise UsageError(f"{what}={raw!r} is not a {type(default).__name__}") from None


ARCHS: Registry[ArchSpec] = Registry("architecture")


def register_arch(spec: ArchSpec) -> ArchSpec:
    return ARCHS.register(spec.name, spec)


def get_arch(name: str) -> ArchSpec:
    import prehab.archs  # noqa: F401  (registers every architecture on first use)

    return ARCHS.get(name)


def arch_names() -> list[str]:
    import prehab.archs  # noqa: F401

    return ARCHS.names()
