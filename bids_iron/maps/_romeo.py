"""Compiled inner loops of phase unwrapping and multi-echo phase combination (private).

* `edge_bins`: quantised edge qualities of region-growing unwrapping (one parallel pass).
* `grow_regions`: the region growing itself, a bucket priority queue (256 bins of edge
  quality, one linked list per bin) as in ROMEO (Dymerska et al. 2021): each edge is pushed
  at most once (when its first end is reached), so the work is linear in the number of voxels.
* `offset_phasor`, `gaussian_smooth_pair`, `offset_from_phasor`, `subtract_offset`: the
  steps of MCPC-3D-S offset removal (`bids_iron.maps.combine`), without complex arrays.
* `temporal_unwrap_fit`: temporal unwrapping of the later echoes and the weighted field fit,
  fused into one pass over the voxels of the mask.
* `wrapped_laplacian`: the right-hand side of Laplacian unwrapping.

All work in float32. The parallel loops (numba ``prange``; ``NUMBA_NUM_THREADS`` threads, all
cores by default) run over the first axis; everything is cached on disk (``cache=True``), in
the folder `bids_iron._numba_cache` chooses. The public functions are Python wrappers that
pass C-contiguous arrays of fixed dtypes and fixed scalar types to the compiled ``_*``
kernels: numba compiles (and caches) one version per signature, and the layout of an array
(C, Fortran as NIfTI data come, or a strided box) is part of it, so each kernel has exactly
one signature, compiled once and found in the cache by every later call.
"""

from bids_iron._numba_cache import configure_numba_cache

configure_numba_cache()  # a writable cache folder, chosen before numba is imported

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from ._numerics import TWO_PI

# float32 constants of the compiled loops (numba freezes module globals at compile time)
_TWO_PI32 = np.float32(TWO_PI)
_INV_TWO_PI32 = np.float32(1.0 / TWO_PI)
_PI32 = np.float32(np.pi)
_ONE32 = np.float32(1.0)
_ZERO32 = np.float32(0.0)


def _f32(a):
    """``a`` as a C-contiguous float32 array (itself if it is one already)."""
    return np.ascontiguousarray(a, np.float32)


def _bool(a):
    """``a`` as a C-contiguous bool array (itself if it is one already)."""
    return np.ascontiguousarray(a, np.bool_)


@njit(cache=True, nogil=True)
def _wrap32(x):
    """``x - 2 pi round(x / 2 pi)`` (float32); compares instead of a rounding for |x| <= 3 pi."""
    if x > _PI32:
        if x <= np.float32(3.0) * _PI32:
            return x - _TWO_PI32
    elif x >= -_PI32:
        return x
    elif x >= np.float32(-3.0) * _PI32:
        return x + _TWO_PI32
    return x - _TWO_PI32 * np.round(x * _INV_TWO_PI32)


@njit(cache=True, nogil=True)
def _quality(p_lo, p_hi, m_lo, m_hi, p2_lo, p2_hi, te_ratio, mref, use_mag, use_p2):
    """Edge quality in [0, 1] (see `bids_iron.maps.unwrap.unwrap_region_growing`)."""
    diff = _wrap32(p_hi - p_lo)
    q = _ONE32 - abs(diff) / _PI32
    if use_p2:
        diff2 = _wrap32(p2_hi - p2_lo)
        g = _ONE32 - abs(_wrap32(diff - te_ratio * diff2)) / _PI32
        q *= max(g, _ZERO32)
    if use_mag:
        mmin = min(m_lo, m_hi)
        mmax = max(m_lo, m_hi)
        if mmax > 0:
            c = mmin / mmax
            q *= c * c
        else:
            q = _ZERO32
        q *= min(max(mmin / mref, _ZERO32), _ONE32)
    return q


