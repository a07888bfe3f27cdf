"""Per-study result tables from the long table: one row per configuration with its paired comparisons
(prehab.report.files writes them as `<study>.csv` for machines and `<study>.md` for people).

Each row is one configuration (every axis but the seed) with the mean ± std of its metric over
seeds and the number of seeds n. Comparisons are paired (prehab.report.paired: same seeds, same
test items; the verdict reads a 95% t-interval over the per-seed differences, or with one seed
the item bootstrap, which is kept beside it as the test set's noise): every compressed method
against SVD-LLM at the same architecture, ratio, LoRA and calibration; Prehab against its
lambda = 0 control with the same steps, space and calibration (the comparison that decides),
and the drop compression causes, Prehab's against its control's (the paper's own measure);
uncompressed Prehab and control models against the dense model (does the fine-tuning itself help
or harm?). A compressed Prehab-vs-control verdict passes the gate (`gated_verdict`): did the
penalty lower the truncation error, did it harm the model before compression. Accuracy
differences are in points (positive = better); perplexity as the ratio of perplexities (below 1 =
better). `rel_change_pct` (mean vs SVD-LLM, positive = better) is descriptive only.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from prehab.layout import METHODS, NO_LORA, fmt
from prehab.report import paired
from prehab.report.gate import HARM_POINTS, HARM_RATIO, HARMED, TAIL_GATE, UNMEASURED, UNREACHED, gated_verdict
from prehab.report.choice import BUDGET, best_controls
from prehab.report.summary import (CONTROL_KEYS, GROUP, control_key, in_study, index_by, key_of,  # noqa: F401
                                   method_label, none_if_nan, summarise)
from prehab.tasks import HIGHER_IS_BETTER

log = logging.getLogger(__name__)

REF_KEYS = ("arch", "ratio", "lora", "cal_source", "cal_samples")  # SVD-LLM reference match
PRE_KEYS = ("arch", "method", "cal_source", "cal_samples", "surrogate", "lam", "space", "snapshot")  # uncompressed twin
COMPARISONS = ("vs_control", "drop_vs_control", "vs_best_control", "vs_svdllm", "vs_dense")
PARTS = ("", "_low", "_high", "_item_low", "_item_high", "_verdict", "_basis", "_seeds", "_per_seed")
GATED = ("vs_control", "drop_vs_control")  # their `_verdict` passes the gate; `_interval_verdict` is the interval's
CSV_COLUMNS = GROUP + ["label", "n", "seeds", "mean", "std", "val_mean", "val_choice", "steps", "model_params", "ref_mean", "rel_change_pct",
                       "pre_mean", "pre_std", "pre_n"] + [
    f"{c}{part}" for c in COMPARISONS for part in PARTS] + [
    f"{c}_interval_verdict" for c in GATED] + ["tail_vs_control", "tail_vs_control_seeds", "before_vs_control",
                                               "best_control"]
SHORT = {"lam": "λ", "cal_samples": "cal n", "cal_source": "cal"}


NOTE = ("Mean ± std over seeds (sample std, ddof=1; std shown only when n > 1). Comparisons are **paired**: "
        "the same seeds and the same test items. Accuracy: difference in **points**, positive = better. "
        "Perplexity: **ratio** of perplexities, below 1 = better. **[95%]**: with 2+ seeds a t-interval over "
        "the per-seed paired differences (df = seeds - 1; perplexity: over the per-seed log ratios), which "
        "holds the spread between training runs, and each seed's difference already holds its own test-set "
        "noise: the **verdict** reads this interval (better / worse when it lies wholly on one side, no "
        "detectable difference otherwise), so it speaks about the method, not about these runs. **test-set "
        "noise [95%]**: a paired bootstrap over test items within each seed with the runs held fixed (2,000 "
        "replicates, averaged over seeds); it is not an interval for the method's effect, and decides only "
        "with 1 seed, where the verdict says `1 seed: test-set noise only`. **vs control**: Prehab against the "
        "λ = 0 run with the same steps, data and space (the comparison that decides whether the penalty, not "
        "the extra fine-tuning, helps). **drop vs control**: the drop compression causes, the control's minus "
        "Prehab's, per seed and item (before − after, before = the same run uncompressed): points, positive = "
        "Prehab loses less; perplexity: ratio of (after / before) of Prehab over the control's, below 1 = "
        "Prehab loses less. **Gate** on a compressed Prehab-vs-control verdict: when Prehab left more than "
        f"{TAIL_GATE:g} of its control's summed absolute whitened tail at k(R) (mean over seeds of the per-seed "
        f"ratio of `mech_tail_abs_sum`, the `mechanism` table; column **tail vs control**), it reads `{UNREACHED}`, and when it was more "
        f"than {HARM_POINTS:g} point below its control before compression (perplexity: ratio above "
        f"{HARM_RATIO:g}), `{HARMED}`, instead of no detectable difference; a better / worse verdict stays and "
        f"names the gate in parentheses; `{UNMEASURED}`: the cut predates the readout. **vs best control** (shown "
        "where it is not the row's own control): against the λ = 0 control of any space with the same steps whose "
        "compressed models score best on validation at R = 0.6 without LoRA (where λ is chosen); the paper's claim "
        "needs Prehab to beat the best fine-tuning of its budget. **vs SVD-LLM**: against "
        "SVD-LLM of the dense model at the same ratio, LoRA and calibration. **before compression**: the same "
        "model before SVD-LLM (the fine-tuned model for Prehab/control, the dense model otherwise).")


# --------------------------------------------------------------------------- numbers

def rel_change(mean: float, ref_mean: float, higher: bool) -> float:
    """Percent change vs the reference, positive = better."""
    if math.isnan(mean) or math.isnan(ref_mean) or ref_mean == 0 or math.isinf(ref_mean):
        return math.nan
    diff = (mean - ref_mean) if higher else (ref_mean - mean)
    return 100.0 * diff / abs(ref_mean)


def fmt_value(x: float, metric: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if paired.in_points(metric):
        return f"{x:.4f}"
    return f"{x:.4g}" if abs(x) >= 1000 else f"{x:.2f}"


def fmt_mean_std(mean: float, std: float, n: int, metric: str) -> str:
    text = fmt_value(mean, metric)
    if n > 1 and text and not math.isnan(std):
        text += f" ± {fmt_value(std, metric)}"
    return text


def fmt_axis(col: str, v: Any) -> str:
    v = none_if_nan(v)
    if v is None:
        return "—"
    if col in ("ratio", "lam", "cal_samples"):
        return fmt(v)
    if col == "lora":
        return "no" if v == NO_LORA else str(v)
    return str(v)


def direction(metric: str) -> str:
    return "higher is better" if HIGHER_IS_BETTER.get(metric, True) else "lower is better"


# --------------------------------------------------------------------------- summaries

TEXT_PARTS = ("_verdict", "_basis", "_seeds", "_per_seed")


def _fill(r, name: str, result: paired.Paired | None) -> None:
    """Fill r's `<name>*` columns (PARTS) from a paired result (None: not paired)."""
    if result is None:
        for part in PARTS:
            r[f"{name}{part}"] = "" if part in TEXT_PARTS else math.nan
        return
    r[name], r[f"{name}_low"], r[f"{name}_high"] = result.estimate, result.low, result.high
    r[f"{name}_item_low"], r[f"{name}_item_high"] = result.item_low, result.item_high
    r[f"{name}_verdict"], r[f"{name}_basis"] = result.verdict, result.basis
    r[f"{name}_seeds"] = " ".join(str(s) for s in result.seeds)
    r[f"{name}_per_seed"] = " ".join(f"{v:.6g}" for v in result.per_seed)


