"""Participant level, phase half: field map, LFS and chi against ground truth; bad phase input."""

import json
import shutil

import nibabel as nib
import numpy as np
from scipy import ndimage
import pytest

import phantom as P
from conftest import run_cli, set_sidecar


@pytest.fixture(scope="module")
def phase_run(sim_dataset, tmp_path_factory):
    root, truth = sim_dataset
    out = tmp_path_factory.mktemp("phase") / "out"
    code, _, err = run_cli(root, out, "participant", "--participant-label", "01",
                           "--session-label", "1", "--swi")
    assert code == 0, err
    return out / "sub-01" / "ses-1" / "anat", truth


def _load(path):
    return nib.load(str(path)).get_fdata()


def test_phase_outputs_and_sidecars(phase_run):
    anat, _ = phase_run
    expected = {"Chimap": "ppm", "desc-lfs_fieldmap": "ppm", "desc-total_fieldmap": "Hz",
                "desc-brain_mask": "arbitrary", "desc-swi_MEGRE": "arbitrary",
                "desc-swimip_MEGRE": "arbitrary", "magnitude": "arbitrary"}
    for name, units in expected.items():
        folder = anat.parent / "fmap" if name.endswith(("fieldmap", "magnitude")) else anat
        image = folder / f"sub-01_ses-1_{name}.nii.gz"
        side = json.loads(image.with_name(image.name.replace(".nii.gz", ".json")).read_text())
        assert side["Units"] == units, name
        assert side["Sources"] and (name == "magnitude" or side["EstimationAlgorithm"])
        assert np.all(np.isfinite(_load(image)))
    chi_side = json.loads((anat / "sub-01_ses-1_Chimap.json").read_text())
    for key in ("QSMMethod", "BackgroundRemovalMethod", "UnwrappingMethod", "ChiReference",
                "PhaseScaling", "PhaseSign", "B0Direction", "DipoleInversion"):
        assert key in chi_side, key
    assert chi_side["B0Direction"] == [0.0, 0.0, 1.0]
    # the sign safeguard: veins/iron (highest R2*) come out paramagnetic
    assert chi_side["SignCheckHighR2starMedianChi"] > 0


def test_no_residual_wraps(phase_run):
    """Field x 2*pi*TE matches the true phase evolution within pi in every echo."""
    anat, truth = phase_run
    field_hz = _load(anat.parent / "fmap" / "sub-01_ses-1_desc-total_fieldmap.nii.gz")
    mask = _load(anat / "sub-01_ses-1_desc-brain_mask.nii.gz") > 0
    true_hz = _load(truth / "total_field_ppm.nii.gz") * 3.0 * 42.577478
    diff = field_hz - true_hz
    diff -= np.median(diff[mask])
    for te in (0.004, 0.010, 0.016, 0.022, 0.028):
        wraps = np.count_nonzero(np.abs(2 * np.pi * diff[mask] * te) > np.pi)
        assert wraps == 0, f"{wraps} voxels off by > pi at TE {te}"


def _roi_means(chi, truth_chi, labels, hemi, mask):
    est, ref = [], []
    for name in P.NUCLEI:
        index = [k for k, v in P.TISSUES.items() if v[0] == name][0]
        for h in (1, 2):
            roi = (labels == index) & (hemi == h) & mask
            if roi.sum() >= 3:
                est.append(chi[roi].mean())
                ref.append(truth_chi[roi].mean())
    return np.array(est), np.array(ref)


def test_chi_matches_truth_over_nuclei(phase_run):
    anat, truth = phase_run
    chi = _load(anat / "sub-01_ses-1_Chimap.nii.gz")
    support = chi != 0
    true_chi = _load(truth / "chi.nii.gz")
    true_chi = true_chi - true_chi[support].mean()  # same (whole-brain mean) reference
    labels = _load(truth / "labels.nii.gz").astype(int)
    hemi = _load(truth / "hemisphere.nii.gz").astype(int)
    est, ref = _roi_means(chi, true_chi, labels, hemi, support)
    assert len(est) >= 6 * 2 - 2  # >= 6 nuclei, both hemispheres mostly
    slope = np.polyfit(ref, est, 1)[0]
    r = np.corrcoef(ref, est)[0, 1]
    assert 0.9 <= slope <= 1.1, slope
    assert r >= 0.95, r


