"""The report's captions, written from the config and the code that made each table and figure,
so no caption keeps its own list of studies or its own copy of the verdict rules.

`prehab report --captions DIR` writes one reStructuredText file per reported item (the
Snakemake report's caption format): `runs.rst`, `study-<study>.rst`, `mechanism.rst`,
`findings.rst` and `figure-<name>.rst`. A figure's caption is its drawing function's docstring
(prehab.report.figures.DRAWERS) plus the enabled studies it draws; a study table's names the
study's grid and the gate's thresholds from prehab.report.gate.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from prehab.report import gate, paired
from prehab.report.collect import declared, is_enabled, study_names


def _literal(text: str) -> str:
    """Markdown-style `code` as reStructuredText's ``code``."""
    return text.replace("``", "`").replace("`", "``")


def _first_paragraph(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "")
    return " ".join(text.split("\n\n")[0].split())


def verdict_rule() -> str:
    """How every paired verdict is read, from the constants that read it."""
    return (f"Paired comparisons (the same seeds and test items) with {100 * paired.LEVEL:.0f}% intervals: with "
            f"{paired.MIN_SEEDS_FOR_T} or more seeds a t-interval over the per-seed differences decides "
            f"(better / worse when it lies wholly on one side); with one seed a bootstrap over test items "
            f"({paired.REPLICATES:,} replicates), labelled as test-set noise only. A compressed Prehab-vs-control "
            f"cell is gated: Prehab that left more than {gate.TAIL_GATE:g} of its control's summed whitened tail at "
            f"k(R) reads \"{gate.UNREACHED}\", one more than {gate.HARM_POINTS:g} point below its control before "
            f"compression (perplexity: a ratio above {gate.HARM_RATIO:g}) reads \"{gate.HARMED}\".")


def study_caption(cfg: dict[str, Any], study: str) -> str:
    spec = cfg["studies"][study]
    axes = ", ".join(f"{key} {', '.join(map(str, spec[key]))}" for key in ("methods", "ratios", "lora", "seeds")
                     if spec.get(key))
    return (f"Study ``{study}`` ({axes}; architectures {', '.join(cfg.get('archs', []))}): mean ± std over "
            f"seeds of each configuration and its paired comparisons against SVD-LLM, the lambda = 0 control and "
            f"the dense model. {verdict_rule()} The ``.csv`` and ``.md`` beside it in the tables folder hold the "
            "same table.")


FIXED = {
    "runs": "The long results table: one row per evaluated model and metric, every axis of the grid a column "
            "(``prehab report``); every other table and figure is computed from it.",
    "mechanism": "What the penalty did to what SVD-LLM removes: per Prehab model and ratio, its summed absolute "
                 "whitened tail at k(R), its whitened energy and the tail's share of it, against its lambda = 0 "
                 "control's (ratios below 1: Prehab lower; the gate asks for a tail ratio of at most "
                 f"{gate.TAIL_GATE:g}).",
    "findings": "The findings of this run's tables in prose (``prehab.report.findings``): per testbed and ratio, "
                "Prehab against its control, the best control of its budget and SVD-LLM, the drop compression "
                "causes, the verdicts counted, what the intervals could have detected, and whether each control "
                "moved the dense model before compression.",
}


def figure_caption(cfg: dict[str, Any], name: str, drawer: Callable) -> str:
    studies = declared(cfg, name)
    where = (f"Drawn for study ``{studies[0]}``" + (f" (also declared by {', '.join(studies[1:])})"
                                                   if studies[1:] else "") + ".") if studies else ""
    return f"{_literal(_first_paragraph(drawer.__doc__))} {where}".strip()


def write_captions(cfg: dict[str, Any], out_dir: str | Path, drawers: dict[str, Callable]) -> list[Path]:
    """One caption file per table and figure the report shows (the enabled studies' only)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = {f"{key}.rst": text for key, text in FIXED.items()}
    texts.update({f"study-{study}.rst": study_caption(cfg, study) for study in study_names(cfg)
                  if is_enabled(cfg, study)})
    texts.update({f"figure-{name}.rst": figure_caption(cfg, name, drawer) for name, drawer in drawers.items()
                  if declared(cfg, name)})
    paths = []
    for file, text in texts.items():
        path = out_dir / file
        path.write_text(text + "\n")
        paths.append(path)
    return paths
