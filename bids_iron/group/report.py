"""``group/report.html``: summary first, then each analysis (its findings as sentences over its
table), methods, the figures (embedded PNG, links to SVG) and the file list; offline.

Order (issue 12): the cohort table and the clinical columns used, then every significant
finding (Benjamini-Hochberg q < 0.05) as the sentence a paper would write (`findings`), then
the tables (rows with q < 0.05 highlighted), then methods, then the long figure list. The
page, stylesheet, tables and figures are `bids_iron.report._html`'s, shared with the subject
reports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..report import _html as H
from . import findings as F

MAX_ROWS = 300
#: Sentences shown per analysis in the summary (the rest: see the table).
MAX_SENTENCES = 12
_STYLE = ("<style>tr.sig td{background:#e3f4e6}ul.findings li{margin:0.25em 0}"
          ".findings-none{color:#555}div.wide{overflow-x:auto;max-width:100%}</style>")


def table_html(table, max_rows=MAX_ROWS, qcol=None):
    """A table as HTML (numbers to 4 significant digits, n/a for missing; at most
    ``max_rows`` rows, with a note pointing to the TSV); rows with ``qcol`` < 0.05 are
    highlighted. Wide tables scroll inside the page instead of widening it."""
    if qcol is None or table is None or len(table) == 0 or qcol not in table:
        return f'<div class="wide">{H.frame(table, digits=4, max_rows=max_rows)}</div>'

    shown = table.head(max_rows)
    q = pd.to_numeric(shown[qcol], errors="coerce").to_numpy()
    classes = ["sig" if np.isfinite(v) and v < F.Q_LEVEL else None for v in q]
    out = H.table(shown.itertuples(index=False), [str(c) for c in shown.columns], 4,
                  row_classes=classes)
    out = f'<div class="wide">{out}</div>'
    if len(shown) < len(table):
        out += H.note(f"First {len(shown)} of {len(table)} rows; the full table is in the TSV.")
    return out


def figure_html(png, caption):
    """Embed a PNG file (base64) with a link to its SVG beside it."""
    png = Path(png)
    return H.figure(png, caption, caption=caption, link=(png.with_suffix(".svg").name, "SVG"))


def sentences_html(sentences, total=None, table_name=""):
    """A bullet list of sentences; a note when more were found than shown, or none."""
    sentences = [s for s in sentences if s]
    if not sentences:
        return '<p class="findings-none">No result with q &lt; 0.05.</p>'
    more = (total or len(sentences)) - len(sentences)
    out = "<ul class='findings'>" + "".join(f"<li>{H.escape(s)}</li>" for s in sentences) + \
        "</ul>"
    if more > 0:
        out += H.note(f"{more} more with q < 0.05 in {table_name}.")
    return out


def _first(rows, make, limit=MAX_SENTENCES):
    return [make(r) for r in rows.head(limit).to_dict("records")]


#: The measure the summary reports, the first present: age and sites removed if possible.
PRIMARY_MEASURES = ("harmonized_age_corrected", "age_corrected", "harmonized", "raw")


def primary_rows(name, table, measure, control_label=None):
    """The rows of an analysis table the summary reports: the primary ``measure`` (plus the
    yearly change for comparisons and correlations), correlations and stepwise models within
    the patient groups (the controls or 'all' only when there is nothing else), and no T2*
    where R2* (its reciprocal) is there."""
    if table is None or table.empty:
        return table
    keep = table["measure"] == measure if "measure" in table else np.ones(len(table), bool)
    if name == "comparisons":
        keep = ((table.section == "baseline") & keep) | \
            ((table.section == "change") & (table.measure == "change_per_year"))
    if name == "correlations":
        keep = keep | (table.measure == "change_per_year")
    if name == "stepwise":
        keep = np.ones(len(table), bool)
    if "subset" in table and (table.subset != "all").any():
        keep = keep & (table.subset != "all")
        if (~table.subset.isin(["all", control_label])).any():
            keep = keep & (table.subset != control_label)
    if "metric" in table and (table.metric == "r2star").any():
        keep = keep & (table.metric != "t2star")
    return table[np.asarray(keep, bool)]


def findings(tables, control_label, measure="raw"):
    """{analysis: (sentences, number significant, table name)} of the significant results
    among `primary_rows` of each table.

    ``tables``: comparisons, mixed, manova, correlations, stepwise (DataFrames or None).
    """
    out = {}
    tables = {k: primary_rows(k, v, measure, control_label) for k, v in tables.items()}
    cmp = tables.get("comparisons")
    if cmp is not None:
        sel = F.significant(cmp, "q_welch")
        out["Group differences"] = (_first(sel, F.comparison_sentence), len(sel),
                                    "group_comparisons.tsv")
    mixed = tables.get("mixed")
    if mixed is not None:
        terms = mixed[mixed.term.str.startswith("group[T.")]
        sel = F.significant(terms, "q")
        # interactions first: the longitudinal question
        sel = pd.concat([sel[sel.term.str.endswith(":years")],
                         sel[~sel.term.str.endswith(":years")]])
        out["Change over time (mixed models)"] = (
            _first(sel, lambda r: F.mixed_sentence(r, control_label)), len(sel),
            "group_mixedmodels.tsv")
    manova = tables.get("manova")
    if manova is not None:
        sel = F.significant(manova[manova.test == "Pillai's trace"], "q")
        out["Nuclei together (MANOVA)"] = (_first(sel, F.manova_sentence), len(sel),
                                           "group_manova.tsv")
    corr = tables.get("correlations")
    if corr is not None:
        sel = F.significant(corr, "q_spearman")
        out["Clinical correlations"] = (_first(sel, F.correlation_sentence), len(sel),
                                        "group_correlations.tsv")
    step = tables.get("stepwise")
    if step is not None and not step.empty:
        entered = step[step.step.notna()]
        keys = ["subset", "measure", "roi", "hemisphere", "metric", "source"]
        sents = [F.stepwise_sentence(rows) for _, rows in entered.groupby(keys, sort=False)]
        out["Stepwise regression"] = (sents[:MAX_SENTENCES], len(sents), "group_stepwise.tsv")
    return out


def details_html(table, summary_text, qcol=None):
    """A collapsed ``<details>`` holding a table (the full rows of an analysis)."""
    return (f"<details><summary>{H.escape(summary_text)} ({len(table)} rows)</summary>"
            f"{table_html(table, qcol=qcol)}</details>")


def write_report(path, title, blocks):
    """Write the report. ``blocks``: list of (heading, [html fragments]); one section each,
    with a navigation bar over them."""
    ids = [H.anchor(heading, prefix="g-") for heading, _ in blocks]
    body = [_STYLE, H.nav((i, heading.split(" (")[0]) for i, (heading, _) in zip(ids, blocks))]
    body += [H.section(heading, fragments, id=i) for i, (heading, fragments) in zip(ids, blocks)]
    return H.write(path, H.page(title, body))
