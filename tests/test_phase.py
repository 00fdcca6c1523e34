"""Phase scaling to radians: radians kept, vendor ranges rescaled, odd ranges refused."""

from pathlib import Path

import numpy as np
import pytest

from bids_iron.maps.phase import complex_to_magnitude_phase, scale_phase_to_radians, wrap_to_pi

REAL_PHASE = Path(__file__).parents[1].parent / "shared/data/real/mrt-small/Phase.nii.gz"


def _noise_phase(n=20000, seed=0):
    return np.random.default_rng(seed).uniform(-np.pi, np.pi, n)


def test_radians_unchanged():
    x = _noise_phase().astype(np.float32)
    out, how = scale_phase_to_radians(x)
    assert how.startswith("radians")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


def test_small_radian_region_not_rescaled():
    # genuine radians spanning much less than 2*pi (a smooth region) stay as they are
    x = np.linspace(-0.3, 0.4, 1000) ** 3
    out, how = scale_phase_to_radians(x)
    assert how.startswith("radians")
    np.testing.assert_allclose(out, x, atol=1e-6)


def test_zero_to_two_pi_wrapped():
    x = _noise_phase() + np.pi
    out, _ = scale_phase_to_radians(x)
    assert out.min() >= -np.pi and out.max() < np.pi
    np.testing.assert_allclose(np.exp(1j * out), np.exp(1j * x), atol=1e-5)


@pytest.mark.parametrize("lo, hi, period", [(-4096, 4095, 8192), (0, 4095, 4096),
                                            (-2048, 2047, 4096), (0, 4096, 4096)])
def test_integer_vendor_ranges(lo, hi, period):
    truth = _noise_phase()
    stored = np.round((truth + np.pi) / (2 * np.pi) * period) + (0 if lo >= 0 else -period / 2)
    stored = np.clip(stored, lo, hi).astype(np.int16 if period <= 8192 else np.int32)
    stored[:2] = lo, hi
    out, how = scale_phase_to_radians(stored)
    assert how.startswith("integer")
    assert out.min() >= -np.pi and out.max() < np.pi
    err = np.angle(np.exp(1j * (out[2:] - truth[2:])))
    assert np.abs(err).max() < 2 * np.pi / period * 1.01


def test_odd_scale_factor_small_symmetric_range():
    truth = _noise_phase()
    truth[:2] = -np.pi, np.pi  # a full wrapped image reaches both ends of the cycle
    out, how = scale_phase_to_radians(truth * 0.0011695906)
    assert how.startswith("odd scale")
    assert np.abs(np.angle(np.exp(1j * (out - truth)))).max() < 1e-4


def test_real_mrt_small_phase():
    nib = pytest.importorskip("nibabel")
    if not REAL_PHASE.exists():
        pytest.skip("real data not available")
    img = nib.load(str(REAL_PHASE))
    data = img.get_fdata(dtype=np.float32)
    assert np.abs(data).max() < 0.01  # stored range +-0.0037, not radians
    out, how = scale_phase_to_radians(data)
    assert "odd scale" in how
    raw = np.asarray(img.dataobj.get_unscaled(), np.float32)  # radians before scl_slope
    assert np.abs(np.angle(np.exp(1j * (out - raw)))).max() < 1e-3
    assert out.min() >= -np.pi and out.max() < np.pi


@pytest.mark.parametrize("bad", [np.full(100, 3.0),
                                 np.random.default_rng(1).uniform(0, 1e6, 5000),
                                 np.random.default_rng(2).normal(50.0, 10.0, 5000),
                                 np.array([np.nan, np.inf])])
def test_refused_ranges(bad):
    with pytest.raises(ValueError, match="phase"):
        scale_phase_to_radians(bad)


def test_refusal_message_names_range_and_fix():
    with pytest.raises(ValueError, match=r"span \[.*value_range"):
        scale_phase_to_radians(np.random.default_rng(1).uniform(100, 1e6, 5000))


def test_value_range_override():
    out, _ = scale_phase_to_radians(np.array([0.0, 25.0, 50.0, 75.0]), value_range=(0, 100))
    np.testing.assert_allclose(out, [-np.pi, -np.pi / 2, 0, np.pi / 2], atol=1e-6)
    with pytest.raises(ValueError, match="value_range"):
        scale_phase_to_radians(np.zeros(3), value_range=(1, 1))


def test_complex_to_magnitude_phase():
    z = np.array([1 + 1j, -2 + 0j, -1j], np.complex64)
    m1, p1 = complex_to_magnitude_phase(z)
    m2, p2 = complex_to_magnitude_phase(z.real, z.imag)
    np.testing.assert_allclose(m1, [np.sqrt(2), 2, 1], rtol=1e-6)
    np.testing.assert_allclose(p1, [np.pi / 4, -np.pi, -np.pi / 2], atol=1e-6)
    np.testing.assert_array_equal(p1, p2)
    with pytest.raises(ValueError, match="real"):
        complex_to_magnitude_phase(np.ones(3))
    with pytest.raises(ValueError, match="imag"):
        complex_to_magnitude_phase(np.ones(3), np.ones(4))


def test_wrap_to_pi_half_open():
    assert wrap_to_pi(np.array([np.pi]))[0] == np.float32(-np.pi)
