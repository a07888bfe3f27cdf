"""The Snakemake workflow: job counts of dry runs (counted by hand from the configs), the tiny
config end to end, reruns of nothing / only the new jobs, schema errors, lint and format.

Dry runs use `--directory` in a temporary folder. The tiny run is the README's main command
itself, run from the repository root as a new user would (no `.venv/bin` on PATH), with the
tiny config and a temporary `results_dir`, so nothing lands in the repository's results/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from workflow_env import (BIN, DEFAULT_CONFIG, ENV, README, REPO, TEST_CONFIG, WALL_KEYS, read_csv,
                          readme_main_command, readme_snakemake, table_text)

RULES = ("pretrain", "calibrate", "prehab", "recalibrate", "compress_svd", "compress_svd_llm", "rehab",
         "evaluate", "mlflow", "report", "all")


def snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(cmd, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The first `Job stats` table of Snakemake's output as {rule: count}, without `total`."""
    lines = output.splitlines()
    start = lines.index("Job stats:") + 3  # title, header, dashes
    counts = {}
    for line in lines[start:]:
        match = re.fullmatch(r"(\S+)\s+(\d+)", line.strip())
        if not match:
            break
        counts[match[1]] = int(match[2])
    total = counts.pop("total")
    assert total == sum(counts.values()), counts
    return counts


def dry_run(workdir: Path, *configfiles: Path) -> dict[str, int]:
    """Job counts of a dry run of `configfiles`, overlays merged in order over config/config.yaml
    as `--configfile X Y` merges them from the repository root (in another --directory the
    Snakefile's relative `configfile:` is not found, so it is named too)."""
    configs = [str(DEFAULT_CONFIG)] + [str(f) for f in configfiles if f != DEFAULT_CONFIG]
    proc = snakemake(workdir, "--configfile", *configs, "--dry-run", "--quiet", "rules")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if "Nothing to be done" in proc.stdout + proc.stderr:
        return {}
    return job_counts(proc.stdout)


# ----------------------------------------------------------------------------- dry runs


def _main_counts(fine_tuned: int, sweep: int) -> dict[str, int]:
    """Job counts of a one-testbed config: main with `fine_tuned` Prehab/control models per seed
    (3 seeds), and `sweep` more lambdas of lambda_sweep at seed 0."""
    seeds, k = 3, fine_tuned
    main_per_seed = {
        "pretrain": 1,
        "calibrate": 1,  # train, per-arch size
        "prehab": k,  # the control, Prehab at lambda 1 and 10 (nuclear_fro, weight space), the recipe and its control
        "recalibrate": k,  # each before its SVD-LLM
        "compress_svd": 1,  # the dense model, at every ratio
        "compress_svd_llm": 1 + k,  # dense and the fine-tuned models, at every ratio
        "rehab": 2 + k,  # sequential LoRA of svd, svd-llm and the fine-tuned models, at every LoRA ratio
        "evaluate": 1 + k,  # uncompressed: dense and the fine-tuned models
    }
    secondary = {"prehab": sweep, "recalibrate": sweep, "compress_svd_llm": sweep, "evaluate": sweep}
    expected = {rule: seeds * n + secondary.get(rule, 0) for rule, n in main_per_seed.items()}
    return expected | {"mlflow": 1, "report": 1, "all": 1}


def _prehab_commands(*configs: str, tmp_path: Path) -> tuple[list[str], list[str]]:
    """The planned `prehab prehab` command lines: (the recipes' runs, the others)."""
    proc = snakemake(tmp_path, "--configfile", *configs, "--dry-run", "--printshellcmds")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    commands = [line for line in proc.stdout.splitlines() if " -m prehab prehab " in line]
    return [c for c in commands if "--recipe " in c], [c for c in commands if "--recipe " not in c]


