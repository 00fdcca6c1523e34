"""The numerical core shared by the physics modules of `bids_iron.maps` (private).

One implementation of each piece that background removal, dipole inversion, unwrapping,
echo combination, LFS, R2* and SWI need:

* argument checks: `check_mask` (THE mask policy), `check_array`, `check_field` (an image
  with its mask), `check_weights`, `check_max_iter`, `check_positive`, `check_workers`;
* phase arithmetic: `TWO_PI`, `wrap_to_pi` (re-exported by `bids_iron.maps.phase`);
* FFT grids: `bounding_box`, `fft_box` / `FFTBox` (zero padding to fast sizes with
  ``scipy.fft.next_fast_len``);
* inner products accurate to about float64 on float32 data: `real_dot`,
  `half_spectrum_inner` / `half_spectrum_dot` (Parseval on ``rfftn`` half-spectra),
  `half_spectrum_mean` (and `blas_dot`, the plain float32 dot PDF keeps);
* the preconditioned conjugate gradient solver `pcg`, which reports its convergence
  (`CGResult`).

Mask policy (`check_mask`), the same for every function of `bids_iron.maps`: a mask is a
boolean array, or a numeric (integer or float) array whose values are only 0 and 1, of
exactly the shape of the image it belongs to. Anything else (a value such as 2, 0.5 or NaN;
a complex, string or object array) raises `ValueError` naming the argument; a shape mismatch
raises `ValueError` naming both shapes. A function that needs at least one voxel also
raises ``"<name> is empty"``. Masks are never binarised silently.

Everything is pure (arrays in, arrays out) and float32 unless stated.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.fft

__all__ = [
    "TWO_PI",
    "CGResult",
    "FFTBox",
    "axpy",
    "blas_dot",
    "bounding_box",
    "check_array",
    "check_field",
    "check_mask",
    "check_max_iter",
    "check_positive",
    "check_weights",
    "check_workers",
    "fft_box",
    "half_spectrum_dot",
    "half_spectrum_inner",
    "half_spectrum_mean",
    "pcg",
    "real_dot",
    "wrap_to_pi",
]

#: 2 pi (rad), float64.
TWO_PI = 2.0 * np.pi


# --------------------------------------------------------------------------------------------
# phase arithmetic
# --------------------------------------------------------------------------------------------

def wrap_to_pi(phase):
    """Wrap angles (rad) to [-pi, pi) as float32 (computed in float64).

    Parameters
    ----------
    phase : array_like
        Angles in radians, any shape and real dtype.

    Returns
    -------
    ndarray, float32
        ``phase`` minus the multiple of 2 pi that brings it into [-pi, pi) (rad).

    Examples
    --------
    >>> bool(wrap_to_pi(np.array(3 * np.pi / 2)) == np.float32(-np.pi / 2))
    True
    >>> wrap_to_pi([np.pi, -np.pi]).tolist() == [np.float32(-np.pi)] * 2
    True
    """
    phase = np.asarray(phase, dtype=np.float64)
    out = np.asarray(phase - TWO_PI * np.floor((phase + np.pi) / TWO_PI), dtype=np.float32)
    return np.where(out >= np.float32(np.pi), np.float32(-np.pi), out).astype(np.float32)


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------

def check_mask(mask, shape, name="mask", *, like="shape", allow_empty=False):
    """Validate a mask and return it as a boolean array (the one mask policy of the package).

    Accepted: a boolean array, or an integer or float array whose values are only 0 and 1,
    of exactly ``shape``. Nothing is binarised silently.

    Parameters
    ----------
    mask : array_like
        The mask to check.
    shape : tuple of int
        The shape it must have (any number of dimensions).
    name : str
        The argument's name, used in error messages.
    like : str
        What ``shape`` is, for the shape error (``"mask must have the {like} {shape}, got
        {mask.shape}"``), e.g. ``"shape of field"``.
    allow_empty : bool
        If False (default), a mask without any True voxel raises ``"<name> is empty"``.

    Returns
    -------
    ndarray of bool
        The mask (no copy for a boolean array).

    Raises
    ------
    ValueError
        Naming ``name``: a dtype other than bool, integer or float; a value other than 0 and
        1 (e.g. 2, 0.5, NaN); a shape other than ``shape`` (both shapes named); or, unless
        ``allow_empty``, no True voxel.

    Examples
    --------
    >>> check_mask(np.array([[0, 1]]), (1, 2)).tolist()
    [[False, True]]
    >>> check_mask(np.array([0, 2]), (2,), name="reference_mask")
    Traceback (most recent call last):
    ...
    ValueError: reference_mask must be boolean or contain only 0 and 1, got the value 2
    >>> check_mask(np.ones(3, bool), (4,), like="shape of field")
    Traceback (most recent call last):
    ...
    ValueError: mask must have the shape of field (4,), got (3,)
    """
    m = np.asarray(mask)
    shape = tuple(int(n) for n in shape)
    if m.dtype != bool and m.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a boolean array (or a numeric one of 0 and 1), "
                         f"got dtype {m.dtype}")
    if m.shape != shape:
        raise ValueError(f"{name} must have the {like} {shape}, got {m.shape}")
    if m.dtype != bool:
        bad = (m != 0) & (m != 1)
        if bad.any():
            raise ValueError(f"{name} must be boolean or contain only 0 and 1, got the value "
                             f"{float(m[bad].flat[0]):g}")
        m = m.astype(bool)
    if not allow_empty and not m.any():
        raise ValueError(f"{name} is empty")
    return m


def check_array(array, name, *, ndim=None, shape=None, like="shape", finite=True, where=None,
                dtype=np.float32):
    """Validate a real numeric array and return it as ``dtype``.

    Parameters
    ----------
    array : array_like
        The array (bool, integer or float).
    name : str
        The argument's name, used in error messages.
    ndim : int or tuple of int, optional
        Allowed number(s) of dimensions.
    shape : tuple of int, optional
        Required shape (checked after ``ndim``).
    like : str
        What ``shape`` is, for the shape error (as in `check_mask`).
    finite : bool
        Require finite values (inside ``where`` if given, else everywhere).
    where : ndarray of bool, optional
        Where the values must be finite (e.g. the brain mask); the shape of ``array``.
    dtype : numpy dtype or None
        Output dtype (no copy if it already has it); None keeps the input's.

    Returns
    -------
    ndarray
        ``array`` as ``dtype``.

    Raises
    ------
    ValueError
        Naming ``name``: complex or non-numeric dtype, wrong dimensions or shape, or
        non-finite values where they must be finite.

    Examples
    --------
    >>> check_array([[1, 2]], "field", ndim=2).dtype.name
    'float32'
    >>> check_array([np.nan, 1.0], "field", where=np.array([False, True])).tolist()[1]
    1.0
    >>> check_array(np.zeros(4), "field", ndim=3)
    Traceback (most recent call last):
    ...
    ValueError: field must be a real 3-D array, got shape (4,) dtype float64
    """
    a = np.asarray(array)
    ndims = (ndim,) if isinstance(ndim, (int, np.integer)) else ndim
    if a.dtype.kind not in "biuf" or (ndims is not None and a.ndim not in ndims):
        what = "" if ndims is None else " or ".join(f"{n}-D" for n in ndims) + " "
        raise ValueError(f"{name} must be a real {what}array, got shape {a.shape} "
                         f"dtype {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name} must have the {like} {tuple(shape)}, got {a.shape}")
    if dtype is not None:
        a = a.astype(dtype, copy=False)
    if finite:
        values = a if where is None else a[where]
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} has non-finite values"
                             + ("" if where is None else " inside the mask"))
    return a


def check_field(field, mask, name="field", mask_name="mask"):
    """A real 3-D image with its (non-empty) mask, as used by every field-domain function.

    Parameters
    ----------
    field : array_like, shape (X, Y, Z)
        Real image (Hz, ppm, rad, ...); must be finite inside the mask, ignored outside it.
    mask : array_like, shape (X, Y, Z)
        Mask under the policy of `check_mask`; must not be empty.
    name, mask_name : str
        The arguments' names, for the error messages.

    Returns
    -------
    field : ndarray, float32
        ``field`` inside the mask, 0 outside it.
    mask : ndarray of bool

    Raises
    ------
    ValueError
        As `check_array` and `check_mask`, naming the argument.

    Examples
    --------
    >>> f, m = check_field([[[np.nan, 2.0]]], [[[0, 1]]])
    >>> f.tolist(), m.tolist()
    ([[[0.0, 2.0]]], [[[False, True]]])
    """
    f = check_array(field, name, ndim=3, finite=False)
    m = check_mask(mask, f.shape, mask_name, like=f"shape of {name}")
    f = np.where(m, f, np.float32(0))
    if not np.isfinite(f).all():
        raise ValueError(f"{name} has non-finite values inside the mask")
    return f, m


def check_noise_sd(noise_sd, mask, like, dtype=np.float32):
    """The field's noise standard deviation: a scalar or an array of the mask's shape,
    finite and >= 0 inside ``mask``.

    Parameters
    ----------
    noise_sd : float or array_like
        Noise SD (any unit, e.g. ppm); a scalar applies to every voxel.
    mask : ndarray of bool
        Checked mask (`check_mask`).
    like : str
        What the required shape is, for the shape error.
    dtype : numpy dtype
        Output dtype.

    Returns
    -------
    ndarray
        ``noise_sd`` as ``dtype`` and of the mask's shape (a read-only broadcast for a
        scalar).

    Raises
    ------
    ValueError
        Naming ``noise_sd``: not a real scalar or array, a wrong shape, or non-finite or
        negative values inside the mask.

    Examples
    --------
    >>> m = np.array([True, True, False])
    >>> check_noise_sd(0.5, m, "shape of the field").tolist()
    [0.5, 0.5, 0.5]
    >>> check_noise_sd([0.1, -1.0, 0.0], m, "shape of the field")
    Traceback (most recent call last):
    ...
    ValueError: noise_sd must be finite and >= 0 inside the mask
    """
    sd = np.asarray(noise_sd)
    if sd.ndim == 0:
        sd = np.broadcast_to(sd, mask.shape)
    sd = check_array(sd, "noise_sd", shape=mask.shape, like=like, finite=False, dtype=dtype)
    inside = sd[mask]
    if not np.all(np.isfinite(inside)) or np.any(inside < 0):
        raise ValueError("noise_sd must be finite and >= 0 inside the mask")
    return sd


def check_weights(weights, mask, name="weights", like="shape of the field"):
    """Data weights: finite and non-negative inside ``mask``, normalised to mean 1 there.

    Parameters
    ----------
    weights : array_like or None
        Weights (e.g. magnitude or 1 / noise SD), the shape of ``mask``; None: uniform.
    mask : ndarray of bool
        Checked mask (`check_mask`).
    name : str
        The argument's name, for the error messages.
    like : str
        What the required shape is, for the shape error.

    Returns
    -------
    ndarray, float32
        Weights of mean 1 inside ``mask``, 0 outside it (the mask itself for None).

    Raises
    ------
    ValueError
        Naming ``name``: wrong shape, non-finite or negative values in the mask, or zero
        everywhere in the mask.

    Examples
    --------
    >>> check_weights(np.array([2.0, 6.0, 9.0]), np.array([True, True, False])).tolist()
    [0.5, 1.5, 0.0]
    """
    if weights is None:
        return mask.astype(np.float32)
    w = check_array(weights, name, shape=mask.shape, like=like, where=mask)
    w = np.where(mask, w, np.float32(0))
    if np.any(w < 0):
        raise ValueError(f"{name} must be finite and non-negative inside the mask")
    mean = float(w[mask].mean(dtype=np.float64))
    if not mean > 0:
        raise ValueError(f"{name} is zero everywhere inside the mask")
    return w / np.float32(mean)


def check_max_iter(max_iter, name="max_iter"):
    """An iteration limit: an integer >= 1 (not a bool, not a float), as int.

    Examples
    --------
    >>> check_max_iter(np.int64(5))
    5
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) \
            or max_iter < 1:
        raise ValueError(f"{name} must be a positive integer, got {max_iter!r}")
    return int(max_iter)