def _compare(r, other, name: str, runs_dir: str | None) -> paired.Paired | None:
    """Fill r's `<name>*` columns with the paired difference of r against `other` (a row or None)."""
    result = None
    if other is not None and runs_dir:
        result = paired.compare_runs(Path(runs_dir), r["dirs"], other["dirs"], r["metric"])
    _fill(r, name, result)
    return result


def _best_control(r, best: dict[tuple, tuple], controls: dict[tuple, Any]):
    """The best control of a Prehab row's budget (choice.best_controls) in the row's cell (ratio,
    LoRA), or None."""
    chosen = best.get(key_of(r, BUDGET))
    if chosen is None:
        return None
    space, label = chosen
    return controls.get(key_of({**r.to_dict(), "space": space}, CONTROL_KEYS) + (label,))


def _seed_values(row, values: dict[str, float]) -> dict[int, float]:
    """{seed: value of that seed's evaluated model} from {eval_dir: value}."""
    return {int(seed): values.get(eval_dir, math.nan) for seed, eval_dir in row["dirs"].items()}


def _gate(r, control, pre, control_pre, tails: dict[str, float], runs_dir: str | None) -> None:
    """A compressed Prehab row against its control: the drop difference, the gate's inputs
    (tail ratio, before-compression difference) and the gated verdicts."""
    drop = None
    if pre is not None and control_pre is not None and runs_dir:
        drop = paired.compare_drops(Path(runs_dir), r["dirs"], control["dirs"], pre["dirs"], control_pre["dirs"],
                                    r["metric"])
    _fill(r, "drop_vs_control", drop)
    tail = paired.seed_ratio(_seed_values(r, tails), _seed_values(control, tails))
    r["tail_vs_control"] = tail.mean if tail is not None else math.nan
    r["tail_vs_control_seeds"] = "" if tail is None else " ".join(str(s) for s in tail.seeds)
    before = None
    if pre is not None and control_pre is not None and runs_dir:
        before = paired.compare_runs(Path(runs_dir), pre["dirs"], control_pre["dirs"], r["metric"])
    r["before_vs_control"] = before.estimate if before is not None else math.nan
    for name in GATED:
        r[f"{name}_interval_verdict"] = r[f"{name}_verdict"]
        if r[f"{name}_verdict"]:
            r[f"{name}_verdict"] = gated_verdict(r[f"{name}_verdict"], r["tail_vs_control"], r["before_vs_control"],
                                                 r["metric"])


