"""lambda*: the penalty weight a study reports as its Prehab, chosen without the test set.

For each architecture and Prehab setting (surrogate, space, calibration), lambda* is the lambda
whose compressed models score best on the VALIDATION split (`val_mean`: mean over the seeds of
the sweep's own runs) at CHOICE_RATIO without LoRA, or, in a study without that ratio (llama-small
is cut at 0.2 and 0.4 only), at its ratio closest to it (`choice_ratio`). Only `val_mean` is read, so a test metric
can never move the choice (tests/test_report.py changes them to check). A 3-seed sweep's runs are
both the choice and the reported rows: the selection uses validation data, the report test data.
"""

from __future__ import annotations

from prehab.layout import NO_LORA
from prehab.method.recipes import RECIPES
from prehab.report.summary import in_study, none_if_nan, summarise
from prehab.studies import Setting, choice_seeds_of, confirming, setting_key
from prehab.tasks import HIGHER_IS_BETTER

CHOICE_RATIO = 0.6
SETTING = ("arch", "surrogate", "space", "cal_source", "cal_samples")


def _candidates(table):
    return table[(table["method"] == "prehab") & table["compressed"].astype(bool) & (table["lora"] == NO_LORA)]


def choice_ratio(table) -> float:
    """The ratio lambda* is chosen at: CHOICE_RATIO, else the table's Prehab ratio closest to it
    (the larger on a tie); per setting (so per architecture) when tables of several studies are
    merged."""
    return closest_ratio(_candidates(table)["ratio"])


def closest_ratio(ratios) -> float:
    """CHOICE_RATIO if among `ratios`, else the closest of them (the larger on a tie)."""
    ratios = sorted(set(ratios.dropna()), reverse=True)
    return min(ratios, key=lambda r: round(abs(r - CHOICE_RATIO), 9)) if ratios else CHOICE_RATIO


def lambda_star(table) -> dict[tuple, float]:
    """{(arch, surrogate, space, cal_source, cal_samples): lambda*} from a study table's Prehab
    rows at `choice_ratio` without LoRA, by `val_choice` (tables.summarise: the validation mean
    over the seeds lambda is chosen on; `val_mean` in a table without it); settings with no
    validation metric there are left out."""
    column = "val_choice" if "val_choice" in table else "val_mean"
    chosen: dict[tuple, float] = {}
    for key, part in _candidates(table).groupby(list(SETTING), dropna=False, sort=False):
        part = part[((part["ratio"] - choice_ratio(part)).abs() < 1e-9) & part[column].notna()]
        if part.empty:
            continue
        higher = HIGHER_IS_BETTER.get(part["metric"].iloc[0], True)
        best = part[column].idxmax() if higher else part[column].idxmin()
        chosen[tuple(none_if_nan(v) for v in key)] = float(part.loc[best, "lam"])
    return chosen


BUDGET = ("arch", "cal_source", "cal_samples", "steps", "snapshot")  # what a best control shares with its Prehab


def best_controls(summary) -> dict[tuple, tuple]:
    """{(arch, cal_source, cal_samples, steps, snapshot): (space, label)}: per budget (the same
    Prehab steps, calibration and snapshot), the lambda = 0 control of any space or recipe whose
    compressed models score best on the VALIDATION split at `choice_ratio` without LoRA. The
    paper's claim holds only if Prehab beats the best fine-tuning that spends the same steps,
    not just its own control. `summary`: a summarised table (a `steps` column per row)."""
    rows = summary[(summary["method"] == "control") & summary["compressed"].astype(bool)
                   & (summary["lora"] == NO_LORA) & summary["val_mean"].notna()]
    chosen: dict[tuple, tuple] = {}
    for key, part in rows.groupby(list(BUDGET), dropna=False, sort=False):
        part = part[(part["ratio"] - closest_ratio(part["ratio"])).abs() < 1e-9]
        if part.empty:
            continue
        higher = HIGHER_IS_BETTER.get(part["metric"].iloc[0], True)
        best = part.loc[part["val_mean"].idxmax() if higher else part["val_mean"].idxmin()]
        chosen[tuple(none_if_nan(v) for v in key)] = (none_if_nan(best["space"]), best["surrogate"])
    return chosen


def phase_a_choice(df, cfg: dict) -> dict[str, dict[Setting, float]]:
    """{study: {setting: lambda*}} for each enabled study with confirm_seeds, chosen on its
    phase-A seeds' runs in the long table `df` (collect.to_frame) exactly as its page chooses
    (lambda_star of summarise over those seeds): what the workflow's `choose_lambda` checkpoint
    writes and the report re-derives, so phase B and the page never disagree."""
    out = {}
    for name in confirming(cfg):
        rows = in_study(df, name)
        rows = rows[rows["seed"].isin(choice_seeds_of(cfg["studies"][name]))]
        out[name] = {setting_key(*key): lam for key, lam in lambda_star(summarise(rows)).items()}
    return out


def is_chosen(row, chosen: dict[tuple, float]) -> bool:
    """Whether a Prehab row carries its setting's lambda*."""
    lam = chosen.get(tuple(none_if_nan(row[c]) for c in SETTING))
    return lam is not None and abs(float(row["lam"]) - lam) < 1e-12


def swept_lambdas(table) -> list[float]:
    """The sorted lambdas of a study table's Prehab rows; a recipe's lambda is its own, not a
    point of the sweep."""
    plain = (table["method"] == "prehab") & ~table["surrogate"].isin(list(RECIPES))
    return sorted(table.loc[plain, "lam"].dropna().unique())


def sweeps(table) -> bool:
    """Whether a study table's Prehab rows span several lambdas (then it reports lambda* only)."""
    return len(swept_lambdas(table)) > 1


def reported(rows, table):
    """`rows` as a study reports them: every non-Prehab row, and Prehab rows at their setting's
    lambda* when `table` sweeps lambda (all of them otherwise); recipes are settings of their own."""
    if not sweeps(table):
        return rows
    chosen = lambda_star(table)
    return rows[[r["method"] != "prehab" or is_chosen(r, chosen) for _, r in rows.iterrows()]]
