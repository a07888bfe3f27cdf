"""What the rank penalty costs per Prehab step, by estimator, on the embedded testbeds.

For each testbed at its default batch size (`prehab archs`), in one run of this script, each
configuration in a fresh process (one BLAS thread, as the workflow runs): ms per step of the
control (lambda = 0), of the exact penalty, the fast penalty and the lagged penalty (refreshed
every K steps in rotation), with the penalty on EVERY step, and of exact and fast staggered over
k steps (a rotating 1/k of the matrices per step), each as a ratio to the control step. Target:
<= 1.3x the control step with the penalty on every step. ms per step are those after the first,
as (time of a 1 + N step run - time of a 1-step run) / N: the first step is a cold start for
every estimator (each matrix's penalty computed exactly; the gradient-norm ratio is measured
there too), paid once per run; its time, set-up included, is printed beside. The learning rate
is the one the study runs (`prehab_lr` of the architecture in config/config.yaml extended by
--configfile, settings.py; else the architecture's default): the lagged estimator's refreshes
per step grow with it (benchmarks/lagged_refreshes.py), the other rows do not care.

    .venv/bin/python benchmarks/prehab_overhead.py [--archs A ...] [--steps N] [--stagger K] [--refresh K]
        [--rows control exact fast lagged staggered] [--configfile config/config.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from probes import TESTBED, run_probe  # benchmarks/probes.py (scripts run from benchmarks/ as sys.path[0])
from settings import arch_settings  # benchmarks/settings.py

from prehab.method.names import DEFAULT_REFRESH

PROBE = r"""
import copy, dataclasses, json, sys, time, torch
from prehab.method.prehab import PrehabSettings, run_prehab
from prehab.method.schedule import LambdaSchedule
from prehab.method.surrogates import Surrogate
arch, steps, lam, estimator, every, stagger, refresh, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6] == "1", int(sys.argv[7]), float(sys.argv[8])
""" + TESTBED + r"""
settings = PrehabSettings(surrogate=Surrogate("nuclear_fro"), schedule=LambdaSchedule(lam), space="weight", steps=1,
                          lr=lr, batch_size=batch, seed=0, log_every=10**9, penalty_every=every, stagger=stagger,
                          estimator=estimator, refresh_every=refresh)
def timed(n):
    start = time.perf_counter()
    run_prehab(copy.deepcopy(model), spec.task, train, whitening, targets, dataclasses.replace(settings, steps=n))
    return time.perf_counter() - start
timed(2)  # warm-up: allocator, threads
first = timed(1)  # set-up and the first step, which computes every matrix's penalty exactly (a cold start)
total = timed(1 + steps)
print(json.dumps({"step_ms": (total - first) / steps * 1e3, "first_ms": first * 1e3, "targets": len(targets), "batch": batch}))
"""

REPO = Path(__file__).resolve().parents[1]
ROWS = ("control", "exact", "fast", "lagged", "staggered")


def run(code: str, *args) -> dict:
    return json.loads(run_probe(code, *args))


def study_lr(arch: str, configfile: Path) -> float:
    """The Prehab learning rate the study runs `arch` at: the config's, else the architecture's."""
    lr = arch_settings(configfile, arch).get("prehab_lr")
    if lr is not None:
        return float(lr)
    from prehab.registry import get_arch

    return float(get_arch(arch).defaults["prehab_lr"])


def overhead(arch: str, steps: int, stagger_k: int, refresh: int, rows: list[str], lr: float) -> None:
    def probe(estimator: str, lam: float = 1.0, every: int = 1, stagger: int = 0) -> dict:
        return run(PROBE, arch, steps, lam, estimator, every, stagger, refresh, lr)

    control = probe("exact", lam=0.0)
    table = [("control (lambda 0)", control)]
    table += [("exact, every step", probe("exact"))] if "exact" in rows else []
    table += [("fast, every step", probe("fast"))] if "fast" in rows else []
    table += [(f"lagged {refresh}, every step", probe("lagged"))] if "lagged" in rows else []
    if "staggered" in rows:
        table += [(f"exact, staggered over {stagger_k}", probe("exact", every=stagger_k, stagger=1)),
                  (f"fast, staggered over {stagger_k}", probe("fast", every=stagger_k, stagger=1))]
    print(f"\n{arch}: {control['targets']} target matrices, batch {control['batch']}, lr {lr:g}, {steps} timed steps")
    print(f"  {'configuration':28s} {'ms/step':>9s} {'x control':>10s} {'first step, ms':>15s}")
    for name, m in table:
        print(f"  {name:28s} {m['step_ms']:9.1f} {m['step_ms'] / control['step_ms']:10.2f} {m['first_ms']:15.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["vit-small", "bert-small", "llama-small"])
    parser.add_argument("--steps", type=int, default=2 * DEFAULT_REFRESH + 1,
                        help="timed steps per configuration (two lags or more: the lagged rows then include the "
                             "drift guard's extra refreshes)")
    parser.add_argument("--stagger", type=int, default=4, help="k of the staggered configuration")
    parser.add_argument("--refresh", type=int, default=DEFAULT_REFRESH, help="K of the lagged estimator (--refresh-every)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS),
                        help="configurations to time (the control always runs: the ratios need it)")
    parser.add_argument("--configfile", type=Path, default=REPO / "config" / "config.yaml",
                        help="the study whose Prehab learning rate each architecture runs at")
    args = parser.parse_args()
    print(f"one BLAS thread per process; CPU: {os.cpu_count()} cores")
    for arch in args.archs:
        overhead(arch, args.steps, args.stagger, args.refresh, args.rows, study_lr(arch, args.configfile))


if __name__ == "__main__":
    main()
