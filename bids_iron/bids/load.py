"""Read one session's echoes into arrays, with the metadata checks of a careful user.

Every problem raises `InputError` with one line that names the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .checks import check_matching_echoes, echo_series, field_strength


@dataclass
class MegreData:
    """One multi-echo GRE acquisition in memory, echoes on the last axis, sorted by TE.

    ``phase`` is as stored (after the NIfTI scaling), NOT yet converted to radians: that is
    the phase stage's job (`bids_iron.maps.phase`). For real/imaginary input, ``phase`` is
    the angle in radians and ``phase_is_radians`` is True.
    """

    magnitude: np.ndarray  # float32 (x, y, z, n_echoes)
    te: np.ndarray  # s, float64 ascending
    affine: np.ndarray
    voxel_size: tuple
    b0: float | None  # T
    manufacturer: str | None
    sources: list = field(default_factory=list)  # input paths (for sidecar Sources)
    phase_sources: list = field(default_factory=list)  # the phase (or imaginary) files
    phase: np.ndarray | None = None
    phase_is_radians: bool = False
    header: object = None


def _read(path: Path):
    """A NIfTI image and its data as float32, or `InputError` naming the file."""
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: the file is empty (0 bytes); re-export it from the scanner data")
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj).astype(np.float32, copy=False)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot be read as NIfTI ({type(exc).__name__}: {exc}); "
                         "re-convert it (e.g. with dcm2niix)") from None
    return img, data


def _shape(path):
    """An image's shape from its header (() when unreadable: `_read` says why later)."""
    try:
        return tuple(nib.load(str(path)).shape)
    except Exception:
        return ()


def _check_volume(path: Path, data, img, reference=None):
    """Check one 3-D echo's values, and its grid against ``reference``."""
    name = path.name
    if data.size == 0:
        raise InputError(f"{path}: the image has no voxels; re-export it")
    if not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise InputError(f"{path}: {n_bad} non-finite (NaN/inf) voxel values; replace them "
                         "(e.g. by 0) or re-export the image")
    if not np.any(data):
        raise InputError(f"{path}: every voxel is 0 (an empty image); re-export it")
    if reference is not None:
        ref_path, ref_shape, ref_affine = reference
        if data.shape != ref_shape:
            raise InputError(f"{name}: shape {data.shape} differs from {ref_path.name} {ref_shape}; "
                             "all echoes must share one voxel grid")
        if not np.allclose(img.affine, ref_affine, atol=1e-3):
            raise InputError(f"{name}: affine differs from {ref_path.name}; all echoes must "
                             "share one voxel grid (re-export them together)")


def _load_echoes(echoes, reference=None):
    """Read `Echo` volumes (3-D files, or the volumes of one 4-D file) into an array with
    the echoes on the last axis; returns (array, reference, first image)."""
    volumes, first_img, cache = [], None, {}
    for echo in echoes:
        if echo.path not in cache:
            cache.clear()  # one file at a time in memory
            cache[echo.path] = _read(echo.path)
        img, data = cache[echo.path]
        if echo.volume is None:
            if data.ndim == 4 and data.shape[3] == 1:
                data = data[..., 0]
            if data.ndim != 3:
                raise InputError(f"{echo.path}: expected a 3-D image per echo, got shape "
                                 f"{data.shape}; for a 4-D file of all echoes give EchoTime "
                                 "as a list (one per volume) in its sidecar")
        else:
            n_te = sum(e.path == echo.path for e in echoes)
            if data.ndim != 4 or data.shape[3] != n_te:
                raise InputError(f"{echo.path}: its sidecar lists {n_te} EchoTime values but "
                                 f"the image has shape {data.shape}; give one EchoTime per "
                                 "volume on the 4th axis")
            data = data[..., echo.volume]
        _check_volume(echo.path, data, img, reference)
        if reference is None:
            reference, first_img = (echo.path, data.shape, img.affine), img
        volumes.append(data)
    cache.clear()
    return np.stack(volumes, axis=-1), reference, first_img


