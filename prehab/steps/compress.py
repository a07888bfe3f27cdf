"""`prehab compress`: SVD or SVD-LLM truncation at ratio R into real two-factor layers.

Several ratios in one call share the model load and one SVD per layer; each ratio still gets
its own output folder."""

from __future__ import annotations

import argparse
import copy

from prehab import checkpoint
from prehab.device import resolve_device
from prehab.compress import METHODS, check_ratio, compress_model
from prehab.errors import UsageError
from prehab.layers import find_targets
from prehab.outputs import StepRecord, atomic_dir
from prehab.steps.common import add_common, add_model, checkpoint_options, file_bytes, load_whitening, pair_outputs
from prehab.steps.evaluate import add_evaluate_flags, evaluate_saved

HELP = "truncate every target layer at compression ratio R (fraction of target parameters removed)"


def _ratio(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ratio must be a number in (0, 1), got {raw!r}") from None
    try:
        return check_ratio(value)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument("--method", choices=METHODS, default="svd-llm", help="svd: plain SVD of W; svd-llm: SVD of W L (default)")
    p.add_argument("--ratio", type=_ratio, nargs="+", required=True,
                   help="R in (0, 1): fraction of the target matrices' parameters removed; k = floor(mn(1-R)/(m+n)). "
                        "Several values: one --out each, one SVD per layer for all")
    p.add_argument("--grams", help="`prehab calibrate` output (needed by svd-llm)")
    add_evaluate_flags(p)
    add_common(p, seed=False, many="--ratio")


def run(args: argparse.Namespace) -> dict | list[dict]:
    jobs = pair_outputs(args.ratio, args.out, "--ratio")
    if args.method == "svd-llm" and not args.grams:
        raise UsageError("--method svd-llm needs --grams (a `prehab calibrate` output)")
    ckpt = checkpoint.load(args.model)
    if ckpt.factorized:
        raise UsageError(f"model {args.model} is already compressed; compress the dense model instead")
    spec = ckpt.spec
    options = checkpoint_options(ckpt, args.arch_opt)
    whitening = load_whitening(args.grams) if args.method == "svd-llm" else None
    ckpt.model.to(resolve_device(args.device))
    dense_bytes = file_bytes(checkpoint.model_path(args.model))
    svd_cache: dict = {}
    records = []
    for ratio, out_dir in jobs:
        params = {"model": str(args.model), "grams": args.grams, "arch": spec.name, "method": args.method, "ratio": ratio}
        record = StepRecord("compress", params)
        model = copy.deepcopy(ckpt.model) if len(jobs) > 1 else ckpt.model
        ranks, report = compress_model(model, find_targets(model, spec.targets), ratio, args.method, whitening, svd_cache)
        record.metrics.update(report, rank_min=min(ranks.values()), rank_max=max(ranks.values()))
        record.extra["ranks"] = ranks
        history = ckpt.history + [{"step": "compress", **params}]
        with atomic_dir(out_dir) as out:
            path = checkpoint.save(checkpoint.Checkpoint(model, spec.name, ckpt.arch_options, ckpt.arch_config, ranks, history), out)
            record.metrics.update(checkpoint_bytes_before=dense_bytes, checkpoint_bytes_after=file_bytes(path))
            records.append(record.write(out))
        if args.evaluate:
            evaluate_saved(model, spec, options, n_factorized=len(ranks), history=history, model_dir=out_dir,
                           batch_size=args.eval_batch_size)
        del model
    return records if len(records) > 1 else records[0]
