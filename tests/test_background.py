"""Background field removal on the labelled head phantom (noise-free fields from qsm-forward)."""

import numpy as np
import pytest
from scipy import ndimage

from bids_iron.maps.background import (BACKGROUND_METHODS, DEFAULT_BACKGROUND_METHOD,
                                       MaskVanishedError, remove_background,
                                       remove_background_ismv, remove_background_lbv,
                                       remove_background_pdf, remove_background_resharp,
                                       remove_background_vsharp)
from phantom import flattened_fields, make_phantom, masked_correlation


@pytest.fixture(scope="module")
def fields():
    """Total and local (truth) field in ppm on the 2 mm phantom, cortex and white matter
    flattened (see `phantom.flattened_fields`)."""
    ph = make_phantom()
    total, local = flattened_fields(ph)
    return total.astype(np.float32), local.astype(np.float32), ph.brain_mask, ph.voxel_size


# Compared 2 voxels (4 mm) inside each method's output mask: the phantom's skull (-1.5 ppm) abuts
# the brain on a voxel staircase, whose discrete field is not harmonic in the first voxels.
@pytest.mark.parametrize("method", sorted(BACKGROUND_METHODS))
def test_recovers_local_field(fields, method):
    total, local, mask, vs = fields
    out, out_mask = remove_background(total, mask, vs, method=method)
    assert out.dtype == np.float32 and out.shape == total.shape
    assert out_mask.dtype == bool and not np.any(out_mask & ~mask)
    assert np.all(out[~out_mask] == 0)
    assert abs(float(out[out_mask].mean())) < 1e-6
    inner = ndimage.binary_erosion(out_mask, iterations=2)
    assert inner.sum() > 0.4 * mask.sum()
    assert masked_correlation(total, local, inner) < 0.5  # the background dominates the input
    # LBV takes the field on the mask boundary as background; the skull staircase and local
    # sources next to the boundary break that (r 0.88 here; see README for the whole head)
    min_r, max_rel = (0.85, 0.6) if method == "lbv" else (0.95, 0.35)
    assert masked_correlation(out, local, inner) >= min_r
    rmse = np.sqrt(np.mean(((out - local)[inner] - (out - local)[inner].mean()) ** 2))
    assert rmse < max_rel * local[inner].std()


def test_default_and_erosion(fields):
    total, _, mask, vs = fields
    assert DEFAULT_BACKGROUND_METHOD == "pdf"  # keeps the brain (realistic head, README)
    _, m_v = remove_background_vsharp(total, mask, vs)  # smallest default radius: 8 mm
    ball8 = (np.indices((9, 9, 9)) - 4.0) * np.asarray(vs, float).reshape(3, 1, 1, 1)
    ball8 = (ball8 ** 2).sum(0) <= 64.0
    assert np.array_equal(m_v, ndimage.binary_erosion(mask, ball8))
    _, m_v2 = remove_background_vsharp(total, mask, vs, radii_mm=(4.0, 8.0))
    ball = (np.indices((5, 5, 5)) - 2.0)
    ball = (ball ** 2).sum(0) <= 4.0
    assert np.array_equal(m_v2, ndimage.binary_erosion(mask, ball))
    _, m_p = remove_background_pdf(total, mask, vs)
    assert np.array_equal(m_p, mask)
    _, m_r = remove_background_resharp(total, mask, vs, radius_mm=4.0)
    assert np.array_equal(m_r, m_v2)
    _, m_l = remove_background_lbv(total, mask, vs)  # only the boundary layer is lost
    assert np.array_equal(m_l, ndimage.binary_erosion(mask))
    _, m_l2 = remove_background_lbv(total, mask, vs, peel_mm=4.0)
    assert m_l2.sum() < m_l.sum() and not (m_l2 & ~m_l).any()
    res = remove_background_ismv(total, mask, vs)  # default 3 mm, at least 2 voxels: 4 mm
    assert res.parameters["radius_mm"] == 4.0 and np.array_equal(res.mask, m_v2)
    _, m_i = remove_background_ismv(total, mask, vs, radius_mm=2.0)  # the 6-neighbourhood
    assert np.array_equal(m_i, ndimage.binary_erosion(mask))


def test_linear_unit_agnostic(fields):
    total, _, mask, vs = fields
    scale = 127.732434  # ppm -> Hz at 3 T
    for fn in (remove_background_vsharp, remove_background_resharp, remove_background_pdf,
               remove_background_lbv, remove_background_ismv):
        a, _ = fn(total, mask, vs)
        b, _ = fn(total * scale, mask, vs)
        np.testing.assert_allclose(b, a * scale, atol=2e-3 * np.abs(a * scale).max())


