"""Forward stepwise regression of an ROI value on candidate predictors (partial F entry).

As in the multicentre R2* studies of MS (which variables explain deep gray matter R2*: age,
disease duration, EDSS, lesion load, brain volumes), each roi x hemisphere x metric x source
is regressed on the candidates one step at a time:

1. start from the intercept-only model;
2. for every candidate not yet in the model, fit OLS with it added and compute the partial F
   test of the R2 increase, F = (RSS_before - RSS_after) / (RSS_after / (n - k_after));
3. the candidate with the smallest partial-F p enters if p < `P_ENTER` (0.05), else stop.

The rows give the order of entry, the R2 after each step, the R2 change with its F and p, and
the final model's OLS coefficient, standardized coefficient (beta SD(x) / SD(y)), t and p for
each variable that entered. Complete cases over all candidates (a candidate with values for
fewer than `MIN_COVERAGE` of the rows is left out first, noted). No candidate entering is a
row ``term = none`` with a note, so the table is never a bare header. Forward selection
inflates the final p-values (they are conditional on the selection); use the R2 change p of
the entry step and report the procedure.

Reference: Draper NR, Smith H (1998) Applied Regression Analysis, 3rd ed., ch. 15 (forward
selection with partial F); Khalil M et al. (2011) Determinants of brain iron in multiple
sclerosis: a quantitative 3T MRI study. Neurology 77:1691-1697 (stepwise regression of R2*).

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> X = pd.DataFrame({"EDSS": rng.uniform(0, 6, 60), "duration": rng.uniform(0, 20, 60),
...                   "noise": rng.normal(0, 1, 60)})
>>> y = 20 + 0.8 * X.EDSS + 0.1 * X.duration + rng.normal(0, 0.5, 60)
>>> steps, note = forward_stepwise(y.to_numpy(), X)
>>> list(steps.term), bool((steps.r2_change > 0).all())
(['EDSS', 'duration'], True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from ._common import UNIT_KEYS, join_notes

#: Entry threshold of the partial F test (the multicentre studies' 0.05).
P_ENTER = 0.05
#: A candidate needs values in at least this fraction of the rows with a value.
MIN_COVERAGE = 0.5
STEP_COLUMNS = ["step", "term", "r2", "r2_change", "f_change", "p_change", "beta", "se",
                "beta_std", "t", "p", "n", "candidates", "note"]


def _rss(y, X):
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = y - X @ coef
    return float(r @ r)


def forward_stepwise(y, candidates, p_enter=P_ENTER):
    """Forward selection of ``candidates`` (DataFrame of numeric columns) for ``y``.

    Parameters
    ----------
    y : array-like
        Dependent values (e.g. ROI R2* in 1/s), one per row of ``candidates``.
    candidates : DataFrame
        Numeric predictors (n/a allowed; complete cases are used).
    p_enter : float
        Entry threshold of the partial F test.

    Returns
    -------
    steps : DataFrame
        `STEP_COLUMNS`, one row per variable that entered (in order), or one row with
        ``term`` 'none' (nothing entered) or 'n/a' (no model, see note).
    note : str
    """
    y = np.asarray(y, dtype=float)
    notes = []
    cand = candidates.reset_index(drop=True).astype(float)
    have_y = np.isfinite(y)
    cover = cand[have_y].notna().mean() if have_y.any() else cand.notna().mean()
    low = [c for c in cand.columns if cover[c] < MIN_COVERAGE]
    if low:
        notes.append(f"few values, left out: {', '.join(low)}")
    cand = cand.drop(columns=low)
    ok = have_y & cand.notna().all(axis=1).to_numpy()
    y, cand = y[ok], cand[ok].reset_index(drop=True)
    flat = [c for c in cand.columns if len(cand) and np.ptp(cand[c]) == 0]
    if flat:
        notes.append(f"constant here, left out: {', '.join(flat)}")
    cand = cand.drop(columns=flat)
    n = len(y)
    names = ", ".join(cand.columns)

    def note_row(term, note):
        return pd.DataFrame([{**{c: np.nan for c in STEP_COLUMNS}, "term": term, "n": n,
                              "candidates": names, "note": note}], columns=STEP_COLUMNS)

    if not len(cand.columns):
        note = join_notes("no candidate predictors", *notes)
        return note_row("n/a", note), note
    if n < 5 or np.ptp(y) == 0:
        note = join_notes(f"n = {n} too small" if n < 5 else "constant values", *notes)
        return note_row("n/a", note), note
    tss = float(((y - y.mean()) ** 2).sum())
    chosen, steps = [], []
    X = np.ones((n, 1))
    rss = tss
    while True:
        best = None
        for c in cand.columns:
            if c in chosen:
                continue
            X1 = np.column_stack([X, cand[c].to_numpy()])
            k1 = X1.shape[1]
            if n - k1 < 1 or np.linalg.matrix_rank(X1) < k1:
                continue
            rss1 = _rss(y, X1)
            f = (rss - rss1) / (rss1 / (n - k1)) if rss1 > 0 else np.inf
            p = float(stats.f.sf(f, 1, n - k1))
            if best is None or p < best[1]:
                best = (c, p, f, rss1, X1)
        if best is None or not best[1] < p_enter:
            break
        c, p, f, rss1, X = best
        chosen.append(c)
        steps.append({"step": len(chosen), "term": c, "r2": 1 - rss1 / tss,
                      "r2_change": (rss - rss1) / tss, "f_change": f, "p_change": p})
        rss = rss1
    if not chosen:
        note = join_notes(f"no candidate entered (partial F p >= {p_enter})", *notes)
        return note_row("none", note), note
    res = sm.OLS(y, X).fit()
    sd = cand[chosen].std(ddof=1).to_numpy() / y.std(ddof=1)
    out = pd.DataFrame(steps)
    out["beta"], out["se"] = res.params[1:], res.bse[1:]
    out["beta_std"], out["t"], out["p"] = res.params[1:] * sd, res.tvalues[1:], res.pvalues[1:]
    note = join_notes(*notes)
    out["n"], out["candidates"], out["note"] = n, names, note
    return out[STEP_COLUMNS], note


def stepwise_table(table, value, candidates, measure="raw", keys=UNIT_KEYS, subset="all"):
    """`forward_stepwise` per unit of ``table`` (one row per participant and unit).

    Returns
    -------
    DataFrame: subset, measure, ``keys``, `STEP_COLUMNS`.
    """
    parts = []
    for unit, chunk in table.groupby(list(keys), sort=False):
        steps, _ = forward_stepwise(chunk[value].to_numpy(dtype=float),
                                    chunk[list(candidates)])
        for k, v in zip(keys, unit):
            steps[k] = v
        steps["subset"], steps["measure"] = subset, measure
        parts.append(steps)
    cols = ["subset", "measure"] + list(keys) + STEP_COLUMNS
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
