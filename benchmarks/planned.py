"""The jobs a workflow config plans, read from a Snakemake dry run: the one parser of its output
that the benchmarks share (job counts, per-job command lines), so they never disagree on what a
config runs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RULE = re.compile(r"^(?:local)?rule (\w+):")
ARCH = re.compile(r"arch~([\w.-]+)")
LAUNCH = re.compile(r" -m prehab(?:\.launch --processes (\d+))? ")  # the CLI, alone or through the launcher


@dataclass
class Job:
    """One planned `prehab` job: its rule, architecture and command line after `-m prehab`."""

    rule: str
    arch: str
    command: list[str]
    processes: int = 1  # more: started by `python -m prehab.launch --processes N`

    def flag(self, name: str) -> list[str]:
        """The values after `name` up to the next flag."""
        if name not in self.command:
            return []
        i = self.command.index(name) + 1
        out = []
        while i < len(self.command) and not self.command[i].startswith("--"):
            out.append(self.command[i])
            i += 1
        return out


def planned_jobs(configs: list[Path]) -> list[Job]:
    """Every `prehab` job of the configs (later files override earlier ones), as if nothing had
    run yet: the dry run writes into a throw-away results folder, so existing outputs of the
    config's own folder neither hide jobs nor get touched. Jobs that do not call the package
    (MLflow logging, the report) and jobs of no architecture are left out."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "snakemake", "--dry-run", "--printshellcmds", "--cores", "1",
                "--directory", str(REPO), "--configfile", *(str(Path(c).resolve()) for c in configs), "--config", f"results_dir={tmp}/r"]
        out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"dry run failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    jobs, rule = [], None
    for line in out.stdout.splitlines():
        found = RULE.match(line)
        if found:
            rule = found.group(1)
        arch = ARCH.search(line)
        if line.startswith("Shell command:") and arch and LAUNCH.search(line):
            launch = LAUNCH.search(line)
            command = shlex.split(line[launch.end():].split(" > ")[0])
            jobs.append(Job(rule, arch.group(1), command, int(launch.group(1) or 1)))
    return jobs
