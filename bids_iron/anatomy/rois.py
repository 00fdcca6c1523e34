"""The ROI vocabulary of bids-iron and the mapping of atlas label names onto it.

ROI names are fixed (../shared/DESIGN.md): the deep gray matter nuclei of the iron studies,
reference regions and lesions. Each ROI exists per hemisphere (``left``/``right``; midline
structures have ``bilateral`` only). The native-space label map ``*_desc-iron_dseg.nii.gz``
uses the fixed indices of `NATIVE_LABELS`, so a given index means the same structure in every
session and every study.
"""

from __future__ import annotations

import re

#: Deep gray matter nuclei, in the order tables list them.
NUCLEI = ("caudate", "putamen", "globus_pallidus", "thalamus", "pulvinar",
          "substantia_nigra", "red_nucleus", "dentate_nucleus")
#: Reference regions (chi: CSF of the lateral ventricles; LFS: posterior internal capsule).
REFERENCES = ("csf", "internal_capsule", "white_matter")
#: Every ROI name a table may contain (``lesion`` only with lesion masks).
ROI_NAMES = NUCLEI + REFERENCES + ("lesion",)
HEMISPHERES = ("left", "right", "bilateral")


def _native_labels():
    labels = {}
    index = 1
    for roi in NUCLEI + REFERENCES:
        for hemi in ("left", "right"):
            labels[index] = (roi, hemi)
            index += 1
    labels[index] = ("lesion", "bilateral")
    index += 1
    for roi in NUCLEI + REFERENCES:  # for label maps that do not split hemispheres
        labels[index] = (roi, "bilateral")
        index += 1
    return labels


#: Native dseg index -> (roi, hemisphere); e.g. 1 -> ("caudate", "left"). Indices 1-22 are
#: the left/right ROIs, 23 is lesion, 24-34 the same ROIs unsplit (user label maps only).
NATIVE_LABELS = _native_labels()
#: (roi, hemisphere) -> native dseg index.
NATIVE_INDEX = {value: key for key, value in NATIVE_LABELS.items()}


def label_name(roi, hemisphere):
    """Name used in dseg TSVs: ``left_caudate``, ``right_putamen``, ``lesion``."""
    return roi if hemisphere == "bilateral" else f"{hemisphere}_{roi}"


def parse_label_name(name):
    """Split a user/atlas label name into ``(roi, hemisphere)`` when it is in the vocabulary.

    Accepts ``left_caudate``, ``caudate_left``, ``Left-Caudate``, ``lh_caudate``,
    ``caudate`` (bilateral) and so on, case-insensitively, with ``-``/``_``/space separators.
    Returns ``(name, None)`` for a name outside the vocabulary (kept as it is by callers).

    Examples
    --------
    >>> parse_label_name("Left-Globus-Pallidus")
    ('globus_pallidus', 'left')
    >>> parse_label_name("red_nucleus")
    ('red_nucleus', 'bilateral')
    >>> parse_label_name("hippocampus")
    ('hippocampus', None)
    """
    text = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    hemi = "bilateral"
    for prefix, value in (("left_", "left"), ("right_", "right"), ("lh_", "left"),
                          ("rh_", "right"), ("l_", "left"), ("r_", "right")):
        if text.startswith(prefix):
            text, hemi = text[len(prefix):], value
            break
    else:
        for suffix, value in (("_left", "left"), ("_right", "right"), ("_lh", "left"),
                              ("_rh", "right"), ("_l", "left"), ("_r", "right")):
            if text.endswith(suffix):
                text, hemi = text[: -len(suffix)], value
                break
    text = SYNONYMS.get(text, text)
    if text in ROI_NAMES:
        return text, hemi
    return str(name), None


#: Other spellings of vocabulary names (after lower-casing and ``_`` separators).
SYNONYMS = {
    "pallidum": "globus_pallidus", "gp": "globus_pallidus", "globus_pallidus_interna":
    "globus_pallidus", "globus_pallidus_externa": "globus_pallidus", "gpi": "globus_pallidus",
    "gpe": "globus_pallidus", "thalamus_proper": "thalamus", "sn": "substantia_nigra",
    "rn": "red_nucleus", "dentate": "dentate_nucleus", "dn": "dentate_nucleus",
    "lateral_ventricle": "csf", "ventricle": "csf", "cerebral_white_matter": "white_matter",
    "wm": "white_matter", "posterior_limb_internal_capsule": "internal_capsule",
    "plic": "internal_capsule", "caudate_nucleus": "caudate",
}

#: TemplateFlow atlas label name -> (roi, hemisphere), for the default atlases. Names not
#: listed are not used. MASSP20 (Alkemade et al. 2022): GPi and GPe together form the globus
#: pallidus; the lateral ventricles are the CSF reference. MIAL67ThalamicNuclei (Najdenovska
#: et al. 2018): "pulvinar" only (not the medial-centrolateral group). SUIT Diedrichsen2009:
#: the dentate nuclei.
ATLAS_NAME_MAP = {
    "MASSP20": {
        **{f"{side}-caudate": ("caudate", side) for side in ("left", "right")},
        **{f"{side}-putamen": ("putamen", side) for side in ("left", "right")},
        **{f"{side}-globus-pallidus-{part}": ("globus_pallidus", side)
           for side in ("left", "right") for part in ("interna", "externa")},
        **{f"{side}-thalamus": ("thalamus", side) for side in ("left", "right")},
        **{f"{side}-substantia-nigra": ("substantia_nigra", side) for side in ("left", "right")},
        **{f"{side}-red-nucleus": ("red_nucleus", side) for side in ("left", "right")},
        **{f"{side}-lateral-ventricle": ("csf", side) for side in ("left", "right")},
        **{f"{side}-internal-capsule": ("internal_capsule", side) for side in ("left", "right")},
    },
    "MIAL67ThalamicNuclei": {"thal-lh-pulvinar": ("pulvinar", "left"),
                             "thal-rh-pulvinar": ("pulvinar", "right")},
    "Diedrichsen2009": {"Left_Dentate": ("dentate_nucleus", "left"),
                        "Right_Dentate": ("dentate_nucleus", "right")},
}


def map_atlas_labels(atlas, table):
    """Atlas index -> native index for an atlas's ``(index, name)`` rows.

    ``atlas`` names an entry of `ATLAS_NAME_MAP`; for any other atlas (a user's), names are
    parsed with `parse_label_name` and names outside the vocabulary are skipped.

    Parameters
    ----------
    atlas : str
    table : iterable of (int, str)

    Returns
    -------
    dict of int -> int
    """
    known = ATLAS_NAME_MAP.get(atlas)
    mapping = {}
    for index, name in table:
        if known is not None:
            pair = known.get(str(name))
        else:
            roi, hemi = parse_label_name(name)
            pair = (roi, hemi) if hemi is not None else None
        if pair is not None:
            mapping[int(index)] = NATIVE_INDEX[pair]
    return mapping