@njit(cache=True, nogil=True, parallel=True)
def _edge_bins(phase, mask, mag, phase2, te_ratio, mref, use_mag, use_p2):
    """Quantised qualities of the edges (v, v + e_d) and the seed voxel.

    ``phase``, ``mag``, ``phase2`` float32 and ``mask`` bool, shape (X, Y, Z) in C order
    (``mag``/``phase2`` are ignored unless ``use_mag``/``use_p2``). Returns ``wbin`` uint8
    (X, Y, Z, 4): ``wbin[..., d]`` the quality of the edge to the next voxel along axis d,
    1 + floor(254 q) for q > 0, else 0 (also across the mask border), and ``wbin[..., 3] = 0``
    (room for `grow_regions`' reached flag, in the same cache line), and the flat index of
    the seed, the first voxel with the largest sum of the qualities of its 6 edges (-1 if
    the mask is empty).
    """
    nx, ny, nz = phase.shape
    wbin = np.zeros((nx, ny, nz, 4), np.uint8)
    qual = np.zeros((3, nx, ny, nz), np.float32)
    te_ratio = np.float32(te_ratio)
    mref = np.float32(mref)
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                if not mask[i, j, k]:
                    continue
                p0 = phase[i, j, k]
                m0 = mag[i, j, k] if use_mag else _ZERO32
                r0 = phase2[i, j, k] if use_p2 else _ZERO32
                for d in range(3):
                    i1, j1, k1 = i + (d == 0), j + (d == 1), k + (d == 2)
                    if i1 >= nx or j1 >= ny or k1 >= nz or not mask[i1, j1, k1]:
                        continue
                    q = _quality(p0, phase[i1, j1, k1], m0,
                                 mag[i1, j1, k1] if use_mag else _ZERO32,
                                 r0, phase2[i1, j1, k1] if use_p2 else _ZERO32,
                                 te_ratio, mref, use_mag, use_p2)
                    qual[d, i, j, k] = q
                    if q > 0:
                        wbin[i, j, k, d] = np.uint8(1 + int(q * np.float32(254.0)))
    # seed score: sum of the 6 edge qualities; first maximum per slice, then over slices
    best = np.full(nx, -1.0, np.float32)
    best_at = np.full(nx, -1, np.int64)
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                if not mask[i, j, k]:
                    continue
                s = qual[0, i, j, k] + qual[1, i, j, k] + qual[2, i, j, k]
                if i > 0:
                    s += qual[0, i - 1, j, k]
                if j > 0:
                    s += qual[1, i, j - 1, k]
                if k > 0:
                    s += qual[2, i, j, k - 1]
                if s > best[i]:
                    best[i] = s
                    best_at[i] = (i * ny + j) * nz + k
    seed = -1
    top = np.float32(-1.0)
    for i in range(nx):
        if best[i] > top:
            top = best[i]
            seed = best_at[i]
    return wbin, seed


@njit(cache=True, nogil=True, inline="always")
def _push_edges(v, wbin, strides, n, head, nxt, item, free, top):
    for d in range(3):
        s = strides[d]
        # forward neighbour v + s, edge stored at v
        t = v + s
        if t < n:
            b = wbin[v, d]
            if b > 0 and wbin[t, 3] == 0:
                nxt[free] = head[b]
                item[free] = v * 6 + 2 * d
                head[b] = free
                free += 1
                if b > top:
                    top = b
        # backward neighbour v - s, edge stored at v - s
        t = v - s
        if t >= 0:
            b = wbin[t, d]
            if b > 0 and wbin[t, 3] == 0:
                nxt[free] = head[b]
                item[free] = v * 6 + 2 * d + 1
                head[b] = free
                free += 1
                if b > top:
                    top = b
    return free, top


@njit(cache=True, nogil=True)
def _grow(phase, wbin, strides, first_seed, head, nxt, item):
    n = phase.shape[0]
    out = phase.copy()
    free = 0
    region = 0
    for k in range(-1, n):
        seed = first_seed if k < 0 else k
        if seed < 0 or wbin[seed, 3] != 0:
            continue
        has_edge = False
        for d in range(3):
            if wbin[seed, d] > 0 or (seed - strides[d] >= 0 and wbin[seed - strides[d], d] > 0):
                has_edge = True
        if not has_edge:
            continue
        region += 1
        wbin[seed, 3] = 1
        top = 0
        free, top = _push_edges(seed, wbin, strides, n, head, nxt, item, free, top)
        while top > 0:
            e = head[top]
            if e < 0:
                top -= 1
                continue
            head[top] = nxt[e]
            code = item[e]
            src = code // 6
            rem = code - src * 6
            d = rem // 2
            if rem % 2 == 0:
                tgt = src + strides[d]
            else:
                tgt = src - strides[d]
            if wbin[tgt, 3] != 0:
                continue
            wbin[tgt, 3] = 1
            p = phase[tgt]
            out[tgt] = p + _TWO_PI32 * np.round((out[src] - p) * _INV_TWO_PI32)
            free, top = _push_edges(tgt, wbin, strides, n, head, nxt, item, free, top)
    return out, region


@njit(cache=True, nogil=True)
def _count_edges(wbin):
    n_edges = 0
    for v in range(wbin.shape[0]):
        for d in range(3):
            if wbin[v, d] > 0:
                n_edges += 1
    return n_edges


