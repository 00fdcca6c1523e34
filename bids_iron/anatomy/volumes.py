"""Brain and structure volumes from a T1w: tissue classes (ANTs Atropos) and their volumes.

Method (the participant level, `bids_iron.volumes_stage`):

1. the session's T1w on a grid of at most `SEGMENT_MM` mm voxels, N4 bias-field corrected
   inside the intracranial mask;
2. the intracranial mask: the template brain mask (which holds the ventricles and the CSF
   around the brainstem) carried onto the T1w by the anatomy stage's template -> T1w
   registration (affine + SyN), linear interpolation, >= 0.5;
3. Atropos (Avants et al. 2011) three classes inside that mask: k-means initialisation, or
   the template's GM/WM/CSF probability maps as priors when the TemplateFlow home holds them,
   with a Potts MRF (`MRF_WEIGHT`); the classes are named by their mean T1w intensity (CSF
   darkest, white matter brightest), so the result does not depend on Atropos' class order;
4. volumes from the posterior probabilities (partial volume kept): a voxel of volume v adds
   v * P(class) to its class. Voxels of the deep gray matter nuclei of the atlases (caudate,
   putamen, pallidum, thalamus, nigra, red nucleus, dentate) count as gray matter whatever
   their T1w intensity (the pallidum and thalamus are as bright as white matter on a T1w):
   their non-CSF part is deep GM. Cortical GM is the gray matter outside the deep nuclei and
   outside the cerebellum (SUIT atlas warped to the T1w, when available).

Accuracy on the demo's head phantom (known tissue volumes; T1w 2 mm, noise 2 % of white
matter; errors volume / truth - 1):

* true intracranial mask (tests/test_volumes.py): ICV +1.0 %, GM +6.9 %, cortical GM
  +9.3 %, deep GM +5.2 %, cerebellar GM -4.4 %, WM -3.1 %, CSF +4.9 %;
* the whole participant level on the demo (bids-iron-demo, 3 participants x 2 sessions,
  template -> T1w registration with the R2* channel): ICV +2.7 to +3.4 %, GM +10 to +13 %,
  cortical GM +16 to +18 %, deep GM -1.8 to +1.2 %, cerebellar GM -4 to -7 %, WM -2 to
  -3 %, CSF +0.5 to +4.9 %; the same registration without the R2* channel
  (benchmarks/accuracy_volumes.py, sub-01): ICV +0.1 %, GM +2.7 %, cortical GM +4.1 %.

Gray matter is over-estimated where a voxel mixes two other classes: white matter and CSF at
the ventricles, brain and skull at the edge of the mask (in the phantom the skull is as
dark as gray matter on the T1w; in a real head it is as dark as CSF). The intracranial
mask follows the registration: a brain edge 0.7 mm too far out adds 3 % to the ICV.

Reference: Avants BB, Tustison NJ, Wu J, Cook PA, Gee JC. An open source multivariate
framework for n-tissue segmentation with evaluation on public data. Neuroinformatics
2011;9:381-400.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import tempfile
import threading

import numpy as np

#: Tissue classes of the segmentation, darkest to brightest on a T1w.
TISSUES = ("csf", "gm", "wm")
#: Rows of the per-session volumes table, in order.
STRUCTURES = ("icv", "gm", "cortical_gm", "deep_gm", "cerebellar_gm", "wm", "csf")
#: What each row measures (the table's data dictionary and the group table's).
STRUCTURE_DESCRIPTIONS = {
    "icv": "intracranial volume: the template brain mask (brain and the CSF it holds) carried "
           "onto the T1w; the sum of gm, wm and csf",
    "gm": "total gray matter: cortical + deep + cerebellar",
    "cortical_gm": "gray matter outside the deep gray matter nuclei and the cerebellum",
    "deep_gm": "deep gray matter nuclei of the atlases (caudate, putamen, pallidum, thalamus, "
               "substantia nigra, red nucleus, dentate), their non-CSF part",
    "cerebellar_gm": "gray matter inside the cerebellum (SUIT atlas); 0 without the SUIT "
                     "atlas (then inside cortical_gm)",
    "wm": "white matter (brainstem included)",
    "csf": "cerebrospinal fluid inside the intracranial mask",
}
#: Largest voxel (mm) of the segmentation grid: finer T1w images are resampled to it.
SEGMENT_MM = 1.5
#: Potts MRF smoothing weight of Atropos (its ``m`` argument).
MRF_WEIGHT = 0.1
#: Weight of the template priors against the intensities (Atropos ``priorweight``).
PRIOR_WEIGHT = 0.25
#: EM iterations of Atropos (its ``c``). Measured on three demo sessions (sub-01 ses-1,
#: sub-05 ses-2, sub-07 ses-1 of ``bids-iron-demo``; T1w 2 mm, 88 x 96 x 72; the whole
#: volume step `bids_iron.volumes_stage.t1w_volumes`, CPU s per session on a loaded 2-core
#: machine; largest volume change against 5 iterations):
#:
#: ==========  ==========  ===========  ========  ==================================
#: iterations  step CPU s  Atropos CPU  N4 CPU    largest change vs 5
#: ==========  ==========  ===========  ========  ==================================
#: 5           5.45        2.57         1.96      (reference)
#: 3           5.26        2.36         1.98      CSF -0.6 % (sub-01), others <= 0.1 %
#: 2           4.75        1.90         1.94      CSF -1.4 %, WM +0.3 %, GM -0.2 %
#: ==========  ==========  ===========  ========  ==================================
#:
#: Two of the three sessions converge by 3 iterations; the saving (0.2-0.7 s of a 5.5 s
#: step) is not worth a volume change, so 5 stays. The rest of the step: atlas labels and
#: the intracranial mask carried to the T1w, ~1 s.
ATROPOS_ITERATIONS = 5


#: The temporary folder of the calling thread's `ants.atropos` (`_atropos_private_tmp`).
_ATROPOS_TMP = threading.local()
_PATCH_LOCK = threading.Lock()


def _atropos_mktemp(*args, **kwargs):
    """``tempfile.mktemp`` in the calling thread's private folder when it has one (the name
    `ants.atropos` gives its prior and posterior probability images)."""
    folder = getattr(_ATROPOS_TMP, "folder", None)
    if folder is not None and kwargs.get("dir") is None:
        kwargs["dir"] = folder
    return tempfile.mktemp(*args, **kwargs)


@contextlib.contextmanager
def _atropos_private_tmp(ants):
    """Run `ants.atropos` with its files in a private folder, removed afterwards.

    ``ants.atropos`` writes its probability images as ``antsr*prob0N.nii.gz`` under
    ``tempfile.gettempdir()`` (a ``tempfile.mktemp`` name) and never removes them: ~0.4 MB
    per demo session left in /tmp. Its module's ``mktemp`` is replaced (once) by one that
    uses the calling thread's folder, so concurrent threads and processes (sessions run in
    parallel) each get their own folder and ``tempfile.tempdir`` (process-wide) is left
    alone."""
    module = importlib.import_module("ants.segmentation.atropos")
    if not hasattr(module, "mktemp"):
        raise RuntimeError(f"{module.__name__} has no mktemp: this ANTsPy's atropos names its "
                           "files differently; update bids_iron.anatomy.volumes")
    with _PATCH_LOCK:
        if module.mktemp is not _atropos_mktemp:
            module.mktemp = _atropos_mktemp
    folder = tempfile.mkdtemp(prefix="bids_iron_atropos_")
    _ATROPOS_TMP.folder = folder
    try:
        yield folder
    finally:
        _ATROPOS_TMP.folder = None
        shutil.rmtree(folder, ignore_errors=True)


def _ants_image(array, voxel_size, ants):
    return ants.from_numpy(np.ascontiguousarray(array, np.float32),
                           spacing=tuple(float(v) for v in voxel_size))


def segment_tissues(t1w, mask, voxel_size, priors=None, prior_weight=PRIOR_WEIGHT,
                    mrf=MRF_WEIGHT, iterations=ATROPOS_ITERATIONS, n4=True):
    """Three-class tissue posteriors (CSF, GM, WM) of a T1w inside a mask (ANTs Atropos).

    Parameters
    ----------
    t1w : ndarray, shape (X, Y, Z)
        T1-weighted image (any intensity unit; CSF dark, white matter bright).
    mask : ndarray of bool, shape (X, Y, Z)
        Intracranial mask: every voxel in it is CSF, GM or WM.
    voxel_size : sequence of 3 float
        Voxel size (mm).
    priors : dict of str -> ndarray, optional
        ``{"csf", "gm", "wm"}`` prior probability maps on the same grid (e.g. a template's
        ``label-<GM|WM|CSF>_probseg`` registered to the T1w); k-means initialisation without.
    prior_weight : float
        Atropos prior weight (0: priors only initialise; 1: priors only).
    mrf : float
        Potts MRF smoothing weight (Atropos ``m``; 0 switches it off).
    iterations : int
        EM iterations (Atropos ``c``).
    n4 : bool
        N4 bias-field correction inside the mask first.

    Returns
    -------
    dict of str -> ndarray (float32)
        ``"csf"``, ``"gm"``, ``"wm"``: posterior probabilities, summing to 1 inside ``mask``
        and 0 outside. Classes are named by their mean T1w intensity (ascending).

    Raises
    ------
    ValueError
        Shapes differ, the mask is empty or too small for three classes, or priors miss a
        class.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = np.full((24, 24, 24), 1.0); img[:8] = 0.1; img[8:16] = 0.6
    >>> post = segment_tissues(img + rng.normal(0, 0.03, img.shape),
    ...                        np.ones(img.shape, bool), (2, 2, 2), n4=False)
    >>> [round(float(post[k].sum()) / 24 ** 2) for k in ("csf", "gm", "wm")]
    [8, 8, 8]

    References
    ----------
    Avants BB et al. Neuroinformatics 2011;9:381-400 (Atropos).
    """
    from .registration import _ants

    t1w = np.asarray(t1w, np.float32)
    mask = np.asarray(mask, bool)
    if t1w.shape != mask.shape or t1w.ndim != 3:
        raise ValueError(f"t1w {t1w.shape} and mask {mask.shape} must be the same 3-D shape")
    if mask.sum() < 27:
        raise ValueError(f"the intracranial mask has {int(mask.sum())} voxels; at least 27 "
                         "are needed for three tissue classes")
    ants = _ants()
    img = _ants_image(t1w, voxel_size, ants)
    mimg = _ants_image(mask.astype(np.float32), voxel_size, ants)
    if n4:
        img = ants.n4_bias_field_correction(img, mask=mimg, shrink_factor=4)
    if priors is not None:
        missing = [k for k in TISSUES if k not in priors]
        if missing:
            raise ValueError(f"priors miss {missing}; give csf, gm and wm")
        for k in TISSUES:
            if np.shape(priors[k]) != t1w.shape:
                raise ValueError(f"prior {k} {np.shape(priors[k])} is not on the T1w grid "
                                 f"{t1w.shape}")
        init = [_ants_image(np.clip(priors[k], 0, 1), voxel_size, ants) for k in TISSUES]
    else:
        init = "Kmeans[3]"
    with _atropos_private_tmp(ants):
        out = ants.atropos(a=img, x=mimg, i=init, m=f"[{float(mrf)},1x1x1]",
                           c=f"[{int(iterations)},0]", priorweight=float(prior_weight))
    post = np.stack([p.numpy() for p in out["probabilityimages"]]).astype(np.float32)
    post[:, ~mask] = 0.0
    total = post.sum(0)
    ok = mask & (total > 0)
    post[:, ok] /= total[ok]
    # voxels with no posterior at all (should not happen): their hard label
    lost = mask & ~ok
    if lost.any():
        seg = out["segmentation"].numpy().astype(int)
        for c in range(post.shape[0]):
            post[c][lost & (seg == c + 1)] = 1.0
    if priors is None:  # name the classes by mean intensity
        corrected = img.numpy()
        means = [float((p * corrected).sum() / max(p.sum(), 1e-9)) for p in post]
        post = post[np.argsort(means)]
    return {k: post[i] for i, k in enumerate(TISSUES)}


def tissue_volumes(posteriors, voxel_size, deep_gm=None, cerebellum=None):
    """Volumes (mm^3) and fractions of intracranial volume of the tissue classes.

    Parameters
    ----------
    posteriors : dict of str -> ndarray
        ``"csf"``, ``"gm"``, ``"wm"`` probabilities (`segment_tissues`), summing to 1 inside
        the intracranial mask and 0 outside.
    voxel_size : sequence of 3 float
        Voxel size (mm).
    deep_gm : ndarray of bool, optional
        Deep gray matter nuclei (atlas labels on the same grid): their non-CSF part is deep
        gray matter, whatever the T1w class (pallidum and thalamus look like white matter).
    cerebellum : ndarray of bool, optional
        The cerebellum (e.g. the SUIT atlas' labels): its gray matter (outside ``deep_gm``)
        is ``cerebellar_gm``, not ``cortical_gm``.

    Returns
    -------
    dict
        ``{structure: (volume_mm3, fraction_icv)}`` for every name of `STRUCTURES`;
        ``gm = cortical_gm + deep_gm + cerebellar_gm`` and ``icv = gm + wm + csf``.

    Examples
    --------
    >>> p = {"csf": np.zeros((4, 4, 4)), "gm": np.zeros((4, 4, 4)), "wm": np.ones((4, 4, 4))}
    >>> p["gm"][0], p["wm"][0] = 1.0, 0.0
    >>> deep = np.zeros((4, 4, 4), bool); deep[3] = True
    >>> v = tissue_volumes(p, (2, 2, 2), deep_gm=deep)
    >>> v["icv"], v["cortical_gm"], v["deep_gm"], v["wm"]
    ((512.0, 1.0), (128.0, 0.25), (128.0, 0.25), (256.0, 0.5))
    """
    csf, gm, wm = (np.asarray(posteriors[k], np.float64) for k in TISSUES)
    if not csf.shape == gm.shape == wm.shape:
        raise ValueError("the posteriors must share one grid")
    voxel = float(np.prod(voxel_size))
    deep = np.zeros(gm.shape, bool) if deep_gm is None else np.asarray(deep_gm, bool)
    cereb = np.zeros(gm.shape, bool) if cerebellum is None else np.asarray(cerebellum, bool)
    for name, m in (("deep_gm", deep), ("cerebellum", cereb)):
        if m.shape != gm.shape:
            raise ValueError(f"{name} {m.shape} is not on the posteriors' grid {gm.shape}")
    vol = {"csf": csf.sum() * voxel,
           "deep_gm": (gm + wm)[deep].sum() * voxel,
           "cerebellar_gm": gm[cereb & ~deep].sum() * voxel,
           "wm": wm[~deep].sum() * voxel}
    vol["cortical_gm"] = gm[~deep & ~cereb].sum() * voxel
    vol["gm"] = vol["cortical_gm"] + vol["deep_gm"] + vol["cerebellar_gm"]
    vol["icv"] = vol["gm"] + vol["wm"] + vol["csf"]
    icv = vol["icv"]
    return {k: (float(vol[k]), float(vol[k] / icv) if icv > 0 else float("nan"))
            for k in STRUCTURES}


def volumes_table(volumes):
    """The per-session table: one row per structure (`STRUCTURES` order).

    Parameters
    ----------
    volumes : dict
        `tissue_volumes` output.

    Returns
    -------
    pandas.DataFrame
        Columns ``structure``, ``volume_mm3``, ``fraction_icv``.

    Examples
    --------
    >>> volumes_table({k: (2.0, 0.5) for k in STRUCTURES}).shape
    (7, 3)
    """
    import pandas as pd

    return pd.DataFrame([{"structure": k, "volume_mm3": volumes[k][0],
                          "fraction_icv": volumes[k][1]} for k in STRUCTURES])


def data_dictionary(method):
    """BIDS JSON data dictionary of the volumes table; ``method`` describes the run
    (segmentation grid, priors or k-means, atlases used)."""
    return {
        "structure": {"Description": "Tissue class or structure",
                      "Levels": dict(STRUCTURE_DESCRIPTIONS)},
        "volume_mm3": {"Description": "Volume in the subject's space (sum of the tissue "
                                      "posterior probabilities times the voxel volume)",
                       "Units": "mm^3"},
        "fraction_icv": {"Description": "volume_mm3 / the icv row's volume_mm3 (head-size "
                                        "normalised volume)"},
        "Method": method,
        "Reference": "Avants BB, Tustison NJ, Wu J, Cook PA, Gee JC. Neuroinformatics "
                     "2011;9:381-400 (Atropos)",
    }


def read_volumes(path):
    """The wide per-session volume columns of a volumes table (group level).

    Returns
    -------
    dict
        ``{"<structure>_volume_mm3": float, "<structure>_fraction_icv": float}`` (no
        ``icv_fraction_icv``, always 1).

    Raises
    ------
    bids_iron.errors.InputError
        Columns missing or not numbers: one line naming the file and the fix.
    """
    import pandas as pd

    from ..errors import InputError

    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    except Exception as exc:
        raise InputError(f"{path}: cannot be read as a TSV ({exc}); rerun the participant "
                         "level for this session") from None
    for column in ("structure", "volume_mm3", "fraction_icv"):
        if column not in table.columns:
            raise InputError(f"{path}: column '{column}' is missing; rerun the participant "
                             "level for this session")
    out = {}
    for row in table.itertuples(index=False):
        if row.structure not in STRUCTURES:
            continue
        for column, value in (("volume_mm3", row.volume_mm3), ("fraction_icv", row.fraction_icv)):
            if row.structure == "icv" and column == "fraction_icv":
                continue
            number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
            if pd.isna(number) and not pd.isna(value):
                raise InputError(f"{path}: {column} of {row.structure} is not a number "
                                 f"({value!r}); rerun the participant level for this session")
            out[f"{row.structure}_{column}"] = float(number)
    return out
