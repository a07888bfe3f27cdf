"""Rebuild a config's tables and figures from a run folder made by another config whose grid
contains it (e.g. one testbed's tables from the runs of a config with more testbeds: the same
jobs, the same numbers), with the report command the workflow's report rule runs.

    .venv/bin/python scripts/report_from_runs.py --runs RUNS [--configfile F ...] --out results

The configs are read as Snakemake reads them: config/config.yaml first, each --configfile merged
over it, the schema's defaults filled in; the studies JSON is `prehab.studies.report_studies`,
as in workflow/rules/common.smk. Writes OUT/tables and OUT/figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from snakemake.utils import update_config, validate

from prehab.cli import main as prehab_main
from prehab.studies import report_studies

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def workflow_config(configfiles: list[Path]) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for path in configfiles:
        update_config(config, yaml.safe_load(path.read_text()))
    validate(config, str(SCHEMA))  # fills in the schema's defaults, as the Snakefile does
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="a results_dir's runs/ folder")
    parser.add_argument("--configfile", type=Path, nargs="*", default=[], help="merged over config/config.yaml")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT/tables and OUT/figures")
    args = parser.parse_args(argv)
    studies = json.dumps(report_studies(workflow_config(args.configfile)))
    return prehab_main(["report", "--runs", str(args.runs), "--studies", studies,
                        "--tables", str(args.out / "tables"), "--figures", str(args.out / "figures")])


if __name__ == "__main__":
    raise SystemExit(main())