def grow_regions(phase, wbin, strides, first_seed):
    """Unwrap ``phase`` (flat float32) along edges of quantised quality ``wbin`` (n, 4) uint8.

    ``wbin[v, d]`` (d < 3) is the quality (1..255; 0 = unusable) of the edge between voxel
    ``v`` and ``v + strides[d]``; ``wbin[:, 3]`` must be 0 and is used (overwritten) as the
    reached flag. Growth starts at ``first_seed``; voxels not reached are then seeded in
    index order (one new region each). Returns (unwrapped float32, number of regions).
    """
    phase = _f32(phase)
    wbin = np.ascontiguousarray(wbin, np.uint8)
    n = phase.shape[0]
    n_edges = _count_edges(wbin)
    # queue links and items (edge code 6 * voxel + direction) in 32 bits where they fit
    idx_type = np.int32 if max(n_edges + 1, 6 * n) < 2 ** 31 else np.int64
    head = np.full(256, -1, idx_type)
    nxt = np.empty(n_edges + 1, idx_type)
    item = np.empty(n_edges + 1, idx_type)
    return _grow(phase, wbin, np.asarray(strides, idx_type), idx_type(first_seed), head, nxt,
                 item)


@njit(cache=True, nogil=True, parallel=True)
def _offset_phasor(phase, magnitude, a, dphi, ratio, mask):
    """MCPC-3D-S raw offset ``phi_a - ratio * dphi`` and its weighted phasor.

    ``phase``/``magnitude`` float32 (X, Y, Z, E), ``dphi`` float32 (X, Y, Z), ``mask`` bool.
    Returns (offset, re, im), float32 (X, Y, Z), with ``re + i im = m_a mask exp(i offset)``.
    """
    nx, ny, nz = dphi.shape
    offset = np.empty((nx, ny, nz), np.float32)
    re = np.empty((nx, ny, nz), np.float32)
    im = np.empty((nx, ny, nz), np.float32)
    ratio = np.float32(ratio)
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                o = phase[i, j, k, a] - ratio * dphi[i, j, k]
                offset[i, j, k] = o
                if mask[i, j, k]:
                    w = magnitude[i, j, k, a]
                    re[i, j, k] = w * np.cos(o)
                    im[i, j, k] = w * np.sin(o)
                else:
                    re[i, j, k] = _ZERO32
                    im[i, j, k] = _ZERO32
    return offset, re, im


@njit(cache=True, nogil=True, parallel=True)
def _smooth_axis(re, im, weights, axis):
    """Correlate ``re`` and ``im`` with ``weights`` along ``axis`` ('nearest' boundary)."""
    nx, ny, nz = re.shape
    out_re = np.empty_like(re)
    out_im = np.empty_like(im)
    nt = weights.size
    r = (nt - 1) // 2
    w = weights.astype(np.float32)
    if axis == 2:
        for i in prange(nx):
            for j in range(ny):
                for k in range(nz):
                    sr = _ZERO32
                    si = _ZERO32
                    if r <= k < nz - r:
                        for t in range(nt):
                            sr += w[t] * re[i, j, k + t - r]
                            si += w[t] * im[i, j, k + t - r]
                    else:
                        for t in range(nt):
                            kk = min(max(k + t - r, 0), nz - 1)
                            sr += w[t] * re[i, j, kk]
                            si += w[t] * im[i, j, kk]
                    out_re[i, j, k] = sr
                    out_im[i, j, k] = si
        return out_re, out_im
    # axes 0 and 1: whole rows along the last axis at a time (vectorised inner loop)
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                out_re[i, j, k] = _ZERO32
                out_im[i, j, k] = _ZERO32
            for t in range(nt):
                wt = w[t]
                src_i = np.int64(i)
                src_j = np.int64(j)
                if axis == 0:
                    src_i = min(max(src_i + t - r, 0), nx - 1)
                else:
                    src_j = min(max(src_j + t - r, 0), ny - 1)
                row_re = re[src_i, src_j]
                row_im = im[src_i, src_j]
                for k in range(nz):
                    out_re[i, j, k] += wt * row_re[k]
                    out_im[i, j, k] += wt * row_im[k]
    return out_re, out_im


def gaussian_smooth_pair(re, im, sigma, truncate=4.0):
    """Gaussian smoothing (per-axis ``sigma`` in voxels) of two float32 volumes.

    Same kernel and 'nearest' boundary as ``scipy.ndimage.gaussian_filter`` (radius
    ``int(truncate * sigma + 0.5)``; float32 sums); both volumes share each pass.
    """
    re, im = _f32(re), _f32(im)
    for axis, sd in enumerate(sigma):
        radius = int(truncate * float(sd) + 0.5)
        if sd <= 0 or radius == 0:
            continue
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        w = np.exp(-0.5 * (x / float(sd)) ** 2)
        re, im = _smooth_axis(re, im, w / w.sum(), int(axis))
    return re, im