def test_harmonic_background_only_removed():
    """A pure exterior-dipole background is removed (small residual) by every method."""
    from bids_iron.maps.kernels import dipole_kernel
    shape = (48, 48, 40)
    g = np.indices(shape) - np.array([24.0, 24.0, 20.0])[:, None, None, None]
    mask = ((g[0] / 16) ** 2 + (g[1] / 18) ** 2 + (g[2] / 14) ** 2) < 1
    chi = np.zeros(shape)
    chi[20:28, 14:22, 2:4] = 10.0  # "sinus" below the mask
    d = dipole_kernel(shape, (1, 1, 1))
    bgf = np.fft.ifftn(d * np.fft.fftn(chi)).real.astype(np.float32)
    for method in BACKGROUND_METHODS:
        out, m = remove_background(bgf, mask, (1, 1, 1), method=method)
        inner = ndimage.binary_erosion(m, iterations=2)
        assert out[inner].std() < 0.05 * bgf[inner].std(), method


def test_pdf_uniform_weights_match_default(fields):
    total, _, mask, vs = fields
    a, _ = remove_background_pdf(total, mask, vs)
    b, _ = remove_background_pdf(total, mask, vs, weights=np.full(mask.shape, 3.0))
    np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(a).max())


def test_value_errors(fields):
    total, _, mask, vs = fields
    with pytest.raises(ValueError, match="mask"):
        remove_background_vsharp(total, mask[:-1], vs)
    with pytest.raises(ValueError, match="mask is empty"):
        remove_background_vsharp(total, np.zeros_like(mask), vs)
    with pytest.raises(ValueError, match="field"):
        remove_background_vsharp(total[0], mask[0], vs)
    with pytest.raises(ValueError, match="voxel_size"):
        remove_background_vsharp(total, mask, (2.0, 2.0))
    with pytest.raises(ValueError, match="voxel_size"):
        remove_background_pdf(total, mask, (2.0, -2.0, 2.0))
    with pytest.raises(ValueError, match="radii_mm"):
        remove_background_vsharp(total, mask, vs, radii_mm=(0.5,))
    with pytest.raises(ValueError, match="threshold"):
        remove_background_vsharp(total, mask, vs, threshold=1.5)
    with pytest.raises(ValueError, match="radius_mm"):
        remove_background_resharp(total, mask, vs, radius_mm=1.0)
    with pytest.raises(ValueError, match="alpha"):
        remove_background_resharp(total, mask, vs, alpha=0.0)
    with pytest.raises(ValueError, match="b0_dir"):
        remove_background_pdf(total, mask, vs, b0_dir=(0, 0, 0))
    with pytest.raises(ValueError, match="weights"):
        remove_background_pdf(total, mask, vs, weights=-np.ones(mask.shape))
    with pytest.raises(ValueError, match="max_iter"):
        remove_background_pdf(total, mask, vs, max_iter=0)
    with pytest.raises(ValueError, match="method"):
        remove_background(total, mask, vs, method="sharp")
    bad = total.copy()
    bad[mask.nonzero()[0][0], mask.nonzero()[1][0], mask.nonzero()[2][0]] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        remove_background_vsharp(bad, mask, vs)
    tiny = np.zeros(mask.shape, bool)
    tiny[30:32, 30:32, 20:22] = True
    with pytest.raises(MaskVanishedError, match="vanishes"):
        remove_background_vsharp(total, tiny, vs, radii_mm=(4.0,))
    with pytest.raises(MaskVanishedError, match="vanishes"):
        remove_background_lbv(total, tiny & (np.indices(mask.shape)[2] == 20), vs)
    with pytest.raises(ValueError, match="peel_mm"):
        remove_background_lbv(total, mask, vs, peel_mm=-1)
    with pytest.raises(ValueError, match="tol"):
        remove_background_lbv(total, mask, vs, tol=2.0)
    with pytest.raises(ValueError, match="radius_mm"):
        remove_background_ismv(total, mask, vs, radius_mm=1.0)
    with pytest.raises(ValueError, match="radius_mm"):
        remove_background_ismv(total, mask, vs, radius_mm=np.nan)
    for bad_tol in (0.0, 1.0, -1e-3):
        with pytest.raises(ValueError, match="tol"):
            remove_background_ismv(total, mask, vs, tol=bad_tol)
    with pytest.raises(ValueError, match="max_iter"):
        remove_background_ismv(total, mask, vs, max_iter=0)
    with pytest.raises(ValueError, match="workers"):
        remove_background_ismv(total, mask, vs, workers=0)
    with pytest.raises(ValueError, match="mask"):
        remove_background_ismv(total, mask[:-1], vs)
    with pytest.raises(MaskVanishedError, match="vanishes"):
        remove_background_ismv(total, tiny, vs, radius_mm=4.0)