def check_positive(name, value, allow_zero=False, below=None):
    """A finite real number > 0 (>= 0 with ``allow_zero``; < ``below`` if given), as float.

    Examples
    --------
    >>> check_positive("tol", 1e-3, below=1)
    0.001
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if ok and below is not None:
        ok = value < below
    if not ok:
        text = "non-negative" if allow_zero else "positive"
        bound = "" if below is None else f" below {below:g}"
        raise ValueError(f"{name} must be a {text} number{bound}, got {value!r}")
    return float(value)


def check_workers(workers):
    """``scipy.fft`` worker threads: a non-zero integer (-1: all CPUs), as int.

    Examples
    --------
    >>> check_workers(-1)
    -1
    """
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers == 0:
        raise ValueError(f"workers must be a non-zero integer, got {workers!r}")
    return int(workers)


# --------------------------------------------------------------------------------------------
# FFT grids
# --------------------------------------------------------------------------------------------

def _extent(mask, axis):
    """First and one-past-last index along ``axis`` where ``mask`` has a True voxel."""
    other = tuple(a for a in range(mask.ndim) if a != axis)
    idx = np.flatnonzero(mask.any(axis=other))
    return int(idx[0]), int(idx[-1]) + 1


def bounding_box(mask, margin=0):
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels, clipped to the array.

    Parameters
    ----------
    mask : ndarray of bool
        Any number of dimensions.
    margin : int or sequence of int
        Voxels added on each side (per axis if a sequence).

    Returns
    -------
    tuple of slice
        One per axis; the whole array for an empty mask.

    Examples
    --------
    >>> m = np.zeros((6, 6), bool); m[2:4, 3] = True
    >>> bounding_box(m, 1)
    (slice(1, 5, None), slice(2, 5, None))
    """
    if not mask.any():
        return tuple(slice(None) for _ in range(mask.ndim))
    margin = np.broadcast_to(np.asarray(margin, dtype=np.int64), (mask.ndim,))
    box = []
    for axis, n in enumerate(mask.shape):
        lo, hi = _extent(mask, axis)
        box.append(slice(max(lo - int(margin[axis]), 0), min(hi + int(margin[axis]), n)))
    return tuple(box)


