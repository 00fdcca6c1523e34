"""Local field shift (LFS) after Hammond et al. (2008).

The LFS is the local (unwrapped, background-removed) field expressed in ppm of B0, referenced
to a region: ``LFS = f_local / (gamma_bar * B0) - mean(reference)``. In this package's
convention a paramagnetic source (iron, deoxyhaemoglobin) gives a *positive* local field
(phase = +2*pi*f*TE), so iron-rich nuclei have positive LFS relative to the reference.
"""

import numpy as np

from ._numerics import check_field, check_mask
from .units import hz_to_ppm

__all__ = ["local_field_shift", "lfs_reference_value"]


def _check(local_field_hz, mask, b0_tesla, reference_mask):
    field, mask = check_field(local_field_hz, mask, "local_field_hz")
    if not np.isscalar(b0_tesla) or not np.isfinite(b0_tesla) or not b0_tesla > 0:
        raise ValueError(f"b0_tesla must be a positive number, got {b0_tesla!r}")
    if reference_mask is None:
        reference = mask
    else:
        reference = check_mask(reference_mask, field.shape, "reference_mask",
                               like="shape of local_field_hz", allow_empty=True) & mask
        if not reference.any():
            raise ValueError("reference_mask has no voxel inside mask")
    return field, mask, reference


def lfs_reference_value(local_field_hz, mask, b0_tesla, reference_mask=None):
    """Mean local field (ppm) over the reference region, the value `local_field_shift` subtracts.

    Parameters
    ----------
    local_field_hz : (X, Y, Z) array_like
        Background-removed local field (Hz).
    mask : (X, Y, Z) array_like, bool
        Brain mask (the output mask of background removal).
    b0_tesla : float
        Main field strength (T).
    reference_mask : (X, Y, Z) array_like, bool, optional
        Reference region (e.g. posterior limb of the internal capsule, as in Hammond et al.);
        only its voxels inside ``mask`` count. Default: the whole ``mask``.

    Returns
    -------
    float
        Reference value in ppm.

    Raises
    ------
    ValueError
        For arrays of mismatched shape, an empty ``mask`` or reference, or ``b0_tesla <= 0``.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.full((4, 4, 4), 127.732434, np.float32)  # 1 ppm at 3 T
    >>> round(lfs_reference_value(f, np.ones(f.shape, bool), 3.0), 4)
    1.0
    """
    field, _, reference = _check(local_field_hz, mask, b0_tesla, reference_mask)
    return float(hz_to_ppm(field[reference].astype(np.float64).mean(), b0_tesla))


def local_field_shift(local_field_hz, mask, b0_tesla, reference_mask=None):
    """Local field shift map in ppm, referenced to a region (Hammond et al. 2008).

    Parameters
    ----------
    local_field_hz : (X, Y, Z) array_like
        Unwrapped, background-removed local field (Hz), positive for paramagnetic sources.
    mask : (X, Y, Z) array_like, bool
        Brain mask (use the output mask of background removal).
    b0_tesla : float
        Main field strength (T).
    reference_mask : (X, Y, Z) array_like, bool, optional
        Reference region; its mean LFS is zero in the output. Default (None): the whole
        ``mask``, i.e. the map has zero whole-brain mean. The workflow's default reference is the
        posterior limb of the internal capsule (Hammond et al.); record the value with
        `lfs_reference_value`.

    Returns
    -------
    (X, Y, Z) ndarray, float32
        LFS in ppm, zero outside ``mask``.

    Raises
    ------
    ValueError
        As `lfs_reference_value`.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.zeros((4, 4, 4), np.float32); f[0] = 127.732434  # +1 ppm at 3 T in one slab
    >>> ref = np.zeros(f.shape, bool); ref[2:] = True
    >>> lfs = local_field_shift(f, np.ones(f.shape, bool), 3.0, reference_mask=ref)
    >>> round(float(lfs[0].mean()), 4), float(lfs[ref].mean())
    (1.0, 0.0)

    References
    ----------
    Hammond KE, Lupo JM, Xu D, Metcalf M, Kelley DAC, Pelletier D, Chang SM, Mukherjee P,
    Vigneron DB, Nelson SJ. Development of a robust method for generating 7.0 T multichannel
    phase images of the brain with application to normal volunteers and patients with
    neurodegenerative diseases. NeuroImage 2008;39:1682-1692.
    """
    field, mask, reference = _check(local_field_hz, mask, b0_tesla, reference_mask)
    ppm = hz_to_ppm(field.astype(np.float64), b0_tesla)
    ppm = ppm - ppm[reference].mean()
    return np.where(mask, ppm, 0.0).astype(np.float32)
