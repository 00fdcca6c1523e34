"""Physical constants and unit conversions for field maps.

The proton gyromagnetic ratio is gamma/(2*pi) = 42.577478 MHz/T (CODATA 2018), so a field
shift of 1 ppm at B0 = 3 T is 127.73 Hz.
"""

import numpy as np

#: Proton gyromagnetic ratio over 2*pi, in Hz per tesla.
GAMMA_BAR_HZ_PER_T = 42.577478e6


def hz_to_ppm(field_hz, b0_tesla):
    """Convert a frequency shift in Hz to a field shift in ppm of B0.

    Parameters
    ----------
    field_hz : array_like
        Frequency shift (Hz).
    b0_tesla : float
        Main field strength (T), > 0.

    Returns
    -------
    ndarray
        Field shift in ppm (float32 for float32 input).

    Examples
    --------
    >>> float(hz_to_ppm(127.732434, 3.0))  # doctest: +ELLIPSIS
    1.0...
    """
    if not b0_tesla > 0:
        raise ValueError(f"b0_tesla must be > 0, got {b0_tesla!r}")
    field_hz = np.asarray(field_hz)
    scale = 1e6 / (GAMMA_BAR_HZ_PER_T * float(b0_tesla))
    return (field_hz * np.asarray(scale, dtype=field_hz.dtype if field_hz.dtype.kind == "f" else np.float64))


def ppm_to_hz(field_ppm, b0_tesla):
    """Convert a field shift in ppm of B0 to a frequency shift in Hz (inverse of `hz_to_ppm`)."""
    if not b0_tesla > 0:
        raise ValueError(f"b0_tesla must be > 0, got {b0_tesla!r}")
    field_ppm = np.asarray(field_ppm)
    scale = GAMMA_BAR_HZ_PER_T * float(b0_tesla) / 1e6
    return field_ppm * np.asarray(scale, dtype=field_ppm.dtype if field_ppm.dtype.kind == "f" else np.float64)
