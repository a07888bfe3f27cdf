"""`prehab`: one subcommand per pipeline step. Bad input exits 2 with one line naming the value."""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per process unless the user says otherwise: on the 2-core machines this
# suite targets, 2 threads made a 1024^2 matmul 1.6x slower and a 384^2 eigvalsh ~100x slower
# (benchmarks/threads.py); parallelism comes from running jobs side by side instead.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from prehab.numerics import pin_code_paths  # noqa: E402

pin_code_paths()  # before torch loads: the same kernels on every x86 CPU kind (numerics.py)

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from prehab.errors import NumericalError, UsageError  # noqa: E402
from prehab.steps import STEPS  # noqa: E402
from prehab.steps.options import add_options, from_args  # noqa: E402

# The steps that train across processes started by torchrun (prehab/distributed.py).
ACROSS_PROCESSES = ("pretrain", "prehab", "rehab")
LOST_RANK = 75  # exit status of a rank that stopped because another one went (prehab/launch.py reads it)

DESCRIPTION = """Low-Rank Prehab: prepare a network for SVD-LLM compression.

Pipeline: pretrain -> calibrate -> prehab -> compress -> rehab -> evaluate.
Each step reads files, writes one output folder atomically (model.pt and/or grams.pt, plus
metrics.json with what it measured, its parameters, the code version and wall time)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prehab", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")
    for name in STEPS:
        module = importlib.import_module(f"prehab.steps.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__.strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_options(p, module.Options)
        p.set_defaults(func=_step(module))
    archs = sub.add_parser("archs", help="list architectures with their options, defaults and calibration sources")
    archs.add_argument("--json", action="store_true", help="machine-readable output")
    archs.set_defaults(func=_list_archs)
    from prehab.report.commands import register as register_report
    register_report(sub)
    return parser


def _step(module):
    """The step's `run`, called with its Options built (and checked) from the parsed flags, once
    its output folders are known not to overwrite anything else (outputs.check_out)."""
    def run(args):
        from prehab.outputs import check_out

        opts = from_args(module.Options, args)
        inputs = []
        for name in ("model", "grams"):
            value = getattr(opts, name, None)
            inputs += value if isinstance(value, list) else [] if value is None else [value]
        for out in opts.out if isinstance(opts.out, list) else [opts.out]:
            check_out(out, args.command, inputs)
        return module.run(opts)

    return run


def _list_archs(args: argparse.Namespace) -> dict:
    from prehab.registry import arch_names, get_arch

    table = {}
    for name in arch_names():
        spec = get_arch(name)
        table[name] = {"family": spec.family, "task": spec.task, "metric": spec.metric_of(spec.options),
                       "options": spec.options, "defaults": spec.defaults, "calib_sources": spec.calib_sources,
                       "note": spec.note}
    if args.json:
        print(json.dumps(table, indent=2, sort_keys=True, default=str))
    else:
        width = max(map(len, table))
        for name, info in table.items():
            print(f"{name:{width}s} {info['family']:6s} {info['task']:10s} {info['metric']:10s} "
                  f"options: {info['options']}")
            if info["note"]:
                print(f"{'':{width}s} note: {info['note']}")
    return table


def _across_processes() -> bool:
    """Whether torchrun started this process as one of several (WORLD_SIZE above 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _lost_a_rank(err: RuntimeError) -> bool:
    """A collective that failed because another process of a multi-process run went away."""
    if not _across_processes():
        return False
    import torch.distributed as dist

    return isinstance(err, dist.DistError) or "closed by peer" in str(err) or "Connection reset" in str(err)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("PREHAB_LOGLEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    try:
        if _across_processes():
            if args.command not in ACROSS_PROCESSES:
                raise UsageError(f"runs in one process; under torchrun (WORLD_SIZE {os.environ['WORLD_SIZE']}) only "
                                 f"{', '.join(ACROSS_PROCESSES)} run{'s' if len(ACROSS_PROCESSES) == 1 else ''}")
            # the launcher stops the other ranks with SIGTERM when one fails: exit through the
            # staging folder's cleanup instead of dying where we stand
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        record = args.func(args)
    except UsageError as err:
        print(f"prehab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except NumericalError as err:  # nothing was written: outputs are staged until the end
        print(f"prehab {args.command}: diverged: {err}", file=sys.stderr)
        return 3
    except RuntimeError as err:
        if not _lost_a_rank(err):
            raise
        print(f"prehab {args.command}: rank {os.environ.get('RANK')}: another rank stopped, so this one did "
              f"({str(err).splitlines()[0][:200]})", file=sys.stderr)
        return LOST_RANK
    finally:
        if _across_processes():  # done: a late SIGTERM may end the process as usual
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if "torch.distributed" in sys.modules:  # only a step that trained across processes joined a group
            from prehab.distributed import leave

            leave()
    if args.command in STEPS and record is not None:  # one line per output folder (None: not rank 0)
        records = record if isinstance(record, list) else [record]
        outs = args.out if isinstance(args.out, list) else [args.out]
        for out, one in zip(outs, records):
            summary = {k: v for k, v in one["metrics"].items() if not isinstance(v, (dict, list))}
            print(json.dumps({"step": args.command, "out": str(out), "wall_time_s": one["wall_time_s"], **summary},
                             default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
