"""Speed and peak memory of ``fit_r2star`` on a whole-head sized volume (run by hand).

A synthetic 192 x 224 x 160 x 6-echo float32 magnitude (TE = 4..29 ms, R2* 10-60 1/s,
S0 ~ 1000, Rician noise at SNR 50) is written once to a temporary .npy file; each method then
runs in a fresh subprocess that loads it, fits it (no mask, every voxel) and reports the wall
time and CPU time of the fit (the CPU time is the figure to trust on a busy machine) and
the process's peak resident memory (``ru_maxrss``, which includes the
165 MB input and the 4 output maps).

    python benchmarks/bench_r2star.py [--threads 2] [--methods loglinear nlls] [--repeat 2]
                                      [--fortran64]

Targets: loglinear <= 2 s and the default method <= 10 s on 2 cores; peak <= 2 GB.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from bids_iron.maps.r2star import DEFAULT_R2STAR_METHOD, R2STAR_METHODS  # noqa: E402

SHAPE = (192, 224, 160)
TE = np.arange(6) * 0.005 + 0.004

CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from bids_iron.maps.r2star import fit_r2star
mag = np.load({path!r})
if {fortran64}:  # what nibabel's get_fdata() usually returns
    mag = np.asfortranarray(mag, dtype=np.float64)
te = np.array({te!r})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times, cpu = [], []
for _ in range({repeat}):
    t0, c0 = time.perf_counter(), time.process_time()
    fit = fit_r2star(mag, te, method={method!r}, n_threads={threads})
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
    del fit
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"times": times, "cpu": cpu, "base_kb": base, "peak_kb": peak}}))
"""


def make_volume(path, seed=0):
    rng = np.random.default_rng(seed)
    mag = np.empty(SHAPE + (TE.size,), np.float32)
    sigma = np.float32(1000.0 / 50.0)
    for x in range(SHAPE[0]):  # slab by slab keeps the generator's memory small
        r2 = rng.uniform(10.0, 60.0, SHAPE[1:]).astype(np.float32)
        s0 = rng.uniform(800.0, 1200.0, SHAPE[1:]).astype(np.float32)
        sig = s0[..., None] * np.exp(-r2[..., None] * TE.astype(np.float32))
        re = sig + sigma * rng.standard_normal(sig.shape, dtype=np.float32)
        im = sigma * rng.standard_normal(sig.shape, dtype=np.float32)
        mag[x] = np.hypot(re, im)
    np.save(path, mag)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(R2STAR_METHODS),
                        choices=R2STAR_METHODS)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--fortran64", action="store_true",
                        help="pass a Fortran-ordered float64 array (as from nibabel)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mag.npy")
        make_volume(path)
        kind = "Fortran-ordered float64" if args.fortran64 else "C-ordered float32"
        print(f"volume {SHAPE} x {TE.size} echoes {kind}, {args.threads} threads, "
              f"default method {DEFAULT_R2STAR_METHOD!r}")
        print(f"{'method':<10} {'best s':>8} {'all runs s':>22} {'CPU s/run':>10} "
              f"{'peak RSS MB':>12} {'after load MB':>14}")
        for method in args.methods:
            code = CHILD.format(root=str(ROOT), path=path, te=TE.tolist(), repeat=args.repeat,
                                method=method, threads=args.threads,
                                fortran64=args.fortran64)
            env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 env=env, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            runs = " ".join(f"{t:.2f}" for t in res["times"])
            print(f"{method:<10} {min(res['times']):>8.2f} {runs:>22} "
                  f"{min(res['cpu']):>10.2f} "
                  f"{res['peak_kb'] / 1024:>12.0f} {res['base_kb'] / 1024:>14.0f}")


if __name__ == "__main__":
    main()
