"""How far the evaluations of two runs of a config moved: two `runs.csv` tables (a report's long
table, one row per evaluated model), paired by evaluation folder.

    .venv/bin/python scripts/rows_moved.py BEFORE/runs.csv AFTER/runs.csv [--methods dense svd svd-llm]

Prints, per method, Prehab space and LoRA setting, how many of the common rows are equal to every printed
digit, and the largest |difference| of the metric (accuracy in points, perplexity relative),
then the rows only one side has. Used to check a re-run on another CPU kind or code path
against the committed tables (results/README.md says which rows are exact).
"""

from __future__ import annotations

import argparse

import pandas as pd


def moved(before: pd.DataFrame, after: pd.DataFrame, methods: list[str] | None) -> list[str]:
    """The report's lines."""
    both = before.merge(after, on="eval_dir", suffixes=("_before", "_after"))
    if methods:
        both = both[both["method_before"].isin(methods)]
    lines = [f"{len(both)} evaluations on both sides" + (f" (methods {', '.join(methods)})" if methods else "")]
    both = both.assign(space=both["space_before"].fillna("—"))
    for (method, space, lora), part in both.groupby(["method_before", "space", "lora_before"], sort=True):
        accuracy = part["metric_before"].iloc[0] != "perplexity"
        diff = (part["value_after"] - part["value_before"]).abs()
        if accuracy:
            largest = f"{100 * diff.max():.2f} points"
        else:
            largest = f"{100 * (diff / part['value_before'].abs()).max():.3g}%"
        equal = int((diff == 0).sum())
        lines.append(f"  {method:<8} space {space:<8} LoRA {lora:<10} {equal:>3} of {len(part):>3} equal, "
                     f"largest difference {largest}")
    only = set(before["eval_dir"]) ^ set(after["eval_dir"])
    lines.append(f"{len(only)} evaluations on one side only")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--methods", nargs="*", default=None, help="only these methods (e.g. dense svd svd-llm)")
    args = parser.parse_args()
    print("\n".join(moved(pd.read_csv(args.before), pd.read_csv(args.after), args.methods)))


if __name__ == "__main__":
    main()
