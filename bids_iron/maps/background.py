"""Background field removal: separate the field of sources inside the brain from the rest.

The total field measured inside the brain is the sum of the *local* field, made by the
susceptibility of the brain itself, and a *background* field made by sources outside the
mask (air-tissue interfaces, skull, shim residuals). Inside the mask the background field is
harmonic (its Laplacian is zero), which is what every method here exploits.

All functions are unit-agnostic and linear: the local field comes back in the units of the
input field (Hz, ppm, rad, ...). A constant over the mask is harmonic too, so the absolute
offset of the local field is not determined by the data; every method returns the local field
with **zero mean over its output mask** (reference it later, e.g. with
`bids_iron.maps.lfs.local_field_shift`).

Mask erosion (the second returned array):

========== =================================================================================
method     output mask
========== =================================================================================
vsharp     brain mask eroded by the *smallest* radius (voxels whose smallest ball fits in the
           mask); the default radii start at 8 mm, so about 8 mm are lost.
resharp    brain mask eroded by the (single) sphere radius (default 8 mm).
pdf        not eroded: the brain mask itself.
lbv        brain mask without its boundary layer (one voxel), and ``peel_mm`` if asked.
ismv       brain mask eroded by the SMV radius (default 3 mm, at least two voxels): about
           3 mm are lost.
========== =================================================================================

Default method and radii (measured, ``benchmarks/accuracy_phase_chain.py``, whole chain
with TV-ADMM on the qsm-forward head phantom: 3 T, SNR 100, air cavity, skull next to the
brain). The leakage of the skull's and the cavity's field into the first millimetres inside
the mask scales with distance, not with voxels, so the radii are set in mm:

====================================  =========  ==========  ===========  ==========
V-SHARP radii / RESHARP radius        grid       LFS r       chi slope    chi r
====================================  =========  ==========  ===========  ==========
V-SHARP 1 voxel..12 mm (common)       2 mm       0.50        0.73         0.56
V-SHARP 6..25 mm                      1 mm       0.91        0.81         0.70
V-SHARP 8..35 mm, step 3 (default)    2 mm       0.972       1.000        0.999
V-SHARP 8..35 mm, step 3 (default)    1 mm       0.976       0.991        0.999
V-SHARP 8..35 mm, step 3 (default)    2x2x3 mm   0.950       1.015        0.997
RESHARP 4 mm                          1 mm       0.91        0.84         0.87
RESHARP 8 mm (default)                1 mm       0.978       0.971        1.000
RESHARP 8 mm (default)                2 mm       0.972       0.974        0.999
====================================  =========  ==========  ===========  ==========

(12 nucleus ROIs of the first phantom, whose dentate nuclei lay outside the eroded mask.
With the later phantom -- midbrain, pons and cerebellum, dentate inside the mask, 14 ROIs --
the 2 mm figures are V-SHARP 0.973 / 0.937 / 0.979 and RESHARP 0.975 / 0.902 / 0.976; the
dentate, nearest to the mask edge, reads about 20 % low.)

V-SHARP was the default on that phantom (its chi slope closest to 1). On the realistic
whole-head phantom (``tests/realistic_head.py``: scalp, skull, sinuses, veins) it keeps only
two thirds of the brain, so the default is now PDF, chosen on the whole chain from raw phase
(``python benchmarks/accuracy_whole_head.py --voxel 1 1 1 --set background_method=M``: 1 mm,
SNR 100, TV-ADMM with its former penalties 0.1/0.3 and 40 iterations; "kept" is the
fraction of the TRUE brain in the output mask; chi NRMSE (%)
on the output mask, without its outer 2 mm ("inner"), and on V-SHARP's mask, which every
method covers ("common"); deep-GM slope and r of the 16 nucleus ROI means; LFS r):

=========  =======  =====  =====  ======  =====  =====  =====  ===================================
method     kept     NRMSE  inner  common  XSIM   slope  r      LFS r / nucleus bias CN PUT GP TH
                                                                PUL SN RN DN (%)
=========  =======  =====  =====  ======  =====  =====  =====  ===================================
vsharp     67.6 %   43.2   39.1   43.2    0.641  0.984  0.993  0.949 / +12 -6 -1 +10 +5 +6 +8 -2
resharp    67.6 %   45.6   42.0   45.6    0.640  0.925  0.992  0.947 / -8 -18 -9 -28 -13 -13 -24 -9
pdf        97.9 %   61.5   42.8   39.4    0.568  0.938  0.996  0.973 / +8 +9 +2 +22 +7 -3 -5 -2
lbv        94.3 %   59.3   61.1           0.422  0.985  0.994  0.823 / +44 +47 +18 +105 ...
ismv       85.9 %   56.5   56.5           0.590  0.954  0.994  0.980 / +5 +1 -3 -10 -3 -6 -12 0
=========  =======  =====  =====  ======  =====  =====  =====  ===================================

PDF keeps the whole brain (cortex, rim and all nuclei) and, where V-SHARP also has values,
is more accurate (NRMSE 39.4 vs 43.2 %, LFS r 0.973 vs 0.949); its whole-mask NRMSE is
dominated by the outer 2 mm, where the phantom's brain voxels share volume with bone
(truth chi down to -0.75 ppm) and the field of the skull is steepest. V-SHARP, RESHARP, LBV
and iSMV remain selectable.

iSMV radius and tolerance (measured, ``benchmarks/accuracy_inversion.py --part background``:
background removal alone from the true total field of the realistic 1 mm head, 1997716
brain voxels; NRMSE (%) of the local field on the method's own mask and on the common mask,
V-SHARP's, 69.4 % of the brain; r of the 16 nucleus ROI means; wall time on 2 shared cores,
noisy):

==========================  ======  ==========  ============  =====  ======  =====
method                      kept %  NRMSE kept  NRMSE common  r      time s  iter
==========================  ======  ==========  ============  =====  ======  =====
V-SHARP (default)           69.4    45.9        45.9          0.933  1.8
PDF                         100.0   82.2        33.4          0.975  12.4
LBV                         96.4    269.6       268.1         0.883  5.3
iSMV 2 mm, tol 1e-2         92.6    59.3        56.1          0.942  2.2
iSMV 2 mm, tol 5e-3         92.6    57.6        49.1          0.965  3.5     54
iSMV 2 mm, tol 3e-3         92.6    57.5        45.3          0.977  4.8     82
iSMV 3 mm, tol 1e-2         87.9    54.2        49.2          0.971  1.9
iSMV 3 mm, tol 7e-3         87.9    53.8        47.2          0.978  2.5
iSMV 3 mm, tol 5e-3 (dflt)  87.9    53.8        45.9          0.981  3.2     48
iSMV 3 mm, tol 3e-3         87.9    54.4        45.3          0.978  5.1
iSMV 3 mm, tol 1e-3         87.9    58.0        50.1          0.945  12.6    205
iSMV 4 mm, tol 5e-3         84.6    58.3        49.8          0.977  4.2
iSMV 4 mm, tol 3e-3         84.6    60.3        52.1          0.968  5.9
iSMV 5 mm, tol 5e-3         80.2    63.8        56.4          0.968  4.3     47
==========================  ======  ==========  ============  =====  ======  =====

iSMV's fixed point is a Laplace problem with the field held on a rim as thick as the ball,
like LBV's with a one-voxel rim; the slowest components of the local field converge last, so
a tighter ``tol`` moves the result towards LBV's (worse here: the phantom's skull staircase and
local sources next to the mask edge make the rim values wrong), a looser one leaves more
background. 3 mm and 5e-3 keep 88 % of the brain, match V-SHARP's error on its mask, and give
the best ROI r.

Computations run on the bounding box of the mask plus a margin, zero padded to FFT-friendly
sizes, with real-to-complex FFTs (``scipy.fft.rfftn``) in float32.

Every function returns a `BackgroundResult`: the local field and the output mask (it unpacks
as ``local, mask_out = remove_background(...)``), and for the iterative methods (RESHARP, PDF,
LBV: conjugate gradients; iSMV: fixed-point iterations) the iterations run and whether
they met their tolerance.
"""

