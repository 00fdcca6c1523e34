"""Quality checks of the phase stage's brain mask and local field (arrays in, numbers out).

`mask_field_quality` measures what decides whether LFS and QSM of a session can be trusted:
the brain volume (a whole-head mask that kept the scalp is far above an adult brain), whether
the field of view cuts the brain, how much of the mask background removal kept, and how much
of the local field a smooth low-order polynomial explains (residual background field).
`quality_status` checks each against its range (one row a check: value, units, allowed range,
ok/warn, message), and `quality_warnings` is its warning lines, naming the number and the
option to change; the subject report's check table is built from the same rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..maps.kernels import check_voxel_size

__all__ = ["BRAIN_VOLUME_ML", "MAX_RESIDUAL_BACKGROUND", "MIN_KEPT_FRACTION", "Check",
           "roi_registration_quality", "roi_qc_flag", "MIN_ROI_SIMILARITY",
           "MIN_ROI_BRAIN_FRACTION", "ROI_QC_MARGIN_MM",
           "mask_field_quality", "quality_facts", "quality_from_facts", "quality_status",
           "quality_warnings", "touches_edge"]

#: Plausible adult brain-mask volume (mL, brain and CSF inside the skull).
BRAIN_VOLUME_ML = (800.0, 2200.0)
#: Warn when background removal keeps less than this fraction of the brain mask. The default
#: PDF keeps the whole mask; V-SHARP (8-35 mm) erodes an 8 mm rim: 69-70 % of an adult brain
#: mask is kept (realistic head phantom, 1 and 2 mm), so a threshold of 80 % would warn on
#: every V-SHARP run; 60 % flags crops, slabs and thin masks (the real 3-echo crop kept 5.6 %
#: with V-SHARP before the PDF fallback).
#: Smaller radii keep more but cost accuracy at the rim (1 mm, chi NRMSE over the kept mask:
#: 8 mm 43.2 % at 69 % kept, 6 mm 49.8 % at 76 %, 5 mm 53.1 % at 80 %, 4 mm 58.1 % at 84 %;
#: unchanged in deep gray matter).
MIN_KEPT_FRACTION = 0.60
#: Warn when a 2nd-order polynomial explains more than this fraction of the local field's
#: variance in the mask (a local field is dominated by small structures; a large smooth
#: part is background left behind). Measured on the realistic head phantom (2 mm): 0.13
#: with the default chain; 0.70-0.84 when the simulated background was not harmonic (a
#: non-harmonic shim model on 2x2x3 and 2x2x4 mm grids), which V-SHARP cannot remove.
MAX_RESIDUAL_BACKGROUND = 0.25


def _polynomial_fraction(values, coords):
    """Fraction of the variance of ``values`` explained by a 2nd-order polynomial of coords."""
    x, y, z = (c - c.mean() for c in coords)
    scale = max(float(np.abs(np.stack([x, y, z])).max()), 1e-9)
    x, y, z = x / scale, y / scale, z / scale
    design = np.stack([np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], 1)
    v = values - values.mean()
    total = float(v @ v)
    if total <= 0:
        return 0.0
    coef, *_ = np.linalg.lstsq(design, v, rcond=None)
    fit = design @ coef
    return float(fit @ fit / total)


def touches_edge(mask):
    """Whether ``mask`` touches the first or last slice of any axis (the field of view cuts
    the brain)."""
    mask = np.asarray(mask, bool)
    return any(bool(np.take(mask, i, axis=a).any()) for a in range(mask.ndim)
               for i in (0, mask.shape[a] - 1))


def mask_field_quality(mask, mask_local, local_field, voxel_size, max_samples=200_000):
    """QC numbers of a brain mask and its local field.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
        The brain mask the field was estimated in.
    mask_local : ndarray of bool, shape (X, Y, Z)
        The mask after background removal (possibly eroded).
    local_field : ndarray, shape (X, Y, Z)
        Local field (any unit: the result is a fraction).
    voxel_size : sequence of 3 float
        mm.
    max_samples : int
        At most this many voxels (evenly strided) enter the polynomial fit.

    Returns
    -------
    dict
        ``brain_volume_ml``; ``partial_fov`` (the mask touches the first or last slice of a
        voxel axis: the field of view cuts the brain); ``kept_fraction`` (mask_local /
        mask); ``residual_background`` (fraction of the local field's variance in
        ``mask_local`` explained by a 2nd-order polynomial).

    Examples
    --------
    >>> m = np.zeros((20, 20, 20), bool); m[4:16, 4:16, 4:16] = True
    >>> x = np.indices(m.shape)[0].astype(float)
    >>> q = mask_field_quality(m, m, x, (1.0, 1.0, 1.0))
    >>> round(q["brain_volume_ml"], 3), q["partial_fov"], q["kept_fraction"]
    (1.728, False, 1.0)
    >>> round(q["residual_background"], 2)  # a pure gradient is all background
    1.0
    """
    mask = np.asarray(mask, bool)
    mask_local = np.asarray(mask_local, bool)
    voxel_size = check_voxel_size(voxel_size)
    if mask.shape != mask_local.shape or mask.shape != np.shape(local_field) or mask.ndim != 3:
        raise ValueError("mask, mask_local and local_field must be 3-D arrays of one shape")
    n = int(mask.sum())
    out = {"brain_volume_ml": n * float(np.prod(voxel_size)) / 1000.0,
           "partial_fov": touches_edge(mask),
           "kept_fraction": float(mask_local.sum()) / n if n else 0.0,
           "residual_background": None}
    idx = np.flatnonzero(mask_local)
    if idx.size >= 20:
        idx = idx[::max(1, idx.size // max_samples)]
        coords = [c.astype(np.float64) * v for c, v in
                  zip(np.unravel_index(idx, mask.shape), voxel_size)]
        values = np.asarray(local_field, np.float64).ravel()[idx]
        out["residual_background"] = _polynomial_fraction(values, coords)
    return out


#: `mask_field_quality` key -> (key in the sidecars' ``MaskQuality`` facts, decimals kept).
FACT_KEYS = {"brain_volume_ml": ("BrainVolumeML", 1),
             "partial_fov": ("PartialFieldOfView", None),
             "kept_fraction": ("FractionKeptByBackgroundRemoval", 4),
             "residual_background": ("ResidualBackgroundFraction", 4)}


def quality_facts(quality):
    """The sidecar form (``MaskQuality``) of `mask_field_quality`'s dict, numbers rounded.

    Examples
    --------
    >>> facts = quality_facts({"brain_volume_ml": 1234.567, "partial_fov": False,
    ...                        "kept_fraction": 0.712345, "residual_background": None})
    >>> facts["BrainVolumeML"], facts["FractionKeptByBackgroundRemoval"]
    (1234.6, 0.7123)
    >>> list(facts)  # doctest: +NORMALIZE_WHITESPACE
    ['BrainVolumeML', 'PartialFieldOfView', 'FractionKeptByBackgroundRemoval',
     'ResidualBackgroundFraction']
    """
    out = {}
    for key, (name, digits) in FACT_KEYS.items():
        value = quality.get(key)
        out[name] = value if value is None or digits is None else round(float(value), digits)
    return out


def quality_from_facts(facts):
    """`mask_field_quality`'s keys back from the sidecar form (keys absent there are left out).

    Examples
    --------
    >>> quality_from_facts({"BrainVolumeML": 1500.0, "PartialFieldOfView": True})
    {'brain_volume_ml': 1500.0, 'partial_fov': True}
    """
    facts = facts or {}
    return {key: facts[name] for key, (name, _) in FACT_KEYS.items() if name in facts}


class Check(NamedTuple):
    """One row of `quality_status`.

    ``value`` is in ``units`` (fractions in %); ``allowed`` is the range in words (empty for
    information rows); ``status`` is ``ok``, ``warn`` or ``info``; ``message`` is the warning
    line for ``warn``, the finding in words for ``info`` and empty for ``ok``.
    """

    name: str
    value: object
    units: str
    allowed: str
    status: str
    message: str


def quality_status(quality, session="session"):
    """Every check of a `mask_field_quality` dict against its range, one `Check` a row.

    A key that is missing or None leaves its row out (``partial_fov``: the field-of-view row).
    Warning messages name ``session``, the number and what to change; `quality_warnings` is
    the list of them.

    Examples
    --------
    >>> rows = quality_status({"brain_volume_ml": 3612.0, "partial_fov": False,
    ...                        "kept_fraction": 0.7, "residual_background": 0.13})
    >>> [(r.name[:17], round(r.value), r.units, r.allowed, r.status) for r in rows]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('brain mask volume', 3612, 'mL', '800-2200 mL', 'warn'),
     ('field of view', 0, '', '', 'info'),
     ('mask kept by back', 70, '%', '>= 60 %', 'ok'),
     ('residual backgrou', 13, '%', '<= 25 %', 'ok')]
    """
    rows = []
    lo, hi = BRAIN_VOLUME_ML
    vol = quality.get("brain_volume_ml")
    partial = quality.get("partial_fov")
    if vol is not None:
        message = ""
        if not lo <= vol <= hi:
            if partial and vol < lo:
                message = (f"{session}: brain mask volume {vol:.0f} mL is below {lo:.0f} mL, "
                           "but the field of view cuts the brain (partial coverage), so this "
                           "may be right; check the mask in the report")
            else:
                message = (f"{session}: brain mask volume {vol:.0f} mL is outside {lo:.0f}-"
                           f"{hi:.0f} mL for an adult brain; check the mask in the report and "
                           "give --mask or another --brain-mask if it is wrong")
        rows.append(Check("brain mask volume", float(vol), "mL", f"{lo:.0f}-{hi:.0f} mL",
                          "warn" if message else "ok", message))
    if partial is not None:
        rows.append(Check("field of view", bool(partial), "", "", "info",
                          "cuts the brain (mask touches its edge)" if partial
                          else "covers the brain"))
    kept = quality.get("kept_fraction")
    if kept is not None:
        ok = kept >= MIN_KEPT_FRACTION  # compared as fractions (100 * 0.6 is not 60.0)
        kept, limit = 100 * float(kept), 100 * MIN_KEPT_FRACTION
        rows.append(Check(
            "mask kept by background removal", kept, "%", f">= {limit:.0f} %",
            "ok" if ok else "warn",
            "" if ok else (f"{session}: background removal kept {kept:.0f} % of the brain mask "
                           f"(less than {limit:.0f} %); ROIs near the mask edge lose voxels; "
                           "--background-method pdf keeps the whole mask")))
    res = quality.get("residual_background")
    if res is not None:
        ok = res <= MAX_RESIDUAL_BACKGROUND
        res, limit = 100 * float(res), 100 * MAX_RESIDUAL_BACKGROUND
        rows.append(Check(
            "residual background (local-field variance in a 2nd-order fit)", res, "%",
            f"<= {limit:.0f} %", "ok" if ok else "warn",
            "" if ok else (f"{session}: a 2nd-order polynomial explains {res:.0f} % of the local "
                           f"field (more than {limit:.0f} %): background field is left; check "
                           "the brain mask, or try --background-method pdf")))
    return rows


def quality_warnings(quality, session="session"):
    """One line per failed check of `quality_status`, naming ``session``, the number and what
    to change.

    Examples
    --------
    >>> quality_warnings({"brain_volume_ml": 3400.0, "partial_fov": False,
    ...                   "kept_fraction": 0.95, "residual_background": 0.01}, "sub-01")[0][:46]
    'sub-01: brain mask volume 3400 mL is outside 8'
    """
    return [row.message for row in quality_status(quality, session) if row.status == "warn"]


# -- per-ROI registration quality (issue 11) ----------------------------------------------------
#: Margin (mm) around each ROI over which the registration's local similarity is measured (the
#: ROI's edges must be inside the window: a nucleus is seen by its contrast to its neighbours).
ROI_QC_MARGIN_MM = 3.0
#: Flag an ROI whose local similarity (correlation of the session's R2* with the warped iron
#: template around it) is below this value. Chosen on benchmarks/accuracy_registration.py
#: (independent-anatomy subject, 1 mm, default registration; each of the 16 nucleus ROIs also
#: moved with its template by 2 and 4 mm along +-x, +-y, +-z, as a registration error would;
#: 208 ROIs): similarity (median [min]) at 0 / 2 / 4 mm error: caudate 0.91 / 0.83 [0.65] /
#: 0.61 [0.20], putamen 0.88 / 0.79 / 0.64, pallidum 0.84 / 0.72 / 0.48, thalamus 0.75 / 0.64
#: / 0.46, pulvinar 0.79 / 0.72 / 0.56, nigra 0.83 / 0.68 / 0.41, red nucleus 0.88 / 0.74 /
#: 0.47, dentate 0.93 / 0.76 / 0.43.
#:
#: =========  ======================  =================================  ====================
#: threshold  ROIs flagged (of 208)   flagged among Dice < 0.5 (of 51)   flagged among Dice
#:                                                                       >= 0.7 (of 81)
#: =========  ======================  =================================  ====================
#: 0.3        10                      8                                  1
#: 0.4        22                      16                                 1
#: **0.5**    43                      27                                 5
#: 0.6        72                      37                                 14
#: 0.7        123                     44                                 30
#: =========  ======================  =================================  ====================
#:
#: 0.5 catches most 4 mm errors and about half of all ROIs below Dice 0.5 while flagging 6 %
#: of the good ones. It cannot see an atlas whose definition differs from this brain's
#: (the unmoved pulvinar: similarity 0.79 at Dice 0.48): the check is for registration errors.
MIN_ROI_SIMILARITY = 0.5
#: Flag an ROI with less than this fraction of its voxels inside the brain mask of the maps (an
#: ROI cut by the field of view or by the mask's erosion averages what is left of it).
MIN_ROI_BRAIN_FRACTION = 0.9


def roi_registration_quality(labels, session_image, template_image, brain_mask, voxel_size,
                             margin_mm=ROI_QC_MARGIN_MM):
    """Local similarity of the registration and brain-mask coverage of every labelled ROI.

    For each label index of ``labels``: the Pearson correlation between ``session_image``
    (e.g. the session's R2* map) and ``template_image`` (the template's matching contrast
    warped to the session, e.g. the iron template) over the label dilated by ``margin_mm``,
    and the fraction of the label's voxels inside ``brain_mask``. A well registered nucleus
    has its high-R2* core and its low-R2* surroundings on both images (correlation near 1);
    a shifted one mixes them (near 0 or negative).

    Parameters
    ----------
    labels : ndarray of int (X, Y, Z)
        Native label map (0 = none).
    session_image, template_image : ndarray (X, Y, Z)
        Same contrast, session and warped template (any units).
    brain_mask : ndarray of bool (X, Y, Z) or None
        The mask the maps are defined in; None gives a coverage of NaN.
    voxel_size : sequence of 3 floats (mm)
    margin_mm : float

    Returns
    -------
    dict of int -> (float, float)
        label index -> (similarity, brain fraction); NaN where undefined (fewer than 5
        voxels with finite values, or a constant image in the window).

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((20, 20, 20), int); lab[8:12, 8:12, 8:12] = 1
    >>> img = np.where(lab > 0, 40.0, 20.0)
    >>> moved = np.roll(img, 4, axis=0)
    >>> q = roi_registration_quality(lab, img, img, np.ones(lab.shape, bool), (1, 1, 1))
    >>> round(q[1][0], 2), q[1][1]
    (1.0, 1.0)
    >>> round(roi_registration_quality(lab, moved, img, None, (1, 1, 1))[1][0], 2) < 0.5
    True
    """
    from scipy import ndimage

    vs = check_voxel_size(voxel_size)
    labels = np.asarray(labels)
    a = np.asarray(session_image, np.float64)
    b = np.asarray(template_image, np.float64)
    if a.shape != labels.shape or b.shape != labels.shape:
        raise ValueError(f"images {a.shape}, {b.shape} differ from labels {labels.shape}")
    mask = None if brain_mask is None else np.asarray(brain_mask, bool)
    pad = np.ceil(margin_mm / np.asarray(vs, float)).astype(int) + 1
    out = {}
    objects = ndimage.find_objects(np.where(labels > 0, labels, 0).astype(np.int64))
    for index, box in enumerate(objects, start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - p, 0), min(s.stop + p, n))
                    for s, p, n in zip(box, pad, labels.shape))
        roi = labels[box] == index
        near = ndimage.distance_transform_edt(~roi, sampling=vs) <= margin_mm
        x, y = a[box][near], b[box][near]
        ok = np.isfinite(x) & np.isfinite(y)
        sim = float("nan")
        if ok.sum() >= 5 and np.std(x[ok]) > 0 and np.std(y[ok]) > 0:
            sim = float(np.corrcoef(x[ok], y[ok])[0, 1])
        frac = float("nan") if mask is None else float(mask[box][roi].mean())
        out[index] = (sim, frac)
    return out


def roi_qc_flag(similarity, brain_fraction, min_similarity=MIN_ROI_SIMILARITY,
                min_brain_fraction=MIN_ROI_BRAIN_FRACTION):
    """The ``qc_flag`` of an ROI row: ``"ok"``, or the failed checks joined by ``+``
    (``"low_similarity"``, ``"outside_mask"``); ``"n/a"`` when neither is known.

    >>> roi_qc_flag(0.8, 1.0), roi_qc_flag(0.2, 0.5), roi_qc_flag(float("nan"), float("nan"))
    ('ok', 'low_similarity+outside_mask', 'n/a')
    """
    failed = []
    if np.isfinite(similarity) and similarity < min_similarity:
        failed.append("low_similarity")
    if np.isfinite(brain_fraction) and brain_fraction < min_brain_fraction:
        failed.append("outside_mask")
    if not np.isfinite(similarity) and not np.isfinite(brain_fraction):
        return "n/a"
    return "+".join(failed) or "ok"
