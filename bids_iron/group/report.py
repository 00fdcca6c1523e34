"""``group/report.html``: the group figures (embedded PNG, links to SVG) and tables, offline."""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..bids.derivatives import atomic_path

MAX_ROWS = 300
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1300px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}.note{color:#666;font-size:.9em}
details{margin:.5em 0}summary{cursor:pointer;font-weight:600}
"""


def _fmt(x):
    if x is None or x is pd.NA or x is pd.NaT:
        return "n/a"
    if isinstance(x, (float, np.floating)):
        return "n/a" if not np.isfinite(x) else f"{x:.4g}"
    return html.escape(str(x))


def table_html(table, max_rows=MAX_ROWS):
    """A table as HTML (numbers to 4 significant digits, n/a for missing)."""
    if table is None or table.empty:
        return "<p class='note'>(no rows)</p>"
    shown = table.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "\n".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
                     for row in shown.itertuples(index=False))
    more = (f"<p class='note'>First {max_rows} of {len(table)} rows; the full table is in the "
            "TSV.</p>") if len(table) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def figure_html(png, caption):
    """Embed a PNG (base64) with a link to its SVG beside it."""
    png = Path(png)
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    svg = png.with_suffix(".svg").name
    return (f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)} (<a href='{svg}'>SVG</a>)</figcaption></figure>")


def write_report(path, title, blocks):
    """Write the report. ``blocks``: list of (heading, [html fragments])."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='note'>bids-iron {__version__}, {stamp}</p>"]
    for heading, fragments in blocks:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.extend(fragments)
    parts.append("</body></html>")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return Path(path)