from dataclasses import dataclass, field as _field

import numpy as np
import scipy.fft
from scipy import ndimage

from ._numerics import (axpy, blas_dot, bounding_box, check_field, check_max_iter,
                        check_positive, check_weights, check_workers, fft_box, half_spectrum_dot,
                        pcg, real_dot)
from .kernels import check_voxel_size, convolve, dipole_kernel, sphere_kernel

__all__ = [
    "BACKGROUND_METHODS",
    "BackgroundResult",
    "MaskVanishedError",
    "DEFAULT_BACKGROUND_METHOD",
    "remove_background",
    "remove_background_vsharp",
    "remove_background_resharp",
    "remove_background_pdf",
    "remove_background_lbv",
    "remove_background_ismv",
]


class MaskVanishedError(ValueError):
    """An SMV-based method's erosion left no voxel of the mask (a crop or slab too small)."""


@dataclass(eq=False)
class BackgroundResult:
    """Outcome of a background field removal.

    Unpacks like the pair it replaces: ``local_field, mask = remove_background(...)``.

    Attributes
    ----------
    local_field : ndarray, float32, shape (X, Y, Z)
        Local field in the units of the input field, zero outside ``mask``, zero mean inside.
    mask : ndarray of bool, shape (X, Y, Z)
        The method's output (possibly eroded) mask.
    method : str
        ``"vsharp"``, ``"resharp"``, ``"pdf"``, ``"lbv"`` or ``"ismv"``.
    n_iter : int
        Iterations run: conjugate gradients, or iSMV's fixed-point iterations (0 for V-SHARP,
        a direct method).
    converged : bool
        Whether the iterations met their tolerance within ``max_iter`` (True for V-SHARP).
    parameters : dict
        The parameters used (for the sidecar), including the FFT grid shape.

    Examples
    --------
    >>> r = BackgroundResult(np.zeros((2, 2, 2), np.float32), np.ones((2, 2, 2), bool), "pdf",
    ...                      n_iter=12, converged=True)
    >>> local, mask = r
    >>> local.shape, r.n_iter, r.converged
    ((2, 2, 2), 12, True)
    """

    local_field: np.ndarray
    mask: np.ndarray
    method: str
    n_iter: int = 0
    converged: bool = True
    parameters: dict = _field(default_factory=dict)

    def __iter__(self):
        """``(local_field, mask)``, so that the result unpacks as the former pair."""
        yield self.local_field
        yield self.mask


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _check_field_mask(field, mask, voxel_size):
    field, mask = check_field(field, mask)
    return field, mask, check_voxel_size(voxel_size)


def _ball_count(voxel_size, radius_mm):
    """Number of voxels in the ball used by `sphere_kernel` (same rule)."""
    half = [int(np.floor(radius_mm / d)) for d in voxel_size]
    offsets = [np.arange(-h, h + 1) * d for h, d in zip(half, voxel_size)]
    ox, oy, oz = np.meshgrid(*offsets, indexing="ij")
    return int(((ox ** 2 + oy ** 2 + oz ** 2) <= radius_mm ** 2 + 1e-9).sum())


def _sphere_spectrum(shape, voxel_size, radius_mm, workers):
    """``sphere_kernel(shape, voxel_size, radius_mm, rfft=True)``, bit for bit, but faster.

    The ball occupies a few rows of the grid, so the ``rfftn`` is pruned: the real FFT along
    the last axis runs on the ball's rows only, the FFT along axis 0 on its columns only, and
    only the last FFT (axis 1) covers the whole half-spectrum (the same 1-D transforms in the
    same order as ``scipy.fft.rfftn``, minus those of all-zero lines).
    """
    half = [int(np.floor(radius_mm / d)) for d in voxel_size]
    if any(2 * h + 1 > n for h, n in zip(half, shape)):  # the ball wraps onto itself
        return sphere_kernel(shape, voxel_size, radius_mm, rfft=True, workers=workers)
    offsets = [np.arange(-h, h + 1) * d for h, d in zip(half, voxel_size)]
    ox, oy, oz = np.meshgrid(*offsets, indexing="ij")
    ball = (ox ** 2 + oy ** 2 + oz ** 2) <= radius_mm ** 2 + 1e-9
    idx = [np.mod(np.arange(-h, h + 1), n) for h, n in zip(half, shape)]
    rows = np.zeros(ball.shape[:2] + (shape[2],), dtype=np.float32)
    rows[:, :, idx[2]] = (ball / ball.sum()).astype(np.float32)
    rows = scipy.fft.rfft(rows, axis=2, workers=workers)
    cols = np.zeros((shape[0], ball.shape[1], rows.shape[2]), dtype=rows.dtype)
    cols[idx[0]] = rows
    del rows
    cols = scipy.fft.fft(cols, axis=0, workers=workers, overwrite_x=True)
    spec = np.zeros((shape[0], shape[1], cols.shape[2]), dtype=cols.dtype)
    spec[:, idx[1]] = cols
    del cols
    spec = scipy.fft.fft(spec, axis=1, workers=workers, overwrite_x=True)
    return spec.real.astype(np.float32)


