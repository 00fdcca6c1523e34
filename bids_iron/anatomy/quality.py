"""Quality checks of the phase stage's brain mask and local field (arrays in, numbers out).

`mask_field_quality` measures what decides whether LFS and QSM of a session can be trusted:
the brain volume (a whole-head mask that kept the scalp is far above an adult brain), whether
the field of view cuts the brain, how much of the mask background removal kept, and how much
of the local field a smooth low-order polynomial explains (residual background field).
`quality_warnings` turns them into one line each, naming the number and the option to change.
"""

from __future__ import annotations

import numpy as np

from ..maps.kernels import check_voxel_size

__all__ = ["mask_field_quality", "quality_warnings", "BRAIN_VOLUME_ML", "MIN_KEPT_FRACTION",
           "MAX_RESIDUAL_BACKGROUND"]

#: Plausible adult brain-mask volume (mL, brain and CSF inside the skull).
BRAIN_VOLUME_ML = (800.0, 2200.0)
#: Warn when background removal keeps less than this fraction of the brain mask. The default
#: V-SHARP (8-35 mm) erodes an 8 mm rim: 69-70 % of an adult brain mask is kept (realistic
#: head phantom, 1 and 2 mm), so a threshold of 80 % would warn on every default run; 60 %
#: flags crops, slabs and thin masks (the real 3-echo crop kept 5.6 % before PDF fallback).
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
    partial = any(bool(np.take(mask, i, axis=a).any()) for a in range(3)
                  for i in (0, mask.shape[a] - 1))
    out = {"brain_volume_ml": n * float(np.prod(voxel_size)) / 1000.0, "partial_fov": partial,
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


def quality_warnings(quality, session="session"):
    """One line per failed check, naming ``session``, the number and what to change.

    Examples
    --------
    >>> quality_warnings({"brain_volume_ml": 3400.0, "partial_fov": False,
    ...                   "kept_fraction": 0.95, "residual_background": 0.01}, "sub-01")[0][:46]
    'sub-01: brain mask volume 3400 mL is outside 8'
    """
    lines = []
    lo, hi = BRAIN_VOLUME_ML
    vol = quality["brain_volume_ml"]
    if not lo <= vol <= hi:
        if quality["partial_fov"] and vol < lo:
            lines.append(f"{session}: brain mask volume {vol:.0f} mL is below {lo:.0f} mL, but "
                         "the field of view cuts the brain (partial coverage), so this may be "
                         "right; check the mask in the report")
        else:
            lines.append(f"{session}: brain mask volume {vol:.0f} mL is outside {lo:.0f}-"
                         f"{hi:.0f} mL for an adult brain; check the mask in the report and "
                         "give --mask or another --brain-mask if it is wrong")
    kept = quality["kept_fraction"]
    if kept < MIN_KEPT_FRACTION:
        lines.append(f"{session}: background removal kept {100 * kept:.0f} % of the brain mask "
                     f"(less than {100 * MIN_KEPT_FRACTION:.0f} %); ROIs near the mask edge "
                     "lose voxels; --background-method pdf keeps the whole mask")
    res = quality["residual_background"]
    if res is not None and res > MAX_RESIDUAL_BACKGROUND:
        lines.append(f"{session}: a 2nd-order polynomial explains {100 * res:.0f} % of the local "
                     f"field (more than {100 * MAX_RESIDUAL_BACKGROUND:.0f} %): background "
                     "field is left; check the brain mask, or try --background-method pdf")
    return lines
