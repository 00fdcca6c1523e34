"""Where numba keeps the compiled kernels of `bids_iron.maps._romeo` (private).

The kernels are compiled once (about 15-20 s) and cached on disk (``cache=True``), but numba
only uses a cache directory it can *write* to: without ``NUMBA_CACHE_DIR`` it tries the
package's ``__pycache__`` (read-only in a container or a system install) and then
``~/.cache/numba``, and if neither is writable the import fails ("cannot cache function ...:
no locator available"); a read-only ``NUMBA_CACHE_DIR``, such as a cache compiled into a
container image, is ignored altogether, so every process compiled again.

`configure_numba_cache` runs once, before numba is imported (at the top of ``_romeo``, the
only module that uses numba, so it covers the command, library use and spawned workers) and:

* keeps a writable ``NUMBA_CACHE_DIR`` the user set, or numba's default when the package's
  ``__pycache__`` is writable (a user or development install);
* otherwise points ``NUMBA_CACHE_DIR`` at ``$XDG_CACHE_HOME/bids-iron/numba`` (default
  ``~/.cache/bids-iron/numba``), or else a private temporary folder;
* if the ``NUMBA_CACHE_DIR`` it replaces exists but is read-only (the image's
  ``/opt/numba-cache``), copies its index and data files into the new folder first
  (a few MB, milliseconds), so the precompiled kernels load instead of being compiled.

``python -m bids_iron._numba_cache`` compiles every kernel (`warm_up`) into the chosen
folder; the Dockerfile runs it at build time.
"""

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

LOGGER = logging.getLogger("bids_iron")

#: the directory of the compiled module: numba's in-tree cache is its ``__pycache__``
_MAPS_DIR = Path(__file__).resolve().parent / "maps"


def _writable(path):
    """Whether ``path`` is (or can be created as) a directory we can write to (numba's test)."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _private_temp_dir():
    """A per-user cache folder under the temporary directory, ours alone.

    Cache files are pickles (loading them runs code), so a folder another user could have
    created or can write to is not used; a fresh ``mkdtemp`` is the fallback.
    """
    uid = os.getuid() if hasattr(os, "getuid") else None
    path = Path(tempfile.gettempdir()) / f"bids-iron-numba-{uid if uid is not None else 'user'}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.stat()
        if (uid is None or st.st_uid == uid) and not st.st_mode & 0o022 and _writable(path):
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="bids-iron-numba-"))


def _user_cache_dir(environ):
    """``$XDG_CACHE_HOME/bids-iron/numba`` (``~/.cache/...``) if writable, else a temp folder."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "bids-iron" / "numba"
    return path if _writable(path) else _private_temp_dir()


def _seed(source, target):
    """Copy numba's cache files from the read-only ``source`` into ``target``.

    Per function: its index (``.nbi``) and data files (``.nbc``) are copied when ``target``
    has no index for it, or an older one (an earlier image); copies keep the source's time
    stamp, so an index numba has since extended with further signatures is left alone. Each
    file is written under a temporary name and renamed, so concurrent workers are safe.
    """
    n = 0
    for index in Path(source).rglob("*.nbi"):
        rel = index.relative_to(source)
        dest = Path(target) / rel
        try:
            if dest.exists() and dest.stat().st_mtime >= index.stat().st_mtime:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            base = index.name[:-len(".nbi")]
            # data files first: the index must never name a data file that is not there yet
            for f in sorted(index.parent.glob(base + ".*.nbc")) + [index]:
                tmp = dest.parent / f".{f.name}.{os.getpid()}.tmp"
                shutil.copy2(f, tmp)
                os.replace(tmp, dest.parent / f.name)
            n += 1
        except OSError as exc:  # a partial seed only means more compiling
            LOGGER.debug("numba cache: could not copy %s: %s", index, exc)
    return n


def configure_numba_cache(environ=None):
    """Make numba cache its compiled kernels in a writable folder (call before numba's import).

    Parameters
    ----------
    environ : dict, optional
        The environment to read and update (default ``os.environ``, which spawned worker
        processes inherit).

    Returns
    -------
    str or None
        The cache folder now in ``NUMBA_CACHE_DIR``, or None where numba's default (the
        package's writable ``__pycache__``) is kept.
    """
    env = os.environ if environ is None else environ
    given = env.get("NUMBA_CACHE_DIR", "")
    if given and _writable(given):
        return given
    if not given and _writable(_MAPS_DIR / "__pycache__"):
        return None
    target = _user_cache_dir(env)
    if given and os.path.isdir(given):
        n = _seed(given, target)
        LOGGER.debug("numba cache: %s is read-only; %d precompiled kernels copied to %s",
                     given, n, target)
    env["NUMBA_CACHE_DIR"] = str(target)
    if environ is None and "numba.core.config" in sys.modules:
        # numba imported before us (by the user): it re-reads NUMBA_* variables on request
        from numba.core.config import reload_config

        reload_config()
    return str(target)


def warm_up():
    """Compile (or load) every numba kernel of `bids_iron.maps._romeo` on a tiny volume.

    The kernels take C-contiguous arrays of fixed dtypes only (their wrappers convert), so
    one call each produces the one signature every later call uses.

    Returns
    -------
    dict
        Per kernel: (compiled signatures, cache hits, cache misses).
    """
    import numpy as np

    from bids_iron.maps import _romeo as R

    rng = np.random.default_rng(0)
    shape = (6, 5, 4)
    phase = rng.uniform(-3, 3, shape + (3,)).astype(np.float32)
    mag = rng.uniform(0.5, 1, shape + (3,)).astype(np.float32)
    mask = np.ones(shape, bool)
    mask[0] = False
    te = np.array([0.004, 0.008, 0.012])
    wbin, seed = R.edge_bins(phase[..., 0], mask, mag[..., 0], phase[..., 1], 0.5, 1.0,
                             True, True)
    strides = np.array([shape[1] * shape[2], shape[2], 1], np.int64)
    R.grow_regions(phase[..., 0].ravel(), wbin.reshape(-1, 4), strides, seed)
    offset, re, im = R.offset_phasor(phase, mag, 0, phase[..., 1], 1.0, mask)
    re, im = R.gaussian_smooth_pair(re, im, (1.0, 1.0, 1.0))
    offset = R.offset_from_phasor(re, im)
    corrected = R.subtract_offset(phase, offset)
    out = np.zeros(phase.shape, np.float32)
    field, field_sd = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    R.temporal_unwrap_fit(corrected, corrected[..., 0], mag, te, mask, out, field, field_sd,
                          True, True, True)
    R.wrapped_laplacian(phase[..., 0], mask, np.ones(3))
    return R.cache_stats()


def main(argv=None):
    """``python -m bids_iron._numba_cache``: compile the kernels into the cache, report."""
    folder = configure_numba_cache()
    stats = warm_up()
    from numba.core.config import CACHE_DIR

    print(f"numba cache: {CACHE_DIR or folder or _MAPS_DIR / '__pycache__'}")
    for name, (n_sig, hits, misses) in sorted(stats.items()):
        print(f"  {name}: {n_sig} signature(s), {hits} loaded, {misses} compiled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
