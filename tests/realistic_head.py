"""A realistic whole-head multi-echo GRE simulation with known truth (tests and benchmarks).

Why: a phantom proves only what it contains. The ellipsoid phantom of `phantom.py` has no
scalp with signal, no skull, no face and no veins, so a brain mask or a background removal
that breaks on a real scan passes on it. This module builds what a scanner sees:

* **Brain** from the MNI ICBM152 2009a (symmetric) gray/white-matter probability maps and
  brain outline that ship inside nilearn (no download): GM, WM and CSF by their
  probabilities, 1.89 L including the subarachnoid CSF, the medulla continued as a spinal
  cord in its CSF and vertebral ring below the template.
* **Deep gray matter** (caudate, putamen, globus pallidus, thalamus, pulvinar, substantia
  nigra, red nucleus, dentate) as ellipsoids at their MNI coordinates, with literature chi
  and R2* at 3 T (chi relative to CSF, ppm; e.g. Li et al. 2014 lifespan data; R2* as in
  Haacke et al. 2005). Left = negative x.
* **Veins** (superior sagittal, straight and transverse sinuses, internal cerebral veins;
  chi 0.35 ppm, R2* 45 1/s) and a pineal **calcification** (chi -0.6 ppm, R2* 150 1/s).
* **Outside the brain**: inner table / diploe (fatty marrow WITH signal) / outer table of
  the skull, temporalis and neck muscle, subcutaneous fat (chemical shift -3.4 ppm) and skin,
  all with signal except the bone; eyes in orbital fat; frontal, ethmoid and sphenoid
  sinuses and ear canals / mastoid air (air, +9.4 ppm relative to water); the air around
  the head.
* **Field**: qsm-forward's dipole convolution of the whole chi map on the acquisition grid
  (oblique grids get their true affine, B0 = world +z; chi outside the brain smoothed by 0.7
  voxel against staircase ringing), a second-order spherical-harmonic shim
  over the brain leaving the realistic residual near the
  sinuses, a smooth transmit/receive phase offset, and complex Gaussian noise of ONE sigma
  for every echo (magnitude is Rician) at a given SNR (echo-1 brain mean / sigma).

The anatomy is built once on a 1 mm master grid in MNI space and sampled (with partial
volume) onto any acquisition grid: 2 mm for the tests, 1 mm 192x224x160 for the benchmarks,
oblique (20 deg about the left-right axis), 1x1x2 mm, and slabs that cut the vertex or the
cerebellum. Truth: chi (ppm), local field (ppm, the brain's own sources, zero mean in the
brain), R2* (1/s), brain mask and labels on the acquisition grid.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import qsm_forward
from scipy import ndimage

#: Water-referenced susceptibility of air (ppm); tissue values below are relative to CSF
#: (= water).
AIR_CHI = 9.4
#: Fat's chemical shift (ppm, main methylene peak).
FAT_SHIFT_PPM = -3.4

#: label -> (name, chi ppm, R2* 1/s at 3 T, M0, fat fraction)
TISSUES = {
    0: ("air", AIR_CHI, 0.0, 0.0, 0.0),
    1: ("skin", 0.0, 60.0, 0.5, 0.0),
    2: ("fat", 0.6, 40.0, 0.9, 1.0),
    3: ("muscle", 0.0, 35.0, 0.6, 0.0),
    4: ("bone", -2.0, 500.0, 0.0, 0.0),
    5: ("marrow", 0.3, 80.0, 0.6, 0.8),
    6: ("sinus_air", AIR_CHI, 0.0, 0.0, 0.0),
    7: ("eye", 0.0, 5.0, 1.0, 0.0),
    8: ("csf", 0.0, 4.0, 1.0, 0.0),
    9: ("gray_matter", 0.02, 15.0, 0.85, 0.0),
    10: ("white_matter", -0.03, 20.0, 0.65, 0.0),
    11: ("caudate", 0.06, 22.0, 0.78, 0.0),
    12: ("putamen", 0.05, 26.0, 0.78, 0.0),
    13: ("globus_pallidus", 0.16, 42.0, 0.72, 0.0),
    14: ("thalamus", 0.03, 21.0, 0.76, 0.0),
    15: ("pulvinar", 0.07, 26.0, 0.74, 0.0),
    16: ("substantia_nigra", 0.14, 40.0, 0.70, 0.0),
    17: ("red_nucleus", 0.11, 36.0, 0.70, 0.0),
    18: ("dentate_nucleus", 0.12, 36.0, 0.70, 0.0),
    19: ("vein", 0.35, 45.0, 0.6, 0.0),
    20: ("calcification", -0.6, 150.0, 0.4, 0.0),
}
NAMES = {k: v[0] for k, v in TISSUES.items()}
INDEX = {v[0]: k for k, v in TISSUES.items()}
NUCLEI = ("caudate", "putamen", "globus_pallidus", "thalamus", "pulvinar",
          "substantia_nigra", "red_nucleus", "dentate_nucleus")
#: Their abbreviations in benchmark tables.
NUCLEUS_SHORT = {"caudate": "CN", "putamen": "PUT", "globus_pallidus": "GP", "thalamus": "TH",
                 "pulvinar": "PUL", "substantia_nigra": "SN", "red_nucleus": "RN",
                 "dentate_nucleus": "DN"}

#: Right-hemisphere centres (MNI mm) and radii (mm) of the nuclei, mirrored to the left; later
#: entries overwrite earlier ones (pallidum inside the lentiform, pulvinar behind thalamus).
NUCLEUS_GEOMETRY = (
    ("caudate", (13, 12, 10), (5, 10, 8)),
    ("putamen", (25, 3, 1), (5, 13, 9)),
    ("globus_pallidus", (19, -3, -1), (4, 8, 5)),
    ("thalamus", (11, -17, 7), (7, 12, 8)),
    ("pulvinar", (15, -28, 5), (6, 6, 6)),
    ("substantia_nigra", (10, -18, -12), (3.5, 7, 4)),
    ("red_nucleus", (5, -20, -8), (3.5, 3.5, 3.5)),
    ("dentate_nucleus", (15, -57, -33), (6, 8, 6)),
)

#: The 1 mm master grid (MNI mm): x, y, z ranges, inclusive.
MASTER_RANGE = ((-100, 100), (-130, 100), (-95, 110))


@dataclass
class Acquisition:
    """A simulated whole-head MEGRE scan and its truth on the acquisition grid."""

    magnitude: np.ndarray  # float32 (X, Y, Z, E)
    phase: np.ndarray  # float32 radians
    te: np.ndarray  # s
    b0: float  # T
    b0_dir: np.ndarray  # voxel axes
    affine: np.ndarray  # voxel -> world (RAS mm)
    voxel_size: tuple
    labels: np.ndarray  # int16, `TISSUES` keys
    hemisphere: np.ndarray  # int8 0/1 left/2 right
    brain_mask: np.ndarray  # bool
    chi: np.ndarray  # ppm relative to CSF (air +9.4)
    r2star: np.ndarray  # 1/s
    local_field_ppm: np.ndarray  # the brain's own field, zero mean in the brain mask
    total_field_ppm: np.ndarray  # after the shim
    sigma: float

    def label_mask(self, name, hemisphere=None):
        mask = self.labels == INDEX[name]
        if hemisphere == "left":
            mask &= self.hemisphere == 1
        elif hemisphere == "right":
            mask &= self.hemisphere == 2
        return mask


def _nilearn_maps():
    import nilearn

    d = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data")
    out = {}
    for key in ("t1", "gm", "wm"):
        img = nib.load(os.path.join(d, f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz"))
        out[key] = np.asarray(img.dataobj, np.float32) / 255.0
        out["affine"] = img.affine
    return out


def _tube(points, world, radius):
    """Voxels within ``radius`` mm of the polyline ``points`` (N x 3, mm)."""
    x, y, z = world
    out = np.zeros(x.shape, bool)
    pts = np.asarray(points, float)
    for a, b in zip(pts[:-1], pts[1:]):
        lo = np.minimum(a, b) - radius - 1
        hi = np.maximum(a, b) + radius + 1
        sl = tuple(slice(max(int(np.floor(lo[i] - MASTER_RANGE[i][0])), 0),
                         int(np.ceil(hi[i] - MASTER_RANGE[i][0])) + 1) for i in range(3))
        p = np.stack([x[sl] - a[0], y[sl] - a[1], z[sl] - a[2]], -1)
        ab = b - a
        t = np.clip(p @ ab / max(ab @ ab, 1e-9), 0, 1)
        d = np.linalg.norm(p - t[..., None] * ab, axis=-1)
        out[sl] |= d <= radius
    return out


def _ellipsoid(world, centre, radii):
    x, y, z = world
    return (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((z - centre[2]) / radii[2]) ** 2) <= 1.0


@functools.lru_cache(maxsize=2)
def build_master(seed=0):
    """The head on the 1 mm MNI master grid: a dict of label, probability and property maps.

    Cached in memory per process (about 10 s).
    """
    rng = np.random.default_rng(seed)
    mni = _nilearn_maps()
    axes = [np.arange(lo, hi + 1, dtype=np.float32) for lo, hi in MASTER_RANGE]
    shape = tuple(len(a) for a in axes)
    world = np.meshgrid(*axes, indexing="ij")
    x, y, z = world
    # MNI maps onto the master grid (both 1 mm, axis-aligned: an integer shift)
    off = [int(round(MASTER_RANGE[i][0] - mni["affine"][i, 3])) for i in range(3)]

    def place(a):
        out = np.zeros(shape, np.float32)
        src = tuple(slice(max(o, 0), min(o + shape[i], a.shape[i])) for i, o in enumerate(off))
        dst = tuple(slice(s.start - o, s.stop - o) for s, o in zip(src, off))
        out[dst] = a[src]
        return out

    brain = place(mni["t1"]) > 0
    gm, wm = place(mni["gm"]), place(mni["wm"])
    # spinal cord below the template's medulla: cord (WM-like) in CSF, in a vertebral ring
    k0 = int(-72 - MASTER_RANGE[2][0])
    cy = float(y[:, :, k0][brain[:, :, k0]].mean())
    below = z < -72
    r_axial = np.sqrt(x ** 2 + (y - cy) ** 2)
    cord = below & (r_axial <= 9)
    brain |= cord
    wm = np.where(below & (r_axial <= 5.5), 1.0, wm)
    vertebra = below & (r_axial > 9) & (r_axial <= 17)
    # fractions inside the brain
    gm = np.where(brain, gm, 0)
    wm = np.where(brain, wm, 0)
    tot = gm + wm
    scale = np.where(tot > 1, 1 / np.maximum(tot, 1e-6), 1)
    gm, wm = gm * scale, wm * scale
    csf = np.where(brain, 1 - gm - wm, 0)

    labels = np.zeros(shape, np.int16)
    # the head: a smooth cranium around the brain plus face and neck; the intracranial space
    # between the brain's outline and the smooth inner skull (basal cisterns, the CSF over
    # concave surfaces) is CSF and part of the brain mask
    hull = ndimage.gaussian_filter(brain.astype(np.float32), 3) > 0.3
    cisterns = hull & ~brain
    brain |= cisterns
    csf = np.where(brain, 1 - gm - wm, 0)
    d_brain = ndimage.distance_transform_edt(~hull).astype(np.float32)
    lateral = np.clip(np.abs(x) / 70.0, 0, 1) ** 4 * np.clip((z + 40) / 40, 0, 1) * \
        np.clip((40 - z) / 40, 0, 1)
    muscle_out = 8.5 + 9.0 * lateral  # temporalis thickens laterally
    cranium = d_brain <= muscle_out + 6.0
    face = _ellipsoid(world, (0, 45, -50), (58, 55, 45)) & (z < 0)
    neck = (((x / 55) ** 2 + ((y + 25) / 55) ** 2) <= 1) & (z < -30)
    head = cranium | face | neck | vertebra
    head = ndimage.binary_closing(head, iterations=3) | head
    head = ndimage.binary_fill_holes(head)
    d_out = ndimage.distance_transform_edt(np.pad(head, 1))[1:-1, 1:-1, 1:-1]
    labels[head] = INDEX["muscle"]
    labels[head & (d_out <= 6)] = INDEX["fat"]
    labels[head & (d_out <= 2)] = INDEX["skin"]
    # skull: inner table, diploe (fatty marrow, with signal), outer table
    labels[(d_brain > 0) & (d_brain <= 2.5) & head] = INDEX["bone"]
    labels[(d_brain > 2.5) & (d_brain <= 4.5) & head] = INDEX["marrow"]
    labels[(d_brain > 4.5) & (d_brain <= 6.5) & head] = INDEX["bone"]
    labels[vertebra] = INDEX["bone"]
    labels[below & (r_axial > 13) & (r_axial <= 15)] = INDEX["marrow"]
    # eyes in orbital fat, air spaces (kept 2 mm outside the brain)
    outside = d_brain > 2.0
    for sx in (-1, 1):
        orbit = _ellipsoid(world, (sx * 32, 55, -38), (17, 20, 16)) & outside & head
        labels[orbit] = INDEX["fat"]
        labels[_ellipsoid(world, (sx * 32, 60, -38), (12, 12, 12)) & outside] = INDEX["eye"]
        ear = (_tube([(sx * 48, -22, -44), (sx * 80, -20, -42)], world, 4.5)
               | _ellipsoid(world, (sx * 48, -38, -50), (9, 9, 9)))  # canal, mastoid air
        labels[ear & outside] = INDEX["sinus_air"]
    air = (_ellipsoid(world, (0, 72, 8), (14, 7, 11))  # frontal sinus
           | _ellipsoid(world, (0, 42, -32), (8, 16, 9))  # ethmoid cells
           | _ellipsoid(world, (0, 16, -46), (13, 12, 10))  # sphenoid sinus
           | _ellipsoid(world, (0, 50, -62), (14, 22, 10)))  # nasal cavity / pharynx
    labels[air & outside & head] = INDEX["sinus_air"]
    labels[~head] = INDEX["air"]

    # brain tissue classes by largest probability
    cls = np.argmax(np.stack([csf, gm, wm]), axis=0)
    labels[brain] = np.array([INDEX["csf"], INDEX["gray_matter"], INDEX["white_matter"]],
                             np.int16)[cls[brain]]
    hemi = np.zeros(shape, np.int8)
    nucleus = np.zeros(shape, bool)
    for name, centre, radii in NUCLEUS_GEOMETRY:
        for sx in (-1, 1):
            m = _ellipsoid(world, (sx * centre[0],) + tuple(centre[1:]), radii) & brain
            labels[m] = INDEX[name]
            hemi[m] = 1 if sx < 0 else 2
            nucleus |= m
    # veins: dural sinuses follow the brain surface; internal cerebral veins inside
    veins = np.zeros(shape, bool)
    sss = []
    for ang in np.linspace(np.deg2rad(-30), np.deg2rad(215), 40):
        direction = np.array([0.0, np.cos(ang), np.sin(ang)])
        centre = np.array([0.0, -18.0, 12.0])
        r = 0.0
        while True:
            p = centre + (r + 1) * direction
            idx = tuple(int(round(p[i] - MASTER_RANGE[i][0])) for i in range(3))
            if not brain[idx]:
                break
            r += 1
        sss.append(centre + (r - 1.5) * direction)
    sss = [p for p in sss if p[2] > -5 or p[1] < -60]
    veins |= _tube(sss, world, 4.0)
    torcula = np.array(sss[-1])
    for sx in (-1, 1):
        veins |= _tube([torcula, (sx * 30, -98, -8), (sx * 48, -82, -18), (sx * 56, -62, -28),
                        (sx * 46, -46, -42)], world, 3.5)  # transverse + sigmoid
        veins |= _tube([(sx * 3, -2, 16), (sx * 3, -22, 15), (sx * 2, -38, 10),
                        (0, -46, 6)], world, 1.6)  # internal cerebral veins
    veins |= _tube([(0, -46, 6), (0, -70, 4), torcula], world, 2.5)  # straight sinus
    veins &= head & (labels != INDEX["sinus_air"]) & ~nucleus
    labels[veins] = INDEX["vein"]
    calc = _ellipsoid(world, (0, -32, 2), (2.5, 2.5, 2.5))
    labels[calc] = INDEX["calcification"]

    # property maps: brain tissue by probabilities, structures by label
    props = [tissue_map(labels, brain, (csf, gm, wm), {k: v[col] for k, v in TISSUES.items()})
             for col in (1, 2, 3, 4)]  # chi, R2*, M0, fat fraction
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0)
    texture /= np.abs(texture).max()
    chi = props[0] + np.where(brain, 0.01 * texture, 0)
    r2s = props[1] * np.where(brain, 1 + 0.05 * texture, 1)
    return {"labels": labels, "hemisphere": hemi, "brain": brain.astype(np.float32),
            "chi": chi.astype(np.float32), "r2star": r2s.astype(np.float32),
            "m0": props[2], "fat": props[3]}


def tissue_map(labels, brain, fractions, value_of):
    """A property map (float32) on the labels' grid: in the brain's CSF, gray and white
    matter voxels the mix of the three tissues' values by their ``fractions`` (csf, gm, wm
    arrays summing to 1 in the brain), elsewhere each label's value (``value_of``: label
    index -> value; every index of `TISSUES`)."""
    names = ("csf", "gray_matter", "white_matter")
    lut = np.array([value_of[k] for k in sorted(TISSUES)], np.float32)
    mix = brain & np.isin(labels, [INDEX[n] for n in names])
    mixed = sum(f * value_of[INDEX[n]] for f, n in zip(fractions, names))
    return np.where(mix, mixed, lut[labels]).astype(np.float32)


def acquisition_grid(voxel_size=(2.0, 2.0, 2.0), shape=None, angle_deg=0.0,
                     centre=(0.0, -12.0, 14.0), coverage="full"):
    """Affine and shape of an axial acquisition grid (RAS world = MNI mm).

    ``angle_deg`` tilts the grid about the left-right axis (a typical AC-PC oblique slab);
    ``coverage`` is ``full`` (whole head), ``cut_vertex`` (the top 30 mm of the brain
    missing) or ``cut_cerebellum`` (the slab starts at z = -30 mm).
    Default shape covers 192 x 224 x 160 mm.
    """
    vs = np.asarray(voxel_size, float)
    extent = np.array([192.0, 224.0, 160.0])
    centre = np.array(centre, float)
    if coverage == "cut_vertex":
        extent[2], centre[2] = 120.0, -6.0
    elif coverage == "cut_cerebellum":
        extent[2], centre[2] = 120.0, 30.0
    elif coverage != "full":
        raise ValueError(f"coverage must be full, cut_vertex or cut_cerebellum, not {coverage}")
    if shape is None:
        shape = tuple(int(round(e / v)) for e, v in zip(extent, vs))
    a = np.deg2rad(angle_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(vs)
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine, tuple(shape)


def _sample(master_map, affine, shape, order, blur_vox=None):
    """Sample a master map at the voxel centres of (affine, shape)."""
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3] @ idx + affine[:3, 3:4]
    coords = world - np.array([r[0] for r in MASTER_RANGE], np.float32)[:, None]
    src = master_map
    if blur_vox is not None and order > 0:
        src = ndimage.gaussian_filter(master_map.astype(np.float32), blur_vox)
    mode_value = 0.0
    out = ndimage.map_coordinates(src, coords, order=order, mode="constant", cval=mode_value,
                                  prefilter=False)
    return out.reshape(shape)


def _fields(master, affine, shape, vs, blur):
    """Total (2nd-order shimmed) and local field (ppm) on a grid whose third axis is B0."""
    b0_dir = affine[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    b0_dir /= np.linalg.norm(b0_dir)
    brain = _sample(master["brain"], affine, shape, 1, blur) > 0.5
    chi = _sample(master["chi"] - AIR_CHI, affine, shape, 1, blur) + AIR_CHI
    # chi outside the brain smoothed by 0.7 voxel: voxel-staircase air/bone edges of 9.4 ppm
    # otherwise ring through the discrete dipole kernel into the brain (see
    # ../shared/DESIGN.md); a real head's edges are not staircases.
    smooth = ndimage.gaussian_filter(chi.astype(np.float64), 0.7, mode="nearest")
    chi64 = np.where(brain, chi, smooth)
    total = qsm_forward.generate_field(chi64, voxel_size=list(vs), B0_dir=list(b0_dir))
    total = _shim(total, brain, affine)
    local = qsm_forward.generate_field(chi64 * brain, voxel_size=list(vs), B0_dir=list(b0_dir))
    local = (local - local[brain].mean()) * brain
    return total, local


def _shim(field, mask, affine):
    """Field minus its least-squares fit by the 9 spherical harmonics up to 2nd order in mask.

    A scanner's shim coils make harmonic fields (1, x, y, z, xy, xz, yz, x^2 - y^2,
    2z^2 - x^2 - y^2 in world mm); qsm-forward's ``generate_shimmed_field`` fits x^2, y^2,
    z^2 separately in voxel indices, which is not harmonic and leaves a background that no
    SMV-based removal can take out on anisotropic grids.
    """
    idx = np.indices(field.shape, dtype=np.float64).reshape(3, -1)
    x, y, z = (affine[:3, :3] @ idx + affine[:3, 3:4]) / 100.0
    basis = np.stack([np.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y,
                      2 * z * z - x * x - y * y], 1)
    sel = mask.ravel()
    coef, *_ = np.linalg.lstsq(basis[sel], field.ravel()[sel], rcond=None)
    out = field - (basis @ coef).reshape(field.shape)
    return out - out[mask].mean()


def _bounding_grid(affine, shape, vs):
    """An axis-aligned grid of voxel size ``vs`` holding the grid (affine, shape) plus 4 voxels."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:4]
    lo, hi = world.min(1) - 4 * vs, world.max(1) + 4 * vs
    shape0 = tuple(int(np.ceil((b - a) / v)) + 1 for a, b, v in zip(lo, hi, vs))
    aff0 = np.eye(4)
    aff0[:3, :3] = np.diag(vs)
    aff0[:3, 3] = lo
    return aff0, shape0


