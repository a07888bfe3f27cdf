"""Start one training step in N processes on this node, one per GPU (torch's elastic launcher,
torchrun's, run in this process), and report a failed rank in one line.

    python -m prehab.launch --processes N STEP [ARGS...]     # e.g. prehab ... --out DIR
    srun --nodes K --ntasks-per-node 1 python -m prehab.launch --nodes K --processes N STEP ...

With --nodes K > 1 one launcher runs on each node (srun starts them) and they meet at a c10d
rendezvous on the job's first node (SLURM_JOB_NODELIST, port RDZV_PORT; --rdzv-endpoint
overrides): K x N ranks, whichever holds rank 0 writes the output (on the shared file system).

torchrun prints a page of its own when a rank dies; this prints `prehab STEP: rank R of N
killed by SIGKILL (rank 0: exit code 75); ...` instead (a rank's own error, if it wrote one, is
in the log above it) and exits 1. Nothing is written: rank 0 writes the output folder only at the end, and a rank stopped by
the launcher cleans up its staging folder (prehab/cli.py turns SIGTERM into an exit).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys

RDZV_PORT = 29400  # torchrun's default c10d port


def _how(failure) -> str:
    if failure.exitcode < 0:
        try:
            return f"killed by {signal.Signals(-failure.exitcode).name}"
        except ValueError:
            return f"killed by signal {-failure.exitcode}"
    return f"exit code {failure.exitcode}"


def _stopped(exitcode: int) -> bool:
    """A rank that ended because another failed: stopped by the launcher (SIGTERM, or the exit
    the CLI turns it into) or by a collective that lost its peer (prehab.cli.LOST_RANK)."""
    from prehab.cli import LOST_RANK

    return exitcode in (-signal.SIGTERM, 128 + signal.SIGTERM, LOST_RANK)


def _failure(err, processes: int) -> str:
    """The ranks of a ChildFailedError, the cause first (a rank that was not stopped because
    another failed, one killed by a signal before one that exited), as `rank R of N killed by S
    (rank Q: exit code C)`."""
    failures = sorted(err.failures.items(), key=lambda item: (_stopped(item[1].exitcode), item[1].exitcode >= 0,
                                                              item[0]))
    (rank, first), rest = failures[0], failures[1:]
    others = f" ({', '.join(f'rank {r}: {_how(f)}' for r, f in rest)})" if rest else ""
    return f"rank {rank} of {processes} {'failed, ' if first.exitcode >= 0 else ''}{_how(first)}{others}"


def _first_node() -> str:
    """The first host of this SLURM job (the rendezvous host), from SLURM_JOB_NODELIST."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise SystemExit("python -m prehab.launch: --nodes above 1 outside a SLURM job needs --rdzv-endpoint HOST:PORT")
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return hosts.stdout.split()[0]


def torchrun_args(nodes: int, processes: int, endpoint: str | None) -> list[str]:
    """torchrun's arguments before `-m prehab`: one node standalone, several through a rendezvous."""
    if nodes == 1:
        return ["--standalone", "--nproc-per-node", str(processes)]
    return ["--nnodes", str(nodes), "--nproc-per-node", str(processes), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", endpoint or f"{_first_node()}:{RDZV_PORT}",
            "--rdzv-id", os.environ.get("SLURM_JOB_ID", "prehab")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prehab.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, required=True, help="processes on this node (one per GPU)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes of the job, one launcher on each (default: 1)")
    parser.add_argument("--rdzv-endpoint", default=None,
                        help=f"HOST:PORT where the nodes' launchers meet (default: the job's first node, port {RDZV_PORT})")
    parser.add_argument("step", help="the prehab step (pretrain, prehab or rehab)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the step's own arguments")
    opts = parser.parse_args(argv)
    for name in ("processes", "nodes"):
        if getattr(opts, name) < 1:
            parser.error(f"--{name} {getattr(opts, name)}; allowed: a whole number >= 1")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its page, replaced by one line
    launch = parse_args([*torchrun_args(opts.nodes, opts.processes, opts.rdzv_endpoint), "-m", "prehab", opts.step,
                         *opts.args])
    try:
        run(launch)
    except ChildFailedError as err:
        print(f"prehab {opts.step}: {_failure(err, opts.nodes * opts.processes)}; the other ranks were stopped and nothing "
              "was written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
