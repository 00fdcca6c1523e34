"""Susceptibility-weighted imaging (SWI) and sliding minimum intensity projection (mIP).

Sign convention: in this package a paramagnetic source gives a positive local field and
phase = +2*pi*f*TE, so veins (deoxyhaemoglobin, paramagnetic) have **positive** high-pass
phase. The SWI phase mask therefore attenuates positive phase:

    f(phi) = 1             for phi <= 0
    f(phi) = 1 - phi / pi  for 0 < phi < pi
    f(phi) = 0             for phi >= pi

and ``swi = magnitude * f ** power`` (Haacke et al. 2004 use the mask on the side where veins
lie; with the opposite handedness convention that is the negative side).
"""

import numpy as np
from scipy import ndimage

from ._numerics import check_array, check_mask

__all__ = ["swi_phase_mask", "swi", "minimum_intensity_projection"]


def swi_phase_mask(phase):
    """SWI phase mask in [0, 1] that attenuates positive (paramagnetic) phase.

    Parameters
    ----------
    phase : array_like
        High-pass filtered (or background-removed) phase in radians.

    Returns
    -------
    ndarray, float32
        Mask of the same shape.

    Examples
    --------
    >>> swi_phase_mask([-1.0, 0.0, np.pi / 2, np.pi, 4.0]).tolist()
    [1.0, 1.0, 0.5, 0.0, 0.0]
    """
    phase = np.asarray(phase, dtype=np.float32)
    return np.clip(1.0 - np.maximum(phase, 0.0) / np.float32(np.pi), 0.0, 1.0).astype(
        np.float32)


def swi(magnitude, phase, power=4, mask=None):
    """Susceptibility-weighted image: magnitude times the phase mask to a power.

    Parameters
    ----------
    magnitude : array_like
        Magnitude image (any shape, arbitrary units), non-negative.
    phase : array_like
        High-pass filtered or background-removed phase (rad), same shape, positive for
        paramagnetic sources (see the module notes).
    power : int
        Number of multiplications by the phase mask (Haacke et al.: 4), >= 1.
    mask : array_like of bool, optional
        Voxels outside it are set to zero.

    Returns
    -------
    ndarray, float32
        SWI of the shape of ``magnitude``, in its units.

    Raises
    ------
    ValueError
        For mismatched shapes, non-finite or negative magnitude, or ``power < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> out = swi(np.ones(3), np.array([-0.5, 0.0, np.pi / 2]), power=2)
    >>> out.tolist()
    [1.0, 1.0, 0.25]

    References
    ----------
    Haacke EM, Xu Y, Cheng YCN, Reichenbach JR. Susceptibility weighted imaging (SWI).
    Magn Reson Med 2004;52:612-618.
    """
    magnitude = check_array(magnitude, "magnitude")
    phase = check_array(phase, "phase", shape=magnitude.shape, like="shape of magnitude")
    if np.any(magnitude < 0):
        raise ValueError("magnitude must be finite and non-negative")
    if isinstance(power, bool) or not float(power).is_integer() or power < 1:
        raise ValueError(f"power must be an integer >= 1, got {power!r}")
    out = magnitude * swi_phase_mask(phase) ** int(power)
    if mask is not None:
        mask = check_mask(mask, magnitude.shape, like="shape of magnitude", allow_empty=True)
        out = np.where(mask, out, np.float32(0))
    return out.astype(np.float32)


def minimum_intensity_projection(image, n_slices=8, axis=2, step=1):
    """Sliding-slab minimum intensity projection (mIP), as used to display SWI veins.

    Output slice ``k`` is the minimum of input slices ``k*step ... k*step + n_slices - 1``
    along ``axis`` (only complete slabs, so the axis shrinks to
    ``(n - n_slices) // step + 1``).

    Parameters
    ----------
    image : ndarray
        Image of any dimension (e.g. 3-D SWI).
    n_slices : int
        Slab thickness in slices, 1 <= n_slices <= image.shape[axis].
    axis : int
        Projection axis (default 2, the third voxel axis; axial for a typical axial scan).
    step : int
        Distance in slices between the starts of successive slabs (>= 1).

    Returns
    -------
    ndarray, float32

    Raises
    ------
    ValueError
        For a bad ``axis``, ``n_slices`` or ``step``.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[5.0, 3, 4, 1, 2]])
    >>> minimum_intensity_projection(a, n_slices=2, axis=1).tolist()
    [[3.0, 3.0, 1.0, 1.0]]
    """
    image = np.asarray(image)
    if image.ndim < 1 or image.dtype.kind not in "fiub":
        raise ValueError(f"image must be a real array, got dtype {image.dtype}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or \
            not -image.ndim <= axis < image.ndim:
        raise ValueError(f"axis must be an integer in [{-image.ndim}, {image.ndim}), got {axis!r}")
    axis = int(axis) % image.ndim
    n = image.shape[axis]
    if isinstance(n_slices, bool) or not isinstance(n_slices, (int, np.integer)) or \
            not 1 <= n_slices <= n:
        raise ValueError(f"n_slices must be an integer in [1, {n}], got {n_slices!r}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    n_slices = int(n_slices)
    filtered = ndimage.minimum_filter1d(image.astype(np.float32), n_slices, axis=axis,
                                        mode="nearest")
    # the filter is centred: window [i - n_slices//2, i + (n_slices-1)//2]; start at n_slices//2
    start = n_slices // 2
    index = [slice(None)] * image.ndim
    index[axis] = slice(start, start + n - n_slices + 1, int(step))
    return np.ascontiguousarray(filtered[tuple(index)])
