"""What the estimator tests share: matrices with flat, decaying and clustered spectra, Adam-like
walks of small steps, and real whitened weights of the tiny fixtures (imported by
test_estimators.py, test_lagged.py and test_compress_svd.py)."""

from __future__ import annotations

from pathlib import Path

import torch

RANK = 48
SPECTRA = {
    "flat": torch.linspace(1.0, 0.5, RANK, dtype=torch.float64),
    "decaying": 0.9 ** torch.arange(RANK, dtype=torch.float64),
    # a distinct top (stable's gradient needs it); tail's cut (k = 11 of 48 at R = 0.6) between clusters
    "clustered": torch.cat([torch.tensor([3.0]), torch.full((10,), 1.0), torch.full((RANK - 11,), 0.2)]).double(),
}


def with_spectrum(m: int, n: int, sigma: torch.Tensor, seed: int = 0,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An (m, n) matrix with singular values `sigma` and random singular vectors (made in float64)."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, len(sigma), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, len(sigma), generator=g, dtype=torch.float64))
    return ((U * sigma) @ V.T).to(dtype)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def walk(A: torch.Tensor, steps: int, size: float, seed: int = 1):
    """A sequence of small weight changes, as Adam makes them (every entry moves by +-size)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        A = A + size * torch.sign(torch.randn(A.shape, generator=g))
        yield A


def whitened_targets(arch: str, folder: Path, count: int = 4) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(layer, W, L) of the first `count` targets of a tiny fixture pretrained for 5 steps and
    calibrated on 64 samples through the CLI (W float32, L as stored: float64)."""
    from prehab import checkpoint
    from prehab.cli import main
    from prehab.layers import find_targets, get_module
    from prehab.method.calibrate import load_whitening

    assert main(["pretrain", "--arch", arch, "--steps", "5", "--out", str(folder / "dense")]) == 0
    assert main(["calibrate", "--model", str(folder / "dense"), "--samples", "64", "--out", str(folder / "cal")]) == 0
    ckpt = checkpoint.load(folder / "dense")
    whitening = load_whitening(folder / "cal")
    return [(name, get_module(ckpt.model, name).weight.detach().clone(), whitening.factor_of(name))
            for name in find_targets(ckpt.model, ckpt.spec.targets)[:count]]
