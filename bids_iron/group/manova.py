"""Repeated-measures MANOVA across the nuclei (doubly multivariate, first and last session).

For each metric x source and measure, the dependent variables are the ROI values of every
roi x hemisphere of that metric (the nuclei together, as in the two-year R2*/phase analyses
of deep gray matter in MS). With two time points the repeated-measures MANOVA splits into two
multivariate linear models (statsmodels ``MANOVA``; Wilks' lambda, Pillai's trace,
Hotelling-Lawley trace, Roy's greatest root with their F approximations):

* ``group``: the participants' mean of first and last session ~ group + covariates; the
  group contrast (between-subject effect);
* ``time``: last - first ~ group + covariates, intercept test with sum-to-zero group coding
  and centred numeric covariates (change averaged over groups, within-subject effect);
* ``group:time``: the same model's group contrast (the group x time interaction).

Without any participant with two sessions only ``group`` is tested, on the first session
(``design`` = ``baseline``). Participants need every nucleus of the metric at the sessions
used (complete cases; the others are counted in the note). A test needs more residual
degrees of freedom than nuclei (n - model terms >= number of nuclei), two nuclei and at least
two groups (``group``, ``group:time``); otherwise a note row without numbers.
q: Benjamini-Hochberg within measure x effect x test, across metrics and sources.

Reference: O'Brien RG, Kaiser MK (1985) MANOVA method for analyzing repeated measures
designs: an extensive primer. Psychol Bull 97:316-333.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(1)
>>> rows = []
>>> for i in range(30):
...     g = "HC" if i < 15 else "MS"
...     subject = rng.normal(0, 1)
...     for s, years in enumerate((0.0, 2.0)):
...         for roi in ("putamen", "caudate", "thalamus"):
...             v = 20 + subject + (1.5 * years if g == "MS" else 0) + rng.normal(0, 0.5)
...             rows.append(dict(participant_id=f"sub-{i}", group=g, session_order=s + 1,
...                              n_sessions=2, roi=roi, hemisphere="left", metric="r2star",
...                              source="atlas", mean=v))
>>> table = repeated_manova(pd.DataFrame(rows), control_label="HC")
>>> t = table[(table.effect == "group:time") & (table.test == "Pillai's trace")].iloc[0]
>>> bool(t.p < 1e-3), int(t.n_participants), int(t.n_rois)
(True, 30, 3)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.multivariate.manova import MANOVA

from ._common import add_fdr, first_last, group_levels, join_notes
from .correlations import encode_covariates

TESTS = ("Wilks' lambda", "Pillai's trace", "Hotelling-Lawley trace", "Roy's greatest root")
COLUMNS = ["design", "effect", "test", "value", "num_df", "den_df", "F", "p", "n_participants",
           "n_rois", "rois", "note"]


def _wide(data, value):
    """participant x 'roi hemisphere' table of ``value`` (one session per participant)."""
    wide = data.groupby(["participant_id", "roi", "hemisphere"])[value].first().unstack(
        ["roi", "hemisphere"])
    wide.columns = [f"{r} {h}" for r, h in wide.columns]
    return wide


def _exog(groups, cov_table, covariates, levels):
    """[Intercept, sum-coded group columns, centred covariates] and the group column count."""
    cols = {"Intercept": np.ones(len(groups))}
    for g in levels[1:]:
        cols[f"group[S.{g}]"] = (groups == g).astype(float) - (groups == levels[0]).astype(float)
    z, names = encode_covariates(cov_table, covariates)
    for j, name in enumerate(names):
        if len(z) and np.ptp(z[:, j]) > 0:
            cols[name] = z[:, j] - z[:, j].mean()
    return pd.DataFrame(cols), len(levels) - 1


def _tests(endog, exog, n_group, effects, base):
    """Rows of the multivariate tests; a note row per effect that cannot be tested."""
    rows = []
    n, k, p = len(endog), exog.shape[1], endog.shape[1]
    hyps = []
    for effect in effects:
        if effect == "time":
            L = np.zeros((1, k))
            L[0, 0] = 1.0
        else:
            if n_group < 1:
                rows.append({**base, "effect": effect, "test": "n/a",
                             "note": join_notes("one group only: no group test", base["note"])})
                continue
            L = np.zeros((n_group, k))
            L[np.arange(n_group), 1 + np.arange(n_group)] = 1.0
        hyps.append((effect, L))
    if not hyps:
        return rows
    why = ""
    if p < 2:
        why = "one nucleus only: no multivariate test (see group_mixedmodels.tsv)"
    elif n - k < p:
        why = f"{n} participants, {k} model terms: too few for {p} nuclei (need n - terms >= {p})"
    elif np.linalg.matrix_rank(exog.to_numpy()) < k:
        why = "design degenerate (collinear terms)"
    elif np.linalg.matrix_rank(endog - endog.mean(axis=0)) < p:
        why = "nuclei values linearly dependent or constant"
    if why:
        for effect, _ in hyps:
            rows.append({**base, "effect": effect, "test": "n/a",
                         "note": join_notes(why, base["note"])})
        return rows
    res = MANOVA(endog, exog).mv_test(hypotheses=hyps)
    for effect, _ in hyps:
        stat = res.results[effect]["stat"]
        for test in TESTS:
            r = stat.loc[test]
            rows.append({**base, "effect": effect, "test": test, "value": float(r["Value"]),
                         "num_df": float(r["Num DF"]), "den_df": float(r["Den DF"]),
                         "F": float(r["F Value"]), "p": float(r["Pr > F"])})
    return rows


def repeated_manova(data, value="mean", covariates=(), control_label="HC", measure="raw"):
    """Repeated-measures MANOVA per metric x source (see the module).

    Parameters
    ----------
    data : DataFrame
        Cohort long table: participant_id, group, session_order, n_sessions, roi, hemisphere,
        metric, source, ``value`` and the covariates (taken at the first session).

    Returns
    -------
    DataFrame: measure, metric, source, `COLUMNS` and ``q`` after ``p``.
    """
    data = data[data["group"].notna()]
    out = []
    for (metric, source), chunk in data.groupby(["metric", "source"], sort=False):
        multi = chunk[chunk["n_sessions"] >= 2]
        first = chunk[first_last(chunk)[0]]
        people = first.drop_duplicates("participant_id").set_index("participant_id")
        rois = sorted({f"{r} {h}" for r, h in zip(chunk.roi, chunk.hemisphere)})
        if multi.empty:
            design, effects = "baseline", ["group"]
            y = _wide(first, value)
        else:
            design, effects = "first-last", ["group", "time", "group:time"]
            is_first, is_last = first_last(multi)
            a, b = _wide(multi[is_first], value), _wide(multi[is_last], value)
            a, b = a.align(b, join="inner")
        cov = people[list(covariates)] if covariates else pd.DataFrame(index=people.index)
        notes = []
        ids = (y if design == "baseline" else a).index
        frame = pd.DataFrame(index=ids).join(people[["group"]]).join(cov)
        z, _ = encode_covariates(frame, covariates)
        complete = (np.isfinite(z).all(axis=1) if z.shape[1] else np.ones(len(frame), bool))
        if design == "baseline":
            complete &= np.isfinite(y.to_numpy(dtype=float)).all(axis=1)
        else:
            complete &= (np.isfinite(a.to_numpy(dtype=float)).all(axis=1)
                         & np.isfinite(b.to_numpy(dtype=float)).all(axis=1))
        if (~complete).any():
            notes.append(f"{int((~complete).sum())} participants without every nucleus or "
                         "covariate left out")
        frame = frame[complete]
        levels = group_levels(frame["group"], control_label)
        groups = frame["group"].astype(str).to_numpy()
        exog, n_group = _exog(groups, frame, covariates, levels)
        base = {"measure": measure, "metric": metric, "source": source, "design": design,
                "n_participants": len(frame), "n_rois": len(rois), "rois": ", ".join(rois),
                "note": join_notes(*notes)}
        if design == "baseline":
            out += _tests(y[complete].to_numpy(dtype=float), exog, n_group, effects, base)
        else:
            av, bv = a[complete].to_numpy(dtype=float), b[complete].to_numpy(dtype=float)
            out += _tests((av + bv) / 2, exog, n_group, ["group"], base)
            out += _tests(bv - av, exog, n_group, ["time", "group:time"], base)
    cols = ["measure", "metric", "source"] + COLUMNS
    table = pd.DataFrame(out, columns=cols)
    table = add_fdr(table, ["measure", "effect", "test"], ["p"])
    return table[cols[:cols.index("p") + 1] + ["q"] + cols[cols.index("p") + 1:]]
