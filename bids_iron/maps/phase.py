"""Phase scaling: bring vendor phase images to radians in [-pi, pi).

Scanners and converters store phase in many ranges: radians ([-pi, pi] or [0, 2*pi]), integer
vendor ranges (Siemens -4096..4095 or 0..4095, others -2048..2047, GE/Philips milliradians
-3142..3142) or odd scale factors (a NIfTI ``scl_slope`` that was meant for other data, giving
e.g. +-0.0037). `scale_phase_to_radians` detects the stored range and rescales it, or refuses
with a message that says what was found.
"""

import numpy as np

from ._numerics import TWO_PI, wrap_to_pi

__all__ = ["scale_phase_to_radians", "complex_to_magnitude_phase", "wrap_to_pi"]

#: tolerance (rad) on the ends of a radian range, for float32 rounding
_RAD_TOL = 1e-3
#: a float range whose largest |value| is below this (rad) is a candidate odd scale factor
_ODD_SCALE_MAX = 0.5
#: candidate periods (one 2*pi cycle) of integer-stored phase
_INTEGER_PERIODS = tuple(float(2 ** k) for k in range(8, 17)) + (2000.0 * np.pi,)


def _fills_uniformly(values, lo, hi, n_bins=32, edge_fraction=0.2):
    """True if the histogram of ``values`` over [lo, hi] has no empty bin and populated ends.

    Wrapped phase of a whole image (noise background, many wraps) fills its cycle nearly
    uniformly, so both end bins hold a good share of the median bin count.
    """
    counts, _ = np.histogram(values, bins=n_bins, range=(lo, hi))
    median = np.median(counts)
    if median <= 0 or np.any(counts == 0):
        return False
    return bool(min(counts[0], counts[-1]) >= edge_fraction * median)


def _is_quantized(values, max_levels=65537):
    """True if ``values`` take at most ``max_levels`` values on a regular grid (scaled integers)."""
    levels = np.unique(values)
    if levels.size > max_levels or levels.size < 3:
        return False
    gaps = np.diff(levels)
    step = gaps.min()
    ratio = gaps / step
    return bool(np.all(np.abs(ratio - np.round(ratio)) <= 0.05 * np.maximum(1.0, ratio / 20)))