def _erode(mask_spectrum, kernel, shape, count, workers):
    """Voxels whose whole ball (kernel of ``count`` voxels) lies inside the mask."""
    smv = scipy.fft.irfftn(mask_spectrum * kernel, s=shape, workers=workers)
    return smv > 1.0 - 0.5 / count


def _check_radius(radius_mm, default_mm, voxel_size):
    """An SMV radius (mm; ``None``: ``default_mm``, at least two voxels) and its ball's count."""
    if radius_mm is None:
        radius_mm = max(default_mm, 2.0 * float(np.max(voxel_size)))
    if not np.isscalar(radius_mm) or not np.isfinite(radius_mm) or not radius_mm > 0:
        raise ValueError(f"radius_mm must be a positive number, got {radius_mm!r}")
    count = _ball_count(voxel_size, radius_mm)
    if count < 2:
        raise ValueError(f"radius_mm={radius_mm} is smaller than a voxel {tuple(voxel_size)}")
    return float(radius_mm), count


def _smv_erosion(mask, voxel_size, radius_mm, count, workers):
    """FFT box (margin: the radius plus 2 voxels), SMV spectrum, and the mask eroded by it.

    Raises `MaskVanishedError` if the erosion leaves nothing.
    """
    box = fft_box(mask, radius_mm / voxel_size + 2)
    s = _sphere_spectrum(box.shape, voxel_size, radius_mm, workers)
    eroded = _erode(scipy.fft.rfftn(box.to_grid(mask), workers=workers), s, box.shape, count,
                    workers)
    if not eroded.any():
        raise MaskVanishedError(f"mask vanishes after erosion by radius_mm={radius_mm}")
    return box, s, eroded


def _demean(local, mask):
    local = np.where(mask, local - local[mask].mean(dtype=np.float64), 0.0)
    return local.astype(np.float32)


#: Default V-SHARP radii (mm): smallest, largest, step (see the module docstring).
VSHARP_RADII_MM = (8.0, 35.0, 3.0)
#: Default RESHARP radius (mm).
RESHARP_RADIUS_MM = 8.0


def _default_radii(voxel_size):
    """From 8 mm up to 35 mm in steps of 3 mm (at least one largest voxel apart).

    8 mm: smaller balls leave the background leaking near the mask boundary, and those errors
    spread through a dipole inversion; 35 mm: larger balls keep more of the slowly varying
    local field (see the module docstring).
    """
    voxel = float(np.max(voxel_size))
    smallest, largest, step = VSHARP_RADII_MM
    smallest = max(smallest, voxel)
    step = max(step, voxel)
    return tuple(np.arange(smallest, max(largest, smallest) + 1e-6, step))


# --------------------------------------------------------------------------------------------
# V-SHARP
# --------------------------------------------------------------------------------------------

def remove_background_vsharp(field, mask, voxel_size, radii_mm=None, threshold=0.05,
                             workers=-1):
    """Remove the background field with V-SHARP (variable-radius SHARP).

    SHARP (Schweser et al. 2011) uses the spherical mean value (SMV) property of harmonic
    functions: the background field equals its mean over any ball inside the mask, so
    ``(delta - S_r) * field`` keeps only the local field (convolved with ``delta - S_r``) at the
    voxels whose ball of radius ``r`` fits in the mask. V-SHARP (Li et al. 2011; Wu et al. 2012)
    uses at each voxel the *largest* radius whose ball fits, which keeps the strong filtering
    of a large ball in the centre while losing only the smallest radius at the edge, and then
    undoes the high-pass with the *smallest* radius kernel by truncated inversion (TSVD):
    frequencies where ``|1 - S_rmin(k)| <= threshold`` are set to zero.

    Parameters
    ----------
    field : (X, Y, Z) array_like, float
        Total (unwrapped) field, in any unit (Hz, ppm, rad); values outside ``mask`` ignored.
    mask : (X, Y, Z) array_like, bool
        Brain mask.
    voxel_size : sequence of 3 float
        Voxel size in mm.
    radii_mm : sequence of float, optional
        Ball radii in mm (any order; at least one voxel besides the centre must fit in the
        smallest). Default: 8, 11, ..., 35 mm (`VSHARP_RADII_MM`; steps of at least one
        voxel).
    threshold : float
        TSVD truncation of the deconvolution, in (0, 1). Default 0.05.
    workers : int
        Threads for ``scipy.fft`` (-1: all CPUs).

    Returns
    -------
    BackgroundResult
        ``local_field``, (X, Y, Z) float32: local field, units of ``field``, zero outside the
        output mask and zero mean inside it; ``mask``, (X, Y, Z) bool: ``mask`` eroded by the
        smallest radius; ``n_iter`` 0 and ``converged`` True (a direct method). Unpacks as
        ``local_field, mask_eroded``.

    Raises
    ------
    ValueError
        For a non-3-D ``field``, a ``mask`` of another shape or empty, a bad ``voxel_size``,
        radii smaller than a voxel, a ``threshold`` outside (0, 1), or a mask that vanishes
        after erosion.

    Examples
    --------
    A background from a dipole outside a spherical mask is removed, a local source kept:

    >>> import numpy as np
    >>> from bids_iron.maps.kernels import dipole_kernel
    >>> shape = (48, 48, 48)
    >>> g = np.indices(shape) - 24.0
    >>> mask = (g ** 2).sum(0) < 18 ** 2
    >>> chi = np.zeros(shape, np.float32)
    >>> chi[20:24, 22:26, 20:26] = 1.0                                    # local source
    >>> chi_bg = np.zeros(shape, np.float32); chi_bg[22:26, 22:26, 2:5] = 50.0  # outside
    >>> d = dipole_kernel(shape, (1, 1, 1))
    >>> fld = lambda c: np.fft.ifftn(d * np.fft.fftn(c)).real
    >>> local, eroded = remove_background_vsharp(fld(chi + chi_bg), mask, (1, 1, 1))
    >>> truth = fld(chi)[eroded]
    >>> bool(np.corrcoef(local[eroded], truth)[0, 1] > 0.95)
    True

    References
    ----------
    Schweser F, Deistung A, Lehr BW, Reichenbach JR. Quantitative imaging of intrinsic
    magnetic tissue properties using MRI signal phase: an approach to in vivo brain iron
    metabolism? NeuroImage 2011;54:2789-2807.

    Li W, Wu B, Liu C. Quantitative susceptibility mapping of human brain reflects spatial
    variation in tissue composition. NeuroImage 2011;55:1645-1656.

    Wu B, Li W, Guidon A, Liu C. Whole brain susceptibility mapping using compressed sensing.
    Magn Reson Med 2012;67:137-147.
    """
    field, mask, voxel_size = _check_field_mask(field, mask, voxel_size)
    workers = check_workers(workers)
    if radii_mm is None:
        radii_mm = _default_radii(voxel_size)
    radii = np.atleast_1d(np.asarray(radii_mm, dtype=np.float64))
    if radii.ndim != 1 or radii.size == 0 or not np.all(np.isfinite(radii)) or \
            not np.all(radii > 0):
        raise ValueError(f"radii_mm must be positive numbers, got {radii_mm!r}")
    radii = np.unique(radii)  # ascending
    counts = [_ball_count(voxel_size, r) for r in radii]
    if counts[0] < 2:
        raise ValueError(f"radii_mm: the smallest radius {radii[0]} mm is smaller than a "
                         f"voxel {tuple(voxel_size)}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")

    # The SMV filtering needs a smaller box than the deconvolution: at a voxel whose ball
    # fits in the mask the ball lies inside the mask's bounding box, and a ball that pokes out
    # of the box wraps into the zero margin on the other side as long as the margin is at
    # least half the ball (so it is never taken for a fitting ball). Only the final TSVD
    # deconvolution, which is global, needs the full margin of the largest radius.
    box = fft_box(mask, radii[-1] / voxel_size + 2)
    inner = fft_box(mask, radii[-1] / (2.0 * voxel_size) + 2)
    shape = inner.shape
    f = inner.to_grid(field)
    f_spec = scipy.fft.rfftn(f, workers=workers)
    m_spec = scipy.fft.rfftn(inner.to_grid(mask), workers=workers)

    high_pass = np.zeros(shape, np.float32)
    mask_min = None
    r_max = None
    for r, count in zip(radii, counts):  # small to large: larger radii overwrite
        s = _sphere_spectrum(shape, voxel_size, r, workers)
        eroded = _erode(m_spec, s, shape, count, workers)
        if mask_min is None:
            mask_min = eroded
            if not eroded.any():
                raise MaskVanishedError("mask vanishes after erosion by the smallest radius "
                                 f"{radii[0]} mm")
        elif not eroded.any():
            break  # larger balls do not fit anywhere either
        r_max = r
        smv = scipy.fft.irfftn(f_spec * s, s=shape, workers=workers)
        np.copyto(high_pass, np.subtract(f, smv, out=smv), where=eroded)
        del smv, s
    del f_spec, m_spec, f
    high_pass = box.to_grid(inner.from_grid(high_pass))
    mask_min = box.to_grid(inner.from_grid(mask_min, dtype=bool), dtype=bool)
    shape = box.shape

    inverse = 1.0 - _sphere_spectrum(shape, voxel_size, r_max, workers)
    keep = np.abs(inverse) > threshold
    inverse = np.where(keep, 1.0 / np.where(keep, inverse, 1.0), 0.0).astype(np.float32)
    local = _demean(convolve(high_pass, inverse, workers), mask_min)
    params = {"radii_mm": [float(r) for r in radii], "largest_radius_used_mm": float(r_max),
              "threshold": float(threshold), "fft_shape": list(shape),
              "voxel_size": voxel_size.tolist()}
    return BackgroundResult(box.from_grid(local), box.from_grid(mask_min, dtype=bool), "vsharp",
                            parameters=params)


