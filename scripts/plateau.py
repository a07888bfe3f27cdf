"""Where a fine-tune plateaus: the validation curves that `prehab pretrain --val-every` records
(of the phase that trains every parameter, after a probe where there is one), one column per seed, their mean, and the first scored step after which the mean stays
within TOLERANCE points of its mean over the last WINDOW of the run (the plateau's level).

    python scripts/plateau.py RUN [RUN ...]        # pretrain output folders (metrics.json)

Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TOLERANCE = 1.5  # points: one binomial standard error of one seed's 500 validation items at 88%
WINDOW = 1 / 3  # the last third of the scored steps gives the plateau's level


def curves(runs: list[Path]) -> tuple[str, dict[int, list[float]]]:
    """(metric key, {full-phase step: [value per run]}) over the steps every run scored."""
    per_run = []
    key = None
    for run in runs:
        record = json.loads((run / "metrics.json").read_text())
        rows = [r for r in record["curve"] if any(k.startswith("val_") for k in r)]
        if any(r.get("phase") == "full" for r in rows):  # a probe, then every parameter: the second phase
            first = record["params"]["steps"]
            rows = [{**r, "step": r["step"] - first} for r in rows if r.get("phase") == "full"]
        if not rows:
            raise SystemExit(f"{run}: no validation curve (pretrain --val-every)")
        key = next(k for k in rows[0] if k.startswith("val_"))
        per_run.append({int(r["step"]): 100 * r[key] for r in rows})
    steps = sorted(set.intersection(*(set(c) for c in per_run)))
    return key, {s: [c[s] for c in per_run] for s in steps}


def plateau_step(means: dict[int, float]) -> tuple[int, float]:
    """(first step from which every mean stays within TOLERANCE of the level, the level)."""
    steps = sorted(means)
    tail = steps[int(len(steps) * (1 - WINDOW)):]
    level = sum(means[s] for s in tail) / len(tail)
    start = steps[-1]
    for s in reversed(steps):
        if abs(means[s] - level) > TOLERANCE:
            break
        start = s
    return start, level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="pretrain output folders")
    args = parser.parse_args()
    key, table = curves(args.runs)
    means = {s: sum(v) / len(v) for s, v in table.items()}
    print(f"{key} (points) after N steps that train every parameter; runs: {', '.join(str(r) for r in args.runs)}")
    print(f"{'N':>6}  " + "  ".join(f"{'run ' + str(i):>7}" for i in range(len(args.runs))) + "     mean")
    for s, values in table.items():
        print(f"{s:>6}  " + "  ".join(f"{v:7.1f}" for v in values) + f"  {means[s]:7.2f}")
    start, level = plateau_step(means)
    print(f"plateau level (mean over the last {WINDOW:.0%} of scored steps): {level:.2f}; "
          f"the mean stays within {TOLERANCE:g} point of it from N = {start}")


if __name__ == "__main__":
    main()
