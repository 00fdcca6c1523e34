"""A small synthetic TEMPLATEFLOW_HOME in TemplateFlow's layout, and deformed test subjects.

The home is built by `bids_iron.demo.templates` (re-exported here; ``bids-iron-demo`` uses
the same builder with an adult-sized head); the subjects below are the tests' own.

TemplateFlow cannot download here, so tests build their own home from the head phantom of
`phantom.make_phantom` (same geometry, in mm about the grid centre): a T1w-like template
(white matter bright, gray matter and nuclei darker, CSF dark), its brain mask and white matter
probability map, MASSP20 and MIAL67ThalamicNuclei label maps with the phantom's nuclei at
the indices of the REAL label tables (copied from the skeleton that the templateflow package
bundles), and a SUIT template: a crop of the posterior fossa in its own space (scaled and
shifted against MNI, so that it needs its own registration) with Diedrichsen2009 dentate
labels.

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

`make_subject` renders a subject whose anatomy is the template deformed by a known smooth warp
plus a rigid motion, with MEGRE-like magnitude contrast (multi-echo, T2*-weighted) and the true
labels on the subject grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:  # imported as tests.tf_home or with tests/ on sys.path
    from . import phantom as P
except ImportError:  # pragma: no cover
    import phantom as P

# The home itself is the package's (``bids-iron-demo`` builds the same one, enlarged):
from bids_iron.demo.templates import (  # noqa: F401  (re-exported for the tests)
    MASSP, MASSP_AC, MASSP_GPE, MASSP_GPI, MASSP_IC, MASSP_LV, MIAL_OTHER, MIAL_PULVINAR,
    SKELETON, SUIT_DENTATE, SUIT_SCALE, SUIT_SHIFT, T1W_CONTRAST, T2W_CONTRAST, TEMPLATE,
    _by_name, _world, build_suit, build_tf_home, centred_affine, mial_labels, massp_labels,
    reference_phantom, sample_labels, skeleton_text, t1w_like)
from bids_iron.demo.dataset import rotation, smooth_warp  # noqa: F401


# ----------------------------------------------------------------------------- subjects

@dataclass
class Subject:
    """A deformed-template subject: MEGRE magnitude echoes and truth on its grid."""

    magnitude: np.ndarray  # (x, y, z, echoes)
    affine: np.ndarray
    labels: np.ndarray  # phantom labels
    hemisphere: np.ndarray
    brain_mask: np.ndarray
    te: np.ndarray
    template_points: np.ndarray  # (3, x, y, z) template world point shown by each voxel (mm)


def make_subject(shape=(64, 64, 50), voxel_size=2.0, rot_deg=(5.0, -3.0, 1.5),
                 shift_mm=(3.0, -4.0, 2.0), warp_mm=3.0, te=(0.004, 0.012, 0.020, 0.028),
                 snr=60.0, seed=0, reference=None, reference_voxel=1.0):
    """A subject = phantom anatomy moved by a smooth warp and a rigid motion, MEGRE contrast.

    A subject world point ``p`` shows the anatomy found at template point
    ``q = R (p + u(p)) + t`` (``u`` the smooth warp of `smooth_warp`), so the registration
    must recover a rotation of ``rot_deg``, a shift of ``shift_mm`` and a warp of about
    ``warp_mm`` mm. Magnitude = M0 exp(-TE R2*) with complex Gaussian noise (SNR of echo 1).
    """
    ph = reference if reference is not None else reference_phantom(reference_voxel)
    aff_ph = centred_affine(ph.labels.shape, ph.voxel_size)
    affine = centred_affine(shape, voxel_size)
    world = _world(shape, affine)
    q = world + smooth_warp(world, warp_mm, seed)
    q = np.tensordot(rotation(rot_deg), q, axes=1) + np.asarray(shift_mm, float).reshape(3, 1, 1, 1)
    labels, hemi = sample_labels(ph, aff_ph, q.astype(np.float32))
    m0 = np.zeros(shape, np.float32)
    r2s = np.zeros(shape, np.float32)
    for index, (_n, _c, r, m) in P.TISSUES.items():
        m0[labels == index] = m
        r2s[labels == index] = r
    te = np.asarray(te, float)
    mag = m0[..., None] * np.exp(-te[None, None, None, :] * r2s[..., None])
    rng = np.random.default_rng(seed + 1)
    sigma = float(mag[..., 0][labels > 1].mean() / snr) if snr else 0.0
    if sigma:
        noisy = mag + sigma * rng.standard_normal(mag.shape)
        mag = np.hypot(noisy, sigma * rng.standard_normal(mag.shape))
    brain = np.isin(labels, P.BRAIN_LABELS)
    return Subject(magnitude=mag.astype(np.float32), affine=affine, labels=labels,
                   hemisphere=hemi, brain_mask=brain, te=te, template_points=q.astype(np.float32))


def truth_mask(subject, name, hemisphere):
    """True voxels of one ROI and hemisphere (1 left, 2 right) on the subject grid.

    ``pulvinar`` is the thalamus behind template y = -12 mm (as `mial_labels` defines it).
    """
    if name == "pulvinar":
        return truth_mask(subject, "thalamus", hemisphere) & (subject.template_points[1] < -12.0)
    return _by_name(subject.labels, name) & (subject.hemisphere == hemisphere)