# --------------------------------------------------------------------------------------------
# RESHARP
# --------------------------------------------------------------------------------------------

def remove_background_resharp(field, mask, voxel_size, radius_mm=None, alpha=0.05, tol=1e-3,
                              max_iter=200, workers=-1):
    """Remove the background field with RESHARP (Tikhonov-regularised SHARP).

    Solves ``min_x || M_r C (x - field) ||^2 + alpha^2 ||x||^2`` with ``C = delta - S_r`` the
    SMV high-pass of radius ``r`` and ``M_r`` the mask eroded by ``r``, by conjugate gradients
    on the normal equations ``(C M_r C + alpha^2) x = C M_r C field`` (FFT convolutions). The
    local field is ``x`` on ``M_r``. Compared with the TSVD of SHARP, the penalty damps the
    low frequencies smoothly instead of cutting them, which avoids ringing and keeps more of
    the slowly varying local field.

    Parameters
    ----------
    field : (X, Y, Z) array_like, float
        Total field, any unit; values outside ``mask`` ignored.
    mask : (X, Y, Z) array_like, bool
        Brain mask.
    voxel_size : sequence of 3 float
        mm.
    radius_mm : float, optional
        SMV radius in mm. Default: `RESHARP_RADIUS_MM` (8 mm), at least two voxels.
    alpha : float
        Regularisation weight (dimensionless, > 0; the problem is scale invariant). Default 0.05.
    tol : float
        CG stops when the residual norm falls below ``tol`` times that of the right-hand side.
    max_iter : int
        Maximum CG iterations.
    workers : int
        Threads for ``scipy.fft``.

    Returns
    -------
    BackgroundResult
        ``local_field``, (X, Y, Z) float32: units of ``field``, zero outside the output mask,
        zero mean inside it; ``mask``, (X, Y, Z) bool: ``mask`` eroded by ``radius_mm``;
        ``n_iter`` and ``converged`` of CG. Unpacks as ``local_field, mask_eroded``.

    Raises
    ------
    ValueError
        For bad arrays, a radius smaller than a voxel, ``alpha``/``tol``/``max_iter`` out of
        range, or a mask that vanishes after erosion.

    Examples
    --------
    >>> import numpy as np
    >>> from bids_iron.maps.kernels import dipole_kernel
    >>> shape = (48, 48, 48)
    >>> g = np.indices(shape) - 24.0
    >>> mask = (g ** 2).sum(0) < 18 ** 2
    >>> chi = np.zeros(shape, np.float32)
    >>> chi[20:24, 22:26, 20:26] = 1.0
    >>> chi_bg = np.zeros(shape, np.float32); chi_bg[22:26, 22:26, 2:5] = 50.0
    >>> d = dipole_kernel(shape, (1, 1, 1))
    >>> fld = lambda c: np.fft.ifftn(d * np.fft.fftn(c)).real
    >>> local, eroded = remove_background_resharp(fld(chi + chi_bg), mask, (1, 1, 1))
    >>> bool(np.corrcoef(local[eroded], fld(chi)[eroded])[0, 1] > 0.95)
    True

    References
    ----------
    Sun H, Wilman AH. Background field removal using spherical mean value filtering and
    Tikhonov regularization. Magn Reson Med 2014;71:1151-1157.
    """
    field, mask, voxel_size = _check_field_mask(field, mask, voxel_size)
    workers = check_workers(workers)
    radius_mm, count = _check_radius(radius_mm, RESHARP_RADIUS_MM, voxel_size)
    alpha = check_positive("alpha", alpha)
    tol = check_positive("tol", tol, below=1)
    max_iter = check_max_iter(max_iter)

    box, s, eroded = _smv_erosion(mask, voxel_size, radius_mm, count, workers)
    shape = box.shape
    f = box.to_grid(field)
    c = (1.0 - s).astype(np.float32)
    del s

    # CG on the normal equations, run on the rfftn spectra of the vectors: C and alpha^2 are
    # diagonal there, so one operator application costs one inverse and one forward real FFT
    # (the mask in image space) instead of four; the iterates are the spectra of the
    # image-space CG iterates (Parseval inner products), so the iterations are the same.
    em = eroded.astype(np.float32)
    a2 = float(alpha) ** 2

    def normal(p_spec):
        y = scipy.fft.irfftn(p_spec * c, s=shape, workers=workers)
        y *= em
        y = scipy.fft.rfftn(y, workers=workers)
        y *= c
        return axpy(a2, p_spec, y)

    y = scipy.fft.rfftn(f, workers=workers)
    y *= c
    y = scipy.fft.irfftn(y, s=shape, workers=workers)
    y *= em
    rhs = scipy.fft.rfftn(y, workers=workers)
    rhs *= c
    del y, f
    cg = pcg(normal, rhs, tol=tol, max_iter=max_iter, dot=half_spectrum_dot(shape[-1]))
    del rhs
    x = scipy.fft.irfftn(cg.x, s=shape, workers=workers)
    cg.x = None  # free the spectrum
    local = _demean(x, eroded)
    params = {"radius_mm": float(radius_mm), "alpha": alpha, "tol": tol, "max_iter": max_iter,
              "fft_shape": list(shape), "voxel_size": voxel_size.tolist()}
    return BackgroundResult(box.from_grid(local), box.from_grid(eroded, dtype=bool), "resharp",
                            cg.n_iter, cg.converged, params)


