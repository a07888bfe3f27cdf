"""`prehab report`, `prehab mlflow-log` and `prehab choose-lambda`: the reporting subcommands
(wired by prehab/cli.py).

Only argparse here at import time: pandas, matplotlib and mlflow load inside the commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STUDIES_HELP = ('the studies config as a JSON string {"archs": [...], "studies": {name: {...}}} '
                "(the `studies` section of config/config.yaml), or a path to a JSON file")


def register(subparsers) -> None:
    """Add `report`, `mlflow-log` and `choose-lambda` to the CLI's subparsers."""
    fmt = argparse.HelpFormatter
    grid = argparse.ArgumentParser(add_help=False)  # the grid every command reads
    grid.add_argument("--runs", required=True, type=Path, help="root of the run folders (arch~A/seed~S/...)")
    grid.add_argument("--studies", required=True, help=STUDIES_HELP)
    common = argparse.ArgumentParser(add_help=False, parents=[grid])  # report and mlflow-log: the whole grid
    common.add_argument("--allow-missing", action="store_true",
                        help="go on without models whose metrics.json is missing (default: error naming them)")
    p = subparsers.add_parser(
        "report", formatter_class=fmt, parents=[common],
        help="per-study tables (CSV, Markdown, HTML), the findings, the long runs table and the figures from all "
             "metrics.json",
        description="Read every evaluated model of the study grid into one long table (tables/runs.csv), "
                    "write <study>.csv/.md/.html per study (mean ± std over seeds, paired verdicts), the "
                    "mechanism table, the findings page (findings.md/.html), the fixed set of figures and, with "
                    "--captions, the report's captions.")
    p.add_argument("--tables", required=True, type=Path, help="output folder for tables")
    p.add_argument("--figures", required=True, type=Path, help="output folder for figures")
    p.add_argument("--captions", type=Path, help="output folder for the Snakemake report's captions (.rst)")
    p.set_defaults(func=run_report)

    m = subparsers.add_parser(
        "mlflow-log", formatter_class=fmt, parents=[common],
        help="bring the MLflow SQLite store up to date with the evaluated models (run ids kept)",
        description="Update the MLflow SQLite db (in a copy renamed over it): one experiment per study, "
                    "each evaluated model a run in every study using it, with its axes as tags, every "
                    "option of the steps behind it as params, its metrics, wall time and Prehab curve; "
                    "each study a run holding its tables and figures. Unchanged runs are not rewritten, "
                    "changed ones are updated in place.")
    m.add_argument("--db", required=True, type=Path, help="SQLite file (updated, or made)")
    m.add_argument("--artifacts", required=True, type=Path, help="artifact root folder (file:// location)")
    m.add_argument("--tables", type=Path, help="`prehab report --tables` folder: each study's tables as artifacts")
    m.add_argument("--figures", type=Path, help="`prehab report --figures` folder: each study's figures as artifacts")
    m.set_defaults(func=run_mlflow_log)

    c = subparsers.add_parser(
        "choose-lambda", formatter_class=fmt, parents=[grid],
        help="lambda* of a study with confirm_seeds, from its phase-A runs (the workflow's checkpoint)",
        description="Choose each Prehab setting's lambda* of STUDY on its phase-A seeds (validation after "
                    "SVD-LLM at R 0.6 without LoRA, as the study's page chooses) and write it as JSON: the "
                    "lambdas its confirm_seeds run. Every phase-A setting must have its runs evaluated.")
    c.add_argument("--study", required=True, help="a study of --studies with confirm_seeds")
    c.add_argument("--out", required=True, type=Path, help="JSON file (written whole)")
    c.set_defaults(func=run_choose_lambda)


def _check_runs(path: Path) -> None:
    from prehab.errors import UsageError

    if not path.is_dir():
        raise UsageError(f"--runs {path}: no such folder")


def run_report(args: argparse.Namespace) -> dict:
    from prehab.report import captions, figures, files
    from prehab.report.collect import collect, parse_studies

    cfg = parse_studies(args.studies)
    _check_runs(args.runs)
    df = collect(args.runs, cfg, allow_missing=args.allow_missing)
    written = files.write_tables(df, cfg, args.tables)
    written += figures.write_figures(df, cfg, args.runs, args.figures)
    written += _pages(cfg, args.tables)
    if args.captions is not None:
        written += captions.write_captions(cfg, args.captions, figures.DRAWERS)
    summary = {"command": "report", "models": len(df), "missing": len(df.attrs.get("missing", [])),
               "files": len(written), "tables": str(args.tables), "figures": str(args.figures)}
    print(json.dumps(summary))
    return summary


def _pages(cfg: dict, tables_dir: Path) -> list[Path]:
    """The findings page and an HTML twin of every enabled study's page, the mechanism table and
    the findings, for the Snakemake report (it shows HTML in the page; CSVs only as downloads)."""
    from prehab.report import findings, html
    from prehab.report.collect import is_enabled, study_names

    pages = [tables_dir / f"{study}.md" for study in study_names(cfg) if is_enabled(cfg, study)]
    pages += [tables_dir / "mechanism.md", findings.write_page(tables_dir)]
    return [pages[-1]] + [html.write_html(page) for page in pages]


def run_mlflow_log(args: argparse.Namespace) -> dict:
    from prehab.report.collect import parse_studies
    from prehab.report.mlflow_log import log_runs

    cfg = parse_studies(args.studies)
    _check_runs(args.runs)
    summary = {"command": "mlflow-log", **log_runs(args.runs, cfg, args.db, args.artifacts, args.allow_missing,
                                                      args.tables, args.figures)}
    print(json.dumps(summary))
    return summary


def run_choose_lambda(args: argparse.Namespace) -> dict:
    from prehab.errors import UsageError
    from prehab.outputs import write_json
    from prehab.report.choice import phase_a_choice
    from prehab.report.collect import collect, parse_studies
    from prehab.studies import chosen_to_json, confirming, phase_a_settings

    cfg = parse_studies(args.studies)
    if args.study not in confirming(cfg):
        raise UsageError(f"--study {args.study}: not an enabled study with confirm_seeds; allowed: "
                         f"{', '.join(confirming(cfg)) or 'none in --studies'}")
    _check_runs(args.runs)
    chosen = phase_a_choice(collect(args.runs, cfg, allow_missing=True), cfg)[args.study]
    unchosen = sorted(set(phase_a_settings(cfg, args.study)) - set(chosen))
    if unchosen:
        raise UsageError(f"study {args.study}: no validation metric after SVD-LLM for {len(unchosen)} phase-A "
                         f"setting(s), e.g. {unchosen[0]} (arch, surrogate, space, calibration); run them first")
    summary = {"command": "choose-lambda", "study": args.study, "lambda_star": chosen_to_json(chosen)}
    write_json(args.out, summary)
    print(json.dumps(summary))
    return summary
