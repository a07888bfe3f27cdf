"""Rehab: LoRA recovery of a compressed model on its factor layers, with peft.

Schedules (SVD-LLM's recipe is `sequential`: LoRA on every `u` with `v` frozen, merge, then on
every `v`):
- `joint`: one phase on `u` and `v` together.
- `sequential`: phase 1 on `u`, merge, phase 2 on `v`, merge.
Each phase trains `steps` steps; adapters are merged, so the result is again a plain
factorised model of the same size.

docs/method.md, section 6, says why.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from prehab.compute import Compute, enable_recompute
from prehab.distributed import World
from prehab.errors import UsageError
from prehab.method import names
from prehab.registry import Registry
from prehab.train import train_steps

SCHEDULES: Registry[tuple[tuple[str, ...], ...]] = Registry("LoRA schedule")
SCHEDULES.register("joint", (("u", "v"),))
SCHEDULES.register("sequential", (("u",), ("v",)))
assert tuple(SCHEDULES.names()) == tuple(sorted(names.LORA_SCHEDULES)), SCHEDULES.names()


def lora_rehab(
    model: nn.Module,
    factorized: list[str],
    task: str,
    data: dict[str, torch.Tensor],
    *,
    schedule: str,
    rank: int,
    alpha: float,
    dropout: float,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    compute: Compute = Compute(),
    world: World = World(),
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train and merge LoRA adapters phase by phase; return (merged model, curve with `phase`).
    `compute`: how each step computes (prehab/compute.py); with `recompute` the blocks of `model`
    recompute their activations (set before peft wraps it, so the adapters inside are too).
    `world`: across processes each phase trains a sharded copy of the adapted model (FSDP2 per
    block, prehab/distributed.py); the trained adapters, gathered in full, go back into the
    unsharded model, which every rank then merges alike (the adapters are small; the frozen
    factors are held twice, once whole and once as shards)."""
    from peft import LoraConfig, get_peft_model  # slow import (~5 s): only the step that needs it pays

    phases = SCHEDULES.get(schedule)
    if not factorized:
        raise UsageError("rehab needs a compressed model (no factorised layers found); run `prehab compress` first")
    if compute.recompute:
        enable_recompute(model, factorized)
    curve: list[dict[str, float]] = []
    for phase, suffixes in enumerate(phases, start=1):
        torch.manual_seed(seed + phase)  # LoRA init and dropout masks
        targets = [f"{name}.{suffix}" for name in factorized for suffix in suffixes]
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
        peft_model = get_peft_model(model, config)
        runner = _sharded_copy(peft_model, model, factorized, compute, world) if world.sharded else peft_model
        trainable = [p for p in runner.parameters() if p.requires_grad]
        rows = train_steps(
            runner, task, data, trainable, steps=steps, lr=lr, batch_size=batch_size,
            seed=seed + phase, desc=f"rehab {'+'.join(suffixes)}", compute=compute, world=world,
        )
        if runner is not peft_model:
            _gather_adapters(runner, peft_model)
        curve += [{**row, "phase": phase} for row in rows]
        model = peft_model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)
    return model, curve


def _sharded_copy(peft_model: nn.Module, base: nn.Module, factorized: list[str], compute: Compute,
                  world: World) -> nn.Module:
    """A copy of the adapted model, sharded per block (its blocks found by the targets' names
    inside peft's wrapper)."""
    import copy

    prefix = next(name for name, module in peft_model.named_modules() if module is base)
    runner = copy.deepcopy(peft_model)
    world.shard(runner, [f"{prefix}.{name}" for name in factorized], compute.precision)
    return runner


@torch.no_grad()
def _gather_adapters(runner: nn.Module, peft_model: nn.Module) -> None:
    """The sharded copy's trained adapters, in full on every rank, into the unsharded model (a
    collective: every rank gathers every adapter, in the same order)."""
    into = dict(peft_model.named_parameters())
    for name, p in runner.named_parameters():
        if p.requires_grad:
            into[name].copy_(p.full_tensor())
