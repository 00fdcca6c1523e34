"""R2* mapping (bids_iron.maps.r2star): exactness, noise behaviour, edge cases, argument checks."""

import doctest
import warnings

import numpy as np
import pytest

import phantom as P
from bids_iron.maps import r2star as R
from bids_iron.maps.r2star import (DEFAULT_R2STAR_METHOD, R2STAR_MAX, R2STAR_METHODS,
                                   T2STAR_MAX, R2starFit, fit_r2star, r2star_to_t2star)

TE6 = np.arange(6) * 0.005 + 0.004  # 4..29 ms
TE5 = np.arange(5) * 0.006 + 0.004  # 4..28 ms


def decay(r2, te, s0=1000.0):
    r2 = np.asarray(r2, float)
    return (np.asarray(s0, float)[..., None] * np.exp(-r2[..., None] * te)).astype(np.float32)


def rician(r2, te, snr, seed, s0=1.0):
    rng = np.random.default_rng(seed)
    sig = decay(r2, te, s0).astype(np.float64)
    sigma = s0 / snr
    return np.abs(sig + sigma * (rng.standard_normal(sig.shape)
                                 + 1j * rng.standard_normal(sig.shape))).astype(np.float32)


def test_public_constants():
    assert R2STAR_METHODS == ("loglinear", "arlo", "nlls", "two-echo")
    assert DEFAULT_R2STAR_METHOD in R2STAR_METHODS
    assert R2STAR_MAX > 500 and 0 < T2STAR_MAX <= 10


