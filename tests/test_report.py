"""The reporting layer on a hand-made runs tree: long table, per-study tables (mean ± std, sign of
the change vs SVD-LLM for accuracy AND perplexity, verdict), figures, missing runs (the MLflow
import of the same tree: tests/test_mlflow.py)."""

from __future__ import annotations

import json
import math

import pytest

from prehab.cli import main
from prehab.outputs import write_json
from prehab.layout import Run
from prehab.studies import expand

pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")

NOISE = {0: -1.0, 1: 1.0}  # seed -> noise sign: two seeds give std = sqrt(2) * amplitude
CONTROL_SHIFT = {0: -0.003, 1: 0.001}  # the compressed control's accuracy against SVD-LLM: -0.1 point on average,
# different per seed, so its seed-level interval has a spread (identical seeds would give a zero-width one)
ACC_NOISE, PPL_NOISE = 0.002, 0.005
PRE_COST = 0.005  # accuracy the uncompressed Prehab loses per unit of lambda: 0.5 point at 1, 5 points at 10 (harmed)
CODE = {"prehab_version": "0.1.0", "source_sha256": "abc123", "git_commit": "deadbee"}
LAYERS = ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"]


def _study(methods, seeds=(0, 1), ratios=(0.4, 0.6), lora=("none", "joint"), samples=(64,), lam=(1.0,), **kw):
    return {"seeds": list(seeds), "methods": list(methods), "ratios": list(ratios), "lora": list(lora),
            "calibration": {"source": ["train"], "samples": list(samples)},
            "prehab": {"surrogate": ["nuclear"], "lam": list(lam), "space": ["whitened"]}, **kw}


CFG = {
    "archs": ["tiny-mlp", "tiny-lm"],
    "studies": {
        "main": _study(["dense", "svd", "svd-llm", "control", "prehab"], page="by_ratio",
                       figures=["metric_vs_ratio", "spectra", "trajectories"]),
        "lambda_sweep": _study(["svd-llm", "control", "prehab"], ratios=[0.6], lora=["none"], lam=[0.1, 1.0, 10.0],
                               figures=["lambda_tradeoff", "spectra", "trajectories"]),
        "calibration_size": _study(["svd-llm", "prehab"], seeds=[0], ratios=[0.6], lora=["none"], samples=[16, 64, 256],
                                   figures=["calibration_size"]),
        "space_ablation": _study(["prehab"], enabled=False),
    },
}


def prehab_bonus(lam: float) -> float:
    return 0.03 + 0.02 * math.log10(lam)  # 0.1 -> 0.01, 1 -> 0.03, 10 -> 0.05


def accuracy(run) -> float:
    """tiny-mlp: Prehab beats SVD-LLM clearly except at ratio 0.4 with LoRA, where it loses."""
    if run.method == "dense":
        v = 0.90
    elif not run.compressed:
        v = 0.90 - PRE_COST * run.lam  # the uncompressed Prehab/control model
    else:
        v = 0.90 - 0.5 * run.ratio + {"svd": -0.2, "svd-llm": 0.0, "control": CONTROL_SHIFT[run.seed], "prehab": 0.0}[
            run.method]
        if run.method == "prehab":
            v += prehab_bonus(run.lam)
            if run.ratio == 0.4 and run.lora != "none":
                v -= 0.08
        if run.lora != "none":
            v += 0.03
        if run.cal_samples:
            v += 0.01 * math.log2(run.cal_samples / 64)
    return v + ACC_NOISE * NOISE[run.seed]


def perplexity(run) -> float:
    """tiny-lm: Prehab lowers perplexity (better) except at ratio 0.4 with LoRA; plain SVD at ratio
    0.6 diverges on seed 1 (inf)."""
    if run.method == "svd" and run.ratio == 0.6 and run.seed == 1:
        return math.inf
    if run.method == "dense":
        v = 20.0
    elif not run.compressed:
        v = 20.0 * (1 + 0.01 * run.lam)
    else:
        mult = {"svd": 3.0, "svd-llm": 1.0, "control": 1.0, "prehab": 0.8}[run.method]
        if run.method == "prehab" and run.ratio == 0.4 and run.lora != "none":
            mult = 1.3
        if run.lora != "none":
            mult *= 0.9
        if run.cal_samples:
            mult *= 1 - 0.02 * math.log2(run.cal_samples / 64)
        v = 20.0 * (1 + 2 * run.ratio) * mult
    return v * (1 + PPL_NOISE * NOISE[run.seed])


def value_of(run) -> tuple[str, float]:
    return ("accuracy", accuracy(run)) if run.arch == "tiny-mlp" else ("perplexity", perplexity(run))


def history_of(run) -> list[dict]:
    """The steps behind a model, as a step's metrics.json records them (the cut and its LoRA)."""
    history = [{"step": "pretrain", "arch": run.arch, "seed": run.seed}]
    if run.compressed:
        history.append({"step": "compress", "method": "svd" if run.method == "svd" else "svd-llm", "ratio": run.ratio})
    if run.lora != "none":
        history.append({"step": "rehab", "schedule": run.lora})
    return history


N_ITEMS, N_WINDOWS, TOKENS = 1000, 64, 31


def scores_of(name: str, value: float) -> dict:
    """Per-row scores behind a metric value: the first round(value * N) items right (so two
    models' right answers are nested), or windows of equal NLL giving that perplexity."""
    if name == "accuracy":
        k = round(value * N_ITEMS)
        return {"correct": [1] * k + [0] * (N_ITEMS - k), "finite": [1] * N_ITEMS}
    nll = math.log(value) * TOKENS if math.isfinite(value) else math.inf
    return {"nll": [nll] * N_WINDOWS, "tokens": [TOKENS] * N_WINDOWS, "finite": [int(math.isfinite(value))] * N_WINDOWS}


def val_value_of(run, name: str, value: float) -> float:
    """The validation metric: the test value, except that Prehab at lambda 0.1 is the best on
    validation (never on test), so a choice made on validation picks it."""
    if run.method == "prehab" and run.lam == 0.1:
        return value + (0.2 if name == "accuracy" else -0.5 * value)
    return value


DENSE_TAIL = 100.0  # the dense model's summed whitened tail at ratio 1 (scaled by the ratio)
CONTROL_TAIL = 1.1  # the control's tail against the dense model's
SEED_TAIL = {0: 0.98, 1: 1.02}  # per-seed spread of a Prehab model's tail