def test_dry_run_default_config_counts_every_rule(tmp_path):
    # config/config.yaml: main on vit-small with seeds 0, 1, 2: the control, Prehab with nuclear
    # and tail_abs at lambda 1 and 10, the authors-vit recipe and its control; lambda_sweep on
    # vit-small, seed 0, adds lambda 0.1 and 100 of both surrogates (its 1 and 10 and the control
    # are main's). The recipe runs take arch_settings.vit-small.recipe_steps (40), the others
    # prehab_steps (80); a recipe fixes lr, batch size and its absolute lambda, so none of those
    # flags is passed to it.
    expected = _main_counts(fine_tuned=7, sweep=4)
    assert sum(expected.values()) == 145
    assert dry_run(tmp_path, DEFAULT_CONFIG) == expected
    recipe, plain = _prehab_commands(str(DEFAULT_CONFIG), tmp_path=tmp_path)
    assert len(recipe) == 3 * 2 and len(plain) == 3 * 5 + 4, (len(recipe), len(plain))
    assert all("--recipe authors-vit" in c and "--steps 40" in c and "--lr " not in c and "--batch-size " not in c
               and "--lam-scale" not in c for c in recipe)
    assert all("--steps 80" in c and "--lr " in c for c in plain)
    every_step = " --penalty-every 1 --estimator lagged "
    assert all(every_step in c for c in recipe + plain) and not any("--penalty-stagger" in c for c in recipe + plain)
    tails = [c for c in plain if "--surrogate tail_abs" in c]
    assert len(tails) == 3 * 2 + 2 and all("--tail-ratio 0.6" in c for c in tails)
    assert not any("--tail-ratio" in c for c in plain if c not in tails)


def test_bert_config_runs_the_default_study_on_bert_small(tmp_path):
    # config/bert.yaml over the default: the same main on bert-small (authors-bert), no sweep
    expected = _main_counts(fine_tuned=5, sweep=0)
    assert sum(expected.values()) == 99
    assert dry_run(tmp_path, REPO / "config" / "bert.yaml") == expected
    recipe, plain = _prehab_commands(str(DEFAULT_CONFIG), str(REPO / "config" / "bert.yaml"), tmp_path=tmp_path)
    assert len(recipe) == 6 and len(plain) == 9, (len(recipe), len(plain))
    assert all("--recipe authors-bert" in c and "--steps 40" in c and "--lr " not in c for c in recipe)
    assert all("--arch-opt n_test=2000" in c and "results/bert-run/" in c for c in recipe + plain)


def test_prehab_lam_scale_reaches_every_prehab_job_but_the_recipes(tmp_path):
    recipe, plain = _prehab_commands(str(DEFAULT_CONFIG), tmp_path=tmp_path)
    assert recipe and plain and all(" --lam-scale grad " in c for c in plain)
    assert not any("--lam-scale" in c for c in recipe)  # a recipe's lambda is the authors' absolute one
    overlay = tmp_path / "absolute.yaml"
    overlay.write_text("prehab: {lam_scale: none}\n")
    recipe, plain = _prehab_commands(str(DEFAULT_CONFIG), str(overlay), tmp_path=tmp_path)
    assert all(" --lam-scale none " in c for c in plain) and not any("--lam-scale" in c for c in recipe)


def test_prehab_damping_reaches_every_prehab_job_and_no_calibration(tmp_path):
    overlay = tmp_path / "damped.yaml"
    overlay.write_text("prehab: {damping: 0.01}\n")
    recipe, plain = _prehab_commands(str(DEFAULT_CONFIG), str(overlay), tmp_path=tmp_path)
    assert recipe and plain and all(" --damping 0.01 " in c for c in recipe + plain)
    proc = snakemake(tmp_path, "--configfile", str(DEFAULT_CONFIG), str(overlay), "--dry-run", "--printshellcmds")
    calibrations = [line for line in proc.stdout.splitlines() if " -m prehab calibrate " in line]
    assert calibrations and not any("--damping" in c for c in calibrations)  # surgery's whitening stays undamped


