"""``group/report.html``: the group figures (embedded PNG, links to SVG) and tables, offline.

The page, stylesheet, tables and figures are `bids_iron.report._html`'s, shared with the
subject reports.
"""

from __future__ import annotations

from pathlib import Path

from ..report import _html as H

MAX_ROWS = 300


def table_html(table, max_rows=MAX_ROWS):
    """A table as HTML (numbers to 4 significant digits, n/a for missing; at most
    ``max_rows`` rows, with a note pointing to the TSV)."""
    return H.frame(table, digits=4, max_rows=max_rows)


def figure_html(png, caption):
    """Embed a PNG file (base64) with a link to its SVG beside it."""
    png = Path(png)
    return H.figure(png, caption, caption=caption, link=(png.with_suffix(".svg").name, "SVG"))


def write_report(path, title, blocks):
    """Write the report. ``blocks``: list of (heading, [html fragments]); one section each,
    with a navigation bar over them."""
    ids = [H.anchor(heading, prefix="g-") for heading, _ in blocks]
    body = [H.nav((i, heading.split(" (")[0]) for i, (heading, _) in zip(ids, blocks))]
    body += [H.section(heading, fragments, id=i) for i, (heading, fragments) in zip(ids, blocks)]
    return H.write(path, H.page(title, body))
