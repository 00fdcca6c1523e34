"""Time background field removal on a 192x224x160, 1 mm grid (run by hand).

Synthetic data: an ellipsoidal "brain" mask with random local susceptibility sources inside and
a strong background (an "air cavity" and a shell outside the mask). Each method runs in a fresh
process so that its peak RAM (ru_maxrss) is its own. Prints the time of one complex 3-D FFT,
then per method: wall time of a first and a second call, peak RSS, correlation with the true local field inside the output
mask eroded by 2 voxels.

    python benchmarks/bench_background.py [--workers N]
"""

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np
import scipy.fft
from scipy import ndimage

SHAPE = (192, 224, 160)
VOXEL = (1.0, 1.0, 1.0)


def make_data(seed=0):
    from bids_iron.maps.kernels import dipole_kernel
    rng = np.random.default_rng(seed)
    g = np.indices(SHAPE, dtype=np.float32)
    c = [(n - 1) / 2 for n in SHAPE]
    r2 = ((g[0] - c[0]) / 70) ** 2 + ((g[1] - c[1]) / 85) ** 2 + ((g[2] - c[2]) / 62) ** 2
    mask = r2 < 1
    head = r2 < 1.12 ** 2
    local_chi = ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), 3) * 2
    for _ in range(20):  # iron-rich "nuclei"
        p = [rng.uniform(0.35, 0.65) * n for n in SHAPE]
        local_chi[tuple(slice(int(q) - 4, int(q) + 4) for q in p)] += rng.uniform(0.05, 0.2)
    local_chi *= mask
    bg_chi = np.where(head & ~mask, -1.0, 0.0).astype(np.float32)
    cav = ((g[0] - c[0]) / 14) ** 2 + ((g[1] - c[1] - 60) / 10) ** 2 + \
        ((g[2] - c[2] + 62) / 8) ** 2 < 1
    bg_chi[cav] = 9.0
    bg_chi = ndimage.gaussian_filter(bg_chi, 0.7) * ~mask
    d = dipole_kernel(SHAPE, VOXEL, rfft=True)
    fld = lambda x: scipy.fft.irfftn(scipy.fft.rfftn(x, workers=-1) * d, s=SHAPE, workers=-1)
    local = fld(local_chi).astype(np.float32)
    total = (local + fld(bg_chi)).astype(np.float32)
    return total, local, mask


def _run(method, workers, queue):
    from bids_iron.maps.background import remove_background
    total, local, mask = make_data()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    out, m = remove_background(total, mask, VOXEL, method=method, workers=workers)
    dt = time.perf_counter() - t
    t = time.perf_counter()
    remove_background(total, mask, VOXEL, method=method, workers=workers)
    dt2 = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    inner = ndimage.binary_erosion(m, iterations=2)
    a = out[inner] - out[inner].mean()
    b = local[inner] - local[inner].mean()
    corr = float(a @ b / np.sqrt((a @ a) * (b @ b)))
    queue.put((method, dt, dt2, peak / 1024, (peak - base) / 1024, corr))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=-1)
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.complex64)
    scipy.fft.fftn(x, workers=args.workers)
    t = time.perf_counter()
    scipy.fft.fftn(x, workers=args.workers)
    print(f"grid {SHAPE}, one complex64 fftn: {time.perf_counter() - t:.3f} s "
          f"(workers={args.workers})")
    del x
    ctx = mp.get_context("spawn")
    for method in ("vsharp", "resharp", "pdf"):
        q = ctx.Queue()
        p = ctx.Process(target=_run, args=(method, args.workers, q))
        p.start()
        res = q.get()
        p.join()
        print("{:8s} time {:6.2f} s (first call; again {:.2f} s)   peak RSS {:7.0f} MiB (+{:.0f} MiB for the call)"
              "   corr {:.3f}".format(*res))


if __name__ == "__main__":
    main()
