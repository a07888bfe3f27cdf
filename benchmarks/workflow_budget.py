"""Estimate how long a workflow config takes on this machine, from measured job times.

Counts the jobs a config plans from scratch per (architecture, rule) (benchmarks/planned.py),
multiplies them by the mean wall time of the same (architecture, rule) in Snakemake benchmark files of an
earlier run (`results/benchmarks/**.tsv`), and prints the job-seconds and the wall time on N
parallel job slots. Pairs never measured are listed, not guessed.

    .venv/bin/python benchmarks/workflow_budget.py [--configfile config/config.yaml]
        [--benchmarks results/benchmarks] [--cores 2]
"""

import argparse
import collections
import csv
import re
from pathlib import Path

from planned import planned_jobs  # benchmarks/planned.py (scripts run from benchmarks/ as sys.path[0])

ARCH = re.compile(r"arch~([^/]+)")


def job_counts(configfile: Path) -> collections.Counter:
    """(arch, rule) -> number of jobs the config plans from scratch."""
    return collections.Counter((job.arch, job.rule) for job in planned_jobs([configfile]))


def measured(folder: Path) -> dict[tuple[str, str], float]:
    """(arch, rule) -> mean seconds over the benchmark files found."""
    times = collections.defaultdict(list)
    for path in folder.rglob("*.tsv"):
        arch = ARCH.search(str(path))
        if arch:
            rows = list(csv.DictReader(path.open(), delimiter="\t"))
            rule = "rehab" if path.stem.startswith("rehab_") else path.stem  # rehab_<schedule>.tsv
            times[(arch[1], rule)].append(float(rows[0]["s"]))
    return {key: sum(v) / len(v) for key, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--benchmarks", type=Path, default=Path("results/benchmarks"))
    parser.add_argument("--cores", type=int, default=2, help="parallel job slots (one thread each)")
    args = parser.parse_args()
    counts, seconds = job_counts(args.configfile), measured(args.benchmarks)
    total, missing = 0.0, []
    print(f"{'arch':12s} {'rule':18s} {'jobs':>5s} {'s/job':>8s} {'job-s':>9s}")
    for (arch, rule), n in sorted(counts.items()):
        if (arch, rule) not in seconds:
            missing.append(f"{arch}/{rule} x{n}")
            continue
        total += n * seconds[(arch, rule)]
        print(f"{arch:12s} {rule:18s} {n:5d} {seconds[(arch, rule)]:8.1f} {n * seconds[(arch, rule)]:9.0f}")
    print(f"measured part: {total:.0f} job-seconds = {total / args.cores / 60:.1f} min on {args.cores} slots")
    if missing:
        print("never measured (not counted): " + ", ".join(missing))


if __name__ == "__main__":
    main()
