"""What pinning the math libraries' code paths costs, and whether the pins change the numbers.

Each mode runs in a fresh process (the libraries read the variables once, at start-up), in
rounds (native, pinned, compatible, native, ...) so that a noisy machine slows every mode alike:
ms per control step of a testbed (lambda = 0, weight space: forward, backward, Adam) at its
default batch, each as a ratio to the native mode measured in the same run, and a checksum of
the trained weights (the sum of squares of the target matrices, float64) so a reader sees which
modes compute alike. Modes:
  native      ATEN_CPU_CAPABILITY and MKL_CBWR unset: each library picks this CPU's best kernels
  pinned      the CLI's pins (prehab/numerics.py): AVX2 for both
  compatible  ATEN avx2 and MKL_CBWR=COMPATIBLE, MKL's vendor-independent branch

    .venv/bin/python benchmarks/code_paths.py [--arch vit-small] [--steps 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics

from probes import TESTBED, run_probe  # benchmarks/probes.py (scripts run from benchmarks/ as sys.path[0])

MODES = {
    "native": {},
    "pinned": None,  # the CLI's own pins
    "compatible": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"},
}

PROBE = r"""
import json, os, sys
mode = json.loads(sys.argv[3])
for name in ("ATEN_CPU_CAPABILITY", "MKL_CBWR"):
    os.environ.pop(name, None)
if mode is None:
    import prehab.cli  # noqa: F401  the CLI's pins, applied as the CLI applies them (before torch)
else:
    os.environ.update(mode)
import time
from prehab.layers import get_module
from prehab.method.prehab import PrehabSettings, run_prehab
from prehab.method.schedule import LambdaSchedule
from prehab.method.surrogates import Surrogate
from prehab.numerics import code_paths
arch, steps = sys.argv[1], int(sys.argv[2])
""" + TESTBED + r"""
settings = PrehabSettings(surrogate=Surrogate("nuclear_fro"), schedule=LambdaSchedule(0.0), space="weight", steps=steps,
                          lr=3e-5, batch_size=batch, seed=0, log_every=10**9)
run_prehab(model, spec.task, train, whitening, targets, settings.__class__(**{**settings.__dict__, "steps": 1}))
start = time.perf_counter()
run_prehab(model, spec.task, train, whitening, targets, settings)
elapsed = time.perf_counter() - start
check = sum(float(get_module(model, n).weight.double().square().sum()) for n in targets)
print(json.dumps({"step_ms": elapsed / steps * 1e3, "checksum": check, **code_paths()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="vit-small")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {m: [] for m in MODES}
    seen: dict[str, dict] = {}
    for _ in range(args.rounds):
        for mode, env in MODES.items():
            result = json.loads(run_probe(PROBE, args.arch, args.steps, json.dumps(env)))
            times[mode].append(result["step_ms"])
            seen[mode] = result
    native = statistics.median(times["native"])
    print(f"{args.arch}: {args.steps} control steps per run, {args.rounds} rounds, one BLAS thread; CPU: {seen['native']['cpu']}")
    print(f"  {'mode':<11} {'ATen':<8} {'MKL_CBWR':<34} {'ms/step':>8} {'x native':>9}  checksum of the trained targets")
    for mode in MODES:
        r, ms = seen[mode], statistics.median(times[mode])
        print(f"  {mode:<11} {r['aten_cpu_capability']:<8} {r['mkl_cbwr']:<34} {ms:8.1f} {ms / native:9.2f}  {r['checksum']!r}")


if __name__ == "__main__":
    main()
