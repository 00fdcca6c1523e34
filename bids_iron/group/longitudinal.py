"""Longitudinal change per participant: first to last session (absolute, percent, per year).

Sessions are ordered by ``acq_time`` of sessions.tsv when every session of the participant
has one, else by session label (natural order: ses-2 before ses-10); see `collect`.
``change = last - first``; ``percent_change = 100 change / |first|``;
``change_per_year = change / interval_years`` needs both dates (n/a and a note otherwise).
Within-group change: Wilcoxon signed-rank (scipy.stats.wilcoxon, two-sided) and one-sample t
(scipy.stats.ttest_1samp against 0); Benjamini-Hochberg q within each measure across every
group x roi x hemisphere x metric x source. Between-group comparison of change: see
`compare.compare_groups` (section ``change``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ._common import UNIT_KEYS, add_fdr, describe_missing, first_last, group_levels, join_notes

CHANGE_MEASURES = ("change", "percent_change", "change_per_year")


def changes(data, value="mean", keys=UNIT_KEYS, extra=()):
    """One row per participant with >= 2 sessions and unit: first/last values and change.

    Parameters
    ----------
    data : DataFrame
        Cohort long table (participant_id, session_id, session_order, n_sessions,
        years_from_baseline, group, age, ``keys``, ``value``).
    extra : sequence of str
        Columns copied from the first session (e.g. clinical columns, covariates).
    """
    multi = data[data["n_sessions"] >= 2]
    cols = (["participant_id", "group"] + list(keys) + ["first_session", "last_session",
            "n_sessions", "interval_years", "age_first", "value_first", "value_last", "change",
            "percent_change", "change_per_year", "note"] + list(extra))
    if multi.empty:
        return pd.DataFrame(columns=cols)
    is_first, is_last = first_last(multi)
    first, last = multi[is_first], multi[is_last]
    on = ["participant_id"] + list(keys)
    gap = ["missing_sessions"] if "missing_sessions" in multi else []
    merged = first[on + ["group", "session_id", "n_sessions", "age", "years_from_baseline",
                         value] + gap + list(extra)].merge(
        last[on + ["session_id", "years_from_baseline", value]], on=on, how="inner",
        suffixes=("_first", "_last"))
    out = merged[on + ["group"]].copy()
    out["first_session"] = merged["session_id_first"]
    out["last_session"] = merged["session_id_last"]
    out["n_sessions"] = merged["n_sessions"]
    out["interval_years"] = (merged["years_from_baseline_last"]
                             - merged["years_from_baseline_first"])
    out["age_first"] = merged["age"]
    out["value_first"] = merged[f"{value}_first"]
    out["value_last"] = merged[f"{value}_last"]
    out["change"] = out["value_last"] - out["value_first"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["percent_change"] = np.where(out["value_first"] != 0,
                                         100.0 * out["change"] / out["value_first"].abs(),
                                         np.nan)
        ok = out["interval_years"] > 0
        out["change_per_year"] = np.where(ok, out["change"] / out["interval_years"], np.nan)
    notes = []
    gaps = (merged["missing_sessions"] if "missing_sessions" in merged
            else pd.Series(np.nan, index=merged.index))
    for vf, vl, iy, gap in zip(out.value_first, out.value_last, out.interval_years, gaps):
        n = [f"no ROI table for {gap}" if isinstance(gap, str) and gap else ""]
        if not (np.isfinite(vf) and np.isfinite(vl)):
            n.append("value n/a in the first or last session")
        elif vf == 0:
            n.append("first value 0: percent change undefined")
        if not np.isfinite(iy):
            n.append("no acq_time in sessions.tsv: per-year change unknown")
        elif iy <= 0:
            n.append("sessions on the same date: per-year change undefined")
        notes.append(join_notes(*n))
    out["note"] = notes
    for column in extra:
        out[column] = merged[column]
    return out[cols]


def change_tests(samples):
    """``[(w, p_wilcoxon, t, p_ttest)]`` of each sample: scipy's two-sided Wilcoxon
    signed-rank and one-sample t against 0, the numbers of one call per sample. The calls run
    once per set of samples of the same size (scipy's per-call overhead dominated); a
    Wilcoxon test of a sample with zeros or tied magnitudes (scipy then chooses a permutation
    or normal p for it alone) still runs alone."""
    out = [None] * len(samples)
    wilcoxon, t_tests = {}, {}
    for i, x in enumerate(samples):
        t_tests.setdefault(len(x), []).append(i)
        plain = not (x == 0).any() and len(np.unique(np.abs(x))) == len(x)
        wilcoxon.setdefault((len(x), i if not plain else -1), []).append(i)
    w_res = {}
    for rows in wilcoxon.values():
        res = stats.wilcoxon(np.stack([samples[i] for i in rows]), alternative="two-sided",
                             axis=-1)
        w_res.update(zip(rows, zip(np.atleast_1d(res.statistic), np.atleast_1d(res.pvalue))))
    for rows in t_tests.values():
        res = stats.ttest_1samp(np.stack([samples[i] for i in rows]), 0.0, axis=-1)
        for i, t, p in zip(rows, np.atleast_1d(res.statistic), np.atleast_1d(res.pvalue)):
            out[i] = (float(w_res[i][0]), float(w_res[i][1]), float(t), float(p))
    return out


def change_summary(table, control_label="HC", keys=UNIT_KEYS):
    """Per group x unit x measure: n, mean/SD/median of the change and tests against 0."""
    rows = []
    if table.empty:
        return pd.DataFrame(columns=["measure", "group"] + list(keys) + [
            "n", "mean", "sd", "median", "w", "p_wilcoxon", "t", "p_ttest", "note",
            "q_wilcoxon", "q_ttest"])
    data = table[table["group"].notna()]
    order = {g: i for i, g in enumerate(group_levels(data["group"], control_label))}
    tested = []  # (row index, changes) of the rows with tests
    for measure in CHANGE_MEASURES:
        for (group, *unit), chunk in data.groupby(["group"] + list(keys), sort=False):
            x, note = describe_missing(chunk[measure])
            row = {"measure": measure, "group": group, **dict(zip(keys, unit)), "n": len(x),
                   "mean": x.mean() if len(x) else np.nan,
                   "sd": x.std(ddof=1) if len(x) > 1 else np.nan,
                   "median": np.median(x) if len(x) else np.nan,
                   "w": np.nan, "p_wilcoxon": np.nan, "t": np.nan, "p_ttest": np.nan}
            if len(x) < 3:
                note = join_notes(f"n = {len(x)} < 3: no test", note)
            elif np.all(x == x[0]):
                note = join_notes("all changes equal: no test", note)
            else:
                tested.append((len(rows), x))
            row["note"] = note
            row["_g"] = order.get(group, 99)
            rows.append(row)
    for index, (w, p_w, t, p_t) in zip([i for i, _ in tested],
                                       change_tests([x for _, x in tested])):
        rows[index].update(w=w, p_wilcoxon=p_w, t=t, p_ttest=p_t)
    out = pd.DataFrame(rows).sort_values(["measure", "_g"], kind="stable").drop(columns="_g")
    return add_fdr(out, ["measure"], ["p_wilcoxon", "p_ttest"]).reset_index(drop=True)