TEST_CONFIG_COUNTS = {
    # 3 fixtures x seed 0 (all studies)
    "pretrain": 3,
    # train/32 per fixture
    "calibrate": 3,
    # main: prehab lam 1 per fixture; lambda_sweep adds vit-tiny's control (lam 1 shared)
    "prehab": 3 + 1,
    # each of the 4 Prehab/control models before its SVD-LLM
    "recalibrate": 4,
    # one job per (model, method) cuts every ratio of the union {0.5, 0.9}: extreme_ratio's
    # plain SVD of vit-tiny
    "compress_svd": 1,
    # main: (dense, prehab) x 3 fixtures; lambda_sweep adds vit-tiny's control
    "compress_svd_llm": 2 * 3 + 1,
    # extreme_ratio: sequential LoRA on the SVD model (at the one LoRA ratio, 0.9)
    "rehab": 1,
    # only uncompressed models: compress and rehab evaluate what they make.
    # 3 dense; main's 3 Prehab models; lambda_sweep's control
    "evaluate": 3 + 3 + 1,
    "mlflow": 1,
    "report": 1,
    "all": 1,
}
# Rows of runs.csv: the models the studies name (compress jobs also make ratios they do not).
# main 3 x (dense, prehab, svd-llm@0.5, prehab@0.5); lambda_sweep: control before/after;
# extreme_ratio: svd + LoRA (its LoRA-free twin is not in the grid: lora is [sequential])
TEST_CONFIG_MODELS = 3 * 4 + 2 + 1
# Evaluated models no study names, made by the same jobs (study `by-products`): the compress
# jobs cut at both ratios of the union {0.5, 0.9}: svd of vit-tiny at 0.5 and at 0.9 without
# LoRA, and the 7 SVD-LLM models at 0.9.
TEST_CONFIG_BY_PRODUCTS = 2 + 7


def test_dry_run_test_config_counts_every_rule(tmp_path):
    assert dry_run(tmp_path, TEST_CONFIG) == TEST_CONFIG_COUNTS
    assert set(TEST_CONFIG_COUNTS) == set(RULES)


def test_dry_run_testbeds_config_runs_only_its_study(tmp_path):
    # 3 testbeds x 3 seeds: the dense model (evaluated), its calibration, plain SVD and SVD-LLM
    # at R = 0.6; every study of config/config.yaml that it merges over is switched off.
    per_model = {"pretrain": 1, "evaluate": 1, "calibrate": 1, "compress_svd": 1, "compress_svd_llm": 1}
    expected = {rule: 3 * 3 * n for rule, n in per_model.items()} | {"mlflow": 1, "report": 1, "all": 1}
    assert dry_run(tmp_path, REPO / "config" / "testbeds.yaml") == expected


def test_dry_run_budget_config_plans_the_snapshots(tmp_path):
    # 2 testbeds x seed 0: a control and a Prehab run (320 steps) each save 3 snapshots, so 4
    # models per run are re-calibrated, cut at R = 0.6
    # and evaluated; nothing else of config/config.yaml runs.
    runs, models = 2 * 2, 2 * 2 * 4
    expected = {"pretrain": 2, "calibrate": 2, "prehab": runs, "recalibrate": models,
                "compress_svd_llm": models, "evaluate": models,
                "mlflow": 1, "report": 1, "all": 1}
    assert dry_run(tmp_path, REPO / "config" / "budget.yaml") == expected


@pytest.mark.parametrize("name,prehab_jobs,rehab_jobs", [("ablations", 14, 0), ("llama", 15, 21), ("damped", 18, 0),
                                                        ("decisive-vit", 10, 13), ("decisive-vit-tail", 10, 13),
                                                        ("decisive-vit+weight", 8, 11), ("decisive-vit+whitened", 6, 9),
                                                        ("decisive-bert", 18, 21)])
def test_dry_run_other_configs_plan(tmp_path, name, prehab_jobs, rehab_jobs):
    # ablations: vit-small seed 0, 14 Prehab/control runs (docs/results.md "Configs of their own"); llama: 3 seeds x
    # (control + 2 lambdas + the recipe and its control), LoRA on each of those and on SVD and
    # SVD-LLM; damped: 3 seeds x (lambda 10 and its control in two spaces, the recipe and its
    # control); decisive-*: phase A before its checkpoint, seed 0's surrogates x lambdas x 2 spaces
    # (vit: 1 x 2 per config, bert: 2 x 3) and 2 controls, seeds 1 and 2's controls (their Prehab
    # waits for lambda*), LoRA on each of those and on the 3 SVD-LLM models; decisive-vit+weight
    # (the weight overlay): seed 0's 2 lambdas in the weight space and every seed's controls in
    # both spaces; decisive-vit+whitened: 3 seeds of the whitened control and Prehab at phase A's
    # lambda*, no checkpoint
    files = [REPO / "config" / f"{part if i == 0 else name.split('+')[0] + '-' + part}.yaml"
             for i, part in enumerate(name.split("+"))]
    counts = dry_run(tmp_path, *files)
    assert counts["prehab"] == prehab_jobs and counts.get("rehab", 0) == rehab_jobs and counts["all"] == 1
    assert counts.get("choose_lambda", 0) == (1 if name.startswith("decisive") and "whitened" not in name else 0)


