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


# Probe code shared by the Prehab benchmarks: with `arch` set, builds the testbed's pretrained
# model, a training split of 8 batches at its default batch size, its targets and a whitening
# calibrated on that split (`spec`, `options`, `model`, `batch`, `train`, `targets`, `whitening`).
TESTBED = r"""
import torch
from prehab.registry import get_arch
from prehab.layers import find_targets
from prehab.method.calibrate import second_moments, whitening_from_moments
spec = get_arch(arch)
options = spec.resolve_options({})
torch.manual_seed(0)
model, _ = spec.build_pretrained(options)
batch = spec.defaults.get("batch_size", 32)
train = spec.load_split(options, "train", 8 * batch, 0)
targets = find_targets(model, spec.targets)
whitening = whitening_from_moments(*second_moments(model, spec.task, train, targets, spec.defaults.get("eval_batch_size", 64)))
"""
