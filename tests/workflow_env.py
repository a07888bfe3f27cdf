"""What the workflow tests share: a new user's shell, the README's main command, and tables
compared without their wall times (imported by conftest.py, test_workflow.py, test_slurm.py)."""

from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# A new user's shell: no `prehab` on PATH, the venv's or any other (the README's commands call
# .venv/bin/snakemake by its path, so the workflow must not need one).
ENV = {**os.environ,
       "PATH": os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                               if p and not (Path(p) / "prehab").exists())}
README = REPO / "README.md"
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
TEST_CONFIG = REPO / "config" / "test.yaml"
# Fields that hold wall times, the code version or file sizes: compared by nothing.
WALL_KEYS = {"wall_time_s", "code", "seconds", "checkpoint_bytes", "checkpoint_bytes_before",
             "checkpoint_bytes_after", "dense_checkpoint_bytes"}


def readme_main_command() -> list[str]:
    """The snakemake part of the README's first command (`bash scripts/setup.sh && <this>`)."""
    lines = README.read_text().splitlines()
    fence = lines.index("```bash")
    first = next(line for line in lines[fence + 1:] if line.strip() and not line.startswith("#"))
    setup, sep, main = first.partition(" && ")
    assert setup == "bash scripts/setup.sh" and sep, first
    return shlex.split(main)


def readme_snakemake(results: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The README's main command, literally, from the repository root, on the tiny config."""
    cmd = [*readme_main_command(), "--configfile", "config/test.yaml", "--config", f"results_dir={results}", *args]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def table_text(path: Path, results: Path) -> str:
    """A table with the results folder masked and the WALL_KEYS columns dropped."""
    rows = read_csv(path) if path.suffix == ".csv" else None
    if rows is None:
        return path.read_text().replace(str(results), "<results>")
    return repr([{k: v.replace(str(results), "<results>") for k, v in row.items() if k not in WALL_KEYS}
                 for row in rows])
