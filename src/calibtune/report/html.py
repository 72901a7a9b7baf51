"""One self-contained HTML page per run folder: images inlined, no network, sortable tables.

The page is built from plain blocks (`Heading`, `Paragraph`, `Table`, `Figure`, `Details`) so every
workflow — eval, posthoc, train, report, reproduce — assembles its own page from the same parts.
Nothing is fetched: images are data URIs, the style and the table sorter are inline, so the file
can be mailed, archived or opened on a phone. Text is escaped; numbers in tables sort as numbers.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    """A paragraph of plain text; **bold** spans are the only markup."""

    text: str
    kind: str = ""  # "" | "note" (highlighted) | "warning"


@dataclass
class Table:
    columns: list[str]
    rows: list[list]
    caption: str = ""
    sortable: bool = True


@dataclass
class Figure:
    """An image file (PNG or SVG) embedded in the page, with a caption."""

    path: Path
    caption: str = ""
    alt: str = ""


@dataclass
class Details:
    """A collapsed block (for long tables or raw configuration)."""

    summary: str
    blocks: list = field(default_factory=list)


Block = Union[Heading, Paragraph, Table, Figure, Details]

STYLE = """
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #ffffff; --muted: #6e6e73;
        --line: #d2d2d7; --accent: #0b63ce; --note: #eef5ff; --warn: #fff4e5; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #f5f5f7; --bg: #1c1c1e; --muted: #a1a1a6; --line: #3a3a3c; --accent: #5ea2ff;
          --note: #14263d; --warn: #3d2a12; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 72rem; padding: 1rem; font: 16px/1.5 system-ui, -apple-system,
       "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 1.6rem; margin: .5rem 0 1rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }
h3 { font-size: 1.05rem; }
dl.context { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem;
             font-size: .9rem; color: var(--muted); }
dl.context dt { font-weight: 600; } dl.context dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; margin: .5rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; min-width: 100%; }
caption { text-align: left; color: var(--muted); padding: .25rem 0; caption-side: top; }
th, td { padding: .35rem .6rem; border-bottom: 1px solid var(--line); text-align: right;
         white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { position: sticky; top: 0; background: var(--bg); }
th.sortable { cursor: pointer; user-select: none; }
th.sortable::after { content: " \\2195"; color: var(--muted); font-size: .8em; }
th[aria-sort="ascending"]::after { content: " \\2191"; }
th[aria-sort="descending"]::after { content: " \\2193"; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; display: block;
                                        background: #fff; border-radius: 4px; }
figcaption { color: var(--muted); font-size: .9rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(18rem, 1fr)); gap: 1rem; }
p.note { background: var(--note); padding: .6rem .8rem; border-radius: 6px; }
p.warning { background: var(--warn); padding: .6rem .8rem; border-radius: 6px; }
footer { color: var(--muted); font-size: .8rem; margin-top: 3rem; }
"""

SORTER = """
document.querySelectorAll("table[data-sortable] th").forEach(function (th, col) {
  th.classList.add("sortable");
  th.setAttribute("tabindex", "0");
  function sort() {
    var table = th.closest("table"), body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    function key(row) {
      var cell = row.cells[index]; var v = cell.getAttribute("data-value");
      if (v === null) { v = cell.textContent.trim(); }
      var n = parseFloat(v);
      return isNaN(n) ? v.toLowerCase() : n;
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x !== typeof y) { return typeof x === "number" ? -1 : 1; }
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  th.addEventListener("click", sort);
  th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sort(); } });
});
"""


def _inline(text: str) -> str:
    """Escape, then turn **x** into <strong>x</strong>."""
    parts = html.escape(str(text)).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _cell(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: an empty cell that sorts last
            return '<td data-value="">–</td>'
        return f'<td data-value="{value!r}">{value:.3f}</td>'
    if isinstance(value, tuple) and len(value) == 2:  # (shown text, sort value)
        return f'<td data-value="{html.escape(str(value[1]))}">{_inline(value[0])}</td>'
    return f"<td>{_inline(value)}</td>"


def image_data_uri(path: Path) -> str:
    """The image as a data URI (PNG or SVG), so the page needs no other file."""
    path = Path(path)
    mime = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
            ".jpeg": "image/jpeg"}.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"cannot embed {path}: only PNG, SVG or JPEG images")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _block(block: Block) -> str:
    if isinstance(block, Heading):
        level = min(max(block.level, 2), 4)
        return f"<h{level}>{_inline(block.text)}</h{level}>"
    if isinstance(block, Paragraph):
        cls = f' class="{block.kind}"' if block.kind else ""
        return f"<p{cls}>{_inline(block.text)}</p>"
    if isinstance(block, Table):
        head = "".join(f'<th scope="col">{_inline(c)}</th>' for c in block.columns)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in block.rows)
        caption = f"<caption>{_inline(block.caption)}</caption>" if block.caption else ""
        sortable = " data-sortable" if block.sortable else ""
        return (f'<div class="scroll"><table{sortable}>{caption}<thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table></div>")
    if isinstance(block, Figure):
        alt = html.escape(block.alt or block.caption or Path(block.path).stem, quote=True)
        caption = f"<figcaption>{_inline(block.caption)}</figcaption>" if block.caption else ""
        return (f'<figure><img src="{image_data_uri(block.path)}" alt="{alt}" loading="eager">'
                f"{caption}</figure>")
    if isinstance(block, Details):
        inner = "".join(_block(b) for b in block.blocks)
        return f"<details><summary>{_inline(block.summary)}</summary>{inner}</details>"
    if isinstance(block, list):  # a row of figures side by side
        return '<div class="grid">' + "".join(_block(b) for b in block) + "</div>"
    raise TypeError(f"not a report block: {block!r}")


def render_html(title: str, blocks: list, context: dict | None = None, footer: str = "") -> str:
    """The whole page as one string. `context` is shown as a small key–value list on top."""
    ctx = ""
    if context:
        items = "".join(f"<dt>{_inline(k)}</dt><dd>{_inline(v)}</dd>" for k, v in context.items())
        ctx = f'<dl class="context">{items}</dl>'
    body = "\n".join(_block(b) for b in blocks)
    foot = f"<footer>{_inline(footer)}</footer>" if footer else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{_inline(title)}</h1>{ctx}\n{body}\n{foot}"
            f"<script>{SORTER}</script></body></html>\n")
