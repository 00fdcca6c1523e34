"""Find each session's multi-echo GRE echoes (and T1w/FLAIR) in a BIDS dataset with pybids."""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .checks import echo_number_from_name
from .derivatives import sidecar_path

LOGGER = logging.getLogger("bids_iron")

#: BIDS suffixes that carry multi-echo gradient-echo data.
MEGRE_SUFFIXES = ("MEGRE", "T2starw")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")


@dataclass
class SessionInputs:
    """The input files of one multi-echo GRE acquisition (one session, acq and run).

    Files are sorted by echo number here; the loader re-sorts by EchoTime after reading the
    sidecars and refuses inconsistent echo numbering.
    """

    subject: str
    session: str | None
    magnitude: list[Path]
    phase: list[Path] = field(default_factory=list)
    real: list[Path] = field(default_factory=list)
    imag: list[Path] = field(default_factory=list)
    metadata: list[dict] = field(default_factory=list)  # one per magnitude echo
    phase_metadata: list[dict] = field(default_factory=list)
    imag_metadata: list[dict] = field(default_factory=list)
    suffix: str = "MEGRE"
    acquisition: str | None = None
    run: str | None = None
    t1w: Path | None = None
    flair: Path | None = None
    #: Sidecars of the echoes that are not valid JSON (path -> parser message): the loader
    #: refuses the session with one line naming them (the others run).
    broken: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Human-readable identifier, e.g. ``sub-01_ses-1`` (also the output file prefix)."""
        parts = [f"sub-{self.subject}"]
        if self.session:
            parts.append(f"ses-{self.session}")
        if self.acquisition:
            parts.append(f"acq-{self.acquisition}")
        if self.run:
            parts.append(f"run-{self.run}")
        return "_".join(parts)

    @property
    def files(self) -> list[Path]:
        """Every input image of the session (echoes, T1w, FLAIR), for the completion record."""
        return [*self.magnitude, *self.phase, *self.real, *self.imag,
                *(p for p in (self.t1w, self.flair) if p is not None)]

    @property
    def has_phase(self) -> bool:
        return bool(self.phase) or bool(self.real and self.imag)


#: dcm2niix's multi-echo names: ``<name>_MEGRE_e<n>[_ph|_real|_imaginary].nii[.gz]``.
_DCM2NIIX = re.compile(r"_(MEGRE|T2starw)_e(\d+)(_ph|_real|_imaginary)?\.nii(\.gz)?$")
_DCM2NIIX_PARTS = {None: "mag", "_ph": "phase", "_real": "real", "_imaginary": "imag"}


def _read_sidecar(path, broken):
    """The JSON sidecar of an image as a dict ({} when it has none or it is broken: the
    loader refuses a broken one by name)."""
    side = sidecar_path(path)
    if side in broken or not side.exists():
        return {}
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        broken[side] = str(exc)
        return {}


def _echo_key(f):
    echo = f.entities.get("echo")
    try:
        return int(echo)
    except (TypeError, ValueError):
        return echo_number_from_name(f.path) or 0


def _first_anat(layout, suffix, subject, session):
    query = dict(subject=subject, suffix=suffix, extension=list(NIFTI_EXTENSIONS),
                 datatype="anat", return_type="object")
    query["session"] = session if session else None
    found = layout.get(**query)
    if not found:
        return None
    # prefer files without acq/rec/ce entities, then the first run
    found.sort(key=lambda f: (len(f.entities), f.path))
    return Path(found[0].path)


#: Top-level folders pybids does not index (and `unreadable_json` does not read).
_NOT_INDEXED = ("code", "models", "sourcedata", "stimuli", "derivatives")


def unreadable_json(bids_dir):
    """``{path: message}`` of the dataset's JSON files that do not parse (hidden folders and
    `_NOT_INDEXED` left out)."""
    bids_dir = Path(bids_dir)
    broken = {}
    for folder, dirs, files in os.walk(bids_dir):
        top = Path(folder) == bids_dir
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (top and d in _NOT_INDEXED))
        for name in sorted(files):
            if name.endswith(".json") and not name.startswith("."):
                path = Path(folder) / name
                try:
                    json.loads(path.read_text(encoding="utf-8"))
                except (ValueError, OSError) as exc:
                    broken[path] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return broken


def open_layout(bids_dir):
    """Index ``bids_dir`` with pybids (no validation, no database written anywhere).

    A JSON file that does not parse stops pybids' indexing; it is then left out of the
    index (one warning listing such files) so that sessions which do not need it run; the
    layout's ``broken`` attribute maps each one to the parser's message (sessions whose echo
    sidecars are among them are refused by the loader).
    """
    import bids  # pybids; imported here because it is slow to import

    bids_dir = Path(bids_dir)
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise InputError(f"{bids_dir}: not a BIDS dataset (no dataset_description.json); "
                         "point BIDS_DIR at the dataset's top folder")
    try:
        json.loads(description.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise InputError(f"{description}: not valid JSON ({exc}); fix it") from None
    try:
        layout = bids.BIDSLayout(str(bids_dir), validate=False)
        layout.broken = {}
        return layout
    except Exception as exc:  # pybids raises many types for a broken dataset
        first_error = exc
    broken = unreadable_json(bids_dir)
    if broken:
        from bids.layout import BIDSLayoutIndexer
        from bids.layout.validation import DEFAULT_LOCATIONS_TO_IGNORE

        shown = ", ".join(f"{p.relative_to(bids_dir)} ({m})" for p, m in
                          list(broken.items())[:3])
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        LOGGER.warning("%d JSON file(s) of %s are not valid JSON and are left out: "
                       "%s%s; fix them (sessions that need them fail, the others run)",
                       len(broken), bids_dir, shown, more)
        ignore = [*DEFAULT_LOCATIONS_TO_IGNORE,
                  *(re.compile("^/" + re.escape(p.relative_to(bids_dir).as_posix()) + "$")
                    for p in broken)]
        try:
            layout = bids.BIDSLayout(str(bids_dir), validate=False,
                                     indexer=BIDSLayoutIndexer(validate=False, ignore=ignore))
            layout.broken = broken
            return layout
        except Exception as exc:
            first_error = exc
    raise InputError(f"{bids_dir}: pybids could not index the dataset ({first_error}); "
                     "check the file names and the JSON sidecars") from first_error


def find_sessions(bids_dir, participant_labels=None, session_labels=None, layout=None):
    """Return one `SessionInputs` per multi-echo GRE acquisition in the dataset.

    Parameters
    ----------
    bids_dir : path
        Top folder of the BIDS dataset.
    participant_labels, session_labels : list of str, optional
        Restrict to these labels (with or without the ``sub-``/``ses-`` prefix).

    Raises
    ------
    InputError
        When a requested participant does not exist or nothing MEGRE-like is found.
    """
    layout = layout or open_layout(bids_dir)
    if not hasattr(layout, "broken"):
        layout.broken = {}
    subjects = layout.get_subjects()
    if participant_labels:
        wanted = [p[4:] if p.startswith("sub-") else p for p in participant_labels]
        missing = sorted(set(wanted) - set(subjects))
        if missing:
            raise InputError(f"{bids_dir}: no participant(s) {', '.join(missing)} "
                             f"(found: {', '.join(subjects) or 'none'}); fix --participant-label")
        subjects = wanted
    sessions_wanted = None
    if session_labels:
        sessions_wanted = {s[4:] if s.startswith("ses-") else s for s in session_labels}

    files = layout.get(subject=subjects, datatype="anat", extension=list(NIFTI_EXTENSIONS),
                       return_type="object")
    groups = defaultdict(list)
    metadata = {}  # path -> sidecar read directly (dcm2niix names, which pybids mismatches)
    for f in files:
        ent = dict(f.entities)
        dcm = _DCM2NIIX.search(f.filename)
        if dcm:  # *_MEGRE_e<n>[_ph|_real|_imaginary].nii[.gz] as dcm2niix writes them
            ent["suffix"], ent["part"] = dcm.group(1), _DCM2NIIX_PARTS[dcm.group(3)]
            metadata[f.path] = _read_sidecar(Path(f.path), layout.broken)
        elif ent.get("suffix") not in MEGRE_SUFFIXES:
            continue
        if sessions_wanted is not None and ent.get("session") not in sessions_wanted:
            continue
        key = (ent["subject"], ent.get("session"), ent.get("acquisition"), ent.get("run"),
               ent["suffix"])
        groups[key].append((f, ent))

    def meta(f):
        return metadata[f.path] if f.path in metadata else layout.get_metadata(f.path)

    found = []
    for (sub, ses, acq, run, suffix), group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        by_part = defaultdict(list)
        for f, ent in group:
            by_part[ent.get("part", "mag")].append(f)
        for part in by_part:
            by_part[part].sort(key=_echo_key)
        group = [f for f, _ in group]
        mag = by_part.get("mag", [])
        if not mag:
            if by_part.get("real") and by_part.get("imag"):
                mag = []
            else:
                LOGGER.warning("sub-%s%s: %s files found but no magnitude (part-mag); skipped",
                               sub, f" ses-{ses}" if ses else "", suffix)
                continue
        item = SessionInputs(
            subject=sub, session=ses, suffix=suffix, acquisition=acq,
            run=str(run) if run is not None else None,
            magnitude=[Path(f.path) for f in mag],
            phase=[Path(f.path) for f in by_part.get("phase", [])],
            real=[Path(f.path) for f in by_part.get("real", [])],
            imag=[Path(f.path) for f in by_part.get("imag", [])],
            metadata=[meta(f) for f in (mag or by_part["real"])],
            phase_metadata=[meta(f) for f in by_part.get("phase", [])],
            imag_metadata=[meta(f) for f in by_part.get("imag", [])],
            t1w=_first_anat(layout, "T1w", sub, ses),
            flair=_first_anat(layout, "FLAIR", sub, ses),
        )
        broken = layout.broken
        item.broken = {sidecar: broken[sidecar] for sidecar in
                       (sidecar_path(f.path) for f in group) if sidecar in broken}
        found.append(item)

    if not found:
        where = f"participant(s) {', '.join(subjects)}" if participant_labels else "the dataset"
        raise InputError(f"{bids_dir}: no multi-echo GRE data (*_echo-<n>[_part-mag]_MEGRE.nii[.gz], "
                         f"dcm2niix's *_MEGRE_e<n>[_ph].nii[.gz] or *_T2starw) in {where}; "
                         "check the file names and --session-label")
    return found
