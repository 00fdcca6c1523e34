"""Metadata checks of one session's echoes, made before any image is read or written.

Pure functions of file names and sidecar dictionaries: each failure raises `InputError`
with one line naming the file(s) at fault and the fix.

* every echo has an ``EchoTime`` in seconds within `TE_RANGE_S` (0.5-150 ms: the range of a
  multi-echo gradient echo; a TE in milliseconds or ten times too large lands outside it);
* the echo number (``echo-<n>`` entity, dcm2niix's ``_e<n>`` or the sidecar's
  ``EchoNumber``; file name and sidecar must agree) orders the echoes as ``EchoTime`` does:
  strictly increasing TE with the echo number (two swapped sidecars fail here);
* phase (or imaginary) echo n has the TE of magnitude echo n (a typo in one phase sidecar
  fails here, instead of the phase being matched to another echo);
* ``MagneticFieldStrength`` agrees between all sidecars and is in tesla (`B0_RANGE_T`).

A 4-D file holding all echoes (``EchoTime`` a list, one per volume) gives one `Echo` per
volume, numbered 1..n in volume order.

Examples
--------
>>> from pathlib import Path
>>> echoes = echo_series([Path("s_echo-1_MEGRE.nii"), Path("s_echo-2_MEGRE.nii")],
...                      [{"EchoTime": 0.004}, {"EchoTime": 0.009}])
>>> [(e.number, e.te) for e in echoes]
[(1, 0.004), (2, 0.009)]
>>> echo_series([Path("s_echo-1_MEGRE.nii"), Path("s_echo-2_MEGRE.nii")],
...             [{"EchoTime": 0.009}, {"EchoTime": 0.004}])
Traceback (most recent call last):
...
bids_iron.errors.InputError: s_echo-1_MEGRE.nii, s_echo-2_MEGRE.nii: echo 1 has EchoTime 9 ms but echo 2 has 4 ms; the echo numbers and the EchoTime values disagree (swapped or mistyped sidecars?): fix the EchoTime in the sidecars
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

#: Plausible echo times of a multi-echo GRE (s): 0.5-150 ms.
TE_RANGE_S = (0.0005, 0.150)
#: Plausible main field strengths (T): from low-field scanners to the strongest MRI magnets.
B0_RANGE_T = (0.05, 21.2)
#: Phase and magnitude echo times must agree to within this (s).
TE_TOLERANCE_S = 1e-5

_ECHO_ENTITY = re.compile(r"_echo-(\d+)(?=[_.])")
_DCM2NIIX_ECHO = re.compile(r"_e(\d+)(?=[_.])")


@dataclass(frozen=True)
class Echo:
    """One echo: its file, echo time (s), number (1-based) and volume (4-D files)."""

    path: Path
    te: float
    number: int | None
    volume: int | None = None  # index on the 4th axis of a 4-D file; None for a 3-D file

    @property
    def name(self):
        return self.path.name if self.volume is None else f"{self.path.name}[{self.volume}]"


def _ms(seconds):
    return f"{seconds * 1e3:g} ms"


def echo_number_from_name(path):
    """The echo number in a file name (``_echo-<n>`` or dcm2niix's ``_e<n>``), else None."""
    name = Path(path).name
    match = _ECHO_ENTITY.search(name) or _DCM2NIIX_ECHO.search(name)
    return int(match.group(1)) if match else None


def _number(path, meta):
    """Echo number of a 3-D echo file: file name and ``EchoNumber`` must agree."""
    from_name = echo_number_from_name(path)
    from_sidecar = meta.get("EchoNumber")
    if from_sidecar is not None:
        try:
            from_sidecar = int(from_sidecar)
        except (TypeError, ValueError):
            raise InputError(f"{path}: EchoNumber {from_sidecar!r} in its sidecar is not an "
                             "integer; fix or remove it") from None
        if from_name is not None and from_name != from_sidecar:
            raise InputError(f"{path}: echo {from_name} in the file name but EchoNumber "
                             f"{from_sidecar} in its sidecar; rename the file or fix the "
                             "sidecar (swapped sidecars?)")
    return from_name if from_name is not None else from_sidecar


def _one_echo_time(path, value):
    """A single EchoTime in seconds within `TE_RANGE_S`, or `InputError`."""
    if value is None:
        raise InputError(f"{path}: no EchoTime in its JSON sidecar; add \"EchoTime\" in seconds")
    try:
        te = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: EchoTime {value!r} is not a number; give it in "
                         "seconds") from None
    if not te > 0:
        raise InputError(f"{path}: EchoTime {te} must be > 0 (seconds)")
    lo, hi = TE_RANGE_S
    if te > 0.5:
        raise InputError(f"{path}: EchoTime {te:g} looks like milliseconds; BIDS wants seconds "
                         f"(e.g. {te / 1000:g})")
    if not lo <= te <= hi:
        raise InputError(f"{path}: EchoTime {te:g} s ({_ms(te)}) is outside the {_ms(lo)}-"
                         f"{_ms(hi)} of a multi-echo gradient echo; fix the sidecar (seconds, "
                         "as BIDS wants; a factor of 10 off?)")
    return te


