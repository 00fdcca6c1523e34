"""A small TEMPLATEFLOW_HOME in TemplateFlow's layout, built offline from the demo's head.

TemplateFlow downloads its templates; the demo (and the tests) must run offline, so this
module writes a home whose files have the real names and label tables, and whose images come
from `bids_iron.demo.head`: a T1w-like template (white matter bright, gray matter and nuclei
darker, CSF dark), its brain mask and white-matter probability map, MASSP20 and
MIAL67ThalamicNuclei label maps with the phantom's nuclei at the indices of the REAL label
tables (read from the skeleton the templateflow package bundles), and a SUIT template: a crop
of the posterior fossa in its own space (scaled and shifted against MNI, so that it needs its
own registration) with Diedrichsen2009 dentate labels.

Files written (``<home>/tpl-MNI152NLin2009cAsym/`` and ``<home>/tpl-SUIT/``)::

    template_description.json                         (real, from the skeleton)
    tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz         (res-01 is `fine` mm, default 1 mm)
    tpl-MNI152NLin2009cAsym_res-02_T1w.nii.gz         (2 mm)
    tpl-MNI152NLin2009cAsym_res-02_T2w.nii.gz         (2 mm, iron-rich nuclei dark)
    tpl-MNI152NLin2009cAsym_res-0{1,2}_desc-brain_mask.nii.gz
    tpl-MNI152NLin2009cAsym_res-01_label-WM_probseg.nii.gz
    tpl-MNI152NLin2009cAsym_res-01_atlas-MASSP20_dseg.nii.gz + .tsv (real)
    tpl-MNI152NLin2009cAsym_res-01_atlas-MIAL67ThalamicNuclei_dseg.nii.gz
    tpl-MNI152NLin2009cAsym_atlas-MIAL67ThalamicNuclei_dseg.tsv (real)
    tpl-SUIT_T1w.nii.gz, tpl-SUIT_atlas-Diedrichsen2009_dseg.nii.gz + .tsv (real)

This is NOT the MNI template: it is the demo's own anatomy under TemplateFlow's names, so
registration and atlas labelling run exactly as with the real files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .head import PULVINAR_Y_MM, TISSUES, make_phantom

TEMPLATE = "MNI152NLin2009cAsym"
SKELETON = Path(__import__("templateflow").__file__).parent / "conf" / "templateflow-skel.zip"

#: phantom tissue name -> T1w-like template intensity
T1W_CONTRAST = {"scalp_skull": 0.45, "white_matter": 1.0, "gray_matter": 0.62, "csf": 0.12,
                "caudate": 0.66, "putamen": 0.7, "globus_pallidus": 0.9, "thalamus": 0.82,
                "substantia_nigra": 0.84, "red_nucleus": 0.86, "dentate_nucleus": 0.86,
                "vein": 0.62, "air_cavity": 0.0, "brainstem": 0.93,
                "cerebellum_gray_matter": 0.6, "cerebellum_white_matter": 0.97}

#: phantom tissue name -> T2w-like template intensity (iron-rich nuclei dark, CSF bright)
T2W_CONTRAST = {"scalp_skull": 0.4, "white_matter": 0.5, "gray_matter": 0.7, "csf": 1.0,
                "caudate": 0.62, "putamen": 0.55, "globus_pallidus": 0.3, "thalamus": 0.56,
                "substantia_nigra": 0.3, "red_nucleus": 0.33, "dentate_nucleus": 0.35,
                "vein": 0.3, "air_cavity": 0.0, "brainstem": 0.52,
                "cerebellum_gray_matter": 0.72, "cerebellum_white_matter": 0.5}

#: phantom nucleus -> MASSP20 indices (left, right) of the real table
MASSP = {"caudate": (1, 2), "substantia_nigra": (5, 6), "red_nucleus": (7, 8),
         "thalamus": (13, 14), "putamen": (38, 39)}
MASSP_GPI, MASSP_GPE, MASSP_LV, MASSP_IC, MASSP_AC = (9, 10), (11, 12), (15, 16), (21, 22), 54
MIAL_PULVINAR, MIAL_OTHER = (1, 8), (3, 10)  # thal-lh/rh-pulvinar, thal-lh/rh-mediodorsal
SUIT_DENTATE = (29, 30)

#: The SUIT space of the synthetic home: x_suit = SUIT_SCALE * x_mni + SUIT_SHIFT (mm)
SUIT_SCALE = 1.06
SUIT_SHIFT = np.array([0.0, 4.0, -3.0])


def skeleton_text(member):
    """Text of one file of the templateflow package's skeleton zip (the real label TSVs)."""
    with zipfile.ZipFile(SKELETON) as zf:
        return zf.read(member).decode()


def centred_affine(shape, voxel_size):
    """Affine of a grid centred on world (0, 0, 0), RAS axes."""
    vs = np.broadcast_to(np.asarray(voxel_size, float), (3,))
    affine = np.diag(list(vs) + [1.0])
    affine[:3, 3] = -vs * (np.asarray(shape) - 1) / 2.0
    return affine


