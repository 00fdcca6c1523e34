"""A small labelled head phantom and a multi-echo GRE simulation with known ground truth.

Built on qsm-forward's building blocks (``generate_field``, ``generate_phase_offset``,
``generate_signal``) rather than its ``generate_bids``, because (see ../shared/DESIGN.md)
that scales each echo's noise by the echo's own maximum. Here every echo gets complex
Gaussian noise of ONE sigma = (mean brain magnitude of echo 1) / snr.

Geometry: ellipsoids on a voxel grid, deep gray matter nuclei left/right of the midline
(array axis 0 is left->right in RAS world space, axis 1 posterior->anterior, axis 2
inferior->superior), an air cavity (sinus) below the frontal brain, a skull shell and a vein.
The small nuclei have the anatomy that surrounds them in a real brain (`_posterior_fossa`):
substantia nigra and red nucleus in a midbrain wrapped by CSF cisterns with the aqueduct
behind, on a pons with the fourth ventricle behind it; the dentate nuclei in the white matter
core of a cerebellum (cortex around it, a CSF tentorium above).
All ground truth is in SI / ppm: R2* in 1/s, chi in ppm (paramagnetic positive), field in ppm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import qsm_forward
from scipy import ndimage

#: label index -> (name, chi ppm, R2* 1/s at 3 T, M0)
#: Typical adult values at 3 T (chi relative to CSF; e.g. the reviews of Haacke et al. 2005 and
#: the lifespan QSM data of Li et al. 2014): R2* GP ~40-50, SN ~35-45, RN and DN ~30-40, WM ~20
#: 1/s, so the iron-rich nuclei are clearly darker than white matter on late echoes;
#: brainstem (midbrain/pons tracts) and cerebellar white matter slightly diamagnetic like
#: cerebral white matter; cerebellar cortex close to CSF. M0 is the echo-1 signal scale.
TISSUES = {
    1: ("scalp_skull", -1.5, 60.0, 0.3),
    2: ("white_matter", -0.03, 20.0, 0.65),
    3: ("gray_matter", 0.02, 15.0, 0.85),
    4: ("csf", 0.0, 4.0, 1.0),
    5: ("caudate", 0.06, 22.0, 0.78),
    6: ("putamen", 0.05, 26.0, 0.78),
    7: ("globus_pallidus", 0.16, 42.0, 0.72),
    8: ("thalamus", 0.03, 21.0, 0.76),
    9: ("substantia_nigra", 0.14, 40.0, 0.70),
    10: ("red_nucleus", 0.11, 36.0, 0.70),
    11: ("dentate_nucleus", 0.12, 36.0, 0.70),
    12: ("vein", 0.35, 45.0, 0.6),
    13: ("air_cavity", 9.0, 0.0, 0.0),
    14: ("brainstem", -0.03, 22.0, 0.66),
    15: ("cerebellum_gray_matter", 0.01, 16.0, 0.84),
    16: ("cerebellum_white_matter", -0.03, 20.0, 0.66),
}
NUCLEI = ("caudate", "putamen", "globus_pallidus", "thalamus", "substantia_nigra",
          "red_nucleus", "dentate_nucleus")
BRAIN_LABELS = tuple(k for k, v in TISSUES.items() if v[0] not in ("scalp_skull", "air_cavity"))


@dataclass
class Phantom:
    """Ground truth on a voxel grid (float64 maps; labels int16)."""

    labels: np.ndarray
    hemisphere: np.ndarray  # 0 midline/none, 1 left, 2 right (per voxel, for nuclei)
    chi: np.ndarray  # ppm
    r2star: np.ndarray  # 1/s
    m0: np.ndarray
    brain_mask: np.ndarray
    voxel_size: tuple
    names: dict = field(default_factory=lambda: {k: v[0] for k, v in TISSUES.items()})

    def label_mask(self, name, hemisphere=None):
        index = [k for k, v in self.names.items() if v == name][0]
        mask = self.labels == index
        if hemisphere == "left":
            mask &= self.hemisphere == 1
        elif hemisphere == "right":
            mask &= self.hemisphere == 2
        return mask


def _ellipsoid(grid, centre, radii):
    x, y, z = grid
    return (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((z - centre[2]) / radii[2]) ** 2) <= 1.0


#: Centres (mm, right hemisphere; mirrored to the left) of the brainstem and cerebellar nuclei.
SN_CENTRE = (9, -10, -14)
RN_CENTRE = (5, -14, -8)
#: The dentate sits in the cerebellar white matter, 12.6 mm inside the brain surface (its
#: whole ellipsoid at least 6.7 mm inside, so it survives an 8 mm background-removal erosion
#: at its core); real MNI coordinates are about (15, -57, -35) in a larger brain.
DN_CENTRE = (14, -28, -14)


def _posterior_fossa(grid, labels, brain):
    """Paint the brainstem, cerebellum and their CSF spaces into ``labels`` (in place).

    Structure that guides a registration around the small nuclei, as in a real brain:

    * cerebellum (cortex label 15 with a white-matter core 16 per hemisphere) in the
      posterior-inferior brain, separated from the occipital/temporal lobes by a 3 mm CSF
      layer (tentorium and the cisterns around it);
    * brainstem (14): midbrain (holding substantia nigra and red nucleus) on the pons,
      wrapped by the ambient/crural cisterns (CSF ring), with the interpeduncular cistern
      in the anterior midline notch, the cerebral aqueduct behind the red nuclei, the
      prepontine cistern in front of the pons and the fourth ventricle between pons and
      cerebellum, and the lower brainstem separated from the skull by CSF.
    """
    x, y, z = grid
    csf, stem, cgm, cwm = 4, 14, 15, 16
    fossa = _ellipsoid(grid, (0, -34, -16), (46, 20, 14)) & brain
    labels[_ellipsoid(grid, (0, -34, -16), (49, 23, 17)) & brain & ~fossa] = csf  # tentorium
    labels[fossa] = cgm
    for sx in (-1, 1):
        labels[_ellipsoid(grid, (sx * 15, -29, -15), (11, 10, 8)) & fossa] = cwm
    midbrain = _ellipsoid(grid, (0, -10, -12), (16, 11, 10))
    pons = _ellipsoid(grid, (0, -6, -28), (14, 12, 10))
    cisterns = (_ellipsoid(grid, (0, -10, -12), (19, 14, 12)) & (z > -22) & (z < -3))
    cisterns |= _ellipsoid(grid, (0, -6, -28), (17, 15, 12)) & (y > -8)  # prepontine
    labels[cisterns & brain] = csf
    # the lower brainstem is bathed in CSF (premedullary cistern, cisterna magna) rather than
    # touching the skull: within 6 mm of the brain surface it is CSF
    deep = _ellipsoid(grid, (0, 0, 2), (46, 46, 32))
    labels[(midbrain | pons) & brain & ~deep] = csf
    labels[(midbrain | pons) & deep] = stem
    labels[_ellipsoid(grid, (0, 0, -16), (4, 5, 6)) & brain] = csf  # interpeduncular
    aqueduct = (x ** 2 + (y + 18.5) ** 2 <= 1.5 ** 2) & (z > -22) & (z < -2)
    labels[aqueduct] = csf
    labels[_ellipsoid(grid, (0, -21, -27), (6, 3, 6)) & brain] = csf  # fourth ventricle


def make_phantom(shape=(64, 64, 48), voxel_size=(2.0, 2.0, 2.0), seed=0):
    """Build a labelled head phantom.

    Positions are in mm relative to the grid centre, so the same anatomy appears (at other
    sampling) for any ``shape``/``voxel_size`` that covers about 120 x 120 x 90 mm.
    R2* varies smoothly inside every tissue (a gradient of +-10 % along y plus a small
    random texture), so a fit must work voxel by voxel.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    vs = np.asarray(voxel_size, float)
    axes = [(np.arange(n) - (n - 1) / 2.0) * v for n, v in zip(shape, vs)]
    grid = np.meshgrid(*axes, indexing="ij")
    x, y, z = grid
    labels = np.zeros(shape, np.int16)
    hemi = np.zeros(shape, np.int8)
    head = _ellipsoid(grid, (0, 0, 0), (58, 58, 44))
    brain = _ellipsoid(grid, (0, 0, 2), (52, 52, 38))
    labels[head] = 1
    labels[brain] = 3
    labels[_ellipsoid(grid, (0, 0, 2), (46, 46, 32))] = 2
    labels[_ellipsoid(grid, (0, 4, 12), (9, 16, 6))] = 4  # ventricles (CSF)
    _posterior_fossa(grid, labels, brain)

    def put(name, centre, radii, mirror=True):
        index = [k for k, v in TISSUES.items() if v[0] == name][0]
        centres = [centre] if not mirror else [(-abs(centre[0]),) + tuple(centre[1:]),
                                               (abs(centre[0]),) + tuple(centre[1:])]
        for c in centres:
            m = _ellipsoid(grid, c, radii)
            labels[m] = index
            if mirror:
                hemi[m] = 1 if c[0] < 0 else 2

    put("thalamus", (11, -8, 6), (7, 11, 8))
    put("caudate", (13, 16, 12), (5, 9, 7))
    put("putamen", (25, 6, 4), (5, 13, 8))
    put("globus_pallidus", (18, 2, 2), (4, 7, 5))
    put("substantia_nigra", SN_CENTRE, (4, 6, 4))
    put("red_nucleus", RN_CENTRE, (3.5, 3.5, 3.5))
    put("dentate_nucleus", DN_CENTRE, (6, 6, 5))
    vein = (np.abs(x - 0) < 2.1) & (np.abs(z - 30) < 2.1) & brain & (y > -40) & (y < 30)
    labels[vein] = 12
    sinus = _ellipsoid(grid, (0, 40, -38), (12, 9, 7))
    labels[sinus] = 13

    chi = np.zeros(shape)
    r2s = np.zeros(shape)
    m0 = np.zeros(shape)
    for index, (_, c, r, m) in TISSUES.items():
        sel = labels == index
        chi[sel], r2s[sel], m0[sel] = c, r, m
    # smooth, known spatial variation of R2* (and a little of chi) inside tissue
    gradient = 1.0 + 0.1 * (y / 60.0)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    texture /= max(np.abs(texture).max(), 1e-9)
    r2s = r2s * gradient * (1.0 + 0.05 * texture)
    chi = chi + np.where(labels > 1, 0.005 * texture, 0.0)
    # soften chi outside the brain (staircase ripple, see DESIGN.md pitfalls)
    outside = ~np.isin(labels, BRAIN_LABELS)
    chi = np.where(outside, ndimage.gaussian_filter(chi, 0.7), chi)
    return Phantom(labels=labels, hemisphere=hemi, chi=chi, r2star=r2s, m0=m0,
                   brain_mask=np.isin(labels, BRAIN_LABELS), voxel_size=tuple(vs))