class FFTBox:
    """A region of an image placed in a zero-padded FFT grid, and the way back.

    Attributes
    ----------
    full_shape : tuple of int
        Shape of the image.
    src : tuple of slice
        The region of the image that is kept.
    shape : tuple of int
        Shape of the FFT grid (fast sizes).
    dst : tuple of slice
        Where the region lies in the grid.

    Build it with `fft_box`.
    """

    def __init__(self, full_shape, src, shape, dst):
        self.full_shape = tuple(full_shape)
        self.src = tuple(src)
        self.shape = tuple(shape)
        self.dst = tuple(dst)

    def to_grid(self, array, dtype=np.float32):
        """The region of ``array`` (image shape) in a new zero grid of ``dtype``."""
        out = np.zeros(self.shape, dtype=dtype)
        out[self.dst] = array[self.src]
        return out

    def from_grid(self, array, dtype=np.float32):
        """The region of a grid ``array`` back in a new zero image of ``dtype``."""
        out = np.zeros(self.full_shape, dtype=dtype)
        out[self.src] = array[self.dst]
        return out


def fft_box(mask, margin, crop=True, real=True):
    """FFT grid around a mask, zero padded to fast sizes (`scipy.fft.next_fast_len`).

    Parameters
    ----------
    mask : ndarray of bool, 3-D
        Non-empty mask.
    margin : float or sequence of 3 float
        Zero margin in voxels (rounded up) on each side of the mask's bounding box, per axis
        if a sequence: the grid keeps at least ``2 * margin`` zero voxels between the mask
        and its periodic copy.
    crop : bool
        True: the grid holds the bounding box only, at offset ``margin``; its length is
        ``extent + 2 * margin`` rounded up. False: the grid holds the whole image at offset 0
        and its length is ``max(n, extent + 2 * margin)`` rounded up (it grows only where
        the field of view is too tight).
    real : bool
        Fast sizes for real FFTs (``next_fast_len(..., real=True)``) or complex ones.

    Returns
    -------
    FFTBox

    Examples
    --------
    >>> m = np.zeros((40, 30, 20), bool); m[10:20, 5:25, 2:18] = True
    >>> box = fft_box(m, 3)
    >>> box.shape, box.dst[0]
    ((16, 27, 24), slice(3, 13, None))
    >>> x = np.arange(m.size, dtype=np.float32).reshape(m.shape) * m
    >>> bool(np.array_equal(box.from_grid(box.to_grid(x)), x))
    True
    >>> fft_box(m, 3, crop=False).shape
    (40, 30, 24)
    """
    margin = np.broadcast_to(np.asarray(margin, dtype=np.float64), (mask.ndim,))
    src, shape, dst = [], [], []
    for axis, n in enumerate(mask.shape):
        lo, hi = _extent(mask, axis)
        pad = int(np.ceil(margin[axis]))
        if crop:
            src.append(slice(lo, hi))
            shape.append(scipy.fft.next_fast_len(hi - lo + 2 * pad, real=real))
            dst.append(slice(pad, pad + hi - lo))
        else:
            src.append(slice(0, n))
            shape.append(scipy.fft.next_fast_len(max(int(n), hi - lo + 2 * pad), real=real))
            dst.append(slice(0, n))
    return FFTBox(mask.shape, src, shape, dst)