@pytest.mark.parametrize("method", R2STAR_METHODS)
@pytest.mark.parametrize("te", [TE6, TE5], ids=["6echo", "5echo"])
def test_noise_free_exact(method, te):
    r2 = np.r_[0.5, np.linspace(2.0, 900.0, 60)]  # up to T2* = 1.1 ms
    s0 = np.linspace(50.0, 5000.0, 61)
    fit = fit_r2star(decay(r2, te, s0), te, method=method)
    assert isinstance(fit, R2starFit) and fit.method == method
    np.testing.assert_allclose(fit.r2star, r2, rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(fit.s0, s0, rtol=2e-5)
    assert fit.residual.max() < 1e-5
    assert fit.clipped_fraction == 0 and fit.invalid_fraction == 0


def test_noise_free_phantom(head_phantom):
    data = P.simulate_gre(head_phantom, snr=None)
    brain = head_phantom.brain_mask
    fit = fit_r2star(data.magnitude, data.te, mask=brain)
    np.testing.assert_allclose(fit.r2star[brain], head_phantom.r2star[brain], rtol=1e-4,
                               atol=1e-3)
    np.testing.assert_allclose(fit.s0[brain], head_phantom.m0[brain], rtol=1e-4)


def test_default_snr100_constant_region_within_1_percent():
    truth = 30.0
    mag = rician(np.full((24, 24, 24), truth), TE6, snr=100, seed=1)
    fit = fit_r2star(mag, TE6)
    assert abs(fit.r2star.mean() / truth - 1) < 0.01
    # and each deep-GM-like rate, 5 echoes
    for truth in (15.0, 45.0):
        fit = fit_r2star(rician(np.full(8000, truth), TE5, snr=100, seed=2), TE5)
        assert abs(fit.r2star.mean() / truth - 1) < 0.01


def test_default_snr100_phantom_nuclei(head_phantom):
    data = P.simulate_gre(head_phantom, snr=100, seed=3)
    fit = fit_r2star(data.magnitude, data.te, mask=head_phantom.brain_mask)
    for name in P.NUCLEI + ("white_matter",):
        sel = head_phantom.label_mask(name)
        assert abs(fit.r2star[sel].mean() / head_phantom.r2star[sel].mean() - 1) < 0.01, name


@pytest.mark.parametrize("method", ["loglinear", "arlo", "nlls"])
def test_methods_unbiased_at_snr100(method):
    r2 = np.random.default_rng(4).uniform(10, 60, 20000)
    fit = fit_r2star(rician(r2, TE6, snr=100, seed=5), TE6, method=method)
    rel = fit.r2star / r2 - 1
    assert abs(rel.mean()) < 0.005
    assert np.sqrt(np.mean(rel ** 2)) < 0.04


def test_nlls_beats_loglinear_bias_at_snr20():
    r2 = np.random.default_rng(6).uniform(10, 60, 40000)
    mag = rician(r2, TE6, snr=20, seed=7)
    bias = {m: np.mean(fit_r2star(mag, TE6, method=m).r2star / r2 - 1)
            for m in ("loglinear", "nlls")}
    assert abs(bias["nlls"]) < abs(bias["loglinear"])


def test_nlls_matches_reference_optimiser():
    # a tiny, independent brute-force least-squares solution for a few noisy voxels
    r2 = np.array([12.0, 25.0, 40.0, 55.0])
    mag = rician(r2, TE6, snr=30, seed=8).astype(np.float64)
    fit = fit_r2star(mag, TE6, method="nlls")
    grid = np.linspace(0, 120, 120001)
    for v in range(r2.size):
        e = np.exp(-np.outer(grid, TE6))
        amp = e @ mag[v] / np.sum(e * e, axis=1)
        cost = np.sum((mag[v] - amp[:, None] * e) ** 2, axis=1)
        assert abs(fit.r2star[v] - grid[np.argmin(cost)]) < 0.02


def test_t2star_is_inverse_of_r2star():
    r2 = np.array([0.0, 0.5, 1.0, 20.0, 50.0, 999.0])
    fit = fit_r2star(decay(r2, TE6), TE6, method="loglinear")
    pos = fit.r2star >= 1.0
    np.testing.assert_allclose(fit.t2star[pos], 1.0 / fit.r2star[pos], rtol=1e-6)
    assert fit.t2star[0] == 0  # R2* = 0: T2* undefined -> 0
    assert fit.t2star[1] == np.float32(T2STAR_MAX)  # 1/0.5 = 2 s clipped
    np.testing.assert_array_equal(r2star_to_t2star(fit.r2star), fit.t2star)
    assert r2star_to_t2star([np.nan, -3.0, np.inf]).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("method", R2STAR_METHODS)
def test_mask_zeroes_outside_and_keeps_inside(method):
    rng = np.random.default_rng(9)
    r2 = rng.uniform(10, 60, (6, 7, 5))
    mag = rician(r2, TE6, snr=50, seed=10) * 500
    mask = rng.random((6, 7, 5)) > 0.4
    fit = fit_r2star(mag, TE6, method=method, mask=mask)
    full = fit_r2star(mag, TE6, method=method)
    for name in ("r2star", "t2star", "s0", "residual"):
        got = getattr(fit, name)
        assert np.all(got[~mask] == 0), name
        np.testing.assert_array_equal(got[mask], getattr(full, name)[mask])
    assert np.all(fit.r2star[mask] > 0)


@pytest.mark.parametrize("method", R2STAR_METHODS)
def test_bad_signal_gives_finite_output(method):
    mag = np.tile(decay([30.0], TE6), (7, 1))
    mag[0] = 0.0  # all zero
    mag[1] = -5.0  # all negative
    mag[2, :] = np.nan  # all NaN
    mag[3, 3] = np.inf  # one infinite echo
    mag[4, 1] = 0.0  # one zero echo
    mag[5, 4:] = -1.0  # two negative late echoes
    # voxel 6 is clean
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning leaks out either
        fit = fit_r2star(mag, TE6, method=method)
    for name in ("r2star", "t2star", "s0", "residual"):
        arr = getattr(fit, name)
        assert arr.dtype == np.float32 and np.all(np.isfinite(arr)), name
        assert np.all(arr[:3] == 0), name
    assert fit.invalid_fraction >= 3 / 7
    assert fit.r2star[6] == pytest.approx(30.0, rel=1e-4)
    if method in ("loglinear", "nlls"):  # unusable echoes are simply left out
        np.testing.assert_allclose(fit.r2star[3:], 30.0, rtol=1e-4)
        np.testing.assert_allclose(fit.s0[3:], 1000.0, rtol=1e-3)


def test_single_usable_echo_is_invalid():
    mag = decay([30.0], TE6)
    mag[0, 1:] = 0
    fit = fit_r2star(mag, TE6, method="nlls")
    assert fit.r2star[0] == 0 and fit.s0[0] == 0 and fit.invalid_fraction == 1.0


@pytest.mark.parametrize("method", R2STAR_METHODS)
def test_clipping(method):
    mag = np.stack([decay([30.0], TE6)[0][::-1],  # rising signal -> R2* 0
                    decay([5000.0], TE6, 1e30)[0]])  # far too fast -> R2STAR_MAX
    fit = fit_r2star(mag, TE6, method=method)
    assert fit.r2star[0] == 0 and fit.t2star[0] == 0
    assert fit.r2star[1] == np.float32(R2STAR_MAX)
    assert fit.t2star[1] == pytest.approx(1 / R2STAR_MAX)
    assert fit.clipped_fraction == 1.0
    assert np.all(fit.s0 >= 0) and np.all(np.isfinite(fit.s0))


def test_two_echo_uses_first_two_echoes():
    mag = decay([25.0, 40.0], TE6)
    fit = fit_r2star(mag, TE6, method="two-echo")
    expected = np.log(mag[:, 0] / mag[:, 1]) / (TE6[1] - TE6[0])
    np.testing.assert_allclose(fit.r2star, expected, rtol=1e-5)
    mag2 = mag.copy()
    mag2[:, 2:] *= 0.3  # later echoes have no influence
    np.testing.assert_array_equal(fit_r2star(mag2, TE6, method="two-echo").r2star, fit.r2star)
    # exactly two echoes also works for every method but arlo
    for method in ("loglinear", "nlls", "two-echo"):
        np.testing.assert_allclose(fit_r2star(mag[:, :2], TE6[:2], method=method).r2star,
                                   [25.0, 40.0], rtol=1e-4)


def test_arlo_recovers_unequal_amplitudes_with_any_spacing():
    te = np.arange(8) * 0.0025 + 0.002
    r2 = np.array([8.0, 60.0, 250.0])
    fit = fit_r2star(decay(r2, te, [1.0, 10.0, 1e4]), te, method="arlo")
    np.testing.assert_allclose(fit.r2star, r2, rtol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16, np.uint16])
