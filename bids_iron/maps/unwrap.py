"""Spatial (and echo-wise) phase unwrapping of wrapped phase images in radians.

Two methods:

``"region_growing"`` (default)
    Quality-guided region growing in the spirit of ROMEO (Dymerska et al. 2021): every edge
    between neighbouring voxels gets a quality from phase coherence, the agreement of the
    phase gradient with that of a later echo, magnitude coherence and magnitude; voxels are
    joined along the best remaining edge first (bucket queue, compiled with numba). The
    result is exactly congruent with the input (differs by integer multiples of 2*pi).
``"laplacian"``
    Laplacian unwrapping (Schofield & Zhu 2003) with a DCT Poisson solve, then rounded to
    the nearest congruent value.

Measured: on the head phantom of the test-suite (5 echoes, 3 T, SNR 100, MCPC-3D-S) and on
the 192x224x160 6-echo synthetic of benchmarks/bench_phase.py both methods leave no wrapped
voxel in the mask. On a masked synthetic with gradients up to 1.2 rad/voxel ending at the
mask border, region growing leaves none and the Laplacian 60 (its sin/cos Laplacian
identity and the box-wide Poisson solve are only approximate there), hence the default;
the Laplacian is faster.

Multi-echo input carries the echoes on the last axis. With echo times ``te`` the first echo
is unwrapped spatially and the later ones temporally (each echo predicted from a fit through
the origin of the echoes already unwrapped), which assumes the phase offset has been removed
(e.g. by `bids_iron.maps.combine.remove_phase_offset_mcpc3ds`). Without ``te`` every echo is
unwrapped spatially on its own.
"""

import numpy as np
import scipy.fft

from ._numerics import TWO_PI, bounding_box, check_array, check_mask
from .kernels import check_voxel_size

__all__ = ["unwrap_laplacian", "unwrap_region_growing", "unwrap_phase",
           "unwrap_echoes_temporally", "UNWRAP_METHODS", "DEFAULT_UNWRAP_METHOD"]

def _check_common(wrapped, mask, te, magnitude=None):
    wrapped = check_array(wrapped, "wrapped", ndim=(3, 4), finite=False)
    shape3 = wrapped.shape[:3]
    if mask is None:
        mask = np.ones(shape3, bool)
    else:
        mask = check_mask(mask, shape3, like="shape of one echo of wrapped", allow_empty=True)
    if te is not None:
        te = np.asarray(te, np.float64).ravel()
        if wrapped.ndim != 4 or te.size != wrapped.shape[3]:
            raise ValueError(f"te must have one echo time per echo (last axis of wrapped), "
                             f"got {te.size} for shape {wrapped.shape}")
        if not np.all(te > 0):
            raise ValueError(f"te must be positive (s), got {te.tolist()}")
    if magnitude is not None:
        magnitude = check_array(magnitude, "magnitude", shape=wrapped.shape,
                                like="shape of wrapped", finite=False)
    return wrapped, mask, te, magnitude


def unwrap_echoes_temporally(wrapped, te, first_unwrapped, magnitude=None, mask=None):
    """Unwrap echoes 2..n by prediction from the echoes before them (phase through the origin).

    Echo ``k`` is set to the wrapped value congruent with, and nearest to,
    ``2*pi*f_k*TE_k`` where ``f_k`` is the weighted (magnitude squared times TE squared) fit
    through the origin of the already unwrapped echoes ``0..k-1``.

    Parameters
    ----------
    wrapped : ndarray, shape (X, Y, Z, E)
        Wrapped phase (rad) with the phase offset removed.
    te : array_like, shape (E,)
        Echo times (s).
    first_unwrapped : ndarray, shape (X, Y, Z)
        Spatially unwrapped first echo (rad).
    magnitude : ndarray, shape (X, Y, Z, E), optional
        Fit weights; uniform if None.
    mask : ndarray of bool, shape (X, Y, Z), optional
        Outside the mask the result is 0.

    Returns
    -------
    ndarray, float32, shape (X, Y, Z, E)
        Unwrapped phase (rad).

    Raises
    ------
    ValueError
        On inconsistent shapes.

    Examples
    --------
    >>> te = np.array([0.004, 0.008, 0.012])
    >>> truth = 2 * np.pi * 150.0 * te * np.ones((2, 2, 2, 1))
    >>> from bids_iron.maps.phase import wrap_to_pi
    >>> out = unwrap_echoes_temporally(wrap_to_pi(truth), te, truth[..., 0])
    >>> bool(np.allclose(out, truth, atol=1e-5))
    True
    """
    wrapped, mask, te, magnitude = _check_common(wrapped, mask, te, magnitude)
    first_unwrapped = check_array(first_unwrapped, "first_unwrapped", shape=wrapped.shape[:3],
                                  like="shape of one echo of wrapped", finite=False)
    from bids_iron.maps._romeo import temporal_unwrap_fit

    out = np.zeros(wrapped.shape, np.float32)
    use_mag = magnitude is not None
    dummy = np.zeros((1, 1, 1), np.float32)
    temporal_unwrap_fit(wrapped, first_unwrapped, magnitude if use_mag else wrapped,
                        te, mask, out, dummy, dummy, use_mag, True, False)
    return out


