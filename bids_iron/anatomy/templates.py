"""TemplateFlow templates and atlases, and the template-space ROI label maps built from them.

Default atlases (all from TemplateFlow):

* ``MNI152NLin2009cAsym`` T1w (``res-01``; ``res-02`` too when present, used to register at
  2 mm), the ``res-02`` T2w when present (optional second registration channel, paired with the
  last MEGRE echo: both show the iron-rich nuclei dark), its brain mask and white matter probability map (``label-WM_probseg``);
* MASSP20 (``res-01``; Alkemade et al. 2022): caudate, putamen, globus pallidus (interna +
  externa), thalamus, substantia nigra, red nucleus, lateral ventricles (CSF reference),
  internal capsule;
* MIAL67ThalamicNuclei (``res-01``; Najdenovska et al. 2018): the pulvinar;
* SUIT Diedrichsen2009 (the dentate nuclei). SUIT is its own space: its T1w is registered once
  to the MNI template and the transform cached (see `bids_iron.anatomy.registration`); the
  dentate labels then reach the subject through SUIT -> MNI -> subject.

Files are looked up directly at their TemplateFlow path first (no layout indexing: indexing a
full TemplateFlow home with pybids takes ~10 s); only a file that is not there is asked of
``templateflow.api.get``, which may download it. Offline, that fails with a one-line
`BidsIronError` naming TEMPLATEFLOW_HOME, the template and the file.

Derived reference regions (in template space, documented rules):

* **internal_capsule** = the posterior limb (Hammond's LFS reference): the voxels of MASSP20's
  internal capsule (one hemisphere at a time) that lie closer to the thalamus than to the
  caudate (the anterior limb separates caudate and lentiform nucleus, the posterior limb
  thalamus and lentiform; the genu is where both distances are equal) and not behind the
  posterior end of the globus pallidus (which drops the retrolenticular part).
* **white_matter** = template WM probability > 0.9, minus every MASSP20/MIAL67 structure
  dilated by 2 mm (nuclei, ventricles, capsule), split into hemispheres at world x = 0.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..errors import BidsIronError, InputError
from . import rois

__all__ = ["AtlasSource", "AtlasFiles", "fetch_atlas_files", "custom_atlas", "read_label_table",
           "build_template_labels", "posterior_limb", "r2star_template", "iron_template",
           "DEFAULT_TEMPLATE", "SUIT_TEMPLATE", "R2STAR_3T"]

DEFAULT_TEMPLATE = "MNI152NLin2009cAsym"
SUIT_TEMPLATE = "SUIT"
#: Probability above which template white matter is the white_matter reference.
WM_PROBABILITY = 0.9
#: Margin (mm) kept between the white_matter reference and any labelled structure.
WM_MARGIN_MM = 2.0


@dataclass
class AtlasSource:
    """One label map: its file, label table, space and mapping onto native indices.

    ``mapping`` maps atlas index -> `rois.NATIVE_INDEX` value; ``skipped`` lists label names
    of the table that are outside the ROI vocabulary (custom atlases only).
    """

    name: str
    space: str
    dseg: Path
    tsv: Path
    mapping: dict
    skipped: list = field(default_factory=list)


@dataclass
class AtlasFiles:
    """Paths of everything registration and label transfer need for one template."""

    template: str
    home: Path
    t1w: Path
    t1w_coarse: Path | None
    brain_mask: Path | None
    wm_probseg: Path | None
    atlases: list
    suit_t1w: Path | None = None
    t2w_coarse: Path | None = None

    def sources(self, space):
        """The `AtlasSource` entries in ``space``."""
        return [a for a in self.atlases if a.space == space]


def _home(templateflow_home):
    """Resolve TEMPLATEFLOW_HOME (argument > environment > templateflow default) and set it
    in the environment before templateflow is imported (it reads it at import)."""
    if templateflow_home is not None:
        os.environ["TEMPLATEFLOW_HOME"] = str(Path(templateflow_home).absolute())
    os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")
    os.environ.setdefault("TEMPLATEFLOW_USE_DATALAD", "0")
    home = os.environ.get("TEMPLATEFLOW_HOME")
    if home is None:
        from platformdirs import user_cache_dir
        home = user_cache_dir("templateflow")
        os.environ["TEMPLATEFLOW_HOME"] = home
    return Path(home).absolute()


def _tf_get(home, template, fname, **query):
    """Path of one TemplateFlow file: direct lookup, else ``templateflow`` get (may download)."""
    path = home / f"tpl-{template}" / fname
    if path.is_file() and path.stat().st_size > 0:
        return path
    try:
        import templateflow
        if Path(templateflow.conf.TF_HOME) == home:
            from templateflow import api
            got = api.get(template, **query)
        else:  # templateflow was imported earlier with another home
            from templateflow.client import TemplateFlowClient
            got = TemplateFlowClient(root=home, autoupdate=False).get(template, **query)
    except Exception:  # no network, S3 error, broken layout
        got = None
    if isinstance(got, (str, Path)) and Path(got).is_file() and Path(got).stat().st_size > 0:
        return Path(got)
    raise BidsIronError(
        f"TemplateFlow file {fname} not found in TEMPLATEFLOW_HOME={home} (template {template}; "
        "offline?); pre-fetch it with `python -c \"from templateflow import api; "
        f"api.get('{template}', {', '.join(f'{k}={v!r}' for k, v in query.items())})\"` "
        "on a machine with internet (all default files: python -m bids_iron.anatomy.prefetch), "
        "point --templateflow-home at a filled copy, or run with --no-anatomy (maps only)")


def _template_images(home, t, masks_required):
    """The template's 1 mm T1w (required), 2 mm T1w (optional), brain mask and WM probability
    (required for the default atlases, optional with a custom atlas)."""
    get_mask = _tf_get if masks_required else _optional
    t1w = _tf_get(home, t, f"tpl-{t}_res-01_T1w.nii.gz", resolution=1, suffix="T1w", desc=None)
    t1w2 = _optional(home, t, f"tpl-{t}_res-02_T1w.nii.gz", resolution=2, suffix="T1w", desc=None)
    mask = get_mask(home, t, f"tpl-{t}_res-01_desc-brain_mask.nii.gz", resolution=1,
                    desc="brain", suffix="mask")
    wm = get_mask(home, t, f"tpl-{t}_res-01_label-WM_probseg.nii.gz", resolution=1,
                  label="WM", suffix="probseg")
    return t1w, t1w2, mask, wm


def _optional(home, template, fname, **query):
    """An optional file: used when already in TEMPLATEFLOW_HOME (never downloaded)."""
    path = home / f"tpl-{template}" / fname
    return path if path.is_file() and path.stat().st_size > 0 else None


def read_label_table(tsv):
    """``[(index, name), ...]`` of a BIDS dseg TSV (columns ``index`` and ``name``).

    Raises
    ------
    InputError
        The file is missing or lacks the two columns.
    """
    tsv = Path(tsv)
    try:
        with open(tsv, newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "index" not in fields or "name" not in fields:
                raise InputError(f"{tsv}: a label table needs tab-separated columns 'index' and "
                                 f"'name' (found {reader.fieldnames}); fix its header")
            key = {f.strip().lower(): f for f in reader.fieldnames}
            rows = []
            for row in reader:
                try:
                    rows.append((int(float(row[key["index"]])), str(row[key["name"]]).strip()))
                except (TypeError, ValueError):
                    raise InputError(f"{tsv}: index {row[key['index']]!r} is not an integer; "
                                     "fix the label table") from None
    except FileNotFoundError:
        raise InputError(f"{tsv}: label table not found; give a TSV with columns index, name") from None
    return rows


def fetch_atlas_files(template=DEFAULT_TEMPLATE, templateflow_home=None, dentate=True):
    """Locate (or fetch) the template and default atlases in TemplateFlow.

    Parameters
    ----------
    template : str
        TemplateFlow template holding MASSP20 and MIAL67ThalamicNuclei (only
        ``MNI152NLin2009cAsym`` has both).
    templateflow_home : path-like, optional
        TemplateFlow home; default the TEMPLATEFLOW_HOME environment variable.
    dentate : bool
        Also locate the SUIT template and the Diedrichsen2009 dentate labels.

    Returns
    -------
    AtlasFiles

    Raises
    ------
    BidsIronError
        A required file is neither in TEMPLATEFLOW_HOME nor downloadable.
    """
    home = _home(templateflow_home)
    t = template
    t1w, t1w2, mask, wm = _template_images(home, t, masks_required=True)
    t2w2 = _optional(home, t, f"tpl-{t}_res-02_T2w.nii.gz", resolution=2, suffix="T2w", desc=None)
    atlases = []
    for atlas, dseg_name, tsv_name in (
            ("MASSP20", f"tpl-{t}_res-01_atlas-MASSP20_dseg.nii.gz", f"tpl-{t}_res-01_atlas-MASSP20_dseg.tsv"),
            ("MIAL67ThalamicNuclei", f"tpl-{t}_res-01_atlas-MIAL67ThalamicNuclei_dseg.nii.gz",
             f"tpl-{t}_atlas-MIAL67ThalamicNuclei_dseg.tsv")):
        dseg = _tf_get(home, t, dseg_name, resolution=1, atlas=atlas, suffix="dseg", extension=".nii.gz")
        tsv = _tf_get(home, t, tsv_name, atlas=atlas, suffix="dseg", extension=".tsv",
                      **({"resolution": 1} if "res-01" in tsv_name else {}))
        atlases.append(AtlasSource(atlas, t, dseg, tsv, rois.map_atlas_labels(atlas, read_label_table(tsv))))
    suit_t1w = None
    if dentate:
        s = SUIT_TEMPLATE
        suit_t1w = _tf_get(home, s, f"tpl-{s}_T1w.nii.gz", suffix="T1w", desc=None)
        dseg = _tf_get(home, s, f"tpl-{s}_atlas-Diedrichsen2009_dseg.nii.gz", atlas="Diedrichsen2009",
                       suffix="dseg", extension=".nii.gz")
        tsv = _tf_get(home, s, f"tpl-{s}_atlas-Diedrichsen2009_dseg.tsv", atlas="Diedrichsen2009",
                      suffix="dseg", extension=".tsv")
        atlases.append(AtlasSource("Diedrichsen2009", s, dseg, tsv,
                                   rois.map_atlas_labels("Diedrichsen2009", read_label_table(tsv))))
    return AtlasFiles(template=t, home=home, t1w=t1w, t1w_coarse=t1w2, brain_mask=mask,
                      wm_probseg=wm, atlases=atlases, suit_t1w=suit_t1w, t2w_coarse=t2w2)


def custom_atlas(atlas_file, labels_tsv, template, templateflow_home=None):
    """A user's label map in a TemplateFlow template space (``--atlas-file/--atlas-labels``).

    Label names are mapped onto the ROI vocabulary with `rois.map_atlas_labels` (so
    ``Left-Caudate``, ``caudate_left``, ``lh_caudate`` and ``caudate`` all work); names outside
    it are skipped and listed in ``AtlasFiles.atlases[0].skipped`` (and a warning is issued).
    The custom map replaces the default atlases; the template's brain mask and WM probability
    map are still used (the white_matter reference only when the map has no white_matter).

    Returns
    -------
    AtlasFiles

    Raises
    ------
    InputError
        Missing/unreadable files, or no label name in the vocabulary.
    BidsIronError
        The template's T1w is not in TEMPLATEFLOW_HOME.
    """
    atlas_file, labels_tsv = Path(atlas_file), Path(labels_tsv)
    if not atlas_file.is_file():
        raise InputError(f"--atlas-file {atlas_file}: file not found")
    try:
        nib.load(str(atlas_file))
    except Exception as exc:
        raise InputError(f"--atlas-file {atlas_file}: cannot be read as NIfTI ({exc})") from None
    table = read_label_table(labels_tsv)
    mapping = rois.map_atlas_labels("custom", table)
    skipped = [name for index, name in table if int(index) not in mapping]
    if not mapping:
        raise InputError(f"--atlas-labels {labels_tsv}: no label name is in the ROI vocabulary "
                         f"({', '.join(rois.ROI_NAMES)}, e.g. left_caudate); rename the labels")
    if skipped:
        warnings.warn(f"{labels_tsv}: labels outside the ROI vocabulary skipped: {', '.join(skipped)}",
                      stacklevel=2)
    home = _home(templateflow_home)
    t = template
    t1w, t1w2, mask, wm = _template_images(home, t, masks_required=False)
    source = AtlasSource("custom", t, atlas_file, labels_tsv, mapping, skipped)
    return AtlasFiles(template=t, home=home, t1w=t1w, t1w_coarse=t1w2, brain_mask=mask,
                      wm_probseg=wm, atlases=[source])


#: Typical adult R2* at 3 T (1/s) of the template's tissues, for the iron-contrast template
#: (`r2star_template`): deep gray matter after Haacke et al. 2005 (Magn Reson Imaging 23:1-25)
#: and Li et al. 2014 (Hum Brain Mapp 35:2698-2713); white matter, cortex and CSF from the same
#: 3 T surveys. The registration compares it with the session's R2* map by local correlation,
#: which ignores a global scale and offset: only the ranking and the edges matter.
R2STAR_3T = {"caudate": 23.0, "putamen": 27.0, "globus_pallidus": 40.0, "thalamus": 21.0,
             "pulvinar": 25.0, "substantia_nigra": 38.0, "red_nucleus": 33.0,
             "dentate_nucleus": 33.0, "csf": 3.0, "internal_capsule": 22.0,
             "white_matter": 21.0, "gray_matter": 16.0}


def r2star_template(labels, wm_probability, brain_mask, voxel_size, smooth_mm=1.0):
    """An R2*-like template image (1/s) painted from template labels (iron contrast).

    White matter and gray matter are mixed by the white matter probability inside the brain
    mask, then every labelled structure takes its typical R2* (`R2STAR_3T`); the image is
    smoothed by a Gaussian of ``smooth_mm`` (an average of brains has soft edges).

    Parameters
    ----------
    labels : ndarray of int (X, Y, Z)
        Native label indices (`rois.NATIVE_LABELS`); 0 is background.
    wm_probability : ndarray (X, Y, Z) or None
        White matter probability, 0..1.
    brain_mask : ndarray of bool (X, Y, Z)
    voxel_size : sequence of 3 floats (mm)
    smooth_mm : float
        Gaussian sigma (mm); 0 for none.

    Returns
    -------
    ndarray of float32 (X, Y, Z), 1/s; 0 outside the brain.

    Examples
    --------
    >>> import numpy as np
    >>> from bids_iron.anatomy import rois
    >>> lab = np.zeros((8, 8, 8), np.int16); lab[2:4, 2:4, 2:4] = rois.NATIVE_INDEX[("globus_pallidus", "left")]
    >>> img = r2star_template(lab, np.ones((8, 8, 8)), np.ones((8, 8, 8), bool), (1, 1, 1), 0)
    >>> float(img[2, 2, 2]), float(img[6, 6, 6])
    (40.0, 21.0)

    References
    ----------
    Haacke EM et al. Imaging iron stores in the brain using magnetic resonance imaging.
    Magn Reson Imaging 2005;23:1-25.
    """
    brain = np.asarray(brain_mask, bool)
    wm = np.zeros(brain.shape, np.float32) if wm_probability is None else \
        np.clip(np.asarray(wm_probability, np.float32), 0, 1)
    out = np.where(brain, wm * R2STAR_3T["white_matter"] + (1 - wm) * R2STAR_3T["gray_matter"], 0)
    lut = np.zeros(max(rois.NATIVE_LABELS) + 1, np.float32)
    for index, (roi, _hemi) in rois.NATIVE_LABELS.items():
        lut[index] = R2STAR_3T.get(roi, 0.0)
    labels = np.asarray(labels)
    inside = (labels > 0) & (labels < lut.size)
    value = lut[np.where(inside, labels, 0)]
    out = np.where(inside & (value > 0), value, out).astype(np.float32)
    if smooth_mm > 0:
        out = ndimage.gaussian_filter(out, smooth_mm / np.asarray(voxel_size, float))
    return out.astype(np.float32)


def iron_template(atlas_files, template_labels=None):
    """`r2star_template` of the template space's labels (MASSP20, MIAL67, reference regions)
    and of the SUIT dentate carried to the template grid by nearest neighbour where the SUIT
    grid is in template coordinates; a nibabel image on the first atlas's grid.

    ``template_labels``: from `build_template_labels` (computed when not given).
    """
    if template_labels is None:
        template_labels = build_template_labels(atlas_files, atlas_files.template)
    img = template_labels[atlas_files.template]
    shape, affine = img.shape, img.affine
    vs = np.sqrt((affine[:3, :3] ** 2).sum(0))
    labels = np.asarray(img.dataobj)
    wm = brain = None
    if atlas_files.wm_probseg is not None:
        w = nib.load(str(atlas_files.wm_probseg))
        wm = _resample_linear(np.asarray(w.dataobj, np.float32).reshape(w.shape[:3]), w.affine,
                              shape, affine)
    if atlas_files.brain_mask is not None:
        b = nib.load(str(atlas_files.brain_mask))
        brain = _resample_nearest(np.asarray(b.dataobj).reshape(b.shape[:3]) > 0, b.affine,
                                  shape, affine)
    if brain is None:
        brain = labels > 0 if wm is None else (wm > 0.05) | (labels > 0)
    return nib.Nifti1Image(r2star_template(labels, wm, brain, vs), affine)


def _relabel(data, mapping):
    lut = np.zeros(max(int(data.max()), max(mapping)) + 1, np.int16)
    for a, n in mapping.items():
        lut[a] = n
    out = lut[np.clip(data, 0, None)]
    return out


def posterior_limb(capsule, thalamus, caudate, pallidum, voxel_size, y_world):
    """Posterior limb of the internal capsule of ONE hemisphere (rule in the module docstring).

    Parameters
    ----------
    capsule, thalamus, caudate, pallidum : ndarray of bool
        Masks of one hemisphere on one grid.
    voxel_size : sequence of 3 floats
    y_world : ndarray
        World y (mm, posterior -> anterior) of every voxel.

    Returns
    -------
    ndarray of bool
    """
    if not capsule.any():
        return capsule
    if not thalamus.any() or not caudate.any():
        return capsule  # cannot split: keep the whole capsule
    d_thal = ndimage.distance_transform_edt(~thalamus, sampling=voxel_size)
    d_caud = ndimage.distance_transform_edt(~caudate, sampling=voxel_size)
    plic = capsule & (d_thal < d_caud)
    if pallidum.any():
        plic &= y_world >= y_world[pallidum].min()
    return plic if plic.any() else capsule


def build_template_labels(atlas_files, space=None):
    """One label map with native indices (`rois.NATIVE_INDEX`) per template space.

    The maps of the atlases in each space are combined on the grid of the first atlas in that
    space; later writes win, in this order: white_matter reference, then every atlas in its
    list order (MASSP20, then MIAL67 so that the pulvinar overrides thalamus voxels). In the
    default template space the internal capsule is cut to its posterior limb and the
    white_matter reference is added (rules in the module docstring).

    Returns
    -------
    dict of space -> nibabel.Nifti1Image (int16)
    """
    spaces = [space] if space else list(dict.fromkeys(a.space for a in atlas_files.atlases))
    out = {}
    for sp in spaces:
        sources = atlas_files.sources(sp)
        if not sources:
            continue
        ref = nib.load(str(sources[0].dseg))
        shape, affine = ref.shape[:3], ref.affine
        vs = np.sqrt((affine[:3, :3] ** 2).sum(0))
        labels = np.zeros(shape, np.int16)
        structures = np.zeros(shape, bool)
        for src in sources:
            img = nib.load(str(src.dseg))
            data = np.asanyarray(img.dataobj)
            if data.ndim == 4:
                data = data[..., 0]
            data = np.rint(data).astype(np.int32)
            if img.shape[:3] != shape or not np.allclose(img.affine, affine, atol=1e-3):
                data = _resample_nearest(data, img.affine, shape, affine)
            structures |= data > 0
            mapped = _relabel(data, src.mapping) if src.mapping else np.zeros(shape, np.int16)
            labels = np.where(mapped > 0, mapped, labels)
        ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
        world = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape((3,) + shape)
        if sp == atlas_files.template:
            labels = _split_capsule(labels, vs, world[1])
            has_wm = any(rois.NATIVE_LABELS[i][0] == "white_matter"
                         for s in sources for i in s.mapping.values())
            if atlas_files.wm_probseg is not None and not has_wm:
                labels = _add_white_matter(labels, structures, atlas_files.wm_probseg, shape,
                                           affine, vs, world[0])
        out[sp] = nib.Nifti1Image(labels.astype(np.int16), affine)
    return out


def _split_capsule(labels, vs, y_world):
    idx = rois.NATIVE_INDEX
    for hemi in ("left", "right"):
        cap = labels == idx[("internal_capsule", hemi)]
        if not cap.any():
            continue
        plic = posterior_limb(cap, np.isin(labels, [idx[("thalamus", hemi)], idx[("pulvinar", hemi)]]),
                              labels == idx[("caudate", hemi)],
                              labels == idx[("globus_pallidus", hemi)], vs, y_world)
        labels[cap & ~plic] = 0
    return labels


def _add_white_matter(labels, structures, wm_path, shape, affine, vs, x_world):
    img = nib.load(str(wm_path))
    wm = np.asanyarray(img.dataobj).astype(np.float32)
    if wm.ndim == 4:
        wm = wm[..., 0]
    if wm.shape != shape or not np.allclose(img.affine, affine, atol=1e-3):
        wm = _resample_linear(wm, img.affine, shape, affine)
    near = ndimage.distance_transform_edt(~structures, sampling=vs) <= WM_MARGIN_MM
    ref = (wm > WM_PROBABILITY) & ~near & (labels == 0)
    idx = rois.NATIVE_INDEX
    labels[ref & (x_world < 0)] = idx[("white_matter", "left")]
    labels[ref & (x_world >= 0)] = idx[("white_matter", "right")]
    return labels


def _map_coords(src_affine, shape, dst_affine):
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    m = np.linalg.inv(src_affine) @ dst_affine
    return (m[:3, :3] @ ijk + m[:3, 3:4]).reshape((3,) + tuple(shape))


def _resample_nearest(data, src_affine, shape, dst_affine):
    return ndimage.map_coordinates(data, _map_coords(src_affine, shape, dst_affine), order=0,
                                   mode="constant", cval=0)


def _resample_linear(data, src_affine, shape, dst_affine):
    return ndimage.map_coordinates(data, _map_coords(src_affine, shape, dst_affine), order=1,
                                   mode="constant", cval=0)