def _world(shape, affine):
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape((3,) + tuple(shape))


def reference_phantom(voxel_size=1.0, scale=1.0):
    """The phantom on a fine centred grid (default 1 mm; 128 x 128 x 100 mm field).

    ``scale`` enlarges the anatomy: the grid covers ``scale`` times the field with the same
    number of voxels of ``voxel_size`` mm (the phantom is built at ``voxel_size / scale``
    phantom-mm; `centred_affine(shape, voxel_size)` is its world affine).
    """
    shape = tuple(int(round(n * scale / voxel_size)) for n in (128, 128, 100))
    return make_phantom(shape=shape, voxel_size=(voxel_size / scale,) * 3)


def sample_labels(ph, affine_ph, world):
    """Nearest-neighbour phantom labels and hemispheres at world points ``(3, ...)``."""
    inv = np.linalg.inv(affine_ph)
    ijk = np.tensordot(inv[:3, :3], world, axes=1) + inv[:3, 3].reshape((3,) + (1,) * (world.ndim - 1))
    lab = ndimage.map_coordinates(ph.labels, ijk, order=0, mode="constant", cval=0)
    hemi = ndimage.map_coordinates(ph.hemisphere, ijk, order=0, mode="constant", cval=0)
    return lab.astype(np.int16), hemi.astype(np.int8)


def _by_name(labels, name):
    index = [k for k, v in TISSUES.items() if v[0] == name][0]
    return labels == index


def t1w_like(labels, smooth_vox=0.6, contrast=None):
    """T1w-like intensities of phantom ``labels`` (a template is an average: slightly blurred)."""
    contrast = contrast or T1W_CONTRAST
    out = np.zeros(labels.shape, np.float32)
    for index, (name, *_rest) in TISSUES.items():
        out[labels == index] = contrast[name]
    return ndimage.gaussian_filter(out, smooth_vox).astype(np.float32)


def massp_labels(labels, hemi, world):
    """MASSP20-indexed label map of phantom labels (plus internal capsule and AC)."""
    out = np.zeros(labels.shape, np.int16)
    x, y, z = world
    for name, (left, right) in MASSP.items():
        m = _by_name(labels, name)
        out[m & (hemi == 1)] = left
        out[m & (hemi == 2)] = right
    gp = _by_name(labels, "globus_pallidus")
    inner = np.abs(x) < 18.0  # GPi medial to GPe
    for side, h in ((0, 1), (1, 2)):
        out[gp & (hemi == h) & inner] = MASSP_GPI[side]
        out[gp & (hemi == h) & ~inner] = MASSP_GPE[side]
    csf = _by_name(labels, "csf") & (z > 3.0)  # the ventricles; cisterns and 4th ventricle are lower
    out[csf & (x < 0)] = MASSP_LV[0]
    out[csf & (x >= 0)] = MASSP_LV[1]
    wm = _by_name(labels, "white_matter")
    capsule = wm & (np.abs(x) >= 14) & (np.abs(x) <= 24) & (y >= -20) & (y <= 22) & (z >= -6) & (z <= 16)
    out[capsule & (x < 0)] = MASSP_IC[0]
    out[capsule & (x >= 0)] = MASSP_IC[1]
    ac = wm & (np.abs(x) < 3) & (np.abs(y - 2) < 1.6) & (np.abs(z + 2) < 1.6)
    out[ac] = MASSP_AC
    return out


def mial_labels(labels, hemi, world):
    """MIAL67-indexed thalamic nuclei: pulvinar = posterior third of the phantom thalamus."""
    out = np.zeros(labels.shape, np.int16)
    thal = _by_name(labels, "thalamus")
    posterior = world[1] < PULVINAR_Y_MM
    for side, h in ((0, 1), (1, 2)):
        out[thal & (hemi == h) & posterior] = MIAL_PULVINAR[side]
        out[thal & (hemi == h) & ~posterior] = MIAL_OTHER[side]
    return out


