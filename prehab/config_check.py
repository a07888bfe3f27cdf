"""A workflow config is checked before any job runs, and refused with one short line that names
the key, the bad value and what is allowed (no schema dump, no traceback).

Two layers: the JSON schema (workflow/schemas/config.schema.yaml: types, ranges, names, unknown
keys, empty or repeated axis values), then what a schema cannot know: architecture names against
the registry, architecture options against each architecture's own, studies' architectures
against `archs`, and a `results_dir` that would write into the package. Plain Python apart from
the registry lookup, which the Snakefile pays for once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prehab.errors import UsageError
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
    for name, study in config.get("studies", {}).items():
        if not study.get("enabled", True):
            continue
        for arch in study.get("archs", []):
            if arch not in config["archs"]:
                return (f"studies.{name}.archs: {arch!r} is not in the top-level archs "
                        f"({', '.join(config['archs'])}); add it there or remove it from the study")
    results = Path(config.get("results_dir", "results"))
    package = (REPO_ROOT / "prehab").resolve()
    target = (results if results.is_absolute() else Path.cwd() / results).resolve()
    if target == package or package in target.parents:
        return f"results_dir = {str(results)!r}: inside the prehab package; allowed: a folder outside {package}"
    return None


def check(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Raise ConfigError with one line if the config is invalid (schema first, then semantics)."""
    from prehab.registry import arch_names, get_arch

    message = schema_error(config, schema)
    if message is None:
        names = arch_names()
        options = {name: dict(get_arch(name).options) for name in names}
        message = semantic_error(config, names, options)
    if message is not None:
        raise ConfigError(f"config: {message}")
