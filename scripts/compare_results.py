"""Compare two result trees (a config's `results_dir`): are the numbers the same?

    .venv/bin/python scripts/compare_results.py BEFORE AFTER [--rtol R --atol A]

Every metrics.json under runs/ (everything in it but the fields that legitimately differ
between two runs of the same code: wall times, the code version, and file paths), every
tensor of every grams.pt / factors-*.pt / spectra.pt, and every table under tables/ (byte for byte). Prints
one line per kind and each difference; exits 1 if anything differs or is missing on one side.
Used to show that a restructuring changed no result. With --rtol/--atol (another device, e.g.
scripts/gpu_check.sh), numbers are equal when |a - b| <= rtol * max(|a|, |b|) + atol, the
`device` a step ran on is not compared, and tables (rounded prints of those numbers) are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Fields that differ between runs of the same computation, excluded by name at any depth.
VOLATILE = {"wall_time_s", "code"}
PATH_FIELDS = {"model", "grams"}  # inputs named by path (absolute, so they name the tree)


def scrub(value: Any) -> Any:
    """The JSON value without VOLATILE fields, and PATH_FIELDS reduced to their file name."""
    if isinstance(value, dict):
        return {k: (Path(v).name if k in PATH_FIELDS and isinstance(v, str) else scrub(v))
                for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def tensors_equal(a: Any, b: Any, tol: tuple[float, float] | None = None) -> bool:
    """Equal tensors, numbers and containers; within tol = (rtol, atol) when given."""
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if tol is None or not a.is_floating_point():
            return bool(torch.equal(a, b))
        return bool(torch.allclose(a.double(), b.double(), rtol=tol[0], atol=tol[1], equal_nan=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k], tol) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y, tol) for x, y in zip(a, b))
    if tol is not None and isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return a == b or abs(a - b) <= tol[0] * max(abs(a), abs(b)) + tol[1]
    return a == b


def scrub_device(value: Any) -> Any:
    """Without the `device` a step ran on (another device is the point of a tolerance compare)."""
    if isinstance(value, dict):
        return {k: scrub_device(v) for k, v in value.items() if k != "device"}
    if isinstance(value, list):
        return [scrub_device(v) for v in value]
    return value


def files(root: Path, pattern: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file()}


def compare(before: Path, after: Path, tol: tuple[float, float] | None = None) -> list[str]:
    """Every difference between the two trees, one line each (empty: identical, or within tol)."""
    import torch

    def record(path: Path) -> Any:
        data = scrub(json.loads(path.read_text()))
        return scrub_device(data) if tol is not None else data

    problems: list[str] = []
    kinds = {
        "metrics.json": ("runs/**/metrics.json", lambda a, b: tensors_equal(record(a), record(b), tol)),
        "tensor files": ("runs/**/*.pt", lambda a, b: tensors_equal(torch.load(a, weights_only=True),
                                                                    torch.load(b, weights_only=True), tol)),
    }
    if tol is None:
        kinds["tables"] = ("tables/*", lambda a, b: a.read_bytes() == b.read_bytes())
    else:
        print("tables: skipped (compared through the metrics.json they print, within the tolerance)")
    for kind, (pattern, same) in kinds.items():
        left, right = files(before, pattern), files(after, pattern)
        if kind == "tensor files":  # checkpoints may be temp(); compare what both kept
            left = {p for p in left if not p.endswith("model.pt")}
            right = {p for p in right if not p.endswith("model.pt")}
        for name in sorted(left ^ right):
            problems.append(f"{kind}: only in {'before' if name in left else 'after'}: {name}")
        common = sorted(left & right)
        differing = [name for name in common if not same(before / name, after / name)]
        problems += [f"{kind}: differs: {name}" for name in differing]
        print(f"{kind}: {len(common)} compared, {len(common) - len(differing)} identical"
              f"{f', {len(left ^ right)} on one side only' if left ^ right else ''}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="a results_dir (holding runs/ and tables/)")
    parser.add_argument("after", type=Path, help="another results_dir")
    parser.add_argument("--rtol", type=float, default=None, help="relative tolerance for numbers (default: exact)")
    parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance, with --rtol")
    args = parser.parse_args(argv)
    for root in (args.before, args.after):
        if not (root / "runs").is_dir():
            print(f"compare_results: {root} has no runs/ folder; pass a config's results_dir", file=sys.stderr)
            return 2
    problems = compare(args.before, args.after, None if args.rtol is None else (args.rtol, args.atol))
    for line in problems:
        print(line)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