def scale_phase_to_radians(phase, value_range=None):
    """Detect the stored range of a phase image and rescale it to radians in [-pi, pi).

    Rules, applied in order to the finite values (``vmin``, ``vmax`` their extremes):

    1. ``value_range=(lo, hi)`` given: ``lo..hi`` is one full cycle; map it linearly to
       [-pi, pi) (use ``(-np.pi, np.pi)`` to force "already radians").
    2. Odd scale factor: all values inside +-0.5, the range symmetric about 0
       (``|vmin + vmax| <= 2 %`` of the width) and filled uniformly (no empty histogram bin,
       both end bins at least 20 % of the median bin), as wrapped phase of a whole image with
       its noise background is. Then ``[vmin, vmax]`` is taken as ``[-pi, pi]``.
    3. Radians: ``-pi <= vmin`` and ``vmax <= pi`` (+-1e-3): returned unchanged apart from
       wrapping (a value of +pi becomes -pi). Genuine radian data that span less than 2*pi
       (e.g. a small region, an unwrapped difference) are therefore NOT rescaled unless they
       also satisfy rule 2, i.e. lie within +-0.5 rad, are symmetric and fill that interval
       uniformly up to its ends, which real radian phase practically never does.
    4. Radians in [0, 2*pi] (``vmin >= -1e-3``, ``vmax <= 2*pi + 1e-3``): wrapped.
    5. Integer-valued data: the period ``P`` is the smallest of 2**8 .. 2**16 or 2000*pi
       (milliradians) with ``vmax - vmin <= P``; the range must cover at least 75 % of ``P``.
       Ranges starting near 0 map ``[0, P)`` to [-pi, pi) (Siemens 0..4095 convention),
       symmetric ranges map ``[-P/2, P/2)`` to [-pi, pi) (-4096..4095, -2048..2047).
    6. Non-integer data symmetric about 0 or starting at 0 that fill their range uniformly
       (as in rule 2) and take at most 65537 values on a regular grid (scaled integers, as
       an odd ``scl_slope`` produces) are taken as one cycle ``[vmin, vmax]``.
    7. Anything else raises `ValueError`.

    Parameters
    ----------
    phase : array_like, any shape
        Stored phase values (any real dtype). Non-finite values stay NaN.
    value_range : tuple of 2 float, optional
        The stored values that correspond to -pi and +pi (one full cycle). Overrides detection.

    Returns
    -------
    radians : ndarray, float32, same shape
        Phase in [-pi, pi) (rad).
    description : str
        What was detected and done, for logs and sidecars.

    Raises
    ------
    ValueError
        If ``phase`` is complex, has no finite values, is constant, or its range cannot be
        interpreted; or if ``value_range`` is not two increasing finite numbers.

    Examples
    --------
    >>> rad, how = scale_phase_to_radians(np.array([-4096, -1024, 0, 2048, 4095]))
    >>> np.allclose(rad, [-np.pi, -np.pi / 4, 0, np.pi / 2, np.pi * 4095 / 4096])
    True
    >>> how.startswith("integer")
    True

    References
    ----------
    Siemens phase DICOM convention (0..4095 or -4096..4095 for -pi..pi) as documented by
    dcm2niix: https://github.com/rordenlab/dcm2niix (see its notes on phase scaling).
    """
    phase = np.asarray(phase)
    if phase.dtype.kind == "c":
        raise ValueError("phase must be real; use complex_to_magnitude_phase for complex data")
    if phase.dtype.kind not in "biuf":
        raise ValueError(f"phase must be numeric, got dtype {phase.dtype}")
    data = phase.astype(np.float64, copy=False)
    finite = np.isfinite(data)
    if not finite.any():
        raise ValueError("phase has no finite values")
    values = data[finite]
    vmin, vmax = float(values.min()), float(values.max())

    def linear(lo, hi, text):
        out = wrap_to_pi((data - lo) * (TWO_PI / (hi - lo)) - np.pi)
        out[~finite] = np.nan
        return out, text

    if value_range is not None:
        lo, hi = (float(v) for v in value_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ValueError(f"value_range must be two increasing finite numbers, got {value_range!r}")
        return linear(lo, hi, f"value_range [{lo:g}, {hi:g}] given as one cycle; rescaled to [-pi, pi)")
    width = vmax - vmin
    if not width > 0:
        raise ValueError(f"phase is constant ({vmin:g}); cannot interpret its range")
    symmetric = abs(vmin + vmax) <= 0.02 * width
    zero_based = abs(vmin) <= 0.02 * width
    if (max(abs(vmin), abs(vmax)) <= _ODD_SCALE_MAX and symmetric
            and _fills_uniformly(values, vmin, vmax)):
        return linear(vmin, vmax, f"odd scale: range [{vmin:.6g}, {vmax:.6g}] fills one cycle "
                                  f"uniformly; rescaled by pi/{max(-vmin, vmax):.6g}")
    if vmin >= -np.pi - _RAD_TOL and vmax <= np.pi + _RAD_TOL:
        out = wrap_to_pi(data)
        out[~finite] = np.nan
        return out, "radians in [-pi, pi]: unchanged"
    if vmin >= -_RAD_TOL and vmax <= TWO_PI + _RAD_TOL:
        out = wrap_to_pi(data)
        out[~finite] = np.nan
        return out, "radians in [0, 2*pi]: wrapped to [-pi, pi)"
    integer = bool(np.all(values == np.round(values)))
    if integer:
        for period in _INTEGER_PERIODS:
            if width <= period and width >= 0.75 * period:
                if zero_based:
                    return linear(0.0, period, f"integer range {vmin:g}..{vmax:g}: "
                                               f"0..{period:g} is one cycle; rescaled")
                if symmetric or vmin >= -period / 2 - 1 and vmax <= period / 2 + 1:
                    return linear(-period / 2, period / 2,
                                  f"integer range {vmin:g}..{vmax:g}: -{period / 2:g}.."
                                  f"{period / 2:g} is one cycle; rescaled")
    elif ((symmetric or zero_based) and _fills_uniformly(values, vmin, vmax)
          and _is_quantized(values)):
        return linear(vmin, vmax, f"range [{vmin:.6g}, {vmax:.6g}] fills one cycle uniformly; "
                                  f"rescaled to [-pi, pi)")
    raise ValueError(
        f"phase values span [{vmin:.6g}, {vmax:.6g}] ({'integer' if integer else 'non-integer'}),"
        " which is neither radians ([-pi, pi] or [0, 2*pi]), a vendor integer range "
        "(e.g. -4096..4095, 0..4095, -2048..2047, -3142..3142) nor a wrapped range filled "
        "uniformly; convert the phase to radians first or pass value_range=(lo, hi) giving the "
        "stored values of -pi and +pi")


def complex_to_magnitude_phase(real, imag=None):
    """Magnitude and phase (rad, [-pi, pi)) of complex data.

    Parameters
    ----------
    real : array_like
        Complex array, or the real part when ``imag`` is given.
    imag : array_like, optional
        Imaginary part, same shape as ``real``.

    Returns
    -------
    magnitude : ndarray, float32
    phase : ndarray, float32
        In [-pi, pi) (rad).

    Raises
    ------
    ValueError
        If shapes differ, or ``imag`` is None and ``real`` is not complex.

    Examples
    --------
    >>> mag, ph = complex_to_magnitude_phase(np.array([1.0, 0.0]), np.array([0.0, -2.0]))
    >>> mag.tolist(), np.allclose(ph, [0, -np.pi / 2])
    ([1.0, 2.0], True)
    """
    real = np.asarray(real)
    if imag is None:
        if real.dtype.kind != "c":
            raise ValueError("real must be complex when imag is not given")
        z = real.astype(np.complex64, copy=False)
    else:
        imag = np.asarray(imag)
        if imag.shape != real.shape:
            raise ValueError(f"imag shape {imag.shape} differs from real shape {real.shape}")
        if real.dtype.kind == "c" or imag.dtype.kind == "c":
            raise ValueError("real and imag must be real-valued arrays")
        z = real.astype(np.float32) + 1j * imag.astype(np.float32)
    return np.abs(z).astype(np.float32), wrap_to_pi(np.angle(z))
