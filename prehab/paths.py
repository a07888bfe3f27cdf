"""Where data and caches live. Every embedded file path is found here, at run time, once."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from prehab.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent


def resources_dir() -> Path:
    """Cache for converted models and prepared data (PREHAB_RESOURCES overrides; never results/)."""
    path = Path(os.environ.get("PREHAB_RESOURCES", REPO_ROOT / "resources"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (some must never be imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            f"package {package!r} is not installed; run scripts/setup.sh (it installs the embedded data)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: str, *parts: str) -> Path:
    path = package_dir(package).joinpath(*parts)
    if not path.exists():
        raise UsageError(f"{path} is missing from package {package!r}; reinstall it with scripts/setup.sh")
    return path
