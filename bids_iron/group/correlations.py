"""Correlations of ROI values with clinical scores, and multiple linear regression.

For each subset of participants (``all`` with values, and each group), analysis unit
(roi x hemisphere x metric x source), measure (raw / age_corrected at baseline, change /
change_per_year from `longitudinal`) and clinical column:

* Pearson r (scipy.stats.pearsonr) and Spearman rho (scipy.stats.spearmanr), two-sided;
  Spearman's p is exact (all n! pairings, ties kept as mid-ranks, `spearman_exact_p`) up
  to `EXACT_SPEARMAN_MAX_N` pairs, where scipy's t approximation is far off (rho = 1 with
  n = 3 gives p = 0 there, the exact p is 1/3);
* OLS (statsmodels) ``value ~ clinical + covariates``: the clinical term's beta, its SE,
  standardized beta ``beta * SD(x) / SD(y)`` (SDs ddof=1, over the rows in the model), p,
  and the model's R2, adjusted R2 and n. Categorical covariates enter as 0/1 indicator
  columns (first level left out); covariates constant within the subset are dropped (noted).

Benjamini-Hochberg q per p column within each family: subset x measure x clinical column
(across every unit). Needs n >= `MIN_N_CORR` pairs (and n >= number of model terms + 2
for OLS) and variance in both variables; otherwise n/a with a note.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from ._common import UNIT_KEYS, add_fdr, join_notes

#: Fewest pairs for a correlation. With 4 pairs the smallest exact two-sided Spearman p is
#: 2/24 = 0.083 and Pearson's p rests wholly on normality, so no correlation of fewer than 5
#: pairs can be evidence; the demo's 3 patients per group were reported "significant"
#: (rho = 1, scipy's p < 0.001) before this limit.
MIN_N_CORR = 5
#: Spearman's p is exact (every pairing enumerated) up to this many pairs (9! = 362880).
EXACT_SPEARMAN_MAX_N = 9

CORR_COLUMNS = ["n", "pearson_r", "p_pearson", "spearman_rho", "p_spearman", "ols_beta",
                "ols_beta_se", "ols_beta_std", "p_ols", "ols_r2", "ols_r2_adj", "ols_n",
                "ols_covariates", "note"]


@functools.lru_cache(maxsize=32)
def _spearman_null(rx, ry):
    """Sorted ``|sum(rx * ry[perm])|`` over every permutation (rx, ry: sorted centred
    ranks as tuples; the null distribution depends only on these multisets)."""
    perms = np.array(list(itertools.permutations(range(len(ry)))), dtype=np.int8)
    return np.sort(np.abs(np.asarray(ry)[perms] @ np.asarray(rx)))


def spearman_exact_p(x, y):
    """Two-sided exact p of Spearman's rho by enumerating every pairing of x with y.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Paired values, 2 <= n <= `EXACT_SPEARMAN_MAX_N`; ties are ranked by their mid-rank,
        so the null distribution is the one of these very ranks.

    Returns
    -------
    float
        The share of the n! pairings whose ``|rho|`` is at least the observed one.

    Examples
    --------
    >>> round(spearman_exact_p([1, 2, 3], [1, 2, 3]), 4)  # 2 of 6 pairings give |rho| = 1
    0.3333
    >>> round(spearman_exact_p([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]), 4)  # 2 of 120
    0.0167
    >>> round(spearman_exact_p([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]), 4)  # rho = 0.8
    0.1333
    """
    rx = stats.rankdata(x) - (len(x) + 1) / 2.0
    ry = stats.rankdata(y) - (len(y) + 1) / 2.0
    n = len(rx)
    if n > EXACT_SPEARMAN_MAX_N or n < 2:
        raise ValueError(f"exact Spearman p needs 2..{EXACT_SPEARMAN_MAX_N} pairs, got {n}")
    observed = abs(float(rx @ ry))
    null = _spearman_null(tuple(np.sort(rx)), tuple(np.sort(ry)))
    below = np.searchsorted(null, observed - 1e-9 * max(observed, 1.0), side="left")
    return float(len(null) - below) / len(null)


def encode_covariates(table, covariates):
    """Numeric columns for the covariates over the whole table: numeric as they are,
    categorical as 0/1 indicators (first level, in sorted order, left out); n/a stays n/a.

    Returns (2-D float array, column names).
    """
    cols, names = [], []
    for name in covariates:
        col = table[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            cols.append(col.to_numpy(dtype=float))
            names.append(name)
            continue
        missing = col.isna().to_numpy()
        levels = sorted({str(v) for v in col.dropna()})
        text = col.astype(str).to_numpy()
        for level in levels[1:]:
            dummy = (text == level).astype(float)
            dummy[missing] = np.nan
            cols.append(dummy)
            names.append(f"{name}={level}")
    matrix = np.column_stack(cols) if cols else np.empty((len(table), 0))
    return matrix, names


def ols_terms(y, x, z, x_name, z_names):
    """statsmodels OLS of y on [const, x, z] (complete cases given).

    Returns (terms DataFrame: term, beta, se, t, p, beta_std; model dict: r2, r2_adj, n; note)
    or (None, None, note) when the model cannot be fitted. Covariate columns constant here are
    dropped (and noted).
    """
    keep = [j for j in range(z.shape[1]) if np.ptp(z[:, j]) > 0] if len(y) else []
    dropped = [z_names[j] for j in range(z.shape[1]) if j not in keep]
    note = f"covariate constant here, left out: {', '.join(dropped)}" if dropped else ""
    names = ["const", x_name] + [z_names[j] for j in keep]
    X = np.column_stack([np.ones(len(y)), x, z[:, keep]])
    k = X.shape[1]
    if len(y) < k + 2:
        return None, None, join_notes(f"n = {len(y)} too small for {k} model terms", note)
    if np.ptp(y) == 0 or np.ptp(x) == 0:
        return None, None, join_notes("no variance: no regression", note)
    if np.linalg.matrix_rank(X) < k:
        return None, None, join_notes("predictors collinear: no regression", note)
    res = sm.OLS(y, X).fit()
    sd_y = y.std(ddof=1)
    beta_std = np.r_[np.nan, res.params[1:] * X[:, 1:].std(axis=0, ddof=1) / sd_y]
    terms = pd.DataFrame({"term": names, "beta": res.params, "se": res.bse, "t": res.tvalues,
                          "p": res.pvalues, "beta_std": beta_std})
    return terms, {"r2": res.rsquared, "r2_adj": res.rsquared_adj, "n": int(res.nobs)}, note


def correlate(table, value, clinical, covariates=(), measure="raw", keys=UNIT_KEYS,
              subsets=None):
    """Correlations and regressions of ``value`` with each clinical column.

    Parameters
    ----------
    table : DataFrame
        One row per participant and unit with columns group, ``keys``, ``value``, clinical
        columns and covariates.
    subsets : list of str or None
        Groups to analyse separately besides ``all``; None: every group present.

    Returns
    -------
    correlations : DataFrame (subset, measure, keys, clinical, `CORR_COLUMNS`, q columns)
    regressions : DataFrame (one row per model term)
    """
    rows, terms_rows = [], []
    table = table.reset_index(drop=True)
    if subsets is None:
        subsets = sorted({g for g in table["group"].dropna()})
    y_all = table[value].to_numpy(dtype=float)
    clin_all = {c: table[c].to_numpy(dtype=float) for c in clinical}
    z_all, z_names = encode_covariates(table, covariates)
    z_ok = np.isfinite(z_all).all(axis=1)
    group = table["group"].to_numpy(dtype=object)
    units = table.groupby(list(keys), sort=False).indices
    for subset in ["all"] + list(subsets):
        for unit, pos in units.items():
            if subset != "all":
                pos = pos[group[pos] == subset]
                if not len(pos):
                    continue
            base = dict(zip(keys, unit))
            y_u, z_u, zok_u = y_all[pos], z_all[pos], z_ok[pos]
            for clin in clinical:
                x_u = clin_all[clin][pos]
                ok = np.isfinite(x_u) & np.isfinite(y_u)
                x, y = x_u[ok], y_u[ok]
                row = {"subset": subset, "measure": measure, **base, "clinical": clin,
                       **{c: np.nan for c in CORR_COLUMNS}, "n": int(ok.sum()),
                       "ols_covariates": " + ".join(covariates)}
                notes = []
                if len(x) < MIN_N_CORR:
                    notes.append(f"n = {len(x)} pairs < {MIN_N_CORR}: no correlation")
                elif np.ptp(x) == 0 or np.ptp(y) == 0:
                    notes.append(f"{'clinical' if np.ptp(x) == 0 else 'ROI'} values constant: "
                                 "no correlation")
                else:
                    pr = stats.pearsonr(x, y)
                    sr = stats.spearmanr(x, y)
                    p_sr = (spearman_exact_p(x, y) if len(x) <= EXACT_SPEARMAN_MAX_N
                            else float(sr.pvalue))
                    row.update(pearson_r=float(pr.statistic), p_pearson=float(pr.pvalue),
                               spearman_rho=float(sr.statistic), p_spearman=p_sr)
                full = ok & zok_u
                if full.sum() >= 3:
                    terms, model, note = ols_terms(y_u[full], x_u[full], z_u[full], clin, z_names)
                else:
                    terms, model, note = None, None, (f"n = {int(full.sum())} complete rows: "
                                                      "no OLS" if len(x) >= 3 else "")
                notes.append(note)
                if terms is None:
                    terms_rows.append({"subset": subset, "measure": measure, **base,
                                       "clinical": clin, "term": "n/a", "n": int(full.sum()),
                                       "note": join_notes(*notes) or "no OLS"})
                else:
                    t = terms.iloc[1]
                    row.update(ols_beta=t.beta, ols_beta_se=t.se, ols_beta_std=t.beta_std,
                               p_ols=t.p, ols_r2=model["r2"], ols_r2_adj=model["r2_adj"],
                               ols_n=model["n"])
                    for r in terms.to_dict("records"):
                        terms_rows.append({"subset": subset, "measure": measure, **base,
                                           "clinical": clin, **r, "r2": model["r2"],
                                           "r2_adj": model["r2_adj"], "n": model["n"],
                                           "note": note})
                row["note"] = join_notes(*notes)
                rows.append(row)
    corr = pd.DataFrame(rows, columns=["subset", "measure"] + list(keys) + ["clinical"]
                        + CORR_COLUMNS)
    corr = add_fdr(corr, ["subset", "measure", "clinical"], ["p_pearson", "p_spearman", "p_ols"])
    reg = pd.DataFrame(terms_rows, columns=["subset", "measure"] + list(keys) + [
        "clinical", "term", "beta", "se", "beta_std", "t", "p", "r2", "r2_adj", "n", "note"])
    return corr, reg