def _pre_twin(r, unc_local: dict, unc_global: dict):
    """The same model before compression: the fine-tuned model for Prehab/control, the dense
    model for SVD and SVD-LLM; None when uncompressed or not found."""
    if not r["compressed"]:
        return None
    if r["method"] in ("svd", "svd-llm"):
        pkey = (r["arch"], "dense", None, None, None, None, None, None)
    else:
        pkey = (r["arch"], r["method"], *key_of(r, PRE_KEYS[2:]))
    return unc_local.get(pkey, unc_global.get(pkey))


def study_table(df, study: str, arch_order: list[str] | None = None, choice_seeds: list[int] | None = None):
    """The summary table of one study: each configuration with its paired comparisons against
    SVD-LLM, its control and the dense model, and its metric before compression (`choice_seeds`:
    see summarise)."""
    import pandas as pd

    rows = in_study(df, study)
    s = summarise(rows, choice_seeds)
    if s.empty:
        return pd.DataFrame(columns=CSV_COLUMNS)
    runs_dir = df.attrs.get("runs_dir")
    # references and twins from other studies too, on this study's seeds only
    whole = summarise(df[df["seed"].isin(set(rows["seed"]))])
    ref_local = index_by(s[s["method"] == "svd-llm"], REF_KEYS)
    ref_global = index_by(whole[whole["method"] == "svd-llm"], REF_KEYS)
    unc_local = index_by(s[~s["compressed"].astype(bool)], PRE_KEYS)
    unc_global = index_by(whole[~whole["compressed"].astype(bool)], PRE_KEYS)
    controls = {control_key(c): c for _, c in whole[whole["method"] == "control"].iterrows()}
    best = best_controls(whole)
    dense = {r["arch"]: r for _, r in whole[whole["method"] == "dense"].iterrows()}
    tails = dict(zip(df["eval_dir"], df["mech_tail_abs_sum"])) if "mech_tail_abs_sum" in df else {}
    out = []
    for _, r in s.iterrows():
        r = r.copy()
        higher = HIGHER_IS_BETTER.get(r["metric"], True)
        r["label"] = method_label(r)
        ref = None
        if r["compressed"] and r["method"] != "svd-llm":
            key = key_of(r, REF_KEYS)
            if r["method"] == "svd":  # no calibration: the study's SVD-LLM if its calibration is unique
                cands = [v for k, v in ref_local.items() if k[:3] == key[:3]]
                ref = cands[0] if len(cands) == 1 else None
            else:
                ref = ref_local.get(key, ref_global.get(key))
        r["ref_mean"] = ref["mean"] if ref is not None else math.nan
        r["rel_change_pct"] = rel_change(r["mean"], ref["mean"], higher) if ref is not None else math.nan
        _compare(r, ref, "vs_svdllm", runs_dir)
        control = controls.get(control_key(r)) if r["method"] == "prehab" else None
        _compare(r, control, "vs_control", runs_dir)
        best_control = _best_control(r, best, controls) if r["method"] == "prehab" else None
        _compare(r, best_control, "vs_best_control", runs_dir)
        r["best_control"] = ("" if best_control is None
                             else f"{method_label(best_control)}, space {best_control['space']}")
        uncompressed_tuned = not r["compressed"] and r["method"] in ("prehab", "control")
        _compare(r, dense.get(r["arch"]) if uncompressed_tuned else None, "vs_dense", runs_dir)
        pre = _pre_twin(r, unc_local, unc_global)
        _fill(r, "drop_vs_control", None)
        r["tail_vs_control"] = r["before_vs_control"] = math.nan
        r["tail_vs_control_seeds"] = ""
        for name in GATED:
            r[f"{name}_interval_verdict"] = r[f"{name}_verdict"]
        if control is not None and r["compressed"]:
            _gate(r, control, pre, _pre_twin(control, unc_local, unc_global), tails, runs_dir)
        if pre is not None:
            r["pre_mean"], r["pre_std"], r["pre_n"] = pre["mean"], pre["std"], pre["n"]
        else:
            r["pre_mean"] = r["pre_std"] = r["pre_n"] = math.nan
        out.append(r)
    table = pd.DataFrame(out)[CSV_COLUMNS + ["dirs"]]
    return sort_table(table, arch_order)


def sort_table(table, arch_order: list[str] | None = None):
    archs = {a: i for i, a in enumerate(arch_order or [])}
    methods = {m: i for i, m in enumerate(METHODS)}
    t = table.assign(
        _a=table["arch"].map(lambda a: archs.get(a, len(archs))),
        _c=table["compressed"].astype(bool),
        _m=table["method"].map(methods),
        _l=table["lora"].map(lambda v: (v != NO_LORA, str(v))),
    )
    t = t.sort_values(["_a", "arch", "_c", "ratio", "_m", "surrogate", "lam", "space", "cal_source", "cal_samples",
                       "snapshot", "_l"],
                      na_position="first", kind="stable")
    return t.drop(columns=["_a", "_c", "_m", "_l"]).reset_index(drop=True)


# --------------------------------------------------------------------------- writing


def budget_rows(table):
    """The Prehab rows of a study table that have a paired comparison with their control, without
    LoRA, each with its Prehab step count (snapshots and the full runs)."""
    t = table[(table["method"] == "prehab") & (table["lora"] == NO_LORA) & (table["vs_control_verdict"] != "")]
    return t[t["vs_control_verdict"].notna() & t["steps"].notna()]
