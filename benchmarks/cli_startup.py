"""Start-up of the command line: wall time of `prehab --help` and of every step's `--help`
(fresh processes, median of 5), and whether any of torch, transformers, timm or peft was
imported for it (python -X importtime). Target: `prehab --help` under 0.5 s.

    .venv/bin/python benchmarks/cli_startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "timm", "peft")
STEPS = ("pretrain", "calibrate", "prehab", "compress", "rehab", "evaluate")


def seconds(argv: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "prehab", *argv], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def heavy_imports(argv: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "prehab", *argv],
                         capture_output=True, text=True, check=True).stderr
    return sorted({line.rsplit("|", 1)[-1].strip() for line in out.splitlines()} & set(HEAVY))


def main() -> None:
    print(f"{'command':28s} {'seconds':>8s}  heavy imports")
    for argv in (["--help"], *([step, "--help"] for step in STEPS)):
        print(f"{'prehab ' + ' '.join(argv):28s} {seconds(argv):8.3f}  {', '.join(heavy_imports(argv)) or 'none'}")


if __name__ == "__main__":
    main()
