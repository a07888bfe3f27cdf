"""Evaluation: the task metric of a model and its size, as one record (metrics.json).

accuracy, F1 or Matthews correlation (classification: the architecture's metric, e.g. GLUE's
per task) or perplexity (language modelling, non-overlapping windows), always
over the whole test split (and the validation split where the architecture holds one out),
counting non-finite outputs instead of skipping them; the per-row scores behind them go to
scores.json for paired comparisons.

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
from prehab.data.holdout import VAL_SPLIT
from prehab.layout import EVAL_DIR, SCORES_FILE, extra_scores_key
from prehab.method.metrics import NO_PREDICTION, classification_metric
from prehab.method.names import PRECISIONS
from prehab.outputs import StepRecord, atomic_dir
from prehab.registry import ArchSpec


@torch.no_grad()
def item_scores(model: nn.Module, task: str, data: dict[str, torch.Tensor], batch_size: int) -> dict[str, list]:
    """Per-row scores of a split, in the split's row order, so that two models scored on the same
    split can be compared item by item (the paired statistics of prehab.report.paired).

    classification: `correct` (1/0; a row with non-finite logits counts as wrong), `predicted`
    (the argmax, -1 where non-finite) and `label`. lm: `nll` (the window's summed next-token NLL,
    float64) and `tokens` (predicted tokens per window). Both: `finite` (1 when every logit of the
    row is finite).
    """
    model.eval()
    order = torch.arange(tasks.num_rows(data))
    if "attention_mask" in data:  # similar lengths per batch: less padding to compute
        order = torch.argsort(data["attention_mask"].sum(dim=1), stable=True)
        data = tasks.take(data, order)
    finite_rows, correct, predicted, labels, nll, tokens = [], [], [], [], [], []
    for batch in tasks.batches(data, batch_size):
        logits = tasks.forward(model, task, batch)
        batch = tasks.to_device(batch, logits.device)
        finite = torch.isfinite(logits).flatten(1).all(dim=1)  # (B,)
        finite_rows.append(finite.cpu())
        if task == "lm":
            ids = batch["input_ids"]
            vocab = logits.shape[-1]
            token_nll = F.cross_entropy(
                logits[:, :-1].reshape(-1, vocab).float(), ids[:, 1:].reshape(-1), reduction="none"
            ).view(ids.shape[0], -1)  # (B, T-1) per-token NLL
            nll.append(token_nll.double().sum(dim=1).cpu())
            tokens.append(torch.full((ids.shape[0],), token_nll.shape[1]))
        else:
            guess = torch.where(finite, logits.argmax(dim=-1), NO_PREDICTION)
            correct.append(((guess == batch["labels"]) & finite).cpu())
            predicted.append(guess.cpu())
            labels.append(batch["labels"].cpu())
    inverse = torch.argsort(order)  # back to the split's own row order

    def rows(parts: list[torch.Tensor]) -> list:
        return torch.cat(parts)[inverse].tolist()

    scores = {"finite": [int(v) for v in rows(finite_rows)]}
    if task == "lm":
        scores.update(nll=rows(nll), tokens=[int(v) for v in rows(tokens)])
    else:
        scores["correct"] = [int(v) for v in rows(correct)]
        scores["predicted"] = [int(v) for v in rows(predicted)]
        scores["label"] = [int(v) for v in rows(labels)]
    return scores


def summary(scores: dict[str, list], task: str, metric: str | None = None) -> dict[str, float]:
    """The metric of per-row scores (default: the task's): accuracy, F1 or MCC, or perplexity =
    exp(total NLL / tokens) (inf when the NLL is non-finite or overflows), with the row and
    non-finite counts; a classifier's accuracy is always reported beside its own metric."""
    metrics = {"n_eval": len(scores["finite"]), "nonfinite_rows": len(scores["finite"]) - sum(scores["finite"])}
    if task == "lm":
        tokens = sum(scores["tokens"])
        mean_nll = math.fsum(scores["nll"]) / max(tokens, 1)
        metrics.update(
            perplexity=math.exp(mean_nll) if math.isfinite(mean_nll) and mean_nll < 700 else math.inf,
            nll=mean_nll,
            eval_tokens=tokens,
        )
    else:
        metrics["accuracy"] = sum(scores["correct"]) / max(len(scores["correct"]), 1)
        metric = metric or tasks.METRIC[task]
        if metric != "accuracy":
            metrics[metric] = float(classification_metric(metric, scores["predicted"], scores["label"]))
    return metrics


def task_metrics(model: nn.Module, task: str, data: dict[str, torch.Tensor], batch_size: int,
                 metric: str | None = None) -> dict[str, float]:
    """The metric over a whole split, counting (never skipping) non-finite outputs."""
    return summary(item_scores(model, task, data, batch_size), task, metric)


def evaluate_model(model: nn.Module, spec: ArchSpec, options: dict[str, Any], *, n_factorized: int,
                   model_file: Path, batch_size: int,
                   precision: str = "float32") -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, per-row scores) an evaluation records: the task metric on the test split (options
    `n_test`) and, where the architecture holds one out, on the validation split (`val_<metric>`,
    what lambda is chosen by), on each extra test set (`<label>_<metric>`, ArchSpec.extra_tests),
    the model's parameter count, its checkpoint's size and how many layers are factorised.

    `precision` bf16 casts the model's weights to bfloat16 IN PLACE (the caller is done with it):
    a 7B model's weights then take 14 GB instead of 28; the parameter count is the same."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    if precision == "bf16":
        model.to(torch.bfloat16)
    metric = spec.metric_of(options)
    splits = {"test": spec.load(options, "test", options.get("n_test"), 0)}
    if options.get("n_val"):
        splits[VAL_SPLIT] = spec.load(options, VAL_SPLIT, None, 0)
    extra = spec.extra_tests(options) if spec.extra_tests else {}
    for label, opts in extra.items():
        splits[extra_scores_key(label)] = spec.load(opts, "test", opts.get("n_test"), 0)
    scores = {name: item_scores(model, spec.task, data, batch_size) for name, data in splits.items()}
    metrics = summary(scores["test"], spec.task, metric)
    others = {VAL_SPLIT: VAL_SPLIT} if VAL_SPLIT in scores else {}  # metric prefix -> scores key
    others.update({label: extra_scores_key(label) for label in extra})
    for prefix, key in others.items():
        other = summary(scores[key], spec.task, metric)
        metrics.update({f"{prefix}_{metric}": other[metric], f"{prefix}_n_eval": other["n_eval"],
                        f"{prefix}_nonfinite_rows": other["nonfinite_rows"]})
    if extra:
        metrics["extra_tests"] = list(extra)
    metrics.update(metric=metric, eval_precision=precision, model_params=count_params(model),
                   checkpoint_bytes=Path(model_file).stat().st_size, n_factorized=n_factorized)
    return metrics, scores


