"""An architecture's step settings as the workflow sees them, for benchmarks that run what a
study runs: config/config.yaml's `arch_settings` (the Snakefile's configfile), updated by those
of the config passed with `--configfile` (as Snakemake extends it, arch by arch and key by key)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def arch_settings(configfile: Path, arch: str) -> dict:
    """`arch`'s settings, the default config's updated by `configfile`'s."""
    settings = {}
    for path in dict.fromkeys([REPO / "config" / "config.yaml", configfile]):
        settings.update((yaml.safe_load(path.read_text()).get("arch_settings") or {}).get(arch) or {})
    if not settings:
        raise SystemExit(f"no arch_settings for {arch} in config/config.yaml or {configfile}")
    return settings
