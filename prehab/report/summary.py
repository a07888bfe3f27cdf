"""What every report table is made of: one row per configuration (every axis but the seed)
with its mean, std and seeds, the keys that match rows to their references, and the labels of
methods. The tables, the choice of lambda* and the mechanism readout all read it, so none of
them imports another for it.
"""

from __future__ import annotations

import math
from typing import Any

from prehab.layout import CONTROL_SURROGATE
from prehab.method.recipes import RECIPES
# The axes of the long table (prehab.report.collect): a run's parameters, one column each.
AXES = ("arch", "seed", "method", "compressed", "ratio", "lora", "cal_source", "cal_samples",
        "surrogate", "lam", "space", "snapshot")
GROUP = [a for a in AXES if a != "seed"] + ["metric"]
CONTROL_KEYS = ("arch", "compressed", "ratio", "lora", "cal_source", "cal_samples", "space", "snapshot")  # its control


def none_if_nan(v: Any) -> Any:
    """NaN -> None so keys with missing axes compare equal."""
    return None if isinstance(v, float) and math.isnan(v) else v


def key_of(row, cols) -> tuple:
    return tuple(none_if_nan(row[c]) for c in cols)


def method_label(row) -> str:
    m = row["method"]
    if m == "dense":
        return "dense"
    if m == "svd":
        return "SVD"
    if m == "svd-llm":
        return "SVD-LLM"
    recipe = RECIPES.get(row["surrogate"])
    steps = row.get("steps")
    known = steps is not None and not (isinstance(steps, float) and math.isnan(steps))
    scaled = f", {int(steps):,} of {recipe.steps:,} steps" if recipe is not None and known else ""
    if m == "control":
        return "control (λ=0)" if recipe is None else f"control ({row['surrogate']} at λ=0{scaled})"
    return f"Prehab({row['surrogate']}{scaled})"


def control_key(r) -> tuple:
    """What a Prehab row's control shares with it: the axes of CONTROL_KEYS and the recipe label
    (a recipe's control is the recipe at lambda 0; any other control is labelled `none`)."""
    label = r["surrogate"] if r["surrogate"] in RECIPES else CONTROL_SURROGATE
    return key_of(r, CONTROL_KEYS) + (label,)


def summarise(df, choice_seeds: list[int] | None = None):
    """Mean/std/n over seeds per configuration (all axes but the seed); `dirs` maps each seed to
    its evaluation folder (what the paired statistics read). `val_choice`, what lambda* is chosen
    by, is the validation mean over `choice_seeds` (a study's phase A; None: every seed, =
    val_mean): a lambda* re-run at more seeds is then judged on the seeds the others had."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame(columns=GROUP + ["n", "seeds", "mean", "std", "val_mean", "val_choice", "steps",
                                             "model_params", "dirs"])
    chooses = df["seed"].isin(choice_seeds) if choice_seeds is not None else df["seed"].notna()
    df = df.assign(choice_value=df["val_value"].where(chooses))
    g = df.groupby(GROUP, dropna=False, sort=False)
    out = g.agg(n=("value", "size"), mean=("value", "mean"), std=("value", "std"), val_mean=("val_value", "mean"),
                val_choice=("choice_value", "mean"), steps=("prehab_steps", "max"),
                model_params=("model_params", "mean")).reset_index()
    seeds = g["seed"].apply(lambda s: " ".join(str(int(x)) for x in sorted(s))).reset_index(drop=True)
    out.insert(len(GROUP) + 1, "seeds", seeds.values)
    out["dirs"] = [dict(zip(part["seed"].astype(int), part["eval_dir"])) for _, part in g]
    # inf in a group makes mean inf and std nan: keep the mean, the paired verdict handles it
    return out


def index_by(summary, cols) -> dict[tuple, Any]:
    return {key_of(r, cols): r for _, r in summary.iterrows()}


def in_study(df, study: str):
    """Rows of the long table used by `study`."""
    mask = [study in str(names).split(",") for names in df["studies"]]
    return df[pd_bool(mask, df.index)]


def pd_bool(values: list[bool], index):
    import pandas as pd

    return pd.Series(values, index=index, dtype=bool)