def evaluation_record(model: nn.Module, spec: ArchSpec, options: dict[str, Any], *, n_factorized: int,
                      history: list, model_file: Path, batch_size: int, precision: str = "float32") -> StepRecord:
    """The `evaluate` step's record of a model in memory (`model_file`: its saved checkpoint)."""
    record = StepRecord("evaluate", {"model": str(model_file), "arch": spec.name, "arch_options": options,
                                     "batch_size": batch_size, "precision": precision})
    metrics, scores = evaluate_model(model, spec, options, n_factorized=n_factorized, model_file=model_file,
                                     batch_size=batch_size, precision=precision)
    record.metrics.update(metrics)
    record.extra["history"] = history
    record.files[SCORES_FILE] = scores
    return record


def evaluate_saved(model: nn.Module, spec: ArchSpec, options: dict[str, Any], *, n_factorized: int,
                   history: list, model_dir: Path, batch_size: int, precision: str = "float32") -> dict:
    """Evaluate a model just saved into `model_dir` into <model_dir>/eval, as `prehab evaluate
    --out <model_dir>/eval` would (saves a job's start-up and model load per model)."""
    record = evaluation_record(model, spec, options, n_factorized=n_factorized, history=history,
                               model_file=checkpoint.model_path(model_dir), batch_size=batch_size,
                               precision=precision)
    with atomic_dir(Path(model_dir) / EVAL_DIR) as out:
        return record.write(out)
