"""Why the fast penalty estimator needs fp64: the dynamic range of the whitened Gram matrices
P = (W L)^T (W L) of a testbed, and how far a float32 eigen-solve's gradient of `nuclear_fro`
lands from the exact (fp64, autograd) one, per target matrix.

    .venv/bin/python benchmarks/whitened_spectra.py [--arch vit-small] [--samples 512]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from prehab.layers import find_targets, get_module  # noqa: E402
from prehab.method.calibrate import second_moments, whiten, whitening_from_moments  # noqa: E402
from prehab.method.estimators import exact_value_and_grad  # noqa: E402
from prehab.method.surrogates import Surrogate, gram_eigenvalues, ridged_gram  # noqa: E402
from prehab.registry import get_arch  # noqa: E402


def float32_gradient(A: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """dR/dA from a float32 eigen-solve of the ridged Gram and the closed-form partials."""
    P = ridged_gram(A.float())
    d, V = torch.linalg.eigh(P)
    _, g, _ = surrogate.spectral.partials(d.double().clamp(min=1e-300), surrogate.keep(tuple(A.shape)))
    dP = V @ torch.diag(g.float()) @ V.T
    return 2 * (A.float() @ dP if A.shape[0] >= A.shape[1] else dP @ A.float())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="vit-small")
    parser.add_argument("--samples", type=int, default=512, help="calibration samples")
    args = parser.parse_args()
    spec = get_arch(args.arch)
    options = spec.resolve_options({})
    torch.manual_seed(0)
    model, _ = spec.build_pretrained(options)
    data = spec.load_split(options, "train", args.samples, 0)
    targets = find_targets(model, spec.targets)
    whitening = whitening_from_moments(*second_moments(model, spec.task, data, targets,
                                                       spec.defaults.get("eval_batch_size", 64)))
    surrogate = Surrogate("nuclear_fro")
    print(f"{args.arch}, {args.samples} calibration samples; lam: ridged Gram eigenvalues (fp64)")
    print(f"{'target':48s} {'lam_min/lam_max':>16s} {'fp32 grad rel. error':>21s}")
    for name in targets:
        A = whiten(get_module(model, name).weight.detach(), whitening.factor_of(name)).float()
        lam = gram_eigenvalues(A)
        _, exact = exact_value_and_grad(A, surrogate)
        error = float((float32_gradient(A, surrogate).double() - exact).norm() / exact.norm())
        print(f"{name:48s} {float(lam.min() / lam.max()):16.1e} {error:21.1e}")


if __name__ == "__main__":
    main()
