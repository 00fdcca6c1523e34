"""Figures of the subject report: slice mosaics, registration check, QC (matplotlib, Agg).

Every figure is drawn on a bare `matplotlib.figure.Figure` (Agg canvas, no pyplot state, safe
in worker processes) and returned as PNG bytes; `bids_iron.report._html.figure` embeds them
as a ``data:`` URI so the HTML report is one file that works offline. Map mosaics are one
image of all slices (`mosaic_array`) on one axis, with a colour bar in physical units; ROI and
mask outlines are thin line segments along the voxel edges (`outline_segments`), drawn just
inside each region so that small nuclei stay visible.

Orientation: when an affine is given, arrays are reoriented to the closest RAS+ axes
(`as_ras`) so axial slices are drawn with the subject's left on the left of the image
(neurological convention) and anterior at the top; without an affine the stored axes are
taken as such. Slices are chosen through the deep gray matter (`pick_slices`).
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from matplotlib.collections import LineCollection
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
#: Iso-intensity levels of the template drawn on the registration check, as fractions of its
#: 99.5th percentile (background/brain, CSF/gray matter, gray/white matter of a T1w).
TEMPLATE_LEVELS = (0.3, 0.55, 0.8)
DPI = 90
#: Map mosaics: slices per row and the figure width (inches; x `DPI` = 1215 px, the page's
#: width, so a tile is ~290 px wide).
MOSAIC_COLUMNS = 4
MOSAIC_WIDTH_IN = 13.5
#: Outlines are drawn along the voxel edges, this fraction of a voxel inside their region (so
#: two touching regions show both colours) and this thin (points): the nucleus stays visible.
OUTLINE_INSET = 0.14
OUTLINE_WIDTH = 0.9


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


_LUT = np.zeros((max(NATIVE_LABELS) + 1, 3))
_NO_CONTOUR = np.zeros(max(NATIVE_LABELS) + 1, dtype=bool)  # white matter: no contour
for _index, (_roi, _hemi) in NATIVE_LABELS.items():
    _LUT[_index] = ROI_COLOURS[_roi]
    _NO_CONTOUR[_index] = _roi in NO_CONTOUR


def outline_segments(lab2d, inset=OUTLINE_INSET):
    """Line segments along the voxel edges of each region of a 2-D label slice.

    Each edge between two voxels of different labels gives a segment for each side whose
    label is > 0, drawn ``inset`` voxel inside that side (so two touching regions show both
    outlines). Coordinates are those of `_show` (first array axis to the right, second up,
    voxel centres at integers).

    Parameters
    ----------
    lab2d : ndarray of int, shape (X, Y)
        Label slice (0 = background: no outline).
    inset : float
        Offset into the region, in voxels.

    Returns
    -------
    segments : ndarray, shape (n, 2, 2)
        ``[[x0, y0], [x1, y1]]`` per segment.
    labels : ndarray of int, shape (n,)
        The label each segment outlines.

    Examples
    --------
    >>> seg, lab = outline_segments(np.array([[0, 0, 0], [0, 3, 0], [0, 0, 0]]), inset=0)
    >>> len(seg), set(lab.tolist())
    (4, {3})
    >>> sorted(map(tuple, seg[:, 0].round(2).tolist()))
    [(0.5, 0.5), (0.5, 0.5), (0.5, 1.5), (1.5, 0.5)]
    """
    lab = np.asarray(lab2d)
    segs, labs = [], []
    # edges between (i, j) and (i + 1, j): vertical lines at x = i + 0.5
    i, j = np.nonzero(lab[1:, :] != lab[:-1, :])
    for side, sign in ((lab[i, j], -1.0), (lab[i + 1, j], 1.0)):
        keep = side > 0
        x = i[keep] + 0.5 + sign * inset
        y = j[keep]
        segs.append(np.stack([np.stack([x, y - 0.5], -1), np.stack([x, y + 0.5], -1)], 1))
        labs.append(side[keep])
    # edges between (i, j) and (i, j + 1): horizontal lines at y = j + 0.5
    i, j = np.nonzero(lab[:, 1:] != lab[:, :-1])
    for side, sign in ((lab[i, j], -1.0), (lab[i, j + 1], 1.0)):
        keep = side > 0
        y = j[keep] + 0.5 + sign * inset
        x = i[keep]
        segs.append(np.stack([np.stack([x - 0.5, y], -1), np.stack([x + 0.5, y], -1)], 1))
        labs.append(side[keep])
    return (np.concatenate(segs).astype(float).reshape(-1, 2, 2),
            np.concatenate(labs).astype(np.intp))


def _outline_lines(mask2d=None, lab2d=None):
    """(segments, RGB colours) of the atlas label outlines (`ROI_COLOURS`, not `NO_CONTOUR`)
    and then of the brain mask (`MASK_COLOUR`) of a slice, each as an array pair; empty
    parts are left out."""
    out = []
    if lab2d is not None:
        lab = np.where((lab2d > 0) & (lab2d < _LUT.shape[0]), lab2d, 0).astype(np.intp)
        lab[_NO_CONTOUR[lab]] = 0
        if lab.any():
            segs, which = outline_segments(lab)
            out.append((segs, _LUT[which]))
    if mask2d is not None and np.any(mask2d):
        segs, _ = outline_segments(np.asarray(mask2d, dtype=np.int8), inset=0.0)
        out.append((segs, np.tile(MASK_COLOUR, (len(segs), 1))))
    return out


def _widths(colours):
    """Line width of each colour group of `_outline_lines`: the mask outline a little
    thinner."""
    return [OUTLINE_WIDTH * (0.8 if len(c) and tuple(c[0]) == MASK_COLOUR else 1.0)
            for c in colours]


def mosaic_array(image, slices, crop, columns=MOSAIC_COLUMNS, gap=None):
    """Axial slices of ``image`` (cropped in-plane) laid out on one 2-D sheet, NaN between.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
    slices : list of int
        Third-axis indices, placed row by row, ``columns`` a row, the first row on top (as
        `_show` draws the sheet: first axis to the right, second up).
    crop : (slice, slice)
        In-plane crop of each slice.
    gap : int, optional
        Voxels between tiles (default 2 % of the crop width, at least 1).

    Returns
    -------
    sheet : ndarray of float32, shape (W, H)
    origins : list of (int, int)
        Sheet coordinates of each slice's voxel (0, 0).

    Examples
    --------
    >>> sheet, origins = mosaic_array(np.ones((4, 3, 5)), [0, 1, 2], (slice(0, 4), slice(0, 3)),
    ...                               columns=2, gap=1)
    >>> sheet.shape, origins
    ((9, 7), [(0, 4), (5, 4), (0, 0)])
    >>> int(np.isnan(sheet).sum())  # the gaps and the empty fourth place
    27
    """
    width = crop[0].stop - crop[0].start
    height = crop[1].stop - crop[1].start
    gap = max(1, round(0.02 * width)) if gap is None else int(gap)
    columns = max(1, min(columns, len(slices)))
    rows = -(-len(slices) // columns)
    sheet = np.full((columns * (width + gap) - gap, rows * (height + gap) - gap), np.nan,
                    dtype=np.float32)
    origins = []
    for index, k in enumerate(slices):
        r, c = divmod(index, columns)
        x0, y0 = c * (width + gap), (rows - 1 - r) * (height + gap)
        sheet[x0:x0 + width, y0:y0 + height] = image[crop[0], crop[1], k]
        origins.append((x0, y0))
    return sheet, origins


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
#: Text on images: white on a dark box (readable over noise and bright tissue).
_LABEL_STYLE = {"color": "white", "bbox": {"facecolor": "black", "alpha": 0.6, "pad": 1.5,
                                           "edgecolor": "none"}}


def tile_grid(n, aspect, columns=MOSAIC_COLUMNS, width=MOSAIC_WIDTH_IN, right=0.0, top=0.35,
              gap=0.04, facecolor="black"):
    """A figure of ``n`` equal image tiles in rows of ``columns`` (the last row may be short).

    Parameters
    ----------
    n : int
        Number of tiles.
    aspect : float
        Height / width of a tile (the physical aspect of what it shows).
    columns : int
    width : float
        Figure width (inches); the tiles share it less ``right``.
    right, top : float
        Space (inches) kept on the right (colour bar) and on top (title).
    gap : float
        Space between tiles (inches).

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : list of Axes
        Row by row; their axis lines are off.
    """
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    left = 0.05
    tile_w = (width - right - left - gap * (columns - 1)) / columns
    tile_h = tile_w * aspect
    height = top + rows * tile_h + gap * (rows - 1) + 0.05
    fig = Figure(figsize=(width, height), facecolor=facecolor)
    axes = []
    for index in range(n):
        r, c = divmod(index, columns)
        x0 = left + c * (tile_w + gap)
        y0 = height - top - (r + 1) * tile_h - r * gap
        ax = fig.add_axes([x0 / width, y0 / height, tile_w / width, tile_h / height])
        ax.set_axis_off()
        axes.append(ax)
    return fig, axes


def map_mosaic(image, slices, voxel_size, **options):
    """PNG bytes of `mosaic_figure` (same arguments)."""
    return _png(mosaic_figure(image, slices, voxel_size, **options))


def mosaic_figure(image, slices, voxel_size, title="", units="", vrange=None, mask=None,
                  labels=None, cmap="gray", symmetric=False, crop=None, quantity=None,
                  columns=MOSAIC_COLUMNS):
    """Axial slices of a 3-D map with a colour bar, the mask and atlas outlines.

    The slices are laid out by `mosaic_array` (``columns`` a row, the page's width) on one
    image axis; outlines are thin lines along the voxel edges (`outline_segments`), so small
    nuclei stay visible.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        The map (RAS-ordered for the usual orientation, see `as_ras`).
    slices : list of int
        Axial (third axis) slice indices.
    voxel_size : sequence of 3 float
        Voxel size (mm), for the pixel aspect ratio.
    title : str
        Shown above the slices.
    units : str
        Physical units of the map (``1/s``, ``ppm``, ``a.u.``): on the colour bar.
    vrange : (float, float), optional
        Display range; default `robust_range` of the map inside ``mask``.
    mask : ndarray of bool, optional
        Brain mask: its outline is drawn in yellow and the view cropped to it.
    labels : ndarray of int, optional
        Native label map: outlines in `ROI_COLOURS`.
    cmap : str
    symmetric : bool
        Symmetric default range (for LFS and chi).
    crop : tuple of slice, optional
        In-plane crop (default: the mask's bounding box).
    quantity : str, optional
        Name of the quantity on the colour bar, ``"<quantity> [<units>]"`` (default: the
        title).
    columns : int
        Slices a row.

    Returns
    -------
    matplotlib.figure.Figure
        One axis per slice (an image, outlines as line collections), then the colour bar's.
    """
    image = np.asarray(image)
    if vrange is None:
        inside = image[mask] if mask is not None and np.any(mask) else image
        vrange = robust_range(inside, symmetric=symmetric)
    if crop is None:
        crop = crop_box(mask, image.shape)
    aspect = voxel_size[1] / voxel_size[0]
    sheet, origins = mosaic_array(image, slices, crop, columns)
    segments, colours, widths = [], [], []
    for (x0, y0), k in zip(origins, slices):
        parts = _outline_lines(None if mask is None else mask[crop[0], crop[1], k],
                               None if labels is None else labels[crop[0], crop[1], k])
        for (seg, colour), width in zip(parts, _widths([c for _, c in parts])):
            segments.append(seg + np.array([x0, y0], dtype=float))
            colours.append(colour)
            widths.append(np.full(len(seg), width))
    # one image axis for all slices (an axis per slice costs ~25 ms each), the colour bar's
    right, top, left = 1.25, 0.4, 0.05
    axes_w = MOSAIC_WIDTH_IN - right - left
    axes_h = axes_w * sheet.shape[1] * voxel_size[1] / (sheet.shape[0] * voxel_size[0])
    fig_h = axes_h + top + 0.05
    fig = Figure(figsize=(MOSAIC_WIDTH_IN, fig_h), facecolor="black")
    ax = fig.add_axes([left / MOSAIC_WIDTH_IN, 0.05 / fig_h, axes_w / MOSAIC_WIDTH_IN,
                       axes_h / fig_h])
    ax.set_axis_off()
    colour_map = matplotlib.colormaps[cmap].with_extremes(bad="black")
    im = _show(ax, np.ma.masked_invalid(sheet), aspect, cmap=colour_map, vmin=vrange[0],
               vmax=vrange[1])
    if segments:
        ax.add_collection(LineCollection(np.concatenate(segments), colors=np.concatenate(colours),
                                         linewidths=np.concatenate(widths),
                                         capstyle="projecting"))
    ax.set_xlim(-0.5, sheet.shape[0] - 0.5)
    ax.set_ylim(-0.5, sheet.shape[1] - 0.5)
    width = crop[0].stop - crop[0].start
    height = crop[1].stop - crop[1].start
    for index, ((x0, y0), k) in enumerate(zip(origins, slices)):
        ax.text(x0 + 0.02 * width, y0 + 0.02 * height, f"z={k}", fontsize=9, **_LABEL_STYLE)
        if index % columns == 0:
            ax.text(x0 + 0.02 * width, y0 + 0.98 * height, "L", fontsize=10, va="top",
                    **_LABEL_STYLE)
        if index % columns == columns - 1 or index == len(slices) - 1 and index < columns:
            ax.text(x0 + 0.98 * width, y0 + 0.98 * height, "R", fontsize=10, va="top",
                    ha="right", **_LABEL_STYLE)
    fig.text(left / MOSAIC_WIDTH_IN, 1 - 0.08 / fig_h, title, color="white", fontsize=12,
             va="top", ha="left", fontweight="bold")
    cax = fig.add_axes([1 - 1.0 / MOSAIC_WIDTH_IN, (0.05 + 0.1 * axes_h) / fig_h,
                        0.2 / MOSAIC_WIDTH_IN, 0.8 * axes_h / fig_h])
    bar = fig.colorbar(im, cax=cax)
    bar.formatter.set_useOffset(False)
    bar.ax.tick_params(colors="white", labelsize=9)
    label = f"{quantity or title} [{units}]" if units else (quantity or title)
    bar.set_label(label, color="white", fontsize=11)
    bar.outline.set_edgecolor("white")
    return fig


def registration_figure(magnitude, template, slices, voxel_size, mask=None):
    """PNG: template iso-intensity lines (red, `TEMPLATE_LEVELS`) over the subject's magnitude,
    axial, coronal and sagittal (three a row).

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
    top = float(np.percentile(template[:, :, axial], 99.5))
    levels = sorted({top * f for f in TEMPLATE_LEVELS} - {0.0}) or [0.5]
    fig, axes = tile_grid(len(views), 1.0, columns=3, width=MOSAIC_WIDTH_IN * 0.8, top=0.05,
                          gap=0.3)
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
        if np.ptp(tpl) > 0:  # thin iso-intensity lines of the template (tissue boundaries)
            ax.contour(np.asarray(tpl, dtype=np.float32).T, levels=levels,
                       colors=[TEMPLATE_EDGE_COLOUR], linewidths=OUTLINE_WIDTH)
        ax.text(0.02, 0.02, f"{view} {index}", fontsize=10, transform=ax.transAxes,
                **_LABEL_STYLE)
    return _png(fig)


def residual_figure(residual, mask, slices, voxel_size, labels=None):
    """PNG: histogram of the R2* fit residual in the mask and axial slices of it.

    Parameters
    ----------
    residual : ndarray, shape (X, Y, Z)
        Normalised RMS residual of the mono-exponential fit (unitless, 0 = perfect; shown in
        %).
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
    residual = 100.0 * np.asarray(residual, dtype=np.float32)  # in % (as the QC table)
    sel = mask if mask is not None and np.any(mask) else residual > 0
    values = residual[sel]
    values = values[np.isfinite(values)]
    hi = float(np.percentile(values, 99.5)) if values.size else 1.0
    hi = hi if hi > 0 else 1.0
    n = min(4, len(slices))
    picks = [slices[int(i)] for i in np.linspace(0, len(slices) - 1, n).round()]
    crop = crop_box(mask, residual.shape)
    aspect = voxel_size[1] / voxel_size[0]
    width = crop[0].stop - crop[0].start
    height = crop[1].stop - crop[1].start
    tile_aspect = min(1.6, max(0.5, height * voxel_size[1] / (width * voxel_size[0])))
    fig = Figure(figsize=(MOSAIC_WIDTH_IN, 2.6 * tile_aspect + 0.9), facecolor="white")
    grid = fig.add_gridspec(1, n + 2, width_ratios=[1.7] + [1] * n + [0.07], wspace=0.08)
    fig.subplots_adjust(left=0.06, right=0.94, bottom=0.2, top=0.88)
    ax = fig.add_subplot(grid[0])
    ax.hist(np.clip(values, 0, hi), bins=60, range=(0, hi), color="0.3")
    ax.set_yscale("log")
    ax.set_xlabel("normalised RMS residual [%]", fontsize=10)
    ax.set_ylabel("voxels", fontsize=10)
    ax.tick_params(labelsize=9)
    if values.size:
        med = float(np.median(values))
        ax.axvline(med, color="tab:red", lw=1.2)
        ax.set_title(f"brain mask: median {med:.3g} %", fontsize=10)
    sheet, origins = mosaic_array(residual, picks, crop, columns=n)
    axk = fig.add_subplot(grid[1:n + 1])
    im = _show(axk, np.ma.masked_invalid(sheet), aspect,
               cmap=matplotlib.colormaps["magma"].with_extremes(bad="white"), vmin=0, vmax=hi)
    if labels is not None:
        for (x0, y0), k in zip(origins, picks):
            for segs, colours in _outline_lines(None, labels[crop[0], crop[1], k]):
                axk.add_collection(LineCollection(segs + np.array([x0, y0], dtype=float),
                                                  colors=colours, linewidths=OUTLINE_WIDTH))
    axk.set_xlim(-0.5, sheet.shape[0] - 0.5)
    axk.set_ylim(-0.5, sheet.shape[1] - 0.5)
    axk.set_axis_off()
    width = crop[0].stop - crop[0].start
    for (x0, y0), k in zip(origins, picks):
        axk.text(x0 + 0.02 * width, y0, f"z={k}", fontsize=9, **_LABEL_STYLE)
    bar = fig.colorbar(im, cax=fig.add_subplot(grid[-1]))
    bar.ax.tick_params(labelsize=9)
    bar.set_label("R2* fit residual [%]", fontsize=10)
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