def test_dry_run_paper_config_counts_every_rule(tmp_path):
    # vit-b16, BERT-base on 5 GLUE tasks (bert-base = SST-2, -mnli, -qnli, -mrpc, -cola),
    # llama-7b: 7 architectures x 3 seeds. Fine-tuned per model: main's control, nuclear_fro and
    # stable at lambda 1, the recipe and its control (5); lambda_sweep adds lambda 0.01, 0.1 and
    # 10 on seed 0 (extreme_ratio reuses lambda 1 and the control). LoRA (main only) recovers
    # SVD and SVD-LLM of the dense model and SVD-LLM of the 5 fine-tuned ones.
    counts = dry_run(tmp_path, REPO / "config" / "paper.yaml")
    archs = 7
    models, main_tuned, sweep_extra = archs * 3, 5, 3
    tuned = models * main_tuned + archs * sweep_extra
    expected = {"pretrain": models, "calibrate": models, "compress_svd": models, "prehab": tuned,
                "recalibrate": tuned, "evaluate": models + tuned, "compress_svd_llm": models + tuned,
                "rehab": models * (2 + main_tuned), "mlflow": 1, "report": 1, "all": 1}
    assert counts == expected


def _planned_jobs(output: str) -> list[dict[str, str]]:
    """Each job of a `--dry-run --printshellcmds` output: its rule, wildcards, resources, shell."""
    jobs = []
    for block in re.split(r"\n(?=\S*rule \w+:)", output):
        rule = re.match(r"\S*rule (\w+):", block)
        if not rule:
            continue
        fields = dict(re.findall(r"^\s+(wildcards|resources): (.*)$", block, flags=re.M))
        shell = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        jobs.append({"rule": rule[1], **fields, "shell": shell[1] if shell else ""})
    return jobs


def test_paper_config_jobs_ask_for_their_gpus_and_processes(tmp_path):
    """config/paper.yaml's training jobs carry arch_settings.<arch>.resources: LLaMA-7B's Prehab
    asks for 8 GPUs and starts 8 processes with torchrun, its rehab 4 and 4, in bf16 with
    recomputation and 8 micro-batches; every other training job of the paper-scale
    architectures 1 GPU and 1 process; the embedded default asks for no GPU and starts no
    torchrun."""
    configs = ("--configfile", str(DEFAULT_CONFIG), str(REPO / "config" / "paper.yaml"))
    proc = snakemake(tmp_path, *configs, "--dry-run", "--printshellcmds")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    training = [j for j in _planned_jobs(proc.stdout) if j["rule"] in ("pretrain", "prehab", "rehab")]
    llama_prehab = [j for j in training if j["rule"] == "prehab" and "arch=llama-7b" in j["wildcards"]]
    assert len(llama_prehab) == 18
    for job in llama_prehab:
        assert "gpu=8" in job["resources"] and "tasks=8" in job["resources"], job
        assert "-m prehab.launch --processes 8 prehab" in job["shell"], job
        assert "--precision bf16 --micro-batches 8 --recompute" in job["shell"], job
    llama_rehab = [j for j in training if j["rule"] == "rehab" and "arch=llama-7b" in j["wildcards"]]
    assert len(llama_rehab) == 21
    for job in llama_rehab:
        assert "gpu=4" in job["resources"] and "tasks=4" in job["resources"], job
        assert "-m prehab.launch --processes 4 rehab" in job["shell"], job
    others = [j for j in training if "arch=llama-7b" not in j["wildcards"]]
    assert others and all("gpu=1," in j["resources"] and "prehab.launch" not in j["shell"] for j in others)
    proc = snakemake(tmp_path, "--configfile", str(DEFAULT_CONFIG), "--dry-run", "--printshellcmds", "--forceall")
    default = [j for j in _planned_jobs(proc.stdout) if j["rule"] in ("pretrain", "prehab", "rehab")]
    assert default and all("gpu=0," in j["resources"] and "prehab.launch" not in j["shell"] and
                           "--precision" not in j["shell"] for j in default)


