"""The small HTML toolkit of both reports (subject report `report.html`, `group.report`).

One stylesheet, escaping, number formatting, tables (from rows or a DataFrame), embedded PNG
figures, sections, a navigation bar and the page skeleton, written atomically. Pages are
self-contained: inline CSS, figures as ``data:`` URIs, no scripts, no network resources.

Usage::

    from bids_iron.report import _html as H
    body = [H.section("Cohort", H.frame(table), id="cohort"),
            H.section("Figures", H.figure(png_bytes, "R2* by group", caption="R2* by group"))]
    H.write(path, H.page("bids-iron group report", body))
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..bids.derivatives import atomic_path

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1300px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.5em;border-bottom:2px solid #444}h2{font-size:1.3em;margin-top:2em;
border-bottom:1px solid #999}h3{font-size:1.05em;margin-top:1.4em}
img{max-width:100%;display:block;margin:0.3em 0}
figure{margin:1em 0}figure img{border:1px solid #eee}figcaption{font-size:0.9em;color:#444}
table{border-collapse:collapse;font-size:0.82em;margin:0.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}
details{margin:0.5em 0}summary{cursor:pointer;font-weight:600}
.legend span{display:inline-block;margin-right:0.9em;font-size:0.85em}
.legend i{display:inline-block;width:0.9em;height:0.9em;margin-right:0.3em;
vertical-align:middle;border:1px solid #555}
.note{color:#555;font-size:0.9em}.warn{color:#a00}
.methods{background:#f6f6f6;border-left:4px solid #888;padding:0.6em 1em}
.methods ol{font-size:0.9em}
nav a{margin-right:1em}
.mark-pass{color:#176d2c;font-weight:600}.mark-warn{color:#b00;font-weight:600}
.mark-info{color:#777}.left{text-align:left}
tr.flag td{background:#fde3e3}tr.warnrow td{background:#fff0e0}
table.qc td,table.qc th{text-align:left;vertical-align:top}
table.qc td:nth-child(2){text-align:right;white-space:nowrap}
table.qc td:nth-child(3),table.qc td:nth-child(4){white-space:nowrap}
.summary{padding:0.1em 0.8em;border-left:4px solid #176d2c;background:#eef7f0;margin:0.8em 0}
.summary ul{margin:0 0 0.5em 0;padding-left:1.2em}.summary li{color:#900}
.summary.has-warn{border-left-color:#b00;background:#fdf0f0}
"""


def escape(text):
    """``text`` (any object, via str) escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def anchor(label, prefix="s-"):
    """An id for ``label``: ``prefix`` + label with every run of other characters as ``-``."""
    return prefix + re.sub(r"[^A-Za-z0-9_-]+", "-", str(label))


def number(value, digits=4):
    """A cell value as text: ``n/a`` for None, NA and non-finite numbers; integers whole;
    other numbers to ``digits`` significant digits; anything else via str.

    Examples
    --------
    >>> [number(v) for v in (None, float("nan"), 3, 2.0, 0.000123456, True, "x")]
    ['n/a', 'n/a', '3', '2', '0.0001235', 'True', 'x']
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return "n/a"
    if isinstance(value, (bool, np.bool_, str)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}g}" if np.isfinite(value) else "n/a"
    return str(value)


def note(text, css="note"):
    """A paragraph of ``text`` (escaped) in class ``css``."""
    return f'<p class="{css}">{escape(text)}</p>'


class Markup(str):
    """HTML a `table` cell holds as it is (not escaped); e.g. a `mark`."""


def mark(status):
    """The status mark of a check: ``ok`` -> a green tick "pass", ``warn`` -> a red "warn",
    anything else (``info``) -> a grey "info", as `Markup` for a `table` cell.

    Examples
    --------
    >>> mark("warn")
    '<span class="mark-warn">&#9888; warn</span>'
    """
    words = {"ok": ("pass", "&#10003; pass"), "warn": ("warn", "&#9888; warn")}
    css, text = words.get(status, ("info", "info"))
    return Markup(f'<span class="mark-{css}">{text}</span>')


def table(rows, header, digits=4, row_classes=None):
    """A table of ``rows`` (sequences of cells) under ``header``; cells go through `number`
    and are escaped, except `Markup` cells. ``row_classes``: a CSS class (or None) per row."""
    parts = ["<table><thead><tr>"]
    parts += [f"<th>{escape(h)}</th>" for h in header]
    parts.append("</tr></thead><tbody>")
    rows = list(rows)
    for i, row in enumerate(rows):
        css = row_classes[i] if row_classes is not None else None
        parts.append((f'<tr class="{escape(css)}">' if css else "<tr>") + "".join(
            f"<td>{c if isinstance(c, Markup) else escape(number(c, digits))}</td>"
            for c in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def frame(data, digits=4, max_rows=None, empty="(no rows)"):
    """A DataFrame as a `table` (no index), at most ``max_rows`` rows with a note saying so;
    ``empty`` (a note) when it has no rows, "" when ``empty`` is None."""
    if data is None or len(data) == 0:
        return "" if empty is None else note(empty)
    shown = data if max_rows is None else data.head(max_rows)
    out = table(shown.itertuples(index=False), [str(c) for c in shown.columns], digits)
    if len(shown) < len(data):
        out += note(f"First {len(shown)} of {len(data)} rows; the full table is in the TSV.")
    return out


def png_bytes(image):
    """PNG bytes of ``image``: PNG bytes as they are, a path to a PNG file, or a matplotlib
    figure (rendered at its own dpi; the figure is left open)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if hasattr(image, "savefig"):
        buf = io.BytesIO()
        image.savefig(buf, format="png")
        return buf.getvalue()
    raise TypeError(f"expected PNG bytes, a PNG path or a matplotlib figure, got "
                    f"{type(image).__name__}")


def figure(image, alt, caption=None, link=None):
    """An embedded PNG (``data:`` URI, see `png_bytes`) with ``alt`` text.

    With ``caption`` (text) or ``link`` (``(href, text)``, e.g. the SVG beside the file) it
    is a ``<figure>`` with a caption, else a bare ``<img>``.
    """
    data = base64.b64encode(png_bytes(image)).decode("ascii")
    img = f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
    if caption is None and link is None:
        return img
    text = escape(caption if caption is not None else alt)
    if link is not None:
        text += f' (<a href="{escape(link[0])}">{escape(link[1])}</a>)'
    return f"<figure>{img}<figcaption>{text}</figcaption></figure>"


def _join(body):
    return body if isinstance(body, str) else "\n".join(body)


def section(heading, body, id=None, level=2):
    """``<section>`` with a heading (escaped) over ``body`` (HTML, or a list of HTML pieces)."""
    ident = f' id="{escape(id)}"' if id else ""
    return (f"<section{ident}><h{level}>{escape(heading)}</h{level}>\n{_join(body)}\n"
            "</section>")


def nav(links):
    """A navigation bar of ``(id, text)`` links to anchors of the page."""
    items = "".join(f'<a href="#{escape(i)}">{escape(t)}</a>' for i, t in links)
    return f"<nav>{items}</nav>"


def page(title, body, summary=""):
    """The whole document: head with the stylesheet, ``title`` as h1, a byline (bids-iron
    version, UTC time of generation, then ``summary``), then ``body`` (HTML or a list)."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    byline = f"bids-iron {__version__}, generated {when}" + (f"; {summary}" if summary else "")
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      f"<title>{escape(title)}</title>", f"<style>{CSS}</style>", "</head>",
                      "<body>", f"<h1>{escape(title)}</h1>", note(byline + "."), _join(body),
                      "</body></html>"]) + "\n"


def write(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the Path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