@pytest.mark.parametrize("method", R2STAR_METHODS)
def test_float32_outputs(dtype, method):
    mag = decay([20.0, 35.0], TE6).astype(dtype)
    fit = fit_r2star(mag, TE6, method=method)
    for name in ("r2star", "t2star", "s0", "residual"):
        assert getattr(fit, name).dtype == np.float32, name
    if dtype in (np.float64, np.float32):
        np.testing.assert_allclose(fit.r2star, [20.0, 35.0], rtol=1e-4)
    else:  # integer rounding of the signal
        np.testing.assert_allclose(fit.r2star, [20.0, 35.0], rtol=1e-2)


@pytest.mark.parametrize("shape", [(), (11,), (3, 4), (4, 3, 5)])
@pytest.mark.parametrize("method", R2STAR_METHODS)
def test_leading_shapes(shape, method):
    r2 = np.random.default_rng(11).uniform(10, 60, shape)
    fit = fit_r2star(decay(r2, TE6), TE6, method=method)
    for name in ("r2star", "t2star", "s0", "residual"):
        assert getattr(fit, name).shape == shape, name
    np.testing.assert_allclose(fit.r2star, r2, rtol=1e-4)


def test_non_contiguous_input_and_threads(monkeypatch):
    monkeypatch.setattr(R, "_CHUNK", 97)  # many chunks
    rng = np.random.default_rng(12)
    r2 = rng.uniform(10, 60, (10, 9, 8))
    mag = rician(r2, TE6, snr=40, seed=13) * 300
    view = np.moveaxis(np.moveaxis(mag, -1, 0).copy(), 0, -1)  # echo axis not contiguous
    mask = rng.random(r2.shape) > 0.3
    ref = fit_r2star(mag, TE6, mask=mask, n_threads=1)
    fortran = np.asfortranarray(mag.astype(np.float64))  # as nibabel's get_fdata() gives
    for n_threads in (2, 5):  # same chunks as ref: bit-identical
        fit = fit_r2star(view, TE6, mask=mask, n_threads=n_threads)
        np.testing.assert_array_equal(fit.r2star, ref.r2star)
        np.testing.assert_array_equal(fit.s0, ref.s0)
        np.testing.assert_array_equal(fit.residual, ref.residual)
    for n_threads in (1, 2):  # other chunks (memory order): equal to the nlls tolerance
        fit = fit_r2star(fortran, TE6, mask=mask, n_threads=n_threads)
        assert fit.r2star.shape == r2.shape and fit.r2star.flags.f_contiguous
        np.testing.assert_allclose(fit.r2star, ref.r2star, rtol=2e-3, atol=1e-2)
        np.testing.assert_allclose(fit.s0, ref.s0, rtol=2e-3)
        assert np.array_equal(fit.r2star == 0, ref.r2star == 0)


