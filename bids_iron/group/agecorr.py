"""Age correction: the exponential saturation R(age) = a (1 - exp(-b age)) + c on controls.

Iron in the deep gray matter rises quickly in youth and levels off in adulthood (Hallgren &
Sourander 1958); MRI iron studies model R2* (and susceptibility) against age with this
saturating exponential, fitted on healthy controls, and remove the age effect from every
participant's value:

    corrected = value - R(age) + R(reference_age)

so that corrected values are what each participant would show at the reference age (default:
the controls' mean age).

Fit (per roi x hemisphere x metric x source, on the controls' baseline sessions): a grid over
the rate ``b`` (log-spaced, 1/year) with ``a`` and ``c`` by linear least squares gives the
start, then scipy.optimize.curve_fit (trust-region reflective, bounds
``1e-3 <= b <= 2`` per year) refines it. The fit counts as failed when curve_fit raises, the
covariance is not finite, ``b`` ends at a bound (no saturation within the controls' age
range: the curve is not identifiable), or n < 5. Then a straight line (scipy.stats.linregress)
is used, with a warning and a note. n < 3: no fit, corrected values n/a.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import optimize, stats

from ._common import UNIT_KEYS, join_notes

B_BOUNDS = (1e-3, 2.0)
MIN_N_EXP = 5
MIN_N_LINEAR = 3
FIT_COLUMNS = ["model", "n", "age_min", "age_max", "a", "a_se", "b", "b_se", "c", "c_se",
               "slope", "slope_se", "intercept", "r2", "rmse", "r2_linear", "reference_age",
               "value_at_reference", "note"]


def saturation(age, a, b, c):
    """R(age) = a (1 - exp(-b age)) + c (age in years, b in 1/year).

    Examples
    --------
    >>> float(saturation(0.0, 10.0, 0.05, 15.0)), round(float(saturation(1e3, 10.0, 0.05, 15.0)), 6)
    (15.0, 25.0)
    """
    return a * (1.0 - np.exp(-b * np.asarray(age, dtype=float))) + c


def _linear_fit(age, y):
    res = stats.linregress(age, y)
    pred = res.intercept + res.slope * age
    return res, pred


def _r2(y, pred):
    ss_tot = np.sum((y - y.mean()) ** 2)
    return 1.0 - np.sum((y - pred) ** 2) / ss_tot if ss_tot > 0 else np.nan


def fit_age_curve(age, value):
    """Fit the saturation curve (falling back to a line) to one ROI's control values.

    Parameters
    ----------
    age : array-like, years
    value : array-like (pairs with a NaN are left out)

    Returns
    -------
    dict
        `FIT_COLUMNS` except the reference columns; ``model`` is ``exponential``,
        ``linear`` or ``none``; ``warning`` (str) is set when the exponential fit failed.
    """
    age = np.asarray(age, dtype=float)
    y = np.asarray(value, dtype=float)
    ok = np.isfinite(age) & np.isfinite(y)
    dropped = int((~ok).sum())
    age, y = age[ok], y[ok]
    out = {k: np.nan for k in FIT_COLUMNS if k not in ("reference_age", "value_at_reference")}
    out.update(model="none", n=len(y), warning="",
               age_min=age.min() if len(age) else np.nan,
               age_max=age.max() if len(age) else np.nan)
    notes = [f"{dropped} control sessions without age or value left out" if dropped else ""]
    if len(y) < MIN_N_LINEAR:
        out["note"] = join_notes(f"n = {len(y)} controls (< {MIN_N_LINEAR}): no age fit",
                                 *notes)
        return out
    if np.ptp(age) == 0:
        out["note"] = join_notes("controls all have the same age: no age fit", *notes)
        return out
    lin, lin_pred = _linear_fit(age, y)
    out["r2_linear"] = _r2(y, lin_pred)
    if np.ptp(y) == 0:
        notes.insert(0, "constant values")
    reason = ""
    if len(y) < MIN_N_EXP:
        reason = f"n = {len(y)} < {MIN_N_EXP}"
    elif np.ptp(y) == 0:
        reason = "constant values"
    else:
        grid = np.geomspace(B_BOUNDS[0], B_BOUNDS[1], 60)
        best = None
        for b in grid:
            basis = np.column_stack([1.0 - np.exp(-b * age), np.ones_like(age)])
            coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
            sse = np.sum((basis @ coef - y) ** 2)
            if best is None or sse < best[0]:
                best = (sse, coef[0], b, coef[1])
        p0 = [best[1], best[2], best[3]]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", optimize.OptimizeWarning)
                popt, pcov = optimize.curve_fit(
                    saturation, age, y, p0=p0, method="trf",
                    bounds=([-np.inf, B_BOUNDS[0], -np.inf], [np.inf, B_BOUNDS[1], np.inf]),
                    max_nfev=2000)
            perr = np.sqrt(np.diag(pcov))
            if not np.all(np.isfinite(perr)):
                reason = "parameter covariance not finite"
            elif popt[1] <= B_BOUNDS[0] * 1.01 or popt[1] >= B_BOUNDS[1] * 0.99:
                reason = (f"rate b at its bound ({popt[1]:.3g}/year): no saturation "
                          "identifiable in the controls' age range")
        except (RuntimeError, ValueError, optimize.OptimizeWarning) as exc:
            reason = f"curve_fit failed ({str(exc).splitlines()[0][:80]})"
    if not reason:
        pred = saturation(age, *popt)
        out.update(model="exponential", a=popt[0], b=popt[1], c=popt[2], a_se=perr[0],
                   b_se=perr[1], c_se=perr[2], r2=_r2(y, pred),
                   rmse=np.sqrt(np.mean((y - pred) ** 2)))
    else:
        out.update(model="linear", slope=lin.slope, slope_se=lin.stderr,
                   intercept=lin.intercept, r2=out["r2_linear"],
                   rmse=np.sqrt(np.mean((y - lin_pred) ** 2)))
        out["warning"] = f"exponential age fit failed ({reason}); linear fit used"
        notes.insert(0, out["warning"])
    out["note"] = join_notes(*notes)
    return out


def predict(fit, age):
    """R(age) of a fit row (exponential or linear); NaN for ``model == 'none'``."""
    age = np.asarray(age, dtype=float)
    if fit["model"] == "exponential":
        return saturation(age, fit["a"], fit["b"], fit["c"])
    if fit["model"] == "linear":
        return fit["intercept"] + fit["slope"] * age
    return np.full(age.shape, np.nan)


def fit_age_curves(data, value="mean", control_label="HC", reference_age=None, keys=UNIT_KEYS,
                   log=None):
    """Fit `fit_age_curve` per unit on the controls' baseline sessions.

    Parameters
    ----------
    data : DataFrame
        Cohort long table (columns group, age, is_baseline, ``keys``, ``value``).
    reference_age : float or None
        Age the corrected values refer to; None: the controls' mean baseline age.

    Returns
    -------
    DataFrame, one row per unit: ``keys`` + `FIT_COLUMNS`.
    """
    ctrl = data[(data["group"] == control_label) & data["is_baseline"]]
    if reference_age is None:
        ages = ctrl.drop_duplicates("participant_id")["age"]
        reference_age = float(ages.mean()) if ages.notna().any() else np.nan
    rows, failed = [], {}
    ctrl_units = dict(list(ctrl.groupby(keys, sort=False)))
    for unit, chunk in data.groupby(keys, sort=False):
        sub = ctrl_units.get(unit)
        if sub is None or sub.empty:
            fit = {k: np.nan for k in FIT_COLUMNS}
            fit.update(model="none", n=0, warning="",
                       note=f"no control ('{control_label}') values: no age fit")
        else:
            fit = fit_age_curve(sub["age"], sub[value])
        if fit.get("warning"):
            failed.setdefault(fit["warning"], []).append("/".join(map(str, unit)))
        fit.pop("warning", None)
        fit["reference_age"] = reference_age
        fit["value_at_reference"] = float(predict(fit, reference_age)) if np.isfinite(
            reference_age) else np.nan
        outside = chunk["age"].notna() & ((chunk["age"] < fit["age_min"])
                                          | (chunk["age"] > fit["age_max"]))
        if fit["model"] != "none" and outside.any():
            fit["note"] = join_notes(fit["note"], f"{int(outside.sum())} sessions outside the "
                                     "controls' age range (extrapolated)")
        rows.append({**dict(zip(keys, unit)), **fit})
    if log is not None:  # one line per reason, not one per unit (a small cohort has hundreds)
        for reason, units in failed.items():
            log.warning("age fit: %s for %d of %d units (%s%s; each unit's note in "
                        "group_agefit.tsv)", reason, len(units), len(rows),
                        ", ".join(units[:3]), ", ..." if len(units) > 3 else "")
    table = pd.DataFrame(rows, columns=list(keys) + FIT_COLUMNS)
    return table


def age_correct(data, fits, value="mean", keys=UNIT_KEYS):
    """corrected = value - R(age) + R(reference_age), per row of ``data`` (NaN without a fit
    or an age). Returns a Series aligned with ``data``."""
    out = pd.Series(np.nan, index=data.index, dtype=float)
    fit_by_unit = {tuple(r[k] for k in keys): r for r in fits.to_dict("records")}
    for unit, chunk in data.groupby(keys, sort=False):
        fit = fit_by_unit.get(unit)
        if fit is None or fit["model"] == "none" or not np.isfinite(fit["reference_age"]):
            continue
        out.loc[chunk.index] = (chunk[value].to_numpy(dtype=float)
                                - predict(fit, chunk["age"].to_numpy(dtype=float))
                                + fit["value_at_reference"])
    return out
