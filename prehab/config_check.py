"""A workflow config is checked before any job runs, and refused with one short line that names
the key, the bad value and what is allowed (no schema dump, no traceback).

Two layers: the JSON schema (workflow/schemas/config.schema.yaml: types, ranges, names, unknown
keys, empty or repeated axis values), then what a schema cannot know: architecture names against
the registry, architecture options against each architecture's own, studies' architectures
against `archs`, a `results_dir` that would write into the package, and sizes against what the
data holds (calibration samples, test and validation rows: `ArchSpec.split_rows`). Plain Python
apart from the registry lookup, which the Snakefile pays for once.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from prehab.errors import UsageError
from prehab.layout import fmt
from prehab.method.ratio import RATIO_RULE, valid_ratio
from prehab.paths import REPO_ROOT


class ConfigError(UsageError):
    """A config the workflow refuses; the message is the one line a user sees."""


def _path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _allowed(error) -> str:
    """What the schema allows where `error` failed, in words."""
    kind, rule = error.validator, error.validator_value
    if kind == "enum":
        return "one of " + ", ".join("null" if v is None else str(v) for v in rule)
    if kind == "const":
        return repr(rule)
    if kind == "type":
        return "a " + " or ".join(rule if isinstance(rule, list) else [rule])
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        return f"a number {words[kind]} {rule}"
    if kind == "minItems":
        return f"at least {rule} value(s)"
    if kind == "uniqueItems":
        return "each value once"
    if kind == "minLength":
        return "a non-empty string"
    if kind == "pattern":
        return "a name without '/', '~' or spaces"
    if kind in ("oneOf", "anyOf"):
        return " or ".join(_allowed(sub) for sub in error.context if not sub.path) or "another value"
    return error.message


def _describe(error) -> str:
    where = _path(error.absolute_path)
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unexpected = sorted(set(error.instance) - set(known))
        return f"unknown key {_path([*error.absolute_path, unexpected[0]])}; allowed: {', '.join(known)}"
    if error.validator == "required":
        return f"{where}: missing key {error.message.split(' ')[0]}"
    value = error.instance
    hint = ""
    if isinstance(value, str) and error.validator == "type":
        try:
            float(value)
            hint = f" (YAML 1.1 reads {value} as a string: write it with a decimal point, e.g. 1.0e-3)"
        except ValueError:
            pass
    if error.validator == "uniqueItems":
        seen, repeated = [], None
        for item in value:
            if item in seen:
                repeated = item
                break
            seen.append(item)
        return f"{where}: {repeated!r} is listed twice; allowed: each value once"
    shown = repr(value) if not isinstance(value, (dict, list)) or len(repr(value)) < 60 else type(value).__name__
    return f"{where} = {shown}: not allowed; allowed: {_allowed(error)}{hint}"


def schema_error(config: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """The first (deepest, in document order) schema violation of `config`, described; None."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), -len(e.path)))
    if not errors:
        return None
    return _describe(jsonschema.exceptions.best_match(errors))


def semantic_error(config: dict[str, Any], arch_names: list[str], arch_options: dict[str, dict]) -> str | None:
    """What the schema cannot check; None when the config is fine."""
    for i, arch in enumerate(config.get("archs", [])):
        if arch not in arch_names:
            return f"archs[{i}] = {arch!r}: unknown architecture; allowed: {', '.join(arch_names)}"
    for arch, settings in (config.get("arch_settings") or {}).items():
        if arch not in arch_names:
            return f"arch_settings.{arch}: unknown architecture; allowed: {', '.join(arch_names)}"
        for key, value in ((settings or {}).get("arch_opts") or {}).items():
            if value is not None and key not in arch_options[arch]:  # null: not passed at all
                known = ", ".join(sorted(arch_options[arch])) or "none"
                return f"arch_settings.{arch}.arch_opts.{key}: not an option of {arch}; allowed: {known}"
    if not any(study.get("enabled", True) for study in config.get("studies", {}).values()):
        return "studies: every study is disabled (enabled: false); allowed: at least one enabled study"
    message = folder_value_error(config)
    if message is not None:
        return message
    prehab = config.get("prehab") or {}
    if prehab.get("refresh_every") is not None and prehab.get("estimator", "exact") != "lagged":
        return (f"prehab.refresh_every = {prehab['refresh_every']}: only with prehab.estimator lagged "
                f"(got {prehab.get('estimator', 'exact')!r})")
    for name, study in config.get("studies", {}).items():
        if not study.get("enabled", True):
            continue
        for arch in study.get("archs", []):
            if arch not in config["archs"]:
                return (f"studies.{name}.archs: {arch!r} is not in the top-level archs "
                        f"({', '.join(config['archs'])}); add it there or remove it from the study")
        both = sorted(set(study.get("confirm_seeds") or []) & set(study.get("seeds", [0])))
        if both:
            return (f"studies.{name}.confirm_seeds: {both} also in seeds; allowed: seeds that phase A "
                    f"(seeds {study.get('seeds', [0])}) does not run")
    results = Path(config.get("results_dir", "results"))
    package = (REPO_ROOT / "prehab").resolve()
    target = (results if results.is_absolute() else Path.cwd() / results).resolve()
    if target == package or package in target.parents:
        return f"results_dir = {str(results)!r}: inside the prehab package; allowed: a folder outside {package}"
    return None


