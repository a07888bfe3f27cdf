"""`prehab report` and `prehab mlflow-log`: the reporting subcommands (wired by prehab/cli.py).

Only argparse here at import time: pandas, matplotlib and mlflow load inside the commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STUDIES_HELP = ('the studies config as a JSON string {"archs": [...], "studies": {name: {...}}} '
                "(the `studies` section of config/config.yaml), or a path to a JSON file")


def register(subparsers) -> None:
    """Add `report` and `mlflow-log` to the CLI's subparsers."""
    fmt = argparse.HelpFormatter
    common = argparse.ArgumentParser(add_help=False)  # the grid both commands read
    common.add_argument("--runs", required=True, type=Path, help="root of the run folders (arch~A/seed~S/...)")
    common.add_argument("--studies", required=True, help=STUDIES_HELP)
    common.add_argument("--allow-missing", action="store_true",
                        help="go on without models whose metrics.json is missing (default: error naming them)")
    p = subparsers.add_parser(
        "report", formatter_class=fmt, parents=[common],
        help="per-study tables (CSV + Markdown), the long runs table and the figures from all metrics.json",
        description="Read every evaluated model of the study grid into one long table (tables/runs.csv), "
                    "write <study>.csv/.md per study (mean ± std over seeds, change vs SVD-LLM, verdict) "
                    "and the fixed set of figures.")
    p.add_argument("--tables", required=True, type=Path, help="output folder for tables")
    p.add_argument("--figures", required=True, type=Path, help="output folder for figures")
    p.set_defaults(func=run_report)

    m = subparsers.add_parser(
        "mlflow-log", formatter_class=fmt, parents=[common],
        help="import every evaluated model into a fresh MLflow SQLite store (one run per model)",
        description="Rebuild the MLflow SQLite db (built beside it, then renamed over it): one experiment "
                    "per study, each evaluated model logged once (in its first study) with all axes, "
                    "studies, code version and config hash as tags; Prehab/control runs also get their "
                    "training curve.")
    m.add_argument("--db", required=True, type=Path, help="SQLite file (replaced whole)")
    m.add_argument("--artifacts", required=True, type=Path, help="artifact root folder (file:// location)")
    m.set_defaults(func=run_mlflow_log)


def _check_runs(path: Path) -> None:
    from prehab.errors import UsageError

    if not path.is_dir():
        raise UsageError(f"--runs {path}: no such folder")


def run_report(args: argparse.Namespace) -> dict:
    from prehab.report import figures, tables
    from prehab.report.collect import collect, parse_studies

    cfg = parse_studies(args.studies)
    _check_runs(args.runs)
    df = collect(args.runs, cfg, allow_missing=args.allow_missing)
    written = tables.write_tables(df, cfg, args.tables)
    written += figures.write_figures(df, cfg, args.runs, args.figures)
    summary = {"command": "report", "models": len(df), "missing": len(df.attrs.get("missing", [])),
               "files": len(written), "tables": str(args.tables), "figures": str(args.figures)}
    print(json.dumps(summary))
    return summary


def run_mlflow_log(args: argparse.Namespace) -> dict:
    from prehab.report.collect import parse_studies
    from prehab.report.mlflow_log import log_runs

    cfg = parse_studies(args.studies)
    _check_runs(args.runs)
    summary = {"command": "mlflow-log", **log_runs(args.runs, cfg, args.db, args.artifacts, args.allow_missing)}
    print(json.dumps(summary))
    return summary
