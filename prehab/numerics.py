"""Which code paths the math libraries take on CPU: pinned before torch loads, recorded after.

The same config and seed gave other numbers on another x86 CPU kind: torch picks its vectorised
kernels (`ATEN_CPU_CAPABILITY`) and MKL its BLAS/LAPACK branch (`MKL_CBWR`) from the processor,
and AVX-512 and AVX2 kernels sum in different orders. The CLI pins both to AVX2, which every x86
CPU of the last decade has, so two Intel machines with or without AVX-512 compute alike. MKL
documents the AVX2 branch as reproducible on Intel CPUs only (elsewhere it falls back to its
automatic branch); `MKL_CBWR=COMPATIBLE` is its vendor-independent branch, at a cost measured
by benchmarks/code_paths.py. Either variable set in the environment wins over the pin.
"""

from __future__ import annotations

import os
import platform

PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
X86 = ("x86_64", "amd64", "i386", "i686")


def pin_code_paths() -> None:
    """Set the pins (x86 only, where they mean something) unless the user set them; call before
    torch is imported, since both libraries read them once at start-up."""
    if platform.machine().lower() in X86:
        for name, value in PINS.items():
            os.environ.setdefault(name, value)


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_paths() -> dict[str, str]:
    """What a step's metrics.json records under `machine`: the CPU and the code paths in force."""
    import torch

    return {
        "cpu": cpu_model(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", "unset (MKL's automatic branch)"),
        "torch": torch.__version__,
    }