# --------------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------------

def pdf_sources(f, m, data_w, kernel, voxel_size, *, tol, max_iter, shell_damp=0.0,
                shell_mm=0.0, workers=-1):
    """PDF's background sources on an FFT grid: ``x`` outside the mask ``m`` minimising
    ``||data_w^1/2 (f - D x)||^2`` in the mask (``+ shell_damp ||x||^2`` within ``shell_mm``
    mm of it), by conjugate gradients on the normal equations (`remove_background_pdf`, and
    the start of `bids_iron.maps.tfi`'s ADMM solver). ``data_w``: squared data weights, 0
    outside the mask; ``kernel``: the unit dipole kernel on the rfft half-spectrum. Returns
    the CG result (``x``, float32, zero inside the mask; ``n_iter``, ``converged``)."""
    outside = ~m

    def conv_d(x):
        return convolve(x, kernel, workers)

    shell = None
    if shell_damp and shell_mm:
        from scipy import ndimage
        dist = ndimage.distance_transform_edt(outside, sampling=voxel_size)
        shell = np.where((dist > 0) & (dist <= shell_mm), np.float32(shell_damp),
                         np.float32(0))
        del dist

    def normal(x):
        y = conv_d(x)
        y *= data_w
        y = conv_d(y)
        y *= outside
        if shell is not None:
            y += shell * x
        return y

    rhs = conv_d(data_w * f) * outside
    # blas_dot, not real_dot: see blas_dot (this CG's path is chaotic in float32)
    return pcg(normal, rhs.astype(np.float32), tol=tol, max_iter=max_iter, dot=blas_dot)


