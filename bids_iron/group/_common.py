"""Small shared helpers of the group statistics (no file I/O)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

#: Columns that identify one analysis unit: one ROI value per session.
UNIT_KEYS = ["roi", "hemisphere", "metric", "source"]
#: Metric display names for figures.
METRIC_LABELS = {"r2star": "R2* (1/s)", "t2star": "T2* (s)", "lfs": "LFS (ppm)",
                 "chi": "\u03c7 (ppm)", "chi_wholebrain": "\u03c7, whole-brain ref. (ppm)"}


def natural_key(label):
    """Sort key that orders ``ses-2`` before ``ses-10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(label))]


def group_levels(groups, control_label):
    """Group labels present, the control label first, the others in natural order."""
    levels = sorted({str(g) for g in groups if g is not None and not pd.isna(g)}, key=natural_key)
    if control_label in levels:
        levels.remove(control_label)
        levels.insert(0, control_label)
    return levels


def group_pairs(levels, control_label):
    """Pairs (a, b) compared as a - b: every group vs the controls, then the other pairs."""
    others = [g for g in levels if g != control_label]
    pairs = [(g, control_label) for g in others] if control_label in levels else []
    pairs += [(a, b) for i, a in enumerate(others) for b in others[i + 1:]]
    return pairs


def join_notes(*notes):
    """Join non-empty notes with '; ' (empty string when there are none)."""
    return "; ".join(n for n in notes if n)


def add_fdr(table, family, pcols):
    """Add a Benjamini-Hochberg ``q`` column beside each p column, within each family.

    ``family`` lists the columns whose values define one family of tests; p-values that are
    n/a stay out of the family (their q is n/a). q uses scipy.stats.false_discovery_control
    (method 'bh').
    """
    from scipy import stats  # here: the figure workers import this module, not scipy.stats

    table = table.copy()
    for pcol in pcols:
        qcol = "q" + pcol[1:] if pcol.startswith("p") else f"q_{pcol}"
        if table.empty:
            table[qcol] = np.nan
            continue
        pvals = table[pcol].to_numpy(dtype=float)
        qvals = np.full(pvals.shape, np.nan)
        for pos in table.groupby(list(family), sort=False, dropna=False).indices.values():
            p = pvals[pos]
            ok = np.isfinite(p)
            if ok.any():
                q = np.full(p.shape, np.nan)
                q[ok] = stats.false_discovery_control(p[ok], method="bh")
                qvals[pos] = q
        table[qcol] = qvals
    return table


def describe_missing(values):
    """(finite values, note about left-out n/a values)."""
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    dropped = int((~ok).sum())
    return values[ok], (f"{dropped} n/a value{'s' if dropped > 1 else ''} left out"
                        if dropped else "")


def first_last(data):
    """Boolean masks (first, last): each row is of its participant's first / last session
    with values (lowest / highest ``session_order`` present in ``data``; a baseline without an
    ROI table is not in ``data``, so ``first`` is then a later session)."""
    order = data.groupby("participant_id")["session_order"]
    return (data["session_order"] == order.transform("min"),
            data["session_order"] == order.transform("max"))
