"""The demo's head: a labelled head phantom with literature tissue values (no data files).

Geometry: ellipsoids in mm about the grid centre (array axis 0 left->right in RAS world,
axis 1 posterior->anterior, axis 2 inferior->superior): scalp and skull, cortex over white
matter, ventricles, deep gray matter nuclei left and right (caudate, putamen, globus
pallidus, thalamus), the midbrain with substantia nigra and red nucleus wrapped by CSF
cisterns, the cerebellum with the dentate nuclei in its white matter, a frontal sinus (air)
and a vein. Tissue values: chi in ppm relative to CSF (paramagnetic positive), R2* in 1/s
at 3 T, M0 the proton-density-like signal scale.

The same geometry drives the tests (``tests/phantom.py`` imports it) and ``bids-iron-demo``
(`bids_iron.demo.dataset`), which scales it to an adult-sized brain (``scale``).

Examples
--------
>>> ph = make_phantom(shape=(32, 32, 24), voxel_size=(4.0, 4.0, 4.0))
>>> ph.labels.shape, bool(ph.label_mask("putamen", "left").any())
((32, 32, 24), True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
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
#: The pulvinar: the thalamus' posterior third (behind y = -12 mm, where the demo atlas puts
#: its MIAL67 pulvinar, `bids_iron.demo.templates.mial_labels`) is iron-richer than the rest
#: of the thalamus (chi ppm, R2* 1/s; 3 T R2* as in the iron template,
#: `bids_iron.anatomy.templates.R2STAR_3T`). It keeps the thalamus label. Without it the
#: demo's pulvinar had no contrast at all, so the per-ROI registration check (which
#: correlates the session's R2* with the iron template around each ROI) flagged it in every
#: session.
PULVINAR = (0.05, 25.0)
PULVINAR_Y_MM = -12.0
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
    """The voxels of ``grid`` (an ``indexing="ij"`` meshgrid, mm) inside an ellipsoid. The
    test runs in the ellipsoid's bounding box only (a voxel inside has every term <= 1): the
    same arithmetic per voxel as on the whole grid, 5x less work for the small nuclei."""
    x, y, z = grid
    box = []
    for axis, c, r in zip((x[:, 0, 0], y[0, :, 0], z[0, 0, :]), centre, radii):
        inside = np.flatnonzero(((axis - c) / r) ** 2 <= 1.0)
        if inside.size == 0:
            return np.zeros(x.shape, bool)
        box.append(slice(inside[0], inside[-1] + 1))
    box = tuple(box)
    out = np.zeros(x.shape, bool)
    out[box] = (((x[box] - centre[0]) / radii[0]) ** 2 + ((y[box] - centre[1]) / radii[1]) ** 2
                + ((z[box] - centre[2]) / radii[2]) ** 2) <= 1.0
    return out


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
    pulvinar = (labels == [k for k, v in TISSUES.items() if v[0] == "thalamus"][0]) & \
        (y < PULVINAR_Y_MM)
    chi[pulvinar], r2s[pulvinar] = PULVINAR
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