# --------------------------------------------------------------------------------------------
# accurate inner products
# --------------------------------------------------------------------------------------------

_DOT_ROW = 64


def real_dot(u, v):
    """``Re <u, v>`` of float32 or complex64 arrays, accurate to about float64.

    One float32 BLAS dot over millions of voxels loses digits (relative error about 1e-5 at
    1e7 values) that CG needs: its iteration count and result drift. Here the products are
    summed in float32 over rows of 64 values only and the row sums in float64, so the error
    stays at the rounding of the float32 products (about 1e-7 relative, whatever the size)
    at the speed of one BLAS dot.

    Parameters
    ----------
    u, v : ndarray
        Same shape and dtype (float32/float64 or complex64/complex128).

    Returns
    -------
    float
        ``sum(Re(conj(u) * v))``.

    Examples
    --------
    >>> u = np.full(10 ** 7, 0.1, np.float32)
    >>> exact = float(np.dot(u.astype(np.float64), u.astype(np.float64)))
    >>> bool(abs(real_dot(u, u) / exact - 1) < 1e-7), bool(abs(np.dot(u, u) / exact - 1) < 1e-7)
    (True, False)
    """
    u = np.ascontiguousarray(u).reshape(-1)
    v = np.ascontiguousarray(v).reshape(-1)
    if u.dtype.kind == "c":  # Re(conj(a) b) = a.re b.re + a.im b.im
        u = u.view(np.float32 if u.dtype == np.complex64 else np.float64)
        v = v.view(np.float32 if v.dtype == np.complex64 else np.float64)
    full = u.size - u.size % _DOT_ROW
    rows = np.einsum("ij,ij->i", u[:full].reshape(-1, _DOT_ROW), v[:full].reshape(-1, _DOT_ROW))
    tail = np.dot(u[full:].astype(np.float64), v[full:].astype(np.float64))
    return float(rows.sum(dtype=np.float64) + tail)