#: PDF's ``shell_damp`` (issue 16), measured and left at 0. Through the whole chain from raw
#: phase on the realistic head (``python benchmarks/accuracy_whole_head.py --voxel 1 1 1
#: --variants full --background-param shell_damp=3e-3``; from the true total field
#: ``benchmarks/accuracy_inversion.py --part total --total tv_admm --total-background pdf@x
#: --set pdf@x:shell_damp=...``): chi NRMSE % over the brain / without its outer 2 mm,
#: XSIM, deep-GM slope, LFS r, nucleus bias % CN PUT GP TH PUL SN RN DN, PDF CG iterations:
#:
#: ==========================  =============  =====  =====  =====  =====================  ====
#: PDF                         NRMSE / inner  XSIM   slope  LFS r  nucleus bias %         iter
#: ==========================  =============  =====  =====  =====  =====================  ====
#: 1 mm, plain (default)       61.4 / 39.9    0.571  0.943  0.973  +10 +7 +1 +10 +3 -1    22
#:                                                                 -3 -7
#: 1 mm, damp 3e-3 in 6 mm     51.6 / 36.9    0.603  0.948  0.966  +10 +3 +1 +12 +1 -2    57
#:                                                                 -2 -5
#: 1 mm, damp 1e-2 in 6 mm     51.1 / 37.3    0.591  0.942  0.971  +8 +4 +1 +14 +2 -2 -2
#:                                                                 -5
#: 1 mm, damp 3e-3, tol 1e-2   62.1 / 47.9    0.572  0.955  0.937                         25
#: 2 mm, plain                 74.1 / 49.5    0.530  0.916  0.951  +3 -1 +1 +22 +8 -3 -7  26
#:                                                                 -9
#: 2 mm, damp 3e-3             61.2 / 44.0    0.571  0.900  0.945  +9 -4 0 +21 +5 -5 -8   55
#:                                                                 -9
#: 2 mm oblique, plain / damp  76.8 / 57.2 /  0.504 /  0.900 /  0.978 /                   32 /
#:                             68.3 / 52.9    0.530  0.888  0.983                         64
#: 2 mm SNR 50, plain / damp   77.2 / 50.7 /  0.509 /  0.914 /  0.948 /                   27 /
#:                             62.1 / 44.6    0.565  0.901  0.945                         54
#: ==========================  =============  =====  =====  =====  =====================  ====
#:
#: From the TRUE total field, PDF alone (local-field NRMSE % over the brain / over V-SHARP's
#: mask, r of the 16 nucleus means): plain 82.0 / 33.4, 0.974; damp 3e-3 in 6 mm 52.3 /
#: 30.9, 0.971; in 8 mm 52.4 / 30.7, 0.965; in 3 mm (1e-2) 57.8 / 36.2; 1e-3 59.0 / 31.7;
#: 1e-2 48.4 / 31.3, 0.975; 3e-2 50.9 / 33.3; 0.1 61.9 / 35.5; then tv_admm: plain 89.8 /
#: 49.2 %, XSIM 0.502, slope 0.968, damped (1e-2) 54.6 / 45.6 %, 0.536, 0.960 with every
#: nucleus lower (thalamus -35 against -24 %). Damping gives the rim back to the brain
#: (whole-brain error -10 points, XSIM up) but costs 2-2.6x PDF's iterations and, at 2 mm,
#: deep-GM slope (0.900 against 0.916) and the LFS's r: not the default; the TFI solver's
#: start (`bids_iron.maps.tfi`) uses the same damping.
def remove_background_pdf(field, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0), weights=None,
                          tol=3e-3, max_iter=200, pad_mm=20.0, shell_damp=0.0, shell_mm=6.0,
                          workers=-1):
    """Remove the background field by projection onto dipole fields (PDF).

    The background field is modelled as the field of a susceptibility distribution ``x``
    that lives *outside* the mask. PDF finds the ``x`` whose field best matches the total field
    inside the mask, ``min_x || W M (field - D * ((1 - M) x)) ||^2``, by conjugate gradients on
    the normal equations (FFT convolutions with the unit dipole kernel ``D``), and subtracts
    that field. The field of a source inside the mask cannot be fitted by outside sources
    (the two sets of dipole fields are nearly orthogonal inside the mask), so it is kept.

    Parameters
    ----------
    field : (X, Y, Z) array_like, float
        Total field, any unit (``x`` is then in the same unit); values outside ``mask`` ignored.
    mask : (X, Y, Z) array_like, bool
        Brain mask.
    voxel_size : sequence of 3 float
        mm.
    b0_dir : sequence of 3 float
        B0 direction in voxel axes (see `bids_iron.maps.kernels.b0_direction_from_affine`).
    weights : (X, Y, Z) array_like, optional
        Non-negative data weights W inside the mask, e.g. the magnitude or the inverse noise
        standard deviation of the field. Default: uniform.
    tol : float
        CG stops when the residual norm falls below ``tol`` times that of the right-hand side
        (default 3e-3: at 1e-2, float32 rounding alone changed the result by 2 % between
        the same field given in ppm and in Hz; at 3e-3 the two agree and the local field is
        slightly closer to the truth).
    max_iter : int
        Maximum CG iterations.
    pad_mm : float
        Margin in mm added around the mask's bounding box, where background sources may be
        placed (besides the FOV outside the mask). Default 20 mm.
    shell_damp, shell_mm : float
        Tikhonov damping (dimensionless, against the normal operator of the unit dipole
        kernel on the unit-RMS field; at most 4/9) of the sources within ``shell_mm`` mm of
        the mask: ``+ shell_damp ||x||^2`` there. Sources right next to the mask can mimic
        the field of the brain's own outer voxels and low spatial frequencies; damping
        them leaves that field to the brain. Default 0 (plain PDF).
    workers : int
        Threads for ``scipy.fft``.

    Returns
    -------
    BackgroundResult
        ``local_field``, (X, Y, Z) float32: units of ``field``, zero outside ``mask``, zero
        mean inside it; ``mask``: the (not eroded) brain mask; ``n_iter`` and ``converged``
        of CG. Unpacks as ``local_field, mask_out``.

    Raises
    ------
    ValueError
        For bad arrays, a bad ``b0_dir``, negative or non-finite ``weights``, or
        ``tol``/``max_iter``/``pad_mm`` out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from bids_iron.maps.kernels import dipole_kernel
    >>> shape = (48, 48, 48)
    >>> g = np.indices(shape) - 24.0
    >>> mask = (g ** 2).sum(0) < 18 ** 2
    >>> chi = np.zeros(shape, np.float32)
    >>> chi[20:24, 22:26, 20:26] = 1.0
    >>> chi_bg = np.zeros(shape, np.float32); chi_bg[22:26, 22:26, 2:5] = 50.0
    >>> d = dipole_kernel(shape, (1, 1, 1))
    >>> fld = lambda c: np.fft.ifftn(d * np.fft.fftn(c)).real
    >>> local, m = remove_background_pdf(fld(chi + chi_bg), mask, (1, 1, 1))
    >>> bool(np.corrcoef(local[m], fld(chi)[m])[0, 1] > 0.95)
    True

    References
    ----------
    Liu T, Khalidov I, de Rochefort L, Spincemaille P, Liu J, Tsiouris AJ, Wang Y. A novel
    background field removal method for MRI using projection onto dipole fields (PDF).
    NMR Biomed 2011;24:1129-1136.
    """
    field, mask, voxel_size = _check_field_mask(field, mask, voxel_size)
    workers = check_workers(workers)
    b = np.asarray(b0_dir, dtype=np.float64)
    if b.shape != (3,) or not np.all(np.isfinite(b)) or not np.linalg.norm(b) > 0:
        raise ValueError(f"b0_dir must be a non-zero 3-vector, got {b0_dir!r}")
    w = check_weights(weights, mask, like="shape of field")
    tol = check_positive("tol", tol, below=1)
    max_iter = check_max_iter(max_iter)
    pad_mm = check_positive("pad_mm", pad_mm, allow_zero=True)
    shell_damp = check_positive("shell_damp", shell_damp, allow_zero=True)
    shell_mm = check_positive("shell_mm", shell_mm, allow_zero=True)

    box = fft_box(mask, pad_mm / voxel_size + 1)
    shape = box.shape
    params = {"b0_dir": b.tolist(), "weighted": weights is not None, "tol": tol,
              "max_iter": max_iter, "pad_mm": pad_mm, "fft_shape": list(shape),
              "voxel_size": voxel_size.tolist()}
    if shell_damp:
        params.update(shell_damp=shell_damp, shell_mm=shell_mm)
    m = box.to_grid(mask, dtype=bool)
    # Solve on the field divided by its RMS in the mask: CG's stopping rule then takes the
    # same path whatever the field's unit (Hz, ppm, rad), so the method stays linear.
    scale = float(np.sqrt(np.mean(np.square(field[mask], dtype=np.float64))))
    if not scale > 0:
        return BackgroundResult(np.zeros(mask.shape, np.float32), mask.copy(), "pdf",
                                parameters=params)
    f = box.to_grid(field) / np.float32(scale)
    data_w = box.to_grid(w * w)
    d = dipole_kernel(shape, voxel_size, b, rfft=True)
    cg = pdf_sources(f, m, data_w, d, voxel_size, tol=tol, max_iter=max_iter,
                     shell_damp=shell_damp, shell_mm=shell_mm, workers=workers)
    local = _demean((f - convolve(cg.x, d, workers)) * np.float32(scale), m)
    return BackgroundResult(box.from_grid(local), mask.copy(), "pdf", cg.n_iter, cg.converged,
                            params)


