"""Per-study result tables from the long table: `<study>.csv` (machine) and `<study>.md` (people).

Each row is one configuration (every axis but the seed) with the mean ± std of its metric over
seeds, the number of seeds n, and the relative change against SVD-LLM at the same architecture,
ratio, LoRA and calibration, signed so that POSITIVE = BETTER than SVD-LLM for both accuracy
(higher is better) and perplexity (lower is better). The verdict says it plainly:
"better"/"worse" when |difference| > the larger of the two stds, "within noise" otherwise, "n=1"
when a side has a single seed (no std: cannot tell), "reference" on SVD-LLM itself.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from prehab.report.collect import AXES, in_study, is_enabled, study_names
from prehab.layout import METHODS, NO_LORA, fmt
from prehab.tasks import HIGHER_IS_BETTER

log = logging.getLogger(__name__)

GROUP = [a for a in AXES if a != "seed"] + ["metric"]
REF_KEYS = ("arch", "ratio", "lora", "cal_source", "cal_samples")  # SVD-LLM reference match
PRE_KEYS = ("arch", "method", "cal_source", "cal_samples", "surrogate", "lam", "space")  # uncompressed twin
CSV_COLUMNS = GROUP + ["label", "n", "seeds", "mean", "std", "model_params", "ref_mean", "ref_std", "ref_n",
                       "rel_change_pct", "verdict", "pre_mean", "pre_std", "pre_n"]
SHORT = {"lam": "λ", "cal_samples": "cal n", "cal_source": "cal"}
NOTE = ("Mean ± std over seeds (sample std, ddof=1; std shown only when n > 1). "
        "**vs SVD-LLM**: relative change of the mean against SVD-LLM at the same architecture, ratio, "
        "LoRA and calibration, signed so that **positive = better** (higher accuracy, lower perplexity). "
        "**verdict**: better/worse when |difference| > the larger std of the two, within noise otherwise, "
        "n=1 when either side has a single seed (no std: cannot tell), reference on SVD-LLM itself. "
        "**before compression**: the same model's metric before SVD-LLM (the uncompressed Prehab/control "
        "model; the dense model for SVD and SVD-LLM).")


# --------------------------------------------------------------------------- numbers

def _none(v: Any) -> Any:
    """NaN -> None so keys with missing axes compare equal."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _key(row, cols) -> tuple:
    return tuple(_none(row[c]) for c in cols)


def verdict(mean: float, std: float, n: int, ref_mean: float, ref_std: float, ref_n: int, higher: bool) -> str:
    """better / worse / within noise / n=1 (see module doc); "" when there is no reference."""
    if math.isnan(ref_mean) or math.isnan(mean):
        return ""
    diff = (mean - ref_mean) if higher else (ref_mean - mean)
    if math.isnan(diff):  # both non-finite (e.g. inf perplexity on both sides)
        return "both non-finite"
    if math.isinf(diff):  # one side diverged: no noise model needed
        return "better" if diff > 0 else "worse"
    if n < 2 or ref_n < 2:
        return "n=1"
    noise = max(0.0 if math.isnan(std) else std, 0.0 if math.isnan(ref_std) else ref_std)
    if abs(diff) <= noise:
        return "within noise"
    return "better" if diff > 0 else "worse"


def rel_change(mean: float, ref_mean: float, higher: bool) -> float:
    """Percent change vs the reference, positive = better."""
    if math.isnan(mean) or math.isnan(ref_mean) or ref_mean == 0 or math.isinf(ref_mean):
        return math.nan
    diff = (mean - ref_mean) if higher else (ref_mean - mean)
    return 100.0 * diff / abs(ref_mean)


def method_label(row) -> str:
    m = row["method"]
    if m == "dense":
        return "dense"
    if m == "svd":
        return "SVD"
    if m == "svd-llm":
        return "SVD-LLM"
    if m == "control":
        return "control (λ=0)"
    return f"Prehab({row['surrogate']})"


