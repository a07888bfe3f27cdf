"""The CLI pins the math libraries' code paths before torch loads, the user's setting wins, and
every step records the CPU and the paths in force."""

import json
import os
import platform
import subprocess
import sys

import pytest

from prehab.numerics import PINS, X86

x86_only = pytest.mark.skipif(platform.machine().lower() not in X86, reason="the pins are for x86 CPUs")
PROBE = "import prehab.cli, torch, json, os; print(json.dumps([torch.backends.cpu.get_cpu_capability(), os.environ.get('MKL_CBWR')]))"


def _probe(**env) -> list:
    clean = {k: v for k, v in os.environ.items() if k not in PINS}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@x86_only
def test_cli_pins_avx2_before_torch_loads():
    assert _probe() == ["AVX2", "AVX2"]


@x86_only
def test_users_setting_wins_over_the_pin():
    assert _probe(ATEN_CPU_CAPABILITY="default", MKL_CBWR="COMPATIBLE") == ["DEFAULT", "COMPATIBLE"]


def test_steps_record_cpu_and_code_paths(tiny_chain):
    record = json.loads((tiny_chain["grams"] / "metrics.json").read_text())
    machine = record["machine"]
    assert machine["cpu"] and machine["aten_cpu_capability"] and machine["mkl_cbwr"] and machine["torch"]
