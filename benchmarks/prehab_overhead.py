"""Overhead of the rank penalty: wall time and peak memory of Prehab steps with the surrogate
(lambda > 0) relative to the same steps without it (lambda = 0, the control), per surrogate.
Each configuration runs in a fresh process (peak RSS is per process); ratios come from this run.

    .venv/bin/python benchmarks/prehab_overhead.py [ARCH] [STEPS]     (default: bert-tiny 20)
"""

import json
import os
import subprocess
import sys

PROBE = r"""
import json, resource, sys, time, torch
from prehab.registry import get_arch
from prehab.layers import find_targets
from prehab.method.calibrate import second_moments, whitening_from_moments
from prehab.method.prehab import LambdaSchedule, run_prehab
arch, steps, surrogate, lam = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
spec = get_arch(arch)
options = spec.resolve_options({})
torch.manual_seed(0)
model, _ = spec.build_pretrained(options)
batch = spec.defaults.get("batch_size", 32)
train = spec.load_split(options, "train", 4 * batch, 0)
targets = find_targets(model, spec.targets)
whitening = whitening_from_moments(*second_moments(model, spec.task, train, targets, batch))
start = time.perf_counter()
run_prehab(model, spec.task, train, whitening, targets, surrogate=surrogate, schedule=LambdaSchedule(lam),
           space="whitened", steps=steps, lr=1e-5, batch_size=batch, seed=0, log_every=10**9)
seconds = (time.perf_counter() - start) / steps
print(json.dumps({"step_s": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(arch: str, steps: int, surrogate: str, lam: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, arch, str(steps), surrogate, str(lam)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    arch = sys.argv[1] if len(sys.argv) > 1 else "bert-tiny"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    base = measure(arch, steps, "nuclear_fro", 0.0)
    print(f"{arch}: control step {base['step_s'] * 1e3:.1f} ms, peak RSS {base['peak_rss_mb']:.0f} MB")
    print(f"{'surrogate':14s} {'step ms':>9s} {'time ratio':>11s} {'RSS ratio':>10s}")
    for surrogate in ("nuclear", "nuclear_fro", "stable", "nuclear_rank"):
        m = measure(arch, steps, surrogate, 1.0)
        print(f"{surrogate:14s} {m['step_s'] * 1e3:9.1f} {m['step_s'] / base['step_s']:11.2f} "
              f"{m['peak_rss_mb'] / base['peak_rss_mb']:10.2f}")


if __name__ == "__main__":
    main()
