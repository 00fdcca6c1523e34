"""A small labelled head phantom and a multi-echo GRE simulation with known ground truth.

The head (geometry, tissue values) is `bids_iron.demo.head`, re-exported here; the
simulation below uses qsm-forward, independent of bids-iron's own dipole kernel.

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
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import qsm_forward

# The head's geometry and tissue values are the package's (the demo draws the same head):
from bids_iron.demo.head import (  # noqa: F401  (re-exported for the tests)
    BRAIN_LABELS, DN_CENTRE, NUCLEI, RN_CENTRE, SN_CENTRE, TISSUES, Phantom, _ellipsoid,
    make_phantom)


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


def _raw_dataset(root):
    """``root`` as a Path, created with a raw dataset_description.json if it has none."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dd = root / "dataset_description.json"
    if not dd.exists():
        dd.write_text(json.dumps({"Name": "bids-iron simulation", "BIDSVersion": "1.9.0",
                                  "DatasetType": "raw"}))
    return root


def write_megre(root, data, affine, subject="01", session=None, with_phase=True,
                manufacturer="Siemens", extra_meta=None, suffix="MEGRE"):
    """Write ``data`` (a `GreData`) as BIDS ``*_echo-<n>_part-{mag,phase}_<suffix>``.

    Returns the anat directory. Creates dataset_description.json if missing.
    """
    root = _raw_dataset(root)
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


def write_megre_layout(root, data, affine, subject="01", session=None, layout="4d"):
    """Write ``data`` as the multi-echo layouts people have besides BIDS' one file per echo:

    * ``"4d"``: one 4-D file per part, ``*_part-{mag,phase}_MEGRE.nii.gz``, echoes on the
      4th axis and ``EchoTime`` a list in the sidecar;
    * ``"dcm2niix"``: dcm2niix's names, ``*_MEGRE_e<n>.nii.gz`` and ``*_MEGRE_e<n>_ph.nii.gz``
      with ``EchoNumber`` in each sidecar.

    Returns the anat directory (dataset_description.json created if missing).
    """
    root = _raw_dataset(root)
    anat = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    stem = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    base = {"MagneticFieldStrength": float(data.b0), "Manufacturer": "Siemens"}
    for part, arr in (("mag", data.magnitude), ("phase", data.phase)):
        extra = {"Units": "rad"} if part == "phase" else {}
        if layout == "4d":
            img = nib.Nifti1Image(np.asarray(arr, np.float32), affine)
            _save(img, anat / f"{stem}_part-{part}_MEGRE.nii.gz",
                  {**base, **extra, "EchoTime": [float(t) for t in data.te]})
        elif layout == "dcm2niix":
            for i, t in enumerate(data.te, start=1):
                img = nib.Nifti1Image(np.asarray(arr[..., i - 1], np.float32), affine)
                tail = "_ph" if part == "phase" else ""
                _save(img, anat / f"{stem}_MEGRE_e{i}{tail}.nii.gz",
                      {**base, **extra, "EchoTime": float(t), "EchoNumber": i})
        else:
            raise ValueError(f"layout must be '4d' or 'dcm2niix', got {layout!r}")
    return anat