@njit(cache=True, nogil=True, parallel=True)
def _offset_from_phasor(re, im):
    """Wrapped phase of ``re + i im`` (0 where both are 0), float32."""
    nx, ny, nz = re.shape
    out = np.empty((nx, ny, nz), np.float32)
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                x = re[i, j, k]
                y = im[i, j, k]
                if x == 0 and y == 0:
                    out[i, j, k] = _ZERO32
                else:
                    out[i, j, k] = _wrap32(np.arctan2(y, x))
    return out


@njit(cache=True, nogil=True, parallel=True)
def _subtract_offset(phase, offset):
    """``wrap(phase - offset[..., None])`` for (X, Y, Z, E) float32 phase."""
    nx, ny, nz, ne = phase.shape
    out = np.empty((nx, ny, nz, ne), np.float32)
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                o = offset[i, j, k]
                for e in range(ne):
                    out[i, j, k, e] = _wrap32(phase[i, j, k, e] - o)
    return out


@njit(cache=True, nogil=True, parallel=True)
def _temporal_unwrap_fit(phase, first, mag, te, mask, out, field, field_sd, use_mag,
                         temporal, fit):
    """Temporal unwrapping of echoes 2..E and the weighted fit, one pass over mask voxels.

    ``phase`` float32 (X, Y, Z, E): wrapped offset-free phase if ``temporal`` (echo 1 then
    taken from ``first`` (X, Y, Z)), else the unwrapped phase. ``mag`` (X, Y, Z, E) weights
    (ignored unless ``use_mag``), ``te`` float64 (E,), ``mask`` bool (X, Y, Z). Writes, in the
    mask only (other voxels are left untouched), the unwrapped phase into ``out``
    (X, Y, Z, E) if ``temporal``, and the field (Hz) and its standard error (Hz) into
    ``field``/``field_sd`` (X, Y, Z) if ``fit``. Formulas of `unwrap_echoes_temporally` and
    `fit_field_from_phase` (the fit sums in float64).
    """
    nx, ny, nz, ne = phase.shape
    te32 = te.astype(np.float32)
    for i in prange(nx):
        phi = np.empty(ne, np.float32)
        w = np.empty(ne, np.float32)
        for j in range(ny):
            for k in range(nz):
                if not mask[i, j, k]:
                    continue
                for e in range(ne):
                    if use_mag:
                        m = mag[i, j, k, e]
                        w[e] = m * m
                    else:
                        w[e] = _ONE32
                if temporal:
                    # echo e predicted from the fit through the origin of echoes 0..e-1
                    phi[0] = first[i, j, k]
                    num = _ZERO32
                    den = _ZERO32
                    for e in range(1, ne):
                        wk = w[e - 1] + np.float32(1e-30) if use_mag else _ONE32
                        num += wk * te32[e - 1] * phi[e - 1]
                        den += wk * (te32[e - 1] * te32[e - 1])
                        pred = num / den * te32[e]
                        x = phase[i, j, k, e]
                        phi[e] = x + _TWO_PI32 * np.round((pred - x) * _INV_TWO_PI32)
                    for e in range(ne):
                        out[i, j, k, e] = phi[e]
                else:
                    for e in range(ne):
                        phi[e] = phase[i, j, k, e]
                if fit:
                    num64 = 0.0
                    den64 = 0.0
                    for e in range(ne):
                        num64 += w[e] * te32[e] * phi[e]
                        den64 += w[e] * te32[e] * te32[e]
                    slope = np.float32(num64 / den64) if den64 > 0 else _ZERO32
                    field[i, j, k] = slope / _TWO_PI32
                    if ne > 1 and den64 > 0:
                        var = 0.0
                        for e in range(ne):
                            r = phi[e] - slope * te32[e]
                            var += w[e] * r * r
                        var /= ne - 1
                        field_sd[i, j, k] = np.float32(np.sqrt(var / den64)) / _TWO_PI32
                    else:
                        field_sd[i, j, k] = np.inf
    return out


