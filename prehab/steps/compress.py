"""`prehab compress`: SVD or SVD-LLM truncation at ratio R into real two-factor layers."""

from __future__ import annotations

import argparse

from prehab import checkpoint
from prehab.device import resolve_device
from prehab.compress import METHODS, check_ratio, compress_model
from prehab.errors import UsageError
from prehab.layers import find_targets
from prehab.outputs import StepRecord, atomic_dir
from prehab.steps.common import add_common, add_model, file_bytes, load_whitening

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
    p.add_argument("--ratio", type=_ratio, required=True, help="R in (0, 1): fraction of the target matrices' parameters removed; k = floor(mn(1-R)/(m+n))")
    p.add_argument("--grams", help="`prehab calibrate` output (needed by svd-llm)")
    add_common(p, seed=False)


def run(args: argparse.Namespace) -> dict:
    if args.method == "svd-llm" and not args.grams:
        raise UsageError("--method svd-llm needs --grams (a `prehab calibrate` output)")
    ckpt = checkpoint.load(args.model)
    if ckpt.factorized:
        raise UsageError(f"model {args.model} is already compressed; compress the dense model instead")
    spec = ckpt.spec
    whitening = load_whitening(args.grams) if args.method == "svd-llm" else None
    params = {"model": str(args.model), "grams": args.grams, "arch": spec.name, "method": args.method, "ratio": args.ratio}
    record = StepRecord("compress", params)
    ckpt.model.to(resolve_device(args.device))
    dense_bytes = file_bytes(checkpoint.model_path(args.model))
    targets = find_targets(ckpt.model, spec.targets)
    ranks, report = compress_model(ckpt.model, targets, args.ratio, args.method, whitening)
    record.metrics.update(report, rank_min=min(ranks.values()), rank_max=max(ranks.values()))
    record.extra["ranks"] = ranks
    with atomic_dir(args.out) as out:
        history = ckpt.history + [{"step": "compress", **params}]
        path = checkpoint.save(checkpoint.Checkpoint(ckpt.model, spec.name, ckpt.arch_options, ckpt.arch_config, ranks, history), out)
        record.metrics.update(checkpoint_bytes_before=dense_bytes, checkpoint_bytes_after=file_bytes(path))
        return record.write(out)
