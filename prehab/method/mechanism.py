"""The mechanism readout: did the penalty lower what SVD-LLM's truncation removes?

For a target matrix W with the whitening factor L of its own calibration, A = W L has singular
values s_1 >= s_2 >= ...; truncating at the rank k = k(R) that surgery keeps loses

    tail_abs = sum_{i>k} s_i^2 = ||(W - W_k) X||_F^2 / N      (SVD-LLM, Thm 3.2)

on the calibration inputs X (N tokens): the squared output error of the compressed layer. The
readout reports it beside the scale-free view `tail_rel = tail_abs / ||A||_F^2` and the whitened
energy `||A||_F^2`, because a scale-free rank surrogate can lower `tail_rel` by growing the
largest singular values while `tail_abs`, the error that reaches the outputs, stays where it was.
How far the model moved from the dense one it started from is reported twice: in the weights
(||W - W0||_F / ||W0||_F) and in the outputs on the calibration data (||(W - W0) L||_F / ||W0 L||_F,
the same L for both, so the change is the weights' alone).

Everything is read from the eigen-decomposition surgery already has (`compress.GramSVD`), so the
readout costs one subtraction and one triangular product per matrix; no pass over data.
"""

from __future__ import annotations

import math
import statistics

import torch
import torch.nn as nn

from prehab.layers import get_module
from prehab.layout import MECH_KEYS
from prehab.method.calibrate import Whitening, whiten, whiten_lower
from prehab.method.ratio import rank_for_ratio
from prehab.method.surrogates import gram_eigenvalues


def layer_readout(singular_values: torch.Tensor, shape: tuple[int, int], ratio: float) -> dict[str, float]:
    """Tail and energy of one whitened matrix at the rank surgery keeps at `ratio`.

    Args:
        singular_values: of A = W L, descending (any dtype; summed in float64).
        shape: (out, in) of W, which fixes k(R).
    """
    s2 = singular_values.double().square()
    keep = rank_for_ratio(shape[0], shape[1], ratio)
    energy = float(s2.sum())
    tail = float(s2[keep:].sum())
    return {"rank": keep, "tail_abs": tail, "tail_rel": tail / energy if energy > 0 else math.nan, "energy": energy}


@torch.no_grad()
def movement(weight: torch.Tensor, reference: torch.Tensor, factor: torch.Tensor,
             whitened: torch.Tensor | None = None) -> dict[str, float]:
    """How far W moved from the reference W0: in the weights and in the calibration outputs (W L).

    `whitened`: W L in float64 if the caller has it (surgery does), so W0 L = W L - (W - W0) L
    costs no product of its own."""
    assert weight.shape == reference.shape, f"weight {tuple(weight.shape)} vs reference {tuple(reference.shape)}"
    delta = weight.double() - reference.double()  # (out, in)
    moved = float(torch.linalg.matrix_norm(delta))
    base = float(torch.linalg.matrix_norm(reference.double()))
    delta_out = whiten_lower(delta, factor)  # (out, in)
    reference_out = whiten_lower(reference, factor) if whitened is None else whitened - delta_out
    moved_out = float(torch.linalg.matrix_norm(delta_out))
    base_out = float(torch.linalg.matrix_norm(reference_out))
    return {"move_w": moved / base if base > 0 else math.nan,
            "move_wl": moved_out / base_out if base_out > 0 else math.nan}


def summarize(layers: dict[str, dict[str, float]]) -> dict[str, float]:
    """The per-model summary a table reads (keys `mech_*`): medians over matrices and sums.

    `tail_abs_sum` is the model's summed squared output error after truncation (the gate's
    number); `tail_rel_total` = summed tail / summed energy."""
    assert layers, "no target matrices to summarise"
    rows = list(layers.values())

    def median(key: str) -> float:
        values = [r[key] for r in rows if key in r and not math.isnan(r[key])]
        return statistics.median(values) if values else math.nan

    tail_sum = sum(r["tail_abs"] for r in rows)
    energy_sum = sum(r["energy"] for r in rows)
    summary = {
        "tail_abs_sum": tail_sum,
        "tail_abs_median": median("tail_abs"),
        "tail_rel_median": median("tail_rel"),
        "tail_rel_total": tail_sum / energy_sum if energy_sum > 0 else math.nan,
        "energy_sum": energy_sum,
        "energy_median": median("energy"),
        "move_w_median": median("move_w"),
        "move_wl_median": median("move_wl"),
        "n_matrices": len(rows),
    }
    out = {"mech_" + k: v for k, v in summary.items()}
    assert tuple(out) == MECH_KEYS, f"the readout's keys {tuple(out)} are not layout.MECH_KEYS {MECH_KEYS}"
    return out


def readout(
    shapes: dict[str, tuple[int, int]],
    singular_values: dict[str, torch.Tensor],
    ratio: float,
    moved: dict[str, dict[str, float]] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(summary `mech_*`, {layer: its readout}) of one model at one ratio.

    Args:
        shapes: {layer: (out, in)} of the target matrices W.
        singular_values: {layer: singular values of W L, descending}, from surgery's SVD.
        moved: {layer: `movement(W, W0, L)`} from the dense model it started from (None: not
            measured; ratio-free, so computed once for all ratios).
    """
    layers = {}
    for name, shape in shapes.items():
        row = layer_readout(singular_values[name], shape, ratio)
        if moved is not None:
            row.update(moved[name])
        layers[name] = row
    return summarize(layers), layers


def whitened_spectra(model: nn.Module, names: list[str], whitening: Whitening) -> dict[str, torch.Tensor]:
    """Singular values (descending, float32) of W L for every target: the figures' spectra, from
    the smaller Gram's float64 eigenvalues (3x cheaper than an SVD; accurate to ~1e-8 of the
    largest singular value, far below what a spectrum plot or a rank measure sees)."""
    out = {}
    with torch.no_grad():
        for name in names:
            W = get_module(model, name).weight
            A = whiten(W, whitening.factor_of(name))
            out[name] = gram_eigenvalues(A, ridge=0).flip(0).sqrt().float().cpu()
    return out
