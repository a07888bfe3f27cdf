"""A study page as HTML: the markdown the report writes (headings, paragraphs, bullet lists, pipe
tables, `code`, **bold**, \\-escapes), rendered so the Snakemake report shows each table as a
table instead of offering a CSV to download.

Only that subset: the pages are written by this package (prehab.report.pages, findings), so a
markdown library would add a dependency for what fits in a page of code.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; line-height: 1.45; margin: 1em; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; position: sticky; top: 0; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def inline(text: str) -> str:
    """Escaped text with `code`, **bold** and markdown's backslash escapes rendered."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(re.sub(r"\\([\\`*_{}\[\]()#+\-.!|])", r"\1", part), quote=False)
        out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _table(rows: list[str]) -> str:
    head, body = _cells(rows[0]), [_cells(r) for r in rows[2:]]  # rows[1]: the |---| rule
    out = ["<table>", "<tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body]
    return "\n".join(out + ["</table>"])


def markdown_to_html(text: str, title: str) -> str:
    """A whole HTML page of `text` (the subset of markdown in the module docstring)."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("<!--"):
            i += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            blocks.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            blocks.append(_table(lines[i:j]))
            i = j
        elif line.startswith("- "):
            j = i
            items = []
            while j < len(lines) and (lines[j].startswith("- ") or lines[j].startswith("  ")):
                if lines[j].startswith("- "):
                    items.append(lines[j][2:])
                else:
                    items[-1] += " " + lines[j].strip()
                j += 1
            blocks.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in items) + "</ul>")
            i = j
        else:
            j = i
            while j < len(lines) and lines[j].strip() and not lines[j].startswith(("#", "|", "- ", "<!--")):
                j += 1
            blocks.append(f"<p>{inline(' '.join(lines[i:j]))}</p>")
            i = j
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(blocks) + "\n</body></html>\n")


def write_html(md_path: Path) -> Path:
    """`<name>.html` beside a markdown page, its first heading as the title."""
    text = md_path.read_text()
    first = next((line.lstrip("# ") for line in text.splitlines() if line.startswith("#")), md_path.stem)
    out = md_path.with_suffix(".html")
    out.write_text(markdown_to_html(text, first))
    return out
