"""Check the GPU path on the tiny fixtures: one line per check, exit 0 when every check holds.

On llama-tiny (random weights, the embedded text; nothing downloaded), each step of the chain
pretrain -> calibrate -> prehab -> compress -> rehab runs on the CPU and on the GPU:

- GPU vs CPU: every tensor of each step's model within RTOL of the CPU's (relative Frobenius
  norm; float32 sums reorder on a GPU and Adam carries the rounding on);
- bf16 vs float32 on the GPU: Prehab's task loss within 5% at every logged step;
- the launcher on one GPU (`python -m prehab.launch --processes 1`: world size 1, nothing
  sharded) gives the plain run's weights within 1e-5 (CUDA's atomic adds reorder sums);
- wall time per training step: CPU, GPU float32, GPU bf16.

With two GPUs or more, a second part: Prehab (weight space exact, whitened space lagged) and
rehab through the launcher on 2 GPUs (FSDP2, NCCL) against one GPU within 1e-4 (the CPU tests'
tolerance for FSDP over two processes), and bf16 on 2 GPUs tracking one float32 GPU within 5%.

    python scripts/gpu_check.py [--out results/gpu-check] [--rtol 2e-2]

`--device cpu` runs every part with the CPU standing in for the GPU (gloo for the two
processes): the script's own test, not a check of anything a GPU does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

BF16_LOSS = 0.05  # relative task-loss gap of bf16 against float32 at any logged step
FSDP_RTOL = 1e-4  # relative Frobenius gap of 2 processes against 1 (tests/test_distributed.py)
LAUNCH_RTOL = 1e-5  # the launcher's one process against the plain run


class Checks:
    """Runs the steps and prints one line per check."""

    def __init__(self, out: Path):
        self.out, self.failed = out, 0

    def step(self, name: str, *argv, device: str = "cpu", processes: int = 0) -> Path:
        """One `prehab` step into out/name (CUDA hidden for the CPU side); its folder."""
        target = self.out / name
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        launch = ["-m", "prehab.launch", "--processes", str(processes)] if processes else ["-m", "prehab"]
        command = [sys.executable, *launch, *map(str, argv), "--device", device, "--out", str(target)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"gpu_check: {' '.join(command[1:])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        return target

    def report(self, name: str, ok: bool, detail: str) -> None:
        self.failed += not ok
        print(f"gpu_check: {name}: {'ok' if ok else 'FAIL'} ({detail})", flush=True)

    def same_weights(self, name: str, a: Path, b: Path, rtol: float) -> None:
        wa, wb = _weights(a), _weights(b)
        gap = max(_gap(wa[k], wb[k]) for k in wa if wa[k].is_floating_point())
        self.report(name, wa.keys() == wb.keys() and gap <= rtol, f"largest relative gap {gap:.2e}, tolerance {rtol:g}")

    def tracks(self, name: str, a: Path, b: Path) -> None:
        la, lb = _losses(a), _losses(b)
        gap = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
        self.report(name, len(la) == len(lb) and gap <= BF16_LOSS,
                    f"largest task-loss gap {gap:.1e} over {len(la)} logged steps, tolerance {BF16_LOSS:g}")


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v
            for k, v in torch.load(folder / "model.pt", map_location="cpu", weights_only=True)["state_dict"].items()}


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / (a.norm() if float(a.norm()) else 1.0))


def _record(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def _losses(folder: Path) -> list[float]:
    return [row["task_loss"] for row in _record(folder)["curve"] if row.get("task_loss") is not None]


def _ms_per_step(folder: Path, steps: int) -> float:
    return 1000 * _record(folder)["wall_time_s"] / steps


def one_gpu(c: Checks, rtol: float, device: str) -> dict[str, dict[str, Path]]:
    pre = ["pretrain", "--arch", "llama-tiny", "--steps", 20, "--batch-size", 8]
    prehab = ["--surrogate", "nuclear", "--lam", 1, "--lam-scale", "grad", "--space", "weight", "--estimator", "exact",
              "--steps", 10, "--batch-size", 8, "--log-every", 2]
    runs = {}
    for side, on in (("cpu", "cpu"), ("gpu", device)):
        dense = c.step(f"{side}/dense", *pre, device=on)
        grams = c.step(f"{side}/grams", "calibrate", "--model", dense, "--samples", 32, device=on)
        tuned = c.step(f"{side}/prehab", "prehab", "--model", dense, "--grams", grams, *prehab, device=on)
        cut = c.step(f"{side}/cut", "compress", "--model", tuned, "--grams", grams, "--method", "svd-llm",
                     "--ratio", 0.5, device=on)
        lora = c.step(f"{side}/rehab", "rehab", "--model", cut, "--steps", 5, "--batch-size", 8, "--dropout", 0,
                      device=on)
        runs[side] = dict(dense=dense, grams=grams, prehab=tuned, cut=cut, rehab=lora)
    for step in ("dense", "prehab", "cut", "rehab"):
        c.same_weights(f"GPU vs CPU, {step}", runs["cpu"][step], runs["gpu"][step], rtol)
    gpu = runs["gpu"]
    common = ["prehab", "--model", gpu["dense"], "--grams", gpu["grams"], *prehab]
    bf16 = c.step("gpu/prehab-bf16", *common, "--precision", "bf16", device=device)
    c.tracks("bf16 vs float32 on the GPU, Prehab", gpu["prehab"], bf16)
    launched = c.step("gpu/prehab-launch1", *common, device=device, processes=1)
    # not bit for bit: some CUDA backward kernels (embedding's) add atomically, in any order
    c.same_weights("launcher with 1 process on the GPU vs the plain run", gpu["prehab"], launched, LAUNCH_RTOL)
    dense_bf16 = c.step("gpu/dense-bf16", *pre, "--precision", "bf16", device=device)
    cpu, f32, b16 = (_ms_per_step(p, 20) for p in (runs["cpu"]["dense"], gpu["dense"], dense_bf16))
    c.report("wall time per pretrain step", True, f"CPU {cpu:.1f} ms, GPU float32 {f32:.1f} ms, GPU bf16 {b16:.1f} ms; "
             f"CPU / GPU {cpu / f32:.1f}x (the tiny model measures the step's overheads, not the GPU's speed)")
    return runs


def two_gpus(c: Checks, runs: dict[str, dict[str, Path]], device: str) -> None:
    gpu = runs["gpu"]
    for space, extra in (("weight", ["--estimator", "exact", "--surrogate", "nuclear"]),
                         ("whitened", ["--estimator", "lagged", "--surrogate", "tail_abs", "--tail-ratio", 0.5,
                                       "--damping", 0.01])):
        common = ["prehab", "--model", gpu["dense"], "--grams", gpu["grams"], "--lam", 1, "--lam-scale", "grad",
                  "--space", space, *extra, "--steps", 10, "--batch-size", 8]
        one = c.step(f"fsdp/prehab-{space}-1", *common, device=device)
        two = c.step(f"fsdp/prehab-{space}-2", *common, device=device, processes=2)
        c.same_weights(f"Prehab ({space} space) on 2 GPUs vs 1", one, two, FSDP_RTOL)
    common = ["rehab", "--model", gpu["cut"], "--steps", 5, "--batch-size", 8, "--dropout", 0]
    c.same_weights("rehab on 2 GPUs vs 1", c.step("fsdp/rehab-1", *common, device=device),
                   c.step("fsdp/rehab-2", *common, device=device, processes=2), FSDP_RTOL)
    pre = ["pretrain", "--arch", "llama-tiny", "--steps", 20, "--batch-size", 8]
    c.tracks("bf16 on 2 GPUs vs float32 on 1, pretrain", gpu["dense"],
             c.step("fsdp/dense-bf16-2", *pre, "--precision", "bf16", device=device, processes=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu-check"))
    parser.add_argument("--rtol", type=float, default=2e-2, help="GPU against CPU, relative Frobenius per tensor")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: the CPU stands in for the GPU (the script's own test)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA GPU here (torch.cuda.is_available() is False); nothing to check")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    gpus = torch.cuda.device_count() if args.device == "cuda" else 2
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU standing in for a GPU"
    print(f"gpu_check: {gpus} x {name}, torch {torch.__version__}, {sys.executable}", flush=True)
    start = time.perf_counter()
    checks = Checks(args.out)
    runs = one_gpu(checks, args.rtol, args.device)
    if gpus >= 2:
        two_gpus(checks, runs, args.device)
    else:
        print("gpu_check: one GPU: the 2-GPU part (FSDP across GPUs) is skipped", flush=True)
    verdict = "every check holds" if not checks.failed else f"{checks.failed} check(s) failed"
    print(f"gpu_check: {verdict} ({time.perf_counter() - start:.0f} s)")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