def _sphere_with_harmonic_background(offset=0.0):
    """A ball mask, a harmonic background (linear, quadratic, constant) and a local bump."""
    x, y, z = np.mgrid[:40, :40, :40] - 19.5
    mask = x ** 2 + y ** 2 + z ** 2 < 17 ** 2
    bump = np.exp(-(x ** 2 + y ** 2 + z ** 2) / 8.0)
    background = 0.5 * x + 0.2 * z + 0.01 * (x ** 2 - y ** 2) + 0.02 * x * y + 3.0 + offset
    return (background + bump).astype(np.float32), bump, mask


def test_ismv_recovers_local_field_and_converges():
    field, bump, mask = _sphere_with_harmonic_background()
    res = remove_background_ismv(field, mask, (1, 1, 1), radius_mm=3.0, tol=1e-3)
    assert res.method == "ismv" and res.converged and 1 < res.n_iter < res.parameters["max_iter"]
    assert res.local_field.dtype == np.float32 and res.mask.sum() > 0.5 * mask.sum()
    truth = np.where(res.mask, bump - bump[res.mask].mean(), 0)
    assert np.abs(res.local_field - truth)[res.mask].max() < 5e-3  # the bump's peak is 0.9
    # a tighter tolerance runs longer and comes closer; a cap on iterations is reported
    tight = remove_background_ismv(field, mask, (1, 1, 1), radius_mm=3.0, tol=1e-4)
    assert tight.n_iter > res.n_iter
    assert np.abs(tight.local_field - truth)[res.mask].max() < 5e-4
    short = remove_background_ismv(field, mask, (1, 1, 1), radius_mm=3.0, tol=1e-4, max_iter=3)
    assert short.n_iter == 3 and not short.converged
    assert np.abs(short.local_field - truth)[res.mask].max() > 0.02
    # offset invariant (a constant is harmonic), and a field without local part stops at once
    shifted = remove_background_ismv(field + np.float32(1000), mask, (1, 1, 1), radius_mm=3.0,
                                     tol=1e-3)
    assert shifted.n_iter == res.n_iter
    np.testing.assert_allclose(shifted.local_field, res.local_field, atol=1e-3)
    flat = remove_background_ismv(field - bump, mask, (1, 1, 1), radius_mm=3.0)
    assert flat.converged and flat.n_iter <= 2
    assert np.abs(flat.local_field).max() < 1e-4


def test_pdf_shell_damping_leaves_the_rim_to_the_brain():
    """A brain whose outer voxels share volume with bone (a -0.5 ppm shell, as the realistic
    head's rim) next to a skull and an air cavity: plain PDF lets the sources just outside the
    mask imitate the rim's field; damping them (``shell_damp``) keeps more of it (measured:
    local-field NRMSE 85 -> 67 %), and the parameters reach the record."""
    from bids_iron.maps.kernels import dipole_kernel

    shape = (48, 48, 48)
    r = np.sqrt(((np.indices(shape) - 24.0) ** 2).sum(0))
    mask = r < 18
    chi = np.zeros(shape, np.float32)
    chi[(r < 18) & (r >= 16.5)] = -0.5
    chi[20:24, 22:26, 20:26] = 0.2
    bg = np.zeros(shape, np.float32)
    bg[(r >= 20.5) & (r < 23.5)] = -2.0  # skull
    bg[22:26, 22:26, 2:5] = 9.0  # air
    d = dipole_kernel(shape, (1, 1, 1))

    def field(c):
        return np.fft.ifftn(d * np.fft.fftn(c)).real.astype(np.float32)

    truth = field(chi)

    def nrmse(local):
        a, b = local[mask] - local[mask].mean(), truth[mask] - truth[mask].mean()
        return 100 * np.linalg.norm(a - b) / np.linalg.norm(b)

    plain = remove_background_pdf(truth + field(bg), mask, (1, 1, 1), max_iter=100)
    damped = remove_background_pdf(truth + field(bg), mask, (1, 1, 1), max_iter=100,
                                   shell_damp=3e-3)
    assert nrmse(damped.local_field) < nrmse(plain.local_field) - 10
    assert damped.parameters["shell_damp"] == 3e-3 and "shell_damp" not in plain.parameters
    with pytest.raises(ValueError):
        remove_background_pdf(truth, mask, (1, 1, 1), shell_damp=-1.0)
