"""ROI statistics of the iron maps: the ``roistats.tsv`` long table and the lesion table.

Pure functions: arrays in, `pandas.DataFrame` / `dict` out; no file input or output.

Rules (the seed studies' practice, ../shared/DESIGN.md):

* **Erosion.** Each ROI is taken per hemisphere from the native label map (indices of
  `bids_iron.anatomy.rois.NATIVE_LABELS`) and eroded by ``erode`` voxels (default 1) before
  any value is read. The structuring element is the 6-connected cross (face neighbours): a
  voxel is kept when it and its six face neighbours are inside the ROI. This removes the
  boundary layer where partial volume with the neighbouring tissue lives, while keeping
  thin nuclei (substantia nigra, red nucleus at 1 mm) from vanishing, which a 3x3x3 cube
  would often do. ``connectivity=3`` selects the 3x3x3 cube instead.
* **Bilateral.** The bilateral row of an ROI is the union of its *eroded* left and right
  masks (erosion before the union, so the midline never joins the hemispheres and the
  bilateral values are exactly the pooled voxels of the two hemisphere rows), plus the eroded
  unsplit label (indices 24-34, from user label maps without hemispheres) when present.
* **Thalamus includes pulvinar.** In the native label map the pulvinar overrides the
  thalamus (its voxels carry the pulvinar label). The ``thalamus`` ROI of a hemisphere is
  therefore thalamus ∪ pulvinar of that hemisphere, eroded as one mask (so no artificial
  boundary is eroded between them); ``pulvinar`` is also reported on its own.
* **Lesions.** Voxels of ``lesion_mask`` (and voxels labelled ``lesion``, index 23) form the
  ``lesion`` ROI (hemisphere ``bilateral`` only) and are removed from every other ROI first,
  so white matter means normal-appearing white matter when lesion masks are given. Lesions
  are not eroded by default (``erode_lesions=False``): many lesions are only a few voxels
  across and would disappear.
* **Support.** A metric only counts voxels where it is defined: where ``masks[metric]`` is
  true when a support mask is given, otherwise where the map is finite and (with
  ``zero_is_missing=True``, the default) not exactly 0, since bids-iron writes 0 where a map
  was not computed (R2* of failed fits, LFS and chi outside the background-removal mask).
* **Vessel exclusion** (optional, ``exclude_vessels={"metric": "chi", "k": 3.0}``). Inside each
  hemisphere ROI (after erosion), voxels whose ``metric`` value exceeds
  ``median + k * 1.4826 * MAD`` of that ROI (one-sided: veins are paramagnetic, with high chi
  and high R2*) are excluded from the statistics of *every* metric of that ROI; ``1.4826 *
  MAD`` is the robust estimate of the standard deviation. The bilateral row uses the union
  of the hemispheres' remaining voxels. The ``n_excluded`` column counts them.
* **Statistics.** ``mean``, ``median`` and ``sd`` (sample standard deviation, ``ddof=1``) of
  the voxels used; ``n_voxels`` is their number and ``volume_mm3 = n_voxels * voxel volume``
  (the eroded, supported, vessel-free volume actually averaged). ``label_volume_mm3`` is the
  volume of the ROI's label before erosion (a check on registration and a morphometric value
  of its own). An ROI with no voxel left still has its rows, with ``n_voxels = 0`` and NaN
  statistics, so every table of a study has the same shape.

Examples
--------
>>> import numpy as np
>>> from bids_iron.anatomy.rois import NATIVE_INDEX
>>> labels = np.zeros((7, 7, 7), dtype=np.int16)
>>> labels[1:6, 1:6, 1:6] = NATIVE_INDEX[("putamen", "left")]
>>> r2 = np.full(labels.shape, 30.0)
>>> table = roi_statistics({"r2star": r2}, labels, (1.0, 1.0, 1.0))
>>> row = table[(table.roi == "putamen") & (table.hemisphere == "left")].iloc[0]
>>> (int(row["n_voxels"]), float(row["mean"]), float(row["volume_mm3"]),
...  float(row["label_volume_mm3"]))
(27, 30.0, 27.0, 125.0)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from .rois import NATIVE_INDEX, NATIVE_LABELS, NUCLEI, REFERENCES, label_name

__all__ = ["METRICS", "METRIC_UNITS", "COLUMNS", "QC_COLUMNS", "LESION_COLUMNS", "roi_statistics",
           "lesion_table", "data_dictionary", "lesion_data_dictionary", "roi_indices",
           "roi_mask", "label_names"]

#: Metrics in table order, and their units.
METRICS = ("r2star", "t2star", "lfs", "chi", "chi_wholebrain")
METRIC_UNITS = {"r2star": "1/s", "t2star": "s", "lfs": "ppm", "chi": "ppm",
                "chi_wholebrain": "ppm"}
METRIC_DESCRIPTIONS = {
    "r2star": "R2*, effective transverse relaxation rate (mono-exponential fit over echoes)",
    "t2star": "T2* = 1/R2*, effective transverse relaxation time",
    "lfs": "local field shift (background-removed field, referenced), ppm of B0",
    "chi": "magnetic susceptibility from QSM, paramagnetic positive, referenced (default: "
           "CSF of the lateral ventricles; see the Chimap sidecar)",
    "chi_wholebrain": "the same susceptibility referenced to the whole-brain mean of the "
                      "(eroded) mask, the QSM consensus' second reference; the csf row gives "
                      "the reference region's mean and SD on this scale",
}
#: Columns of the ROI table, in order (the DESIGN columns, then source and the extras).
COLUMNS = ("roi", "hemisphere", "metric", "mean", "median", "sd", "n_voxels", "volume_mm3",
           "source", "label_volume_mm3", "n_excluded")
#: Columns added by `roi_statistics` when given ``roi_quality`` (atlas ROIs; issue 11).
QC_COLUMNS = ("registration_similarity", "brain_fraction", "qc_flag")
#: Columns of the per-lesion table.
LESION_COLUMNS = ("lesion_id", "metric", "mean", "median", "sd", "n_voxels", "volume_mm3",
                  "lesion_volume_mm3", "centroid_i", "centroid_j", "centroid_k",
                  "centroid_x", "centroid_y", "centroid_z")

_LESION = NATIVE_INDEX[("lesion", "bilateral")]
_MAD_TO_SD = 1.4826


# -- argument checks --------------------------------------------------------------------------
def _voxel_volume(voxel_size):
    size = np.asarray(voxel_size, dtype=float).ravel()
    if size.shape != (3,) or not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise ValueError(f"voxel_size must be three positive sizes in mm, got {voxel_size!r}")
    return float(np.prod(size))


def _check_maps(maps, shape):
    if not isinstance(maps, dict):
        raise ValueError("maps must be a dict {metric: array}")
    out = {}
    for metric, arr in maps.items():
        if arr is None:
            continue
        if metric not in METRICS:
            raise ValueError(f"maps: unknown metric {metric!r}; expected some of {METRICS}")
        arr = np.asarray(arr)
        if arr.shape != shape:
            raise ValueError(f"maps[{metric!r}] has shape {arr.shape}, expected {shape}")
        out[metric] = arr
    return {m: out[m] for m in METRICS if m in out}


def _check_masks(masks, maps, shape):
    masks = {} if masks is None else dict(masks)
    for metric, mask in masks.items():
        if mask is None:
            continue
        if metric not in METRICS:
            raise ValueError(f"masks: unknown metric {metric!r}; expected some of {METRICS}")
        if np.shape(mask) != shape:
            raise ValueError(f"masks[{metric!r}] has shape {np.shape(mask)}, expected {shape}")
    return {m: np.asarray(v, dtype=bool) for m, v in masks.items() if v is not None}


def _support(arr, mask, zero_is_missing):
    ok = np.isfinite(arr)
    if mask is not None:
        return ok & mask
    if zero_is_missing:
        ok &= arr != 0
    return ok


def _structure(connectivity):
    if connectivity not in (1, 2, 3):
        raise ValueError(f"connectivity must be 1 (6 faces), 2 (18) or 3 (26), got "
                         f"{connectivity!r}")
    return ndimage.generate_binary_structure(3, connectivity)


def _box_union(boxes):
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes))
                 for d in range(3))


def _pad_box(box, shape, pad=1):
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, dim))
                 for s, dim in zip(box, shape))


def _box_to_flat(sub, box, shape, order="C"):
    """Flat indices (``order``) into ``shape`` of the true voxels of ``sub`` located at ``box``."""
    ijk = np.nonzero(sub)
    return np.ravel_multi_index(tuple(i + s.start for i, s in zip(ijk, box)), shape,
                                order=order)


def _order(array):
    """Memory order to flatten in without copying: "F" for Fortran arrays (nibabel's)."""
    return "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"


def _eroded_indices(clipped, boxes, indices, n, structure, order):
    """Sorted flat indices of the union of label ``indices`` eroded ``n`` times, and the
    uneroded voxel count. Erosion treats everything outside the union as background."""
    box = _box_union([boxes[i - 1] for i in indices])
    if box is None:
        return np.zeros(0, dtype=np.intp), 0
    box = _pad_box(box, clipped.shape)
    sub = np.isin(clipped[box], indices)
    n_label = int(sub.sum())
    if n > 0:
        sub = ndimage.binary_erosion(sub, structure=structure, iterations=n, border_value=0)
    return _box_to_flat(sub, box, clipped.shape, order), n_label


def _prepare_labels(labels, lesion_mask):
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3-D label array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("labels must hold integer label indices")
    lesion = labels == _LESION
    if lesion_mask is not None:
        if np.shape(lesion_mask) != labels.shape:
            raise ValueError(f"lesion_mask has shape {np.shape(lesion_mask)}, expected "
                             f"{labels.shape}")
        lesion |= np.asarray(lesion_mask) > 0
    max_index = max(NATIVE_LABELS)
    keep = (labels > 0) & (labels <= max_index) & ~lesion
    clipped = np.where(keep, labels, 0).astype(np.int32)
    return clipped, lesion


# -- masks ------------------------------------------------------------------------------------
def roi_indices(labels, lesion_mask=None, erode=1, connectivity=1, erode_lesions=False,
                order="C"):
    """Eroded ROI voxels of a native label map, per hemisphere and bilateral.

    Parameters
    ----------
    labels : ndarray of int, shape (X, Y, Z)
        Native label map with `bids_iron.anatomy.rois.NATIVE_LABELS` indices (0 = none).
    lesion_mask : ndarray of bool, shape (X, Y, Z), optional
        Lesion voxels; they form ROI ``lesion`` and are removed from all other ROIs.
    erode : int
        Number of erosions (voxels) applied to each hemisphere ROI; 0 for none.
    connectivity : {1, 2, 3}
        Structuring element of the erosion: 1 = 6 face neighbours (default), 3 = 3x3x3.
    erode_lesions : bool
        Erode the lesion ROI too (default False).
    order : {"C", "F"}
        Memory order of the flat indices (``array.ravel(order)[indices]``).

    Returns
    -------
    dict
        ``{(roi, hemisphere): (flat_indices, n_label)}``: flat indices of the eroded ROI
        (bilateral: left, then right, then unsplit-label voxels) and the voxel count of its
        uneroded label, for every ROI of the vocabulary (nuclei and references; ``lesion`` only when a lesion mask is given or voxels are
        labelled lesion), ``hemisphere`` in left, right, bilateral. Index arrays may be empty.
    """
    erode = int(erode)
    if erode < 0:
        raise ValueError(f"erode must be >= 0 voxels, got {erode}")
    structure = _structure(connectivity)
    clipped, lesion = _prepare_labels(labels, lesion_mask)
    has_lesions = lesion_mask is not None or bool(lesion.any())
    boxes = ndimage.find_objects(clipped, max_label=max(NATIVE_LABELS))
    out = {}
    for roi in NUCLEI + REFERENCES:
        parts = {}
        for hemi in ("left", "right", "bilateral"):
            indices = [NATIVE_INDEX[(roi, hemi)]]
            if roi == "thalamus":
                indices.append(NATIVE_INDEX[("pulvinar", hemi)])
            parts[hemi] = _eroded_indices(clipped, boxes, indices, erode, structure, order)
        # the three parts are disjoint (distinct labels): the union is their concatenation
        union = np.concatenate([parts["left"][0], parts["right"][0], parts["bilateral"][0]])
        out[(roi, "left")] = parts["left"]
        out[(roi, "right")] = parts["right"]
        out[(roi, "bilateral")] = (union, parts["left"][1] + parts["right"][1]
                                   + parts["bilateral"][1])
    if has_lesions:
        n_lesion = int(lesion.sum())
        if erode_lesions and erode > 0 and n_lesion:
            lesion = ndimage.binary_erosion(lesion, structure=structure, iterations=erode,
                                            border_value=0)
        out[("lesion", "bilateral")] = (np.flatnonzero(lesion.ravel(order)), n_lesion)
    return out


def roi_mask(labels, roi, hemisphere="bilateral", erode=1, connectivity=1, lesion_mask=None):
    """Boolean mask of one eroded ROI (e.g. the CSF or internal-capsule reference region).

    Parameters
    ----------
    labels : ndarray of int, shape (X, Y, Z)
        Native label map (`bids_iron.anatomy.rois.NATIVE_LABELS` indices).
    roi : str
        ROI name of the vocabulary (``csf``, ``internal_capsule``, ``caudate``...).
    hemisphere : {"left", "right", "bilateral"}
    erode, connectivity, lesion_mask
        As in `roi_indices`.

    Returns
    -------
    ndarray of bool, shape (X, Y, Z)
    """
    if hemisphere not in ("left", "right", "bilateral"):
        raise ValueError(f"hemisphere must be left, right or bilateral, got {hemisphere!r}")
    rois = roi_indices(labels, lesion_mask=lesion_mask, erode=erode, connectivity=connectivity)
    if (roi, hemisphere) not in rois:
        raise ValueError(f"roi {roi!r} is not in the ROI vocabulary (or no lesions given)")
    mask = np.zeros(np.shape(labels), dtype=bool)
    mask.ravel()[rois[(roi, hemisphere)][0]] = True
    return mask


# -- statistics -------------------------------------------------------------------------------
def _stats(values):
    n = int(values.size)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    values = values.astype(np.float64, copy=False)
    sd = float(np.std(values, ddof=1)) if n > 1 else np.nan
    return float(np.mean(values)), float(np.median(values)), sd, n


def _vessel_outliers(values, k):
    """Boolean array: values above median + k * 1.4826 * MAD (one-sided)."""
    if values.size == 0:
        return np.zeros(0, dtype=bool)
    med = np.median(values)
    mad = np.median(np.abs(values - med))
    return values > med + k * _MAD_TO_SD * mad


def _check_vessels(exclude_vessels, maps):
    if exclude_vessels is None or exclude_vessels is False:
        return None
    if exclude_vessels is True:
        exclude_vessels = {}
    if not isinstance(exclude_vessels, dict):
        raise ValueError("exclude_vessels must be None or a dict like {'metric': 'chi', 'k': 3}")
    metric = exclude_vessels.get("metric", "chi")
    k = float(exclude_vessels.get("k", 3.0))
    if metric not in ("chi", "r2star"):
        raise ValueError(f"exclude_vessels: metric must be 'chi' or 'r2star', got {metric!r}")
    if metric not in maps:
        raise ValueError(f"exclude_vessels: metric {metric!r} is not among the maps "
                         f"{tuple(maps)}")
    if not np.isfinite(k) or k <= 0:
        raise ValueError(f"exclude_vessels: k must be positive, got {k}")
    return metric, k


def roi_statistics(maps, labels, voxel_size, erode=1, exclude_vessels=None, masks=None,
                   lesion_mask=None, source="atlas", connectivity=1, erode_lesions=False,
                   zero_is_missing=True, roi_quality=None):
    """ROI statistics of the iron maps as the long ``roistats`` table.

    Parameters
    ----------
    maps : dict of str -> ndarray, shape (X, Y, Z)
        Any subset of ``r2star`` (1/s), ``t2star`` (s), ``lfs`` (ppm), ``chi`` (ppm); a
        missing or None entry is skipped (magnitude-only sessions have no lfs/chi).
    labels : ndarray of int, shape (X, Y, Z)
        Native label map, `bids_iron.anatomy.rois.NATIVE_LABELS` indices, 0 = no label.
    voxel_size : sequence of 3 float
        Voxel size in mm.
    erode : int, optional
        Erosions (voxels) of each hemisphere ROI before averaging; default 1, 0 for none.
    exclude_vessels : dict or None, optional
        ``{"metric": "chi" | "r2star", "k": 3.0}``: exclude, per hemisphere ROI, voxels whose
        ``metric`` exceeds ``median + k * 1.4826 * MAD`` from every metric; None (default)
        keeps all voxels.
    masks : dict of str -> ndarray of bool, optional
        Support mask per metric (e.g. the background-removal mask for ``lfs``/``chi``);
        voxels outside it do not count for that metric.
    lesion_mask : ndarray of bool, shape (X, Y, Z), optional
        Lesion voxels on the native grid: ROI ``lesion`` (bilateral), removed from the others.
    source : str, optional
        Value of the ``source`` column (default ``"atlas"``).
    connectivity : {1, 2, 3}, optional
        Erosion structuring element: 1 = 6 face neighbours (default), 3 = 3x3x3 cube.
    erode_lesions : bool, optional
        Erode the lesion ROI too (default False).
    zero_is_missing : bool, optional
        Without a support mask, treat exact zeros as undefined (default True).
    roi_quality : dict of (roi, hemisphere) -> (float, float, str), optional
        Per-ROI registration quality (similarity, brain fraction, qc_flag), e.g. from
        `bids_iron.anatomy.quality.roi_registration_quality`: adds the `QC_COLUMNS` (NaN /
        ``"n/a"`` for ROIs it lacks).

    Returns
    -------
    pandas.DataFrame
        One row per (roi, hemisphere, metric), columns `COLUMNS`: ``roi``, ``hemisphere``
        (left/right/bilateral), ``metric``, ``mean``, ``median``, ``sd`` (units of the
        metric), ``n_voxels``, ``volume_mm3`` (n_voxels times the voxel volume, mm^3),
        ``source``, ``label_volume_mm3`` (uneroded label volume, mm^3) and ``n_excluded``
        (vessel voxels removed). Rows are ordered by ROI (`NUCLEI`, `REFERENCES`, lesion),
        hemisphere (left, right, bilateral) and metric (`METRICS` order); lesion rows are
        bilateral only and present when lesions are given or labelled.

    Raises
    ------
    ValueError
        For arrays of the wrong shape, unknown metrics, a bad voxel size or options.
    """
    labels = np.asarray(labels)
    shape = labels.shape
    vox = _voxel_volume(voxel_size)
    maps = _check_maps(maps, shape)
    masks = _check_masks(masks, maps, shape)
    vessels = _check_vessels(exclude_vessels, maps)
    order = _order(labels)
    rois = roi_indices(labels, lesion_mask=lesion_mask, erode=erode, connectivity=connectivity,
                       erode_lesions=erode_lesions, order=order)
    # Flat views (copies only for maps stored in the other memory order than the labels).
    flat = {m: a.ravel(order) for m, a in maps.items()}
    support = {m: _support(a, masks.get(m), zero_is_missing).ravel(order)
               for m, a in maps.items()}

    # Vessel voxels per hemisphere ROI; the bilateral row pools the hemispheres' decisions.
    excluded = {}
    if vessels is not None:
        vmetric, k = vessels

        def outliers(idx):
            idx = idx[support[vmetric][idx]]
            return idx[_vessel_outliers(flat[vmetric][idx], k)]

        for (roi, hemi), (idx, _) in rois.items():
            if hemi != "bilateral" or roi == "lesion":
                excluded[(roi, hemi)] = outliers(idx)
        for roi in NUCLEI + REFERENCES:
            # bilateral = left, right, then the voxels of an unsplit label (user label maps),
            # which are judged on their own
            n_lr = rois[(roi, "left")][0].size + rois[(roi, "right")][0].size
            rest = rois[(roi, "bilateral")][0][n_lr:]
            excluded[(roi, "bilateral")] = np.concatenate(
                [excluded[(roi, "left")], excluded[(roi, "right")], outliers(rest)])

    rows = []
    for (roi, hemi), (idx, n_label) in rois.items():
        ex = excluded.get((roi, hemi))
        if ex is not None and ex.size:
            use = idx[~np.isin(idx, ex, assume_unique=True)]
        else:
            use = idx
        n_ex = int(idx.size - use.size)
        for metric in maps:
            sel = use[support[metric][use]]
            mean, median, sd, n = _stats(flat[metric][sel])
            rows.append((roi, hemi, metric, mean, median, sd, n, n * vox, str(source),
                         n_label * vox, n_ex))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if roi_quality is not None:
        nan = (np.nan, np.nan, "n/a")
        qc = [roi_quality.get((r, h), nan) for r, h in zip(table["roi"], table["hemisphere"])]
        table["registration_similarity"] = [float(q[0]) for q in qc]
        table["brain_fraction"] = [float(q[1]) for q in qc]
        table["qc_flag"] = [str(q[2]) for q in qc]
    return table.astype({"n_voxels": "int64", "n_excluded": "int64", "mean": "float64",
                         "median": "float64", "sd": "float64", "volume_mm3": "float64",
                         "label_volume_mm3": "float64"})


def lesion_table(maps, lesion_mask, voxel_size, affine=None, masks=None, connectivity=3,
                 min_voxels=1, zero_is_missing=True):
    """Statistics per connected lesion.

    Parameters
    ----------
    maps : dict of str -> ndarray, shape (X, Y, Z)
        As in `roi_statistics` (any subset of r2star, t2star, lfs, chi).
    lesion_mask : ndarray of bool, shape (X, Y, Z)
        Binary lesion mask on the native grid.
    voxel_size : sequence of 3 float
        Voxel size in mm.
    affine : ndarray, shape (4, 4), optional
        Voxel-to-world (scanner RAS, mm) affine; centroids in mm are world coordinates when
        given, otherwise voxel index times voxel size.
    masks : dict of str -> ndarray of bool, optional
        Support mask per metric, as in `roi_statistics`.
    connectivity : {1, 2, 3}, optional
        Neighbourhood joining lesion voxels into one lesion: 3 (26 neighbours, default),
        2 (18) or 1 (6 faces).
    min_voxels : int, optional
        Smallest lesion kept (voxels); default 1.
    zero_is_missing : bool, optional
        Without a support mask, treat exact zeros as undefined (default True).

    Returns
    -------
    pandas.DataFrame
        One row per (lesion, metric), columns `LESION_COLUMNS`: ``lesion_id`` (1, 2, ... in
        order of decreasing size), ``metric``, ``mean``, ``median``, ``sd``, ``n_voxels``
        and ``volume_mm3`` of the voxels used for that metric, ``lesion_volume_mm3`` (whole
        lesion), ``centroid_i/j/k`` (voxel indices) and ``centroid_x/y/z`` (mm). Lesions are
        not eroded. Without metrics, one row per lesion with ``metric`` "none".
    """
    lesion_mask = np.asarray(lesion_mask) > 0
    shape = lesion_mask.shape
    if lesion_mask.ndim != 3:
        raise ValueError(f"lesion_mask must be 3-D, got shape {shape}")
    vox = _voxel_volume(voxel_size)
    maps = _check_maps(maps, shape)
    masks = _check_masks(masks, maps, shape)
    if affine is not None:
        affine = np.asarray(affine, dtype=float)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    comp, n_comp = ndimage.label(lesion_mask, structure=_structure(connectivity))
    if n_comp == 0:
        return pd.DataFrame(columns=list(LESION_COLUMNS))
    sizes = np.bincount(comp.ravel(), minlength=n_comp + 1)[1:]
    order = [i + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_voxels]
    support = {m: _support(a, masks.get(m), zero_is_missing) for m, a in maps.items()}
    boxes = ndimage.find_objects(comp)
    rows = []
    for new_id, comp_id in enumerate(order, start=1):
        box = boxes[comp_id - 1]
        sub = comp[box] == comp_id
        ijk = np.argwhere(sub).mean(axis=0) + [s.start for s in box]
        if affine is not None:
            xyz = affine[:3, :3] @ ijk + affine[:3, 3]
        else:
            xyz = ijk * np.asarray(voxel_size, dtype=float)
        n_lesion = int(sub.sum())
        common = (n_lesion * vox, *[float(v) for v in ijk], *[float(v) for v in xyz])
        if not maps:
            rows.append((new_id, "none", np.nan, np.nan, np.nan, 0, 0.0, *common))
        for metric, arr in maps.items():
            values = arr[box][sub & support[metric][box]]
            mean, median, sd, n = _stats(values)
            rows.append((new_id, metric, mean, median, sd, n, n * vox, *common))
    return pd.DataFrame(rows, columns=list(LESION_COLUMNS))


# -- data dictionaries ------------------------------------------------------------------------
def _metric_levels():
    return {m: f"{METRIC_DESCRIPTIONS[m]} ({METRIC_UNITS[m]})" for m in METRICS}


def _stat_units_note():
    return ", ".join(f"{m}: {u}" for m, u in METRIC_UNITS.items())


def data_dictionary(erode=1, connectivity=1, exclude_vessels=None, source_levels=None,
                    qc=None):
    """The BIDS data dictionary (``roistats.json``) of the `roi_statistics` table.

    Parameters
    ----------
    erode, connectivity, exclude_vessels
        The options the table was made with (recorded in the descriptions).
    source_levels : dict of str -> str, optional
        Levels of the ``source`` column; default ``{"atlas": ...}``.
    qc : dict, optional
        ``{"min_similarity", "min_brain_fraction", "margin_mm"}`` when the table has the
        `QC_COLUMNS` (their descriptions name the thresholds).

    Returns
    -------
    dict
        Column name -> ``{"Description", "Units"?, "Levels"?}`` for every column of
        `COLUMNS`.
    """
    from .rois import ROI_NAMES

    shape = {1: "6-connected cross (face neighbours)", 2: "18-connected element",
             3: "3x3x3 cube"}.get(connectivity, str(connectivity))
    if erode:
        erosion = (f"ROI masks were eroded by {erode} voxel(s) ({shape}) per hemisphere "
                   "before averaging; lesions are not eroded.")
    else:
        erosion = "ROI masks were not eroded."
    if exclude_vessels:
        opts = exclude_vessels if isinstance(exclude_vessels, dict) else {}
        vessel = (f" Vessel voxels ({opts.get('metric', 'chi')} above median + "
                  f"{float(opts.get('k', 3.0)):g} x 1.4826 x MAD of the hemisphere ROI) were "
                  "excluded from all metrics.")
    else:
        vessel = " No vessel exclusion."
    roi_levels = {
        "caudate": "caudate nucleus", "putamen": "putamen",
        "globus_pallidus": "globus pallidus (interna and externa)",
        "thalamus": "thalamus, including the pulvinar",
        "pulvinar": "pulvinar nucleus of the thalamus",
        "substantia_nigra": "substantia nigra", "red_nucleus": "red nucleus",
        "dentate_nucleus": "dentate nucleus of the cerebellum",
        "csf": "cerebrospinal fluid of the lateral ventricles (reference)",
        "internal_capsule": "posterior limb of the internal capsule (reference)",
        "white_matter": "white matter (normal-appearing when lesions are given; reference)",
        "lesion": "all lesion voxels of the lesion mask (not eroded)",
    }
    assert set(roi_levels) == set(ROI_NAMES)
    return {
        "roi": {"Description": "Region of interest, from the fixed bids-iron vocabulary. "
                               + erosion + vessel,
                "Levels": roi_levels},
        "hemisphere": {"Description": "Hemisphere of the ROI; bilateral is the union of the "
                                      "eroded left and right masks.",
                       "Levels": {"left": "left hemisphere", "right": "right hemisphere",
                                  "bilateral": "left and right together"}},
        "metric": {"Description": "Map the statistics are taken from; units per metric: "
                                  + _stat_units_note() + ".",
                   "Levels": _metric_levels()},
        "mean": {"Description": "Mean of the metric over the ROI voxels used "
                                "(units of the metric: " + _stat_units_note() + ")."},
        "median": {"Description": "Median of the metric over the ROI voxels used "
                                  "(units of the metric: " + _stat_units_note() + ")."},
        "sd": {"Description": "Sample standard deviation (ddof = 1) of the metric over the "
                              "ROI voxels used (units of the metric: "
                              + _stat_units_note() + "); n/a for fewer than 2 voxels."},
        "n_voxels": {"Description": "Number of voxels averaged: eroded ROI, where the map is "
                                    "defined, vessel voxels excluded.",
                     "Units": "voxels"},
        "volume_mm3": {"Description": "Volume of the voxels averaged (n_voxels x voxel "
                                      "volume).", "Units": "mm^3"},
        "source": {"Description": "Origin of the ROI labels.",
                   "Levels": source_levels or {
                       "atlas": "TemplateFlow atlas labels registered to the session"}},
        "label_volume_mm3": {"Description": "Volume of the ROI label on the native grid "
                                            "before erosion (thalamus includes pulvinar).",
                             "Units": "mm^3"},
        "n_excluded": {"Description": "Number of eroded ROI voxels excluded as vessels "
                                      "(0 without vessel exclusion).",
                       "Units": "voxels"},
        **(_qc_dictionary(qc) if qc else {}),
    }


def _qc_dictionary(qc):
    sim, frac, margin = qc["min_similarity"], qc["min_brain_fraction"], qc["margin_mm"]
    return {
        "registration_similarity": {
            "Description": "Local similarity of the template registration around the ROI: "
                           "Pearson correlation of the session's R2* map with the template's "
                           "iron contrast (typical R2* painted from the atlas labels) warped to "
                           f"the session, over the uneroded label grown by {margin:g} mm; n/a "
                           "for ROIs not from the atlas.", "Units": "1"},
        "brain_fraction": {
            "Description": "Fraction of the uneroded label's voxels inside the brain mask of "
                           "the maps; n/a for ROIs not from the atlas.", "Units": "1"},
        "qc_flag": {
            "Description": "ok, or why the ROI's values should be checked before statistics "
                           f"(joined by +): low_similarity (nuclei only: "
                           f"registration_similarity < {sim:g}, the atlas ROI probably does not "
                           "sit on this brain's nucleus), "
                           f"outside_mask (brain_fraction < {frac:g}: cut by the field of view "
                           "or the mask); n/a when not measured.",
            "Levels": {"ok": "both checks passed", "low_similarity": "registration doubtful",
                       "outside_mask": "ROI partly outside the brain mask",
                       "low_similarity+outside_mask": "both", "n/a": "not measured"}},
    }


def lesion_data_dictionary(connectivity=3):
    """The BIDS data dictionary of the `lesion_table` output (dict column -> description)."""
    neigh = {1: "6", 2: "18", 3: "26"}.get(connectivity, str(connectivity))
    return {
        "lesion_id": {"Description": f"Connected lesion ({neigh}-connected components of the "
                                     "lesion mask on the MEGRE grid), numbered by decreasing "
                                     "volume."},
        "metric": {"Description": "Map the statistics are taken from.",
                   "Levels": _metric_levels()},
        "mean": {"Description": "Mean over the lesion voxels where the map is defined "
                                "(units of the metric: " + _stat_units_note() + ")."},
        "median": {"Description": "Median over the lesion voxels where the map is defined "
                                  "(units of the metric)."},
        "sd": {"Description": "Sample standard deviation (ddof = 1) over the lesion voxels "
                              "(units of the metric)."},
        "n_voxels": {"Description": "Number of lesion voxels used for the metric.",
                     "Units": "voxels"},
        "volume_mm3": {"Description": "Volume of the voxels used (n_voxels x voxel volume).",
                       "Units": "mm^3"},
        "lesion_volume_mm3": {"Description": "Volume of the whole lesion.", "Units": "mm^3"},
        "centroid_i": {"Description": "Lesion centroid, first voxel index.",
                       "Units": "voxels"},
        "centroid_j": {"Description": "Lesion centroid, second voxel index.",
                       "Units": "voxels"},
        "centroid_k": {"Description": "Lesion centroid, third voxel index.",
                       "Units": "voxels"},
        "centroid_x": {"Description": "Lesion centroid, scanner x (RAS) coordinate.",
                       "Units": "mm"},
        "centroid_y": {"Description": "Lesion centroid, scanner y (RAS) coordinate.",
                       "Units": "mm"},
        "centroid_z": {"Description": "Lesion centroid, scanner z (RAS) coordinate.",
                       "Units": "mm"},
    }


def label_names():
    """Native index -> dseg name (``left_caudate``...), for reports and ``dseg.tsv``."""
    return {index: label_name(*pair) for index, pair in NATIVE_LABELS.items()}


def mask_statistics(maps, roi_masks, voxel_size, erode=1, masks=None, source="user",
                    connectivity=1, zero_is_missing=True):
    """The ``roistats`` rows of arbitrary named ROI masks (e.g. user labels outside the
    vocabulary, kept under their own names).

    Same rules as `roi_statistics`: each mask eroded by ``erode`` voxels, support masks per
    metric, sample SD, volumes in mm^3; no vessel exclusion and no lesion handling.

    Parameters
    ----------
    maps : dict of str -> ndarray, shape (X, Y, Z)
    roi_masks : dict of (str, str) -> ndarray of bool
        ``{(roi name, hemisphere): mask}`` on the maps' grid.
    voxel_size : sequence of 3 float
        mm.
    erode, masks, source, connectivity, zero_is_missing
        As in `roi_statistics`.

    Returns
    -------
    pandas.DataFrame
        Columns `COLUMNS`, one row per (roi, hemisphere, metric), in the order of
        ``roi_masks``.
    """
    vox = _voxel_volume(voxel_size)
    structure = _structure(connectivity)
    shape = next(iter(roi_masks.values())).shape if roi_masks else None
    maps = _check_maps(maps, shape) if shape is not None else {}
    masks = _check_masks(masks, maps, shape) if shape is not None else {}
    rows = []
    for (roi, hemi), mask in roi_masks.items():
        mask = np.asarray(mask, bool)
        use = mask
        if erode > 0:
            use = ndimage.binary_erosion(mask, structure=structure, iterations=int(erode),
                                         border_value=0)
        for metric, arr in maps.items():
            sel = use & _support(arr, masks.get(metric), zero_is_missing)
            mean, median, sd, n = _stats(arr[sel])
            rows.append((str(roi), hemi, metric, mean, median, sd, n, n * vox, str(source),
                         int(mask.sum()) * vox, 0))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.astype({"n_voxels": "int64", "n_excluded": "int64", "mean": "float64",
                         "median": "float64", "sd": "float64", "volume_mm3": "float64",
                         "label_volume_mm3": "float64"})
