"""Named studies -> the set of evaluated models, each with its axes and its run folder.

A study is a sub-grid over the axes (arch, seed, method, surrogate, lambda, space, calibration
source and size, ratio, LoRA). The suite runs the UNION of the studies' grids: every model has
one folder whose path is its parameters (prehab/layout.py), so a model that two studies need
is one folder, made once.

This module is plain Python (no Snakemake): the workflow imports it to build its targets and
`prehab report` uses it to know which rows belong to which study.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable

from prehab.errors import UsageError
from prehab.layout import CONTROL_SURROGATE, METHODS, Run
from prehab.method.recipes import RECIPES

# Models that shared jobs make but no study names (a compress job cuts every ratio of the
# union, so a ratio-0.6 study's model is also cut at main's ratios): reported under this name.
BY_PRODUCTS = "by-products"
# What a study can declare for the report (config keys `figures` and `page`).
FIGURES = ("metric_vs_ratio", "prehab_vs_control", "lambda_tradeoff", "spectra", "trajectories", "calibration_size", "budget")
PAGES = ("by_axes", "by_ratio", "by_steps")
# The control runs `prehab prehab --lam 0`; its surrogate is only logged (the curve's
# `surrogate` column), the same for every control so their curves compare.
CONTROL_LOGGED_SURROGATE = "nuclear_fro"
# A `calibration.samples` value: each architecture's own size, `arch_settings.<arch>.calib_samples`
# (architectures differ in tokens per sample and input width; the whitening rule is per model).
PER_ARCH = "per_arch"


def calib_samples_of(config: dict[str, Any]) -> dict[str, int]:
    """{arch: calibration samples} for `per_arch`: the report's studies JSON states it as
    `calib_samples`; a workflow config holds it in arch_settings."""
    return _per_arch(config, "calib_samples")


def report_studies(config: dict[str, Any]) -> dict[str, Any]:
    """What `prehab report` / `prehab mlflow-log --studies` need to rebuild a workflow config's grid
    (its archs, studies with the schema's defaults filled in, and the per-architecture values)."""
    return {"archs": config["archs"], "studies": config["studies"], "calib_samples": calib_samples_of(config),
            "recipe": recipes_of(config)}


def recipes_of(config: dict[str, Any]) -> dict[str, str]:
    """{arch: recipe} for `prehab.recipes: [per_arch]` (arch_settings.<arch>.recipe)."""
    return _per_arch(config, "recipe")


def _per_arch(config: dict[str, Any], key: str) -> dict[str, Any]:
    """{arch: value}: the report's studies JSON states it under `key`; a workflow config holds
    it in arch_settings.<arch>.<key>."""
    if key in config:
        return dict(config[key])
    settings = config.get("arch_settings") or {}
    return {arch: s[key] for arch, s in settings.items() if (s or {}).get(key)}


def _samples(value: int | str, arch: str, per_arch: dict[str, int], study: str) -> int:
    if value != PER_ARCH:
        return int(value)
    if arch not in per_arch:
        raise UsageError(f"studies.{study}.calibration.samples is {PER_ARCH!r} but arch_settings.{arch}.calib_samples "
                         "is not set; set it or list numbers")
    return int(per_arch[arch])


def cli_surrogate(label: str, lam: float) -> str:
    """The `--surrogate` of a run whose folder says prehab~`label`/lam~`lam`."""
    if label != CONTROL_SURROGATE:
        return label
    if float(lam) != 0:
        raise UsageError(f"prehab~{CONTROL_SURROGATE} is the lambda 0 control, got lam~{lam}")
    return CONTROL_LOGGED_SURROGATE


def cli_penalty(label: str, lam: float) -> str:
    """What a prehab~`label`/lam~`lam` folder passes to `prehab prehab`: `--recipe R` (its
    lambda, or 0 for the recipe's control) when the label is a recipe, else `--surrogate S`."""
    if label in RECIPES:
        return f"--recipe {label}" + (" --lam 0" if float(lam) == 0 else "")
    return f"--surrogate {cli_surrogate(label, lam)} --lam {lam}"


def recipe_runs(recipe: str, space: str | None = None) -> tuple[dict, dict]:
    """(the recipe's Prehab run axes, its control's): the recipe's own lambda and space."""
    r = RECIPES[recipe]
    run = dict(surrogate=recipe, lam=r.lam, space=r.space, method="prehab")
    return run, dict(run, lam=0.0, method="control")


@dataclass
class StudyRuns:
    """The union of all studies: run folder -> Run, and run folder -> names of studies using it."""

    runs: dict[str, Run] = field(default_factory=dict)
    studies: dict[str, list[str]] = field(default_factory=dict)

    def add(self, study: str, run: Run) -> None:
        self.runs.setdefault(run.eval_dir, run)
        names = self.studies.setdefault(run.eval_dir, [])
        if study not in names:
            names.append(study)


# One Prehab setting whose lambda a study chooses: (arch, surrogate, space, cal_source, cal_samples).
Setting = tuple[str, str, str, str, int]


def setting_key(arch: str, surrogate: str, space: str, cal_source: str, cal_samples: int | float) -> Setting:
    """The key of a chosen lambda (the same for a Run's axes and a report table's row)."""
    return (str(arch), str(surrogate), str(space), str(cal_source), int(cal_samples))


def confirm_seeds(study: dict[str, Any]) -> list[int]:
    """A study's phase-B seeds (`confirm_seeds`): they run Prehab at lambda* only, chosen on
    `seeds` (phase A); empty for a study that reports every lambda at every seed."""
    return [int(s) for s in study.get("confirm_seeds") or []]


def choice_seeds_of(study: dict[str, Any]) -> list[int] | None:
    """The seeds a study chooses lambda* on: phase A's (`seeds`) when it has confirm_seeds, else
    None (every seed it ran)."""
    return [int(s) for s in study["seeds"]] if confirm_seeds(study) else None


def phase_a_settings(config: dict[str, Any], name: str) -> list[Setting]:
    """The Prehab settings of study `name` whose lambda* phase A chooses (recipes included: a
    recipe is a setting with one lambda)."""
    return sorted({setting_key(r.arch, r.surrogate, r.space, r.cal_source, r.cal_samples)
                   for r in study_runs(name, config["studies"][name], config["archs"], calib_samples_of(config),
                                       recipes_of(config))
                   if r.method == "prehab" and r.compressed and r.snapshot is None})


CHOSEN_AXES = ("arch", "surrogate", "space", "cal_source", "cal_samples")


def chosen_to_json(chosen: dict[Setting, float]) -> list[dict[str, Any]]:
    """{setting: lambda*} as JSON rows (what `prehab choose-lambda` writes)."""
    return [{**dict(zip(CHOSEN_AXES, key)), "lam": lam} for key, lam in sorted(chosen.items())]


def chosen_from_json(rows: list[dict[str, Any]]) -> dict[Setting, float]:
    """The inverse of chosen_to_json (the workflow reads the checkpoint's file with it)."""
    return {setting_key(*(row[a] for a in CHOSEN_AXES)): float(row["lam"]) for row in rows}


def study_runs(name: str, study: dict[str, Any], all_archs: Iterable[str],
               per_arch: dict[str, int] | None = None, recipes: dict[str, str] | None = None,
               chosen: dict[Setting, float] | None = None) -> list[Run]:
    """Expand one study's sub-grid (schema-validated dict) into its runs (`per_arch`, `recipes`:
    what a `per_arch` calibration size or recipe stands for, calib_samples_of / recipes_of).

    At the study's `confirm_seeds` a Prehab setting runs only at its lambda in `chosen`
    (prehab.report.choice.phase_a_choice of the `seeds`' runs); without `chosen` (phase A not
    done yet) those seeds hold their dense, SVD-LLM, controls and recipes only."""
    archs = study.get("archs") or list(all_archs)
    methods = study["methods"]
    for key, allowed in (("methods", METHODS), ("figures", FIGURES)):
        unknown = sorted(set(study.get(key, [])) - set(allowed))
        if unknown:
            raise UsageError(f"studies.{name}.{key}: unknown {unknown}; allowed: {', '.join(allowed)}")
    cal = study["calibration"]
    pre = study["prehab"]
    out: list[Run] = []
    phase_b = set(confirm_seeds(study))  # disjoint from seeds (config_check)
    for arch, seed in itertools.product(archs, [*study["seeds"], *sorted(phase_b)]):
        if "dense" in methods:
            out.append(Run(arch, seed, "dense", compressed=False))
        for source, value in itertools.product(cal["source"], cal["samples"]):
            n = _samples(value, arch, per_arch or {}, name)
            uncompressed = []
            if "control" in methods:  # one per space: lambda 0 with the same parametrisation
                for space in pre.get("control_space") or pre["space"]:
                    uncompressed.append(dict(surrogate=CONTROL_SURROGATE, lam=0.0, space=space, method="control"))
            if "prehab" in methods:
                for sur, lam, space in itertools.product(pre["surrogate"], pre["lam"], pre["space"]):
                    if float(lam) == 0:
                        raise UsageError(f"study {name}: lambda 0 is the control; list method `control` instead")
                    if seed in phase_b and (chosen or {}).get(setting_key(arch, sur, space, source, n)) != float(lam):
                        continue
                    uncompressed.append(dict(surrogate=sur, lam=float(lam), space=space, method="prehab"))
            for value in pre.get("recipes", []):  # the authors' recipes, each with its own control
                recipe = (recipes or {}).get(arch) if value == PER_ARCH else value
                if recipe is None:
                    raise UsageError(f"studies.{name}.prehab.recipes is {PER_ARCH!r} but arch_settings.{arch}.recipe "
                                     "is not set")
                run, control = recipe_runs(recipe)
                uncompressed += ([run] if "prehab" in methods else []) + ([control] if "control" in methods else [])
            for u in uncompressed:
                out.append(Run(arch, seed, compressed=False, cal_source=source, cal_samples=n, **u))
                for fraction in study.get("snapshots", []):  # the same run part-way, cut without LoRA
                    snap = dict(u, snapshot=float(fraction))
                    out.append(Run(arch, seed, compressed=False, cal_source=source, cal_samples=n, **snap))
                    for ratio in study["ratios"]:
                        out.append(Run(arch, seed, compressed=True, ratio=ratio, cal_source=source,
                                       cal_samples=n, **snap))
            for ratio, lora in itertools.product(study["ratios"], study["lora"]):
                if "svd-llm" in methods:
                    out.append(Run(arch, seed, "svd-llm", True, ratio, lora, source, n))
                for u in uncompressed:
                    out.append(Run(arch, seed, compressed=True, ratio=ratio, lora=lora,
                                   cal_source=source, cal_samples=n, **u))
        if "svd" in methods:
            for ratio, lora in itertools.product(study["ratios"], study["lora"]):
                out.append(Run(arch, seed, "svd", True, ratio, lora))
    return out


def snapshot_fractions(config: dict[str, Any]) -> list[float]:
    """The union of the enabled studies' snapshot fractions: every prehab job saves all of them."""
    return sorted({float(f) for study in config["studies"].values() if study.get("enabled", True)
                   for f in study.get("snapshots", [])})


def confirming(config: dict[str, Any]) -> list[str]:
    """The enabled studies with `confirm_seeds` (their phase B waits for lambda*)."""
    return [name for name, study in config["studies"].items() if study.get("enabled", True) and confirm_seeds(study)]


def expand(config: dict[str, Any], chosen: dict[str, dict[Setting, float]] | None = None) -> StudyRuns:
    """All enabled studies of a workflow config, deduplicated by folder (`chosen`: {study:
    {setting: lambda*}} of the studies with confirm_seeds whose phase A is done)."""
    union = StudyRuns()
    per_arch, recipes = calib_samples_of(config), recipes_of(config)
    for name, study in config["studies"].items():
        if not study.get("enabled", True):
            continue
        for run in study_runs(name, study, config["archs"], per_arch, recipes, (chosen or {}).get(name)):
            union.add(name, run)
    return union