def _center_global(unwrapped, mask):
    """Shift by the 2*pi multiple that puts the median inside the mask nearest to 0."""
    if mask.any():
        unwrapped -= np.float32(TWO_PI * np.round(np.median(unwrapped[mask]) / TWO_PI))
    return unwrapped


def _laplacian_3d(wrapped, mask, voxel_size, workers):
    from bids_iron.maps._romeo import wrapped_laplacian

    # Laplacian of the true phase from the wrapped phase: Im(conj(z) * lap(z)), |z| = 1,
    # z = 0 outside the mask (compiled, float32)
    rhs = wrapped_laplacian(np.ascontiguousarray(wrapped, np.float32),
                            np.ascontiguousarray(mask, bool),
                            1.0 / np.asarray(voxel_size, np.float64) ** 2)
    # Neumann-boundary Poisson solve with DCT-II (eigenvalues of the same 3-point stencil)
    eig = np.zeros(wrapped.shape, np.float32)
    for axis, (n, d) in enumerate(zip(wrapped.shape, voxel_size)):
        lam = (2.0 * np.cos(np.pi * np.arange(n) / n) - 2.0) / (d * d)
        eig = eig + lam.astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
    eig[0, 0, 0] = 1.0
    spec = scipy.fft.dctn(rhs, type=2, norm="ortho", workers=workers)
    spec /= eig
    spec[0, 0, 0] = 0.0
    lap = scipy.fft.idctn(spec, type=2, norm="ortho", workers=workers).astype(np.float32)
    # global constant: the one that best matches the wrapped data, then round to congruence
    if mask.any():
        resid = (wrapped[mask] - lap[mask]).astype(np.float64)
        lap += np.float32(np.arctan2(np.sin(resid).sum(), np.cos(resid).sum()))
    out = wrapped + np.float32(TWO_PI) * np.round((lap - wrapped) / np.float32(TWO_PI))
    out[~mask] = 0.0
    return out.astype(np.float32)


def unwrap_laplacian(wrapped, voxel_size, mask=None, te=None, magnitude=None, workers=-1):
    """Laplacian phase unwrapping (Schofield & Zhu 2003), made congruent with the input.

    The Laplacian of the true phase is ``cos(phi) lap(sin(phi)) - sin(phi) lap(cos(phi))``,
    computed here as ``Im(conj(z) lap(z))`` with ``z = exp(i phi)`` (zero outside the mask)
    and inverted with a DCT (Neumann boundary) Poisson solve. That estimate is smooth but not
    congruent with the data; it is shifted by the global constant that best matches the
    wrapped data and then rounded: ``wrapped + 2*pi*round((lap - wrapped) / (2*pi))``, so
    the result differs from the input by integer multiples of 2*pi. Where the true phase
    varies faster than the Laplacian estimate can follow (strong field curvature near air),
    that rounding can be off by one wrap.

    Parameters
    ----------
    wrapped : ndarray, shape (X, Y, Z) or (X, Y, Z, E)
        Wrapped phase (rad). Echoes on the last axis.
    voxel_size : sequence of 3 float
        Voxel size (mm).
    mask : ndarray of bool, shape (X, Y, Z), optional
        Region to unwrap; the result is 0 outside. Default: everything.
    te : array_like, shape (E,), optional
        Echo times (s). If given (4-D input), echo 1 is unwrapped spatially and the others
        temporally (`unwrap_echoes_temporally`; needs offset-free phase), and the first echo
        is shifted by the 2*pi multiple that brings its median in the mask nearest to 0.
    magnitude : ndarray, shape like ``wrapped``, optional
        Only used as weights of the temporal unwrapping.
    workers : int
        Threads for scipy.fft (-1: all cores).

    Returns
    -------
    ndarray, float32, shape like ``wrapped``
        Unwrapped phase (rad).

    Raises
    ------
    ValueError
        On wrong shapes, voxel sizes or echo times.

    Examples
    --------
    >>> x = np.linspace(-1, 1, 32)
    >>> truth = (12.0 * x[:, None, None] ** 2 + 3.0 * x[None, :, None] + 0 * x).astype(np.float32)
    >>> from bids_iron.maps.phase import wrap_to_pi
    >>> out = unwrap_laplacian(wrap_to_pi(truth), (1.0, 1.0, 1.0))
    >>> d = out - truth
    >>> bool(np.allclose(d, d.flat[0], atol=1e-4))
    True

    References
    ----------
    Schofield MA, Zhu Y. Fast phase unwrapping algorithm for interferometric applications.
    Opt Lett 2003;28:1194-1196.
    """
    wrapped, mask, te, magnitude = _check_common(wrapped, mask, te, magnitude)
    voxel_size = check_voxel_size(voxel_size)
    if wrapped.ndim == 3:
        return _laplacian_3d(wrapped, mask, voxel_size, workers)
    if te is not None:
        first = _unwrap_first_echo(wrapped, mask, te, magnitude, "laplacian", voxel_size, workers)
        return unwrap_echoes_temporally(wrapped, te, first, magnitude, mask)
    return np.stack([_laplacian_3d(wrapped[..., k], mask, voxel_size, workers)
                     for k in range(wrapped.shape[3])], axis=-1)


