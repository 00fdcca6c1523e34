"""Read one session's echoes into arrays, with the metadata checks of a careful user.

Every problem raises `InputError` with one line that names the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError

#: An EchoTime above this (s) is surely in milliseconds.
MAX_ECHO_TIME_S = 0.5


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
    phase: np.ndarray | None = None
    phase_is_radians: bool = False
    header: object = None


def _load_volume(path: Path, reference=None):
    """Load one 3-D echo as float32, checking readability, shape, affine and values."""
    name = path.name
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
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3-D image per echo, got shape {data.shape}; "
                         "split multi-echo 4-D files into one file per echo (_echo-<n>)")
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
    return data, img


def _echo_time(path: Path, meta: dict) -> float:
    te = meta.get("EchoTime")
    if te is None:
        raise InputError(f"{path}: no EchoTime in its JSON sidecar; add \"EchoTime\" in seconds")
    try:
        te = float(te)
    except (TypeError, ValueError):
        raise InputError(f"{path}: EchoTime {te!r} is not a number; give it in seconds") from None
    if not te > 0:
        raise InputError(f"{path}: EchoTime {te} must be > 0 (seconds)")
    if te > MAX_ECHO_TIME_S:
        raise InputError(f"{path}: EchoTime {te} looks like milliseconds; BIDS wants seconds "
                         f"(e.g. {te / 1000:g})")
    return te


def _field_strength(inputs, b0_override):
    if b0_override is not None:
        return float(b0_override)
    values = {m.get("MagneticFieldStrength") for m in inputs.metadata} - {None}
    if len(values) > 1:
        raise InputError(f"{inputs.magnitude[0]}: echoes disagree on MagneticFieldStrength "
                         f"({sorted(values)}); fix the sidecars or pass --b0")
    if not values:
        return None
    value = float(values.pop())
    if not 0 < value < 20:
        raise InputError(f"{inputs.magnitude[0]}: MagneticFieldStrength {value} is not in tesla; "
                         "fix the sidecar or pass --b0")
    return value


def load_session(inputs, b0_override=None, load_phase=True):
    """Load and check a `SessionInputs` (from `find_sessions`) into a `MegreData`.

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
        Missing EchoTime, echo count mismatch between magnitude and phase, different grids,
        fewer than 2 echoes, non-finite values, empty or unreadable files.
    """
    complex_input = not inputs.magnitude and inputs.real
    mag_paths = inputs.real if complex_input else inputs.magnitude
    first = mag_paths[0]
    if len(mag_paths) < 2:
        raise InputError(f"{first}: only 1 echo found; R2* needs at least 2 echoes "
                         "(files *_echo-<n>_part-mag_MEGRE.nii[.gz])")
    tes = [_echo_time(p, m) for p, m in zip(mag_paths, inputs.metadata)]
    if len(set(tes)) != len(tes):
        raise InputError(f"{first}: two echoes share one EchoTime ({sorted(tes)}); "
                         "fix the EchoTime values in the sidecars")
    order = np.argsort(tes)

    volumes, reference, img = [], None, None
    for i in order:
        data, img_i = _load_volume(mag_paths[i], reference)
        if reference is None:
            reference, img = (mag_paths[i], data.shape, img_i.affine), img_i
        volumes.append(data)
    magnitude = np.stack(volumes, axis=-1)
    del volumes
    sources = [mag_paths[i] for i in order]

    phase, phase_is_radians = None, False
    if load_phase and complex_input:
        if len(inputs.imag) != len(inputs.real):
            raise InputError(f"{inputs.imag[0] if inputs.imag else first}: {len(inputs.imag)} "
                             f"imaginary echoes for {len(inputs.real)} real ones; provide both for every echo")
        imag = np.stack([_load_volume(inputs.imag[i], reference)[0] for i in order], axis=-1)
        phase = np.arctan2(imag, magnitude).astype(np.float32)
        magnitude = np.hypot(magnitude, imag).astype(np.float32)
        phase_is_radians = True
        sources += [inputs.imag[i] for i in order]
    elif load_phase and inputs.phase:
        if len(inputs.phase) != len(mag_paths):
            raise InputError(f"{inputs.phase[0]}: {len(inputs.phase)} phase echoes for "
                             f"{len(mag_paths)} magnitude echoes; every echo needs both "
                             "(_part-mag and _part-phase)")
        phase_tes = [_echo_time(p, m) for p, m in zip(inputs.phase, inputs.phase_metadata)]
        for p, t in zip(inputs.phase, phase_tes):
            if not np.isclose(t, tes, rtol=0, atol=1e-6).any():
                raise InputError(f"{p}: EchoTime {t} matches no magnitude echo; the phase and "
                                 "magnitude sidecars must give the same echo times")
        phase_order = np.argsort(phase_tes)
        phase = np.stack([_load_volume(inputs.phase[i], reference)[0] for i in phase_order],
                         axis=-1)
        sources += [inputs.phase[i] for i in phase_order]
        units = {m.get("Units") for m in inputs.phase_metadata} - {None}
        phase_is_radians = units == {"rad"} and float(np.abs(phase).max()) <= np.pi + 1e-3

    manufacturer = inputs.metadata[0].get("Manufacturer")
    return MegreData(magnitude=magnitude, te=np.asarray(tes, float)[order], affine=img.affine,
                     voxel_size=tuple(float(v) for v in img.header.get_zooms()[:3]),
                     b0=_field_strength(inputs, b0_override), manufacturer=manufacturer,
                     sources=sources, phase=phase, phase_is_radians=phase_is_radians,
                     header=img.header)