@njit(cache=True, nogil=True, parallel=True)
def _wrapped_laplacian(phase, mask, inv_d2):
    """Laplacian of the true phase from wrapped ``phase``: ``Im(conj(z) lap(z))``, z = exp(i phi).

    ``z`` is 0 outside ``mask`` and replicated at the volume border ('edge' padding), so each
    in-mask neighbour ``n`` of an in-mask voxel ``v`` contributes
    ``sin(phi_n - phi_v) / d**2`` (``inv_d2`` = 1 / voxel size squared, per axis). Float32,
    0 outside the mask.
    """
    nx, ny, nz = phase.shape
    out = np.zeros((nx, ny, nz), np.float32)
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                if not mask[i, j, k]:
                    continue
                p = phase[i, j, k]
                s = _ZERO32
                for d in range(3):
                    w = np.float32(inv_d2[d])
                    for step in (-1, 1):
                        i1 = i + step * (d == 0)
                        j1 = j + step * (d == 1)
                        k1 = k + step * (d == 2)
                        if 0 <= i1 < nx and 0 <= j1 < ny and 0 <= k1 < nz and mask[i1, j1, k1]:
                            s += w * np.sin(phase[i1, j1, k1] - p)
                out[i, j, k] = s
    return out


# The wrappers below fix every kernel's signature (see the module docstring): C-contiguous
# arrays of fixed dtypes, float32/int/bool scalars. Copies are only made of arrays that are
# not already in that form (e.g. Fortran-ordered or a strided box of a larger volume).

def edge_bins(phase, mask, mag, phase2, te_ratio, mref, use_mag, use_p2):
    """`_edge_bins` on arrays of any layout and dtype (``mag``/``phase2`` used if enabled)."""
    phase = _f32(phase)
    return _edge_bins(phase, _bool(mask), _f32(mag) if use_mag else phase,
                      _f32(phase2) if use_p2 else phase, np.float32(te_ratio),
                      np.float32(mref), bool(use_mag), bool(use_p2))


def offset_phasor(phase, magnitude, a, dphi, ratio, mask):
    """`_offset_phasor` on arrays of any layout and dtype."""
    return _offset_phasor(_f32(phase), _f32(magnitude), int(a), _f32(dphi), np.float32(ratio),
                          _bool(mask))


def offset_from_phasor(re, im):
    """`_offset_from_phasor` on arrays of any layout and dtype."""
    return _offset_from_phasor(_f32(re), _f32(im))


def subtract_offset(phase, offset):
    """`_subtract_offset` on arrays of any layout and dtype."""
    return _subtract_offset(_f32(phase), _f32(offset))


def temporal_unwrap_fit(phase, first, mag, te, mask, out, field, field_sd, use_mag,
                        temporal, fit):
    """`_temporal_unwrap_fit` on arrays of any layout and dtype; returns ``out``.

    The outputs (``out`` if ``temporal``, ``field`` and ``field_sd`` if ``fit``; float32
    arrays, e.g. boxes of larger volumes) are written in place: through a C-contiguous copy
    where they are not C-contiguous. Arguments that are not used (``first`` unless
    ``temporal``, ``mag`` unless ``use_mag``, the outputs not asked for) are replaced by
    small placeholders.
    """
    phase = _f32(phase)
    use_mag, temporal, fit = bool(use_mag), bool(temporal), bool(fit)
    one3 = np.zeros((1, 1, 1), np.float32)
    out_c = _f32(out) if temporal else np.zeros((1, 1, 1, 1), np.float32)
    field_c = _f32(field) if fit else one3
    sd_c = _f32(field_sd) if fit else one3
    _temporal_unwrap_fit(phase, _f32(first) if temporal else one3,
                         _f32(mag) if use_mag else phase,
                         np.ascontiguousarray(te, np.float64), _bool(mask), out_c, field_c,
                         sd_c, use_mag, temporal, fit)
    for dest, res, used in ((out, out_c, temporal), (field, field_c, fit),
                            (field_sd, sd_c, fit)):
        if used and res is not dest:
            dest[...] = res
    return out


def wrapped_laplacian(phase, mask, inv_d2):
    """`_wrapped_laplacian` on arrays of any layout and dtype."""
    return _wrapped_laplacian(_f32(phase), _bool(mask),
                              np.ascontiguousarray(inv_d2, np.float64))


def cache_stats():
    """Per compiled kernel: (signatures compiled or loaded, cache hits, cache misses).

    Returns
    -------
    dict
        ``{name: (int, int, int)}`` for the dispatchers called in this process.
    """
    stats = {}
    for name, obj in sorted(globals().items()):
        if hasattr(obj, "stats") and hasattr(obj, "signatures") and obj.signatures:
            stats[name] = (len(obj.signatures), sum(obj.stats.cache_hits.values()),
                           sum(obj.stats.cache_misses.values()))
    return stats