def blas_dot(u, v):
    """``Re <u, v>`` by one float32 BLAS dot: fast, but loses digits on large arrays.

    Only for `remove_background_pdf`, whose float32 CG path is chaotic: a change of one ulp
    in the field changes its result by up to 1e-2 of its maximum at the default tolerance
    whatever the dot (measured on the test phantom with noise or an oblique B0, this dot and
    `real_dot` alike); its tolerance and tests were set with this dot, so it keeps it.

    Examples
    --------
    >>> blas_dot(np.ones(3, np.float32), np.arange(3, dtype=np.float32))
    3.0
    """
    return float(np.vdot(u, v).real)


def _half_spectrum_sum(plane_sum, n_last):
    """Sum over a full Hermitian spectrum from a function summing a slice of its half.

    Every plane of the ``rfftn`` half-spectrum but the first (k = 0) and, for an even last
    axis, the last (Nyquist) stands for two planes of the full spectrum.
    """
    total = 2.0 * plane_sum(...) - plane_sum((..., 0))
    if n_last % 2 == 0:
        total -= plane_sum((..., -1))
    return total


def half_spectrum_inner(u, v, n_last):
    """Inner product of two real images given by their ``rfftn`` half-spectra (Parseval).

    Parameters
    ----------
    u, v : ndarray, complex64
        Half-spectra (last axis ``n_last // 2 + 1``) of real images ``x`` and ``y``.
    n_last : int
        Length of the last axis of the images.

    Returns
    -------
    float
        ``N * sum(x * y)`` with ``N`` the number of voxels (the factor is left out: CG uses
        only ratios of inner products), accurate to about float64 (`real_dot`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.standard_normal((2, 4, 6, 8))
    >>> u, v = np.fft.rfftn(x), np.fft.rfftn(y)
    >>> bool(np.isclose(half_spectrum_inner(u, v, 8) / x.size, np.sum(x * y)))
    True
    """
    return _half_spectrum_sum(lambda sl: real_dot(u[sl], v[sl]), n_last)