def tail_factor(lam: float) -> float:
    """Prehab's summed tail over its control's: 0.9 at lambda 0.1 (the gate fires: not reached),
    0.5 at 1, 0.2 at 10."""
    return {0.1: 0.9, 1.0: 0.5, 10.0: 0.2}.get(lam, 0.5)


def mechanism_of(run) -> dict:
    """The readout the compress step writes for an SVD-LLM cut (collect.MECH_KEYS)."""
    tail = DENSE_TAIL * run.ratio
    if run.method in ("control", "prehab"):
        tail *= CONTROL_TAIL
    if run.method == "prehab":
        tail *= tail_factor(run.lam) * SEED_TAIL[run.seed]
    energy = 10 * DENSE_TAIL
    moved = 0.0 if run.method == "svd-llm" else 0.01 * (1 + (run.lam or 0))
    return {"mech_tail_abs_sum": tail, "mech_tail_abs_median": tail / len(LAYERS),
            "mech_tail_rel_median": tail / energy, "mech_tail_rel_total": tail / energy, "mech_energy_sum": energy,
            "mech_energy_median": energy / len(LAYERS), "mech_move_w_median": moved, "mech_move_wl_median": 2 * moved,
            "mech_n_matrices": len(LAYERS)}


def write_mechanism(root, run) -> None:
    """The compress step's metrics.json of the SVD-LLM cut behind `run` (its folder without LoRA)."""
    import dataclasses

    cut = dataclasses.replace(run, lora="none")
    (root / cut.model_dir).mkdir(parents=True, exist_ok=True)
    write_json(root / cut.model_dir / "metrics.json", {
        "step": "compress", "params": {"ratio": run.ratio}, "code": CODE, "wall_time_s": 1.0,
        "metrics": {"ratio_nominal": run.ratio, "rank_min": 4, "rank_max": 8, **mechanism_of(cut)}})


def make_tree(root, cfg=CFG, mechanism: bool = True, chosen: dict | None = None) -> dict:
    """Write metrics.json and scores.json for every evaluated model, plus the prehab step's curve
    and spectra, and (`mechanism`) the compress step's readout of every SVD-LLM cut (`chosen`:
    the lambda* of studies with confirm_seeds, whose phase B is then written too)."""
    union = expand(cfg, chosen)
    for eval_dir, run in union.runs.items():
        if mechanism and run.compressed and run.method != "svd":
            write_mechanism(root, run)
        name, value = value_of(run)
        params = 1e6 * (1 - 0.9 * run.ratio) if run.compressed else 1e6
        folder = root / eval_dir
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "metrics.json", {
            "step": "evaluate", "params": {"model": str(folder.parent), "arch": run.arch, "batch_size": 8},
            "metrics": {name: value, "metric": name, "model_params": params, "checkpoint_bytes": 4 * params,
                        "nonfinite_rows": 3 if math.isinf(value) else 0, "n_eval": 100, "n_factorized": 4,
                        f"val_{name}": val_value_of(run, name, value)},
            "wall_time_s": 0.5, "code": CODE, "history": history_of(run)})
        write_json(folder / "scores.json", {"test": scores_of(name, value)})
        if run.method in ("prehab", "control") and not run.compressed:
            lam = run.lam
            curve = [{"step": s, "task_loss": 1.0 / s, "surrogate": 10.0 * math.exp(-lam * s / 50), "lambda": lam,
                      "entropy_rank": 30.0 - 10 * lam / (1 + lam) * s / 100} for s in (1, 10, 20, 50, 100)]
            prehab_dir = root / run.model_dir
            write_json(prehab_dir / "metrics.json", {
                "step": "prehab", "params": {"lam": lam}, "curve": curve, "code": CODE, "wall_time_s": 2.0,
                "metrics": {"whitened_surrogate_before": 10.0, "whitened_surrogate_after": curve[-1]["surrogate"],
                            "entropy_rank_before": 30.0, "entropy_rank_after": curve[-1]["entropy_rank"],
                            "final_task_loss": 0.01}})
            i = torch.arange(32, dtype=torch.float32)
            before = {layer: torch.exp(-i / 10) * (k + 1) for k, layer in enumerate(LAYERS)}
            after = {layer: s * torch.exp(-lam * i / 20) for layer, s in before.items()}
            torch.save({"before": before, "after": after}, prehab_dir / "spectra.pt")
    return union.runs


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = make_tree(root)
    out = tmp_path_factory.mktemp("report")
    rc = main(["report", "--runs", str(root), "--studies", json.dumps(CFG),
               "--tables", str(out / "tables"), "--figures", str(out / "figures")])
    assert rc == 0
    return {"root": root, "runs": runs, "tables": out / "tables", "figures": out / "figures"}


def _row(table, arch, method, ratio=None, lora="none", **axes):
    t = table[(table["arch"] == arch) & (table["method"] == method) & (table["lora"] == lora)]
    t = t[t["ratio"].isna()] if ratio is None else t[t["ratio"] == ratio]
    for k, v in axes.items():
        t = t[t[k] == v]
    assert len(t) == 1, (arch, method, ratio, lora, axes, len(t))
    return t.iloc[0]


def test_long_table_one_row_per_model(tree):
    runs = pd.read_csv(tree["tables"] / "runs.csv")
    assert len(runs) == len(tree["runs"]) == runs["eval_dir"].nunique()
    for col in ("arch", "seed", "method", "compressed", "ratio", "lora", "cal_source", "cal_samples", "surrogate",
                "lam", "space", "studies", "metric", "value", "model_params", "checkpoint_bytes",
                "nonfinite_rows", "eval_dir"):
        assert col in runs.columns
    shared = "arch~tiny-mlp/seed~0/cal~train/ncal~64/dense/method~svd-llm/ratio~0.6/eval"
    assert runs.set_index("eval_dir").loc[shared, "studies"] == "main,lambda_sweep,calibration_size"
    diverged = runs[(runs["method"] == "svd") & (runs["value"] == math.inf)]
    assert len(diverged) == 2 and set(diverged["nonfinite_rows"]) == {3}  # with and without LoRA


