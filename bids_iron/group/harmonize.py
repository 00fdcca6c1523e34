"""Site harmonisation with ComBat (neuroCombat) and the site-effect test before and after.

ComBat (Johnson et al. 2007; for imaging Fortin et al. 2017/2018) models each feature as

    value = alpha + X beta + gamma_site + delta_site * error

with the protected covariates X (here: age in years and group, so that ageing and the group
effect are kept), estimates the site shifts gamma and scales delta with an empirical Bayes
prior pooled over features, and returns the values with them removed. Features are the ROI
units (roi x hemisphere) of one metric x source; observations are sessions (every session of
every participant; the repeated sessions are treated as independent, the usual
cross-sectional ComBat approximation). Implementation: ``neuroCombat`` 0.2.12 from PyPI
(neuroHarmonize, which wraps it, pins numpy < 2 and pandas < 3).

Not harmonised (n/a and a note): sessions without every ROI of the metric or without a
protected covariate, sites with fewer than `MIN_PER_SITE` such sessions, a metric with fewer
than two ROIs (the empirical Bayes prior needs several features) or one site only.

The site test: per unit, baseline sessions, OLS value ~ site + group + age, F test of the site
terms against the model without them (statsmodels ``compare_f_test``), on the raw and the
harmonised values (`site_effects`).

References: Johnson WE, Li C, Rabinovic A (2007) Adjusting batch effects in microarray
expression data using empirical Bayes methods. Biostatistics 8:118-127. Fortin JP et al.
(2018) Harmonization of cortical thickness measurements across scanners and sites.
NeuroImage 167:104-120.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> rows = []
>>> for i in range(60):
...     site, group = "AB"[i % 2], ("HC", "MS")[(i // 2) % 2]
...     for roi in ("putamen", "caudate", "thalamus"):
...         v = 20 + 2.0 * (group == "MS") + 3.0 * (site == "B") + rng.normal(0, 1)
...         rows.append(dict(participant_id=f"sub-{i}", session_id="ses-01", site=site,
...                          group=group, age=40.0 + i % 7, roi=roi, hemisphere="left",
...                          metric="r2star", source="atlas", mean=v))
>>> data = pd.DataFrame(rows)
>>> data["harmonized"], notes = combat(data)
>>> by = data.groupby("site")["harmonized"].mean()
>>> bool(abs(by["B"] - by["A"]) < 0.5)
True
>>> ms = data.groupby("group")["harmonized"].mean()
>>> bool(abs(ms["MS"] - ms["HC"] - 2.0) < 0.5)
True
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import statsmodels.api as sm

from ._common import UNIT_KEYS, join_notes
from .correlations import encode_covariates

#: Sessions a site needs to enter ComBat (a site scale needs a variance).
MIN_PER_SITE = 3
SITE_COLUMNS = ["n", "n_sites", "f_site_raw", "p_site_raw", "f_site_harmonized",
                "p_site_harmonized", "note"]


def combat(data, value="mean", protected=("age", "group")):
    """ComBat-harmonised ``value`` for every row of the cohort long table.

    Parameters
    ----------
    data : DataFrame
        participant_id, session_id, site, roi, hemisphere, metric, source, ``value`` and the
        ``protected`` columns (numeric: continuous; otherwise categorical).

    Returns
    -------
    harmonized : Series aligned with ``data`` (n/a where not harmonised)
    notes : dict {(metric, source): note}
    """
    from neuroCombat import neuroCombat

    out = pd.Series(np.nan, index=data.index, dtype=float)
    notes = {}
    protected = [c for c in protected if c in data.columns and data[c].notna().any()]
    for (metric, source), chunk in data.groupby(["metric", "source"], sort=False):
        key = (metric, source)
        wide = chunk.pivot_table(index=["participant_id", "session_id"],
                                 columns=["roi", "hemisphere"], values=value, aggfunc="first")
        info = chunk.drop_duplicates(["participant_id", "session_id"]).set_index(
            ["participant_id", "session_id"]).loc[wide.index, ["site"] + protected]
        ok = wide.notna().all(axis=1) & info.notna().all(axis=1)
        n_out = int((~ok).sum())
        counts = info.loc[ok, "site"].value_counts()
        small = sorted(counts[counts < MIN_PER_SITE].index)
        ok &= ~info["site"].isin(small)
        why = []
        if n_out:
            why.append(f"{n_out} sessions without every ROI, a site or a protected covariate "
                       "not harmonised")
        if small:
            why.append(f"sites with < {MIN_PER_SITE} sessions not harmonised: "
                       f"{', '.join(map(str, small))}")
        sites = info.loc[ok, "site"].unique()
        if wide.shape[1] < 2:
            notes[key] = join_notes("one ROI only: ComBat needs several features", *why)
            continue
        if len(sites) < 2:
            notes[key] = join_notes(f"{len(sites)} site(s): nothing to harmonise", *why)
            continue
        covars = info[ok].reset_index(drop=True)
        covars["site"] = covars["site"].astype(str)
        cat = [c for c in protected if not pd.api.types.is_numeric_dtype(covars[c])]
        con = [c for c in protected if c not in cat]
        for c in cat:
            covars[c] = covars[c].astype(str)
        design, _ = encode_covariates(covars, protected)
        if np.linalg.matrix_rank(np.column_stack(
                [pd.get_dummies(covars["site"]).to_numpy(float), design])) < \
                len(sites) + design.shape[1]:
            notes[key] = join_notes("site confounded with the protected covariates (e.g. one "
                                    "group per site): not harmonised", *why)
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            res = neuroCombat(dat=wide[ok].to_numpy(dtype=float).T, covars=covars,
                              batch_col="site", categorical_cols=cat or None,
                              continuous_cols=con or None)
        harm = pd.DataFrame(res["data"].T, index=wide.index[ok], columns=wide.columns)
        long = harm.stack(["roi", "hemisphere"], future_stack=True).rename("h").reset_index()
        merged = chunk[["participant_id", "session_id", "roi", "hemisphere"]].merge(
            long, how="left", on=["participant_id", "session_id", "roi", "hemisphere"])
        out.loc[chunk.index] = merged["h"].to_numpy()
        notes[key] = join_notes(*why)
    return out, notes


def _site_f(y, site, z):
    """F and p of the site terms in y ~ site + z (OLS), or (nan, nan)."""
    levels = sorted(set(site))
    if len(levels) < 2:
        return np.nan, np.nan
    dummies = np.column_stack([(site == s).astype(float) for s in levels[1:]])
    X0 = np.column_stack([np.ones(len(y)), z]) if z.size else np.ones((len(y), 1))
    X1 = np.column_stack([X0, dummies])
    if len(y) <= X1.shape[1] or np.linalg.matrix_rank(X1) < X1.shape[1]:
        return np.nan, np.nan
    f, p, _ = sm.OLS(y, X1).fit().compare_f_test(sm.OLS(y, X0).fit())
    return float(f), float(p)


def site_effects(data, raw="mean", harmonized="mean_harmonized", protected=("group", "age"),
                 keys=UNIT_KEYS):
    """Site F test per unit (baseline sessions), before and after harmonisation.

    Returns
    -------
    DataFrame: ``keys`` + `SITE_COLUMNS`.
    """
    base = data[data["is_baseline"] & data["site"].notna()]
    protected = [c for c in protected if c in base.columns and base[c].notna().any()]
    rows = []
    for unit, chunk in base.groupby(list(keys), sort=False):
        z, _ = encode_covariates(chunk, protected)
        y0 = chunk[raw].to_numpy(dtype=float)
        y1 = chunk[harmonized].to_numpy(dtype=float)
        ok = np.isfinite(y0) & np.isfinite(y1) & np.isfinite(z).all(axis=1)
        site = chunk["site"].astype(str).to_numpy()[ok]
        f0, p0 = _site_f(y0[ok], site, z[ok])
        f1, p1 = _site_f(y1[ok], site, z[ok])
        note = "" if np.isfinite(f0) else "fewer than 2 sites or too few sessions: no test"
        rows.append({**dict(zip(keys, unit)), "n": int(ok.sum()),
                     "n_sites": len(set(site)), "f_site_raw": f0, "p_site_raw": p0,
                     "f_site_harmonized": f1, "p_site_harmonized": p1, "note": note})
    return pd.DataFrame(rows, columns=list(keys) + SITE_COLUMNS)
