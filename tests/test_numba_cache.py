"""The numba kernels are compiled once and then loaded from the on-disk cache.

A fresh process compiles every kernel into an empty ``NUMBA_CACHE_DIR``; a second fresh
process, given that folder as a read-only cache (as in the container image), must load every
kernel from its copy (numba's ``dispatcher.stats``: hits, no misses), also for
Fortran-ordered inputs (as nibabel loads NIfTI data), which used to compile other signatures.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from bids_iron import _numba_cache

# the second process: the first one's folder, made to look read-only, must be copied into
# $XDG_CACHE_HOME/bids-iron/numba and every kernel loaded from there
SECOND = r"""
import json, os, sys
import bids_iron._numba_cache as nc
seed = os.environ["NUMBA_CACHE_DIR"]
writable = nc._writable
nc._writable = lambda path: os.path.abspath(path) != seed and writable(path)
import numpy as np
from bids_iron.maps.combine import estimate_field_map
from bids_iron.maps.unwrap import unwrap_laplacian
from bids_iron.maps import _romeo
x = np.linspace(-1, 1, 12)
X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
mask = np.asfortranarray(X ** 2 + Y ** 2 + Z ** 2 < 0.8)
te = np.array([0.004, 0.0085, 0.013])
f = 60 * X ** 2 + 40 * Y
ph = np.asfortranarray(np.angle(np.exp(1j * (2 * np.pi * f[..., None] * te + 0.7))),
                       np.float32)
mag = np.asfortranarray(np.ones(ph.shape), np.float32)
estimate_field_map(ph, mag, te, (2.0, 2.0, 2.0), mask=mask)
unwrap_laplacian(ph[..., 0], (2.0, 2.0, 2.0), mask=mask)
print(json.dumps(dict(stats=_romeo.cache_stats(), cache_dir=os.environ["NUMBA_CACHE_DIR"])))
"""


def _run(args, env, cwd):
    proc = subprocess.run([sys.executable] + args, env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_compiled_once_then_loaded_from_read_only_cache(tmp_path):
    cache, xdg = tmp_path / "numba", tmp_path / "xdg"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(NUMBA_CACHE_DIR=str(cache), XDG_CACHE_HOME=str(xdg))
    # 1. compile every kernel (python -m bids_iron._numba_cache, as the Dockerfile does)
    out = _run(["-m", "bids_iron._numba_cache"], env, tmp_path)
    assert "compiled" in out and "loaded" in out
    names = {p.name.split(".")[1].split("-")[0] for p in cache.rglob("_romeo.*.nbi")}
    assert {"_edge_bins", "_grow", "_offset_phasor", "_smooth_axis", "_offset_from_phasor",
            "_subtract_offset", "_temporal_unwrap_fit", "_wrapped_laplacian"} <= names
    # 2. a fresh process with other array layouts: everything from the (copied) cache
    res = json.loads(_run(["-c", SECOND], env, tmp_path).strip().splitlines()[-1])
    assert Path(res["cache_dir"]) == xdg / "bids-iron" / "numba"
    stats = res["stats"]
    assert stats["_edge_bins"][1] >= 1 and stats["_temporal_unwrap_fit"][1] >= 1
    misses = {name: s[2] for name, s in stats.items() if s[2]}
    assert not misses, f"compiled again instead of loaded from the cache: {misses}"
    assert all(n_sig == 1 for n_sig, _, _ in stats.values()), stats


def test_configure_keeps_writable_and_seeds_from_read_only(tmp_path, monkeypatch):
    seed = tmp_path / "seed" / "maps_abc"
    seed.mkdir(parents=True)
    for name in ("_romeo._grow-1.py311.nbi", "_romeo._grow-1.py311.1.nbc"):
        (seed / name).write_bytes(b"x")
    # a writable NUMBA_CACHE_DIR the user set is kept as it is
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "seed"), "XDG_CACHE_HOME": str(tmp_path / "x")}
    assert _numba_cache.configure_numba_cache(env) == str(tmp_path / "seed")
    assert env["NUMBA_CACHE_DIR"] == str(tmp_path / "seed")
    # a read-only one is copied into $XDG_CACHE_HOME/bids-iron/numba, which replaces it
    writable = _numba_cache._writable
    monkeypatch.setattr(_numba_cache, "_writable",
                        lambda p: Path(p) != tmp_path / "seed" and writable(p))
    target = tmp_path / "x" / "bids-iron" / "numba"
    assert _numba_cache.configure_numba_cache(env) == str(target)
    assert env["NUMBA_CACHE_DIR"] == str(target)
    assert sorted(p.name for p in (target / "maps_abc").iterdir()) == [
        "_romeo._grow-1.py311.1.nbc", "_romeo._grow-1.py311.nbi"]
    # an index numba has extended since (newer than the seed's) is not overwritten
    (target / "maps_abc" / "_romeo._grow-1.py311.nbi").write_bytes(b"newer")
    _numba_cache.configure_numba_cache(dict(env, NUMBA_CACHE_DIR=str(tmp_path / "seed")))
    assert (target / "maps_abc" / "_romeo._grow-1.py311.nbi").read_bytes() == b"newer"
