"""A benchmark's probe run in a fresh Python process, with one BLAS thread and no hub access:
every measurement starts from the same empty process, so one probe's memory, caches or threads
never reach the next."""

from __future__ import annotations

import os
import subprocess
import sys


def run_probe(code: str, *args) -> str:
    """The last line the probe printed (its result); its stderr tail when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"probe failed ({' '.join(map(str, args))}):\n{out.stderr[-3000:]}")
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else ""
