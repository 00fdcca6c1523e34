"""ROIs from the user's own segmentations: a BIDS-derivatives folder of label maps
(``--roi-dseg``) or FreeSurfer's ``aseg.mgz`` (``--freesurfer-dir``).

This module finds the files and turns labels into ``{(roi, hemisphere): bool mask}`` on the
label map's own grid; bringing them onto the MEGRE grid (through the T1w or FLAIR
registration) is the workflow's job.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .rois import parse_label_name

#: Spaces a user label map may be in: the MEGRE grid (no ``space`` entity or
#: ``space-MEGRE``), the session's T1w or its FLAIR.
USER_SPACES = ("MEGRE", "T1w", "FLAIR")

#: FreeSurfer aseg label -> (roi, hemisphere) (FreeSurferColorLUT numbering).
ASEG_LABELS = {
    11: ("caudate", "left"), 50: ("caudate", "right"),
    12: ("putamen", "left"), 51: ("putamen", "right"),
    13: ("globus_pallidus", "left"), 52: ("globus_pallidus", "right"),
    10: ("thalamus", "left"), 49: ("thalamus", "right"),
    4: ("csf", "left"), 43: ("csf", "right"),
}


@dataclass
class UserLabels:
    """A user label map and what its labels mean."""

    path: Path
    space: str  # one of USER_SPACES
    source: str  # "user" or "freesurfer"
    image: object  # nibabel image
    names: dict = field(default_factory=dict)  # label index -> (roi, hemisphere)

    def masks(self):
        """``{(roi, hemisphere): bool mask}`` on the label map's grid; bilateral unions added.

        Names outside the vocabulary are kept as they are with hemisphere ``bilateral``.
        """
        data = np.asanyarray(self.image.dataobj)
        data = np.rint(data).astype(np.int64) if data.dtype.kind == "f" else data
        out = {}
        for index, key in self.names.items():
            mask = data == index
            if not mask.any():
                continue
            out[key] = out.get(key, np.zeros(mask.shape, bool)) | mask
        for (roi, hemi) in list(out):
            if hemi in ("left", "right"):
                both = out.get((roi, "left"), False) | out.get((roi, "right"), False)
                out.setdefault((roi, "bilateral"), np.asarray(both, bool))
        return out


def read_label_table(path):
    """``index -> name`` from a BIDS ``_dseg.tsv`` (columns ``index`` and ``name``)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the label table ({exc.strerror})") from None
    if not rows or "index" not in rows[0] or "name" not in rows[0]:
        raise InputError(f"{path}: a label table needs the tab-separated columns 'index' and "
                         "'name'")
    table = {}
    for row in rows:
        try:
            table[int(row["index"])] = row["name"].strip()
        except (TypeError, ValueError):
            raise InputError(f"{path}: index {row.get('index')!r} is not an integer") from None
    return table


def label_meanings(table):
    """``index -> (roi, hemisphere)`` for a label table; unknown names kept as they are."""
    meanings = {}
    for index, name in table.items():
        if index == 0:
            continue
        roi, hemi = parse_label_name(name)
        meanings[index] = (roi, hemi if hemi is not None else "bilateral")
    return meanings


def find_user_dseg(roi_dseg_dir, subject, session=None):
    """The user label map of one session in a derivatives folder, or None.

    Pattern: ``sub-<l>[/ses-<s>]/anat/sub-<l>[_ses-<s>][_space-<space>]_dseg.nii[.gz]`` with
    space MEGRE (or none), T1w or FLAIR.

    Raises
    ------
    InputError
        If the session has several candidate maps or an unknown space.
    """
    folder = Path(roi_dseg_dir) / f"sub-{subject}"
    stem = f"sub-{subject}"
    if session:
        folder = folder / f"ses-{session}"
        stem += f"_ses-{session}"
    folder = folder / "anat"
    found = sorted(p for p in folder.glob(f"{stem}*_dseg.nii*")
                   if p.name.endswith((".nii", ".nii.gz")))
    if not found:
        return None
    if len(found) > 1:
        raise InputError(f"{folder}: {len(found)} label maps for one session "
                         f"({', '.join(p.name for p in found)}); keep one per session")
    path = found[0]
    entities = dict(part.split("-", 1) for part in path.name.split("_")[:-1] if "-" in part)
    space = entities.get("space", "MEGRE")
    if space not in USER_SPACES:
        raise InputError(f"{path}: space-{space} is not supported; use no space entity "
                         "(MEGRE grid), space-MEGRE, space-T1w or space-FLAIR")
    return path, space


def load_user_labels(roi_dseg_dir, subject, session=None, labels_tsv=None):
    """`UserLabels` for a session from ``--roi-dseg`` (and ``--roi-labels``), or None."""
    found = find_user_dseg(roi_dseg_dir, subject, session)
    if found is None:
        return None
    path, space = found
    tsv = Path(labels_tsv) if labels_tsv else path.with_name(
        path.name.split(".nii")[0] + ".tsv")
    if not tsv.exists():
        raise InputError(f"{path}: no label table {tsv.name} beside it; add one (index, name) "
                         "or pass --roi-labels TSV")
    table = read_label_table(tsv)
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:
        raise InputError(f"{path}: cannot be read as NIfTI ({exc})") from None
    present = {int(v) for v in np.unique(np.rint(data)) if v != 0}
    absent = sorted(present - set(table))
    if absent:
        raise InputError(f"{path}: labels {absent[:10]} are not in {tsv.name}; add them to the "
                         "label table")
    return UserLabels(path=path, space=space, source="user", image=image,
                      names=label_meanings(table))


def load_freesurfer_aseg(subjects_dir, subject, session=None):
    """`UserLabels` from ``SUBJECTS_DIR/<subject>/mri/aseg.mgz`` (space T1w), or None.

    The FreeSurfer subject folder may be named ``sub-<l>``, ``sub-<l>_ses-<s>`` (one per
    session) or ``<l>``; the first that exists is used.
    """
    candidates = []
    if session:
        candidates.append(f"sub-{subject}_ses-{session}")
    candidates += [f"sub-{subject}", str(subject)]
    for name in candidates:
        path = Path(subjects_dir) / name / "mri" / "aseg.mgz"
        if path.exists():
            try:
                image = nib.load(str(path))
            except Exception as exc:
                raise InputError(f"{path}: cannot be read ({exc})") from None
            return UserLabels(path=path, space="T1w", source="freesurfer", image=image,
                              names=dict(ASEG_LABELS))
    return None