def _parts(inputs):
    """The session's parts as (name, paths, sidecars): the magnitude (or real) part first."""
    complex_input = not inputs.magnitude and bool(inputs.real)
    if complex_input:
        return [("real", inputs.real, inputs.metadata),
                ("imaginary", inputs.imag, inputs.imag_metadata)]
    return [("magnitude", inputs.magnitude, inputs.metadata),
            ("phase", inputs.phase, inputs.phase_metadata)]


def check_session_metadata(inputs, b0_override=None, load_phase=True):
    """Every metadata check of a session, before any image is read (`bids_iron.bids.checks`):
    returns (magnitude echoes, phase echoes or None, field strength or None)."""
    for path, message in getattr(inputs, "broken", {}).items():
        raise InputError(f"{path}: not valid JSON ({message}); fix the sidecar")
    (_, mag_paths, mag_meta), (part, other_paths, other_meta) = _parts(inputs)
    mag = echo_series(mag_paths, mag_meta)
    shape = _shape(mag[0].path) if len(mag) == 1 else ()
    if len(shape) == 4 and shape[3] > 1:
        n = shape[3]
        raise InputError(f"{mag[0].path}: {n} volumes but one EchoTime in its sidecar; for a "
                         f"4-D file of all echoes give EchoTime as a list of the {n} echo times")
    if len(mag) < 2:
        raise InputError(f"{mag_paths[0]}: only 1 echo found; R2* needs at least 2 echoes "
                         "(files *_echo-<n>_part-mag_MEGRE.nii[.gz], or one 4-D file with "
                         "EchoTime as a list)")
    other = None
    if part == "imaginary" and len(other_paths) != len(mag_paths):
        raise InputError(f"{other_paths[0] if other_paths else mag_paths[0]}: "
                         f"{len(other_paths)} imaginary echoes for {len(mag_paths)} real ones; "
                         "provide both for every echo")
    if (load_phase or part == "imaginary") and other_paths:
        other = echo_series(other_paths, other_meta or [m for m in mag_meta])
        check_matching_echoes(mag, other, part)
    b0 = field_strength([*mag_paths, *other_paths], [*mag_meta, *(other_meta or [])],
                        b0_override)
    return mag, other, b0


def load_session(inputs, b0_override=None, load_phase=True):
    """Load and check a `SessionInputs` (from `find_sessions`) into a `MegreData`.

    All metadata checks (`check_session_metadata`) come first, then each image is read and
    checked; nothing is written.

    Parameters
    ----------
    inputs : SessionInputs
    b0_override : float, optional
        Field strength (T) to use instead of the sidecars' MagneticFieldStrength.
    load_phase : bool
        Also read phase (or real/imaginary) echoes when present.

    Raises
    ------
    InputError
        Missing or implausible EchoTime, echo numbers against TE order, magnitude against
        phase TEs, echo count mismatch between magnitude and phase, different grids, fewer
        than 2 echoes, non-finite values, empty or unreadable files.
    """
    mag, other, b0 = check_session_metadata(inputs, b0_override, load_phase)
    magnitude, reference, img = _load_echoes(mag)
    sources = list(dict.fromkeys(e.path for e in mag))

    phase, phase_is_radians = None, False
    if other is not None and not inputs.magnitude:  # real/imaginary
        imag = _load_echoes(other, reference)[0]
        phase = np.arctan2(imag, magnitude).astype(np.float32)
        magnitude = np.hypot(magnitude, imag).astype(np.float32)
        phase_is_radians = True
        if not load_phase:  # the imaginary part made the magnitude; no phase wanted
            phase, phase_is_radians = None, False
    elif other is not None:
        phase = _load_echoes(other, reference)[0]
        units = {m.get("Units") for m in inputs.phase_metadata} - {None}
        phase_is_radians = units == {"rad"} and float(np.abs(phase).max()) <= np.pi + 1e-3

    phase_sources = [] if other is None else list(dict.fromkeys(e.path for e in other))
    manufacturer = inputs.metadata[0].get("Manufacturer")
    return MegreData(magnitude=magnitude, te=np.array([e.te for e in mag], float),
                     affine=img.affine,
                     voxel_size=tuple(float(v) for v in img.header.get_zooms()[:3]),
                     b0=b0, manufacturer=manufacturer,
                     sources=sources + phase_sources, phase_sources=phase_sources,
                     phase=phase, phase_is_radians=phase_is_radians,
                     header=img.header)