def test_residual_flags_non_monoexponential():
    mono = decay([30.0], TE6)
    bi = 0.5 * decay([10.0], TE6) + 0.5 * decay([150.0], TE6)
    fit = fit_r2star(np.concatenate([mono, bi]), TE6)
    assert fit.residual[0] < 1e-5 and fit.residual[1] > 1e-2


def test_nlls_converges_in_few_iterations():
    fit = fit_r2star(rician(np.full(5000, 35.0), TE6, snr=50, seed=14), TE6, method="nlls")
    assert 1 <= fit.n_iterations <= 10


# ------------------------------------------------------------------ argument checks

def test_too_few_echoes():
    with pytest.raises(ValueError, match="at least 2 echoes"):
        fit_r2star(np.ones((4, 1)), [0.005])
    with pytest.raises(ValueError, match="at least 2 echoes"):
        fit_r2star(np.ones(1), [0.005], method="loglinear")


def test_te_length_mismatch():
    with pytest.raises(ValueError, match=r"te has 5 .*magnitude has 6"):
        fit_r2star(decay([30.0], TE6), TE5)


@pytest.mark.parametrize("te", [TE6[::-1], np.r_[TE6[:3], TE6[2], TE6[4:]],
                                np.r_[0.004, 0.009, 0.008, 0.014, 0.02, 0.025]],
                         ids=["reversed", "duplicate", "unsorted"])
def test_unsorted_or_duplicate_te(te):
    with pytest.raises(ValueError, match="te must be sorted ascending"):
        fit_r2star(np.ones((2, 6)), te)


def test_te_bad_values():
    with pytest.raises(ValueError, match="te must be in seconds"):
        fit_r2star(np.ones((2, 6)), TE6 * 1000)
    with pytest.raises(ValueError, match="te must be finite"):
        fit_r2star(np.ones((2, 6)), np.r_[TE6[:5], np.nan])
    with pytest.raises(ValueError, match="te must be a 1-D"):
        fit_r2star(np.ones((2, 6)), TE6[None])


def test_arlo_needs_equal_spacing_and_three_echoes():
    te = np.array([0.004, 0.009, 0.015, 0.020, 0.026, 0.031])
    with pytest.raises(ValueError, match="te must be equally spaced"):
        fit_r2star(decay([30.0], te), te, method="arlo")
    with pytest.raises(ValueError, match="'arlo' needs at least 3"):
        fit_r2star(decay([30.0], TE6[:2]), TE6[:2], method="arlo")
    # the other methods accept unequal spacing
    for method in ("loglinear", "nlls", "two-echo"):
        assert fit_r2star(decay([30.0], te), te, method=method).r2star[0] == \
            pytest.approx(30.0, rel=1e-4)


def test_other_argument_checks():
    mag = decay([30.0, 20.0], TE6)
    with pytest.raises(ValueError, match="method must be one of"):
        fit_r2star(mag, TE6, method="lsq")
    with pytest.raises(ValueError, match="mask must have the voxel shape"):
        fit_r2star(mag, TE6, mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="magnitude must be a real array"):
        fit_r2star(mag.astype(np.complex64), TE6)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_threads"):
            fit_r2star(mag, TE6, n_threads=bad)


def test_docstring_examples():
    result = doctest.testmod(R, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0
