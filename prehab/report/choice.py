"""lambda*: the penalty weight a study reports as its Prehab, chosen without the test set.

For each architecture and Prehab setting (surrogate, space, calibration), lambda* is the lambda
whose compressed models score best on the VALIDATION split (`val_mean`: mean over the seeds of
the sweep's own runs) at CHOICE_RATIO without LoRA. Only `val_mean` is read, so a test metric
can never move the choice (tests/test_report.py changes them to check). A 3-seed sweep's runs are
both the choice and the reported rows: the selection uses validation data, the report test data.
"""

from __future__ import annotations

from prehab.layout import NO_LORA
from prehab.report.tables import _none
from prehab.tasks import HIGHER_IS_BETTER

CHOICE_RATIO = 0.6
SETTING = ("arch", "surrogate", "space", "cal_source", "cal_samples")


def lambda_star(table) -> dict[tuple, float]:
    """{(arch, surrogate, space, cal_source, cal_samples): lambda*} from a study table's Prehab
    rows at CHOICE_RATIO without LoRA; settings with no validation metric there are left out."""
    rows = table[(table["method"] == "prehab") & table["compressed"].astype(bool)
                 & (table["lora"] == NO_LORA)]
    rows = rows[(rows["ratio"] - CHOICE_RATIO).abs() < 1e-9]
    chosen: dict[tuple, float] = {}
    for key, part in rows.groupby(list(SETTING), dropna=False, sort=False):
        part = part[part["val_mean"].notna()]
        if part.empty:
            continue
        higher = HIGHER_IS_BETTER.get(part["metric"].iloc[0], True)
        best = part["val_mean"].idxmax() if higher else part["val_mean"].idxmin()
        chosen[tuple(_none(v) for v in key)] = float(part.loc[best, "lam"])
    return chosen


def is_chosen(row, chosen: dict[tuple, float]) -> bool:
    """Whether a Prehab row carries its setting's lambda*."""
    lam = chosen.get(tuple(_none(row[c]) for c in SETTING))
    return lam is not None and abs(float(row["lam"]) - lam) < 1e-12


def sweeps(table) -> bool:
    """Whether a study table's Prehab rows span several lambdas (then it reports lambda* only)."""
    return table.loc[table["method"] == "prehab", "lam"].nunique() > 1


def reported(rows, table):
    """`rows` as a study reports them: every non-Prehab row, and Prehab rows at their setting's
    lambda* when `table` sweeps lambda (all of them otherwise); recipes are settings of their own."""
    if not sweeps(table):
        return rows
    chosen = lambda_star(table)
    return rows[[r["method"] != "prehab" or is_chosen(r, chosen) for _, r in rows.iterrows()]]
