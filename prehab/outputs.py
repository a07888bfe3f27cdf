"""Atomic step outputs: a step writes into a hidden temporary folder that is renamed into place
only when everything in it is complete, so a crash or a bad input never leaves a half output."""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from prehab.errors import UsageError
from prehab.layout import METRICS_FILE, STEP_FILES
from prehab.numerics import code_paths
from prehab.provenance import code_version


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


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside `path`; on success it is renamed onto `path`, on error
    it vanishes, so a crash never leaves a half-written file (caches, metrics.json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)  # mkstemp makes 0600 files; outputs and caches are shared like any file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: Path, *, first_wins: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary folder beside `path`, renamed to `path` as a whole on success
    (`path` must not exist yet); on error it is removed. `first_wins`: for a cache that parallel
    jobs may build at once (same contents), a `path` that another process completed meanwhile
    is kept and this copy dropped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError:  # ENOTEMPTY / EEXIST: the rename target is a finished folder
            if not (first_wins and path.is_dir() and any(path.iterdir())):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, data: dict) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n")


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
        staged = sorted(tmp.iterdir(), key=lambda p: p.name == METRICS_FILE)  # metrics.json last
        for path in staged:
            os.replace(path, out / path.name)
        for stale in out.parent.glob(f".{glob.escape(out.name)}.tmp-*"):  # left by killed runs of this step
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_out(out: Path, step: str, inputs: list[Path]) -> None:
    """Refuse, before any work, an output folder that would overwrite something else: a file, an
    input of this command, a folder holding files no step writes (a user's own files), or a
    folder holding another step's output (rerunning the same step into its own folder is fine:
    that is how a workflow reruns a job; sub-folders are other steps' outputs nested below it).

    Raises:
        UsageError: naming the folder and what it holds.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; pass a folder")
    resolved = out.resolve()
    for path in inputs:
        folder = Path(path).resolve()
        folder = folder if folder.is_dir() else folder.parent
        if resolved == folder:
            raise UsageError(f"--out {str(out)!r} is this command's input folder; writing there would overwrite it")
    record = out / METRICS_FILE
    foreign = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")
                     and not STEP_FILES.fullmatch(p.name)) if out.is_dir() else []
    if foreign:
        shown = ", ".join(repr(name) for name in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UsageError(f"--out {str(out)!r} holds files no prehab step writes ({shown}); pass a new or empty "
                         "folder")
    if record.is_file():
        try:
            other = json.loads(record.read_text()).get("step")
        except (json.JSONDecodeError, AttributeError):
            other = "unknown"
        if other != step:
            raise UsageError(f"--out {str(out)!r} holds the output of step {other!r}; choose another folder")


class StepRecord:
    """Collects what a step measured and writes metrics.json with params, code version and wall time."""

    def __init__(self, step: str, params: dict[str, Any], started: float | None = None):
        """`started`: the step's perf_counter() start when the record is made later than that."""
        self.step = step
        self.params = params
        self.metrics: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self.files: dict[str, Any] = {}  # file name -> JSON data written beside metrics.json
        self._start = time.perf_counter() if started is None else started

    def write(self, folder: Path) -> dict:
        record = {
            "step": self.step,
            "params": self.params,
            "metrics": self.metrics,
            "wall_time_s": round(time.perf_counter() - self._start, 3),
            "code": code_version(),
            "machine": code_paths(),
            **self.extra,
        }
        for name, data in self.files.items():
            write_json(Path(folder) / name, data)
        write_json(Path(folder) / METRICS_FILE, record)
        return record
