"""The tiny config through a real one-node SLURM cluster on localhost (`--executor slurm`).

Runs where PREHAB_TEST_SLURM=1 (`.ci/run` sets it, after installing Debian's munge,
slurm-client, slurmctld and slurmd with scripts/install_slurm.sh); skips in one line, saying
why, where the machine cannot run the daemons (not root, a package missing).
tests/slurm/start_cluster.sh starts munged, slurmctld and slurmd without accounting (no
slurmdbd), hence `--slurm-status-command squeue`; stop_cluster.sh stops what it started, by pid.
Snakemake runs under `timeout -s INT`: without a working status command the plugin waits
forever and only SIGINT stops it.

What it checks: every job but the local rules went through sbatch, each of those job ids is
known to the cluster as COMPLETED (squeue keeps finished jobs for MinJobAge = 1 h), and every
study table equals the local run's (tests/conftest.py `tiny_run`). The job ids go to the
terminal summary, so CI's log shows them. Then multi-process jobs (tests/slurm/two_processes.yaml:
llama-tiny's Prehab and rehab on 2 processes each, asking for 2 tasks): submitted with
--ntasks=2, started through prehab.launch, and their tables equal the same overlay's local run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_workflow import TEST_CONFIG_COUNTS  # the tiny config's jobs per rule, counted by hand there
from workflow_env import BIN, DEFAULT_CONFIG, ENV, REPO, TEST_CONFIG, table_text

TIMEOUT_S = int(os.environ.get("PREHAB_SLURM_TIMEOUT_S", 1800))
PARTITION = "debug"
LOCAL_RULES = ("mlflow", "report", "all")
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.environ.get("PREHAB_TEST_SLURM") != "1",
                       reason="SLURM test off: set PREHAB_TEST_SLURM=1 to run it (.ci/run does)"),
]


def why_not_here() -> str | None:
    """Why this machine cannot run the local cluster, in one line (None: it can)."""
    if os.geteuid() != 0:
        return "SLURM test skipped: starting munged, slurmctld and slurmd needs root"
    missing = [b for b in DAEMONS if shutil.which(b) is None]
    if missing:
        return f"SLURM test skipped: not installed: {', '.join(missing)} (bash scripts/install_slurm.sh)"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = why_not_here()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm_state")
    start = subprocess.run(["bash", str(REPO / "tests/slurm/start_cluster.sh"), str(state), PARTITION],
                           capture_output=True, text=True, timeout=120)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield state
    finally:
        subprocess.run(["bash", str(REPO / "tests/slurm/stop_cluster.sh"), str(state)], timeout=60)


def cluster_jobs() -> dict[str, str]:
    """{job id: state} of every job the controller still knows (finished ones: MinJobAge)."""
    proc = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split() for line in proc.stdout.splitlines() if line.strip())


def _through_slurm(tmp_path: Path, *configs: Path) -> tuple[Path, str]:
    """The configs run through the cluster with the shipped profile (this cluster's partition and
    an account, not checked without accounting, in place of the CHANGE_ME placeholders): (the
    results folder, Snakemake's output)."""
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/profile.yaml").read_text())
    profile["default-resources"].update(slurm_partition=PARTITION, slurm_account="prehabtest")
    profile["slurm-status-command"] = "squeue"
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    (profile_dir / "profile.yaml").write_text(yaml.safe_dump(profile))
    workdir = tmp_path / "work"
    workdir.mkdir()
    results = workdir / "results"
    # every config file, as the local run from the repository root reads them (the Snakefile's
    # `configfile:` is relative to --directory)
    cmd = ["timeout", "-s", "INT", "-k", "30", str(TIMEOUT_S),
           str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(DEFAULT_CONFIG), *map(str, configs), "--config", f"results_dir={results}",
           "--workflow-profile", str(profile_dir), "--jobs", "2", "--printshellcmds"]
    proc = subprocess.run(cmd, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S + 60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return results, out


def _same_tables(results: Path, local_results: Path) -> list[str]:
    """Every study table of both runs, equal with wall times and the folders masked; their names."""
    tables = sorted(p.name for p in (local_results / "tables").iterdir() if p.suffix in (".csv", ".md"))
    assert tables and tables == sorted(p.name for p in (results / "tables").iterdir() if p.suffix in (".csv", ".md"))
    for name in tables:
        assert table_text(results / "tables" / name, results) == table_text(local_results / "tables" / name,
                                                                              local_results), name
    return tables


def test_tiny_config_through_slurm_equals_the_local_run(cluster, tmp_path, tiny_run, summary_lines):
    local_results, _, _ = tiny_run
    results, out = _through_slurm(tmp_path, TEST_CONFIG)
    total = sum(TEST_CONFIG_COUNTS.values())
    assert f"{total} of {total} steps (100%) done" in out

    # every job but the local rules went through sbatch, and the cluster ran each to completion
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    expected = total - sum(TEST_CONFIG_COUNTS[rule] for rule in LOCAL_RULES)
    assert len(submitted) == len(set(submitted)) == expected, out[-3000:]
    known = cluster_jobs()
    states = {job: known.get(job, "unknown to squeue") for job in submitted}
    assert set(states.values()) == {"COMPLETED"}, states
    summary_lines.append(f"SLURM: {len(submitted)} jobs went through sbatch, all COMPLETED in squeue: "
                         f"job ids {', '.join(submitted)}")

    # the same numbers as the local run: every table, wall times masked
    tables = _same_tables(results, local_results)
    assert (results / "mlflow.db").is_file()
    summary_lines.append(f"SLURM: {len(tables)} tables equal the local run's")


def test_two_process_jobs_through_slurm_equal_the_local_run(cluster, tmp_path, summary_lines):
    overlay = REPO / "tests" / "slurm" / "two_processes.yaml"
    local = tmp_path / "local"
    proc = subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--configfile", str(DEFAULT_CONFIG), str(TEST_CONFIG),
                           str(overlay), "--config", f"results_dir={local}"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    slurm = tmp_path / "slurm"
    slurm.mkdir()
    results, out = _through_slurm(slurm, TEST_CONFIG, overlay)
    launched = [line for line in out.splitlines() if "-m prehab.launch --processes 2" in line]
    assert {"prehab", "rehab"} <= {line.split("--processes 2 ", 1)[1].split()[0] for line in launched}, out[-3000:]
    assert "tasks=2" in out
    tables = _same_tables(results, local)
    summary_lines.append(f"SLURM: 2-process Prehab and rehab jobs ({len(launched)} launches): {len(tables)} tables "
                         "equal the local run's")
