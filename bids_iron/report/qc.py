"""The quality-control checks of a session as the report shows them: named, with units, the
expected range and a pass / warn / info status.

Every row is a `bids_iron.anatomy.quality.Check` (the type of the brain-mask and field checks
of `bids_iron.anatomy.quality.quality_status`, which come first), so one table holds them all:

* the brain-mask and field checks of the phase stage (volume, field of view, mask kept by
  background removal, residual background);
* signal-to-noise indices and the R2* fit residual (`measure_checks`);
* the chi sign check, the reference values subtracted and the solvers' convergence (from the
  sidecar facts);
* the ROIs the ROI table flags in its ``qc_flag`` column (`flagged_rois`), when it has one.

Usage::

    rows = mask_checks + measure_checks(facts, snr, residual_values, "sub-01_ses-1")
    rows += roi_flag_checks(roi_table, "sub-01_ses-1")
"""

from __future__ import annotations

import numpy as np

from ..anatomy.quality import Check

#: Last-echo SNR below which the magnitude noise floor (Rician bias) makes the mono-exponential
#: fit underestimate R2*: at SNR 3 the mean of Rician magnitude exceeds the signal by ~5 %
#: (Gudbjartsson and Patz 1995) and the bias grows fast below it.
MIN_SNR_LAST_ECHO = 3.0

#: What each measured check means, shown when the row has no message of its own.
MEANINGS = {
    "SNR, echo 1 (background noise)":
        "mean brain signal / noise sigma of the air in the grid corners (Rayleigh noise "
        "assumed; an index to compare sessions of one protocol)",
    "SNR, last echo (background noise)":
        "as echo 1, for the last echo; below 3 the noise floor biases R2* low",
    "SNR, echo 1 (R2* fit residual, lower bound)":
        "mean first-echo brain signal / median noise implied by the fit residual",
    "R2* fit residual (median)":
        "sqrt(sum (S - fit)^2 / sum S^2) per voxel, median in the brain mask",
    "chi sign check (median chi of the 1 % highest-R2* voxels)":
        "veins and iron are paramagnetic: a negative value suggests an inverted phase sign",
    "chi reference value subtracted":
        "mean chi of the reference region before referencing",
    "LFS reference value subtracted":
        "mean local field of the reference region before referencing",
    "background removal": "iterations of the solver (0: a direct method)",
    "dipole inversion": "iterations of the solver (0: a direct method)",
}

#: The words of the ``qc_flag`` levels of `bids_iron.anatomy.roistats` (joined by ``+``).
FLAG_WORDS = {"low_similarity": "registration doubtful (low local similarity)",
              "outside_mask": "partly outside the brain mask"}

#: ``qc_flag`` values that mean "not flagged" (compared lower-case, stripped).
_NOT_FLAGGED = {"", "ok", "pass", "passed", "n/a", "na", "nan", "none", "0", "false", "0.0"}


def _info(name, value, units=""):
    return Check(name, value, units, "", "info", "")


def measure_checks(facts, snr=None, residual=None, session="session"):
    """The measured and solver checks of one session (after the brain-mask checks).

    Parameters
    ----------
    facts : dict
        Sidecar facts of the session; used: ``SignCheckHighR2starMedianChi``,
        ``ChiReferenceValue``, ``LFSReferenceValue`` (ppm), ``BackgroundRemoval`` and
        ``DipoleInversion`` (``n_iter``, ``converged``, ``max_iter``). Missing keys leave
        their rows out.
    snr : dict, optional
        `bids_iron.report.figures.snr_estimate` of the session.
    residual : ndarray, optional
        R2* fit residual values in the brain mask (unitless).
    session : str
        Session label for the warning messages.

    Returns
    -------
    list of Check
        Values in the row's units (fractions in %).

    Examples
    --------
    >>> rows = measure_checks({"SignCheckHighR2starMedianChi": -0.01,
    ...                        "DipoleInversion": {"n_iter": 60, "converged": False}},
    ...                       {"snr_background_last": 2.0}, session="s")
    >>> [(r.name[:25], r.status) for r in rows]
    [('SNR, last echo (backgroun', 'warn'), ('chi sign check (median ch', 'warn'), \
('dipole inversion', 'info')]
    """
    facts = dict(facts or {})
    snr = dict(snr or {})
    rows = []
    if snr.get("snr_background_first") is not None:
        rows.append(_info("SNR, echo 1 (background noise)", float(snr["snr_background_first"])))
    last = snr.get("snr_background_last")
    if last is not None:
        ok = last >= MIN_SNR_LAST_ECHO
        rows.append(Check(
            "SNR, last echo (background noise)", float(last), "", f">= {MIN_SNR_LAST_ECHO:g}",
            "ok" if ok else "warn",
            "" if ok else (f"{session}: last-echo SNR {last:.1f} is below "
                           f"{MIN_SNR_LAST_ECHO:g}: the magnitude noise floor biases R2* low; "
                           "consider --r2star-method arlo or dropping the latest echoes")))
    if snr.get("snr_fit") is not None:
        rows.append(_info("SNR, echo 1 (R2* fit residual, lower bound)", float(snr["snr_fit"])))
    if residual is not None:
        values = np.asarray(residual, dtype=float).ravel()
        values = values[np.isfinite(values)]
        if values.size:
            rows.append(Check("R2* fit residual (median)", 100 * float(np.median(values)), "%",
                              "", "info", f"95th percentile "
                              f"{100 * float(np.percentile(values, 95)):.2g} %"))
    sign = facts.get("SignCheckHighR2starMedianChi")
    if sign is not None:
        ok = sign >= 0
        rows.append(Check(
            "chi sign check (median chi of the 1 % highest-R2* voxels)", float(sign), "ppm",
            ">= 0 ppm", "ok" if ok else "warn",
            "" if ok else (f"{session}: chi of the highest-R2* voxels (veins, iron) is "
                           f"negative ({sign:.4f} ppm): the phase sign may be inverted; try "
                           "--invert-phase")))
    for key, name in (("ChiReferenceValue", "chi reference value subtracted"),
                      ("LFSReferenceValue", "LFS reference value subtracted")):
        if facts.get(key) is not None:
            rows.append(_info(name, float(facts[key]), "ppm"))
    for key, name in (("BackgroundRemoval", "background removal"),
                      ("DipoleInversion", "dipole inversion")):
        solver = facts.get(key) or {}
        if "n_iter" not in solver:
            continue
        n_iter = int(solver["n_iter"])
        if not n_iter:
            rows.append(Check(name, 0, "iterations", "", "info", "direct (no iterations)"))
            continue
        ok = solver.get("converged", True)
        cap = f" of at most {int(solver['max_iter'])}" if solver.get("max_iter") else ""
        if ok:
            rows.append(Check(name, n_iter, "iterations", "converged", "ok", ""))
        elif key == "BackgroundRemoval":  # the phase stage warns about it: so does the table
            rows.append(Check(
                name, n_iter, "iterations", "converged", "warn",
                f"{session}: {name} stopped after {n_iter} iterations{cap} before reaching "
                "its tolerance; check the local field shift above"))
        else:  # the ADMM inversions often end at their cap; the chi map shows if it matters
            rows.append(Check(
                name, n_iter, "iterations", "", "info",
                f"stopped at its iteration cap ({n_iter}{cap}) before its tolerance, as the "
                "iterative inversions often do; the chi map above shows streaks if it matters"))
    return rows