def test_main_table_accuracy(tree):
    t = pd.read_csv(tree["tables"] / "main.csv", keep_default_na=False, na_values=[""])
    expect = [accuracy(Run("tiny-mlp", s, "prehab", True, 0.6, "none", "train", 64, "nuclear", 1.0, "whitened"))
              for s in (0, 1)]
    r = _row(t, "tiny-mlp", "prehab", 0.6)
    assert r["n"] == 2 and r["seeds"] == "0 1"
    assert r["mean"] == pytest.approx(sum(expect) / 2)
    assert r["std"] == pytest.approx(math.sqrt(2) * ACC_NOISE)
    ref = _row(t, "tiny-mlp", "svd-llm", 0.6)
    assert pd.isna(ref["vs_svdllm_verdict"])  # the reference itself
    assert r["rel_change_pct"] == pytest.approx(100 * (r["mean"] - ref["mean"]) / ref["mean"])
    # paired, in points: 30 more of the same 1,000 items right in both seeds
    assert r["vs_svdllm"] == pytest.approx(3.0) and r["vs_svdllm_low"] > 0 and r["vs_svdllm_verdict"] == "better"
    assert r["vs_svdllm_seeds"] == "0 1"
    assert r["vs_control"] == pytest.approx(3.1) and r["vs_control_verdict"] == "better"
    lost = _row(t, "tiny-mlp", "prehab", 0.4, lora="joint")  # Prehab loses here: the table must say so
    assert lost["vs_svdllm"] < 0 and lost["vs_svdllm_verdict"] == "worse" and lost["vs_control_verdict"] == "worse"
    control = _row(t, "tiny-mlp", "control", 0.6)  # one item in 1,000 fewer: undetectable
    assert control["vs_svdllm_verdict"] == "no detectable difference"
    assert pd.isna(control["vs_control_verdict"])  # the control is not compared with itself
    assert _row(t, "tiny-mlp", "svd", 0.6)["vs_svdllm_verdict"] == "worse"
    assert pd.isna(_row(t, "tiny-mlp", "dense")["vs_svdllm_verdict"])  # no reference: empty cell
    unc = _row(t, "tiny-mlp", "control")  # before compression: 0.90 -> 0.90, vs dense
    assert unc["vs_dense"] == pytest.approx(0.0) and unc["vs_dense_verdict"] == "no detectable difference"
    assert _row(t, "tiny-mlp", "prehab")["vs_dense_verdict"] == "worse"  # 0.895 vs 0.90
    assert _row(t, "tiny-mlp", "prehab", 0.6)["pre_mean"] == pytest.approx(0.895)


def test_main_table_perplexity_sign(tree):
    t = pd.read_csv(tree["tables"] / "main.csv", keep_default_na=False, na_values=[""])
    r, ref = _row(t, "tiny-lm", "prehab", 0.6), _row(t, "tiny-lm", "svd-llm", 0.6)
    assert r["mean"] < ref["mean"]  # lower perplexity ...
    assert r["rel_change_pct"] == pytest.approx(100 * (ref["mean"] - r["mean"]) / ref["mean"])
    assert r["vs_svdllm"] == pytest.approx(0.8) and r["vs_svdllm_verdict"] == "better"  # ratio 0.8 < 1: better
    lost = _row(t, "tiny-lm", "prehab", 0.4, lora="joint")
    assert lost["mean"] > _row(t, "tiny-lm", "svd-llm", 0.4, lora="joint")["mean"]
    assert lost["vs_svdllm"] == pytest.approx(1.3) and lost["vs_svdllm_verdict"] == "worse"
    diverged = _row(t, "tiny-lm", "svd", 0.6)  # one seed inf: mean inf, clearly worse
    assert math.isinf(diverged["mean"]) and diverged["vs_svdllm_verdict"] == "worse"


def test_markdown_pages(tree):
    md = (tree["tables"] / "main.md").read_text()
    assert "## tiny-mlp — accuracy (higher is better)" in md
    assert "## tiny-lm — perplexity (lower is better)" in md
    for label in ("dense (uncompressed)", "| SVD |", "SVD-LLM", "control (λ=0)", "Prehab(nuclear)", "| joint |"):
        assert label in md
    assert "| worse |" in md and "| better |" in md and "| no detectable difference |" in md
    assert "±" in md and "+3.0 [" in md and "×0.800 [" in md
    cal = pd.read_csv(tree["tables"] / "calibration_size.csv", keep_default_na=False, na_values=[""])
    one_seed = cal[(cal["method"] == "prehab") & cal["compressed"]]
    assert set(one_seed["vs_svdllm_seeds"].astype(str)) <= {"0", "0.0"} and one_seed["vs_svdllm_verdict"].all()
    cal_md = (tree["tables"] / "calibration_size.md").read_text()
    assert not [line for line in cal_md.splitlines() if line.startswith("|") and "±" in line]  # no std when n = 1
    assert "(1 seed: test-set noise only) |" in cal_md  # one seed: the verdict read the item interval, and says so
    assert set(one_seed["vs_svdllm_basis"]) == {"1 seed: test-set noise only"}
    assert (one_seed["vs_svdllm_low"] == one_seed["vs_svdllm_item_low"]).all()
    assert "| test-set noise [95%] |" in md and "| drop vs control [95%] |" in md
    sweep = pd.read_csv(tree["tables"] / "lambda_sweep.csv", keep_default_na=False, na_values=[""])
    for lam in (0.1, 1.0, 10.0):
        r = _row(sweep, "tiny-mlp", "prehab", 0.6, lam=lam)
        assert r["pre_mean"] == pytest.approx(0.90 - PRE_COST * lam)
    assert "before compression" in (tree["tables"] / "lambda_sweep.md").read_text()
    assert "disabled" in (tree["tables"] / "space_ablation.md").read_text()
    assert len(pd.read_csv(tree["tables"] / "space_ablation.csv")) == 0