def _save(arr, affine, path, dtype):
    img = nib.Nifti1Image(np.asarray(arr, dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def build_tf_home(root, fine=1.0, omit=(), suit=True, scale=1.0):
    """Write the synthetic TEMPLATEFLOW_HOME under ``root`` and return its path.

    Parameters
    ----------
    root : path-like
        Folder to create (the TEMPLATEFLOW_HOME).
    fine : float
        Voxel size (mm) of the ``res-01`` files; ``res-02`` files are 2 mm.
    omit : iterable of str
        File names not to write (to test missing files).
    suit : bool
        Also write ``tpl-SUIT``.
    scale : float
        Size of the anatomy relative to the phantom's (1.0: a ~0.4 L brain as in the tests;
        the demo uses `DEMO_SCALE`, an adult-sized brain).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     home = build_tf_home(folder, fine=4.0, suit=False)
    ...     sorted(p.name for p in home.glob("tpl-*/*_res-02_*"))[:1]
    ['tpl-MNI152NLin2009cAsym_res-02_T1w.nii.gz']
    """
    root = Path(root)
    tpl = root / f"tpl-{TEMPLATE}"
    tpl.mkdir(parents=True, exist_ok=True)
    omit = set(omit)

    def path(name):
        return None if name in omit else tpl / name

    (tpl / "template_description.json").write_text(
        skeleton_text(f"tpl-{TEMPLATE}/template_description.json"))
    ph = reference_phantom(fine, scale)
    aff = centred_affine(ph.labels.shape, fine)
    world = _world(ph.labels.shape, aff) / scale  # phantom mm, where the label rules are
    files = {
        f"tpl-{TEMPLATE}_res-01_T1w.nii.gz": (t1w_like(ph.labels, 0.6 * 1.0 / fine), np.float32),
        f"tpl-{TEMPLATE}_res-01_desc-brain_mask.nii.gz": (ph.brain_mask, np.uint8),
        f"tpl-{TEMPLATE}_res-01_label-WM_probseg.nii.gz": (
            ndimage.gaussian_filter(_by_name(ph.labels, "white_matter").astype(np.float32), 0.7 / fine),
            np.float32),
        f"tpl-{TEMPLATE}_res-01_atlas-MASSP20_dseg.nii.gz": (massp_labels(ph.labels, ph.hemisphere, world), np.int16),
        f"tpl-{TEMPLATE}_res-01_atlas-MIAL67ThalamicNuclei_dseg.nii.gz": (
            mial_labels(ph.labels, ph.hemisphere, world), np.int16),
    }
    for name, (arr, dtype) in files.items():
        if path(name):
            _save(arr, aff, path(name), dtype)
    # res-02 (2 mm) T1w and mask, sampled from the same geometry
    ph2 = reference_phantom(2.0, scale)
    aff2 = centred_affine(ph2.labels.shape, 2.0)
    for name, arr, dtype in ((f"tpl-{TEMPLATE}_res-02_T1w.nii.gz", t1w_like(ph2.labels, 0.5), np.float32),
                             (f"tpl-{TEMPLATE}_res-02_T2w.nii.gz", t1w_like(ph2.labels, 0.5, T2W_CONTRAST), np.float32),
                             (f"tpl-{TEMPLATE}_res-02_desc-brain_mask.nii.gz", ph2.brain_mask, np.uint8)):
        if path(name):
            _save(arr, aff2, path(name), dtype)
    for member, name in ((f"tpl-{TEMPLATE}/tpl-{TEMPLATE}_res-01_atlas-MASSP20_dseg.tsv", None),
                         (f"tpl-{TEMPLATE}/tpl-{TEMPLATE}_atlas-MIAL67ThalamicNuclei_dseg.tsv", None)):
        fname = Path(member).name
        if path(fname):
            path(fname).write_text(skeleton_text(member))
    if suit:
        build_suit(root, ph, aff, omit, scale)
    return root


def build_suit(root, ph, aff_ph, omit=(), scale=1.0):
    """Write ``tpl-SUIT``: the posterior fossa of the phantom in SUIT's own (scaled) space."""
    suit = root / "tpl-SUIT"
    suit.mkdir(parents=True, exist_ok=True)
    (suit / "template_description.json").write_text(skeleton_text("tpl-SUIT/template_description.json"))
    vs = 1.0
    # SUIT grid: x -56..56, y -80..-4, z -56..0 mm in SUIT coordinates
    lo = np.array([-56.0, -80.0, -56.0]) * scale
    shape = tuple(int(n) for n in (np.array([56.0, -4.0, 0.0]) * scale - lo) / vs + 1)
    aff = np.diag([vs, vs, vs, 1.0])
    aff[:3, 3] = lo
    world_suit = _world(shape, aff)
    world_mni = (world_suit - scale * SUIT_SHIFT.reshape(3, 1, 1, 1)) / SUIT_SCALE
    lab, hemi = sample_labels(ph, aff_ph, world_mni)
    t1w = t1w_like(lab, 0.6)
    dseg = np.zeros(shape, np.int16)
    dent = _by_name(lab, "dentate_nucleus")
    dseg[dent & (hemi == 1)] = SUIT_DENTATE[0]
    dseg[dent & (hemi == 2)] = SUIT_DENTATE[1]
    # a crude 'lobule' label (the cerebellar cortex, left/right) so that the map is not only nuclei
    body = _by_name(lab, "cerebellum_gray_matter")
    dseg[body & (world_suit[0] < 0)] = 1
    dseg[body & (world_suit[0] >= 0)] = 2
    for name, arr, dtype in (("tpl-SUIT_T1w.nii.gz", t1w, np.float32),
                             ("tpl-SUIT_atlas-Diedrichsen2009_dseg.nii.gz", dseg, np.int16)):
        if name not in omit:
            _save(arr, aff, suit / name, dtype)
    if "tpl-SUIT_atlas-Diedrichsen2009_dseg.tsv" not in omit:
        (suit / "tpl-SUIT_atlas-Diedrichsen2009_dseg.tsv").write_text(
            skeleton_text("tpl-SUIT/tpl-SUIT_atlas-Diedrichsen2009_dseg.tsv"))
