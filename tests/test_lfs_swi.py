"""Local field shift (Hammond 2008), SWI phase mask and sliding mIP."""

import numpy as np
import pytest
from scipy import ndimage

from bids_iron.maps.background import remove_background_vsharp
from bids_iron.maps.lfs import lfs_reference_value, local_field_shift
from bids_iron.maps.swi import minimum_intensity_projection, swi, swi_phase_mask
from bids_iron.maps.units import ppm_to_hz
from phantom import flattened_fields, make_phantom, masked_correlation

B0 = 3.0


@pytest.fixture(scope="module")
def lfs_case():
    """Total field in Hz (3 T) and truth local field in ppm; cortex/WM flattened (see
    test_background)."""
    ph = make_phantom()
    total_ppm, local_ppm = flattened_fields(ph)
    total_hz = ppm_to_hz(total_ppm, B0)
    return ph, total_hz.astype(np.float32), local_ppm


def test_lfs_pipeline_matches_truth(lfs_case):
    ph, total_hz, local_ppm = lfs_case
    local_hz, m = remove_background_vsharp(total_hz, ph.brain_mask, ph.voxel_size)
    lfs = local_field_shift(local_hz, m, B0)
    assert lfs.dtype == np.float32 and np.all(lfs[~m] == 0)
    inner = ndimage.binary_erosion(m, iterations=2)
    assert masked_correlation(lfs, local_ppm, inner) >= 0.95
    # ROI values relative to a white matter reference match the truth (the field inside a
    # paramagnetic nucleus depends on its shape, so its sign is not asserted)
    wm = ph.label_mask("white_matter") & inner
    lfs_wm = local_field_shift(local_hz, m, B0, reference_mask=wm)
    checked = 0
    for name in ("globus_pallidus", "putamen", "red_nucleus", "caudate", "vein"):
        roi = ph.label_mask(name) & inner
        if roi.sum() < 3:  # e.g. the vein near the top lies outside the 8 mm V-SHARP mask
            continue
        truth = local_ppm[roi].mean() - local_ppm[wm].mean()
        assert lfs_wm[roi].mean() == pytest.approx(truth, abs=max(0.004, 0.15 * abs(truth))), name
        checked += 1
    assert checked >= 3


def test_lfs_exact_units_and_reference(lfs_case):
    ph, _, local_ppm = lfs_case
    m = ph.brain_mask
    hz = ppm_to_hz(local_ppm, B0)
    lfs = local_field_shift(hz, m, B0)  # default reference: whole mask
    np.testing.assert_allclose(lfs[m], (local_ppm - local_ppm[m].mean())[m], atol=1e-6)
    assert abs(float(lfs[m].astype(np.float64).mean())) < 1e-7
    ref = ph.label_mask("thalamus")
    value = lfs_reference_value(hz, m, B0, reference_mask=ref)
    assert value == pytest.approx(local_ppm[ref].mean(), abs=1e-6)
    lfs_ref = local_field_shift(hz, m, B0, reference_mask=ref)
    assert abs(float(lfs_ref[ref].astype(np.float64).mean())) < 1e-7
    np.testing.assert_allclose(lfs_ref[m], (local_ppm - value)[m], atol=1e-6)


def test_lfs_sign_and_errors():
    f = np.zeros((6, 6, 6), np.float32)
    f[1, 1, 1] = 500.0  # paramagnetic: positive Hz -> positive ppm
    m = np.ones(f.shape, bool)
    assert local_field_shift(f, m, B0)[1, 1, 1] > 0
    with pytest.raises(ValueError, match="b0_tesla"):
        local_field_shift(f, m, 0.0)
    with pytest.raises(ValueError, match="mask"):
        local_field_shift(f, m[:-1], B0)
    with pytest.raises(ValueError, match="mask is empty"):
        local_field_shift(f, ~m, B0)
    with pytest.raises(ValueError, match="reference_mask"):
        local_field_shift(f, m, B0, reference_mask=np.zeros(f.shape, bool))
    with pytest.raises(ValueError, match="local_field_hz"):
        lfs_reference_value(f[0], m[0], B0)


def test_swi_attenuates_positive_phase_only():
    shape = (20, 20, 10)
    mag = np.full(shape, 100.0, np.float32)
    phase = np.zeros(shape, np.float32)
    phase[8:11, :, :] = 1.0    # paramagnetic vein: positive phase in our convention
    phase[2:4, :, :] = -1.0    # diamagnetic structure: negative phase
    out = swi(mag, phase)      # power 4
    expected = 100.0 * (1 - 1 / np.pi) ** 4
    np.testing.assert_allclose(out[9], expected, rtol=1e-5)
    assert out[9].max() < 0.25 * 100
    np.testing.assert_array_equal(out[2:4], mag[2:4])
    np.testing.assert_array_equal(out[15], mag[15])
    np.testing.assert_array_equal(swi_phase_mask([np.pi, 5.0, -5.0]), [0.0, 0.0, 1.0])
    masked = swi(mag, phase, mask=np.zeros(shape, bool))
    assert not masked.any()
    assert out.dtype == np.float32


def test_swi_errors():
    mag = np.ones((4, 4, 4))
    with pytest.raises(ValueError, match="phase"):
        swi(mag, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="magnitude"):
        swi(-mag, np.zeros(mag.shape))
    with pytest.raises(ValueError, match="power"):
        swi(mag, np.zeros(mag.shape), power=0)
    with pytest.raises(ValueError, match="phase"):
        swi(mag, np.full(mag.shape, np.nan))


@pytest.mark.parametrize("n_slices,axis,step", [(1, 2, 1), (3, 2, 1), (4, 0, 1), (8, 2, 1),
                                                (5, 1, 2), (12, 2, 1)])
def test_mip_matches_brute_force(n_slices, axis, step):
    rng = np.random.default_rng(3)
    image = rng.standard_normal((9, 10, 12)).astype(np.float32)
    out = minimum_intensity_projection(image, n_slices=n_slices, axis=axis, step=step)
    moved = np.moveaxis(image, axis, -1)
    starts = range(0, image.shape[axis] - n_slices + 1, step)
    brute = np.stack([moved[..., k:k + n_slices].min(-1) for k in starts], axis=-1)
    np.testing.assert_array_equal(out, np.moveaxis(brute, -1, axis))


def test_mip_errors():
    image = np.zeros((4, 4, 4))
    with pytest.raises(ValueError, match="n_slices"):
        minimum_intensity_projection(image, n_slices=5)
    with pytest.raises(ValueError, match="n_slices"):
        minimum_intensity_projection(image, n_slices=0)
    with pytest.raises(ValueError, match="axis"):
        minimum_intensity_projection(image, axis=3)
    with pytest.raises(ValueError, match="step"):
        minimum_intensity_projection(image, n_slices=2, step=0)