def half_spectrum_dot(n_last):
    """`half_spectrum_inner` for images whose last axis is ``n_last``, as ``dot(u, v)`` (for `pcg`).

    Examples
    --------
    >>> u = np.fft.rfftn(np.ones((2, 2, 4)))
    >>> half_spectrum_dot(4)(u, u) / 16
    16.0
    """
    return partial(half_spectrum_inner, n_last=n_last)


def half_spectrum_mean(x, n_last):
    """Mean over the full spectrum of a real Hermitian-symmetric array given its rfft half.

    Parameters
    ----------
    x : ndarray, real
        Values on the half-spectrum grid (last axis ``n_last // 2 + 1``) of a function
        symmetric in k (e.g. a product of kernels).
    n_last : int
        Length of the last axis of the full grid.

    Returns
    -------
    float
        Mean over the ``prod(x.shape[:-1]) * n_last`` frequencies, summed in float64.

    Examples
    --------
    >>> half_spectrum_mean(np.ones((4, 4, 3), np.float32), 4)
    1.0
    """
    total = _half_spectrum_sum(lambda sl: float(x[sl].sum(dtype=np.float64)), n_last)
    return float(total / (np.prod(x.shape[:-1]) * n_last))


def axpy(a, x, y):
    """``y += a * x`` in place with a float32 scalar (float32/complex64 arrays stay so).

    Examples
    --------
    >>> axpy(2.0, np.ones(2, np.float32), np.ones(2, np.float32)).tolist()
    [3.0, 3.0]
    """
    y += np.float32(a) * x
    return y


# --------------------------------------------------------------------------------------------
# conjugate gradients
# --------------------------------------------------------------------------------------------

