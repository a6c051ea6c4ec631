"""A report's blocks (headings, paragraphs, tables, images) and their two renderings:
Markdown with the charts beside it, or one self-contained HTML page with them inline.

The report (`report.py`) and its fleet section build a list of blocks once; nothing
here knows what the figures mean.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from corral.visible import text as one_line


@dataclass(frozen=True, slots=True)
class Heading:
    """A heading of a report; level 1 is the page's title."""

    text: str
    level: int = 2  # 1: the page's title


@dataclass(frozen=True, slots=True)
class Paragraph:
    """A paragraph of a report (Markdown, rendered in HTML too)."""

    text: str  # Markdown: `code` and **bold** are rendered in HTML too


@dataclass(frozen=True, slots=True)
class Table:
    """A table of a report: its header cells and rows of cells (text)."""

    head: list[str]
    rows: list[list[str]]


@dataclass(frozen=True, slots=True)
class Image:
    """A chart of a report, by the file name it is written under."""

    file: str  # the chart's file name beside the Markdown, its key in the charts
    caption: str


Block = Heading | Paragraph | Table | Image


def _shown(text: str) -> str:
    """A paragraph's text with the controls of the names in it (a modules directory, a
    host's reason) made visible, its own line breaks kept: `cat README.md` must not obey
    an escape sequence, and a browser shows none of them."""
    return "\n".join(one_line(line) for line in text.split("\n"))


def render_markdown(blocks: list[Block]) -> str:
    """The blocks as Markdown, each followed by an empty line ("" for no blocks). Names
    in them are shown, never obeyed (`visible.text`): a table cell or heading is one
    line whatever a name holds."""
    blocks = [_visible(block) for block in blocks]
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Image):
            lines += [f"![{block.caption}]({block.file})", ""]
        elif isinstance(block, Table):
            head = block.head
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "|".join("---" for _ in head) + "|")
            for row in block.rows:
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
            lines.append("")
    return "\n".join(lines)


def render_html(blocks: list[Block], charts: dict[str, bytes]) -> str:
    """The blocks as one HTML page with each image's SVG from `charts` (by file name)
    inline; raises KeyError for an image whose chart is missing."""
    blocks = [_visible(block) for block in blocks]
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            tag = f"h{block.level}"
            body.append(f"<{tag}>{html.escape(block.text)}</{tag}>")
        elif isinstance(block, Paragraph):
            text = html.escape(block.text)
            text = text.replace("**", "")
            body.append(f"<p>{_code(text)}</p>")
        elif isinstance(block, Image):
            svg = charts[block.file].decode()
            svg = svg[svg.index("<svg") :]
            caption = html.escape(block.caption)
            body.append(f"<figure>{svg}<figcaption>{caption}</figcaption></figure>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.head)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_link(html.escape(c))}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:left;font-size:13px}th{background:#f3f3f3}"
        "figure{margin:1em 0}svg{max-width:100%;height:auto}code{background:#f3f3f3}"
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        "<title>corral performance report</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _visible(block: Block) -> Block:
    """`block` with its text made visible (see _shown)."""
    if isinstance(block, Heading):
        return Heading(one_line(block.text), block.level)
    if isinstance(block, Paragraph):
        return Paragraph(_shown(block.text))
    if isinstance(block, Table):
        return Table(
            [one_line(h) for h in block.head], [[one_line(c) for c in row] for row in block.rows]
        )
    return Image(block.file, one_line(block.caption))


def _code(text: str) -> str:
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _link(text: str) -> str:
    """A Markdown link [label](href) in a table cell as an HTML anchor."""
    return re.sub(r"\[([^]]*)\]\(([^)]*)\)", r'<a href="\2">\1</a>', text)
