"""Two-group comparisons per ROI x metric: Mann-Whitney U and Welch t, with effect sizes.

Conventions
-----------
* A pair ``(group_a, group_b)`` is compared as a - b: each group against the controls
  (``group_b`` is the control label), then the other groups pairwise.
* Mann-Whitney U: scipy.stats.mannwhitneyu(a, b, alternative="two-sided"), default method
  ('auto': exact without ties for small samples, else normal approximation with tie
  correction). ``u`` is the statistic of group a. Rank-biserial correlation
  ``r_rb = 2 U_a / (n_a n_b) - 1`` (+1: every a above every b).
* Welch t: scipy.stats.ttest_ind(a, b, equal_var=False), with the 95 % Welch interval of the
  difference of means (``ci_low``, ``ci_high``; scipy ``confidence_interval``). Cohen's d
  uses the pooled SD, ``sqrt(((n_a-1) s_a^2 + (n_b-1) s_b^2) / (n_a + n_b - 2))`` (SDs with ddof=1).
* Benjamini-Hochberg q (``q_mwu``, ``q_welch``): the family is every roi x hemisphere x
  metric x source x pair test of one table section (one session, baseline, or change) and
  one measure (raw, age_corrected, ...), separately for each test.
* Statistics need n >= 3 in both groups and some variance; otherwise they are n/a and
  ``note`` says why. n/a values are left out (and counted in ``note``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ._common import UNIT_KEYS, add_fdr, describe_missing, group_levels, group_pairs, join_notes

MIN_N = 3
STAT_COLUMNS = ["difference", "ci_low", "ci_high", "percent_difference", "u", "p_mwu", "r_rb",
                "t", "df", "p_welch", "cohen_d"]


def _describe_pair(a, b, label_a, label_b):
    """The descriptive part of `compare_two`: ``(out, notes, a, b, tested)``; ``tested`` is
    False when no test is run (``out`` is then final)."""
    a, note_a = describe_missing(a)
    b, note_b = describe_missing(b)
    out = {"n_a": len(a), "n_b": len(b),
           "mean_a": a.mean() if len(a) else np.nan, "mean_b": b.mean() if len(b) else np.nan,
           "sd_a": a.std(ddof=1) if len(a) > 1 else np.nan,
           "sd_b": b.std(ddof=1) if len(b) > 1 else np.nan,
           "median_a": np.median(a) if len(a) else np.nan,
           "median_b": np.median(b) if len(b) else np.nan}
    out.update(dict.fromkeys(STAT_COLUMNS, np.nan))
    notes = [f"{label_a}: {note_a}" if note_a else "", f"{label_b}: {note_b}" if note_b else ""]
    small = [f"{lab} n={n}" for lab, n in ((label_a, len(a)), (label_b, len(b))) if n < MIN_N]
    if small:
        out["note"] = join_notes(f"n < {MIN_N} ({', '.join(small)}): no test", *notes)
        return out, notes, a, b, False
    out["difference"] = out["mean_a"] - out["mean_b"]
    if out["mean_b"] != 0:
        out["percent_difference"] = 100.0 * out["difference"] / abs(out["mean_b"])
    both = np.concatenate([a, b])
    if np.all(both == both[0]):
        out["note"] = join_notes("all values equal: no test", *notes)
        return out, notes, a, b, False
    return out, notes, a, b, True


def _welch_needed(out):
    return not (out["sd_a"] == 0 and out["sd_b"] == 0)


def _mwu_tests(a, b):
    """``[(U of a, p)]`` of the rows of ``a`` and ``b`` (2-D: one pair per row, scipy's
    Mann-Whitney U along the last axis)."""
    res = stats.mannwhitneyu(a, b, alternative="two-sided", axis=-1)
    return list(zip(np.atleast_1d(res.statistic), np.atleast_1d(res.pvalue)))


def _welch_tests(a, b):
    """``[(t, p, df, ci_low, ci_high)]`` of the rows of ``a`` and ``b`` (scipy's Welch t)."""
    res = stats.ttest_ind(a, b, equal_var=False, axis=-1)
    ci = res.confidence_interval(0.95)
    return list(zip(*(np.atleast_1d(v) for v in (res.statistic, res.pvalue, res.df, ci.low,
                                                  ci.high))))


def _finish_pair(out, notes, a, b, mwu, welch):
    """`compare_two`'s statistics from the test results ``mwu`` and ``welch`` (None when
    both groups lack variance)."""
    out["u"], out["p_mwu"] = float(mwu[0]), float(mwu[1])
    out["r_rb"] = 2.0 * out["u"] / (len(a) * len(b)) - 1.0
    if welch is None:
        notes.insert(0, "no variance within either group: Welch t and Cohen's d undefined")
    else:
        out["t"], out["p_welch"], out["df"] = (float(v) for v in welch[:3])
        out["ci_low"], out["ci_high"] = float(welch[3]), float(welch[4])
        pooled = np.sqrt(((len(a) - 1) * out["sd_a"] ** 2 + (len(b) - 1) * out["sd_b"] ** 2)
                         / (len(a) + len(b) - 2))
        out["cohen_d"] = out["difference"] / pooled
    out["note"] = join_notes(*notes)
    return out


def compare_two(a, b, label_a="a", label_b="b"):
    """Mann-Whitney U and Welch t of two samples, with rank-biserial r and Cohen's d.

    Parameters
    ----------
    a, b : array-like of float
        Values of the two groups; NaN values are left out.

    Returns
    -------
    dict
        n_a, n_b, mean_a, mean_b, sd_a, sd_b, median_a, median_b and `STAT_COLUMNS`, plus
        ``note`` (why a statistic is n/a). Nothing is computed from fewer than 3 values per
        group or from data without variance.

    Examples
    --------
    >>> r = compare_two([1, 2, 3, 4], [5, 6, 7, 8])
    >>> round(float(r["r_rb"]), 3), round(float(r["cohen_d"]), 3)
    (-1.0, -3.098)
    """
    return compare_pairs([(a, b, label_a, label_b)])[0]


def compare_pairs(pairs):
    """`compare_two` of many pairs ``[(a, b, label_a, label_b)]``, the same numbers: scipy's
    tests run once per set of pairs with the same sizes (and, for Mann-Whitney U, the same
    presence of ties, which chooses its exact or normal p), not once per pair (scipy's
    per-call overhead was 2/3 of the group level's comparisons)."""
    done = [_describe_pair(*pair) for pair in pairs]
    mwu, welch = {}, {}
    by_mwu, by_welch = {}, {}
    for i, (out, _notes, a, b, tested) in enumerate(done):
        if not tested:
            continue
        both = np.concatenate([a, b])
        ties = len(np.unique(both)) < len(both)
        by_mwu.setdefault((len(a), len(b), ties), []).append(i)
        if _welch_needed(out):
            by_welch.setdefault((len(a), len(b)), []).append(i)
    for rows in by_mwu.values():
        mwu.update(zip(rows, _mwu_tests(np.stack([done[i][2] for i in rows]),
                                        np.stack([done[i][3] for i in rows]))))
    for rows in by_welch.values():
        welch.update(zip(rows, _welch_tests(np.stack([done[i][2] for i in rows]),
                                            np.stack([done[i][3] for i in rows]))))
    return [out if not tested else _finish_pair(out, notes, a, b, mwu[i], welch.get(i))
            for i, (out, notes, a, b, tested) in enumerate(done)]


def compare_groups(data, value="mean", control_label="HC", section="baseline", measure="raw",
                   keys=UNIT_KEYS):
    """Compare every pair of groups for each analysis unit (roi x hemisphere x metric x source).

    Parameters
    ----------
    data : DataFrame
        One row per participant and unit (e.g. baseline sessions), with columns ``group``,
        ``keys`` and ``value``. Rows whose group is n/a are left out.
    value : str
        Column compared.
    control_label : str
    section, measure : str
        Written into the ``section``/``measure`` columns (they define the FDR family).

    Returns
    -------
    DataFrame
        One row per unit x pair (or one row with ``group_b`` n/a and a note when fewer than two
        groups have values), `STAT_COLUMNS`, and ``q_mwu``/``q_welch`` (Benjamini-Hochberg
        within this section and measure).
    """
    rows, pairs = [], []  # rows: (unit and groups, index in pairs, no-comparison note)
    data = data[data["group"].notna()]
    values = data[value].to_numpy(dtype=float)
    groups = data["group"].astype(str).to_numpy(dtype=object)
    for unit, pos in data.groupby(list(keys), sort=False).indices.items():
        v, g = values[pos], groups[pos]
        present = group_levels(g[np.isfinite(v)], control_label)
        levels = group_levels(g, control_label)
        base = dict(zip(keys, unit if isinstance(unit, tuple) else (unit,)))
        if len(present) < 2:
            only = present[0] if present else (levels[0] if levels else "n/a")
            rows.append(({**base, "group_a": only, "group_b": "n/a"}, len(pairs),
                         "only one group has values: no comparison" if present else
                         "no values"))
            pairs.append((v[g == only], [], only, "-"))
            continue
        for ga, gb in group_pairs(present, control_label):
            rows.append(({**base, "group_a": ga, "group_b": gb}, len(pairs), None))
            pairs.append((v[g == ga], v[g == gb], ga, gb))
    results = compare_pairs(pairs)
    table_rows = []
    for base, index, alone in rows:
        row = {**base, **results[index]}
        if alone is not None:
            row.update(dict.fromkeys(STAT_COLUMNS, np.nan))
            row["n_b"] = 0
            row["note"] = alone
        table_rows.append(row)
    table = pd.DataFrame(table_rows)
    if table.empty:
        table = pd.DataFrame(columns=list(keys) + ["group_a", "group_b", "n_a", "n_b",
                                                   "mean_a", "mean_b", "sd_a", "sd_b",
                                                   "median_a", "median_b"]
                             + STAT_COLUMNS + ["note"])
    table.insert(0, "measure", measure)
    table.insert(0, "section", section)
    table = add_fdr(table, ["section", "measure"], ["p_mwu", "p_welch"])
    cols = (["section", "measure"] + list(keys) + ["group_a", "group_b", "n_a", "n_b", "mean_a",
            "mean_b", "sd_a", "sd_b", "median_a", "median_b"] + STAT_COLUMNS
            + ["q_mwu", "q_welch", "note"])
    return table[cols]
