"""Whitening: the input second moment of each target layer and its robust Cholesky factor.

C = (1/N) sum_t x_t x_t^T over calibration tokens, in float64, streamed batch by batch. Layers that
read the same input tensor (q/k/v of one attention block, gate/up of one LLaMA MLP) share ONE
matrix: the sharing is detected at run time (consecutive hook calls on the same tensor object),
so no per-architecture table is needed. C = L L^T with a damping ladder that never fails.

docs/method.md, section 2, says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.nn as nn
from tqdm import tqdm

from prehab import tasks
from prehab.errors import UsageError
from prehab.layers import get_module
from prehab.layout import FACTORS_FILE, GRAMS_FILE

JITTER_LADDER = (1e-10, 1e-8, 1e-6, 1e-4, 1e-2)  # relative to trace(C)/n
EIG_FLOOR = 1e-5  # relative to the largest eigenvalue, as the authors floor eigenvalues
# The token rule: calibrate on at least this many tokens per input of the widest target, so that
# every second moment is full rank with room to spare (fewer tokens than inputs leave directions
# the calibration never saw, where L^-1 is enormous). Below it calibrate warns and records it.
TOKENS_PER_INPUT = 4
GRAMS_FORMAT = "prehab-grams-v2"  # grams.pt: an index of per-block factor files (v1 held the factors)


@dataclass
class Whitening:
    """One factor per distinct input; `owner[layer]` names the group a layer reads its L from."""

    factors: Mapping[str, torch.Tensor]  # group leader -> L (n, n) lower-triangular (float64 or float32)
    owner: dict[str, str]  # target layer -> group leader
    n_tokens: int
    damping: dict[str, dict[str, Any]] = field(default_factory=dict)  # group leader -> what was done

    def factor_of(self, layer: str) -> torch.Tensor:
        return self.factors[self.owner[layer]]

    def check_fits(self, model: nn.Module, targets: list[str], source: Path | str) -> None:
        """Every target has a factor of its input width, else a one-line error: second moments
        from another model must never reach the algorithms (their asserts are for bugs).

        Raises:
            UsageError: naming the first target without a factor, or with one of another width.
        """
        for name in targets:
            if name not in self.owner:
                raise UsageError(f"calibration {str(source)!r} has no factor for layer {name} (it was made for "
                                 "another model)")
            width = get_module(model, name).in_features
            L = self.factor_of(name)
            if tuple(L.shape) != (width, width):
                raise UsageError(f"calibration {str(source)!r} has a {tuple(L.shape)} factor for layer {name}, which "
                                 f"reads {width} inputs (it was made for another model)")

    def damped(self, damping: float) -> "Whitening":
        """The same calibration with each factor re-made from L L^T + f * mean(diag) * I (GPTQ's
        damping, `robust_cholesky`): what Prehab's parametrisation can train through stably, while
        surgery keeps the undamped factors (docs/method.md, 4.2). f = 0 returns self."""
        if damping == 0:
            return self
        return Whitening(DampedFactors(self.factors, damping), self.owner, self.n_tokens, self.damping)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], folder: Path) -> "Whitening":
        """grams.pt's index (factors in per-block files beside it), or an older grams.pt that
        holds the factors themselves."""
        factors = payload["factors"] if "factors" in payload else FactorFiles(folder, payload["files"])
        return cls(factors, payload["owner"], payload["n_tokens"], payload["damping"])


class FactorFiles(Mapping[str, torch.Tensor]):
    """Factors stored one file per block beside grams.pt (`calibrate` writes them as each block
    is done), each file read memory-mapped on first use: a step needing one block's factors never
    holds every block's."""

    def __init__(self, folder: Path, files: dict[str, str]):
        self.folder, self.files = Path(folder), files  # group leader -> file name
        self._read: dict[str, dict[str, torch.Tensor]] = {}

    def __getitem__(self, leader: str) -> torch.Tensor:
        from prehab.checkpoint import read_torch_file

        name = self.files[leader]
        if name not in self._read:
            path = self.folder / name
            if not path.is_file():
                raise UsageError(f"calibration file {str(path)!r} does not exist (the calibration folder is incomplete)")
            self._read[name] = read_torch_file(path, "calibration file", mmap=True)
        return self._read[name][leader]

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