def is_flagged(value):
    """True when a ``qc_flag`` cell marks its row: anything but empty, NA, 0/False or
    ok/pass (case-insensitive).

    Examples
    --------
    >>> [is_flagged(v) for v in (None, float("nan"), "", "ok", 0, False, 1, "small ROI")]
    [False, False, False, False, False, False, True, True]
    """
    if value is None:
        return False
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return bool(np.isfinite(value) and value != 0)
    return str(value).strip().lower() not in _NOT_FLAGGED


def flagged_rois(table):
    """The flagged (roi, hemisphere) pairs of an ROI table, with their reasons.

    Parameters
    ----------
    table : pandas.DataFrame or None
        A roistats table; without a ``qc_flag`` column nothing is flagged.

    Returns
    -------
    dict of (str, str) -> list of str
        In table order; the reasons are the distinct flag texts of the pair's rows in words
        (`FLAG_WORDS`), with the metric named when only some metrics are flagged
        (``"chi: few voxels"``); a flag that is not text (True, 1) reads ``"flagged"``.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"roi": ["red_nucleus"] * 2, "hemisphere": ["left"] * 2,
    ...                   "metric": ["r2star", "chi"], "qc_flag": ["low_similarity"] * 2})
    >>> flagged_rois(t)
    {('red_nucleus', 'left'): ['registration doubtful (low local similarity)']}
    """
    if table is None or len(table) == 0 or "qc_flag" not in table:
        return {}
    out = {}
    metrics = {}
    for roi, hemi, metric, flag in zip(table["roi"], table["hemisphere"],
                                       table["metric"] if "metric" in table
                                       else [""] * len(table), table["qc_flag"]):
        key = (str(roi), str(hemi))
        metrics.setdefault(key, set()).add(metric)
        if is_flagged(flag):
            text = (" + ".join(FLAG_WORDS.get(part.strip(), part.strip())
                               for part in flag.split("+"))
                    if isinstance(flag, str) else "flagged")
            out.setdefault(key, {}).setdefault(text.strip(), set()).add(metric)
    result = {}
    for key, reasons in out.items():
        words = []
        for text, where in reasons.items():
            if where == metrics[key] or where == {""}:
                words.append(text)
            else:
                words.append(f"{', '.join(sorted(m for m in where if m))}: {text}")
        result[key] = words
    return result


def roi_flag_checks(table, session="session"):
    """The ROI-table row of the QC table: how many ROIs its ``qc_flag`` column flags.

    [] without a table or without the column (older tables).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"roi": ["red_nucleus", "putamen"], "hemisphere": ["left"] * 2,
    ...                   "metric": ["chi"] * 2, "qc_flag": ["few voxels", ""]})
    >>> roi_flag_checks(t, "s")[0].message
    's: 1 ROI flagged in the ROI table: red_nucleus left: few voxels'
    """
    if table is None or len(table) == 0 or "qc_flag" not in table:
        return []
    flagged = flagged_rois(table)
    n = len(flagged)
    message = ""
    if n:
        items = "; ".join(f"{roi} {hemi}: {', '.join(reasons)}"
                          for (roi, hemi), reasons in flagged.items())
        message = f"{session}: {n} ROI{'s' if n != 1 else ''} flagged in the ROI table: {items}"
    return [Check("ROIs flagged in the ROI table (qc_flag)", n, "ROIs", "0 ROIs",
                  "warn" if n else "ok", message)]
