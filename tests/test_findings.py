"""The README's findings are written by scripts/findings.py from the committed tables: the block
in the README must be exactly what the script makes of results/tables (no number typed by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_findings_follow_from_the_committed_tables():
    proc = subprocess.run([sys.executable, "scripts/findings.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
