"""Speed, FFT count and peak memory of the dipole inversions on a 192 x 224 x 160 grid.

Run by hand (2 cores is the target machine):

    python benchmarks/bench_dipole.py [--methods tkd tv_admm ...] [--cache DIR]

The test phantom (tests/phantom.py) is built at 1 mm on the full grid, its brain-only field is
simulated with qsm-forward (about 30 s and 4 GB the first time; cached as .npz under
``--cache``, default the system temp directory), a little Gaussian noise is added, and each
method then runs in a fresh subprocess so that its peak resident memory (ru_maxrss, which
includes the Python interpreter and the loaded inputs, about 0.3 GB) is its own.

Printed: the time of one complex 3-D FFT (complex64) and of one real FFT (rfftn) on the grid
and on the padded grid; per method the wall time, iterations, FFTs used, its FFT floor (the
FFTs the algorithm cannot avoid: 2 for TKD, 2 per CG iteration + 2 for Tikhonov, 4 per ADMM
iteration) and the share of the time spent in FFTs; the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import fft_times, peak_rss_gib  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

SHAPE = (192, 224, 160)
VOXEL = (1.0, 1.0, 1.0)
NOISE_PPM = 0.002


def cache_path(cache_dir=None):
    cache_dir = Path(cache_dir or tempfile.gettempdir())
    return cache_dir / f"bids_iron_dipole_{'x'.join(map(str, SHAPE))}.npz"


def make_data(cache_dir=None, verbose=True):
    """Return dict(field, mask, chi, labels, magnitude, voxel_size), cached on disk."""
    path = cache_path(cache_dir)
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    sys.path.insert(0, str(ROOT / "tests"))
    import qsm_forward
    from phantom import make_phantom

    t0 = time.perf_counter()
    ph = make_phantom(shape=SHAPE, voxel_size=VOXEL)
    mask = ph.brain_mask
    chi = (ph.chi * mask).astype(np.float32)
    fld = qsm_forward.generate_field(chi.astype(np.float64), voxel_size=list(VOXEL),
                                     B0_dir=[0.0, 0.0, 1.0])
    fld = (fld - fld[mask].mean()) * mask
    rng = np.random.default_rng(0)
    fld = ((fld + NOISE_PPM * rng.standard_normal(SHAPE)) * mask).astype(np.float32)
    magnitude = (ph.m0 * np.exp(-0.02 * ph.r2star)).astype(np.float32)
    data = {"field": fld, "mask": mask, "chi": chi, "labels": ph.labels,
            "magnitude": magnitude, "voxel_size": np.asarray(VOXEL)}
    np.savez(path, **data)
    if verbose:
        print(f"simulated {SHAPE} phantom and field in {time.perf_counter() - t0:.1f} s "
              f"(cached in {path})")
    return data


def method_kwargs(method, data):
    return {"magnitude": data["magnitude"]} if method == "medi" else {}


def fft_floor(method, n_iter):
    return {"tkd": 2, "tikhonov_cg": 2 * n_iter + 2}.get(method, 4 * n_iter)


def run_one(method, cache_dir):
    """Child process: one inversion, JSON on stdout."""
    from bids_iron.maps.dipole import invert_dipole

    data = make_data(cache_dir, verbose=False)
    t = time.perf_counter()
    res = invert_dipole(data["field"], data["mask"], data["voxel_size"], (0.0, 0.0, 1.0),
                        method=method, **method_kwargs(method, data))
    elapsed = time.perf_counter() - t
    rss = peak_rss_gib()
    print(json.dumps({"method": method, "time": elapsed, "n_fft": res.n_fft,
                      "n_iter": res.n_iter, "converged": res.converged, "rss_gib": rss,
                      "padded_shape": res.parameters["padded_shape"]}))


def main(argv=None):
    from bids_iron.maps.dipole import DEFAULT_DIPOLE_METHOD, DIPOLE_METHODS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(DIPOLE_METHODS),
                        choices=DIPOLE_METHODS)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        run_one(args.run, args.cache)
        return
    make_data(args.cache)
    print(f"grid {SHAPE}, cpus {os.cpu_count()}, default method {DEFAULT_DIPOLE_METHOD!r}")
    t_c, t_r = fft_times(SHAPE)
    print(f"one complex 3-D FFT (complex64) on {SHAPE}: {t_c * 1e3:.0f} ms; "
          f"one rfftn: {t_r * 1e3:.0f} ms")
    padded = None
    rows = []
    for method in args.methods:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--run", method]
        if args.cache:
            cmd += ["--cache", args.cache]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        if padded is None:
            padded = tuple(row["padded_shape"])
    t_pc, t_pr = fft_times(padded)
    print(f"padded grid {padded}: complex FFT {t_pc * 1e3:.0f} ms, rfftn {t_pr * 1e3:.0f} ms")
    print(f"{'method':<12} {'time s':>7} {'iter':>5} {'FFTs':>5} {'floor':>5} "
          f"{'FFT share':>9} {'peak GiB':>8}")
    for r in rows:
        floor = fft_floor(r["method"], r["n_iter"])
        share = r["n_fft"] * t_pr / r["time"]
        print(f"{r['method']:<12} {r['time']:7.2f} {r['n_iter']:5d} {r['n_fft']:5d} "
              f"{floor:5d} {share:9.0%} {r['rss_gib']:8.2f}")


if __name__ == "__main__":
    main()
