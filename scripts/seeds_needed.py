"""How many seeds a study needs for its Prehab-vs-control intervals to resolve a given effect,
from the spread of its own per-seed paired differences (never typed in).

For every compressed Prehab row with at least 2 seeds in each study CSV: the sample standard
deviation of its per-seed differences against its control (`vs_control_per_seed`, points), the
half-width of its 95% t-interval now, and the fewest seeds whose t-interval would have a
half-width of `--target` points at that spread (prehab.report.paired.seeds_for_half_width).
Rows in perplexity (ratios) are left out. Prints one line per row and a summary per CSV.

    .venv/bin/python scripts/seeds_needed.py results/decisive-vit/tables/decisive.csv [--target 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import pandas as pd

from prehab.report import paired


def rows_of(csv: str, target: float) -> list[dict]:
    df = pd.read_csv(csv)
    out = []
    for _, r in df[(df["method"] == "prehab") & df["ratio"].notna()].iterrows():
        diffs = [float(v) for v in str(r.get("vs_control_per_seed", "")).split() if v not in ("", "nan")]
        if len(diffs) < 2 or not paired.in_points(r["metric"]):
            continue
        sd = statistics.stdev(diffs)
        _, low, high = paired.t_interval(diffs)
        out.append({"row": f"{r['arch']} {r.get('label', r['surrogate'])} lam={r['lam']:g} space={r['space']} R={r['ratio']:g} "
                           f"LoRA={r['lora']}", "n": len(diffs), "sd": sd, "half": (high - low) / 2,
                    "needed": paired.seeds_for_half_width(sd, target)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="+", help="study tables (`<study>.csv`)")
    parser.add_argument("--target", type=float, default=1.0, help="the half-width wanted, in points (default 1)")
    args = parser.parse_args(argv)
    for csv in args.csv:
        rows = rows_of(csv, args.target)
        print(f"{csv}: {len(rows)} compressed Prehab-vs-control cells with 2+ seeds")
        for r in rows:
            needed = r["needed"] if r["needed"] is not None else "over 1000"
            print(f"  {r['row']}: {r['n']} seeds, per-seed sd {r['sd']:.2f} points, half-width {r['half']:.2f}; "
                  f"seeds for {args.target:g} point: {needed}")
        if rows:
            needed = [r["needed"] if r["needed"] is not None else math.inf for r in rows]
            reached = sum(r["half"] <= args.target for r in rows)
            print(f"  summary: half-width at most {args.target:g} point in {reached} of {len(rows)} cells; median "
                  f"per-seed sd {statistics.median(r['sd'] for r in rows):.2f} points; seeds for "
                  f"{args.target:g} point: median {statistics.median(needed):g}, range {min(needed):g} to "
                  f"{max(needed):g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