def test_a_job_on_several_nodes_asks_for_gpus_per_node_and_starts_a_launcher_on_each(tmp_path):
    overlay = tmp_path / "nodes.yaml"
    overlay.write_text("arch_settings:\n  llama-7b:\n    micro_batches: 4\n    resources:\n"
                       "      prehab: {gpus: 8, processes: 8, nodes: 2}\n")
    proc = snakemake(tmp_path, "--configfile", str(DEFAULT_CONFIG), str(REPO / "config" / "paper.yaml"), str(overlay),
                     "--dry-run", "--printshellcmds")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = [j for j in _planned_jobs(proc.stdout) if j["rule"] == "prehab" and "arch=llama-7b" in j["wildcards"]]
    assert len(jobs) == 18
    for job in jobs:
        assert "gpu=0," in job["resources"] and "gres=gpu:8" in job["resources"], job
        assert "nodes=2" in job["resources"] and "tasks=16" in job["resources"], job
        assert job["shell"].startswith("srun --overlap --nodes 2 --ntasks-per-node 1 "), job
        assert "-m prehab.launch --nodes 2 --processes 8 prehab" in job["shell"], job


def test_dry_run_single_gpu_config_counts_every_rule(tmp_path):
    # config/single-gpu.yaml over the default: 3 testbeds x 3 seeds; main's fine-tuned models are
    # the control, Prehab at 3 lambdas, the recipe and its control (6), each also at 3 snapshots;
    # lambda_sweep adds lambda 0.01, 100 and 1000 (no snapshots, no LoRA).
    configs = ("--configfile", str(DEFAULT_CONFIG), str(REPO / "config" / "single-gpu.yaml"))
    proc = snakemake(tmp_path, *configs, "--dry-run", "--quiet", "rules")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    models, main_tuned, sweep_extra, snaps = 3 * 3, 6, 3, 3
    tuned = models * (main_tuned * (1 + snaps) + sweep_extra)  # every model SVD-LLM cuts after fine-tuning
    expected = {"pretrain": models, "calibrate": models, "compress_svd": models,
                "prehab": models * (main_tuned + sweep_extra), "recalibrate": tuned,
                "evaluate": models + tuned, "compress_svd_llm": models + tuned,
                "rehab": models * (2 + main_tuned), "mlflow": 1, "report": 1, "all": 1}
    assert job_counts(proc.stdout) == expected
    assert sum(expected.values()) == 930


def test_invalid_value_fails_naming_the_key(tmp_path):
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["studies"]["lambda_sweep"]["ratios"] = [1.5]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "--configfile", str(bad), "--dry-run")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config: studies.lambda_sweep.ratios[0] = 1.5: not allowed; allowed: a number < 1" in out
    assert "$defs" not in out and "Traceback" not in out  # no schema dump, no Python traceback
    assert not (tmp_path / "results").exists()  # refused before any job

    # YAML 1.1 reads 1e-3 as a string: the message says how to write it
    bad.write_text(TEST_CONFIG.read_text().replace("lam: [1.0]", "lam: [1e-3]"))
    proc = snakemake(tmp_path, "--configfile", str(bad), "--dry-run")
    assert proc.returncode != 0
    assert "'1e-3'" in proc.stdout + proc.stderr and "1.0e-3" in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- the tiny run


def test_readme_main_command_runs_without_the_venv_on_path(tiny_run):
    """Every job of the tiny run started and finished: none hit `prehab: command not found`."""
    results, _, proc = tiny_run
    assert readme_main_command()[0] == ".venv/bin/snakemake"
    assert "command not found" not in proc.stdout + proc.stderr
    assert f"{sum(TEST_CONFIG_COUNTS.values())} of {sum(TEST_CONFIG_COUNTS.values())} steps (100%) done" in proc.stderr
    logs = list((results / "logs").rglob("*.log"))
    assert logs and not [log for log in logs if "command not found" in log.read_text(errors="replace")]