def fmt_value(x: float, metric: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if metric == "accuracy":
        return f"{x:.4f}"
    return f"{x:.4g}" if abs(x) >= 1000 else f"{x:.2f}"


def fmt_mean_std(mean: float, std: float, n: int, metric: str) -> str:
    text = fmt_value(mean, metric)
    if n > 1 and text and not math.isnan(std):
        text += f" ± {fmt_value(std, metric)}"
    return text


def fmt_rel(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return ""
    if math.isinf(x):
        return "+inf%" if x > 0 else "-inf%"
    return f"{x:+.1f}%"


def fmt_axis(col: str, v: Any) -> str:
    v = _none(v)
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

def summarise(df):
    """Mean/std/n over seeds per configuration (all axes but the seed)."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame(columns=GROUP + ["n", "seeds", "mean", "std", "model_params"])
    g = df.groupby(GROUP, dropna=False, sort=False)
    out = g.agg(n=("value", "size"), mean=("value", "mean"), std=("value", "std"),
                model_params=("model_params", "mean")).reset_index()
    seeds = g["seed"].apply(lambda s: " ".join(str(int(x)) for x in sorted(s))).reset_index(drop=True)
    out.insert(len(GROUP) + 1, "seeds", seeds.values)
    # inf in a group makes mean inf and std nan: keep the mean, the verdict handles it
    return out


def _index(summary, cols) -> dict[tuple, Any]:
    return {_key(r, cols): r for _, r in summary.iterrows()}


def study_table(df, study: str, arch_order: list[str] | None = None):
    """The summary table of one study, with SVD-LLM reference, verdict and before-compression columns."""
    import pandas as pd

    rows = in_study(df, study)
    s = summarise(rows)
    if s.empty:
        return pd.DataFrame(columns=CSV_COLUMNS)
    # fallback references/before-compression twins from other studies, on this study's seeds only
    whole = summarise(df[df["seed"].isin(set(rows["seed"]))])
    ref_local = _index(s[s["method"] == "svd-llm"], REF_KEYS)
    ref_global = _index(whole[whole["method"] == "svd-llm"], REF_KEYS)
    unc_local = _index(s[~s["compressed"].astype(bool)], PRE_KEYS)
    unc_global = _index(whole[~whole["compressed"].astype(bool)], PRE_KEYS)
    out = []
    for _, r in s.iterrows():
        r = r.copy()
        higher = HIGHER_IS_BETTER.get(r["metric"], True)
        r["label"] = method_label(r)
        ref = None
        if r["compressed"] and r["method"] != "svd-llm":
            key = _key(r, REF_KEYS)
            if r["method"] == "svd":  # no calibration: the study's SVD-LLM if its calibration is unique
                cands = [v for k, v in ref_local.items() if k[:3] == key[:3]]
                ref = cands[0] if len(cands) == 1 else None
            else:
                ref = ref_local.get(key, ref_global.get(key))
        if ref is not None:
            r["ref_mean"], r["ref_std"], r["ref_n"] = ref["mean"], ref["std"], ref["n"]
            r["rel_change_pct"] = rel_change(r["mean"], ref["mean"], higher)
            r["verdict"] = verdict(r["mean"], r["std"], int(r["n"]), ref["mean"], ref["std"], int(ref["n"]), higher)
        else:
            r["ref_mean"] = r["ref_std"] = r["rel_change_pct"] = math.nan
            r["ref_n"] = math.nan
            r["verdict"] = "reference" if r["method"] == "svd-llm" and r["compressed"] else ""
        pre = None
        if r["compressed"]:
            if r["method"] in ("svd", "svd-llm"):
                pkey = (r["arch"], "dense", None, None, None, None, None)
            else:
                pkey = (r["arch"], r["method"], *_key(r, PRE_KEYS[2:]))
            pre = unc_local.get(pkey, unc_global.get(pkey))
        if pre is not None:
            r["pre_mean"], r["pre_std"], r["pre_n"] = pre["mean"], pre["std"], pre["n"]
        else:
            r["pre_mean"] = r["pre_std"] = r["pre_n"] = math.nan
        out.append(r)
    table = pd.DataFrame(out)[CSV_COLUMNS]
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
    t = t.sort_values(["_a", "arch", "_c", "ratio", "_m", "surrogate", "lam", "space", "cal_source", "cal_samples", "_l"],
                      na_position="first", kind="stable")
    return t.drop(columns=["_a", "_c", "_m", "_l"]).reset_index(drop=True)


# --------------------------------------------------------------------------- markdown

def md_table(headers: list[str], rows: list[list[str]]) -> str:
    def esc(x: str) -> str:
        return str(x).replace("|", "\\|")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _arch_heading(arch: str, metric: str) -> str:
    return f"## {arch} — {metric} ({direction(metric)})"


def study_markdown(table, study: str, missing: list[str]) -> str:
    """Generic study page: per architecture, the columns that vary in the study."""
    parts = [f"# Study `{study}`", "", NOTE, ""]
    if missing:
        parts += [f"**{len(missing)} evaluated model(s) missing** (reported without them).", ""]
    if table.empty:
        return "\n".join(parts + ["No evaluated models found for this study.", ""])
    shown = [c for c in ("surrogate", "lam", "space", "cal_source", "cal_samples", "ratio", "lora")
             if table[c].map(_none).nunique(dropna=False) > 1]
    has_pre = table["pre_mean"].notna().any()
    for arch, t in table.groupby("arch", sort=False):
        metric = t["metric"].iloc[0]
        headers = ["method"] + [SHORT.get(c, c) for c in shown]
        headers += [metric, "n", "vs SVD-LLM", "verdict"] + (["before compression"] if has_pre else [])
        body = []
        for _, r in t.iterrows():
            row = [r["label"]] + [fmt_axis(c, r[c]) for c in shown]
            row += [fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric), str(int(r["n"])),
                    fmt_rel(r["rel_change_pct"]), r["verdict"]]
            if has_pre:
                row.append(fmt_mean_std(r["pre_mean"], r["pre_std"], 0 if math.isnan(r["pre_n"]) else int(r["pre_n"]), metric))
            body.append(row)
        parts += [_arch_heading(arch, metric), "", md_table(headers, body), ""]
    return "\n".join(parts)


def main_markdown(table, study: str, missing: list[str]) -> str:
    """The headline page: per architecture and ratio, dense, SVD, SVD-LLM, control and Prehab,
    each without and with LoRA."""
    parts = [f"# Main results (study `{study}`)", "", NOTE, ""]
    if missing:
        parts += [f"**{len(missing)} evaluated model(s) missing** (reported without them).", ""]
    if table.empty:
        return "\n".join(parts + ["No evaluated models found for this study.", ""])
    # λ / space / calibration enter the label only when the study varies them
    extra = [c for c in ("lam", "space", "cal_source", "cal_samples")
             if table.loc[table["method"] == "prehab", c].map(_none).nunique(dropna=False) > 1]
    for arch, t in table.groupby("arch", sort=False):
        metric = t["metric"].iloc[0]
        headers = ["ratio", "method", "LoRA", metric, "n", "vs SVD-LLM", "verdict", "before compression", "params (M)"]
        body = []
        dense = t[t["method"] == "dense"]
        comp = t[t["compressed"].astype(bool)]
        for ratio in sorted(comp["ratio"].dropna().unique()):
            for _, r in dense.iterrows():
                body.append([fmt(ratio), "dense (uncompressed)", "—", fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric),
                             str(int(r["n"])), "", "", "", _mparams(r["model_params"])])
            for _, r in comp[comp["ratio"] == ratio].iterrows():
                label = r["label"]
                if r["method"] == "prehab" and extra:
                    label += " " + ", ".join(f"{SHORT.get(c, c)}={fmt_axis(c, r[c])}" for c in extra)
                pre_n = 0 if math.isnan(r["pre_n"]) else int(r["pre_n"])
                body.append([fmt(ratio), label, fmt_axis("lora", r["lora"]),
                             fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric), str(int(r["n"])),
                             fmt_rel(r["rel_change_pct"]), r["verdict"],
                             fmt_mean_std(r["pre_mean"], r["pre_std"], pre_n, metric), _mparams(r["model_params"])])
        if comp.empty:  # e.g. a study of uncompressed models only
            for _, r in t.iterrows():
                body.append(["—", r["label"], fmt_axis("lora", r["lora"]), fmt_mean_std(r["mean"], r["std"], int(r["n"]), metric),
                             str(int(r["n"])), "", "", "", _mparams(r["model_params"])])
        parts += [_arch_heading(arch, metric), "", md_table(headers, body), ""]
    return "\n".join(parts)


def _mparams(x: float) -> str:
    return "" if math.isnan(x) else f"{x / 1e6:.3g}"


# --------------------------------------------------------------------------- writing

def write_tables(df, cfg: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """runs.csv (the long table) and <study>.csv/.md for EVERY study of the config (a disabled
    study gets an empty CSV and a page saying so, so the set of outputs is fixed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "runs.csv"]
    df.to_csv(written[0], index=False)
    missing_all = df.attrs.get("missing", [])
    for study in study_names(cfg):
        csv, md = out_dir / f"{study}.csv", out_dir / f"{study}.md"
        if not is_enabled(cfg, study):
            import pandas as pd

            pd.DataFrame(columns=CSV_COLUMNS).to_csv(csv, index=False)
            md.write_text(f"# Study `{study}`\n\nStudy disabled (`enabled: false` in the config): no runs.\n")
        else:
            table = study_table(df, study, cfg.get("archs"))
            table.to_csv(csv, index=False)
            from prehab.studies import study_runs

            dirs = {r.eval_dir for r in study_runs(study, cfg["studies"][study], cfg["archs"])}
            missing = [m for m in missing_all if m in dirs]
            page = main_markdown if cfg["studies"][study].get("page") == "by_ratio" else study_markdown
            md.write_text(page(table, study, missing))
        written += [csv, md]
    log.info("wrote %d table files to %s", len(written), out_dir)
    return written
