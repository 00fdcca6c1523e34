"""Linear mixed models of the longitudinal design: value ~ group * years + covariates.

For each roi x hemisphere x metric x source (a *unit*) and measure, every session of every
participant with a group enters one linear mixed model with a random intercept, fitted by
REML (`reml_random_intercept`; the same estimates as statsmodels ``MixedLM(...).fit(reml=True)``,
to its convergence tolerance, tested, at ~1/50 of the time)::

    value_ij = b0 + b_g [group_i = g] + b_t years_ij + b_gt [group_i = g] years_ij
               + covariates_ij c + u_i + e_ij,       u_i ~ N(0, s_u^2), e_ij ~ N(0, s_e^2)

``years`` is the time since the participant's first session (``acq_time`` of sessions.tsv);
The random-intercept REML likelihood has one free parameter once the fixed effects and the
residual variance are profiled out, lambda = s_u^2 / s_e^2: for participant i with n_i
sessions the GLS transform ``y - theta_i mean_i(y)``, ``theta_i = 1 - 1/sqrt(1 + n_i
lambda)`` (Fuller & Battese 1973) turns the model into ordinary least squares, and

    -2 l_REML(lambda) = sum_i ln(1 + n_i lambda) + (N - p) ln(RSS*/(N - p)) + ln|X*'X*|

is minimised over ln(lambda) (scipy ``minimize_scalar``, bounded). Standard errors are
sqrt(diag(s_e^2 (X*'X*)^-1)) = sqrt(diag((X'V^-1 X)^-1)), as lme4 and SAS PROC MIXED report
them; statsmodels MixedLM's observed-information standard errors differ from them by up to
2 % when participants have different numbers of sessions (identical when balanced).

the groups are treatment-coded against the controls (``group[T.MS]`` is MS - controls at
``years = 0``; ``group[T.MS]:years`` is the difference of the yearly change, the group x time
interaction of a two-year design); categorical covariates enter as 0/1 indicators
(``name=level``, the first level in sorted order left out; `correlations.encode_covariates`).
One row per fixed-effect term: estimate, standard error, Wald z, two-sided p and 95 % Wald
interval (statsmodels), plus two rows ``sd(participant)`` and ``sd(residual)`` with the
estimated standard deviations of the random intercept and of the residual (no test).
Benjamini-Hochberg q within each family: measure x term (across every unit).

No number is fabricated: a unit gets a single row with term ``n/a`` and a note when the
design is degenerate (fewer than 3 participants, no participant with two sessions, collinear
terms, fewer sessions than terms + 2) or when the optimiser does not converge
(the bounded search fails or ends at the upper bound of lambda); terms that cannot be
estimated from the data at hand (one group only: no group terms; no dates: no time terms; a
covariate constant here) are left out of the model and named in the note. A random-intercept
variance estimated at 0 (the boundary) is kept and noted: the fixed effects then equal
ordinary least squares.

References: Fuller WA, Battese GE (1973) Transformations for estimation of linear models
with nested-error structure. J Am Stat Assoc 68:626-632. Laird NM, Ware JH (1982)
Random-effects models for longitudinal data. Biometrics 38:963-974; applied to two-year
R2*/QSM change in MS e.g. Khalil M et al. (2015) Dynamics of brain iron levels in multiple
sclerosis: a longitudinal 3T MRI study. Neurology 84:2396-2402.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> pid = np.repeat(np.arange(40), 2)
>>> group = np.where(pid < 20, "HC", "MS")
>>> years = np.tile([0.0, 2.0], 40)
>>> y = 20 + 2 * (group == "MS") + 0.5 * (group == "MS") * years + rng.normal(0, 1, 40)[pid] \\
...     + rng.normal(0, 0.5, 80)
>>> rows, note = fit_mixed(pd.DataFrame({"participant_id": pid, "group": group,
...                                      "years": years, "y": y}), "y", control_label="HC")
>>> row = rows[rows.term == "group[T.MS]:years"].iloc[0]
>>> bool(abs(row.estimate - 0.5) < 3 * row.se), bool(row.p < 0.05)
(True, True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

from ._common import UNIT_KEYS, add_fdr, group_levels, join_notes
from .correlations import encode_covariates

TERM_COLUMNS = ["term", "estimate", "se", "z", "p", "ci_low", "ci_high", "n_participants",
                "n_sessions", "note"]
#: A random-intercept variance below this fraction of the residual variance counts as 0.
BOUNDARY_FRACTION = 1e-6
#: Search interval of ln(lambda) = ln(s_u^2 / s_e^2).
LOG_LAMBDA_BOUNDS = (-25.0, 12.0)


def reml_random_intercept(y, X, groups):
    """REML fit of y = X b + u_group + e with a random intercept per group.

    Parameters
    ----------
    y : (N,) array; X : (N, p) array of full column rank; groups : (N,) labels

    Returns
    -------
    dict: ``beta`` (p,), ``se`` (p,), ``var_u``, ``var_e`` (variances of the random intercept
    and of the residual, units of y squared), ``converged`` (bool), ``lambda`` (var_u/var_e).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> g = np.repeat(np.arange(50), 3)
    >>> X = np.column_stack([np.ones(150), np.tile([0.0, 1.0, 2.0], 50)])
    >>> y = X @ [5.0, 0.3] + rng.normal(0, 1, 50)[g] + rng.normal(0, 0.5, 150)
    >>> fit = reml_random_intercept(y, X, g)
    >>> bool(abs(fit["beta"][1] - 0.3) < 3 * fit["se"][1]), fit["converged"]
    (True, True)
    """
    y, X = np.asarray(y, dtype=float), np.asarray(X, dtype=float)
    _, inv, count = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    n, p = X.shape
    y_mean = np.bincount(inv, y) / count
    X_mean = np.stack([np.bincount(inv, X[:, j]) / count for j in range(p)], axis=1)

    def transformed(lam):
        theta = (1.0 - 1.0 / np.sqrt(1.0 + count * lam))[inv]
        return y - theta * y_mean[inv], X - theta[:, None] * X_mean[inv]

    def gls(lam):
        ys, Xs = transformed(lam)
        xtx = Xs.T @ Xs
        beta = np.linalg.solve(xtx, Xs.T @ ys)
        rss = float(((ys - Xs @ beta) ** 2).sum())
        return beta, xtx, rss

    def objective(log_lam):
        lam = np.exp(log_lam)
        _, xtx, rss = gls(lam)
        return (np.log1p(count * lam).sum() + (n - p) * np.log(rss / (n - p))
                + np.linalg.slogdet(xtx)[1])

    res = optimize.minimize_scalar(objective, bounds=LOG_LAMBDA_BOUNDS, method="bounded",
                                   options={"xatol": 1e-9})
    lam = float(np.exp(res.x))
    beta, xtx, rss = gls(lam)
    var_e = rss / (n - p)
    se = np.sqrt(np.diag(var_e * np.linalg.inv(xtx)))
    converged = bool(res.success and res.x < LOG_LAMBDA_BOUNDS[1] - 1e-3)
    return {"beta": beta, "se": se, "var_u": lam * var_e, "var_e": var_e,
            "converged": converged, "lambda": lam}


def design(table, value, covariates=(), control_label="HC", time="years"):
    """Complete cases and the fixed-effect design of one unit.

    Returns
    -------
    y : ndarray, X : DataFrame (named columns), participants : ndarray, notes : list of str
    """
    notes = []
    cols = ["participant_id", "group", time, value] + list(covariates)
    table = table[[c for c in dict.fromkeys(cols) if c in table.columns]].reset_index(drop=True)
    ok = table["group"].notna().to_numpy() & np.isfinite(table[value].to_numpy(dtype=float))
    if not ok.all():
        notes.append(f"{int((~ok).sum())} sessions without group or value left out")
    z, z_names = encode_covariates(table, covariates)
    zok = np.isfinite(z).all(axis=1)
    if (ok & ~zok).any():
        notes.append(f"{int((ok & ~zok).sum())} sessions without covariate values left out")
    ok &= zok
    table, z = table[ok].reset_index(drop=True), z[ok]
    y = table[value].to_numpy(dtype=float)
    years = table[time].to_numpy(dtype=float) if time in table else np.full(len(y), np.nan)
    levels = group_levels(table["group"], control_label)
    X = {"Intercept": np.ones(len(y))}
    dummies = {g: (table["group"].astype(str) == g).to_numpy(dtype=float) for g in levels[1:]}
    if len(levels) < 2:
        notes.append(f"one group only ({', '.join(levels) or 'none'}): no group terms")
    for g, d in dummies.items():
        X[f"group[T.{g}]"] = d
    timed = np.isfinite(years).all() and len(y) and np.ptp(years) > 0
    if not timed:
        notes.append("no acq_time for every session (years since the first session unknown)"
                     if not np.isfinite(years).all() else "no time span: no time terms")
    else:
        X[time] = years
        for g, d in dummies.items():
            X[f"group[T.{g}]:{time}"] = d * years
    for j, name in enumerate(z_names):
        if len(y) and np.ptp(z[:, j]) > 0:
            X[name] = z[:, j]
        else:
            notes.append(f"covariate constant here, left out: {name}")
    return y, pd.DataFrame(X), table["participant_id"].to_numpy(), notes


def _note_row(note, n_participants, n_sessions):
    return pd.DataFrame([{**{c: np.nan for c in TERM_COLUMNS}, "term": "n/a",
                          "n_participants": n_participants, "n_sessions": n_sessions,
                          "note": note}], columns=TERM_COLUMNS)


def fit_mixed(table, value, covariates=(), control_label="HC", time="years"):
    """Fit value ~ group * time + covariates + (1 | participant) to one unit's sessions.

    Parameters
    ----------
    table : DataFrame
        One row per session: participant_id, group, ``time`` (years since the first session),
        ``value`` and the covariates.
    value : str
        Column analysed (unit of the metric).
    covariates : sequence of str
        Numeric or categorical columns of ``table``.

    Returns
    -------
    rows : DataFrame
        `TERM_COLUMNS`, one row per term (or one note row, term ``n/a``, when nothing can be
        estimated). Estimates are in the value's unit (per year for time terms).
    note : str
        What was left out or why there is no model.
    """
    y, X, pid, notes = design(table, value, covariates, control_label, time)
    n_par, n_ses = len(set(pid)), len(y)
    k = X.shape[1]
    counts = pd.Series(pid).value_counts() if n_ses else pd.Series(dtype=int)
    fail = ""
    if n_par < 3:
        fail = f"{n_par} participants (< 3): no model"
    elif not (counts >= 2).any():
        fail = "one session per participant: the random intercept is not identifiable"
    elif n_ses < k + 2:
        fail = f"{n_ses} sessions too few for {k} fixed terms"
    elif np.ptp(y) == 0:
        fail = "constant values: no model"
    elif np.linalg.matrix_rank(X.to_numpy()) < k:
        fail = "design degenerate (collinear terms: " + ", ".join(X.columns[1:]) + ")"
    if fail:
        return _note_row(join_notes(fail, *notes), n_par, n_ses), join_notes(fail, *notes)
    try:
        fit = reml_random_intercept(y, X.to_numpy(), pid)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
        fit, fail = None, f"REML fit failed ({str(exc).splitlines()[0][:80]})"
    if fit is not None and not fit["converged"]:
        fail = "REML search did not converge: no estimates"
    if fail:
        return _note_row(join_notes(fail, *notes), n_par, n_ses), join_notes(fail, *notes)
    names = list(X.columns)
    est, se = fit["beta"], fit["se"]
    with np.errstate(divide="ignore", invalid="ignore"):
        zval = est / se
    p = 2 * stats.norm.sf(np.abs(zval))
    half = stats.norm.ppf(0.975) * se
    var_u, var_e = fit["var_u"], fit["var_e"]
    if var_u <= BOUNDARY_FRACTION * var_e:
        notes.append("random-intercept variance at 0 (boundary): fixed effects equal OLS")
    if not np.isfinite(se).all():
        notes.append("standard errors not finite")
    rows = pd.DataFrame({"term": names, "estimate": est, "se": se, "z": zval, "p": p,
                         "ci_low": est - half, "ci_high": est + half})
    sds = pd.DataFrame({"term": ["sd(participant)", "sd(residual)"],
                        "estimate": [np.sqrt(max(var_u, 0.0)), np.sqrt(var_e)]})
    rows = pd.concat([rows, sds], ignore_index=True)
    note = join_notes(*notes)
    rows["n_participants"], rows["n_sessions"], rows["note"] = n_par, n_ses, note
    return rows[TERM_COLUMNS], note


def mixed_models(data, value="mean", covariates=(), control_label="HC", measure="raw",
                 keys=UNIT_KEYS, time="years_from_baseline"):
    """`fit_mixed` for every unit of the cohort long table; BH q per measure x term.

    Parameters
    ----------
    data : DataFrame
        Cohort long table (participant_id, group, ``time``, ``keys``, ``value``, covariates).

    Returns
    -------
    DataFrame: measure, ``keys``, `TERM_COLUMNS` with ``q`` after ``p``. Terms are named as
    in the formula ``value ~ group * years`` (``group[T.<label>]``, ``years``,
    ``group[T.<label>]:years``).
    """
    parts = []
    table = data.rename(columns={time: "years"}) if time != "years" else data
    for unit, chunk in table.groupby(list(keys), sort=False, dropna=False):
        rows, _ = fit_mixed(chunk, value, covariates, control_label, "years")
        if "missing_sessions" in chunk and chunk["missing_sessions"].notna().any():
            gaps = chunk.loc[chunk["missing_sessions"].notna(), "participant_id"].nunique()
            rows["note"] = [join_notes(n, f"{gaps} participant{'s' if gaps > 1 else ''} with "
                                          "sessions without an ROI table (missing_sessions)")
                            for n in rows["note"]]
        for k, v in zip(keys, unit):
            rows.insert(len(rows.columns) - len(TERM_COLUMNS), k, v)
        rows.insert(0, "measure", measure)
        parts.append(rows)
    cols = ["measure"] + list(keys) + TERM_COLUMNS
    out = pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
    out = add_fdr(out, ["measure", "term"], ["p"])
    return out[cols[:cols.index("p") + 1] + ["q"] + cols[cols.index("p") + 1:]]
