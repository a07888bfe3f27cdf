"""Atomic step outputs: a step writes into a hidden temporary folder that is renamed into place
only when everything in it is complete, so a crash or a bad input never leaves a half output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import prehab
from prehab.paths import REPO_ROOT


def code_version() -> dict[str, str]:
    """Package version plus a hash of the package source (rules rerun when the code changes)."""
    digest = hashlib.sha256()
    for path in sorted(Path(prehab.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    info = {"prehab_version": prehab.__version__, "source_sha256": digest.hexdigest()[:16]}
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()
    except OSError:  # git missing: the source hash above still identifies the code
        sha = ""
    info["git_commit"] = sha or "unknown"
    return info


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan; "inf" keeps the fact visible
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a hidden staging folder beside `out`; on success its files move into `out`, on error
    it vanishes. Files are moved one by one (os.replace), so other entries of `out`, such as the
    folders of downstream steps nested below a model, are never touched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        out.mkdir(exist_ok=True)
        staged = sorted(tmp.iterdir(), key=lambda p: p.name == "metrics.json")  # metrics.json last
        for path in staged:
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class StepRecord:
    """Collects what a step measured and writes metrics.json with params, code version and wall time."""

    def __init__(self, step: str, params: dict[str, Any]):
        self.step = step
        self.params = params
        self.metrics: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self._start = time.perf_counter()

    def write(self, folder: Path) -> dict:
        record = {
            "step": self.step,
            "params": self.params,
            "metrics": self.metrics,
            "wall_time_s": round(time.perf_counter() - self._start, 3),
            "code": code_version(),
            **self.extra,
        }
        write_json(Path(folder) / "metrics.json", record)
        return record
