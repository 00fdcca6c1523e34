"""Find each session's multi-echo GRE echoes (and T1w/FLAIR) in a BIDS dataset with pybids."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

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


def _echo_key(f):
    echo = f.entities.get("echo")
    try:
        return int(echo)
    except (TypeError, ValueError):
        return 0


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


def open_layout(bids_dir):
    """Index ``bids_dir`` with pybids (no validation, no database written anywhere)."""
    import bids  # pybids; imported here because it is slow to import

    bids_dir = Path(bids_dir)
    if not (bids_dir / "dataset_description.json").is_file():
        raise InputError(f"{bids_dir}: not a BIDS dataset (no dataset_description.json); "
                         "point BIDS_DIR at the dataset's top folder")
    try:
        return bids.BIDSLayout(str(bids_dir), validate=False)
    except Exception as exc:  # pybids raises many types for a broken dataset
        raise InputError(f"{bids_dir}: pybids could not index the dataset ({exc}); "
                         "check dataset_description.json and the file names") from exc


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

    files = layout.get(subject=subjects, suffix=list(MEGRE_SUFFIXES), datatype="anat",
                       extension=list(NIFTI_EXTENSIONS), return_type="object")
    groups = defaultdict(list)
    for f in files:
        ent = f.entities
        if sessions_wanted is not None and ent.get("session") not in sessions_wanted:
            continue
        key = (ent["subject"], ent.get("session"), ent.get("acquisition"), ent.get("run"),
               ent["suffix"])
        groups[key].append(f)

    found = []
    for (sub, ses, acq, run, suffix), group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        by_part = defaultdict(list)
        for f in group:
            by_part[f.entities.get("part", "mag")].append(f)
        for part in by_part:
            by_part[part].sort(key=_echo_key)
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
            metadata=[layout.get_metadata(f.path) for f in (mag or by_part["real"])],
            phase_metadata=[layout.get_metadata(f.path) for f in by_part.get("phase", [])],
            imag_metadata=[layout.get_metadata(f.path) for f in by_part.get("imag", [])],
            t1w=_first_anat(layout, "T1w", sub, ses),
            flair=_first_anat(layout, "FLAIR", sub, ses),
        )
        found.append(item)

    if not found:
        where = f"participant(s) {', '.join(subjects)}" if participant_labels else "the dataset"
        raise InputError(f"{bids_dir}: no multi-echo GRE data (*_echo-<n>[_part-mag]_MEGRE.nii[.gz] "
                         f"or *_T2starw) in {where}; check the file names and --session-label")
    return found
