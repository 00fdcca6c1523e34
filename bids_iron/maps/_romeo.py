"""Compiled inner loop of quality-guided region-growing phase unwrapping (private).

A bucket priority queue (256 bins of edge quality, one linked list per bin) as in ROMEO
(Dymerska et al. 2021): each edge is pushed at most once (when its first end is reached), so
the work is linear in the number of voxels.
"""

import numpy as np
from numba import njit

_TWO_PI = 2.0 * np.pi


@njit(cache=True, nogil=True)
def _push_edges(v, wbin, label, strides, n, head, nxt, item, free, top):
    for d in range(3):
        s = strides[d]
        # forward neighbour v + s, edge stored at v
        t = v + s
        if t < n:
            b = wbin[d, v]
            if b > 0 and label[t] == 0:
                nxt[free] = head[b]
                item[free] = v * 6 + 2 * d
                head[b] = free
                free += 1
                if b > top:
                    top = b
        # backward neighbour v - s, edge stored at v - s
        t = v - s
        if t >= 0:
            b = wbin[d, t]
            if b > 0 and label[t] == 0:
                nxt[free] = head[b]
                item[free] = v * 6 + 2 * d + 1
                head[b] = free
                free += 1
                if b > top:
                    top = b
    return free, top


@njit(cache=True, nogil=True)
def grow_regions(phase, wbin, strides, first_seed):
    """Unwrap ``phase`` (flat float32) along edges of quantised quality ``wbin`` (3, n) uint8.

    ``wbin[d, v]`` is the quality (1..255; 0 = unusable) of the edge between voxel ``v`` and
    ``v + strides[d]``. Growth starts at ``first_seed``; voxels not reached are then seeded in
    index order (one new region each). Returns (unwrapped float32, region label int32; 0 =
    voxel without any usable edge).
    """
    n = phase.shape[0]
    out = phase.copy()
    label = np.zeros(n, np.int32)
    n_edges = 0
    for d in range(3):
        for v in range(n):
            if wbin[d, v] > 0:
                n_edges += 1
    head = np.full(256, -1, np.int64)
    nxt = np.empty(n_edges + 1, np.int64)
    item = np.empty(n_edges + 1, np.int64)
    free = 0
    region = 0
    for k in range(-1, n):
        seed = first_seed if k < 0 else k
        if seed < 0 or label[seed] != 0:
            continue
        has_edge = False
        for d in range(3):
            if wbin[d, seed] > 0 or (seed - strides[d] >= 0 and wbin[d, seed - strides[d]] > 0):
                has_edge = True
        if not has_edge:
            continue
        region += 1
        label[seed] = region
        top = 0
        free, top = _push_edges(seed, wbin, label, strides, n, head, nxt, item, free, top)
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
            if label[tgt] != 0:
                continue
            label[tgt] = region
            out[tgt] = phase[tgt] + _TWO_PI * np.round((out[src] - phase[tgt]) / _TWO_PI)
            free, top = _push_edges(tgt, wbin, label, strides, n, head, nxt, item, free, top)
    return out, label
