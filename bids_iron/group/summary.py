"""Descriptive statistics per group x ROI x metric (Table 2 style: mean (SD), median (IQR))."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import UNIT_KEYS, group_levels, natural_key

SUMMARY_COLUMNS = ["n", "n_missing", "mean", "sd", "median", "q1", "q3", "min", "max",
                   "mean_sd", "median_iqr", "note"]


def _fmt(x):
    return "n/a" if not np.isfinite(x) else f"{x:.4g}"


def summarize(data, value="mean", control_label="HC", section="baseline", measure="raw",
              keys=UNIT_KEYS):
    """n, mean (SD), median (IQR), min, max of ``value`` per group and unit.

    Quartiles are numpy's linear interpolation (pandas ``quantile`` default). The SD has
    ddof=1 and is n/a for n < 2. Rows whose group is n/a are left out.

    Returns
    -------
    DataFrame with columns section, measure, group, ``keys``, `SUMMARY_COLUMNS`.
    """
    data = data[data["group"].notna()]
    cols = ["section", "measure", "group"] + list(keys) + SUMMARY_COLUMNS
    if data.empty:
        return pd.DataFrame(columns=cols)
    grouped = data.groupby(["group"] + list(keys), sort=False)[value]
    table = grouped.agg(n="count", n_all="size", mean="mean", sd="std", median="median",
                        min="min", max="max")
    table["q1"] = grouped.quantile(0.25)
    table["q3"] = grouped.quantile(0.75)
    table = table.reset_index()
    table["n_missing"] = table.pop("n_all") - table["n"]
    table.loc[table.n < 2, "sd"] = np.nan
    table["mean_sd"] = [f"{_fmt(m)} ({_fmt(s)})" for m, s in zip(table["mean"], table["sd"])]
    table["median_iqr"] = [f"{_fmt(m)} ({_fmt(a)}-{_fmt(b)})"
                           for m, a, b in zip(table["median"], table["q1"], table["q3"])]
    notes = []
    for n, miss in zip(table.n, table.n_missing):
        note = "no values" if n == 0 else ("n = 1: SD undefined" if n == 1 else "")
        if miss:
            note = "; ".join(x for x in (note, f"{miss} n/a value{'s' if miss > 1 else ''} "
                                         "left out") if x)
        notes.append(note)
    table["note"] = notes
    table["section"] = section
    table["measure"] = measure
    order = {g: i for i, g in enumerate(group_levels(table.group, control_label))}
    table["_g"] = table.group.map(order)
    table = table.sort_values(["_g"], kind="stable").drop(columns="_g")
    return table[cols].reset_index(drop=True)


def sections(data):
    """(section name, rows) pairs: each session label (when there are sessions), then
    ``baseline`` (every participant's first session)."""
    out = []
    labels = sorted(set(data["session_id"]) - {"n/a"}, key=natural_key)
    for label in labels:
        out.append((label, data[data["session_id"] == label]))
    out.append(("baseline", data[data["is_baseline"]]))
    return out
