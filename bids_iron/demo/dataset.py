"""Simulate the demo cohort: a small BIDS dataset with a known group effect and change.

Every subject is the head of `bids_iron.demo.head`, enlarged to an adult brain
(`DEMO_SCALE`, ~1.06 L), given its own size (+-4 %), a smooth non-linear warp (about
2 mm) and a different head position in each scan. Per session the cohort has

* ``anat/*_echo-<n>_part-{mag,phase}_MEGRE`` - 5 echoes (TE 4-28 ms, 3 T, 2 mm); the phase
  as a Siemens scanner stores it (integers -4096..4094, no ``Units``) and the magnitude as
  integers, complex Gaussian noise of one sigma in every echo (SNR 80 in echo 1). The field
  is the dipole field of the whole head's susceptibility (air sinus included) with B0 along
  world z, plus a smooth receive-phase offset;
* ``anat/*_T1w`` and ``anat/*_FLAIR`` on grids of their own (the head moves between scans);
* MS patients: white-matter lesions (bright on FLAIR, dark on T1w, R2* lower and chi a
  little higher), one more at the second visit, and their masks as a derivative dataset
  (``derivatives/lesions``, ``space-FLAIR_desc-lesion_mask``), as an expert would draw them.

Built-in effects, the truth the group level should find (relative to the head's tissue
values, the nuclei's chi in ppm relative to CSF):

* age: iron of the basal ganglia and brainstem/cerebellar nuclei rises and saturates with
  age, ``(1 - 0.7 exp(-age/25)) / (1 - 0.7 exp(-40/25))`` (Hallgren and Sourander 1958);
* MS vs controls: caudate, putamen and globus pallidus chi x 1.12 and R2* x 1.05; thalamus
  (with pulvinar) chi lower by 0.004 ppm per EDSS point and R2* x 0.95;
* two-year change: MS basal ganglia chi +2 % per year and R2* +1 % per year (controls only
  their age effect).

The cohort (`COHORT`): 5 controls and 5 patients aged 29-62, EDSS 1.5-6.0, disease duration
3-20 years, two sessions 730 days apart (``sessions.tsv`` ``acq_time``); `cohort` takes the
first 2-5 of each.

Examples
--------
>>> [row["group"] for row in COHORT].count("MS")
5
>>> round(age_factor(40.0), 3)
1.0
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from ..cpus import available_cpus
from ..maps.kernels import dipole_kernel
from .head import TISSUES
from .templates import T1W_CONTRAST, centred_affine, reference_phantom

#: Size of the demo anatomy relative to the test phantom (brain 0.43 L -> 1.06 L).
DEMO_SCALE = 1.35
#: Gyromagnetic ratio of 1H / 2 pi (Hz/T).
GAMMA_HZ_PER_T = 42.577478e6
TE = (0.004, 0.010, 0.016, 0.022, 0.028)
B0 = 3.0
SNR = 80.0
VOXEL_MM = 2.0
#: Acquisition grid (voxels of VOXEL_MM): the adult head with air around it.
GRID = (88, 96, 72)

COHORT = (
    {"participant_id": "sub-01", "group": "HC", "age": 29.0, "sex": "F"},
    {"participant_id": "sub-02", "group": "HC", "age": 37.0, "sex": "M"},
    {"participant_id": "sub-03", "group": "HC", "age": 46.0, "sex": "F"},
    {"participant_id": "sub-04", "group": "HC", "age": 55.0, "sex": "M"},
    {"participant_id": "sub-05", "group": "MS", "age": 31.0, "sex": "F", "EDSS": 1.5,
     "disease_duration": 3.0},
    {"participant_id": "sub-06", "group": "MS", "age": 39.0, "sex": "F", "EDSS": 2.5,
     "disease_duration": 7.0},
    {"participant_id": "sub-07", "group": "MS", "age": 47.0, "sex": "M", "EDSS": 4.0,
     "disease_duration": 12.0},
    {"participant_id": "sub-08", "group": "MS", "age": 56.0, "sex": "F", "EDSS": 5.0,
     "disease_duration": 16.0},
    # the fifth of each group (``--n-participants 10``): correlations need 5 pairs
    # (bids_iron.group.correlations.MIN_N_CORR)
    {"participant_id": "sub-09", "group": "HC", "age": 62.0, "sex": "M"},
    {"participant_id": "sub-10", "group": "MS", "age": 60.0, "sex": "M", "EDSS": 6.0,
     "disease_duration": 20.0},
)
SESSIONS = ("1", "2")
YEARS_BETWEEN = 2.0
FIRST_SCAN = datetime.datetime(2024, 3, 4, 9, 30)

BASAL_GANGLIA = ("caudate", "putamen", "globus_pallidus")
AGE_NUCLEI = BASAL_GANGLIA + ("substantia_nigra", "red_nucleus", "dentate_nucleus")
#: Lesion centres (phantom mm) in the periventricular and deep white matter; radius mm.
LESIONS = (((-24.0, -18.0, 14.0), 4.0), ((22.0, 8.0, 18.0), 3.5), ((-20.0, 20.0, 6.0), 3.0),
           ((26.0, -24.0, 10.0), 3.0))

#: FLAIR and T1w intensities per tissue (the T1w ones are the template's, `templates`).
FLAIR_CONTRAST = {"scalp_skull": 0.3, "white_matter": 0.55, "gray_matter": 0.75, "csf": 0.05,
                  "caudate": 0.7, "putamen": 0.68, "globus_pallidus": 0.6, "thalamus": 0.66,
                  "substantia_nigra": 0.6, "red_nucleus": 0.6, "dentate_nucleus": 0.6,
                  "vein": 0.3, "air_cavity": 0.0, "brainstem": 0.58,
                  "cerebellum_gray_matter": 0.74, "cerebellum_white_matter": 0.56}
LESION_FLAIR, LESION_T1W = 1.25, 0.45


def age_factor(age):
    """Relative iron of the iron-rich nuclei at ``age`` years (1 at 40 years; saturating)."""
    return float((1.0 - 0.7 * np.exp(-age / 25.0)) / (1.0 - 0.7 * np.exp(-40.0 / 25.0)))


def rotation(deg_xyz):
    """Rotation matrix of angles (degrees) about x, then y, then z."""
    ax, ay, az = np.deg2rad(deg_xyz)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def smooth_warp(world, amplitude=3.0, seed=0):
    """A known smooth displacement (mm) at world points ``(3, ...)``: low-frequency sinusoids."""
    rng = np.random.default_rng(seed)
    disp = np.zeros_like(world)
    for c in range(3):
        for _ in range(3):
            k = rng.uniform(0.02, 0.05, 3) * rng.choice([-1, 1], 3)
            phase = rng.uniform(0, 2 * np.pi)
            disp[c] += amplitude / 3.0 * np.sin(np.tensordot(k, world, axes=1) + phase)
    return disp


def nucleus_factors(row, years):
    """``{nucleus: (chi factor, chi offset ppm, R2* factor)}`` of one participant ``years``
    after the first session (the module's built-in effects)."""
    age = row["age"] + years
    ms = row["group"] == "MS"
    out = {}
    for name in AGE_NUCLEI + ("thalamus",):
        chi_f, chi_off, r2_f = 1.0, 0.0, 1.0
        if name in AGE_NUCLEI:
            chi_f = r2_f = age_factor(age)
        if ms and name in BASAL_GANGLIA:
            chi_f *= 1.12 * (1.0 + 0.02 * years)
            r2_f *= 1.05 * (1.0 + 0.01 * years)
        if ms and name == "thalamus":
            chi_off = -0.004 * row["EDSS"]
            r2_f *= 0.95
        out[name] = (chi_f, chi_off, r2_f)
    return out


@dataclass
class Scan:
    """One simulated session before writing: images on their grids."""

    magnitude: np.ndarray
    phase: np.ndarray
    megre_affine: np.ndarray
    t1w: np.ndarray
    t1w_affine: np.ndarray
    flair: np.ndarray
    flair_affine: np.ndarray
    lesion: np.ndarray  # on the FLAIR grid


class Head:
    """The master head on a 1 mm world grid (tissue maps and label-derived images)."""

    def __init__(self):
        self.ph = reference_phantom(1.0, DEMO_SCALE)
        self.affine = centred_affine(self.ph.labels.shape, 1.0)
        self.inverse = np.linalg.inv(self.affine)
        names = {k: v[0] for k, v in TISSUES.items()}
        self.t1w = np.zeros(self.ph.labels.shape, np.float32)
        self.flair = np.zeros(self.ph.labels.shape, np.float32)
        for index, name in names.items():
            self.t1w[self.ph.labels == index] = T1W_CONTRAST[name]
            self.flair[self.ph.labels == index] = FLAIR_CONTRAST[name]
        self.masks = {name: self.ph.labels == index for index, name in names.items()}
        world = np.indices(self.ph.labels.shape, dtype=np.float32).reshape(3, -1)
        world = (self.affine[:3, :3] @ world + self.affine[:3, 3:4]) / DEMO_SCALE
        self.lesions = [np.linalg.norm(world - np.reshape(c, (3, 1)), axis=0).reshape(
            self.ph.labels.shape) <= r for c, r in LESIONS]

    def tissue(self, row, years, n_lesions):
        """chi (ppm), R2* (1/s), M0, T1w, FLAIR and lesion maps of one participant-session."""
        chi, r2s = self.ph.chi.astype(np.float32), self.ph.r2star.astype(np.float32)
        for name, (chi_f, chi_off, r2_f) in nucleus_factors(row, years).items():
            m = self.masks[name]
            chi[m] = chi[m] * chi_f + chi_off
            r2s[m] *= r2_f
        t1w, flair = self.t1w.copy(), self.flair.copy()
        lesion = np.zeros(chi.shape, bool)
        for m in self.lesions[:n_lesions]:
            lesion |= m & self.masks["white_matter"]
        chi[lesion] += 0.01
        r2s[lesion] *= 0.8
        t1w[lesion], flair[lesion] = LESION_T1W, LESION_FLAIR
        return {"chi": chi, "r2star": r2s, "m0": self.ph.m0.astype(np.float32), "t1w": t1w,
                "flair": flair, "lesion": lesion.astype(np.float32)}


def _grid_points(shape, affine):
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape((3,) + tuple(shape))


def _sample(head, maps, subject_points, affine, shape):
    """Sample master ``maps`` at the head points a subject grid shows (linear: partial
    volume). ``subject_points(world) -> master world`` is the subject's anatomy."""
    q = subject_points(_grid_points(shape, affine))
    ijk = np.tensordot(head.inverse[:3, :3], q, axes=1) + head.inverse[:3, 3].reshape(3, 1, 1, 1)
    return {k: ndimage.map_coordinates(v, ijk, order=1, mode="constant", cval=0.0)
            .astype(np.float32) for k, v in maps.items()}


def simulate_megre(chi, r2star, m0, voxel_size, rng, te=TE, b0=B0, snr=SNR):
    """Magnitude and phase (radians) of a multi-echo GRE of the tissue maps (B0 along axis 2).

    Field = dipole convolution of ``chi`` (ppm; `bids_iron.maps.kernels.dipole_kernel`,
    zero-padded to twice the grid against wrap-around), a smooth receive-phase offset, and
    complex Gaussian noise of one sigma = echo-1 mean signal over ``snr``.
    """
    shape = chi.shape
    padded = tuple(2 * n for n in shape)
    kernel = dipole_kernel(padded, voxel_size, rfft=True)
    field = sfft.irfftn(kernel * sfft.rfftn(chi, padded, workers=-1), padded, workers=-1)
    field_ppm = field[:shape[0], :shape[1], :shape[2]].astype(np.float32)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    offset = 0.6 * x - 0.4 * y * z + 0.3 * np.cos(np.pi * z)
    te = np.asarray(te, float)
    omega = 2 * np.pi * GAMMA_HZ_PER_T * b0 * 1e-6 * field_ppm
    signal = m0[..., None] * np.exp(-r2star[..., None] * te) * np.exp(
        1j * (omega[..., None] * te + offset[..., None]))
    sigma = float(np.abs(signal[..., 0])[m0 > 0.5].mean() / snr)
    signal = signal + sigma * (rng.standard_normal(signal.shape)
                               + 1j * rng.standard_normal(signal.shape))
    return np.abs(signal).astype(np.float32), np.angle(signal).astype(np.float32)


def simulate_scan(head, row, subject_index, session_index):
    """Simulate one participant-session (`Scan`)."""
    years = YEARS_BETWEEN * session_index
    rng = np.random.default_rng(1000 * subject_index + session_index)
    sub_rng = np.random.default_rng(subject_index)
    size = 1.0 + sub_rng.uniform(-0.04, 0.04)
    n_lesions = (2 + subject_index % 2 + session_index) if row["group"] == "MS" else 0
    maps = head.tissue(row, years, n_lesions)

    def anatomy(world):  # subject world -> master world: own size and a smooth warp
        return (world + smooth_warp(world, 2.0, seed=subject_index)) / size

    def posed(rot_deg, shift_mm):  # scanner world -> subject world: the head's position
        r, t = rotation(rot_deg), np.reshape(shift_mm, (3, 1, 1, 1))
        return lambda world: anatomy(np.tensordot(r.T, world - t, axes=1))

    # the scanner grids stay axis-aligned (B0 = world z); the head sits differently in each
    megre_affine = centred_affine(GRID, VOXEL_MM)
    tissue = _sample(head, {k: maps[k] for k in ("chi", "r2star", "m0")},
                     posed(rng.uniform(-4, 4, 3), rng.uniform(-5, 5, 3)), megre_affine, GRID)
    mag, phase = simulate_megre(tissue["chi"], tissue["r2star"], tissue["m0"],
                                (VOXEL_MM,) * 3, rng)
    out = {}
    for name, key in (("t1w", "t1w"), ("flair", "flair")):
        shape = GRID if name == "t1w" else GRID[:2] + (48,)
        vs = (2.0, 2.0, 2.0) if name == "t1w" else (2.0, 2.0, 3.0)
        affine = centred_affine(shape, vs)
        sampled = _sample(head, {key: maps[key], "lesion": maps["lesion"]},
                          posed(rng.uniform(-4, 4, 3), rng.uniform(-5, 5, 3)), affine, shape)
        image = sampled[key] + rng.normal(0.0, 0.02, shape).astype(np.float32)
        out[name] = (np.clip(image, 0, None), affine, sampled["lesion"] >= 0.5)
    return Scan(magnitude=mag, phase=phase, megre_affine=megre_affine, t1w=out["t1w"][0],
                t1w_affine=out["t1w"][1], flair=out["flair"][0], flair_affine=out["flair"][1],
                lesion=out["flair"][2])


def _nifti(array, affine, path, dtype):
    img = nib.Nifti1Image(np.asarray(array).astype(dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _json(path, data):
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_scan(root, lesion_root, scan, subject, session):
    """Write one `Scan` as BIDS (scanner-like integer magnitude and Siemens phase)."""
    stem = f"{subject}_ses-{session}"
    anat = Path(root) / subject / f"ses-{session}" / "anat"
    common = {"MagneticFieldStrength": B0, "Manufacturer": "Siemens",
              "ManufacturersModelName": "bids-iron demo simulation", "RepetitionTime": 0.035,
              "FlipAngle": 15}
    mag_scale = 3000.0 / float(scan.magnitude[..., 0].max())
    for i, te in enumerate(TE, start=1):
        meta = {**common, "EchoTime": te, "EchoNumber": i}
        for part, array in (("mag", np.round(scan.magnitude[..., i - 1] * mag_scale)),
                            ("phase", np.round(scan.phase[..., i - 1] / np.pi * 4096.0)
                             .clip(-4096, 4094))):
            path = anat / f"{stem}_echo-{i}_part-{part}_MEGRE.nii.gz"
            _nifti(array, scan.megre_affine, path, np.int16)
            _json(path.with_name(path.name.replace(".nii.gz", ".json")),
                  {**meta, "Units": "arbitrary"} if part == "phase" else meta)
    for suffix, image, affine, extra in (
            ("T1w", scan.t1w, scan.t1w_affine, {"RepetitionTime": 2.3, "InversionTime": 0.9}),
            ("FLAIR", scan.flair, scan.flair_affine, {"RepetitionTime": 5.0,
                                                      "InversionTime": 1.8})):
        path = anat / f"{stem}_{suffix}.nii.gz"
        _nifti(np.round(image * 1000.0), affine, path, np.int16)
        _json(path.with_name(path.name.replace(".nii.gz", ".json")),
              {"MagneticFieldStrength": B0, "Manufacturer": "Siemens", **extra})
    if scan.lesion.any():
        path = (Path(lesion_root) / subject / f"ses-{session}" / "anat"
                / f"{stem}_space-FLAIR_desc-lesion_mask.nii.gz")
        _nifti(scan.lesion, scan.flair_affine, path, np.uint8)


PARTICIPANTS_JSON = {
    "group": {"Description": "diagnosis", "Levels": {"HC": "healthy control",
                                                      "MS": "multiple sclerosis"}},
    "age": {"Description": "age at the first session", "Units": "year"},
    "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
    "EDSS": {"Description": "Expanded Disability Status Scale at the first session"},
    "disease_duration": {"Description": "years since the first symptoms, at the first session",
                         "Units": "year"},
}


def cohort(n_participants=len(COHORT)):
    """The first ``n_participants / 2`` controls and patients of `COHORT` (an even number
    from 4 to 10: the group level needs two of each, an EDSS correlation five patients)."""
    n = int(n_participants)
    if n % 2 or not 4 <= n <= len(COHORT):
        raise ValueError(f"the demo cohort has 4, 6, 8 or 10 participants, not {n_participants}")
    return tuple([r for r in COHORT if r["group"] == "HC"][:n // 2]
                 + [r for r in COHORT if r["group"] == "MS"][:n // 2])


def write_cohort_tables(root, rows=COHORT):
    """dataset_description.json, README, participants.tsv/.json and each sessions.tsv."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _json(root / "dataset_description.json", {
        "Name": "bids-iron demo: a simulated MS cohort", "BIDSVersion": "1.10.0",
        "DatasetType": "raw", "Authors": ["bids-iron developers"], "License": "CC0",
        "GeneratedBy": [{"Name": "bids-iron-demo"}]})
    (root / "README.md").write_text(
        "# bids-iron demo\n\nA simulated cohort written by `bids-iron-demo` (module "
        f"`bids_iron.demo.dataset`): {len(rows) // 2} controls and {len(rows) // 2} MS "
        "patients, two sessions two years "
        "apart, T1w, FLAIR and 5-echo GRE at 3 T, with a built-in group effect and change "
        "in deep gray matter iron. Not real data.\n")
    columns = ["participant_id", "group", "age", "sex", "EDSS", "disease_duration"]
    lines = ["\t".join(columns)]
    for row in rows:
        lines.append("\t".join(str(row.get(c, "n/a")) for c in columns))
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    _json(root / "participants.json", PARTICIPANTS_JSON)
    for row in rows:
        sub = root / row["participant_id"]
        sub.mkdir(exist_ok=True)
        rows = ["session_id\tacq_time"]
        for k, ses in enumerate(SESSIONS):
            when = FIRST_SCAN + datetime.timedelta(days=365.25 * YEARS_BETWEEN * k)
            rows.append(f"ses-{ses}\t{when.isoformat(timespec='seconds')}")
        (sub / f"{row['participant_id']}_sessions.tsv").write_text("\n".join(rows) + "\n")


#: The worker's master head (`_simulate_session`): built once per process.
_HEAD = None


def _simulate_session(job, head=None):
    """Simulate and write one participant-session ``(root, lesion_root, row, index)`` of
    ``head`` (default: the worker process's, built on its first session); the text of its
    progress line."""
    global _HEAD
    root, lesion_root, row, k = job
    if head is None:
        if _HEAD is None:
            _HEAD = Head()
        head = _HEAD
    number = int(row["participant_id"][4:])  # the anatomy depends on the participant only
    scan = simulate_scan(head, row, number, k)
    write_scan(root, lesion_root, scan, row["participant_id"], SESSIONS[k])
    return f"simulated {row['participant_id']} ses-{SESSIONS[k]} ({row['group']})"


def build_dataset(root, lesion_root, rows=COHORT, progress=print, n_procs=None):
    """Write the demo cohort ``rows`` (default all of `COHORT`) under ``root`` (raw BIDS) and
    its lesion masks under ``lesion_root`` (a derivative dataset); returns ``root``.

    Sessions are simulated in ``n_procs`` processes (default: the CPUs this process may
    use); each session's random numbers come from its own seeds, so the files are the same
    whatever ``n_procs``. ``progress`` gets one line per session written, in cohort order.
    """
    root, lesion_root = Path(root), Path(lesion_root)
    write_cohort_tables(root, rows)
    lesion_root.mkdir(parents=True, exist_ok=True)
    _json(lesion_root / "dataset_description.json", {
        "Name": "bids-iron demo lesion masks", "BIDSVersion": "1.10.0",
        "DatasetType": "derivative", "GeneratedBy": [{"Name": "bids-iron-demo"}]})
    jobs = [(root, lesion_root, row, k) for row in rows for k in range(len(SESSIONS))]
    n_procs = max(1, min(available_cpus() if n_procs is None else int(n_procs), len(jobs)))
    if n_procs == 1:
        head = Head()
        for job in jobs:
            progress(_simulate_session(job, head))
        return root
    import concurrent.futures
    import multiprocessing

    # spawn, not fork (as the participant level): the parent may already run threads
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(n_procs, mp_context=context) as pool:
        for text in pool.map(_simulate_session, jobs):
            progress(text)
    return root
