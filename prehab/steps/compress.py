"""`prehab compress`: SVD or SVD-LLM truncation at ratio R into real two-factor layers.

Several ratios in one call share the model load and one SVD per layer; each ratio still gets
its own output folder."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from prehab.errors import UsageError
from prehab.layout import MECHANISM_FILE
from prehab.method.names import COMPRESSION_METHODS
from prehab.method.ratio import RATIO_RULE, valid_ratio
from prehab.steps.options import (COUNT, StepOptions, distinct_outputs, eval_precision_option, option,
                                  step_default)

HELP = "truncate every target layer at compression ratio R (fraction of target parameters removed)"


@dataclass(kw_only=True)
class Options(StepOptions):
    model: Path = option("input model: a step's output folder or its model.pt", type=Path)
    method: str = option("svd: plain SVD of W; svd-llm: SVD of W L", "svd-llm", choices=COMPRESSION_METHODS)
    ratio: list[float] = option("R in (0, 1): fraction of the target matrices' parameters removed; "
                                "k = floor(mn(1-R)/(m+n)). Several values: one --out each, one SVD per layer "
                                "for all", type=float, many=True, check=(RATIO_RULE, valid_ratio))
    grams: Path | None = option("`prehab calibrate` output (needed by svd-llm)", None, type=Path)
    reference: Path | None = option("svd-llm only: the dense model this model was fine-tuned from, for the "
                                    "mechanism readout's movement (how far W and W L moved from it); without it "
                                    "the readout has tails and energies only", None, type=Path)
    evaluate: bool = option("also evaluate every output model into <out>/eval, as `prehab evaluate --out "
                            "<out>/eval`", False, action="store_true")
    eval_batch_size: int | None = option("batch size of --evaluate", None, type=int, check=COUNT)
    eval_precision: str = eval_precision_option()
    out: list[Path] = option("output folders, one per --ratio value in the same order (each written "
                             "atomically)", type=Path, many=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        distinct_outputs(self.ratio, self.out, "--ratio")
        if self.method == "svd-llm" and not self.grams:
            raise UsageError("--method svd-llm needs --grams (a `prehab calibrate` output)")
        if self.reference is not None and self.method != "svd-llm":
            raise UsageError(f"--reference {self.reference} is read by --method svd-llm only (the mechanism "
                             f"readout needs the whitening), not by --method {self.method}")


def run(opts: Options) -> dict | list[dict]:
    # imported here: `prehab --help` and `prehab STEP --help` must not load torch
    from prehab import checkpoint
    from prehab.device import resolve_device
    from prehab.layers import find_targets
    from prehab.method.calibrate import load_whitening
    from prehab.method.compress import compress_model
    from prehab.method.evaluate import evaluate_saved
    from prehab.outputs import StepRecord, atomic_dir
    from prehab.steps.common import checkpoint_options

    ckpt = checkpoint.load(opts.model)
    if ckpt.factorized:
        raise UsageError(f"model {opts.model} is already compressed; compress the dense model instead")
    spec = ckpt.spec
    options = checkpoint_options(ckpt, opts)
    whitening = load_whitening(opts.grams) if opts.method == "svd-llm" else None
    if whitening is not None:
        whitening.check_fits(ckpt.model, find_targets(ckpt.model, spec.targets), opts.grams)
    ckpt.model.to(resolve_device(opts.device))
    dense_bytes = checkpoint.model_path(opts.model).stat().st_size
    grams = None if opts.grams is None else str(opts.grams)
    svd_cache: dict = {}
    readout = None if whitening is None else Readout(ckpt, whitening, opts.reference, svd_cache)
    records = []
    for ratio, out_dir in zip(opts.ratio, opts.out):
        params = {"model": str(opts.model), "grams": grams, "arch": spec.name, "method": opts.method, "ratio": ratio}
        record = StepRecord("compress", params)
        model = copy.deepcopy(ckpt.model) if len(opts.ratio) > 1 else ckpt.model
        ranks, report = compress_model(model, find_targets(model, spec.targets), ratio, opts.method, whitening, svd_cache)
        record.metrics.update(report, rank_min=min(ranks.values()), rank_max=max(ranks.values()))
        record.extra["ranks"] = ranks
        if readout is not None:
            summary, layers = readout.at(ratio)
            record.metrics.update(summary)
            record.files[MECHANISM_FILE] = layers
        history = ckpt.history + [{"step": "compress", **params}]
        with atomic_dir(out_dir) as out:
            path = checkpoint.save(checkpoint.Checkpoint(model, spec.name, ckpt.arch_options, ckpt.arch_config, ranks, history), out)
            record.metrics.update(checkpoint_bytes_before=dense_bytes, checkpoint_bytes_after=path.stat().st_size)
            records.append(record.write(out))
        if opts.evaluate:
            evaluate_saved(model, spec, options, n_factorized=len(ranks), history=history, model_dir=out_dir,
                           batch_size=step_default(opts.eval_batch_size, spec, "eval_batch_size"),
                           precision=opts.eval_precision)
        del model
    return records if len(records) > 1 else records[0]


class Readout:
    """The mechanism readout (prehab.method.mechanism) of the model SVD-LLM cuts, at each ratio.

    Fills `svd_cache` with surgery's SVD of every W L first (the truncations then reuse it), so
    the readout adds no decomposition; the movement from `reference` is ratio-free, done once."""

    def __init__(self, ckpt, whitening, reference: Path | None, svd_cache: dict):
        from prehab import checkpoint
        from prehab.layers import find_targets, get_module
        from prehab.method.compress import full_svd
        from prehab.method.mechanism import movement

        names = find_targets(ckpt.model, ckpt.spec.targets)
        weights = {n: get_module(ckpt.model, n).weight.detach() for n in names}
        for n in names:
            if n not in svd_cache:
                svd_cache[n] = full_svd(weights[n], whitening.factor_of(n))
        self.svd_cache = svd_cache
        self.shapes = {n: tuple(w.shape) for n, w in weights.items()}
        self.moved = None
        if reference is not None:
            dense = checkpoint.load(reference, lazy=True)  # read only: memory-mapped, not a second model
            if dense.factorized or dense.spec.name != ckpt.spec.name:
                raise UsageError(f"--reference {reference} is not a dense {ckpt.spec.name} model "
                                 f"(it is {'a compressed ' if dense.factorized else ''}{dense.spec.name})")
            self.moved = {n: movement(weights[n], get_module(dense.model, n).weight.detach(), whitening.factor_of(n),
                                      svd_cache[n].A) for n in names}

    def at(self, ratio: float) -> tuple[dict, dict]:
        from prehab.method.mechanism import readout

        return readout(self.shapes, {n: self.svd_cache[n].S for n in self.shapes}, ratio, self.moved)
