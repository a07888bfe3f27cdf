"""Milliseconds per Prehab step in one process against two FSDP processes (torchrun, gloo, one
BLAS thread each), and the fraction of a step the rank penalty takes on each, in one run.

A step's cost is measured without start-up and loading: each setting runs N and 2N steps and
the difference is divided by N. The penalty's fraction compares the Prehab step with its lambda = 0
control (the same command with --lam 0, which computes no penalty): 1 - control / Prehab. On two
processes each target matrix is priced on one rank (prehab/method/sharded.py), so the penalty's
share should fall while the task's forward and backward are split by rows.

    .venv/bin/python benchmarks/fsdp_overhead.py [--arch llama-tiny] [--steps 20] [--batch-size 8]
        [--space weight] [--estimator lagged]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PREHAB = [sys.executable, "-m", "prehab"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "prehab"]


def _step(cmd: list[str], out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text())["wall_time_s"]


def per_step(launcher: list[str], args: list[str], steps: int, root: Path, name: str) -> float:
    """Seconds per step: the 2N-step run's time minus the N-step run's, over N."""
    short = _step([*launcher, *args, "--steps", str(steps)], root / f"{name}-short")
    long = _step([*launcher, *args, "--steps", str(2 * steps)], root / f"{name}-long")
    return (long - short) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="llama-tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--space", default="weight", choices=("weight", "whitened"))
    parser.add_argument("--estimator", default="lagged", choices=("exact", "fast", "lagged"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run([*PREHAB, "pretrain", "--arch", args.arch, "--steps", "0", "--out", str(root / "dense")],
                       check=True, capture_output=True)
        subprocess.run([*PREHAB, "calibrate", "--model", str(root / "dense"), "--samples", "32",
                        "--out", str(root / "grams")], check=True, capture_output=True)
        base = ["prehab", "--model", str(root / "dense"), "--grams", str(root / "grams"), "--surrogate", "nuclear",
                "--space", args.space, "--estimator", args.estimator, "--batch-size", str(args.batch_size),
                *(["--damping", "0.01"] if args.space == "whitened" else [])]
        times = {}
        for world, launcher in (("1", PREHAB), ("2", TORCHRUN)):
            for lam in ("0", "1"):
                times[world, lam] = per_step(launcher, [*base, "--lam", lam], args.steps, root, f"w{world}-l{lam}")
    print(f"{args.arch}, {args.space} space, {args.estimator} estimator, batch {args.batch_size}, "
          f"{args.steps} vs {2 * args.steps} steps; one BLAS thread per process")
    for world in ("1", "2"):
        prehab, control = times[world, "1"], times[world, "0"]
        print(f"{world} process{'es' if world == '2' else ''}: Prehab {1000 * prehab:.1f} ms/step, control "
              f"{1000 * control:.1f} ms/step, penalty {100 * (1 - control / prehab):.0f}% of the step")
    print(f"2 FSDP processes / 1 process: Prehab step {times['2', '1'] / times['1', '1']:.2f}x, "
          f"control step {times['2', '0'] / times['1', '0']:.2f}x")


if __name__ == "__main__":
    main()
