"""The shared numerical core of the physics package (bids_iron.maps._numerics)."""

import numpy as np
import pytest
import scipy.fft

from bids_iron.maps import phase
from bids_iron.maps._numerics import (CGResult, bounding_box, check_array, check_field,
                                      check_mask, check_max_iter, check_positive,
                                      check_weights, fft_box, half_spectrum_dot,
                                      half_spectrum_inner, half_spectrum_mean, pcg, real_dot,
                                      wrap_to_pi)
from bids_iron.maps.background import (BackgroundResult, remove_background,
                                       remove_background_lbv, remove_background_pdf,
                                       remove_background_resharp, remove_background_vsharp)
from bids_iron.maps.kernels import dipole_kernel


def _spd(n, seed=0, condition=100.0):
    """A symmetric positive definite float32 matrix with the given condition number."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.geomspace(1.0, condition, n)
    return ((q * eig) @ q.T).astype(np.float32)


# --------------------------------------------------------------------------------------------
# conjugate gradients
# --------------------------------------------------------------------------------------------

def test_pcg_solves_spd_system_and_reports_convergence():
    a = _spd(40)
    x_true = np.random.default_rng(1).standard_normal(40).astype(np.float32)
    b = a @ x_true
    res = pcg(lambda p: a @ p, b, tol=1e-6, max_iter=200)
    assert isinstance(res, CGResult)
    assert res.converged and 0 < res.n_iter <= 200
    assert res.residual <= 1e-6
    assert res.x.dtype == np.float32
    np.testing.assert_allclose(res.x, x_true, rtol=0, atol=1e-3 * np.abs(x_true).max())
    # the true residual agrees with the reported one (float32 arithmetic)
    true_res = np.linalg.norm(b - a @ res.x) / np.linalg.norm(b)
    assert true_res < 1e-4


def test_pcg_not_converging_within_max_iter():
    a = _spd(60, condition=1e4)
    b = np.ones(60, np.float32)
    res = pcg(lambda p: a @ p, b, tol=1e-8, max_iter=3)
    assert not res.converged
    assert res.n_iter == 3
    assert res.residual > 1e-8


def test_pcg_preconditioner_and_start():
    """A Jacobi preconditioner on a badly scaled system needs fewer iterations; an exact
    start needs none; b = 0 gives x = 0."""
    rng = np.random.default_rng(2)
    s = np.geomspace(1.0, 1e3, 50).astype(np.float32)
    a = (_spd(50, condition=10.0) * s[:, None] * s[None, :]).astype(np.float32)
    b = rng.standard_normal(50).astype(np.float32)
    plain = pcg(lambda p: a @ p, b, tol=1e-5, max_iter=500)
    diag = np.diag(a).copy()
    pre = pcg(lambda p: a @ p, b, tol=1e-5, max_iter=500, precond=lambda r: r / diag)
    assert pre.converged and pre.n_iter < plain.n_iter
    exact = np.linalg.solve(a.astype(np.float64), b).astype(np.float32)
    again = pcg(lambda p: a @ p, b, x0=pre.x, tol=1e-2, max_iter=5)
    assert again.converged and again.n_iter == 0
    np.testing.assert_allclose(again.x, pre.x)
    assert np.linalg.norm(pre.x - exact) < 1e-3 * np.linalg.norm(exact)
    zero = pcg(lambda p: a @ p, np.zeros(50, np.float32), tol=1e-3, max_iter=5)
    assert zero.converged and zero.n_iter == 0 and not zero.x.any()


def test_pcg_on_half_spectra_matches_image_space():
    """CG on rfftn spectra with the Parseval inner product takes the image-space path."""
    shape = (12, 10, 8)
    rng = np.random.default_rng(3)
    w = (1.0 + rng.random(shape)).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32)

    kern = np.abs(dipole_kernel(shape, (1, 1, 1), rfft=True)).astype(np.float32)

    def a_img(x):  # SPD: positive weights plus a convolution with a non-negative symbol
        return w * x + scipy.fft.irfftn(scipy.fft.rfftn(x) * kern, s=shape).astype(np.float32)

    img = pcg(a_img, b, tol=1e-5, max_iter=100)

    def a_spec(xs):
        return scipy.fft.rfftn(a_img(scipy.fft.irfftn(xs, s=shape).astype(np.float32)))

    spec = pcg(a_spec, scipy.fft.rfftn(b), tol=1e-5, max_iter=100,
               dot=half_spectrum_dot(shape[-1]))
    assert img.converged and spec.converged
    assert abs(img.n_iter - spec.n_iter) <= 1
    np.testing.assert_allclose(scipy.fft.irfftn(spec.x, s=shape), img.x, atol=1e-4)


# --------------------------------------------------------------------------------------------
# inner products
# --------------------------------------------------------------------------------------------

def test_real_dot_is_float64_accurate_where_float32_sums_lose_digits():
    rng = np.random.default_rng(4)
    u = (1.0 + 0.01 * rng.standard_normal(4_000_000)).astype(np.float32)
    v = (1.0 + 0.01 * rng.standard_normal(4_000_000)).astype(np.float32)
    exact = float(np.dot(u.astype(np.float64), v.astype(np.float64)))
    running = float(np.cumsum(u * v, dtype=np.float32)[-1])  # a float32 running sum
    assert abs(running / exact - 1) > 1e-6  # loses digits ...
    assert abs(real_dot(u, v) / exact - 1) < 1e-8  # ... the shared dot does not
    assert real_dot(u, v) == pytest.approx(float(np.dot(u.astype(np.float64), v)), rel=1e-8)
    # complex: Re <u, v>, with a length that is not a multiple of the row size
    uc = (u[:100_003] + 1j * v[:100_003]).astype(np.complex64)
    vc = (v[:100_003] - 0.5j * u[:100_003]).astype(np.complex64)
    exact_c = np.vdot(uc.astype(np.complex128), vc.astype(np.complex128)).real
    assert abs(real_dot(uc, vc) / exact_c - 1) < 1e-8


def test_half_spectrum_inner_and_mean():
    rng = np.random.default_rng(5)
    for shape in ((8, 6, 10), (7, 5, 9)):  # even and odd last axis
        x = rng.standard_normal(shape).astype(np.float32)
        y = rng.standard_normal(shape).astype(np.float32)
        u, v = scipy.fft.rfftn(x), scipy.fft.rfftn(y)
        expected = float(np.dot(x.ravel().astype(np.float64), y.ravel()))
        assert np.isclose(half_spectrum_inner(u, v, shape[-1]) / x.size, expected, rtol=1e-5)
        assert half_spectrum_dot(shape[-1])(u, v) == half_spectrum_inner(u, v, shape[-1])
        # mean over the full spectrum of a symmetric function, from its half
        k = dipole_kernel(shape, (1, 1, 2)) ** 2
        k_half = dipole_kernel(shape, (1, 1, 2), rfft=True) ** 2
        assert np.isclose(half_spectrum_mean(k_half, shape[-1]), k.mean(dtype=np.float64),
                          rtol=1e-6)


# --------------------------------------------------------------------------------------------
# FFT grids
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("crop, real", [(True, True), (False, False), (True, False)])
def test_fft_box_pad_crop_round_trip(crop, real):
    shape = (37, 29, 23)
    mask = np.zeros(shape, bool)
    mask[5:30, 3:20, 10:23] = True  # touches the last face
    image = np.random.default_rng(6).standard_normal(shape).astype(np.float32) * mask
    box = fft_box(mask, (4, 2.5, 6), crop=crop, real=real)
    grid = box.to_grid(image)
    assert grid.shape == box.shape and grid.dtype == np.float32
    for n, extent, margin in zip(box.shape, (25, 17, 13), (4, 3, 6)):
        assert n >= extent + 2 * margin
        assert n == scipy.fft.next_fast_len(n, real=real)  # a fast size
    assert grid.sum(dtype=np.float64) == pytest.approx(image.sum(dtype=np.float64))
    back = box.from_grid(grid)
    np.testing.assert_array_equal(back, image)
    if not crop:
        assert all(n >= m for n, m in zip(box.shape, shape))
    np.testing.assert_array_equal(box.from_grid(box.to_grid(mask, bool), bool), mask)


def test_bounding_box():
    mask = np.zeros((10, 8, 6), bool)
    mask[2:5, 0:3, 4] = True
    assert bounding_box(mask) == (slice(2, 5), slice(0, 3), slice(4, 5))
    assert bounding_box(mask, 2) == (slice(0, 7), slice(0, 5), slice(2, 6))
    assert bounding_box(mask, (1, 0, 0)) == (slice(1, 6), slice(0, 3), slice(4, 5))
    assert bounding_box(np.zeros((3, 3), bool)) == (slice(None), slice(None))


# --------------------------------------------------------------------------------------------
# the mask policy
# --------------------------------------------------------------------------------------------

def test_mask_policy():
    shape = (3, 4, 2)
    m = np.zeros(shape, bool)
    m[1, 2, 0] = True
    out = check_mask(m, shape)
    assert out.dtype == bool and out is m  # bool: accepted as is
    for dtype in (np.uint8, np.int16, np.int64, np.float32, np.float64):
        np.testing.assert_array_equal(check_mask(m.astype(dtype), shape), m)  # 0/1: ok
    bad = m.astype(np.int32)
    bad[0, 0, 0] = 2
    with pytest.raises(ValueError, match=r"^brain_mask must be boolean or contain only 0 and 1"):
        check_mask(bad, shape, name="brain_mask")
    for value in (0.5, np.nan, -1.0):
        f = m.astype(np.float32)
        f[0, 0, 1] = value
        with pytest.raises(ValueError, match="reference_mask"):
            check_mask(f, shape, name="reference_mask")
    with pytest.raises(ValueError, match=r"mask must have the shape of field \(3, 4, 2\), "
                                         r"got \(3, 4\)"):
        check_mask(m[..., 0], shape, like="shape of field")
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        check_mask(m.astype(np.complex64), shape)
    with pytest.raises(ValueError, match="^mask is empty$"):
        check_mask(np.zeros(shape), shape)
    assert not check_mask(np.zeros(shape), shape, allow_empty=True).any()


def test_mask_policy_is_the_same_in_every_maps_function():
    """A mask holding a 2 is refused, naming the argument, by every function taking a mask."""
    from bids_iron.maps import combine, dipole, lfs, r2star, swi, unwrap

    shape = (12, 12, 12)
    good = np.zeros(shape, bool)
    good[3:9, 3:9, 3:9] = True
    two = good.astype(np.uint8) * 2
    f = np.zeros(shape, np.float32)
    ph4 = np.zeros(shape + (3,), np.float32)
    te = [0.004, 0.008, 0.012]
    calls = {
        "mask": [
            lambda m: remove_background(f, m, (1, 1, 1), method="pdf"),
            lambda m: remove_background_lbv(f, m, (1, 1, 1)),
            lambda m: dipole.invert_dipole(f, m, (1, 1, 1), method="tkd"),
            lambda m: dipole.magnitude_edge_mask(f + 1, m, (1, 1, 1)),
            lambda m: dipole.reference_chi(f, m),
            lambda m: lfs.local_field_shift(f, m, 3.0),
            lambda m: swi.swi(f + 1, f, mask=m),
            lambda m: r2star.fit_r2star(np.ones(shape + (3,)), te, mask=m),
            lambda m: unwrap.unwrap_laplacian(f, (1, 1, 1), mask=m),
            lambda m: unwrap.unwrap_region_growing(f, mask=m),
            lambda m: combine.fit_field_from_phase(ph4, None, te, mask=m),
            lambda m: combine.estimate_field_map(ph4, ph4 + 1, te, (1, 1, 1), mask=m),
        ],
        "reference_mask": [
            lambda m: lfs.local_field_shift(f, good, 3.0, reference_mask=m),
            lambda m: dipole.reference_chi(f, good, m),
        ],
    }
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(ValueError, match=f"^{name} must be boolean or contain only 0"):
                fn(two)
            with pytest.raises(ValueError, match=f"^{name} must have the .*{shape[:2]}"):
                fn(good[:-1])
            fn(good.astype(np.float32))  # 0/1 numbers: accepted


def test_check_array_field_weights_and_scalars():
    with pytest.raises(ValueError, match=r"field must be a real 3-D array"):
        check_array(np.zeros((2, 2)), "field", ndim=3)
    with pytest.raises(ValueError, match="field must be a real"):
        check_array(np.zeros((2, 2, 2), complex), "field")
    with pytest.raises(ValueError, match="magnitude has non-finite values inside the mask"):
        check_array([np.inf, 1.0], "magnitude", where=np.array([True, False]))
    mask = np.eye(2)[None].repeat(2, 0)  # 0/1 floats
    f, m = check_field(np.where(mask, 3.0, np.nan), mask)
    assert f.dtype == np.float32 and m.dtype == bool
    assert f.tolist() == np.where(mask, 3.0, 0.0).tolist()
    with pytest.raises(ValueError, match="field has non-finite values inside the mask"):
        check_field(np.full((2, 2, 2), np.nan), np.ones((2, 2, 2)))
    w = check_weights(np.array([[[2.0, 6.0], [1e9, np.nan]]]),
                      np.array([[[True, True], [False, False]]]))
    assert w.tolist() == [[[0.5, 1.5], [0.0, 0.0]]]
    with pytest.raises(ValueError, match="weights must be finite and non-negative"):
        check_weights(-np.ones((1, 1, 2)), np.ones((1, 1, 2), bool))
    with pytest.raises(ValueError, match="weights is zero everywhere"):
        check_weights(np.zeros((1, 1, 2)), np.ones((1, 1, 2), bool))
    assert check_max_iter(np.int32(4)) == 4
    for bad in (0, 2.0, True, "3"):
        with pytest.raises(ValueError, match="max_iter"):
            check_max_iter(bad)
    assert check_positive("tol", 0.5, below=1) == 0.5
    for bad in (0.0, -1, 1.0, np.nan, True, "a"):
        with pytest.raises(ValueError, match="tol"):
            check_positive("tol", bad, below=1)


def test_wrap_to_pi_is_the_public_one():
    assert phase.wrap_to_pi is wrap_to_pi
    x = np.linspace(-20, 20, 1001)
    w = wrap_to_pi(x)
    assert w.dtype == np.float32 and w.min() >= -np.pi and w.max() < np.pi
    np.testing.assert_allclose(np.exp(1j * w), np.exp(1j * x), atol=1e-6)


# --------------------------------------------------------------------------------------------
# background removal reports its iterations
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_phantom():
    shape = (40, 40, 36)
    g = np.indices(shape) - np.array([20.0, 20.0, 18.0])[:, None, None, None]
    mask = ((g[0] / 15) ** 2 + (g[1] / 15) ** 2 + (g[2] / 13) ** 2) < 1
    chi = np.zeros(shape, np.float32)
    chi[17:21, 18:22, 16:20] = 0.2  # local source
    chi[16:24, 14:22, 1:3] = 8.0  # "sinus" below the mask
    d = dipole_kernel(shape, (1, 1, 1), rfft=True)
    field = scipy.fft.irfftn(scipy.fft.rfftn(chi) * d, s=shape).astype(np.float32)
    return field, mask


@pytest.mark.parametrize("fn, iterative", [(remove_background_vsharp, False),
                                           (remove_background_resharp, True),
                                           (remove_background_pdf, True),
                                           (remove_background_lbv, True)])
def test_background_result_has_n_iter_and_converged(tiny_phantom, fn, iterative):
    field, mask = tiny_phantom
    res = fn(field, mask, (1, 1, 1), radius_mm=4.0) if fn is remove_background_resharp else \
        fn(field, mask, (1, 1, 1), radii_mm=(4.0, 6.0)) if fn is remove_background_vsharp else \
        fn(field, mask, (1, 1, 1))
    assert isinstance(res, BackgroundResult)
    assert res.method == fn.__name__.rsplit("_", 1)[1]
    assert isinstance(res.n_iter, int) and isinstance(res.converged, bool)
    assert res.converged
    assert (res.n_iter > 0) == iterative
    assert isinstance(res.parameters, dict) and res.parameters
    local, mask_out = res  # unpacks as the former (local_field, mask) pair
    assert local is res.local_field and mask_out is res.mask
    assert local.dtype == np.float32 and mask_out.dtype == bool
    assert abs(float(local[mask_out].mean())) < 1e-6
    if iterative:  # too few iterations: reported as not converged
        short = fn(field, mask, (1, 1, 1), tol=1e-9, max_iter=2)
        assert short.n_iter == 2 and not short.converged


def test_remove_background_dispatch_returns_the_result(tiny_phantom):
    field, mask = tiny_phantom
    res = remove_background(field, mask, (1, 1, 1), method="lbv", max_iter=300)
    assert isinstance(res, BackgroundResult) and res.method == "lbv"
    assert res.parameters["max_iter"] == 300