def _magnitude_reference(magnitude, mask):
    """90th percentile of the magnitude in the mask (1 if undefined or 0)."""
    if magnitude is None or not mask.any():
        return np.float32(1.0)
    return np.float32(np.percentile(magnitude[mask], 90)) or np.float32(1.0)


def _region_growing_3d(phase, mask, magnitude=None, phase2=None, te_ratio=None):
    from bids_iron.maps._romeo import edge_bins, grow_regions

    out = np.zeros(phase.shape, np.float32)
    if not mask.any():
        return out
    # only the mask's bounding box has usable edges (smaller arrays: faster growth)
    box = bounding_box(mask)
    crop = (lambda a: None if a is None else np.ascontiguousarray(a[box], np.float32))
    ph, mag, ph2 = crop(phase), crop(magnitude), crop(phase2)
    m = np.ascontiguousarray(mask[box])
    use_mag, use_p2 = mag is not None, ph2 is not None
    # edge qualities and the seed: the voxel with the best sum of its edge qualities
    wbin, seed = edge_bins(ph, m, mag if use_mag else ph, ph2 if use_p2 else ph,
                           np.float32(te_ratio if use_p2 else 1.0),
                           _magnitude_reference(mag, m), use_mag, use_p2)
    strides = np.array([ph.shape[1] * ph.shape[2], ph.shape[2], 1], np.int64)
    grown, _ = grow_regions(ph.ravel(), wbin.reshape(-1, 4), strides, seed)
    out[box] = np.where(m, grown.reshape(ph.shape), np.float32(0.0))
    return out