def test_the_seed_level_interval_decides_and_the_item_interval_stays_beside_it(tree):
    """Two seeds: [low, high] is the t-interval over the per-seed differences (+3.3 and +2.9
    points: t with 1 degree of freedom), the item bootstrap is kept as the test set's noise."""
    from prehab.report.paired import t_interval

    t = pd.read_csv(tree["tables"] / "main.csv", keep_default_na=False, na_values=[""])
    r = _row(t, "tiny-mlp", "prehab", 0.6)
    assert r["vs_control_basis"] == "2 seeds: t-interval" and r["vs_control_seeds"] == "0 1"
    per_seed = [float(v) for v in r["vs_control_per_seed"].split()]
    assert per_seed == pytest.approx([3.3, 2.9])
    mean, low, high = t_interval(per_seed)
    assert (r["vs_control"], r["vs_control_low"], r["vs_control_high"]) == pytest.approx((mean, low, high))
    assert low < r["vs_control_item_low"] < mean < r["vs_control_item_high"] < high  # test-set noise alone: narrower


def test_the_drop_compression_causes_prehab_against_its_control(tree):
    """tiny-mlp at R = 0.6: Prehab 89.5% -> 63%, the control 90% -> 59.7% / 60.1% (seeds 0 / 1):
    Prehab loses 3.8 / 3.4 points less; tiny-lm: (35.2 / 20.2) / (44 / 20) = 0.8 / 1.01."""
    t = pd.read_csv(tree["tables"] / "main.csv", keep_default_na=False, na_values=[""])
    r = _row(t, "tiny-mlp", "prehab", 0.6)
    assert [float(v) for v in r["drop_vs_control_per_seed"].split()] == pytest.approx([3.8, 3.4])
    assert r["drop_vs_control"] == pytest.approx(3.6) and r["drop_vs_control_verdict"] == "better"
    assert r["before_vs_control"] == pytest.approx(-0.5)
    assert r["drop_vs_control"] == pytest.approx(r["vs_control"] - r["before_vs_control"])
    lm = _row(t, "tiny-lm", "prehab", 0.6)
    assert lm["drop_vs_control"] == pytest.approx(0.8 / 1.01) and lm["drop_vs_control_verdict"] == "better"
    assert pd.isna(_row(t, "tiny-mlp", "control", 0.6)["drop_vs_control"])  # only Prehab against its control
    assert pd.isna(_row(t, "tiny-mlp", "prehab")["drop_vs_control"])  # uncompressed: no drop


def test_the_gate_reads_the_mechanism_and_the_model_before_compression(tree):
    """lambda_sweep at R = 0.6: lambda 0.1 leaves 90% of its control's tail (the gate: the penalty
    did not reach the truncation error, instead of no detectable difference); lambda 10 costs 5
    points before compression (harmed; the interval's better stays); lambda 1 passes."""
    t = pd.read_csv(tree["tables"] / "lambda_sweep.csv", keep_default_na=False, na_values=[""])
    weak, fine, strong = (_row(t, "tiny-mlp", "prehab", 0.6, lam=lam) for lam in (0.1, 1.0, 10.0))
    assert weak["tail_vs_control"] == pytest.approx(0.9) and weak["tail_vs_control_seeds"] == "0 1"
    assert weak["vs_control_interval_verdict"] == "no detectable difference"
    assert weak["vs_control_verdict"] == "penalty did not reach the truncation error"
    assert fine["tail_vs_control"] == pytest.approx(0.5) and fine["vs_control_verdict"] == "better"
    assert strong["before_vs_control"] == pytest.approx(-5.0)
    assert strong["vs_control_interval_verdict"] == "better"
    assert strong["vs_control_verdict"] == "better (penalty harmed the model)"
    assert strong["drop_vs_control_verdict"] == "better (penalty harmed the model)"
    lm = _row(t, "tiny-lm", "prehab", 0.6, lam=10.0)  # perplexity x1.1 before compression: above 1.02
    assert lm["before_vs_control"] == pytest.approx(1.1) and lm["vs_control_verdict"] == "better (penalty harmed the model)"
    assert _row(t, "tiny-lm", "prehab", 0.6, lam=1.0)["vs_control_verdict"] == "better"  # x1.01: not harmed
    assert "| penalty did not reach the truncation error |" in (tree["tables"] / "lambda_sweep.md").read_text()
    main_page = (tree["tables"] / "main.md").read_text()  # by_ratio: the ratio the gate read, in a column of its own
    header = next(line for line in main_page.splitlines() if line.startswith("| ratio |")).split(" | ")
    rows = [line.split(" | ") for line in main_page.splitlines() if "Prehab(nuclear) λ=1 " in line]
    column = header.index("tail vs control")
    assert rows and all(row[column] == "0.50" for row in rows if row[2] == "no")


def test_gated_verdict_is_one_rule():
    from prehab.report.paired import BETTER, UNDETECTED, WORSE, seed_ratio
    from prehab.report.gate import HARMED, UNMEASURED, UNREACHED, gated_verdict

    equal_tails = seed_ratio({0: 5.0, 1: 7.0, 2: 6.0}, {0: 5.0, 1: 7.0, 2: 6.0}).mean  # Prehab did not move the tail
    assert gated_verdict(UNDETECTED, equal_tails, 0.0, "accuracy") == UNREACHED
    halved = seed_ratio({0: 2.5, 1: 3.5}, {0: 5.0, 1: 7.0}).mean
    assert halved == pytest.approx(0.5) and gated_verdict(UNDETECTED, halved, 0.0, "accuracy") == UNDETECTED
    assert gated_verdict(UNDETECTED, 0.5, -2.0, "accuracy") == HARMED
    assert gated_verdict(UNDETECTED, 0.5, -1.0, "accuracy") == UNDETECTED  # 1 point is allowed
    assert gated_verdict(UNDETECTED, 1.0, -2.0, "f1") == f"{UNREACHED}; {HARMED}"
    assert gated_verdict(BETTER, 1.0, 0.0, "accuracy") == f"better ({UNREACHED})"
    assert gated_verdict(WORSE, 0.5, -2.0, "mcc") == f"worse ({HARMED})"
    assert gated_verdict(UNDETECTED, math.nan, 0.0, "accuracy") == f"no detectable difference ({UNMEASURED})"
    assert gated_verdict(BETTER, math.nan, -2.0, "accuracy") == f"better ({HARMED}; {UNMEASURED})"
    assert gated_verdict(UNDETECTED, math.nan, -2.0, "accuracy") == f"{HARMED} ({UNMEASURED})"
    assert gated_verdict(UNDETECTED, 0.5, 1.03, "perplexity") == HARMED
    assert gated_verdict(UNDETECTED, 0.5, 1.01, "perplexity") == UNDETECTED
    assert gated_verdict(UNDETECTED, 0.5, math.nan, "perplexity") == UNDETECTED  # no uncompressed twin: no harm gate
    assert gated_verdict("both non-finite", 1.0, -2.0, "perplexity") == "both non-finite"


