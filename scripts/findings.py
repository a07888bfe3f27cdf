"""Write the findings of the committed studies, never by hand: the full block
(prehab.report.findings) in docs/results.md and its one-table summary in the README.

Reads the decisive study's `decisive.csv` (config/decisive-*.yaml's tables; its halves merged row
by row), the `main.csv` of each tables folder (the default's, then the other testbeds' configs';
a later folder adds only testbeds no earlier one has; absent folders are skipped), their
`lambda_sweep.csv`, and config/budget.yaml's `budget.csv`, and replaces the blocks between
`<!-- findings:start -->` and `<!-- findings:end -->` (docs/results.md) and between
`<!-- summary:start -->` and `<!-- summary:end -->` (README.md).

    .venv/bin/python scripts/findings.py [--tables results/tables results/bert/tables ...]
        [--decisive results/decisive-vit/tables ...] [--budget results/budget] [--page docs/results.md]
        [--readme README.md] [--check]

`--check` exits 1 when either block differs from what the tables give (a test runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prehab.report.findings import (END, ROW_KEY, START, SUMMARY_END, SUMMARY_START, findings, merged,  # noqa: F401
                                    study_tables, summary)

# The default's tables (vit-small), then config/bert.yaml's (bert-small), config/llama.yaml's.
TABLES = [Path("results/tables"), Path("results/bert/tables"), Path("results/llama/tables")]
# The decisive study's tables, one config per testbed (config/decisive-*.yaml).
DECISIVE = [Path("results/decisive-vit-weight/tables"), Path("results/decisive-vit-whitened/tables"),
            Path("results/decisive-vit/tables"), Path("results/decisive-bert/tables")]


def replace_block(text: str, block: str, start: str = START, end: str = END) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"no {start} ... {end} block")
    head, rest = text.split(start, 1)
    return head + block + rest.split(end, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=Path, nargs="+", default=TABLES,
                        help="tables folders, the default's first (absent ones skipped; a later one adds only "
                             "testbeds no earlier one has)")
    parser.add_argument("--decisive", type=Path, nargs="*", default=DECISIVE,
                        help="tables folders of the decisive configs (absent ones skipped)")
    parser.add_argument("--budget", type=Path, default=Path("results/budget"),
                        help="folder holding budget.csv (config/budget.yaml's tables; skipped when absent)")
    parser.add_argument("--page", type=Path, default=Path("docs/results.md"), help="page of the full findings")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="page of their summary")
    parser.add_argument("--check", action="store_true", help="exit 1 if either block is stale")
    args = parser.parse_args(argv)
    main_table, _, chosen, _ = study_tables(args.tables, args.decisive)
    blocks = {args.page: (findings(args.tables, args.budget, args.decisive), START, END),
              args.readme: (summary(main_table, chosen), SUMMARY_START, SUMMARY_END)}
    stale = []
    for path, (block, start, end) in blocks.items():
        text = path.read_text()
        new = replace_block(text, block, start, end)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"{', '.join(map(str, stale))}: the findings differ from the tables; run scripts/findings.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
