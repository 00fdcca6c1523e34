"""Brain mask from magnitude: Dice against the phantom's true brain mask."""

import numpy as np
import pytest

from bids_iron.anatomy.brain_mask import mask_from_magnitude, otsu_threshold, refine_mask_by_quality
from phantom import make_phantom, simulate_gre


@pytest.fixture(scope="module")
def gre():
    ph = make_phantom()
    return ph, simulate_gre(ph, snr=100, phase_offset=True)


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("strip, min_dice", [(False, 0.98), (True, 0.97)])
def test_mask_matches_brain(gre, strip, min_dice):
    ph, g = gre
    m = mask_from_magnitude(g.magnitude, ph.voxel_size, strip=strip)
    assert m.dtype == bool and m.shape == ph.brain_mask.shape
    assert _dice(m, ph.brain_mask) >= min_dice
    # scalp/skull mostly excluded
    scalp = ph.labels == 1
    assert (m & scalp).sum() < 0.05 * scalp.sum()


def test_mask_single_echo_and_checks(gre):
    ph, g = gre
    m = mask_from_magnitude(g.magnitude[..., 2], ph.voxel_size)
    assert _dice(m, ph.brain_mask) > 0.95
    with pytest.raises(ValueError, match="voxel_size"):
        mask_from_magnitude(g.magnitude, (2, 2))
    with pytest.raises(ValueError, match="contrast"):
        mask_from_magnitude(np.ones((8, 8, 8)), (1, 1, 1))
    with pytest.raises(ValueError, match="magnitude"):
        mask_from_magnitude(np.ones((8, 8)), (1, 1, 1))


def test_refine_by_quality_drops_bad_border():
    g = np.indices((30, 30, 30)) - 14.5
    r = np.sqrt((g ** 2).sum(0))
    mask = r < 12
    quality = np.where(r > 10, 50.0, 1.0) + 0.01 * np.random.default_rng(0).random(r.shape)
    out = refine_mask_by_quality(mask, quality)
    assert out.sum() == (r <= 10).sum()
    assert refine_mask_by_quality(mask, quality, threshold=100).sum() == mask.sum()
    with pytest.raises(ValueError, match="quality"):
        refine_mask_by_quality(mask, quality[:-1])


def test_otsu_threshold():
    x = np.r_[np.random.default_rng(0).normal(0, 1, 1000), np.random.default_rng(1).normal(10, 1, 1000)]
    assert 3 < otsu_threshold(x) < 7