def test_the_mechanism_table(tree):
    """mechanism.csv|md: per arch, ratio and calibration the dense model's cut (reference), each
    control and its Prehab settings with the Prehab / control ratios paired by seed; the long
    table carries each model's readout, a LoRA model its cut's."""
    runs = pd.read_csv(tree["tables"] / "runs.csv", keep_default_na=False, na_values=[""])
    lora = runs[(runs["method"] == "prehab") & (runs["lora"] == "joint") & (runs["ratio"] == 0.6)
                & (runs["arch"] == "tiny-mlp") & (runs["seed"] == 0)]
    assert list(lora["mech_tail_abs_sum"]) == pytest.approx([DENSE_TAIL * 0.6 * CONTROL_TAIL * 0.5 * SEED_TAIL[0]])
    assert runs.loc[runs["method"] == "dense", "mech_tail_abs_sum"].isna().all()
    m = pd.read_csv(tree["tables"] / "mechanism.csv", keep_default_na=False, na_values=[""])
    cell = m[(m["arch"] == "tiny-mlp") & (m["ratio"] == 0.6) & (m["cal_samples"] == 64)]
    assert list(cell["role"]) == ["reference", "control", "prehab", "prehab", "prehab"]
    assert list(cell["lam"].iloc[2:]) == [0.1, 1.0, 10.0]
    ref, control, prehab = cell.iloc[0], cell.iloc[1], cell.iloc[3]
    assert ref["mech_tail_abs_sum"] == pytest.approx(60.0) and ref["mech_move_w_median"] == 0.0
    assert control["mech_tail_abs_sum"] == pytest.approx(66.0) and control["n"] == 2
    assert prehab["tail_abs_sum_ratio"] == pytest.approx(0.5) and prehab["tail_abs_sum_ratio_seeds"] == "0 1"
    assert [float(v) for v in prehab["tail_abs_sum_ratio_per_seed"].split()] == pytest.approx([0.49, 0.51])
    assert prehab["tail_abs_sum_ratio_low"] < 0.5 < prehab["tail_abs_sum_ratio_high"]
    assert prehab["energy_sum_ratio"] == pytest.approx(1.0) and prehab["dense_tail_abs_sum"] == pytest.approx(60.0)
    one_seed = m[(m["cal_samples"] == 16) & (m["role"] == "prehab")].iloc[0]  # calibration_size: seed 0, no control
    assert one_seed["n"] == 1 and pd.isna(one_seed["tail_abs_sum_ratio"])
    md = (tree["tables"] / "mechanism.md").read_text()
    assert "## tiny-mlp" in md and "| 0.6 | train 64 | dense model, SVD-LLM (reference) | 2 | 60 |" in md
    assert "| 0.500 [" in md and "| not measured |" not in md


def test_cuts_made_before_the_readout_read_not_measured(tmp_path):
    """A runs folder whose cuts carry no mechanism keys (older runs): the mechanism table says
    `not measured`, the gate `mechanism not measured`; nothing crashes. One control's readout
    alone is not enough for a ratio."""
    cfg = {"archs": ["tiny-mlp"], "studies": {"main": _study(["dense", "svd-llm", "control", "prehab"],
                                                             page="by_ratio", ratios=[0.6], lora=["none"])}}
    root = tmp_path / "runs"
    runs = make_tree(root, cfg, mechanism=False)
    control = next(run for run in runs.values() if run.method == "control" and run.compressed and run.seed == 0)
    write_mechanism(root, control)
    assert main(["report", "--runs", str(root), "--studies", json.dumps(cfg), "--tables", str(tmp_path / "tables"),
                 "--figures", str(tmp_path / "figures")]) == 0
    m = pd.read_csv(tmp_path / "tables" / "mechanism.csv", keep_default_na=False, na_values=[""])
    assert list(m["role"]) == ["reference", "control", "prehab"] and list(m["measured"]) == [False, True, False]
    assert m["tail_abs_sum_ratio"].isna().all()
    md = (tmp_path / "tables" / "mechanism.md").read_text()
    assert md.count("| not measured |") == 2
    t = pd.read_csv(tmp_path / "tables" / "main.csv", keep_default_na=False, na_values=[""])
    r = _row(t, "tiny-mlp", "prehab", 0.6)
    assert r["vs_control_verdict"] == "better (mechanism not measured)" and pd.isna(r["tail_vs_control"])


def test_figures_written(tree):
    from prehab.studies import FIGURES

    for name in FIGURES:
        path = tree["figures"] / f"{name}.png"
        assert path.stat().st_size > 5000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_of_disabled_study_is_still_written(tmp_path, tree):
    cfg = json.loads(json.dumps(CFG))
    cfg["studies"]["lambda_sweep"]["enabled"] = False
    cfg["studies"]["calibration_size"]["enabled"] = False
    rc = main(["report", "--runs", str(tree["root"]), "--studies", json.dumps(cfg),
               "--tables", str(tmp_path / "t"), "--figures", str(tmp_path / "f")])
    assert rc == 0
    for name in ("lambda_tradeoff.png", "calibration_size.png"):
        assert (tmp_path / "f" / name).stat().st_size > 1000
    assert "disabled" in (tmp_path / "t" / "lambda_sweep.md").read_text()


def test_pages_and_figures_follow_what_each_study_declares(tmp_path, tree):
    """No study name is special: renamed, `main` keeps its page and figures; undeclared, a
    figure is a note."""
    from prehab.report import collect

    cfg = json.loads(json.dumps(CFG))
    cfg["studies"] = {("headline" if k == "main" else k): v for k, v in cfg["studies"].items()}
    assert collect.declared(cfg, "metric_vs_ratio") == ["headline"]
    assert collect.declared(cfg, "spectra") == ["headline", "lambda_sweep"]
    cfg["studies"]["calibration_size"]["figures"] = []
    assert collect.declared(cfg, "calibration_size") == []
    rc = main(["report", "--runs", str(tree["root"]), "--studies", json.dumps(cfg),
               "--tables", str(tmp_path / "t"), "--figures", str(tmp_path / "f")])
    assert rc == 0
    assert (tmp_path / "t" / "headline.md").read_text() == (tree["tables"] / "main.md").read_text().replace(
        "study `main`", "study `headline`")
    assert (tmp_path / "t" / "lambda_sweep.md").read_text().startswith("# Study `lambda_sweep`")
    assert (tmp_path / "f" / "calibration_size.png").stat().st_size < (tree["figures"] / "calibration_size.png").stat().st_size


