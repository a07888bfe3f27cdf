"""Compare two result trees (a config's `results_dir`): are the numbers the same?

    .venv/bin/python scripts/compare_results.py BEFORE AFTER

Every metrics.json under runs/ (everything in it but the fields that legitimately differ
between two runs of the same code: wall times, the code version, and file paths), every
tensor of every grams.pt / spectra.pt, and every table under tables/ (byte for byte). Prints
one line per kind and each difference; exits 1 if anything differs or is missing on one side.
Used to show that a restructuring changed no result.
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


def tensors_equal(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def files(root: Path, pattern: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file()}


def compare(before: Path, after: Path) -> list[str]:
    """Every difference between the two trees, one line each (empty: identical)."""
    import torch

    problems: list[str] = []
    kinds = {
        "metrics.json": ("runs/**/metrics.json",
                         lambda a, b: scrub(json.loads(a.read_text())) == scrub(json.loads(b.read_text()))),
        "tensor files": ("runs/**/*.pt",
                         lambda a, b: tensors_equal(torch.load(a, weights_only=True), torch.load(b, weights_only=True))),
        "tables": ("tables/*", lambda a, b: a.read_bytes() == b.read_bytes()),
    }
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
    args = parser.parse_args(argv)
    for root in (args.before, args.after):
        if not (root / "runs").is_dir():
            print(f"compare_results: {root} has no runs/ folder; pass a config's results_dir", file=sys.stderr)
            return 2
    problems = compare(args.before, args.after)
    for line in problems:
        print(line)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