def remove_background_lbv(field, mask, voxel_size, tol=1e-3, max_iter=200, peel_mm=0.0,
                          workers=-1):
    """Background field removal by the Laplacian boundary value method (LBV).

    The background field is harmonic inside the brain, so it is the solution of Laplace's
    equation inside the mask that equals the measured field on the mask's boundary (the
    voxels of the mask with a 6-neighbour outside it); the local field is the measured field
    minus that solution. The discrete Laplace problem (7-point stencil in mm) is solved by
    conjugate gradients preconditioned with the fast sine-transform inverse of the Laplacian
    on the mask's bounding box. Only the boundary layer (one voxel) is lost, plus
    ``peel_mm`` if asked.

    Parameters
    ----------
    field : ndarray, shape (X, Y, Z)
        Total field (any unit; Hz or ppm), inside ``mask``.
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask.
    voxel_size : sequence of 3 float
        mm.
    tol : float
        Relative residual at which CG stops.
    max_iter : int
        Maximum CG iterations.
    peel_mm : float
        Extra erosion (mm) of the output mask (the layer next to the boundary carries the
        largest error when the boundary field is noisy).
    workers : int
        ``scipy.fft`` worker threads.

    Returns
    -------
    BackgroundResult
        ``local_field``, float32: in the units of ``field``, zero outside the output mask,
        zero mean inside; ``mask``: the mask without its boundary layer (and ``peel_mm``);
        ``n_iter`` and ``converged`` of CG. Unpacks as ``local_field, mask_out``.

    Raises
    ------
    ValueError
        On a wrong shape, type or value (the message names it).
    MaskVanishedError
        If nothing is left inside the boundary.

    References
    ----------
    Zhou D, Liu T, Spincemaille P, Wang Y. Background field removal by solving the Laplacian
    boundary value problem. NMR Biomed 2014;27:312-319.

    Examples
    --------
    A linear (harmonic) background plus a local bump inside a sphere:

    >>> import numpy as np
    >>> x, y, z = np.mgrid[:40, :40, :40] - 19.5
    >>> m = x**2 + y**2 + z**2 < 17**2
    >>> bump = np.exp(-(x**2 + y**2 + z**2) / 8.0)
    >>> local, m2 = remove_background_lbv(0.5 * x + 0.2 * z + bump, m, (1, 1, 1), tol=1e-5)
    >>> truth = np.where(m2, bump - bump[m2].mean(), 0)
    >>> bool(np.abs(local - truth)[m2].max() < 0.02), bool(m2.sum() > 0.8 * m.sum())
    (True, True)
    """
    field, mask, voxel_size = _check_field_mask(field, mask, voxel_size)
    tol = check_positive("tol", tol, below=1)
    max_iter = check_max_iter(max_iter)
    peel_mm = check_positive("peel_mm", peel_mm, allow_zero=True)
    workers = check_workers(workers)
    box = bounding_box(mask, 1)
    m = mask[box]
    inner = ndimage.binary_erosion(m, border_value=0)
    if not inner.any():
        raise MaskVanishedError("mask vanishes inside its boundary layer")
    f = field[box].astype(np.float32)
    h2 = (1.0 / np.asarray(voxel_size, np.float64) ** 2).astype(np.float32)

    def laplacian(x):
        out = np.zeros_like(x)
        for axis in range(3):
            lo_, mid, hi_ = ([slice(None)] * 3 for _ in range(3))
            lo_[axis], mid[axis], hi_[axis] = slice(None, -2), slice(1, -1), slice(2, None)
            out[tuple(mid)] += h2[axis] * (x[tuple(lo_)] + x[tuple(hi_)] - 2 * x[tuple(mid)])
        return out

    # -L x = L f_boundary on the interior; x is zero outside the interior
    boundary = np.where(m & ~inner, f, 0).astype(np.float32)
    rhs = np.where(inner, laplacian(boundary), 0).astype(np.float32)
    shape = m.shape
    eig = np.zeros(shape, np.float32)
    for axis, n in enumerate(shape):
        k = np.arange(1, n + 1)
        lam = (2 - 2 * np.cos(np.pi * k / (n + 1))) * h2[axis]
        eig += lam.reshape([-1 if a == axis else 1 for a in range(3)]).astype(np.float32)

    def apply_a(x):
        return np.where(inner, -laplacian(x), 0).astype(np.float32)

    def precond(r):
        y = scipy.fft.idstn(scipy.fft.dstn(r, type=1, workers=workers) / eig, type=1,
                            workers=workers)
        return np.where(inner, y, 0).astype(np.float32)

    cg = pcg(apply_a, rhs, tol=tol, max_iter=max_iter, dot=real_dot, precond=precond)
    keep = inner
    if peel_mm > 0:
        keep = ndimage.distance_transform_edt(inner, sampling=voxel_size) > peel_mm
        if not keep.any():
            raise MaskVanishedError(f"mask vanishes after peeling {peel_mm} mm")
    local = np.zeros(mask.shape, np.float32)
    mask_out = np.zeros(mask.shape, bool)
    local[box] = np.where(keep, f - cg.x, 0)
    mask_out[box] = keep
    params = {"tol": tol, "max_iter": max_iter, "peel_mm": peel_mm, "box_shape": list(shape),
              "voxel_size": voxel_size.tolist()}
    return BackgroundResult(_demean(local, mask_out), mask_out, "lbv", cg.n_iter, cg.converged,
                            params)


# --------------------------------------------------------------------------------------------
# iSMV
# --------------------------------------------------------------------------------------------

#: Default iSMV radius (mm) and tolerance (see the module docstring).
ISMV_RADIUS_MM = 3.0
ISMV_TOL = 5e-3
#: Change of the background, relative to the field (de-meaned) on the eroded mask, that
#: counts as float32 rounding (iSMV stops there even when the local field is nil).
_ISMV_ROUNDING = 1e-6


