"""Why prehab runs one BLAS thread per process: time the kernels Prehab leans on with 1 and 2
threads, each in a fresh process (the thread count of MKL/OpenMP is fixed at start-up), and
print the ratios measured in this one run.

    .venv/bin/python benchmarks/threads.py
"""

import json
import os
import subprocess
import sys

PROBE = r"""
import json, time, torch
def clock(fn, reps):
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps
g = torch.Generator().manual_seed(0)
G = torch.randn(384, 384, generator=g, dtype=torch.float64); G = G @ G.T
a, b = torch.randn(1024, 1024, generator=g), torch.randn(1024, 1024, generator=g)
print(json.dumps({
    "eigvalsh_384_f64": clock(lambda: torch.linalg.eigvalsh(G), 5),
    "svdvals_384_f64": clock(lambda: torch.linalg.svdvals(G), 5),
    "matmul_1024_f32": clock(lambda: a @ b, 20),
}))
"""


def measure(threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    one, two = measure(1), measure(2)
    print(f"{'kernel':20s} {'1 thread':>12s} {'2 threads':>12s} {'2/1 ratio':>10s}")
    for key in one:
        print(f"{key:20s} {one[key] * 1e3:10.2f}ms {two[key] * 1e3:10.2f}ms {two[key] / one[key]:10.2f}")


if __name__ == "__main__":
    main()