@dataclass
class CGResult:
    """Outcome of `pcg`.

    Attributes
    ----------
    x : ndarray
        The solution estimate (dtype of ``b``).
    n_iter : int
        Iterations run (operator applications after the initial residual).
    converged : bool
        Whether the relative residual reached ``tol`` within ``max_iter``.
    residual : float
        Final relative residual ``||b - A x|| / ||b||`` (from CG's recurrence; 0 for
        ``b = 0``).
    """

    x: np.ndarray
    n_iter: int
    converged: bool
    residual: float


def pcg(apply_a: Callable, b, x0=None, tol=1e-3, max_iter=100, dot: Callable = real_dot,
        precond: Callable | None = None) -> CGResult:
    """Preconditioned conjugate gradients for a symmetric positive (semi-)definite operator.

    Solves ``A x = b`` for float32 images or complex64 spectra, stopping when
    ``||b - A x|| <= tol * ||b||`` (norms from ``dot``) or after ``max_iter`` iterations,
    or when ``A`` shows no positive curvature along a search direction (``<p, A p> <= 0``).

    Parameters
    ----------
    apply_a : callable
        ``apply_a(p) -> A p``, a new array of the shape and dtype of ``b``.
    b : ndarray, float32 or complex64
        Right-hand side.
    x0 : ndarray, optional
        Start (default 0, which saves one application of ``A``); not modified.
    tol : float
        Relative residual at which to stop.
    max_iter : int
        Maximum iterations.
    dot : callable
        Inner product ``dot(u, v) -> float`` (real part); default `real_dot`, accurate to
        about float64. For vectors held as ``rfftn`` half-spectra use `half_spectrum_dot`.
    precond : callable, optional
        ``precond(r)`` applies a symmetric positive definite approximation of ``A^-1`` and
        returns a new array.

    Returns
    -------
    CGResult
        ``x``, ``n_iter``, ``converged``, ``residual``. For ``b = 0`` the solution is 0 and
        converged, with ``n_iter = 0``.

    Examples
    --------
    >>> a = np.array([[4.0, 1.0], [1.0, 3.0]], np.float32)
    >>> res = pcg(lambda p: a @ p, np.array([1.0, 2.0], np.float32), tol=1e-6)
    >>> bool(np.allclose(res.x, [1 / 11, 7 / 11])), res.converged, res.n_iter
    (True, True, 2)

    References
    ----------
    Hestenes MR, Stiefel E. Methods of conjugate gradients for solving linear systems.
    J Res Natl Bur Stand 1952;49:409-436.
    """
    bnorm = float(np.sqrt(max(dot(b, b), 0.0)))
    if x0 is None:
        x = np.zeros_like(b)
        r = b.copy()
    else:
        x = x0.copy()
        r = b - apply_a(x)
    if bnorm == 0.0:
        return CGResult(np.zeros_like(b), 0, True, 0.0)
    rr = dot(r, r)
    if np.sqrt(max(rr, 0.0)) <= tol * bnorm:
        return CGResult(x, 0, True, float(np.sqrt(max(rr, 0.0)) / bnorm))
    z = r if precond is None else precond(r)
    p = z.copy()
    rz = rr if precond is None else dot(r, z)
    n_iter, converged = 0, False
    for n_iter in range(1, max_iter + 1):
        ap = apply_a(p)
        pap = dot(p, ap)
        if not pap > 0:  # no curvature left along p: breakdown (or exact solution)
            break
        alpha = rz / pap
        axpy(alpha, p, x)
        axpy(-alpha, ap, r)
        del ap
        rr = dot(r, r)
        if np.sqrt(max(rr, 0.0)) <= tol * bnorm:
            converged = True
            break
        z = r if precond is None else precond(r)
        rz_new = rr if precond is None else dot(r, z)
        p *= np.float32(rz_new / rz)
        p += z
        rz = rz_new
    return CGResult(x, n_iter, converged, float(np.sqrt(max(rr, 0.0)) / bnorm))
