"""Tissue classes found from quantitative maps (no template needed)."""

import numpy as np
from scipy import ndimage

#: R2* (1/s) below which a brain voxel is taken as CSF. CSF has R2* of about 1-5 1/s at
#: 1.5-7 T; gray and white matter are above 10 1/s.
CSF_MAX_R2STAR = 8.0


def csf_mask_from_r2star(r2star, mask, max_r2star=CSF_MAX_R2STAR, erode_voxels=1,
                         min_voxels=20):
    """CSF (mainly the lateral ventricles) as the low-R2* part of the brain mask.

    Voxels of ``mask`` with ``0 < R2* < max_r2star`` are kept, eroded by ``erode_voxels``
    (6-connected) against partial volume with tissue, and only connected components of at
    least ``min_voxels`` voxels survive (noise specks and vessel-free tissue voxels go).

    Parameters
    ----------
    r2star : ndarray, shape (X, Y, Z)
        R2* map (1/s).
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask (e.g. after background-field removal).
    max_r2star : float
        Upper R2* of CSF (1/s).
    erode_voxels : int
        Erosion iterations (0: none).
    min_voxels : int
        Smallest connected CSF component kept.

    Returns
    -------
    ndarray of bool, shape (X, Y, Z)
        May be empty: callers decide what to do then.

    Raises
    ------
    ValueError
        If shapes differ or ``max_r2star`` is not positive.

    Examples
    --------
    >>> r2 = np.full((20, 20, 20), 20.0); r2[6:14, 6:14, 6:14] = 3.0
    >>> csf = csf_mask_from_r2star(r2, np.ones(r2.shape, bool))
    >>> int(csf.sum()), bool(csf[10, 10, 10])
    (216, True)
    """
    r2star = np.asarray(r2star)
    mask = np.asarray(mask, bool)
    if r2star.shape != mask.shape or r2star.ndim != 3:
        raise ValueError(f"r2star {r2star.shape} and mask {mask.shape} must be the same 3-D shape")
    if not max_r2star > 0:
        raise ValueError(f"max_r2star must be > 0, got {max_r2star!r}")
    csf = mask & (r2star > 0) & (r2star < max_r2star)
    if erode_voxels > 0:
        csf = ndimage.binary_erosion(csf, iterations=int(erode_voxels))
    labels, n = ndimage.label(csf)
    if n == 0:
        return csf
    sizes = np.bincount(labels.ravel())
    keep = sizes >= int(min_voxels)
    keep[0] = False
    return keep[labels]
