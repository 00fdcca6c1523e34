"""Offset removal, unwrapping and field fit on the head phantom (ground truth known)."""

import numpy as np
import pytest
from scipy import ndimage

from bids_iron.maps.combine import (estimate_field_map, fit_field_from_phase,
                                    remove_phase_offset_mcpc3ds)
from bids_iron.maps.units import hz_to_ppm, ppm_to_hz
from bids_iron.maps.unwrap import (DEFAULT_UNWRAP_METHOD, UNWRAP_METHODS, unwrap_laplacian,
                                   unwrap_region_growing)
from phantom import make_phantom, simulate_gre

TWO_PI = 2 * np.pi


@pytest.fixture(scope="module")
def gre():
    ph = make_phantom()
    return ph, simulate_gre(ph, snr=100, phase_offset=True)


def _wrap(x):
    return x - TWO_PI * np.round(x / TWO_PI)


def _residual_wraps(unwrapped, truth, mask):
    """Voxels off by > pi from the truth after removing one global 2*pi*n offset."""
    d = unwrapped - truth
    d = d - TWO_PI * np.round(np.median(d[mask]) / TWO_PI)
    return int((np.abs(d)[mask] > np.pi).sum())


@pytest.mark.parametrize("method", UNWRAP_METHODS)
def test_field_map_on_phantom(gre, method):
    ph, g = gre
    fm = estimate_field_map(g.phase, g.magnitude, g.te, ph.voxel_size, mask=ph.brain_mask,
                            unwrap_method=method)
    true_hz = ppm_to_hz(g.total_field_ppm, g.b0)
    # no residual wraps: fitted field phase per echo vs the true field phase
    for k, t in enumerate(g.te):
        err = TWO_PI * (fm.field_hz - true_hz) * t
        assert int((np.abs(err)[ph.brain_mask] > np.pi).sum()) == 0, f"echo {k}"
        assert _residual_wraps(fm.unwrapped[..., k], TWO_PI * true_hz * t, ph.brain_mask) == 0
    inner = ndimage.binary_erosion(ph.brain_mask)
    est_ppm = hz_to_ppm(fm.field_hz, g.b0)
    assert est_ppm.dtype == np.float32 and fm.field_sd_hz.dtype == np.float32
    r = np.corrcoef(est_ppm[inner], g.total_field_ppm[inner])[0, 1]
    assert r >= 0.99
    # sign: the paramagnetic-vein/nuclei field has the sign of the truth
    assert np.sign(np.median(est_ppm[inner])) == np.sign(np.median(g.total_field_ppm[inner]))
    assert np.abs(est_ppm - g.total_field_ppm)[inner].mean() < 0.01  # ppm
    # the fit standard error is about the noise level (SNR 100)
    assert 0 < np.median(fm.field_sd_hz[inner]) < 1.0


def test_default_method_is_listed():
    assert DEFAULT_UNWRAP_METHOD in UNWRAP_METHODS


def test_mcpc3ds_recovers_offset(gre):
    ph, g = gre
    _, offset = remove_phase_offset_mcpc3ds(g.phase, g.magnitude, g.te, ph.voxel_size,
                                            mask=ph.brain_mask, sigma_mm=0)
    true_offset = _wrap(g.phase[..., 0] - TWO_PI * ppm_to_hz(g.total_field_ppm, g.b0) * g.te[0])
    err = np.abs(_wrap(offset - true_offset))[ndimage.binary_erosion(ph.brain_mask)]
    assert np.median(err) < 0.05 and np.percentile(err, 99) < 0.3


def _smooth_wrapped(shape=(40, 36, 30), amp=25.0):
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    truth = amp * (g[0] ** 2 + 0.6 * g[1] * g[2] + 0.3 * np.sin(2 * g[2]))
    return truth.astype(np.float32)


@pytest.mark.parametrize("fn", [lambda w, m: unwrap_region_growing(w, mask=m),
                                lambda w, m: unwrap_laplacian(w, (1, 1, 1), mask=m)])
def test_unwrap_smooth_phase_congruent(fn):
    truth = _smooth_wrapped(amp=8.0)  # gradients up to 0.8 rad/voxel (Laplacian fails at 12)
    mask = np.ones(truth.shape, bool)
    mask[:5] = False
    wrapped = _wrap(truth).astype(np.float32)
    out = fn(wrapped, mask)
    assert out.dtype == np.float32
    assert _residual_wraps(out, truth, mask) == 0
    k = (out - wrapped)[mask] / TWO_PI  # congruent: integer multiples of 2*pi
    np.testing.assert_allclose(k, np.round(k), atol=1e-3)
    assert np.all(out[~mask] == 0)


def test_region_growing_disconnected_regions():
    truth = _smooth_wrapped(amp=15.0)
    mask = np.zeros(truth.shape, bool)
    mask[2:15] = True
    mask[20:38] = True  # two slabs that do not touch
    out = unwrap_region_growing(_wrap(truth).astype(np.float32), mask=mask)
    for part in (slice(2, 15), slice(20, 38)):
        sub = np.zeros_like(mask)
        sub[part] = mask[part]
        assert _residual_wraps(out, truth, sub) == 0


def test_region_growing_beats_noise_with_magnitude():
    rng = np.random.default_rng(3)
    truth = _smooth_wrapped()
    mag = np.ones(truth.shape, np.float32)
    mag[:, :, :4] = 0.02  # a noisy low-signal slab
    noisy = truth + np.where(mag < 0.5, rng.uniform(-np.pi, np.pi, truth.shape), 0)
    out = unwrap_region_growing(_wrap(noisy).astype(np.float32), magnitude=mag)
    good = mag > 0.5
    assert _residual_wraps(out, truth, good) == 0


def test_fit_field_weights_and_sd():
    te = np.array([0.004, 0.01, 0.016, 0.022])
    rng = np.random.default_rng(0)
    f = 33.0
    mag = np.ones((2000, 1, 1, 4), np.float32)
    phi = TWO_PI * f * te + rng.normal(0, 0.02, mag.shape)
    est, sd = fit_field_from_phase(phi.astype(np.float32), mag, te)
    assert abs(est.mean() - f) < 0.05
    # the reported SD matches the scatter of the estimates
    assert 0.7 < np.median(sd) / est.std() < 1.3


@pytest.mark.parametrize("kwargs, match", [
    (dict(te=[0.004, 0.002, 0.01]), "te"),
    (dict(te=[0.004, 0.01]), "te"),
    (dict(voxel_size=(1, 0, 1)), "voxel_size"),
    (dict(unwrap_method="magic"), "unwrap_method"),
    (dict(mask=np.ones((3, 3, 3), bool)), "mask"),
])
def test_argument_checks(kwargs, match):
    args = dict(phase=np.zeros((4, 4, 4, 3), np.float32), magnitude=np.ones((4, 4, 4, 3)),
                te=[0.004, 0.008, 0.012], voxel_size=(1, 1, 1))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        estimate_field_map(**args)