def oblique_affine(voxel_size, angle_deg=0.0, axis=0, shape=None):
    """Affine of a grid rotated by ``angle_deg`` about voxel ``axis`` (RAS world), centred.

    Returns ``(affine, b0_dir_voxel)``: the world B0 (+z) expressed in voxel axes, which is what
    a simulation must use so that a scanner-like NIfTI (B0 = world z) is consistent.
    """
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    rot = {0: [[1, 0, 0], [0, c, -s], [0, s, c]],
           1: [[c, 0, s], [0, 1, 0], [-s, 0, c]],
           2: [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    rot = np.asarray(rot, float)
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(voxel_size)
    if shape is not None:
        centre = (np.asarray(shape) - 1) / 2.0
        affine[:3, 3] = -affine[:3, :3] @ centre
    b0_voxel = rot.T @ np.array([0.0, 0.0, 1.0])
    return affine, b0_voxel


@dataclass
class GreData:
    """A simulated multi-echo acquisition: echoes on the last axis."""

    magnitude: np.ndarray  # float32 (x, y, z, n_echoes)
    phase: np.ndarray  # float32 radians in [-pi, pi)
    te: np.ndarray  # s
    b0: float  # T
    b0_dir: np.ndarray  # voxel axes
    total_field_ppm: np.ndarray
    local_field_ppm: np.ndarray  # field of the brain's own chi, zero mean over the brain
    sigma: float


def simulate_gre(phantom, te=(0.004, 0.010, 0.016, 0.022, 0.028), b0=3.0, snr=100.0,
                 b0_dir=(0.0, 0.0, 1.0), phase_offset=True, seed=0):
    """Simulate magnitude and phase of a multi-echo GRE scan of ``phantom``.

    ``snr`` is mean brain magnitude of the first echo over the noise sigma (same sigma in every
    echo, complex Gaussian noise). ``snr=None`` gives noise-free data.
    """
    rng = np.random.default_rng(seed)
    te = np.asarray(te, float)
    b0_dir = np.asarray(b0_dir, float)
    b0_dir = b0_dir / np.linalg.norm(b0_dir)
    vs = list(phantom.voxel_size)
    total = qsm_forward.generate_field(phantom.chi, voxel_size=vs, B0_dir=list(b0_dir))
    local = qsm_forward.generate_field(phantom.chi * phantom.brain_mask, voxel_size=vs,
                                       B0_dir=list(b0_dir))
    local = (local - local[phantom.brain_mask].mean()) * phantom.brain_mask
    offset = 0.0
    if phase_offset:
        offset = qsm_forward.generate_phase_offset(phantom.m0, phantom.brain_mask, phantom.chi.shape)
    signal = np.stack([qsm_forward.generate_signal(total, B0=b0, TR=1.0, TE=t, flip_angle=90,
                                                   phase_offset=offset, R1=1e6,
                                                   R2star=phantom.r2star, M0=phantom.m0)
                       for t in te], axis=-1)
    sigma = 0.0
    if snr:
        sigma = float(np.abs(signal[..., 0])[phantom.brain_mask].mean() / snr)
        signal = signal + sigma * (rng.standard_normal(signal.shape)
                                   + 1j * rng.standard_normal(signal.shape))
    return GreData(magnitude=np.abs(signal).astype(np.float32),
                   phase=np.angle(signal).astype(np.float32), te=te, b0=b0, b0_dir=b0_dir,
                   total_field_ppm=total, local_field_ppm=local, sigma=sigma)


def _save(img, path, meta=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    if meta is not None:
        path.with_name(path.name.split(".")[0] + ".json").write_text(json.dumps(meta, indent=1))


def write_megre(root, data, affine, subject="01", session=None, with_phase=True,
                manufacturer="Siemens", extra_meta=None, suffix="MEGRE"):
    """Write ``data`` (a `GreData`) as BIDS ``*_echo-<n>_part-{mag,phase}_<suffix>``.

    Returns the anat directory. Creates dataset_description.json if missing.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dd = root / "dataset_description.json"
    if not dd.exists():
        dd.write_text(json.dumps({"Name": "bids-iron simulation", "BIDSVersion": "1.9.0",
                                  "DatasetType": "raw"}))
    anat = root / f"sub-{subject}"
    stem = f"sub-{subject}"
    if session:
        anat = anat / f"ses-{session}"
        stem += f"_ses-{session}"
    anat = anat / "anat"
    parts = [("mag", data.magnitude)] + ([("phase", data.phase)] if with_phase else [])
    for i, t in enumerate(data.te, start=1):
        for part, arr in parts:
            meta = {"EchoTime": float(t), "MagneticFieldStrength": float(data.b0),
                    "Manufacturer": manufacturer, "EchoNumber": i}
            if part == "phase":
                meta["Units"] = "rad"
            meta.update(extra_meta or {})
            img = nib.Nifti1Image(np.asarray(arr[..., i - 1], np.float32), affine)
            _save(img, anat / f"{stem}_echo-{i}_part-{part}_{suffix}.nii.gz", meta)
    return anat


def write_truth(root, phantom, affine, data=None, name="truth"):
    """Save ground-truth maps under ``root/<name>/`` (outside the BIDS tree of inputs)."""
    out = Path(root) / name
    out.mkdir(parents=True, exist_ok=True)
    maps = {"labels": phantom.labels.astype(np.int16), "hemisphere": phantom.hemisphere,
            "chi": phantom.chi, "r2star": phantom.r2star, "brain_mask": phantom.brain_mask}
    if data is not None:
        maps["local_field_ppm"] = data.local_field_ppm
        maps["total_field_ppm"] = data.total_field_ppm
    for key, arr in maps.items():
        nib.save(nib.Nifti1Image(np.asarray(arr, np.float32), affine), str(out / f"{key}.nii.gz"))
    return out


def masked_correlation(a, b, mask):
    """Pearson correlation of two maps inside ``mask`` (means removed there)."""
    a = a[mask] - a[mask].mean()
    b = b[mask] - b[mask].mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def flattened_fields(ph):
    """Total and local (truth) field in ppm of ``ph`` with cortex and white matter set to chi 0.

    The local field then comes from the deep nuclei, the vein, the ventricles and the texture:
    the sources this app measures. (With the phantom's cortical shell over white matter, the
    local field near the brain edge is locally harmonic, which no SMV-based method can
    recover; that case is measured in benchmarks, not asserted in unit tests.)
    """
    chi = ph.chi.copy()
    for name in ("white_matter", "gray_matter"):
        index = [k for k, v in TISSUES.items() if v[0] == name][0]
        chi[ph.labels == index] -= TISSUES[index][1]
    vs = list(ph.voxel_size)
    total = qsm_forward.generate_field(chi, voxel_size=vs)
    local = qsm_forward.generate_field(chi * ph.brain_mask, voxel_size=vs)
    return total, local
