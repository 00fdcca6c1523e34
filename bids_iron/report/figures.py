"""Figures of the subject report: slice mosaics, registration check, QC (matplotlib, Agg).

Every figure is drawn on a bare `matplotlib.figure.Figure` (Agg canvas, no pyplot state, safe
in worker processes) and returned as PNG bytes; `bids_iron.report._html.figure` embeds them as a ``data:`` URI so
the HTML report is one file that works offline.

Orientation: when an affine is given, arrays are reoriented to the closest RAS+ axes
(`as_ras`) so axial slices are drawn with the subject's left on the left of the image
(neurological convention) and anterior at the top; without an affine the stored axes are
taken as such. Slices are chosen through the deep gray matter (`pick_slices`).
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from scipy import ndimage

from ..anatomy.rois import NATIVE_LABELS, NUCLEI, ROI_NAMES

#: Colour (RGB 0-1) of each ROI's contour; left and right share a colour.
ROI_COLOURS = {
    "caudate": (0.12, 0.47, 0.71), "putamen": (1.00, 0.50, 0.05),
    "globus_pallidus": (0.17, 0.63, 0.17), "thalamus": (0.84, 0.15, 0.16),
    "pulvinar": (0.58, 0.40, 0.74), "substantia_nigra": (0.55, 0.34, 0.29),
    "red_nucleus": (0.89, 0.47, 0.76), "dentate_nucleus": (0.74, 0.74, 0.13),
    "csf": (0.09, 0.75, 0.81), "internal_capsule": (0.68, 0.78, 0.91),
    "white_matter": (0.60, 0.60, 0.60), "lesion": (1.00, 0.00, 1.00),
}
#: ROIs drawn without contours (white matter: its outline is the brain's; it would clutter).
NO_CONTOUR = ("white_matter",)
MASK_COLOUR = (1.0, 0.85, 0.0)  # brain-mask outline
MASK_COLOUR_HEX = "#ffd900"
TEMPLATE_EDGE_COLOUR = (1.0, 0.1, 0.1)
DPI = 90
PANEL_INCHES = 1.9


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="black" if fig.get_facecolor()[0] == 0
                else "white")
    return buf.getvalue()


# -- geometry ---------------------------------------------------------------------------------
def as_ras(array, affine, voxel_size):
    """Reorient ``array`` (3-D or 4-D) to the closest RAS+ axes of ``affine``.

    Parameters
    ----------
    array : ndarray or None
    affine : ndarray, shape (4, 4), or None
        Voxel-to-world affine; None keeps the array as stored.
    voxel_size : sequence of 3 float
        Voxel size in mm (in the stored axis order).

    Returns
    -------
    array : ndarray or None
        A view (axes permuted/flipped), not a copy.
    voxel_size : tuple of 3 float
        Voxel sizes in the new axis order (mm).
    """
    voxel_size = tuple(float(v) for v in voxel_size)
    if array is None or affine is None:
        return array, voxel_size
    import nibabel.orientations as nio

    ornt = nio.io_orientation(np.asarray(affine, dtype=float))
    out = array
    # flips first (in stored axes), then one transpose
    for axis, (_, flip) in enumerate(ornt):
        if flip < 0:
            out = np.flip(out, axis=axis)
    order = [int(a) for a in np.argsort(ornt[:, 0])]
    out = np.transpose(out, order + list(range(3, out.ndim)))
    return out, tuple(voxel_size[i] for i in order)


def pick_slices(shape, labels=None, mask=None, n=6, axis=2):
    """Indices of ``n`` slices along ``axis`` through the deep gray matter.

    With labels, the slices span the 5th-95th percentile along ``axis`` of the voxels of the
    nuclei (caudate ... dentate nucleus); otherwise the central part (30-70 %) of the brain
    mask's extent (the deep gray matter lies there), otherwise of the whole grid.

    Parameters
    ----------
    shape : tuple of int
        Grid shape (at least 3-D).
    labels : ndarray of int, optional
        Native label map (`bids_iron.anatomy.rois.NATIVE_LABELS`).
    mask : ndarray of bool, optional
        Brain mask.
    n : int
        Number of slices.
    axis : int
        Slice axis (2 = axial for RAS-ordered grids).

    Returns
    -------
    list of int
        Distinct, increasing slice indices.
    """
    size = shape[axis]
    lo = hi = None
    if labels is not None:
        nuclei = [i for i, (roi, _) in NATIVE_LABELS.items() if roi in NUCLEI]
        other = tuple(a for a in range(3) if a != axis)
        profile = np.isin(labels, nuclei).sum(axis=other)
        if profile.sum() > 0:
            cdf = np.cumsum(profile) / profile.sum()
            lo, hi = int(np.searchsorted(cdf, 0.05)), int(np.searchsorted(cdf, 0.95))
    if lo is None and mask is not None and np.any(mask):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=other))
        first, last = present[0], present[-1]
        lo, hi = int(first + 0.3 * (last - first)), int(first + 0.7 * (last - first))
    if lo is None:
        lo, hi = int(0.3 * (size - 1)), int(0.7 * (size - 1))
    picks = np.unique(np.round(np.linspace(lo, hi, n)).astype(int).clip(0, size - 1))
    return [int(v) for v in picks]


def crop_box(mask, shape, margin=4):
    """In-plane (axes 0, 1) bounding box of the mask, padded; the whole plane without mask."""
    if mask is None or not np.any(mask):
        return slice(0, shape[0]), slice(0, shape[1])
    rows = np.flatnonzero(np.any(mask, axis=(1, 2)))
    cols = np.flatnonzero(np.any(mask, axis=(0, 2)))
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, shape[0])),
            slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, shape[1])))


def _outline(mask2d):
    """Inner boundary of a 2-D boolean mask (voxels with a 4-neighbour outside)."""
    if not mask2d.any():
        return mask2d
    return mask2d & ~ndimage.binary_erosion(mask2d, border_value=0)


def _label_edges(lab2d):
    """Boundary voxels of each label of a 2-D label slice (label > 0, a 4-neighbour differs)."""
    edge = np.zeros(lab2d.shape, dtype=bool)
    diff0 = lab2d[1:, :] != lab2d[:-1, :]
    diff1 = lab2d[:, 1:] != lab2d[:, :-1]
    edge[1:, :] |= diff0
    edge[:-1, :] |= diff0
    edge[:, 1:] |= diff1
    edge[:, :-1] |= diff1
    return edge & (lab2d > 0)


_LUT = np.zeros((max(NATIVE_LABELS) + 1, 3))
_NO_CONTOUR = np.zeros(max(NATIVE_LABELS) + 1, dtype=bool)  # white matter: no contour
for _index, (_roi, _hemi) in NATIVE_LABELS.items():
    _LUT[_index] = ROI_COLOURS[_roi]
    _NO_CONTOUR[_index] = _roi in NO_CONTOUR


def _overlay(shape2d, mask2d=None, lab2d=None):
    """RGBA overlay (float, shape (X, Y, 4)) of mask outline and label contours, or None."""
    if mask2d is None and lab2d is None:
        return None
    rgba = np.zeros(shape2d + (4,), dtype=np.float32)
    if lab2d is not None:
        lab = np.where((lab2d > 0) & (lab2d < _LUT.shape[0]), lab2d, 0).astype(np.intp)
        lab[_NO_CONTOUR[lab]] = 0
        edge = _label_edges(lab)
        rgba[edge, :3] = _LUT[lab[edge]]
        rgba[edge, 3] = 1.0
    if mask2d is not None:
        edge = _outline(mask2d)
        rgba[edge, :3] = MASK_COLOUR
        rgba[edge, 3] = 1.0
    return rgba


def _show(ax, image2d, aspect, **kwargs):
    """imshow of an (X, Y) slice with X to the right and Y up."""
    image2d = np.asarray(image2d)
    image2d = image2d.transpose(1, 0, 2) if image2d.ndim == 3 else image2d.T
    return ax.imshow(image2d, origin="lower", aspect=aspect,
                     interpolation="nearest", **kwargs)


def robust_range(values, symmetric=False, upper=99.5, lower=0.5):
    """Display range of a map: percentiles (of a subsample, for speed), or +-the abs one.

    Parameters
    ----------
    values : ndarray
        Values to scale (e.g. the map inside the brain mask).
    symmetric : bool
        Return ``(-p, p)`` with ``p`` the ``upper`` percentile of ``|values|``.

    Returns
    -------
    (float, float)
    """
    values = np.asarray(values).ravel()
    values = values[np.isfinite(values)]
    if values.size > 200_000:
        values = values[:: values.size // 200_000]
    if values.size == 0:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        p = float(np.percentile(np.abs(values), upper))
        p = p if p > 0 else 1.0
        return -p, p
    lo, hi = (float(v) for v in np.percentile(values, [lower, upper]))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


# -- figures ----------------------------------------------------------------------------------
def map_mosaic(image, slices, voxel_size, title="", units="", vrange=None, mask=None,
               labels=None, cmap="gray", symmetric=False, crop=None):
    """PNG of axial slices of a 3-D map with the mask outline and atlas contours.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        The map (RAS-ordered for the usual orientation, see `as_ras`).
    slices : list of int
        Axial (third axis) slice indices.
    voxel_size : sequence of 3 float
        Voxel size (mm), for the pixel aspect ratio.
    title, units : str
        Shown left of the slices and on the colour bar.
    vrange : (float, float), optional
        Display range; default `robust_range` of the map inside ``mask``.
    mask : ndarray of bool, optional
        Brain mask: its outline is drawn in yellow and the view cropped to it.
    labels : ndarray of int, optional
        Native label map: contours in `ROI_COLOURS`.
    cmap : str
    symmetric : bool
        Symmetric default range (for LFS and chi).
    crop : tuple of slice, optional
        In-plane crop (default: the mask's bounding box).

    Returns
    -------
    bytes
        PNG image.
    """
    image = np.asarray(image)
    if vrange is None:
        inside = image[mask] if mask is not None and np.any(mask) else image
        vrange = robust_range(inside, symmetric=symmetric)
    if crop is None:
        crop = crop_box(mask, image.shape)
    aspect = voxel_size[1] / voxel_size[0]
    width = crop[0].stop - crop[0].start
    height = crop[1].stop - crop[1].start
    panel_h = PANEL_INCHES * min(1.4, max(0.5, height * voxel_size[1] / (width * voxel_size[0])))
    fig = Figure(figsize=(PANEL_INCHES * len(slices) + 0.9, panel_h + 0.3), facecolor="black")
    axes = fig.subplots(1, len(slices), squeeze=False)[0]
    fig.subplots_adjust(left=0.01, right=1 - 0.85 / fig.get_figwidth(), bottom=0.02,
                        top=1 - 0.28 / fig.get_figheight(), wspace=0.02)
    im = None
    for ax, k in zip(axes, slices):
        sl = image[crop[0], crop[1], k]
        im = _show(ax, sl, aspect, cmap=cmap, vmin=vrange[0], vmax=vrange[1])
        over = _overlay(sl.shape, None if mask is None else mask[crop[0], crop[1], k],
                        None if labels is None else labels[crop[0], crop[1], k])
        if over is not None:
            _show(ax, over, aspect)
        ax.set_axis_off()
        ax.text(0.02, 0.02, f"z={k}", color="white", fontsize=7, transform=ax.transAxes)
    axes[0].text(0.02, 0.98, "L", color="white", fontsize=8, va="top", transform=axes[0].transAxes)
    axes[0].text(0.98, 0.98, "R", color="white", fontsize=8, va="top", ha="right",
                 transform=axes[0].transAxes)
    fig.suptitle(title, color="white", fontsize=9, x=0.01, ha="left", y=0.995)
    cax = fig.add_axes([1 - 0.75 / fig.get_figwidth(), 0.12, 0.12 / fig.get_figwidth(), 0.7])
    bar = fig.colorbar(im, cax=cax)
    bar.ax.tick_params(colors="white", labelsize=7)
    bar.set_label(units, color="white", fontsize=7)
    return _png(fig)


def _edges_2d(image2d, fraction=0.08):
    """Strongest ``fraction`` of Sobel gradient magnitudes of a 2-D image (inside it)."""
    img = np.asarray(image2d, dtype=np.float32)
    grad = np.hypot(ndimage.sobel(img, 0), ndimage.sobel(img, 1))
    inside = img > 0.05 * (np.percentile(img, 99) if img.size else 0)
    if not inside.any():
        return np.zeros(img.shape, dtype=bool)
    cut = np.percentile(grad[inside], 100 * (1 - fraction))
    return (grad > cut) & (grad > 0)


def registration_figure(magnitude, template, slices, voxel_size, mask=None):
    """PNG: template edges (red) over the subject's magnitude, axial, coronal and sagittal.

    Parameters
    ----------
    magnitude : ndarray, shape (X, Y, Z)
        Subject magnitude (first echo), RAS-ordered.
    template : ndarray, shape (X, Y, Z)
        Template image resampled to the subject grid (``template_in_native``).
    slices : list of int
        Axial slices; the coronal and sagittal views pass through the centre of the
        brain mask (or grid).
    voxel_size : sequence of 3 float
        Voxel size (mm).
    mask : ndarray of bool, optional
        Brain mask, to crop the axial views and centre the others.

    Returns
    -------
    bytes
        PNG image.
    """
    magnitude = np.asarray(magnitude, dtype=np.float32)
    template = np.asarray(template, dtype=np.float32)
    if mask is not None and np.any(mask):
        centre = [int(np.mean(np.flatnonzero(np.any(mask, axis=tuple(b for b in range(3)
                                                                         if b != a)))))
                  for a in range(3)]
    else:
        centre = [s // 2 for s in magnitude.shape]
    vmin = 0.0
    axial = list(slices[:: max(1, len(slices) // 4)])[:4]
    shown = magnitude[:, :, axial]  # display range from the axial slices shown (fast)
    vmax = robust_range(shown[shown > 0] if np.any(shown > 0) else shown, upper=99.5)[1]
    views = [("axial", k) for k in axial] + [("coronal", centre[1]), ("sagittal", centre[0])]
    fig = Figure(figsize=(PANEL_INCHES * len(views), PANEL_INCHES + 0.3), facecolor="black")
    axes = fig.subplots(1, len(views), squeeze=False)[0]
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.88, wspace=0.02)
    crop = crop_box(mask, magnitude.shape)
    for ax, (view, index) in zip(axes, views):
        if view == "axial":
            mag, tpl = (a[crop[0], crop[1], index] for a in (magnitude, template))
            aspect = voxel_size[1] / voxel_size[0]
        elif view == "coronal":
            mag, tpl = magnitude[:, index, :], template[:, index, :]
            aspect = voxel_size[2] / voxel_size[0]
        else:
            mag, tpl = magnitude[index, :, :], template[index, :, :]
            aspect = voxel_size[2] / voxel_size[1]
        _show(ax, mag, aspect, cmap="gray", vmin=vmin, vmax=vmax)
        edge = _edges_2d(tpl)
        rgba = np.zeros(edge.shape + (4,), dtype=np.float32)
        rgba[edge, :3] = TEMPLATE_EDGE_COLOUR
        rgba[edge, 3] = 0.9
        _show(ax, rgba, aspect)
        ax.set_axis_off()
        ax.set_title(f"{view} {index}", color="white", fontsize=7)
    return _png(fig)


def residual_figure(residual, mask, slices, voxel_size, labels=None):
    """PNG: histogram of the R2* fit residual in the mask and axial slices of it.

    Parameters
    ----------
    residual : ndarray, shape (X, Y, Z)
        Normalised RMS residual of the mono-exponential fit (unitless, 0 = perfect).
    mask : ndarray of bool or None
        Voxels to histogram (default: residual > 0).
    slices : list of int
    voxel_size : sequence of 3 float
    labels : ndarray of int, optional
        Native labels, drawn as contours on the slices.

    Returns
    -------
    bytes
        PNG image.
    """
    residual = np.asarray(residual, dtype=np.float32)
    sel = mask if mask is not None and np.any(mask) else residual > 0
    values = residual[sel]
    values = values[np.isfinite(values)]
    hi = float(np.percentile(values, 99.5)) if values.size else 1.0
    hi = hi if hi > 0 else 1.0
    n = min(4, len(slices))
    picks = [slices[int(i)] for i in np.linspace(0, len(slices) - 1, n).round()]
    fig = Figure(figsize=(PANEL_INCHES * (n + 1.6), PANEL_INCHES + 0.4), facecolor="white")
    grid = fig.add_gridspec(1, n + 2, width_ratios=[1.6] + [1] * n + [0.08], wspace=0.05)
    fig.subplots_adjust(left=0.06, right=0.96, bottom=0.22, top=0.86)
    ax = fig.add_subplot(grid[0])
    ax.hist(np.clip(values, 0, hi), bins=60, range=(0, hi), color="0.3")
    ax.set_yscale("log")
    ax.set_xlabel("normalised RMS residual", fontsize=7)
    ax.set_ylabel("voxels", fontsize=7)
    ax.tick_params(labelsize=6)
    if values.size:
        med = float(np.median(values))
        ax.axvline(med, color="tab:red", lw=1)
        ax.set_title(f"median {med:.3g}", fontsize=7)
    crop = crop_box(mask, residual.shape)
    aspect = voxel_size[1] / voxel_size[0]
    im = None
    for i, k in enumerate(picks):
        axk = fig.add_subplot(grid[i + 1])
        sl = residual[crop[0], crop[1], k]
        im = _show(axk, sl, aspect, cmap="magma", vmin=0, vmax=hi)
        if labels is not None:
            over = _overlay(sl.shape, None, labels[crop[0], crop[1], k])
            _show(axk, over, aspect)
        axk.set_axis_off()
        axk.set_title(f"z={k}", fontsize=7)
    if im is not None:
        bar = fig.colorbar(im, cax=fig.add_subplot(grid[-1]))
        bar.ax.tick_params(labelsize=6)
    return _png(fig)


# -- QC numbers -------------------------------------------------------------------------------
def mask_volume_ml(mask, voxel_size):
    """Brain-mask volume in mL (voxels times voxel volume in mm^3, / 1000)."""
    return float(np.count_nonzero(mask)) * float(np.prod(voxel_size)) / 1000.0


def snr_estimate(magnitude, mask, residual=None, voxel_size=None):
    """Signal-to-noise estimates of a magnitude series (QC indices, not absolute SNR).

    Two estimates, documented in the report:

    * ``background``: the noise sigma from the air in the eight corners of the grid (boxes of
      1/8 of each dimension, voxels farther than 4 voxels from the brain mask and not exactly
      0), as ``median / sqrt(2 ln 2)`` (the median of Rayleigh-distributed noise magnitude);
      SNR = mean signal of the brain mask / sigma, for the first and the last echo. It
      assumes single-channel (Rayleigh) noise; with root-sum-of-squares coil combination the
      noise is non-central chi and the sigma is overestimated by up to ~sqrt(2n_coils), and
      zero-filled or filtered backgrounds make it meaningless (then reported as None).
    * ``fit``: with ``residual`` (the normalised RMS residual of the mono-exponential R2* fit,
      sqrt(sum(S - fit)^2 / sum S^2)) and at least 3 echoes: per-voxel noise
      sigma = residual * sqrt(sum S^2 / (n_echoes - 2)), its median in the mask; SNR = mean
      first-echo signal / sigma. Model error adds to it, so it is a lower bound.

    Parameters
    ----------
    magnitude : ndarray, shape (X, Y, Z) or (X, Y, Z, n_echoes)
    mask : ndarray of bool, shape (X, Y, Z)
    residual : ndarray, shape (X, Y, Z), optional

    Returns
    -------
    dict
        ``snr_background_first``, ``snr_background_last`` (None when not estimable),
        ``noise_sigma_background``, ``n_background_voxels``, ``snr_fit`` (or None),
        ``mean_signal_first``.
    """
    mag = np.asarray(magnitude)
    if mag.ndim == 3:
        mag = mag[..., None]
    first = mag[..., 0]
    last = mag[..., -1]
    mask = np.asarray(mask, dtype=bool)
    out = {"snr_background_first": None, "snr_background_last": None,
           "noise_sigma_background": None, "n_background_voxels": 0, "snr_fit": None,
           "mean_signal_first": None}
    if not mask.any():
        return out
    s_first = float(np.mean(first[mask]))
    s_last = float(np.mean(last[mask]))
    out["mean_signal_first"] = s_first
    shape = mask.shape
    cut = [max(2, s // 8) for s in shape]
    gap = 4  # voxels kept between the brain mask and the background sample
    values = []
    for ci in (slice(0, cut[0]), slice(shape[0] - cut[0], shape[0])):
        for cj in (slice(0, cut[1]), slice(shape[1] - cut[1], shape[1])):
            for ck in (slice(0, cut[2]), slice(shape[2] - cut[2], shape[2])):
                box = (ci, cj, ck)
                # dilate the mask only around this corner (fast on large grids)
                big = tuple(slice(max(s.start - gap, 0), min(s.stop + gap, n))
                            for s, n in zip(box, shape))
                near = mask[big]
                if near.any():
                    near = ndimage.binary_dilation(near, iterations=gap)
                inner = tuple(slice(s.start - b.start, s.stop - b.start)
                              for s, b in zip(box, big))
                v = first[box][~near[inner]]
                values.append(v[np.isfinite(v)])
    values = np.concatenate(values) if values else np.zeros(0)
    nonzero = values[values != 0]
    if values.size >= 100 and nonzero.size >= 0.5 * values.size:
        sigma = float(np.median(nonzero)) / np.sqrt(2 * np.log(2))
        if sigma > 0:
            out["noise_sigma_background"] = sigma
            out["n_background_voxels"] = int(nonzero.size)
            out["snr_background_first"] = s_first / sigma
            out["snr_background_last"] = s_last / sigma
    n_echo = mag.shape[-1]
    if residual is not None and n_echo >= 3:
        # a median: a regular subsample of <= 200 000 brain voxels is plenty
        idx = np.flatnonzero(mask)
        idx = idx[:: max(1, idx.size // 200_000)]
        ijk = np.unravel_index(idx, shape)
        res = np.asarray(residual)[ijk]
        energy = np.sum(mag[ijk].astype(np.float64) ** 2, axis=-1)
        sigma_fit = res * np.sqrt(energy / (n_echo - 2))
        ok = np.isfinite(sigma_fit) & (res > 0)
        if ok.any():
            sigma = float(np.median(sigma_fit[ok]))
            out["snr_fit"] = s_first / sigma if sigma > 0 else None
    return out


def roi_legend():
    """(roi, hex colour) pairs of the contour colours, vocabulary order."""
    return [(roi, "#%02x%02x%02x" % tuple(int(round(255 * c)) for c in ROI_COLOURS[roi]))
            for roi in ROI_NAMES]
