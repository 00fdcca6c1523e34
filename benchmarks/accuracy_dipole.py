"""QSM-challenge accuracy metrics of each dipole inversion on simulated phantoms.

Run by hand:

    python benchmarks/accuracy_dipole.py [--grid small|large|both] [--methods ...]
                                         [--set tv_admm:alpha=1e-4 ...]

``small`` is the test phantom (64 x 64 x 48, 2 mm), ``large`` the 192 x 224 x 160, 1 mm one of
``bench_dipole.py`` (cached). The local field is qsm-forward's field of the brain's own chi
plus 0.002 ppm Gaussian noise. Both the reconstruction and the truth are referenced to their
whole-brain mean before scoring. Metrics (lower is better unless noted):

- NRMSE (%): demeaned, and after removing a linear trend (detrended), in the brain mask;
- HFEN (%): Laplacian-of-Gaussian (sigma 1.5 voxels) error norm;
- XSIM (higher is better): SSIM adapted to QSM (5x5x5 windows, L = 1 ppm);
- deep-GM slope and correlation of the 7 nuclei's ROI means against the truth, and the
  challenge's ``dgm_linearity`` = |1 - slope| (over the first six nuclei).

The metric functions come from ``qsm_ci.qsm_eval`` (PyPI ``qsm-ci``, a port of the QSM.rs
reference scorer) when it is installed; otherwise the local implementations below are used
(same definitions).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from accuracy_inversion import parse_sets  # noqa: E402  (method:key=value)
from qsm_metrics import _qe, metrics  # noqa: E402  (tests/qsm_metrics.py)


def deep_gm(recon, truth, labels, mask):
    from phantom import NUCLEI, TISSUES

    m = mask > 0
    recon = recon - recon[m].mean()
    truth = truth - truth[m].mean()
    index = {v[0]: k for k, v in TISSUES.items()}
    t = np.array([truth[labels == index[n]].mean() for n in NUCLEI])
    r = np.array([recon[labels == index[n]].mean() for n in NUCLEI])
    slope = float(np.polyfit(t, r, 1)[0])
    out = {"dgm_slope": slope, "dgm_r": float(np.corrcoef(t, r)[0, 1])}
    if _qe is not None:
        seg = np.zeros(labels.shape, np.int16)
        for i, name in enumerate(NUCLEI[:6], start=1):
            seg[labels == index[name]] = i
        out["dgm_linearity"] = _qe.dgm_linearity(recon, truth, seg)
    else:
        out["dgm_linearity"] = abs(1.0 - float(np.polyfit(t[:6], r[:6], 1)[0]))
    return out


# --------------------------------------------------------------- data

def small_data():
    import qsm_forward
    from phantom import make_phantom

    ph = make_phantom()
    m = ph.brain_mask
    chi = ph.chi * m
    fld = qsm_forward.generate_field(chi, voxel_size=list(ph.voxel_size), B0_dir=[0, 0, 1])
    rng = np.random.default_rng(1)
    fld = ((fld - fld[m].mean()) + 0.002 * rng.standard_normal(fld.shape)) * m
    return {"field": fld.astype(np.float32), "mask": m, "chi": chi.astype(np.float32),
            "labels": ph.labels, "magnitude": (ph.m0 * np.exp(-0.02 * ph.r2star)),
            "voxel_size": np.asarray(ph.voxel_size)}


def large_data(cache=None):
    from bench_dipole import make_data

    return make_data(cache)


def main(argv=None):
    from bids_iron.maps.dipole import DEFAULT_DIPOLE_METHOD, DIPOLE_METHODS, invert_dipole

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=("small", "large", "both"), default="both")
    parser.add_argument("--methods", nargs="+", default=list(DIPOLE_METHODS),
                        choices=DIPOLE_METHODS)
    parser.add_argument("--set", nargs="*", default=None,
                        help="override parameters, e.g. tv_admm:alpha=1e-4")
    parser.add_argument("--cache", default=None)
    args = parser.parse_args(argv)
    overrides = parse_sets(args.set)
    print(f"metrics from {'qsm_ci.qsm_eval' if _qe is not None else 'local definitions'}; "
          f"default method {DEFAULT_DIPOLE_METHOD!r}")
    grids = ("small", "large") if args.grid == "both" else (args.grid,)
    for grid in grids:
        data = small_data() if grid == "small" else large_data(args.cache)
        voxel = tuple(float(v) for v in data["voxel_size"])
        print(f"\n{grid}: grid {data['mask'].shape}, voxel {voxel} mm")
        print(f"{'method':<12} {'NRMSE%':>7} {'NRMSEdt%':>8} {'HFEN%':>6} {'XSIM':>6} "
              f"{'dGM slope':>9} {'dGM r':>6} {'|1-s|':>6} {'iter':>4} {'time s':>6}")
        for method in args.methods:
            kw = dict(overrides.get(method, {}))
            if method == "medi":
                kw["magnitude"] = data["magnitude"]
            t = time.perf_counter()
            res = invert_dipole(data["field"], data["mask"], data["voxel_size"], (0, 0, 1),
                                method=method, **kw)
            elapsed = time.perf_counter() - t
            mt = metrics(res.chi, data["chi"], data["mask"])
            dg = deep_gm(res.chi, data["chi"], data["labels"], data["mask"])
            print(f"{method:<12} {mt['nrmse']:7.1f} {mt['nrmse_detrend']:8.1f} "
                  f"{mt['hfen']:6.1f} {mt['xsim']:6.3f} {dg['dgm_slope']:9.3f} "
                  f"{dg['dgm_r']:6.3f} {dg['dgm_linearity']:6.3f} {res.n_iter:4d} "
                  f"{elapsed:6.2f}")


if __name__ == "__main__":
    main()