class DampedFactors(Mapping[str, torch.Tensor]):
    """`Whitening.damped`'s factors: each made on first use from the stored one (float64, kept in
    the stored dtype), so a step that reads one block's factors damps only those."""

    def __init__(self, base: Mapping[str, torch.Tensor], damping: float):
        self.base, self.damping = base, damping
        self._made: dict[str, torch.Tensor] = {}

    def __getitem__(self, leader: str) -> torch.Tensor:
        if leader not in self._made:
            L = self.base[leader]
            C = L.double() @ L.double().T
            self._made[leader] = robust_cholesky(C, self.damping, overwrite=True)[0].to(L.dtype)
        return self._made[leader]

    def __iter__(self) -> Iterator[str]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


def factors_file(index: int) -> str:
    """File name of the factors of the index-th calibrated block."""
    return FACTORS_FILE.format(index=index)


def whiten(W: torch.Tensor, L: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A = W L, the whitened weight (m, n) whose singular values price truncation, in `dtype` on
    W's device (float64 for spectra and surgery; the weight's dtype on the training path)."""
    assert L.shape == (W.shape[1], W.shape[1]), f"factor {tuple(L.shape)} does not fit weight {tuple(W.shape)}"
    return W.to(dtype) @ L.to(W.device, dtype)


@torch.no_grad()
def whiten_lower(W: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """`whiten(W, L)` in float64 for a lower-triangular L (a Cholesky factor), outside autograd:
    column tile j of W L is W[:, j:] L[j:, tile], since the rows of L above the tile's diagonal
    block are zeros. Half the multiply-adds of the full product (surgery's W L), and the same
    numbers up to rounding (tests/test_compress_svd.py; bit for bit with this machine's BLAS)."""
    assert L.shape == (W.shape[1], W.shape[1]), f"factor {tuple(L.shape)} does not fit weight {tuple(W.shape)}"
    W, L = W.double(), L.to(W.device, torch.float64)
    out = torch.empty(W.shape[0], L.shape[1], dtype=torch.float64, device=W.device)
    n, t = L.shape[0], GRAM_TILE
    for j in range(0, n, t):
        torch.mm(W[:, j:], L[j:, j:j + t], out=out[:, j:j + t])
    return out


def robust_cholesky(C: torch.Tensor, damping: float = 0.0,
                    overwrite: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """Lower Cholesky factor of a symmetric PSD matrix that may be singular.

    `damping` f > 0 first adds f * mean(diag C) * I, as GPTQ does (a chosen amount, the same for
    every matrix); f = 0 adds nothing unless needed. Ladder: 1) Cholesky; 2) C + eps * (tr(C)/n) I
    for eps in JITTER_LADDER; 3) eigenvalues floored at EIG_FLOOR * lambda_max; 4) (tr(C)/n) I
    when C has no energy at all. Returns (L, record): which rung succeeded, the absolute shift
    used, and `rank_deficient` (C itself does not factor: the calibration missed directions).
    `overwrite`: C may be symmetrised in place (the caller is done with it; a 7B model's FFN
    moment is 1 GB in float64, so this saves one such matrix).
    """
    n = C.shape[0]
    assert C.shape == (n, n), f"second moment must be square, got {tuple(C.shape)}"
    C = _symmetrised(C, in_place=overwrite)
    scale = float(torch.trace(C)) / n
    if not (scale > 0 and torch.isfinite(C).all()):
        return torch.eye(n, dtype=torch.float64), {"method": "identity", "reason": "no finite energy", "shift": 0.0,
                                                   "rank_deficient": True}
    L, info = torch.linalg.cholesky_ex(C)
    plain = int(info) == 0 and bool(torch.isfinite(L).all())
    if damping > 0:
        del L  # before the damped factor exists: one n x n matrix fewer
        L, info = torch.linalg.cholesky_ex(_plus_identity(C, damping * scale))
        if int(info) == 0 and torch.isfinite(L).all():
            return L, {"method": "damped", "relative": damping, "shift": damping * scale, "rank_deficient": not plain}
    elif plain:
        return L, {"method": "cholesky", "shift": 0.0, "rank_deficient": False}
    L, record = _ladder(C, scale)
    return L, {**record, "rank_deficient": not plain}


SYMMETRISE_TILE = 1024  # rows and columns per tile of the in-place symmetrisation


def _symmetrised(C: torch.Tensor, in_place: bool) -> torch.Tensor:
    """(C + C^T) / 2 in float64. In place (tile by tile, no second n x n matrix) when allowed and C
    is a contiguous float64 matrix; the same numbers either way, since floating-point addition
    commutes and each entry is (C_ij + C_ji) * 0.5."""
    if not (in_place and C.dtype == torch.float64 and C.is_contiguous()):
        S = C.double() + C.T.double()
        return S.mul_(0.5)
    t = SYMMETRISE_TILE
    for i in range(0, C.shape[0], t):
        for j in range(0, i + 1, t):
            tile = C[i:i + t, j:j + t] + C[j:j + t, i:i + t].T
            tile.mul_(0.5)
            C[i:i + t, j:j + t] = tile
            C[j:j + t, i:i + t] = tile.T
    return C


def _plus_identity(C: torch.Tensor, shift: float) -> torch.Tensor:
    """C + shift * I without an n x n identity (the same numbers: off the diagonal it adds 0)."""
    shifted = C.clone()
    shifted.diagonal().add_(shift)
    return shifted


def _ladder(C: torch.Tensor, scale: float) -> tuple[torch.Tensor, dict[str, Any]]:
    """The smallest jitter that factors C, else floored eigenvalues (robust_cholesky's rungs 2-3)."""
    for eps in JITTER_LADDER:
        L, info = torch.linalg.cholesky_ex(_plus_identity(C, eps * scale))
        if int(info) == 0 and torch.isfinite(L).all():
            return L, {"method": "jitter", "relative": eps, "shift": eps * scale}
    w, V = torch.linalg.eigh(C)
    floor = EIG_FLOOR * float(w.max())
    C_floor = (V * w.clamp(min=floor)) @ V.T
    L = torch.linalg.cholesky(_plus_identity(0.5 * (C_floor + C_floor.T), floor * 1e-6))
    return L, {"method": "eig_floor", "floor": floor, "shift": floor}


# Columns per tile of the triangular products (`add_lower_gram`, `whiten_lower`): smaller tiles
# skip more of the zero (or mirrored) triangle, too small ones starve the BLAS kernels. 96 was the
# fastest of 768 / 256 / 192 / 128 / 96 here for inputs of 384, 576 and 1,536, in float64 and
# float32 (up to 35% off 768's products; multiples of 128 were slow in float64 at 1,536).
GRAM_TILE = 96


def add_lower_gram(total: torch.Tensor, rows: torch.Tensor) -> None:
    """total += rows^T rows on and below the diagonal only, tile column by tile column: a second
    moment is symmetric, so its upper tiles are copies (`mirror_lower`), and skipping them saves
    up to half of calibration's largest cost for wide inputs (a quarter at two tiles). Rows of
    another dtype than `total` (float32 products, `--moment-dtype`) are multiplied in theirs and
    summed in total's."""
    n, t = rows.shape[1], GRAM_TILE
    for j in range(0, n, t):
        if rows.dtype == total.dtype:
            total[j:, j:j + t].addmm_(rows[:, j:].T, rows[:, j:j + t])
        else:
            total[j:, j:j + t] += rows[:, j:].T @ rows[:, j:j + t]


def mirror_lower(total: torch.Tensor) -> torch.Tensor:
    """Fill the tiles above the diagonal that `add_lower_gram` left out, in place, from their
    transposes, and the upper half of each diagonal tile from its lower half: a product's two
    halves can differ in the last bit (AVX2 kernels sum them in other orders), and the factors and
    eigen-solvers read the lower half only, so the result is exactly symmetric at no change."""
    n, t = total.shape[0], GRAM_TILE
    for j in range(0, n, t):
        block = total[j:j + t, j:j + t]
        block.copy_(block.tril() + block.tril(-1).T)
        if j:
            total[:j, j:j + t] = total[j:j + t, :j].T
    return total


class _MomentHooks:
    """Forward pre-hooks that accumulate X^T X per distinct input tensor: each batch's product in
    `product_dtype`, the sums in float64."""

    def __init__(self, model: nn.Module, targets: list[str], product_dtype: torch.dtype = torch.float64):
        self.product_dtype = product_dtype
        self.sums: dict[str, torch.Tensor] = {}
        self.owner: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.mask: torch.Tensor | None = None
        self._last: tuple[torch.Tensor | None, str | None] = (None, None)
        self._handles = [get_module(model, name).register_forward_pre_hook(self._hook(name)) for name in targets]

    def _hook(self, name: str):
        def hook(module: nn.Module, args):
            x = args[0]
            last_x, last_owner = self._last
            if x is last_x:  # same tensor object as the previous target: a shared input
                self._bind(name, last_owner)
                return
            self._bind(name, name)
            self._last = (x, name)
            mask = None if self.mask is None else self.mask.to(x.device)
            rows = x[mask] if (mask is not None and x.dim() == 3) else x.reshape(-1, x.shape[-1])
            rows = rows.detach().to(self.product_dtype)  # (tokens, in)
            assert rows.shape[-1] == module.in_features, f"input {tuple(rows.shape)} vs layer in {module.in_features}"
            if name not in self.sums:
                self.sums[name] = torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float64, device=rows.device)
                self.counts[name] = 0
            add_lower_gram(self.sums[name], rows)
            self.counts[name] += rows.shape[0]

        return hook

    def start_batch(self, mask: torch.Tensor | None) -> None:
        """Token mask of the next forward pass; sharing is only detected within one pass."""
        self.mask = mask
        self._last = (None, None)

    def _bind(self, name: str, leader: str) -> None:
        previous = self.owner.setdefault(name, leader)
        if previous != leader:
            raise RuntimeError(f"layer {name} shared its input with {previous} in one batch and {leader} in another")

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()

    def moments(self, targets: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, str], int]:
        """({leader: C}, {layer: leader}, tokens per matrix) once every batch has passed; the sums
        are divided in place (one copy per moment: the hooks are done with them).

        Raises:
            RuntimeError: a target the forward passes never reached.
        """
        missing = [t for t in targets if t not in self.owner]
        if missing:
            raise RuntimeError(f"calibration never reached target layers {missing[:3]}")
        moments = {leader: mirror_lower(s).div_(self.counts[leader]).cpu() for leader, s in self.sums.items()}
        return moments, self.owner, min(self.counts.values())


@torch.no_grad()
def second_moments(
    model: nn.Module, task: str, data: dict[str, torch.Tensor], targets: list[str], batch_size: int,
    product_dtype: torch.dtype = torch.float64,
) -> tuple[dict[str, torch.Tensor], dict[str, str], int]:
    """Stream `data` through the model; return ({leader: C}, {layer: leader}, tokens per matrix)."""
    model.eval()
    hooks = _MomentHooks(model, targets, product_dtype)
    try:
        n_batches = -(-tasks.num_rows(data) // batch_size)
        for batch in tqdm(tasks.batches(data, batch_size), total=n_batches, desc="calibrate", leave=False):
            hooks.start_batch(tasks.token_mask(task, batch))
            tasks.forward(model, task, batch)
    finally:
        hooks.close()
    return hooks.moments(targets)


def whitening_from_moments(moments: dict[str, torch.Tensor], owner: dict[str, str], n_tokens: int,
                           damping: float = 0.0, consume: bool = False,
                           dtype: torch.dtype = torch.float64) -> Whitening:
    """Factor every second moment (robust_cholesky with `damping`), factors kept in `dtype`; a
    factor calibrated on fewer tokens than it has inputs is rank-deficient whatever the numbers
    say. `consume`: each moment is taken out of `moments` and overwritten while it is factored
    (the caller is done with them), so at most one moment and its factor are in flight beyond the
    factors already made."""
    factors, records = {}, {}
    for leader in list(moments):
        C = moments.pop(leader) if consume else moments[leader]
        n = C.shape[0]
        L, records[leader] = robust_cholesky(C, damping, overwrite=consume)
        del C
        factors[leader] = L.to(dtype)
        del L
        records[leader]["rank_deficient"] = records[leader]["rank_deficient"] or n_tokens < n
    return Whitening(factors=factors, owner=owner, n_tokens=n_tokens, damping=records)


def load_whitening(path: Path) -> Whitening:
    """Calibration output (folder or grams.pt) -> Whitening, with a one-line error when unusable."""
    from prehab.checkpoint import read_torch_file

    path = Path(path)
    if path.is_dir():
        path = path / GRAMS_FILE
    if not path.is_file():
        raise UsageError(f"calibration file {str(path)!r} does not exist; pass a `prehab calibrate` output folder")
    payload = read_torch_file(path, "calibration file")
    try:
        return Whitening.from_payload(payload, path.parent)
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"calibration file {str(path)!r} is corrupt ({type(err).__name__})") from None
