"""The documentation points only at what the repository holds: every markdown link resolves,
every path under a top-level folder of the repo that the docs, code or configs name exists, and
every `.md` file named anywhere is in the tree (no notes that live outside it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP = ("prehab", "docs", "scripts", "benchmarks", "config", "workflow", "tests", "examples", "envs", "results")
TEXT = (".md", ".py", ".smk", ".yaml", ".yml", ".sh", ".cff", ".toml", ".txt")
# A repo path as text names it: a top-level folder, then path characters (no wildcards or placeholders).
PATH = re.compile(r"(?<![\w./~<{-])((?:%s)/[\w./~-]*[\w~-])" % "|".join(TOP))
MARKDOWN = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(?:#[^)]*)?\)")
MD_NAME = re.compile(r"(?<![\w./<{-])([\w./-]*[A-Za-z]\w*\.md)\b")


def _tracked() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if n.endswith(TEXT) or Path(n).name in ("Snakefile", "run")]


def _exists(name: str, where: Path, tree: set[str]) -> bool:
    name = name.rstrip(".,;:")
    return (REPO / name).exists() or (where.parent / name).exists() or Path(name).name in tree


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except (UnicodeDecodeError, FileNotFoundError):
        return ""


def dangling(path: Path, text: str, tree: set[str]) -> list[str]:
    """The names in `text` (of the file at `path`) of repo files that do not exist."""
    named = set(PATH.findall(text))
    if "tests" not in path.relative_to(REPO).parts:  # tests name the files their fixtures write
        named |= set(MD_NAME.findall(text))
    if path.suffix == ".md":
        named |= {link for link in MARKDOWN.findall(text) if "://" not in link}
    return sorted(name for name in named if not _exists(name, path, tree) and not _generated(name))


def _tree() -> set[str]:
    return {p.name for p in REPO.rglob("*") if ".git" not in p.parts and ".venv" not in p.parts}


def test_every_named_repo_path_and_markdown_file_exists():
    tree, missing = _tree(), []
    for path in _tracked():
        if path.suffix in (".csv", ".txt") and "results" in path.relative_to(REPO).parts:
            continue  # printed outputs quote the machine that made them
        if path == Path(__file__).resolve():
            continue  # its own examples of dangling names
        missing += [f"{path.relative_to(REPO)}: {name}" for name in dangling(path, _text(path), tree)]
    assert not missing, "names of files the repository does not hold:\n" + "\n".join(missing)


def test_a_note_outside_the_repository_is_caught():
    text = "as GUIDE.md 3 says; see [the notes](notes/TRAPS.md), docs/nowhere.md and prehab/gone.py; docs/method.md"
    assert dangling(REPO / "docs" / "page.md", text, _tree()) == [
        "GUIDE.md", "docs/nowhere.md", "notes/TRAPS.md", "prehab/gone.py"]


def _generated(name: str) -> bool:
    """Paths a run writes (run folders, each config's `results_dir`, reports, the GPU check's
    output) or a prefix of a family of files (`config/decisive-` of config/decisive-*.yaml)."""
    return bool(re.search(r"^results/(runs|tiny|logs|benchmarks|mlflow|other|gpu-check|captions)|-run\b|report\.html$"
                          r"|~|/runs/|(^|/)findings\.md$|-$", name))