def test_report_from_runs_rebuilds_a_configs_tables_from_a_larger_grid(tiny_run, tmp_path):
    """scripts/report_from_runs.py: the tiny config's own tables again, and a narrower config
    (lambda_sweep off) read from the same runs gives the same main table and a disabled sweep page."""
    results, _, _ = tiny_run
    script = [sys.executable, str(REPO / "scripts" / "report_from_runs.py"), "--runs", str(results / "runs")]
    same = subprocess.run([*script, "--configfile", str(TEST_CONFIG), "--out", str(tmp_path / "same")],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert same.returncode == 0, same.stderr[-3000:]
    for table in sorted((results / "tables").glob("*.csv")) + sorted((results / "tables").glob("*.md")):
        assert (tmp_path / "same" / "tables" / table.name).read_text() == table.read_text(), table.name
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(yaml.safe_dump({"studies": {"lambda_sweep": {"enabled": False}}}))
    sub = subprocess.run([*script, "--configfile", str(TEST_CONFIG), str(narrow), "--out", str(tmp_path / "sub")],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert sub.returncode == 0, sub.stderr[-3000:]
    assert (tmp_path / "sub" / "tables" / "main.csv").read_text() == (results / "tables" / "main.csv").read_text()
    assert "Study disabled" in (tmp_path / "sub" / "tables" / "lambda_sweep.md").read_text()


@pytest.mark.slow
def test_tiny_config_end_to_end(tiny_run):
    results, elapsed, _ = tiny_run
    print(f"tiny workflow wall time: {elapsed:.0f} s")

    runs = read_csv(results / "tables" / "runs.csv")
    # one row per evaluated model (one metric each): every eval folder of the run, once
    evaluated = sorted(p.parent.relative_to(results / "runs").as_posix()
                       for p in (results / "runs").rglob("eval/metrics.json"))
    assert len(evaluated) == TEST_CONFIG_MODELS + TEST_CONFIG_BY_PRODUCTS
    assert sorted(r["eval_dir"] for r in runs) == evaluated
    assert sum(r["studies"] == "by-products" for r in runs) == TEST_CONFIG_BY_PRODUCTS
    assert {r["arch"] for r in runs} == {"vit-tiny", "bert-tiny", "llama-tiny"}
    assert {r["metric"] for r in runs} == {"accuracy", "perplexity"}
    control = [r for r in runs if r["method"] == "control" and r["studies"] != "by-products"]
    assert len(control) == 2 and all(r["eval_dir"].startswith(
        "arch~vit-tiny/seed~0/cal~train/ncal~32/prehab~none/lam~0/space~whitened") for r in control)

    # per study: one row per configuration (seeds averaged; one seed here)
    main = read_csv(results / "tables" / "main.csv")
    assert len(main) == 3 * 4  # 3 fixtures x (dense, prehab, svd-llm@0.5, prehab@0.5)
    assert {(r["arch"], r["method"], r["compressed"]) for r in main} == {
        (arch, method, compressed)
        for arch in ("vit-tiny", "bert-tiny", "llama-tiny")
        for method, compressed in (("dense", "False"), ("prehab", "False"), ("svd-llm", "True"), ("prehab", "True"))
    }
    sweep = read_csv(results / "tables" / "lambda_sweep.csv")
    assert sorted((r["method"], r["compressed"]) for r in sweep) == [
        ("control", "False"), ("control", "True"), ("prehab", "False"), ("prehab", "True"), ("svd-llm", "True")]
    extreme = read_csv(results / "tables" / "extreme_ratio.csv")
    assert [(r["method"], r["ratio"], r["lora"]) for r in extreme] == [("svd", "0.9", "sequential")]

    for name in ("metric_vs_ratio", "lambda_tradeoff", "spectra", "trajectories", "calibration_size"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 0
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    logged = mlflow.search_runs(search_all_experiments=True, max_results=10000)
    models = logged[logged["tags.prehab.role"] == "model"]  # each study's runs of its models (and by-products)
    assert sorted(set(models["tags.eval_dir"])) == evaluated  # every evaluated model is in the store
    assert (results / "logs" / "arch~vit-tiny" / "seed~0" / "dense" / "pretrain.log").is_file()
    assert (results / "benchmarks" / "arch~vit-tiny" / "seed~0" / "dense" / "eval" / "evaluate.tsv").is_file()


@pytest.mark.slow
def test_second_invocation_has_nothing_to_do(tiny_run):
    results, _, _ = tiny_run
    proc = readme_snakemake(results)
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_one_more_lambda_reruns_only_its_jobs(tiny_run, tmp_path):
    results, _, _ = tiny_run
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["studies"]["lambda_sweep"]["prehab"]["lam"].append(0.1)
    more = tmp_path / "more.yaml"
    more.write_text(yaml.safe_dump(config))
    proc = readme_snakemake(results, "--configfile", str(more), "--dry-run", "--quiet", "rules")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # vit-tiny at lambda 0.1: its Prehab model (evaluated), its re-calibration, its SVD-LLM job
    # (which evaluates its models); then the aggregation (its inputs grew) and the target rule.
    # Nothing upstream, no other study.
    assert job_counts(proc.stdout) == {
        "prehab": 1, "recalibrate": 1, "compress_svd_llm": 1, "evaluate": 1, "mlflow": 1, "report": 1, "all": 1}


@pytest.mark.slow
def test_confirm_seeds_run_phase_b_at_the_lambda_phase_a_chose(tiny_run, tmp_path):
    """lambda_sweep with one more lambda and confirm_seeds [1] (on a copy of the tiny run): the
    choose_lambda checkpoint picks lambda* from seed 0's runs, then Snakemake plans seed 1's
    Prehab at that lambda only (the other lambda never runs there) beside seed 1's control, and
    the study's table holds lambda* with both seeds."""
    import json
    import shutil

    from prehab.layout import fmt

    results = tmp_path / "results"
    shutil.copytree(tiny_run[0], results)
    config = yaml.safe_load(TEST_CONFIG.read_text())
    sweep = config["studies"]["lambda_sweep"]
    sweep["prehab"]["lam"].append(0.1)
    sweep["confirm_seeds"] = [1]
    more = tmp_path / "confirm.yaml"
    more.write_text(yaml.safe_dump(config))
    proc = readme_snakemake(results, "--configfile", str(more), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    chosen = json.loads((results / "choice" / "lambda_sweep.json").read_text())["lambda_star"]
    assert [(c["arch"], c["surrogate"], c["space"]) for c in chosen] == [("vit-tiny", "nuclear_fro", "whitened")]
    lam = chosen[0]["lam"]
    assert lam in (1.0, 0.1)
    seed1 = results / "runs" / "arch~vit-tiny" / "seed~1" / "cal~train" / "ncal~32"
    tuned = sorted(p.relative_to(seed1).as_posix() for p in seed1.glob("prehab~*/lam~*"))
    assert tuned == sorted(["prehab~none/lam~0", f"prehab~nuclear_fro/lam~{fmt(lam)}"])
    rows = [r for r in read_csv(results / "tables" / "lambda_sweep.csv")
            if r["method"] == "prehab" and r["ratio"] and float(r["lam"]) == lam]
    assert [r["seeds"] for r in rows] == ["0 1"]
    others = [r for r in read_csv(results / "tables" / "lambda_sweep.csv")
              if r["method"] == "prehab" and r["ratio"] and float(r["lam"]) != lam]
    assert [r["seeds"] for r in others] == ["0"] and others[0]["val_choice"] == others[0]["val_mean"]


def _report_files(page: str) -> dict[str, str]:
    """The files a Snakemake HTML report embeds, by file name, decoded."""
    import base64

    pattern = r"data:[a-z/+.-]+;charset=utf8;filename=([^;]+);base64,([A-Za-z0-9+/=]+)"
    return {m.group(1): base64.b64decode(m.group(2)).decode(errors="replace") for m in re.finditer(pattern, page)}


@pytest.mark.slow
def test_html_report_of_the_tiny_run(tiny_run):
    """The report shows every enabled study's table, the mechanism table and the findings as HTML
    tables, only the figures an enabled study declares, and captions that name no disabled study."""
    results, _, _ = tiny_run
    proc = readme_snakemake(results, "--report", str(results / "report.html"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (results / "report.html").read_text(errors="replace")
    files = _report_files(page)
    studies = yaml.safe_load(TEST_CONFIG.read_text())["studies"]
    enabled = [name for name, study in studies.items() if study.get("enabled", True)]
    disabled = [name for name in studies if name not in enabled]
    assert disabled, "the tiny config switches some studies off"
    for name in enabled + ["mechanism", "findings"]:
        assert "<table>" in files[f"{name}.html"], name
    assert not [name for name in files if name.endswith(".csv") and name != "runs.csv"]  # no table as a download only
    declared = {figure for name in enabled for figure in studies[name].get("figures", [])}
    assert {name for name in files if name.endswith(".png")} == {f"{figure}.png" for figure in declared}
    captions = re.findall(r'"caption": "((?:[^"\\]|\\.)*)"', page)
    assert captions and not [c for c in captions for name in disabled if f">{name}<" in c]


# ----------------------------------------------------------------------------- style


def test_snakemake_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--configfile", str(DEFAULT_CONFIG), "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_snakefmt_check_is_clean():
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_conda_env_matches_pyproject():
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "envs" / "prehab.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in env["dependencies"]
    assert sorted(p for p in pip if not p.startswith("-e")) == sorted(deps)
    assert "-e ../.." in pip  # the package itself (see the comment in envs/prehab.yaml)


# ----------------------------------------------------------------------------- crash and resume

# Fields that legitimately differ between two runs: wall times, the code version, and checkpoint
# sizes (a checkpoint stores its history, whose input paths hold the results folder's name).
def _comparable(value):
    """A metrics.json without its wall times and code version (by name, nothing else)."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in WALL_KEYS}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _records(results: Path) -> dict[str, dict]:
    import json

    return {p.relative_to(results).as_posix(): _comparable(json.loads(p.read_text().replace(str(results), "<results>")))
            for p in sorted((results / "runs").rglob("metrics.json"))}


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_to_the_same_tables(tiny_run, tmp_path):
    """A second run on the same results folder is refused; then SIGKILL the
    whole first run while a prehab job trains, check that nothing half-written is left,
    unlock, start the same command again with --rerun-incomplete: it completes, and every metrics.json and every table
    equals the uninterrupted run's (so two runs from scratch are identical too)."""
    import json
    import signal

    import torch

    reference, _, _ = tiny_run
    results = tmp_path / "results"
    cmd = [*readme_main_command(), "--configfile", "config/test.yaml", "--config", f"results_dir={results}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list((results / "logs").rglob("prehab.log")) if (results / "logs").exists() else []
        if any("prehab" in p.read_text(errors="replace") for p in logs):  # a progress bar: training
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before any prehab job trained"
    second = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    refused = second.stdout + second.stderr  # one writer at a time: the lock, or the running job's outputs
    assert second.returncode != 0 and ("cannot be locked" in refused or "incomplete" in refused.lower()), refused[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for path in (results / "runs").rglob("model.pt"):
        torch.load(path, weights_only=True)  # every checkpoint in place is whole
    for path in (results / "runs").rglob("metrics.json"):
        json.loads(path.read_text())
    assert not (results / "tables" / "main.md").exists()

    unlock = subprocess.run([*cmd, "--unlock"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert unlock.returncode == 0, unlock.stderr
    # after a kill, Snakemake's metadata marks the killed job's outputs incomplete (none of them
    # exists: steps write atomically); docs/workflow.md's resume command says --rerun-incomplete
    again = subprocess.run([*cmd, "--rerun-incomplete"], cwd=REPO, env=ENV, capture_output=True, text=True,
                           timeout=1800)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert _records(results) == _records(reference)
    for table in sorted((reference / "tables").iterdir()):
        assert table_text(results / "tables" / table.name, results) == table_text(table, reference), table.name
