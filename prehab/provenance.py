"""Which code made an output: the package version, a hash of the package source and the git
commit. One algorithm for both users: every step's metrics.json, and the workflow's rules,
whose `code` param reruns a job when the code it runs changes (Snakemake does not track code
inside an installed package)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import prehab
from prehab.paths import REPO_ROOT

REPORT_PACKAGE = "report"  # the steps never run prehab/report/: its changes rerun only the report


def config_hash(cfg: dict) -> str:
    """sha256 of the canonical (sorted, compact) JSON of a config: what the MLflow runs are tagged
    with and what reruns the report rule when the studies change."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def source_hash(exclude: tuple[str, ...] = ()) -> str:
    """sha256 (16 hex digits) of the package's *.py files (relative paths and contents), minus
    the top-level subpackages named in `exclude`."""
    root = Path(prehab.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] not in exclude:
            digest.update(str(relative).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def step_source_hash() -> str:
    """The hash of the code a pipeline step runs (everything but the report)."""
    return source_hash(exclude=(REPORT_PACKAGE,))


def code_version() -> dict[str, str]:
    """What a step's metrics.json records under `code`: equal to its rule's `code` param."""
    info = {"prehab_version": prehab.__version__, "source_sha256": step_source_hash()}
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()
    except OSError:  # git missing: the source hash above still identifies the code
        sha = ""
    info["git_commit"] = sha or "unknown"
    return info
