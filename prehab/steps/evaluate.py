"""`prehab evaluate`: the task metric (accuracy or perplexity) and the model's size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prehab.steps.options import COUNT, StepOptions, eval_precision_option, option, step_default

HELP = "measure top-1 accuracy or perplexity (non-finite outputs counted, never skipped) and model size"


@dataclass(kw_only=True)
class Options(StepOptions):
    model: Path = option("model to evaluate: a step's output folder or its model.pt", type=Path)
    batch_size: int | None = option("evaluation batch size", None, type=int, check=COUNT)
    precision: str = eval_precision_option()
    out: Path = option("output folder (written atomically: all or nothing)", type=Path)


def run(opts: Options) -> dict:
    # imported here: `prehab --help` and `prehab STEP --help` must not load torch
    from prehab import checkpoint
    from prehab.device import resolve_device
    from prehab.method.evaluate import evaluation_record
    from prehab.outputs import atomic_dir
    from prehab.steps.common import checkpoint_options

    path = checkpoint.model_path(opts.model)
    ckpt = checkpoint.load(path)
    options = checkpoint_options(ckpt, opts)
    ckpt.model.to(resolve_device(opts.device))
    record = evaluation_record(ckpt.model, ckpt.spec, options, n_factorized=len(ckpt.factorized),
                               history=ckpt.history, model_file=path,
                               batch_size=step_default(opts.batch_size, ckpt.spec, "eval_batch_size"),
                               precision=opts.precision)
    with atomic_dir(opts.out) as out:
        return record.write(out)
