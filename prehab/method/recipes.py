"""The authors' Prehab recipes as named presets (plain Python: the CLI reads them without torch).

From the paper's released code (docs/method.md, section 4.5): each fixes the surrogate, the lambda
schedule (an absolute lambda: `--lam-scale none`), the parametrisation and the optimiser settings. Usable on any architecture;
a run that uses fewer steps than the recipe's (`--steps`, when the budget demands) records both,
and the tables state the scaling next to its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    surrogate: str
    lam: float
    lam_start: float
    lam_warmup_steps: int
    space: str
    lr: float
    batch_size: int
    steps: int
    lam_scale: str = "none"  # the authors' lambda is absolute, not relative to the gradient norms


RECIPES = {
    # ViT path: exact unnormalised nuclear norm, lambda 5 constant, whitened delta, Adam 2e-5, batch 64.
    "authors-vit": Recipe("nuclear", 5.0, 0.0, 0, "whitened", 2e-5, 64, 2500),
    # BERT path: stable rank, lambda geometric 1e-4 -> 10 over 10 steps, whitened delta, Adam 2e-5.
    "authors-bert": Recipe("stable", 10.0, 1e-4, 10, "whitened", 2e-5, 64, 600),
}
