"""The report's table files: runs.csv (the long table), `<study>.csv` and `.md` for every study
of the config, and the mechanism readout's `mechanism.csv` and `.md`. It sits above the modules
that compute the tables (tables, mechanism, choice) and the one that words them (pages), so none
of those imports another to write a file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from prehab.report import mechanism, pages
from prehab.report.choice import phase_a_choice
from prehab.report.collect import is_enabled, study_names
from prehab.report.tables import CSV_COLUMNS, study_table
from prehab.studies import calib_samples_of, choice_seeds_of, recipes_of, study_runs

log = logging.getLogger(__name__)


def write_tables(df, cfg: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """runs.csv (the long table), <study>.csv/.md for EVERY study of the config (a disabled
    study gets an empty CSV and a page saying so, so the set of outputs is fixed), and
    mechanism.csv/.md for the Prehab/control cuts of the enabled studies."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "runs.csv"]
    df.to_csv(written[0], index=False)
    missing_all = df.attrs.get("missing", [])
    for study in study_names(cfg):
        csv, md = out_dir / f"{study}.csv", out_dir / f"{study}.md"
        if not is_enabled(cfg, study):
            pd.DataFrame(columns=CSV_COLUMNS).to_csv(csv, index=False)
            md.write_text(f"# Study `{study}`\n\nStudy disabled (`enabled: false` in the config): no runs.\n")
        else:
            table = study_table(df, study, cfg.get("archs"), choice_seeds_of(cfg["studies"][study]))
            table.drop(columns=["dirs"], errors="ignore").to_csv(csv, index=False)
            runs = study_runs(study, cfg["studies"][study], cfg["archs"], calib_samples_of(cfg), recipes_of(cfg),
                              phase_a_choice(df, cfg).get(study))
            dirs = {r.eval_dir for r in runs}
            missing = [m for m in missing_all if m in dirs]
            page = {"by_ratio": pages.main_markdown, "by_steps": pages.steps_markdown}.get(
                cfg["studies"][study].get("page"), pages.study_markdown)
            md.write_text(page(table, study, missing, df.attrs.get("rank_deficient", {})))
        written += [csv, md]
    written += write_mechanism(df, cfg, out_dir, cfg.get("archs"))
    log.info("wrote %d table files to %s", len(written), out_dir)
    return written


def write_mechanism(df, cfg: dict[str, Any], out_dir: Path, arch_order: list[str] | None = None) -> list[Path]:
    """mechanism.csv and mechanism.md in the tables folder; written even when empty (a fixed output)."""
    table = mechanism.mechanism_table(df, cfg, arch_order)
    csv, md = Path(out_dir) / "mechanism.csv", Path(out_dir) / "mechanism.md"
    table.to_csv(csv, index=False)
    md.write_text(pages.mechanism_markdown(table))
    return [csv, md]
