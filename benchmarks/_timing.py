"""Timing helpers shared by the benchmarks (best-of-N wall time, FFT cost, peak memory)."""

import resource
import time
from pathlib import Path

import numpy as np
import scipy.fft


def best_time(fn, repeat=3):
    """Best wall time (s) of ``repeat`` calls of ``fn`` after one warm-up call."""
    fn()
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def fft_times(shape):
    """Wall time (s) of one complex64 ``fftn`` and one float32 ``rfftn`` on ``shape``."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    c = x.astype(np.complex64)
    return (best_time(lambda: scipy.fft.fftn(c, workers=-1)),
            best_time(lambda: scipy.fft.rfftn(x, workers=-1)))


def peak_rss_gib():
    """Peak resident memory of this process in GiB (VmHWM; else ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0 ** 2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 ** 2
