"""The participant level on real scanner data (../shared/data/real/mrt-small; no ground truth)."""

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import REAL_SMALL, run_cli

pytestmark = pytest.mark.skipif(not (REAL_SMALL / "Mag.nii.gz").exists(),
                                reason="../shared/data/real/mrt-small not present")

ECHO_TIMES = (0.004, 0.008, 0.012)  # s, from the data's README


@pytest.fixture(scope="module")
def real_bids(tmp_path_factory):
    """The 4-D crop split into a BIDS layout: one file per echo, part-mag/part-phase."""
    root = tmp_path_factory.mktemp("real") / "ds"
    anat = root / "sub-real" / "anat"
    anat.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "mrt-small", "BIDSVersion": "1.9.0"}))
    for part, name in (("mag", "Mag"), ("phase", "Phase")):
        img = nib.load(REAL_SMALL / f"{name}.nii.gz")
        data = np.asarray(img.dataobj, dtype=np.float32)
        for i, te in enumerate(ECHO_TIMES, start=1):
            stem = anat / f"sub-real_echo-{i}_part-{part}_MEGRE"
            nib.save(nib.Nifti1Image(data[..., i - 1], img.affine), f"{stem}.nii.gz")
            stem.with_suffix(".json").write_text(json.dumps(
                {"EchoTime": te, "MagneticFieldStrength": 3.0}))
    return root


def test_real_r2star_plausible(real_bids, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(real_bids, out, "participant")
    assert code == 0, err
    anat = out / "sub-real" / "anat"
    r2 = nib.load(anat / "sub-real_R2starmap.nii.gz")
    assert r2.shape == (51, 51, 41)
    np.testing.assert_allclose(r2.header.get_zooms(), (0.46875, 0.46875, 1.0), rtol=1e-6)
    r2 = r2.get_fdata()
    mag = nib.load(real_bids / "sub-real/anat/sub-real_echo-1_part-mag_MEGRE.nii.gz").get_fdata()
    tissue = mag > np.percentile(mag, 30)
    median = np.median(r2[tissue])
    # brain tissue at 3 T: R2* of roughly 15-50 1/s (gray/white matter, veins higher)
    assert 15 < median < 50, median
    assert np.all(np.isfinite(r2)) and r2.min() >= 0 and r2.max() <= 1000
    t2 = nib.load(anat / "sub-real_T2starmap.nii.gz").get_fdata()
    assert 0.02 < np.median(t2[tissue]) < 0.07


def test_real_phase_chain(real_bids, tmp_path):
    """Odd phase scaling detected, mask covers the (all-tissue) crop, veins paramagnetic."""
    out = tmp_path / "out"
    code, _, err = run_cli(real_bids, out, "participant", "--swi")
    assert code == 0, err
    anat = out / "sub-real" / "anat"
    side = json.loads((anat / "sub-real_Chimap.json").read_text())
    assert side["PhaseScaling"].startswith("odd scale")
    assert side["SignCheckHighR2starMedianChi"] > 0  # the vein and iron: positive chi
    mask = nib.load(anat / "sub-real_desc-brain_mask.nii.gz").get_fdata() > 0
    assert mask.mean() > 0.8  # a crop of tissue: no background to cut away
    chi = nib.load(anat / "sub-real_Chimap.nii.gz").get_fdata()
    assert np.all(np.isfinite(chi)) and np.abs(chi).max() < 2.0
    field = nib.load(anat.parent / "fmap" / "sub-real_desc-total_fieldmap.nii.gz").get_fdata()
    assert np.abs(field[mask]).max() < 300  # Hz: a smooth field, no wraps left at 3 T