def remove_background_ismv(field, mask, voxel_size, radius_mm=None, tol=ISMV_TOL, max_iter=500,
                           workers=-1):
    """Remove the background field with the iterative spherical mean value method (iSMV).

    The background field is harmonic inside the brain, so it equals its own spherical mean
    value (SMV) over every ball inside the mask. iSMV erodes the mask by the ball radius and
    finds the background as the fixed point of ``b <- M_e S b + (M - M_e) field``: each
    iteration replaces ``b`` by its SMV ``S b`` inside the eroded mask ``M_e`` and holds it to
    the measured field on the rim ``M - M_e`` (the boundary values). It starts from
    ``b = field``; the local field is ``field - b`` on the eroded mask. The iterations stop
    when the change of ``b`` falls below ``tol`` times the norm of the local field (both on
    the eroded mask; the rule is independent of the field's unit and offset). The high
    frequencies of the local field leave ``b`` in the first iterations and the slowest ones
    only after thousands, so ``tol`` also sets how much of the slowly varying local field
    is kept (see the module docstring for the measured choice).

    Parameters
    ----------
    field : (X, Y, Z) array_like, float
        Total (unwrapped) field in any unit (Hz, ppm, rad); only its values inside ``mask``
        are used.
    mask : (X, Y, Z) array_like, bool
        Brain mask; its rim, ``radius_mm`` thick, holds the boundary values.
    voxel_size : sequence of 3 float
        Voxel size (mm).
    radius_mm : float, optional
        SMV radius in mm, also the erosion of the output mask. Default: `ISMV_RADIUS_MM`
        (3 mm), at least two voxels.
    tol : float
        Stop when ``||b_new - b_old|| <= tol * ||field - b_new||`` on the eroded mask, in
        (0, 1). Default `ISMV_TOL`.
    max_iter : int
        Maximum iterations (each one real FFT and one inverse). Default 500.
    workers : int
        ``scipy.fft`` worker threads (-1: every CPU).

    Returns
    -------
    BackgroundResult
        ``local_field`` (X, Y, Z) float32 in the units of ``field``, zero mean on the output
        mask and zero off it; ``mask`` (X, Y, Z) bool, ``mask`` eroded by ``radius_mm``;
        ``n_iter``; ``converged``, whether ``tol`` was met within ``max_iter``. Unpacks as
        ``local_field, mask_eroded``.

    Raises
    ------
    ValueError
        For bad arrays, a radius smaller than a voxel, or ``tol``/``max_iter``/``workers`` out
        of range.
    MaskVanishedError
        If the mask vanishes after erosion by ``radius_mm``.

    Examples
    --------
    A saddle-shaped and a linear background (both harmonic) around a local source in an
    ellipsoid:

    >>> import numpy as np
    >>> x, y, z = np.indices((36, 40, 32)) - np.array([17.5, 19.5, 15.5]).reshape(3, 1, 1, 1)
    >>> brain = (x / 15) ** 2 + (y / 17) ** 2 + (z / 13) ** 2 < 1
    >>> source = np.exp(-((x - 3) ** 2 + y ** 2 + (z + 2) ** 2) / 6.0)
    >>> res = remove_background_ismv(x * y / 20 - 0.3 * z + source, brain, (1, 1, 1))
    >>> res.method, res.converged, bool(res.mask.sum() < brain.sum())
    ('ismv', True, True)
    >>> truth = source - source[res.mask].mean()
    >>> bool(np.abs(res.local_field - truth)[res.mask].max() < 0.02)
    True

    References
    ----------
    Wen Y, Zhou D, Liu T, Spincemaille P, Wang Y. An iterative spherical mean value method for
    background field removal in MRI. Magn Reson Med 2014;72:1065-1071.
    """
    field, mask, voxel_size = _check_field_mask(field, mask, voxel_size)
    workers = check_workers(workers)
    radius_mm, count = _check_radius(radius_mm, ISMV_RADIUS_MM, voxel_size)
    tol = check_positive("tol", tol, below=1)
    max_iter = check_max_iter(max_iter)

    box, s, eroded = _smv_erosion(mask, voxel_size, radius_mm, count, workers)
    shape = box.shape
    # A constant is harmonic: without the field's mean the result is the same, and the
    # float32 rounding relative to the local field smaller.
    f = box.to_grid(_demean(field, mask))
    rim = np.where(eroded, np.float32(0), f)  # f is zero outside the mask
    em = eroded.astype(np.float32)
    b = f * em  # rounding floor, so that a field without local part (harmonic) stops too
    floor = (_ISMV_ROUNDING ** 2) * real_dot(b, b)
    b = f.copy()
    converged = False
    n_iter = 0
    while n_iter < max_iter and not converged:
        n_iter += 1
        new = convolve(b, s, workers)
        new *= em
        new += rim
        b -= new  # the change (zero off the eroded mask: the rim and the outside are fixed)
        change = real_dot(b, b)
        b = np.subtract(f, new, out=b)
        b *= em  # the local field estimate
        converged = change <= max(tol * tol * real_dot(b, b), floor)
        b = new
    local = _demean(f - b, eroded)
    params = {"radius_mm": radius_mm, "tol": tol, "max_iter": max_iter,
              "fft_shape": list(shape), "voxel_size": voxel_size.tolist()}
    return BackgroundResult(box.from_grid(local), box.from_grid(eroded, dtype=bool), "ismv",
                            n_iter, bool(converged), params)


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------


#: Default background removal method (chosen by end-to-end accuracy on the realistic whole
#: head, see the module docstring's table: keeps 98 % of the brain, best accuracy where
#: V-SHARP also has values).
DEFAULT_BACKGROUND_METHOD = "pdf"


def remove_background(field, mask, voxel_size, method=DEFAULT_BACKGROUND_METHOD, **options):
    """Remove the background field with the named method (see `BACKGROUND_METHODS`).

    ``options`` go to the method's function (e.g. ``b0_dir=`` for ``"pdf"``; V-SHARP and
    RESHARP do not need the B0 direction and ignore ``b0_dir``).

    Returns
    -------
    BackgroundResult
        ``local_field`` (float32, units of ``field``), ``mask`` (the method's output, possibly
        eroded, mask), ``method``, ``n_iter``, ``converged``, ``parameters``; unpacks as
        ``local_field, mask_out``.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((40, 40, 40), bool); m[4:36, 4:36, 4:36] = True
    >>> local, m2 = remove_background(np.zeros(m.shape), m, (1, 1, 1), method="vsharp")
    >>> bool(m2.sum() < m.sum()), float(np.abs(local).max())
    (True, 0.0)
    >>> res = remove_background(np.zeros(m.shape), m, (1, 1, 1), method="lbv")
    >>> res.method, res.converged
    ('lbv', True)
    """
    from . import registry

    record = registry.get("background", method)
    if "b0_dir" not in record.needs:
        options.pop("b0_dir", None)
    return record.function(field, mask, voxel_size, **options)


def __getattr__(name):
    """``BACKGROUND_METHODS``: the registry's background methods, name -> function
    (`bids_iron.maps.registry`)."""
    if name == "BACKGROUND_METHODS":
        from . import registry

        return {m.name: m.function for m in registry.methods("background")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