def test_lfs_matches_true_local_field(phase_run):
    anat, truth = phase_run
    lfs = _load(anat.parent / "fmap" / "sub-01_ses-1_desc-lfs_fieldmap.nii.gz")
    support = lfs != 0
    local = _load(truth / "local_field_ppm.nii.gz")

    def r(region):
        a = lfs[region] - lfs[region].mean()
        b = local[region] - local[region].mean()
        return np.corrcoef(a, b)[0, 1]

    # the default (PDF) keeps the whole mask: measured r 0.971 deeper than 8 mm (V-SHARP,
    # whose mask ends there: 0.976) and 0.886 with the rim next to the skull
    inner = ndimage.distance_transform_edt(support, sampling=(2.0, 2.0, 2.0)) > 8
    assert r(support & inner) >= 0.95
    assert r(support) >= 0.85


@pytest.fixture
def phase_copy(sim_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(sim_dataset[0], root, ignore=shutil.ignore_patterns("sub-02"))
    return root, tmp_path / "out"


def test_uninterpretable_phase_range_refused(phase_copy):
    root, out = phase_copy
    anat = root / "sub-01" / "ses-1" / "anat"
    for i in range(1, 6):
        path = anat / f"sub-01_ses-1_echo-{i}_part-phase_MEGRE.nii.gz"
        img = nib.load(path)
        values = np.random.default_rng(i).normal(50.0, 10.0, img.shape).astype(np.float32)
        nib.save(nib.Nifti1Image(values, img.affine), path)
        set_sidecar(path.with_name(path.name.replace(".nii.gz", ".json")), Units=None)
    code, _, err = run_cli(root, out, "participant", "--session-label", "1")
    assert code == 1 and "Traceback" not in err
    line = [l for l in err.splitlines() if l.startswith("bids-iron: failed: sub-01_ses-1")][0]
    assert "part-phase_MEGRE.nii.gz" in line and "--phase-range" in line
    assert not list((out / "sub-01" / "ses-1" / "anat").glob("*Chimap*"))
    # on the console: once, in the final summary (it was 3 lines);
    # in the session's log file: the error, once
    assert err.count("phase range not understood") == 1, err
    assert (out / "logs" / "sub-01_ses-1.log").read_text().count(
        "phase range not understood") == 1


def test_missing_field_strength_with_phase(phase_copy):
    root, out = phase_copy
    for side in (root / "sub-01" / "ses-1" / "anat").glob("*.json"):
        set_sidecar(side, MagneticFieldStrength=None)
    code, _, err = run_cli(root, out, "participant", "--session-label", "1")
    assert code == 1 and "MagneticFieldStrength" in err and "--b0" in err
    code, _, err = run_cli(root, out, "participant", "--session-label", "1", "--b0", "3")
    assert code == 0, err


def test_magnitude_only_and_no_phase(sim_dataset, tmp_path):
    root, _ = sim_dataset
    code, _, err = run_cli(root, tmp_path / "out", "participant", "--participant-label", "02")
    assert code == 0 and "phase stages" in err
    assert not list((tmp_path / "out").rglob("*Chimap*"))
    code, _, err = run_cli(root, tmp_path / "out2", "participant", "--participant-label", "01",
                           "--session-label", "2", "--no-phase")
    assert code == 0 and not list((tmp_path / "out2").rglob("*Chimap*"))


def test_sign_safeguard_abstains_without_r2star_contrast():
    from bids_iron.phase_stage import veins_paramagnetic

    rng = np.random.default_rng(0)
    mask = np.ones((20, 20, 20), bool)
    chi = rng.normal(0, 0.01, mask.shape)
    flat = rng.normal(50, 1, mask.shape)  # uniform R2*: no verdict
    assert veins_paramagnetic(chi, flat, mask) is None
    veins = flat.copy()
    veins[5:7, 5:7, :] = veins[10:12, 3:5, :] = 150.0  # vessels (2 % of voxels), high R2* ...
    chi[veins > 100] = -0.3  # ... and negative chi: inverted phase is flagged
    assert veins_paramagnetic(chi, veins, mask) < 0
    chi[veins > 100] = 0.3
    assert veins_paramagnetic(chi, veins, mask) > 0
