"""A small synthetic TEMPLATEFLOW_HOME in TemplateFlow's layout, and deformed test subjects.

The home is built by `bids_iron.demo.templates` (re-exported here; ``bids-iron-demo`` uses
the same builder with an adult-sized head); the subjects below are the tests' own.

TemplateFlow cannot download here, so tests build that home from the head phantom of
`phantom.make_phantom` (same geometry, in mm about the grid centre); the files it writes
are listed in `bids_iron.demo.templates`.

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