def test_missing_metrics_is_an_error(tmp_path, capsys):
    root = tmp_path / "runs"
    runs = make_tree(root)
    gone = next(p for p in runs if "method~svd-llm/ratio~0.4" in p)
    (root / gone / "metrics.json").unlink()
    args = ["report", "--runs", str(root), "--studies", json.dumps(CFG), "--tables", str(tmp_path / "t"),
            "--figures", str(tmp_path / "f")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 of" in err and f"{gone}/metrics.json" in err and "--allow-missing" in err
    assert main(args + ["--allow-missing"]) == 0
    assert len(pd.read_csv(tmp_path / "t" / "runs.csv")) == len(runs) - 1
    assert "missing" in (tmp_path / "t" / "main.md").read_text()


def test_bad_studies_json(tmp_path, capsys):
    assert main(["report", "--runs", str(tmp_path), "--studies", "{not json", "--tables", str(tmp_path / "t"),
                 "--figures", str(tmp_path / "f")]) == 2
    assert "--studies" in capsys.readouterr().err


def test_eval_dir_grammar_round_trips():
    from prehab.layout import parse_eval_dir

    for eval_dir, run in expand(CFG).runs.items():
        assert parse_eval_dir(eval_dir) == run
    for not_ours in ("arch~a/seed~0/dense/method~svd-llm/ratio~0.5/eval",  # svd-llm needs a calibration
                     "arch~a/seed~0/cal~train/ncal~8/dense/eval",  # the dense model lives above it
                     "arch~a/seed~0/dense/method~svd/ratio~0.50/eval",  # not the canonical number
                     "arch~a/seed~0/dense/eval/extra"):
        assert parse_eval_dir(not_ours) is None, not_ours


def test_by_products_are_reported_and_logged_once(tmp_path):
    """An evaluation no study names (a compress job's extra ratio) is a `by-products` row and
    MLflow run; one that does not parse as a run folder is ignored."""
    import mlflow

    root = tmp_path / "runs"
    runs = make_tree(root)
    named = "arch~tiny-mlp/seed~0/cal~train/ncal~64/dense/method~svd-llm/ratio~0.6/eval"
    extra = named.replace("ratio~0.6", "ratio~0.9")
    (root / extra).mkdir(parents=True)
    record = json.loads((root / named / "metrics.json").read_text())
    record["history"][-1]["ratio"] = 0.8  # what the folder says is checked against what the step states
    (root / extra / "metrics.json").write_text(json.dumps(record))
    args = ["report", "--runs", str(root), "--studies", json.dumps(CFG), "--tables", str(tmp_path / "tables"),
            "--figures", str(tmp_path / "figures")]
    assert main(args) == 2
    record["history"][-1]["ratio"] = 0.9
    (root / extra / "metrics.json").write_text(json.dumps(record))
    (root / "scratch" / "eval").mkdir(parents=True)
    (root / "scratch" / "eval" / "metrics.json").write_text((root / named / "metrics.json").read_text())
    assert main(["report", "--runs", str(root), "--studies", json.dumps(CFG),
                 "--tables", str(tmp_path / "tables"), "--figures", str(tmp_path / "figures")]) == 0
    table = pd.read_csv(tmp_path / "tables" / "runs.csv")
    assert len(table) == len(runs) + 1
    row = table.set_index("eval_dir").loc[extra]
    assert row["studies"] == "by-products" and row["ratio"] == 0.9 and row["method"] == "svd-llm"
    db = tmp_path / "mlflow.db"
    assert main(["mlflow-log", "--runs", str(root), "--studies", json.dumps(CFG), "--db", str(db),
                 "--artifacts", str(tmp_path / "artifacts")]) == 0
    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{db.resolve()}")
    try:
        df = mlflow.search_runs(search_all_experiments=True, max_results=10000)
        experiments = {e.experiment_id: e.name for e in mlflow.search_experiments()}
    finally:
        mlflow.set_tracking_uri(old)
    models = df[df["tags.prehab.role"] == "model"]
    assert set(models["tags.eval_dir"]) == {*runs, extra}
    logged = models[models["tags.eval_dir"] == extra]
    assert list(logged["experiment_id"].map(experiments)) == ["by-products"]  # in no study's experiment


def test_lambda_star_is_chosen_on_validation_and_never_reads_test_metrics(tmp_path):
    """main sweeps lambda: the page shows Prehab at lambda* = 0.1, best on validation (val_value_of),
    although 10 is best on test; making lambda 0.1's test metrics terrible changes nothing."""
    cfg = {"archs": ["tiny-mlp"], "studies": {"main": _study(["dense", "svd-llm", "control", "prehab"], page="by_ratio",
                                                              lam=[0.1, 1.0, 10.0], lora=["none"])}}
    root = tmp_path / "runs"
    runs = make_tree(root, cfg)

    def lambda_star_rows() -> list[str]:
        out = tmp_path / "tables"
        assert main(["report", "--runs", str(root), "--studies", json.dumps(cfg), "--tables", str(out),
                     "--figures", str(tmp_path / "figures")]) == 0
        return [line for line in (out / "main.md").read_text().splitlines() if "Prehab(nuclear) λ*=" in line]

    rows = lambda_star_rows()
    assert rows and all("λ*=0.1 " in line for line in rows)
    for eval_dir, run in runs.items():
        if run.method == "prehab" and run.lam == 0.1:
            path = root / eval_dir / "metrics.json"
            data = json.loads(path.read_text())
            data["metrics"]["accuracy"] = 0.01
            path.write_text(json.dumps(data))
            write_json(root / eval_dir / "scores.json", {"test": scores_of("accuracy", 0.01)})
    after = lambda_star_rows()
    assert after and all("λ*=0.1 " in line for line in after) and after != rows  # numbers moved, choice did not


def test_confirm_seeds_run_lambda_star_only_chosen_on_phase_a_seeds(tmp_path, capsys):
    """A study with confirm_seeds: phase A (seed 0) runs every lambda, `choose-lambda` picks 0.1 on
    its validation, phase B (seed 1) runs Prehab at 0.1 only; the page keeps 0.1 as lambda* even
    when seed 1's validation at 0.1 is terrible (averaged over both seeds it would lose), so the
    page and the jobs never disagree. Before phase A is evaluated the command names what is missing."""
    from prehab.studies import chosen_from_json

    study = _study(["dense", "svd-llm", "control", "prehab"], page="by_ratio", lam=[0.1, 1.0, 10.0], lora=["none"],
                   seeds=[0], confirm_seeds=[1])
    cfg = {"archs": ["tiny-mlp"], "studies": {"main": study}}
    phase_a = expand(cfg).runs.values()
    assert {r.method for r in phase_a if r.seed == 1} == {"dense", "svd-llm", "control"}
    assert {r.lam for r in phase_a if r.seed == 0 and r.method == "prehab"} == {0.1, 1.0, 10.0}
    root, choice = tmp_path / "runs", tmp_path / "choice.json"
    args = ["choose-lambda", "--runs", str(root), "--studies", json.dumps(cfg), "--study", "main", "--out", str(choice)]
    root.mkdir()
    assert main(args) == 2 and not choice.exists()
    assert "no validation metric after SVD-LLM for 1 phase-A setting(s)" in capsys.readouterr().err
    make_tree(root, cfg)
    assert main(args) == 0
    chosen = chosen_from_json(json.loads(choice.read_text())["lambda_star"])
    assert chosen == {("tiny-mlp", "nuclear", "whitened", "train", 64): 0.1}
    runs = make_tree(root, cfg, chosen={"main": chosen})
    phase_b = [r for r in runs.values() if r.seed == 1 and r.method == "prehab"]
    assert phase_b and {r.lam for r in phase_b} == {0.1}
    for eval_dir, run in runs.items():  # seed 1 at lambda 0.1: the worst on validation
        if run in phase_b:
            path = root / eval_dir / "metrics.json"
            data = json.loads(path.read_text())
            data["metrics"]["val_accuracy"] = 0.0
            path.write_text(json.dumps(data))
    out = tmp_path / "tables"
    assert main(["report", "--runs", str(root), "--studies", json.dumps(cfg), "--tables", str(out),
                 "--figures", str(tmp_path / "figures")]) == 0
    rows = [line for line in (out / "main.md").read_text().splitlines() if "Prehab(nuclear) λ*=" in line]
    assert rows and all("λ*=0.1 " in line for line in rows)
    table = pd.read_csv(out / "main.csv")
    star = table[(table["method"] == "prehab") & (table["lam"] == 0.1) & table["ratio"].notna()]
    assert list(star["seeds"]) == ["0 1", "0 1"] and (star["val_choice"] > star["val_mean"]).all()


def test_an_extra_test_set_is_a_block_of_its_own_with_its_own_paired_rows(tmp_path):
    """A llama-7b evaluation that also scored C4 gives two rows: WikiText-2 under `llama-7b`, C4
    under `llama-7b:c4`, whose paired comparison reads the C4 rows of both models' scores."""
    import json

    from prehab.layout import Run
    from prehab.report.collect import Record, to_frame
    from prehab.report.paired import compare_runs

    def evaluation(folder: str, wiki_nll: float, c4_nll: float) -> Record:
        (tmp_path / folder).mkdir(parents=True)
        scores = {"test": {"nll": [wiki_nll] * 4, "tokens": [7] * 4, "finite": [1] * 4},
                  "test:c4": {"nll": [c4_nll, c4_nll + 1, c4_nll, c4_nll], "tokens": [7] * 4, "finite": [1] * 4}}
        (tmp_path / folder / "scores.json").write_text(json.dumps(scores))
        metrics = {"metric": "perplexity", "perplexity": 2.0, "val_perplexity": 2.1, "c4_perplexity": 3.0,
                   "c4_nonfinite_rows": 0, "extra_tests": ["c4"]}
        run = Run("llama-7b", 0, "dense", False)
        return Record(run, ["main"], {"metrics": metrics})

    rec = evaluation(Run("llama-7b", 0, "dense", False).eval_dir, 10.0, 20.0)
    df = to_frame([rec])
    assert list(df["arch"]) == ["llama-7b", "llama-7b:c4"]
    assert list(df["value"]) == [2.0, 3.0] and list(df["val_value"]) == [2.1, 2.1]
    c4_dir = df["eval_dir"].iloc[1]
    evaluation("other/eval", 10.0, 10.0)  # C4 NLL 41 in all against 81: better on C4, equal on WikiText-2
    better = compare_runs(tmp_path, {0: "other/eval#c4"}, {0: c4_dir}, "perplexity")
    assert better.estimate < 1 and better.estimate == pytest.approx(math.exp((41.0 - 81.0) / 28))
    same_on_wiki = compare_runs(tmp_path, {0: "other/eval"}, {0: df["eval_dir"].iloc[0]}, "perplexity")
    assert same_on_wiki.estimate == pytest.approx(1.0)


def test_lambda_star_falls_back_to_the_study_ratio_closest_to_0_6():
    """llama-small is cut at 0.2 and 0.4 only: lambda* is chosen at 0.4 there, not left empty
    (which would drop every Prehab row from the page, as a first llama run showed)."""
    import pandas as pd

    from prehab.report import choice

    def rows(ratios):
        return pd.DataFrame([{"arch": "a", "method": "prehab", "compressed": True, "ratio": r, "lora": "none",
                              "surrogate": "nuclear_fro", "space": "weight", "cal_source": "train",
                              "cal_samples": 96, "lam": lam, "val_mean": val, "metric": "perplexity"}
                             for r in ratios for lam, val in ((1.0, 5.0 + r), (10.0, 4.0 + r))])

    assert choice.choice_ratio(rows([0.2, 0.4])) == 0.4
    assert choice.choice_ratio(rows([0.4, 0.6, 0.8])) == 0.6
    assert choice.choice_ratio(rows([0.4, 0.8])) == 0.8  # a tie: the larger
    assert list(choice.lambda_star(rows([0.2, 0.4])).values()) == [10.0]
    merged = pd.concat([rows([0.2, 0.4]), rows([0.6]).assign(arch="b", lam=lambda d: d["lam"] / 10)])
    assert choice.lambda_star(merged) == {("a", "nuclear_fro", "weight", "train", 96): 10.0,
                                          ("b", "nuclear_fro", "weight", "train", 96): 1.0}


def _two_spaces_report(tmp_path, recipes: list[str]):
    """`prehab report` of config/damped.yaml's shape on tiny-mlp: lambda 10 in the weight and
    whitened spaces (and `recipes`), R without LoRA; returns the tables folder."""
    prehab = {"surrogate": ["nuclear"], "lam": [10.0], "space": ["weight", "whitened"], "recipes": recipes}
    cfg = {"archs": ["tiny-mlp"], "studies": {"main": {**_study(["dense", "svd-llm", "control", "prehab"],
                                                                  page="by_ratio", lora=["none"]), "prehab": prehab}}}
    root = tmp_path / "runs"
    make_tree(root, cfg)
    assert main(["report", "--runs", str(root), "--studies", json.dumps(cfg), "--tables", str(tmp_path / "tables"),
                 "--figures", str(tmp_path / "figures")]) == 0
    return tmp_path / "tables"


def test_one_lambda_in_two_spaces_beside_a_recipe_reads_apart(tmp_path):
    """config/damped.yaml's shape: lambda 10 in two spaces and a recipe (its own lambda 5). One
    lambda is not a sweep (no lambda* and no choice text), and each control says its space."""
    page = (_two_spaces_report(tmp_path, ["authors-vit"]) / "main.md").read_text()
    assert "λ*" not in page and "among {" not in page
    for space in ("weight", "whitened"):
        assert f"| control (λ=0) space={space} |" in page and f"Prehab(nuclear) λ=10 space={space} |" in page
        assert f"control (λ=0) space={space}: " in page  # the before-compression line
    assert "| control (authors-vit at λ=0" in page and "Prehab(authors-vit" in page


def test_rank_deficient_calibrations_are_named_with_their_layers(tmp_path, tree):
    """A calibration whose metrics.json counts rank-deficient factors heads every page with a
    warning naming the calibration and the layers; one that factored cleanly is not listed."""
    cfg = {"archs": ["tiny-mlp"], "studies": {"main": _study(["dense", "svd-llm", "control", "prehab"],
                                                             page="by_ratio", lora=["none"])}}
    root = tmp_path / "runs"
    make_tree(root, cfg)
    for seed, deficient in ((0, True), (1, False)):
        folder = root / f"arch~tiny-mlp/seed~{seed}/cal~train/ncal~64"
        (folder / "grams.pt").write_bytes(b"")
        damping = {"blocks.0.q": {"rank_deficient": deficient}, "blocks.0.fc2": {"rank_deficient": False}}
        write_json(folder / "metrics.json", {"step": "calibrate", "damping": damping,
                                             "metrics": {"n_rank_deficient": int(deficient)}})
    assert main(["report", "--runs", str(root), "--studies", json.dumps(cfg), "--tables", str(tmp_path / "tables"),
                 "--figures", str(tmp_path / "figures")]) == 0
    page = (tmp_path / "tables" / "main.md").read_text()
    assert ("**Warning: rank-deficient whitening** (fewer calibration tokens than inputs, or a second moment that "
            "does not factor without jitter) in 1 calibration(s), the factor of blocks.0.q in 1: "
            "arch~tiny-mlp/seed~0/cal~train/ncal~64.") in page
    assert "seed~1/cal~train" not in page and "blocks.0.fc2" not in page
    assert "rank-deficient" not in (tree["tables"] / "main.md").read_text()  # no calibration flagged there


def test_best_control_of_a_budget_is_chosen_on_validation_and_never_reads_test_metrics():
    """Per budget (steps, calibration, snapshot), the control of any space whose compressed models
    score best on validation at the choice ratio without LoRA; test means never move it."""
    import pandas as pd

    from prehab.report import choice

    def rows(val_weight: float, val_whitened: float, test_shift: float = 0.0):
        base = {"arch": "a", "method": "control", "compressed": True, "lora": "none", "cal_source": "train",
                "cal_samples": 96, "snapshot": math.nan, "metric": "accuracy", "lam": 0.0}
        out = []
        for space, label, steps, val in (("weight", "none", 80, val_weight), ("whitened", "none", 80, val_whitened),
                                         ("whitened", "authors-vit", 40, 0.99)):
            for ratio in (0.6, 0.8):
                out.append({**base, "space": space, "surrogate": label, "steps": steps, "ratio": ratio,
                            "val_mean": val - (ratio - 0.6), "mean": 0.5 + test_shift * (space == "weight")})
        return pd.DataFrame(out)

    chosen = choice.best_controls(rows(0.80, 0.85))
    assert chosen[("a", "train", 96, 80, None)] == ("whitened", "none")
    assert chosen[("a", "train", 96, 40, None)] == ("whitened", "authors-vit")  # a budget of its own
    assert choice.best_controls(rows(0.80, 0.85, test_shift=0.4)) == chosen  # test metrics never read
    assert choice.best_controls(rows(0.86, 0.85))[("a", "train", 96, 80, None)] == ("weight", "none")


def test_prehab_is_compared_with_the_best_control_of_its_budget(tmp_path, monkeypatch):
    """Two spaces at the same steps, the whitened control 2 points better: each Prehab row is
    paired with the best control of any space (the whitened one), and the page shows the column."""
    plain = accuracy
    monkeypatch.setitem(globals(), "accuracy", lambda run: plain(run) + (
        0.02 if run.method == "control" and run.compressed and run.space == "whitened" else 0.0))
    import pandas as pd

    folder = _two_spaces_report(tmp_path, [])
    table = pd.read_csv(folder / "main.csv")
    cells = table[(table["method"] == "prehab") & table["compressed"]]
    assert set(cells["best_control"]) == {"control (λ=0), space whitened"}
    own, other = cells[cells["space"] == "whitened"], cells[cells["space"] == "weight"]
    assert (own["vs_best_control"] == own["vs_control"]).all()
    assert (other["vs_best_control"] - other["vs_control"]).round(6).eq(-2.0).all()  # 2 points more to beat
    assert "vs best control [95%]" in (folder / "main.md").read_text()
