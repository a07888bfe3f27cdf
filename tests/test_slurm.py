"""The tiny config through a real one-node SLURM cluster on localhost (`--executor slurm`).

Opt-in: PREHAB_TEST_SLURM=1, root, and the Debian packages munge slurm-client slurmctld slurmd
(`apt-get install --no-install-recommends ...`). tests/slurm/start_cluster.sh starts munged,
slurmctld and slurmd without accounting (no slurmdbd), hence `--slurm-status-command squeue`;
stop_cluster.sh stops them by pid. Snakemake runs under `timeout -s INT`: without a working
status command the plugin waits forever and only SIGINT stops it (/work/shared/SLURM.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow import ENV  # a user's shell: no `prehab` on PATH
from test_workflow import TEST_CONFIG_COUNTS  # the tiny config's jobs per rule, counted by hand there

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMEOUT_S = int(os.environ.get("PREHAB_SLURM_TIMEOUT_S", 1800))
PARTITION = "debug"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.environ.get("PREHAB_TEST_SLURM") != "1", reason="set PREHAB_TEST_SLURM=1 to run"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root")
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"not installed: {missing} (apt-get install --no-install-recommends "
                    "munge slurm-client slurmctld slurmd)")
    state = tmp_path_factory.mktemp("slurm_state")
    start = subprocess.run(["bash", str(REPO / "tests/slurm/start_cluster.sh"), str(state), PARTITION],
                           capture_output=True, text=True, timeout=120)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield state
    finally:
        subprocess.run(["bash", str(REPO / "tests/slurm/stop_cluster.sh"), str(state)], timeout=60)


def test_tiny_config_through_slurm(cluster, tmp_path):
    # The shipped profile, with this cluster's partition and an account (not checked without
    # accounting) in place of the CHANGE_ME placeholders.
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/profile.yaml").read_text())
    profile["default-resources"].update(slurm_partition=PARTITION, slurm_account="prehabtest")
    profile["slurm-status-command"] = "squeue"
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    (profile_dir / "profile.yaml").write_text(yaml.safe_dump(profile))
    workdir = tmp_path / "work"
    workdir.mkdir()

    cmd = ["timeout", "-s", "INT", "-k", "30", str(TIMEOUT_S),
           str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(REPO / "config/test.yaml"), "--workflow-profile", str(profile_dir), "--jobs", "2"]
    proc = subprocess.run(cmd, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S + 60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    # every job but the local rules (mlflow, report, all) went through sbatch
    submitted = re.findall(r"has been submitted with SLURM jobid \d+", out)
    total = sum(TEST_CONFIG_COUNTS.values())
    local = sum(TEST_CONFIG_COUNTS[rule] for rule in ("mlflow", "report", "all"))
    assert len(submitted) == total - local, out[-3000:]
    assert f"{total} of {total} steps (100%) done" in out
    assert (workdir / "results/tiny/tables/runs.csv").is_file()
    assert (workdir / "results/tiny/mlflow.db").is_file()
