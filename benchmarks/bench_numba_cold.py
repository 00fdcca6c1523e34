"""Cold-start cost of the numba kernels: compile vs. load from the on-disk cache.

Each case runs a FRESH Python process that computes a field map (MCPC-3D-S, region-growing
unwrapping, temporal unwrapping and fit: every kernel of `bids_iron.maps._romeo`) and a
Laplacian unwrapping on a small 40^3 x 3-echo volume, and reports the wall time of the first
call (compile or cache load + run), of a second call in the same process (run only), and
numba's per-kernel cache hits/misses (``dispatcher.stats``). Cases:

a. cold: ``NUMBA_CACHE_DIR`` an empty temporary folder;
b. warm: a second process with the folder that (a) filled;
b'. the same with Fortran-ordered input arrays (as nibabel loads NIfTI data);
c. read-only package folder (no writable ``__pycache__``), read-only HOME,
   ``NUMBA_CACHE_DIR`` unset (a container or system install): first and second process;
d. read-only package folder, ``NUMBA_CACHE_DIR`` a read-only copy of the cache (a), as in the
   container image (precompiled at build time), HOME writable.

(c) and (d) use read-only bind mounts in a private mount namespace (``unshare --mount``,
needs root); they are skipped otherwise. ``--src DIR`` runs the children on another checkout
of the package (e.g. ``git archive HEAD bids_iron | tar -x -C DIR`` to compare with the code
before a change). Run by hand: ``python benchmarks/bench_numba_cold.py [--src DIR]``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
import numpy as np
import bids_iron
from bids_iron.maps.combine import estimate_field_map
from bids_iron.maps.unwrap import unwrap_laplacian
t_import = time.perf_counter() - t0
n = 40
x = np.linspace(-1, 1, n)
X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
mask = X ** 2 + Y ** 2 + Z ** 2 < 0.8
te = np.array([0.004, 0.0085, 0.013])
f = 60 * X ** 2 + 40 * Y + 10 * Z
ph = np.angle(np.exp(1j * (2 * np.pi * f[..., None] * te + 0.7))).astype(np.float32)
mag = (np.exp(-te / 0.03) + 0 * ph).astype(np.float32)
if os.environ.get("BENCH_ORDER") == "F":  # as NIfTI data come (nibabel: Fortran order)
    ph, mag, mask = np.asfortranarray(ph), np.asfortranarray(mag), np.asfortranarray(mask)

def run():
    estimate_field_map(ph, mag, te, (2.0, 2.0, 2.0), mask=mask)
    unwrap_laplacian(ph[..., 0], (2.0, 2.0, 2.0), mask=mask)

times = []
for _ in range(2):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
from bids_iron.maps import _romeo
from numba.core import config
stats = {}
for name in dir(_romeo):
    d = getattr(_romeo, name)
    if hasattr(d, "stats") and hasattr(d, "signatures") and d.signatures:
        stats[name] = (sum(d.stats.cache_hits.values()), sum(d.stats.cache_misses.values()))
print(json.dumps(dict(import_s=t_import, first_s=times[0], second_s=times[1],
                      hits=sum(h for h, _ in stats.values()),
                      misses=sum(m for _, m in stats.values()),
                      cache_dir=config.CACHE_DIR, package=bids_iron.__file__)))
"""


def child(env, ro=(), src=None):
    """Run CHILD in a fresh process; ``ro``: folders bind-mounted read-only for it."""
    env = dict(env)
    if src:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, "-c", CHILD]
    if ro:
        mounts = "".join(f"mount --bind {d} {d} && mount -o remount,bind,ro {d} && "
                         for d in ro)
        cmd = ["unshare", "--mount", "sh", "-c", mounts + 'exec "$0" "$@"'] + cmd
    t = time.perf_counter()
    # cwd: not the checkout (``python -c`` puts the working directory first on sys.path)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return dict(error=last[:110], wall_s=wall)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = wall
    return res


def can_mount_ro():
    """Whether read-only bind mounts in a private mount namespace work here."""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        cmd = ["unshare", "--mount", "sh", "-c",
               f"mount --bind {d} {d} && mount -o remount,bind,ro {d} && ! touch {d}/x"]
        return subprocess.run(cmd, capture_output=True).returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, help="folder holding the bids_iron package to test")
    args = ap.parse_args()
    import bids_iron

    src = args.src.resolve() if args.src else None
    pkg = (src / "bids_iron") if src else Path(bids_iron.__file__).parent
    tmp = Path(tempfile.mkdtemp(prefix="bench-numba-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))}
    rows = []

    def case(label, env, ro=()):
        res = child(env, ro, src)
        rows.append((label, res))
        if "error" in res:
            print(f"{label:<44} FAILED: {res['error']}", flush=True)
        else:
            print(f"{label:<44} first {res['first_s']:6.2f} s  second {res['second_s']:6.3f} s"
                  f"  hits {res['hits']:2d} misses {res['misses']:2d}  ({res['cache_dir']})",
                  flush=True)

    try:
        cache = tmp / "cache"
        env = dict(base, NUMBA_CACHE_DIR=str(cache), HOME=str(tmp), TMPDIR=str(tmp))
        case("a. cold (empty NUMBA_CACHE_DIR)", env)
        case("b. warm (2nd process, same dir)", env)
        case("b'. same, Fortran-ordered arrays", dict(env, BENCH_ORDER="F"))
        if not can_mount_ro():
            print("c., d. skipped: read-only bind mounts need root and unshare")
            return
        home, tdir = tmp / "home-ro", tmp / "tmp-c"
        home.mkdir()
        tdir.mkdir()
        env = dict(base, HOME=str(home), TMPDIR=str(tdir))
        case("c. ro package, ro HOME, no NUMBA_CACHE_DIR", env, ro=(pkg, home))
        case("c'. same, 2nd process", env, ro=(pkg, home))
        seed, home_d = tmp / "seed", tmp / "home-d"
        shutil.copytree(cache, seed)
        home_d.mkdir()
        env = dict(base, NUMBA_CACHE_DIR=str(seed), HOME=str(home_d), TMPDIR=str(tmp))
        case("d. ro package, ro prewarmed NUMBA_CACHE_DIR", env, ro=(pkg, seed))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    packages = {r["package"] for _, r in rows if "package" in r}
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, package {packages}")


if __name__ == "__main__":
    main()
