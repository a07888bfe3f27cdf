"""Evaluation: the task metric of a model and its size, as one record (metrics.json).

accuracy (classification) or perplexity (language modelling, non-overlapping windows), always
over the whole test split, counting non-finite outputs instead of skipping them.

docs/method.md, section 7, says why.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from prehab import checkpoint, tasks
from prehab.layers import count_params
from prehab.layout import EVAL_DIR
from prehab.outputs import StepRecord, atomic_dir
from prehab.registry import ArchSpec


@torch.no_grad()
def task_metrics(model: nn.Module, task: str, data: dict[str, torch.Tensor], batch_size: int) -> dict[str, float]:
    """The task metric over a whole split, counting (never skipping) non-finite outputs.

    accuracy: fraction of rows whose argmax is the label; a row with non-finite logits counts as
    wrong. perplexity: exp(total next-token NLL / tokens) over non-overlapping windows; a window
    with non-finite logits is counted in `nonfinite_rows` (its NLL, if non-finite, makes perplexity inf).
    """
    model.eval()
    if "attention_mask" in data:  # similar lengths per batch: less padding to compute (metric is order-free)
        data = tasks.take(data, torch.argsort(data["attention_mask"].sum(dim=1), stable=True))
    n_rows, n_nonfinite = 0, 0
    correct, nll, tokens = 0, 0.0, 0
    for batch in tasks.batches(data, batch_size):
        logits = tasks.forward(model, task, batch)
        batch = tasks.to_device(batch, logits.device)
        finite = torch.isfinite(logits).flatten(1).all(dim=1)  # (B,)
        n_nonfinite += int((~finite).sum())
        n_rows += len(finite)
        if task == "lm":
            ids = batch["input_ids"]
            vocab = logits.shape[-1]
            token_nll = F.cross_entropy(
                logits[:, :-1].reshape(-1, vocab).float(), ids[:, 1:].reshape(-1), reduction="none"
            )  # (B * (T-1),) per-token NLL; summed in float64 below
            nll += float(token_nll.double().sum())
            tokens += token_nll.numel()
        else:
            pred = logits.argmax(dim=-1)
            correct += int(((pred == batch["labels"]) & finite).sum())
    metrics = {"n_eval": n_rows, "nonfinite_rows": n_nonfinite}
    if task == "lm":
        mean_nll = nll / max(tokens, 1)
        metrics.update(
            perplexity=math.exp(mean_nll) if math.isfinite(mean_nll) and mean_nll < 700 else math.inf,
            nll=mean_nll,
            eval_tokens=tokens,
        )
    else:
        metrics["accuracy"] = correct / max(n_rows, 1)
    return metrics


def evaluate_model(model: nn.Module, spec: ArchSpec, options: dict[str, Any], *, n_factorized: int,
                   model_file: Path, batch_size: int) -> dict[str, Any]:
    """The metrics an evaluation records: the task metric on the test split (options `n_test`),
    the model's parameter count, its checkpoint's size and how many layers are factorised."""
    data = spec.load_split(options, "test", options.get("n_test"), 0)
    metrics = task_metrics(model, spec.task, data, batch_size)
    metrics.update(metric=tasks.METRIC[spec.task], model_params=count_params(model),
                   checkpoint_bytes=Path(model_file).stat().st_size, n_factorized=n_factorized)
    return metrics


def evaluation_record(model: nn.Module, spec: ArchSpec, options: dict[str, Any], *, n_factorized: int,
                      history: list, model_file: Path, batch_size: int) -> StepRecord:
    """The `evaluate` step's record of a model in memory (`model_file`: its saved checkpoint)."""
    record = StepRecord("evaluate", {"model": str(model_file), "arch": spec.name, "arch_options": options,
                                     "batch_size": batch_size})
    record.metrics.update(evaluate_model(model, spec, options, n_factorized=n_factorized, model_file=model_file,
                                         batch_size=batch_size))
    record.extra["history"] = history
    return record


def evaluate_saved(model: nn.Module, spec: ArchSpec, options: dict[str, Any], *, n_factorized: int,
                   history: list, model_dir: Path, batch_size: int) -> dict:
    """Evaluate a model just saved into `model_dir` into <model_dir>/eval, as `prehab evaluate
    --out <model_dir>/eval` would (saves a job's start-up and model load per model)."""
    record = evaluation_record(model, spec, options, n_factorized=n_factorized, history=history,
                               model_file=checkpoint.model_path(model_dir), batch_size=batch_size)
    with atomic_dir(Path(model_dir) / EVAL_DIR) as out:
        return record.write(out)
