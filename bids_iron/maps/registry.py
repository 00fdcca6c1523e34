"""One record per method of each family of `bids_iron.maps`: the single place a method is named.

A family is a step with interchangeable algorithms: ``r2star`` (decay fit), ``unwrap``
(spatial phase unwrapping of the first echo), ``background`` (background field removal) and
``dipole`` (dipole inversion). Each `Method` record holds the function, the extra inputs the
method needs beyond its family's common arguments (``magnitude``: root-mean-square
magnitude over echoes; ``b0_dir``: B0 direction in voxel axes), the words that go into the
sidecars and the report's methods paragraph (algorithm and reference) and one line for the
command line's ``--help``. The CLI's choices, the sidecars' ``EstimationAlgorithm`` /
``EstimationReference``, the methods paragraph and the dispatchers
(`bids_iron.maps.dipole.invert_dipole`, `bids_iron.maps.background.remove_background`) all
read from here, so adding a method is one function plus one `register` call.

Examples
--------
>>> from bids_iron.maps import registry
>>> registry.names("background")
('vsharp', 'resharp', 'pdf', 'lbv', 'ismv')
>>> registry.get("dipole", "medi").needs
('magnitude',)
>>> registry.default("dipole").name
'tfi_admm'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

#: The families and what their functions take (the common arguments every method receives).
FAMILIES = {
    "r2star": "fit_r2star(magnitude, te, method=...) -> R2starFit",
    "unwrap": "(wrapped, mask, te, magnitude, voxel_size) -> unwrapped first echo (radians)",
    "background": "(field, mask, voxel_size, **needs) -> BackgroundResult (local field, mask)",
    "dipole": "(local_field_ppm, mask, voxel_size, b0_dir, **needs) -> DipoleInversionResult "
              "(a method with field='total' takes the total field instead)",
}

#: Extra inputs a method may need, with their meaning (what the stage must supply).
NEEDS = {
    "magnitude": "root-mean-square magnitude over echoes (arbitrary units), shape (X, Y, Z)",
    "b0_dir": "unit B0 direction in voxel axes (from the affine), 3 floats",
    "phase_scale": "phase per field, rad/ppm: 2 pi x gamma B0 x the echoes' mean TE",
    "noise_sd": "standard error of the field from the echo fit, ppm, shape (X, Y, Z)",
}


@dataclass(frozen=True)
class Method:
    """One algorithm of one family.

    Attributes
    ----------
    family, name : str
        E.g. ``("dipole", "tv_admm")``; ``name`` is the CLI choice and the sidecar's method.
    function : callable
        The pure function that runs it (see `FAMILIES` for each family's signature).
    summary : str
        A few words for ``--help``.
    algorithm, reference : str
        ``EstimationAlgorithm`` and ``EstimationReference`` of the sidecars (and the methods
        paragraph).
    needs : tuple of str
        Extra keyword inputs (keys of `NEEDS`) the function takes.
    field : str
        Dipole family only: ``"local"`` (default) if the function inverts the local field
        in the background-removal mask, ``"total"`` if it takes the TOTAL field (ppm) in
        the brain mask and does its own background removal (total field inversion, ``tfi``).
    """

    family: str
    name: str
    function: Callable
    summary: str
    algorithm: str
    reference: str
    needs: tuple = ()
    field: str = "local"


_REGISTRY: dict = {family: {} for family in FAMILIES}
_DEFAULTS: dict = {}


def register(method, default=False):
    """Add ``method`` (a `Method`) to its family; ``default=True`` makes it the default."""
    if method.family not in _REGISTRY:
        raise ValueError(f"unknown method family {method.family!r}; one of {list(FAMILIES)}")
    if method.field not in ("local", "total") or (method.field == "total"
                                                  and method.family != "dipole"):
        raise ValueError(f"{method.name}: field must be 'local' (or 'total' for a dipole "
                         f"method), got {method.field!r}")
    unknown = set(method.needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"{method.name}: unknown needs {sorted(unknown)}; one of {list(NEEDS)}")
    _REGISTRY[method.family][method.name] = method
    if default:
        _DEFAULTS[method.family] = method.name
    return method


def _family(family):
    _load()
    try:
        return _REGISTRY[family]
    except KeyError:
        raise ValueError(f"unknown method family {family!r}; one of {list(FAMILIES)}") from None


def names(family):
    """The method names of ``family`` in registration order (the CLI's choices)."""
    return tuple(_family(family))


def methods(family):
    """The `Method` records of ``family``."""
    return tuple(_family(family).values())


def get(family, name, argument="method"):
    """The `Method` called ``name``; otherwise ValueError naming ``argument`` and the
    choices."""
    records = _family(family)
    if name not in records:
        raise ValueError(f"{argument} must be one of {tuple(records)}, got {name!r}")
    return records[name]


def default(family):
    """The family's default `Method` (chosen by measurement; see each module)."""
    _family(family)
    return _REGISTRY[family][_DEFAULTS[family]]


def texts(family):
    """``{name: (algorithm, reference)}`` of ``family`` (sidecars, methods paragraph)."""
    return {m.name: (m.algorithm, m.reference) for m in methods(family)}


def extra_inputs(method, available):
    """The keyword arguments ``method`` needs, taken from ``available`` ({need: value or
    zero-argument callable}); callables are only called when needed (e.g. the RSS magnitude).
    """
    out = {}
    for need in method.needs:
        if need not in available:
            raise ValueError(f"{method.family} method {method.name!r} needs {need!r} "
                             f"({NEEDS[need]})")
        value = available[need]
        out[need] = value() if callable(value) else value
    return out


_LOADED = False


def _load():
    """Import the family modules (they register their methods at import)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from . import _methods  # noqa: F401