def simulate(voxel_size=(2.0, 2.0, 2.0), angle_deg=0.0, coverage="full", snr=100.0,
             te=(0.004, 0.009, 0.014, 0.019, 0.024, 0.029), b0=3.0, seed=0, shape=None,
             coil_bias=1.0, anatomy="mni"):
    """Simulate a whole-head MEGRE acquisition (see the module docstring).

    ``coil_bias`` scales the receive sensitivity of a multi-channel head coil, which is
    brightest at the surface: magnitude x (1 + coil_bias (r / 90 mm)^2), r the distance from
    the head's centre (the scalp then shines ~2x brighter than the thalamus, as on an
    unnormalised 32-channel scan). Returns an `Acquisition`. ``snr=None`` gives noise-free
    data; SNR is defined before the bias (brain mean of echo 1 without it over sigma).
    ``anatomy="independent"`` simulates the second head of
    `registration_subject.independent_master` (atlas nuclei, older iron values, the head
    deformed) instead of this module's.
    """
    if abs(voxel_size[0] - voxel_size[1]) > 1e-6:
        raise ValueError("keep dx == dy (qsm-forward's kernel swaps them)")
    if anatomy == "mni":
        master = build_master()
    elif anatomy == "independent":
        try:
            from . import registration_subject
        except ImportError:  # pragma: no cover
            import registration_subject
        master = registration_subject.independent_master()
    else:
        raise ValueError(f"anatomy must be 'mni' or 'independent', not {anatomy!r}")
    affine, shape = acquisition_grid(voxel_size, shape, angle_deg, coverage=coverage)
    vs = np.asarray(voxel_size, float)
    blur = np.maximum(vs / 2.355 - 0.3, 0)  # partial volume of a vs-sized voxel (1 mm master)
    blur = tuple(float(b) for b in blur) if blur.any() else None
    labels = _sample(master["labels"], affine, shape, 0).astype(np.int16)
    hemi = _sample(master["hemisphere"], affine, shape, 0).astype(np.int8)
    brain = _sample(master["brain"], affine, shape, 1, blur) > 0.5
    chi = _sample(master["chi"] - AIR_CHI, affine, shape, 1, blur) + AIR_CHI
    r2s = _sample(master["r2star"], affine, shape, 1, blur)
    m0 = _sample(master["m0"], affine, shape, 1, blur)
    fat = _sample(master["fat"] * master["m0"], affine, shape, 1, blur)
    b0_dir = affine[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    b0_dir /= np.linalg.norm(b0_dir)
    if abs(angle_deg) < 1e-9:
        total, local = _fields(master, affine, shape, vs, blur)
    else:
        # The field is physics in the world (B0 = world z): compute it on an axis-aligned grid
        # around the slab and interpolate it onto the oblique grid. (A dipole kernel tilted
        # on the acquisition grid makes the background field of 9.4 ppm staircase edges
        # non-harmonic inside the brain: V-SHARP residual 0.004 ppm instead of 0.0003.)
        aff0, shape0 = _bounding_grid(affine, shape, vs)
        total0, local0 = _fields(master, aff0, shape0, vs, blur)
        inv = np.linalg.inv(aff0)
        idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
        pts = (inv[:3, :3] @ (affine[:3, :3] @ idx + affine[:3, 3:4])) + inv[:3, 3:4]
        total = ndimage.map_coordinates(total0, pts, order=3, mode="nearest").reshape(shape)
        local = ndimage.map_coordinates(local0, pts, order=3, mode="nearest").reshape(shape)
        total -= total[brain].mean()
        local = (local - local[brain].mean()) * brain
    offset = 0.5 * qsm_forward.generate_phase_offset(np.maximum(m0, 1e-3), m0 > 0.05, shape)
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape((3,) + shape)
    radius = np.sqrt(world[0] ** 2 + (world[1] + 15) ** 2 + (world[2] - 10) ** 2)
    coil = (1 + coil_bias * (radius / 90.0) ** 2).astype(np.float32)
    water = np.maximum(m0 - fat, 0)
    signal = []
    for t in te:
        s = qsm_forward.generate_signal(total, B0=b0, TR=1.0, TE=t, flip_angle=90,
                                        phase_offset=offset, R1=1e6, R2star=r2s, M0=water)
        if fat.any():
            s = s + qsm_forward.generate_signal(total + FAT_SHIFT_PPM, B0=b0, TR=1.0, TE=t,
                                                flip_angle=90, phase_offset=offset, R1=1e6,
                                                R2star=r2s, M0=fat)
        signal.append(s.astype(np.complex64))
    signal = np.stack(signal, axis=-1)
    sigma = 0.0
    if snr:
        rng = np.random.default_rng(seed)
        sigma = float(np.abs(signal[..., 0])[brain].mean() / snr)
    signal *= coil[..., None]
    if snr:
        signal += (sigma * (rng.standard_normal(signal.shape, np.float32)
                            + 1j * rng.standard_normal(signal.shape, np.float32)))
    chi_rel = np.where(labels == INDEX["air"], AIR_CHI, chi)
    return Acquisition(magnitude=np.abs(signal).astype(np.float32),
                       phase=np.angle(signal).astype(np.float32), te=np.asarray(te, float),
                       b0=b0, b0_dir=b0_dir, affine=affine, voxel_size=tuple(vs),
                       labels=labels, hemisphere=hemi, brain_mask=brain,
                       chi=chi_rel.astype(np.float32), r2star=r2s.astype(np.float32),
                       local_field_ppm=local.astype(np.float32),
                       total_field_ppm=total.astype(np.float32), sigma=sigma)


def as_megre(acq):
    """The acquisition as the app's `MegreData` (phase in radians, B0 3 T, Siemens)."""
    from bids_iron.bids.load import MegreData

    return MegreData(magnitude=acq.magnitude, te=acq.te, affine=acq.affine,
                     voxel_size=acq.voxel_size, b0=acq.b0, manufacturer="Siemens",
                     sources=[Path("sim_echo-1_part-mag_MEGRE.nii.gz")] * len(acq.te)
                     + [Path("sim_echo-1_part-phase_MEGRE.nii.gz")],
                     phase=acq.phase, phase_is_radians=True)


def roi_means(vol, acq, mask):
    """Means of ``vol`` in the 16 nucleus ROIs (left/right) inside ``mask`` (NaN if < 3 voxels)."""
    out = []
    for n in NUCLEI:
        for hemi in ("left", "right"):
            roi = acq.label_mask(n, hemi) & mask
            out.append(vol[roi].mean() if roi.sum() >= 3 else np.nan)
    return np.array(out)


def without_rim(mask, voxel_size, mm=2.0):
    """``mask`` without its outer ``mm``: there the phantom's brain voxels share volume with
    bone (truth chi down to -0.75 ppm), which dominates any whole-mask error."""
    return mask & (ndimage.distance_transform_edt(mask, sampling=voxel_size) > mm)


def nucleus_bias(est, truth, acq, mask):
    """{nucleus: bias %} of the mean of ``est`` against ``truth`` (left and right pooled) in
    ``mask``; both maps already referenced alike (e.g. to their mask means)."""
    bias = {}
    for n in NUCLEI:
        roi = acq.label_mask(n) & mask
        if roi.sum() >= 3:
            bias[n] = 100.0 * (est[roi].mean() - truth[roi].mean()) / abs(truth[roi].mean())
    return bias


def evaluate(acq, res):
    """Truth comparison of a phase-stage result (`PhaseResult`): mask, LFS and chi metrics."""
    from qsm_metrics import metrics

    vox_ml = float(np.prod(acq.voxel_size)) / 1000
    truth_brain = acq.brain_mask
    mask, m2 = res.mask, res.mask_local
    dice = 2 * (mask & truth_brain).sum() / (mask.sum() + truth_brain.sum())
    nonbrain = mask & ~truth_brain
    lfs_t = roi_means(acq.local_field_ppm, acq, m2)
    lfs_e = roi_means(res.lfs_ppm, acq, m2)
    ok = np.isfinite(lfs_t) & np.isfinite(lfs_e)
    r_lfs = np.corrcoef(lfs_t[ok], lfs_e[ok])[0, 1]
    ev = m2 & truth_brain
    met = metrics(res.chi_ppm, acq.chi, ev)
    chi = res.chi_ppm - res.chi_ppm[ev].mean()
    truth = acq.chi - acq.chi[ev].mean()
    t, e = roi_means(truth, acq, ev), roi_means(chi, acq, ev)
    ok = np.isfinite(t) & np.isfinite(e)
    slope = np.polyfit(t[ok], e[ok], 1)[0]
    return {"dice": dice, "volume_L": mask.sum() * vox_ml / 1000,
            "nonbrain_ml": nonbrain.sum() * vox_ml, "kept": m2.sum() / max(mask.sum(), 1),
            "lfs_r": r_lfs, "nrmse": met["nrmse"], "hfen": met["hfen"], "xsim": met["xsim"],
            "slope": slope, "r": np.corrcoef(t[ok], e[ok])[0, 1],
            "roi_err": float(np.mean(np.abs(e[ok] - t[ok]))), "n_roi": int(ok.sum()),
            "nrmse_inner": metrics(res.chi_ppm, acq.chi,
                                   without_rim(ev, acq.voxel_size))["nrmse"],
            "kept_brain": float((m2 & truth_brain).sum() / truth_brain.sum()),
            "bias": nucleus_bias(chi, truth, acq, ev)}
