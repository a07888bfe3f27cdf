"""The mechanism table (`mechanism.csv|md`): did the penalty lower the error SVD-LLM truncates?

SVD-LLM's squared output error on its calibration data is the tail sum_{i>k} s_i^2 of W L at the
kept rank k(R); Prehab exists to shrink it. The compress step measures it on each model it cuts,
from that model's own re-calibration (collect.MECH_KEYS, one reader: collect.read_mechanism).
Here each Prehab setting (surrogate, lambda, space, snapshot) sits beside its lambda = 0 control
at the same architecture, ratio and calibration, under the dense model's own SVD-LLM cut as the
reference: the readout (mean over the measured seeds), and the Prehab / control ratios of the
summed and the median tail and of the energy, paired by seed (paired.seed_ratio: the mean of the
per-seed ratios, a t-interval on their logs with 2+ seeds). A LoRA model shares its cut, so rows
are per cut, without LoRA. A cut made before the readout existed reads `not measured`.
"""

from __future__ import annotations

import math
from typing import Any

from prehab.layout import NO_LORA, fmt
from prehab.report import paired
from prehab.report.collect import MECH_KEYS, is_enabled
from prehab.report.summary import control_key, method_label, none_if_nan

MODEL = ("arch", "method", "ratio", "cal_source", "cal_samples", "surrogate", "lam", "space", "snapshot")
CELL = ("arch", "ratio", "cal_source", "cal_samples")  # what a Prehab row, its control and the reference share
RATIOS = {"tail_abs_sum": "mech_tail_abs_sum", "tail_abs_median": "mech_tail_abs_median",
          "energy_sum": "mech_energy_sum"}  # Prehab / control, paired by seed
MEASURED_BY = "mech_tail_abs_sum"  # a seed whose cut has this key was measured
ROLES = ("reference", "control", "prehab")
CSV_COLUMNS = [*MODEL, "role", "label", "measured", "n", "seeds", *MECH_KEYS] + [
    f"{name}_ratio{part}" for name in RATIOS for part in ("", "_low", "_high", "_seeds", "_per_seed")] + [
    "dense_tail_abs_sum"]


def cuts(df, cfg: dict[str, Any]):
    """One row per SVD-LLM cut and seed: the Prehab/control cuts of the enabled studies and the
    dense model's cuts at their (arch, ratio, calibration); extra test sets and LoRA left out
    (a LoRA model's readout is its cut's)."""
    import pandas as pd

    enabled = {name for name in cfg["studies"] if is_enabled(cfg, name)}
    rows = df[df["compressed"].astype(bool) & df["method"].isin(["svd-llm", "control", "prehab"])
              & ~df["eval_dir"].str.contains(paired.EXTRA_TEST_MARK, regex=False)]
    in_enabled = rows["studies"].map(lambda names: bool(enabled & set(str(names).split(","))))
    tuned = rows[rows["method"].isin(["control", "prehab"]) & in_enabled]
    cells = {tuple(none_if_nan(v) for v in key) for key in tuned[list(CELL)].itertuples(index=False)}
    dense = rows[rows["method"] == "svd-llm"]
    dense = dense[[tuple(none_if_nan(v) for v in key) in cells for key in dense[list(CELL)].itertuples(index=False)]]
    chosen = pd.concat([tuned, dense]).assign(lora=NO_LORA)
    return chosen.drop_duplicates([*MODEL, "seed"])


def _summary(group) -> dict[str, Any]:
    """A cut's readout over its seeds: {seed: row}, the measured seeds and the means."""
    by_seed = {int(r["seed"]): r for _, r in group.iterrows()}
    measured = sorted(s for s, r in by_seed.items() if math.isfinite(r[MEASURED_BY]))
    first = group.iloc[0]
    out = {c: none_if_nan(first[c]) for c in MODEL}
    out.update(compressed=True, lora=NO_LORA, steps=group["prehab_steps"].max(), measured=bool(measured), n=len(measured),
               seeds=" ".join(str(s) for s in measured), by_seed=by_seed)
    for key in MECH_KEYS:
        values = [by_seed[s][key] for s in measured if math.isfinite(by_seed[s][key])]
        out[key] = sum(values) / len(values) if values else math.nan
    out["role"] = {"svd-llm": "reference", "control": "control"}.get(out["method"], "prehab")
    out["label"] = _label(out)
    return out


def _label(row: dict[str, Any]) -> str:
    if row["method"] == "svd-llm":
        return "dense model, SVD-LLM (reference)"
    label = method_label(row) + (f" λ={fmt(row['lam'])}" if row["method"] == "prehab" else "")
    extra = [f"space={row['space']}"] + ([f"snapshot={fmt(row['snapshot'])}"] if row["snapshot"] is not None else [])
    return f"{label} {', '.join(extra)}"


def _ratios(row: dict[str, Any], control: dict[str, Any] | None) -> None:
    """Prehab / control of each RATIOS quantity, paired by seed, into row."""
    for name, key in RATIOS.items():
        result = None
        if control is not None:
            mine = {s: float(r[key]) for s, r in row["by_seed"].items()}
            theirs = {s: float(r[key]) for s, r in control["by_seed"].items()}
            result = paired.seed_ratio(mine, theirs)
        row[f"{name}_ratio"] = math.nan if result is None else result.mean
        row[f"{name}_ratio_low"] = math.nan if result is None else result.low
        row[f"{name}_ratio_high"] = math.nan if result is None else result.high
        row[f"{name}_ratio_seeds"] = "" if result is None else " ".join(str(s) for s in result.seeds)
        row[f"{name}_ratio_per_seed"] = "" if result is None else " ".join(f"{v:.6g}" for v in result.per_seed)


def mechanism_table(df, cfg: dict[str, Any], arch_order: list[str] | None = None):
    """The mechanism table (CSV_COLUMNS): per arch, ratio and calibration, the reference row, then
    each control followed by its Prehab settings."""
    import pandas as pd

    if df.empty or MEASURED_BY not in df:
        return pd.DataFrame(columns=CSV_COLUMNS)
    summaries = [_summary(g) for _, g in cuts(df, cfg).groupby(list(MODEL), dropna=False, sort=False)]
    controls = {control_key(r): r for r in summaries if r["method"] == "control"}
    reference = {tuple(r[c] for c in CELL): r for r in summaries if r["method"] == "svd-llm"}
    for r in summaries:
        _ratios(r, controls.get(control_key(r)) if r["method"] == "prehab" else None)
        ref = reference.get(tuple(r[c] for c in CELL))
        r["dense_tail_abs_sum"] = ref["mech_tail_abs_sum"] if ref is not None else math.nan
    archs = {a: i for i, a in enumerate(arch_order or [])}

    def order(r: dict[str, Any]) -> tuple:
        control = controls.get(control_key(r)) if r["method"] == "prehab" else r
        pair = () if control is None or r["method"] == "svd-llm" else (
            str(control["space"]), control["snapshot"] or 0.0, str(control["surrogate"]))
        return (archs.get(r["arch"], len(archs)), r["arch"], r["ratio"], str(r["cal_source"]), r["cal_samples"] or 0,
                r["method"] != "svd-llm", control is None, pair, ROLES.index(r["role"]), str(r["surrogate"]),
                r["lam"] or 0.0)
    summaries.sort(key=order)
    return pd.DataFrame([{c: r.get(c) for c in CSV_COLUMNS} for r in summaries], columns=CSV_COLUMNS)