def echo_series(paths, metas):
    """The `Echo` list of one part (magnitude, phase, real or imaginary), sorted by echo
    number, with each echo time checked and the TE order checked against the numbering.

    A file whose ``EchoTime`` is a list holds all echoes on its 4th axis (numbered 1..n).
    Files without an echo number (no entity, no ``EchoNumber``) are ordered by TE.
    """
    echoes = []
    for path, meta in zip(paths, metas):
        path = Path(path)
        value = meta.get("EchoTime")
        if isinstance(value, (list, tuple)):
            if len(paths) > 1:
                raise InputError(f"{path}: EchoTime is a list (a 4-D file of all echoes) but "
                                 f"{len(paths)} files were found for this part; give either "
                                 "one 4-D file or one file per echo")
            echoes += [Echo(path, _one_echo_time(path, v), i + 1, i)
                       for i, v in enumerate(value)]
        else:
            echoes.append(Echo(path, _one_echo_time(path, value), _number(path, meta)))
    numbered = [e for e in echoes if e.number is not None]
    if numbered and len(numbered) < len(echoes):
        unnumbered = next(e for e in echoes if e.number is None)
        raise InputError(f"{unnumbered.path}: no echo number (no _echo-<n> in the name, no "
                         "EchoNumber in the sidecar) while other echoes have one; name every "
                         "echo file *_echo-<n>_*")
    if numbered:
        echoes.sort(key=lambda e: e.number)
        for a, b in zip(echoes, echoes[1:]):
            if a.number == b.number:
                raise InputError(f"{a.name}, {b.name}: both are echo {a.number}; give each "
                                 "echo its own number (_echo-<n>, EchoNumber)")
    else:
        echoes.sort(key=lambda e: e.te)
    for a, b in zip(echoes, echoes[1:]):
        if b.te == a.te:
            raise InputError(f"{a.name}, {b.name}: two echoes share EchoTime {_ms(a.te)}; fix "
                             "the EchoTime values in the sidecars")
        if b.te < a.te:
            raise InputError(f"{a.name}, {b.name}: echo {a.number} has EchoTime {_ms(a.te)} but "
                             f"echo {b.number} has {_ms(b.te)}; the echo numbers and the "
                             "EchoTime values disagree (swapped or mistyped sidecars?): fix "
                             "the EchoTime in the sidecars")
    return echoes


def check_matching_echoes(reference, other, part):
    """``other`` (phase or imaginary echoes) must have the echoes of ``reference``
    (magnitude or real), number for number and TE for TE."""
    if len(other) != len(reference):
        first = other[0].name if other else reference[0].name
        raise InputError(f"{first}: {len(other)} {part} echoes for {len(reference)} "
                         f"magnitude echoes; every echo needs both (_part-mag and _part-{part})")
    for ref, echo in zip(reference, other):
        if abs(ref.te - echo.te) > TE_TOLERANCE_S:
            number = f" {echo.number}" if echo.number is not None else ""
            raise InputError(f"{echo.name}: {part} echo{number} has EchoTime {_ms(echo.te)} "
                             f"but its magnitude {ref.name} has {_ms(ref.te)}; the phase and "
                             "magnitude sidecars must give the same echo times: fix the "
                             "mistyped one")


def field_strength(paths, metas, override=None):
    """The field strength (T) the sidecars agree on (``override``: the user's ``--b0``), or
    None when no sidecar gives one."""
    if override is not None:
        return float(override)
    found = {}
    for path, meta in zip(paths, metas):
        value = meta.get("MagneticFieldStrength")
        if value is not None:
            found.setdefault(value, Path(path))
    if len(found) > 1:
        named = ", ".join(f"{p.name}: {v}" for v, p in found.items())
        raise InputError(f"echoes disagree on MagneticFieldStrength ({named}); fix the "
                         "sidecars or pass --b0")
    if not found:
        return None
    value, path = next(iter(found.items()))
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: MagneticFieldStrength {value!r} is not a number; give it in "
                         "tesla or pass --b0") from None
    lo, hi = B0_RANGE_T
    if not lo <= value <= hi:
        raise InputError(f"{path}: MagneticFieldStrength {value:g} is not a field strength in "
                         f"tesla ({lo:g}-{hi:g}); fix the sidecar or pass --b0")
    return value