def folder_value_error(config: dict[str, Any]) -> str | None:
    """A lambda or ratio of an enabled study that is not finite, or that the run folders' number
    format (prehab.layout.fmt) would merge with another value or move out of its range (a
    ratio 0.9999999 would be written `ratio~1`); None when every value names its own folder."""
    for name, study in config.get("studies", {}).items():
        if not study.get("enabled", True):
            continue
        for key, values in ((f"studies.{name}.ratios", study.get("ratios") or []),
                            (f"studies.{name}.prehab.lam", (study.get("prehab") or {}).get("lam") or [])):
            seen: dict[str, float] = {}
            for i, value in enumerate(values):
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue  # the schema names the type
                if not math.isfinite(value):
                    return f"{key}[{i}] = {value}: allowed: a finite number"
                text = fmt(value)
                if key.endswith("ratios") and not valid_ratio(float(text)):
                    return (f"{key}[{i}] = {value!r}: its run folder would read ratio~{text}; allowed: {RATIO_RULE}, "
                            "distinct in 6 significant digits")
                if text in seen and seen[text] != value:
                    return (f"{key}: {seen[text]!r} and {value!r} share the run folder ~{text}; allowed: values "
                            "that differ in their first 6 significant digits")
                seen[text] = value
    return None


def arch_option_error(config: dict[str, Any]) -> str | None:
    """An arch_opts value the CLI's `--arch-opt` would refuse (ArchSpec.option_value: its type,
    a row count's range), said before any job."""
    from prehab.registry import get_arch

    for arch, settings in (config.get("arch_settings") or {}).items():
        for key, value in ((settings or {}).get("arch_opts") or {}).items():
            if value is None:
                continue
            try:
                get_arch(arch).option_value(key, str(value))
            except UsageError as error:
                return f"arch_settings.{arch}.arch_opts.{key} = {value!r}: {error}"
    return None


def _pools(config: dict[str, Any], rows_of: dict[str, Any], options_of: dict[str, dict]) -> tuple[str | None, dict]:
    """(an `n_<split>` option above its split's rows or an `n_val` that leaves no training rows,
    or None; {arch: {source: rows a calibration may draw}}, the training pool minus `n_val`)."""
    settings, pools = config.get("arch_settings") or {}, {}
    for arch in config.get("archs", []):
        if rows_of.get(arch) is None:
            continue
        given = ((settings.get(arch) or {}).get("arch_opts") or {}).items()
        opts = {**options_of[arch], **{k: v for k, v in given if v is not None}}
        rows = rows_of[arch](opts)
        for split, held in rows.items():
            asked = opts.get(f"n_{split}")
            if asked is not None and asked > held:
                return (f"arch_settings.{arch}.arch_opts.n_{split} = {asked}: {arch}'s {split} split holds "
                        f"{held} rows; allowed: at most {held}"), pools
        n_val = int(opts.get("n_val") or 0)
        train = min(int(opts.get("n_train") or rows["train"]), rows["train"])
        if n_val >= train:
            return (f"arch_settings.{arch}.arch_opts.n_val = {n_val}: leaves no training rows of {arch}'s {train}; "
                    f"allowed: at most {train - 1}"), pools
        pools[arch] = {**rows, "train": train - n_val}
    return None, pools


def size_error(config: dict[str, Any], rows_of: dict[str, Any], options_of: dict[str, dict]) -> str | None:
    """Sizes the data cannot serve (`_pools`), then calibration samples above their source's
    rows. `rows_of[arch]`: ArchSpec.split_rows (None: not known before loading)."""
    from prehab.studies import PER_ARCH, calib_samples_of

    message, pools = _pools(config, rows_of, options_of)
    if message is not None:
        return message
    per_arch = calib_samples_of(config)
    for name, study in config.get("studies", {}).items():
        if not study.get("enabled", True):
            continue
        calibration = study.get("calibration") or {}
        for arch, source, value in itertools.product(study.get("archs") or config.get("archs", []),
                                                     calibration.get("source", ["train"]),
                                                     calibration.get("samples", [])):
            samples = per_arch.get(arch) if value == PER_ARCH else value
            held = (pools.get(arch) or {}).get(source)
            if samples is None or held is None or samples <= held:
                continue
            key = f"arch_settings.{arch}.calib_samples" if value == PER_ARCH else f"studies.{name}.calibration.samples"
            after = " after the validation rows" if source == "train" else ""
            return f"{key} = {samples}: {arch}'s calibration source {source!r} holds {held} rows{after}; allowed: at most {held}"
    return None


def split_error(config: dict[str, Any], batch_defaults: dict[str, int]) -> str | None:
    """A training rule whose batch cannot give every process's every micro-batch a row (the job
    would stop at its first step); None when each can."""
    for arch, settings in (config.get("arch_settings") or {}).items():
        settings = settings or {}
        micro = settings.get("micro_batches") or 1
        for rule, asked in (settings.get("resources") or {}).items():
            processes = (asked or {}).get("processes", 1) * (asked or {}).get("nodes", 1)
            key = "prehab_batch_size" if rule == "prehab" and settings.get("prehab_batch_size") else "batch_size"
            batch = settings.get(key) or batch_defaults[arch]
            if batch < processes * micro:
                return (f"arch_settings.{arch}.{key} = {batch}: {rule} splits each batch over {processes} "
                        f"processes x {micro} micro-batches; allowed: at least {processes * micro} rows")
    return None


def check(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Raise ConfigError with one line if the config is invalid (schema first, then semantics)."""
    from prehab.registry import arch_names, get_arch

    message = schema_error(config, schema)
    if message is None:
        names = arch_names()
        options = {name: dict(get_arch(name).options) for name in names}
        message = semantic_error(config, names, options)
    if message is None:
        message = arch_option_error(config)
    if message is None:
        message = size_error(config, {name: get_arch(name).split_rows for name in names}, options)
    if message is None:
        message = split_error(config, {name: int(get_arch(name).defaults["batch_size"]) for name in names})
    if message is not None:
        raise ConfigError(f"config: {message}")