def unwrap_region_growing(wrapped, magnitude=None, mask=None, te=None):
    """Quality-guided region-growing phase unwrapping (in the spirit of ROMEO).

    Each edge between 6-neighbours gets a quality in [0, 1], the product of

    * phase coherence ``1 - |wrap(dphi)| / pi``,
    * (multi-echo with ``te``) gradient coherence ``1 - |wrap(dphi_1 - dphi_2 TE1/TE2)| / pi``
      between the phase differences of echoes 1 and 2,
    * magnitude coherence ``(min(m_a, m_b) / max(m_a, m_b))**2`` and
    * magnitude weight ``min(1, min(m_a, m_b) / P90(m in mask))``,

    quantised to 255 levels. Growth starts at the voxel with the best edges and always
    crosses the best edge on the front next (bucket queue, numba-compiled, linear time); each
    voxel gets the value congruent with its input and nearest to its neighbour's unwrapped
    value. Parts not connected to the first region (through mask edges of non-zero quality)
    are grown from new seeds; every region keeps the wrapped value at its seed, so offsets of
    2*pi multiples between disconnected regions are undetermined.

    Parameters
    ----------
    wrapped : ndarray, shape (X, Y, Z) or (X, Y, Z, E)
        Wrapped phase (rad). Echoes on the last axis.
    magnitude : ndarray, shape like ``wrapped``, optional
        Magnitude (any unit); enables the magnitude terms.
    mask : ndarray of bool, shape (X, Y, Z), optional
        Region to unwrap; the result is 0 outside. Default: everything.
    te : array_like, shape (E,), optional
        Echo times (s). With 4-D input: echo 1 is unwrapped spatially (with echo 2's gradient
        coherence), shifted by the 2*pi multiple bringing its median in the mask nearest to 0,
        and the others are unwrapped temporally (`unwrap_echoes_temporally`), which needs
        offset-free phase. Without ``te`` every echo is unwrapped spatially.

    Returns
    -------
    ndarray, float32, shape like ``wrapped``
        Unwrapped phase (rad), congruent with ``wrapped`` inside the mask.

    Raises
    ------
    ValueError
        On wrong shapes or echo times.

    Examples
    --------
    >>> x = np.linspace(-1, 1, 24)
    >>> truth = (20.0 * x[:, None, None] * x[None, :, None] + 0 * x).astype(np.float32)
    >>> from bids_iron.maps.phase import wrap_to_pi
    >>> out = unwrap_region_growing(wrap_to_pi(truth))
    >>> d = out - truth
    >>> bool(np.allclose(d, d.flat[0], atol=1e-4)) and bool(np.isclose(d.flat[0] % (2 * np.pi), 0, atol=1e-4) or np.isclose(d.flat[0] % (2 * np.pi), 2 * np.pi, atol=1e-4))
    True

    References
    ----------
    Dymerska B, Eckstein K, Bachrata B, et al. Phase unwrapping with a rapid opensource
    minimum spanning tree algorithm (ROMEO). Magn Reson Med 2021;85:2294-2308.
    """
    wrapped, mask, te, magnitude = _check_common(wrapped, mask, te, magnitude)
    if wrapped.ndim == 3:
        return _region_growing_3d(wrapped, mask, magnitude)
    mag = (lambda k: None) if magnitude is None else (lambda k: magnitude[..., k])
    if te is not None:
        first = _unwrap_first_echo(wrapped, mask, te, magnitude, "region_growing")
        return unwrap_echoes_temporally(wrapped, te, first, magnitude, mask)
    return np.stack([_region_growing_3d(wrapped[..., k], mask, mag(k))
                     for k in range(wrapped.shape[3])], axis=-1)


def _unwrap_first_echo(wrapped, mask, te, magnitude, method, voxel_size=None, workers=-1):
    """Echo 1 of checked 4-D input unwrapped spatially as the ``te`` path of ``method`` does.

    Region growing uses echo 2's gradient coherence (if there is an echo 2); the result is
    shifted by the 2*pi multiple that brings its median in the mask nearest to 0.
    """
    if method == "laplacian":
        first = _laplacian_3d(wrapped[..., 0], mask, voxel_size, workers)
    else:
        mag0 = None if magnitude is None else magnitude[..., 0]
        if wrapped.shape[3] > 1:
            first = _region_growing_3d(wrapped[..., 0], mask, mag0, wrapped[..., 1],
                                       np.float32(te[0] / te[1]))
        else:
            first = _region_growing_3d(wrapped[..., 0], mask, mag0)
    return _center_global(first, mask)


#: Available unwrapping methods: ``UNWRAP_METHODS``, read from the method registry
#: (`bids_iron.maps.registry`, family ``unwrap``).
#: Default method (fewest residual wraps on simulations; see module docstring).
DEFAULT_UNWRAP_METHOD = "region_growing"


def unwrap_phase(wrapped, voxel_size, magnitude=None, mask=None, te=None,
                 method=DEFAULT_UNWRAP_METHOD, workers=-1):
    """Unwrap with the named method (one of `UNWRAP_METHODS`); see the method functions.

    Raises
    ------
    ValueError
        If ``method`` is unknown (or on the method's own argument errors).
    """
    from . import registry

    registry.get("unwrap", method)  # ValueError naming the choices
    if method == "region_growing":
        return unwrap_region_growing(wrapped, magnitude=magnitude, mask=mask, te=te)
    if method == "laplacian":
        return unwrap_laplacian(wrapped, voxel_size, mask=mask, te=te, magnitude=magnitude,
                                workers=workers)
    raise ValueError(f"method must be one of {UNWRAP_METHODS}, got {method!r}")


def __getattr__(name):
    """``UNWRAP_METHODS``: the registry's unwrap method names (`bids_iron.maps.registry`)."""
    if name == "UNWRAP_METHODS":
        from . import registry

        return registry.names("unwrap")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
