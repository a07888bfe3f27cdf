"""The one training loop shared by pretrain, Prehab and rehab: Adam on chosen parameters, task
loss plus an optional penalty, a progress bar and a logged curve."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from tqdm import tqdm

from prehab import tasks
from prehab.compute import Compute
from prehab.distributed import World
from prehab.errors import NumericalError

# penalty(step) -> (term added to the loss, numbers to log at this step)
Penalty = Callable[[int], tuple[torch.Tensor | None, dict[str, float]]]
Logger = Callable[[int], dict[str, float]]
# inspect(step, task loss): sees the step's differentiable task loss before the penalty is asked
# (Prehab measures the gradient-norm ratio of step 1 there); it must leave the graph usable. With
# micro-batches the task loss is already back-propagated: it gets None, and the task's gradient is
# in the parameters' .grad.
Inspect = Callable[[int, torch.Tensor | None], None]


def diverged(step: int, task_loss: torch.Tensor, term: torch.Tensor | None) -> None:
    """Stop at the first non-finite loss, naming the step and the term (nothing is written:
    every step saves only after its loop returns).

    Raises:
        NumericalError: the task loss or the penalty is NaN or infinite.
    """
    for name, value in (("task loss", task_loss), ("penalty", term)):
        if value is not None and not bool(torch.isfinite(value.detach()).all()):
            raise NumericalError(f"training diverged at step {step}: the {name} is {float(value.detach())}")


def train_steps(
    model: nn.Module,
    task: str,
    data: dict[str, torch.Tensor],
    params: list[nn.Parameter],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    penalty: Penalty | None = None,
    log_every: int = 10,
    log_extra: Logger | None = None,
    desc: str = "train",
    on_step: Callable[[int, list], None] | None = None,
    log_at: frozenset[int] = frozenset(),
    inspect: Inspect | None = None,
    compute: Compute = Compute(),
    world: World = World(),
) -> list[dict[str, float]]:
    """Run `steps` Adam steps on `params` only; return the curve logged every `log_every` steps.

    The curve rows hold `step`, `task_loss` and whatever `penalty` / `log_extra` report; the
    last step is always logged so a curve ends where training ended. `on_step(step, curve)` runs
    after each step's update (the caller may copy the model there); steps in `log_at` are logged too.
    `inspect(step, task_loss)` runs between the task loss and the penalty of every step.
    `compute`: bf16 autocast, micro-batches (prehab/compute.py); the default is the plain step.
    `world`: the processes sharing each batch (prehab/distributed.py); the default is this one.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(params, lr=lr)
    curve: list[dict[str, float]] = []
    if steps == 0:
        return curve
    model.train()
    bar = tqdm(tasks.shuffled_batches(data, batch_size, steps, generator), total=steps, desc=desc, mininterval=5,
               disable=not world.main)
    for step, batch in enumerate(bar, start=1):
        if compute.micro_batches > 1 or world.sharded:
            task_loss, term, logged = _accumulated_step(model, task, batch, optimizer, step, penalty, inspect, compute,
                                                        world)
        else:
            with compute.autocast(model):
                task_loss = tasks.loss(model, task, batch)
            if inspect is not None:
                inspect(step, task_loss)
            term, logged = penalty(step) if penalty is not None else (None, {})
            diverged(step, task_loss, term)
            total = task_loss if term is None else task_loss + term
            optimizer.zero_grad(set_to_none=True)
            total.backward()
        optimizer.step()
        if step % log_every == 0 or step == steps or step == 1 or step in log_at:
            row = {"step": step, "task_loss": float(task_loss.detach()), **logged}
            if log_extra is not None:
                row.update(log_extra(step))
            curve.append(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "step"}, refresh=False)
        if on_step is not None:
            on_step(step, curve)
    model.eval()
    return curve


def _accumulated_step(model, task, batch, optimizer, step, penalty, inspect, compute, world):
    """One step's gradients from this rank's rows of the batch (all of it in one process), cut
    into `compute.micro_batches` slices, each slice's loss back-propagated at its share of the
    rows times the rank's weight (World.rows), then the penalty's once; returns (the batch's task
    loss over all ranks, detached; the penalty term; what the penalty logs)."""
    rows, weight = world.rows(batch)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for part, share in compute.slices(rows):
        with compute.autocast(model):
            loss = tasks.loss(model, task, part)
        diverged(step, loss, None)
        (loss * (share * weight)).backward()
        total += float(loss.detach()) * share
    task_loss = torch.tensor(world.mean_over_ranks(total * weight))
    if inspect is not None:
        inspect(step, None)
    term, logged = penalty(step) if penalty is not None else (None, {})
    diverged(step, task_loss, term)
    if term is not None:
        term.backward()
    return task_loss, term, logged
