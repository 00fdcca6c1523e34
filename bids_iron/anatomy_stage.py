"""The anatomy half of a session: template registration, native labels, FLAIR and lesions,
and the ROI tables.

Registration and label transfer live in `bids_iron.anatomy.registration`, the atlases in
`bids_iron.anatomy.templates`, the statistics in `bids_iron.anatomy.roistats`; this module
runs them for one session and writes their derivatives.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from .anatomy import roistats
from .anatomy.rois import NATIVE_LABELS, label_name
from .bids.derivatives import atomic_path, sidecar_path, write_json
from .errors import BidsIronError, InputError

LOGGER = logging.getLogger("bids_iron")

#: A reference region smaller than this (voxels, after erosion and masking) is not used.
MIN_REFERENCE_VOXELS = 20


@dataclass
class AnatomyResult:
    """Native-space anatomy of one session."""

    labels: np.ndarray  # int16, rois.NATIVE_LABELS indices
    template_mask: np.ndarray | None = None
    template_in_native: np.ndarray | None = None
    #: the template's iron contrast (`templates.iron_template`) on the native grid, for the
    #: per-ROI registration check (`roi_quality`)
    iron_template: np.ndarray | None = None
    flair: np.ndarray | None = None
    lesions: np.ndarray | None = None
    outputs: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)


def prepare_atlases(options):
    """Locate the template and atlases once per run (fails fast with a clear message)."""
    from .anatomy import templates

    if options.atlas_file is not None:
        return templates.custom_atlas(options.atlas_file, options.atlas_labels,
                                      options.atlas_template, options.templateflow_home)
    return templates.fetch_atlas_files(options.atlas_template, options.templateflow_home)


def _find_lesion_mask(lesion_dir, inputs):
    """``sub-<l>[/ses-<s>]/anat/sub-<l>[_ses-<s>]_space-{FLAIR,T1w}_desc-lesion_mask.nii[.gz]``."""
    folder = Path(lesion_dir) / f"sub-{inputs.subject}"
    stem = f"sub-{inputs.subject}"
    if inputs.session:
        folder = folder / f"ses-{inputs.session}"
        stem += f"_ses-{inputs.session}"
    for space in ("FLAIR", "T1w"):
        for ext in (".nii.gz", ".nii"):
            path = folder / "anat" / f"{stem}_space-{space}_desc-lesion_mask{ext}"
            if path.exists():
                return path, space
    return None, None


def _write_label_table(path, rows):
    with atomic_path(path) as tmp:
        tmp.write_text("index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in rows))


def run_anatomy(session):
    """Register the template to the session, carry labels, FLAIR and lesions to MEGRE
    (`AnatomyResult`; None with ``--no-anatomy``). Each image is registered to MEGRE once
    (`bids_iron.session.Session.rigid_to_megre`), shared with the lesion masks and user ROIs.
    """
    from .anatomy import registration as reg_mod

    options, atlas_files = session.options, session.atlas_files
    if not options.anatomy or atlas_files is None:
        return None
    derivs, inputs, data = session.derivs, session.inputs, session.data
    facts = {"Template": atlas_files.template,
             "Atlases": [a.name for a in atlas_files.atlases],
             "RegistrationTool": f"ANTsPy {_version('antspyx')}"}
    outputs = []
    work = session.work / "registration"
    work.mkdir(parents=True, exist_ok=True)
    use_t1w = options.use_t1w and session.has_image("T1w")
    how = "via T1w (T1w->MEGRE rigid, template->T1w affine+SyN)" if use_t1w else \
        "template->MEGRE magnitude directly (rigid, affine, SyN; mutual information)"
    t1w = session.image("T1w") if use_t1w else None
    rigid = session.rigid_to_megre("T1w") if use_t1w else None
    iron = None
    if options.registration_iron and session.r2star is not None:
        iron = nib.Nifti1Image(np.asarray(session.r2star.fit.r2star, np.float32), data.affine)
        how += "; plus the session's R2* map against the template's iron contrast (SyN " \
               "channel, local refinement of the brainstem and cerebellar nuclei, pallidum " \
               "and pulvinar)"
    with session.stage(f"registration {atlas_files.template} -> MEGRE, {how}"):
        reg = reg_mod.register_to_session(data, atlas_files, t1w_img=t1w, work_dir=work,
                                          cache_dir=session.work.parent / "templateflow_cache",
                                          n_threads=options.n_threads, t1w_rigid=rigid,
                                          native=session.native, iron_img=iron)
    facts["Registration"] = how
    checks = {}
    if reg.quality:
        checks = {"LocalRefinementJacobianMin": reg.quality["refine_jacobian_min"],
                  "LocalRefinementFoldedPercent": reg.quality["refine_folded_percent"]}
        if reg.quality["refine_folded_percent"] > 0:
            session.note(f"the local refinement of the registration folds in "
                         f"{reg.quality['refine_folded_percent']:.3f} % of its box (Jacobian "
                         f"determinant down to {reg.quality['refine_jacobian_min']:.2f}): check "
                         f"the brainstem and dentate ROIs, or rerun with "
                         f"--no-registration-iron", warn=True)
    with session.stage("atlas labels to native space"):
        native = reg_mod.warp_labels_to_native(reg, atlas_files)
    labels = native.labels.astype(np.int16)
    sidecar = {"Description": "deep gray matter nuclei and reference regions on the MEGRE grid "
                              "(template atlases registered to the session)",
               "Sources": [derivs.bids_uri(p) for p in data.sources[:1]],
               "SpatialReference": derivs.bids_uri(data.sources[0]),  # the MEGRE grid
               "Template": atlas_files.template, "Atlases": facts["Atlases"],
               "Registration": how, "Interpolation": "genericLabel (ANTs)"}
    if checks:
        sidecar["RegistrationChecks"] = checks
    dseg = derivs.save_map(inputs, labels, data.affine, "dseg", sidecar, desc="iron",
                           header=data.header, dtype=np.int16)
    table = [(i, label_name(*NATIVE_LABELS[i])) for i in sorted(NATIVE_LABELS)]
    tsv = dseg.with_name(dseg.name.replace(".nii.gz", ".tsv"))
    _write_label_table(tsv, table)
    outputs += [dseg, tsv]
    # transforms as derivatives (ANTs displacement fields on the MEGRE field of view)
    for key, path in sorted(reg.files.items()):
        name = key if str(key).startswith("from-") else Path(path).name
        target = derivs.session_dir(inputs) / "anat" / f"{inputs.label}_{name}"
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
        outputs.append(target)
    from .volumes_stage import run_volumes  # brain volumes from the T1w (a note without)
    outputs += run_volumes(session, reg, atlas_files)
    result = AnatomyResult(labels=labels, template_mask=native.brain_mask, facts=facts)
    try:
        result.template_in_native = reg.to_native(nib.load(str(atlas_files.t1w_coarse
                                                               or atlas_files.t1w)))
    except Exception as exc:  # the QC figure is optional
        LOGGER.debug("template in native space not computed: %s", exc)
    if reg.channels.get("iron"):
        result.iron_template = reg.to_native(nib.load(reg.channels["iron"]))

    if session.has_image("FLAIR"):
        flair_rigid = session.rigid_to_megre("FLAIR")
        with session.stage("FLAIR resampled to MEGRE"):
            result.flair = reg_mod.resample_to_native(session.image("FLAIR"), session.native,
                                                      [flair_rigid.path])
        side = {"Description": "FLAIR resampled to the MEGRE grid (rigid, linear)",
                "Sources": [derivs.bids_uri(inputs.flair)],
                "SpatialReference": derivs.bids_uri(data.sources[0]),
                "SkullStripped": False}
        outputs.append(derivs.save_map(inputs, result.flair, data.affine, "FLAIR", side,
                                       desc=None, header=data.header, space="MEGRE"))
        facts["FLAIR"] = "registered rigidly to MEGRE (mutual information)"

    if options.lesion_masks is not None:
        path, space = _find_lesion_mask(options.lesion_masks, inputs)
        if path is None:
            facts["Lesions"] = "no lesion mask found for this session"
        else:
            if not session.has_image(space):
                raise InputError(f"{path}: a {space}-space lesion mask needs the session's "
                                 f"{space} image in the BIDS dataset")
            transforms = [session.rigid_to_megre(space).path]
            with session.stage(f"lesion mask ({space}) -> MEGRE"):
                try:
                    lesion_img = nib.load(str(path))
                except Exception as exc:
                    raise InputError(f"{path}: cannot be read as NIfTI ({exc})") from None
                result.lesions = reg_mod.mask_to_native(lesion_img, session.native, transforms)
            side = {"Description": f"lesion mask carried from {space} to the MEGRE grid "
                                   "(rigid, linear interpolation, >= 0.5)",
                    "Sources": [str(path)], "Type": "Lesion",
                    "SpatialReference": derivs.bids_uri(data.sources[0])}
            outputs.append(derivs.save_map(inputs, result.lesions.astype(np.uint8), data.affine,
                                           "mask", side, desc="lesion", header=data.header,
                                           dtype=np.uint8, space="MEGRE"))
            facts["Lesions"] = f"{int(result.lesions.sum())} voxels from {path.name}"
    result.outputs = outputs
    return result


def roi_quality(labels, r2star, iron_template, brain_mask, voxel_size):
    """Per-ROI registration quality ``{(roi, hemisphere): (similarity, brain fraction,
    qc_flag)}`` of the atlas labels (`bids_iron.anatomy.quality.roi_registration_quality`);
    a bilateral ROI takes the lower value of its hemispheres and their flags. Only the
    nuclei are judged by similarity: the iron contrast has no edge that places a reference
    region (the lateral ventricles next to veins and choroid plexus measured -0.2 on the
    benchmark with a correct registration), so csf, internal_capsule and white_matter are
    flagged by their brain fraction only."""
    from .anatomy import quality

    by_label = quality.roi_registration_quality(labels, r2star, iron_template, brain_mask,
                                                voxel_size)
    out = {}
    for index, (sim, frac) in by_label.items():
        if index in NATIVE_LABELS:
            out[NATIVE_LABELS[index]] = (sim, frac)
    for roi in {r for r, _h in out}:
        pair = [out[(roi, h)] for h in ("left", "right") if (roi, h) in out]
        if pair and (roi, "bilateral") not in out:
            out[(roi, "bilateral")] = tuple(float(np.nanmin(v)) if np.isfinite(v).any()
                                            else float("nan")
                                            for v in np.array(pair, float).T)
    from .anatomy.rois import NUCLEI
    return {key: (sim, frac, quality.roi_qc_flag(sim if key[0] in NUCLEI else float("nan"), frac))
            for key, (sim, frac) in out.items()}


def _qc_settings():
    from .anatomy import quality
    return {"min_similarity": quality.MIN_ROI_SIMILARITY,
            "min_brain_fraction": quality.MIN_ROI_BRAIN_FRACTION,
            "margin_mm": quality.ROI_QC_MARGIN_MM}


def reference_mask(labels, roi, support, erode=1):
    """An eroded atlas reference region inside ``support``; None when too small."""
    if labels is None:
        return None
    mask = roistats.roi_mask(labels, roi, erode=erode) & support
    return mask if mask.sum() >= MIN_REFERENCE_VOXELS else None


def run_roi_tables(session):
    """Write ``roistats.tsv`` (+ JSON), and the per-lesion table with lesions
    (`RoiTablesResult`; None without atlas or user ROIs).

    ``options.roi_source``: ``auto`` (user ROIs where given, atlas for the rest), ``atlas``,
    ``user`` or ``both`` (rows of both, told apart by the ``source`` column). Lesion voxels
    are removed from every ROI, atlas and user alike.
    """
    import pandas as pd

    from .session import RoiTablesResult

    options, data, derivs, inputs = session.options, session.data, session.derivs, session.inputs
    fit, phase, anatomy, user_rois = (session.r2star.fit, session.phase, session.anatomy,
                                      session.user_rois)
    if anatomy is None and not user_rois:
        return None
    with session.stage("ROI statistics"):
        maps = {"r2star": fit.r2star, "t2star": fit.t2star}
        masks = {}
        if phase is not None:
            wholebrain = phase.chi_ppm - float(phase.chi_ppm[phase.mask_local].mean())
            maps.update(lfs=phase.lfs_ppm, chi=phase.chi_ppm, chi_wholebrain=wholebrain)
            masks.update(lfs=phase.mask_local, chi=phase.mask_local,
                         chi_wholebrain=phase.mask_local)
        vessels = ({"metric": options.exclude_vessels, "k": options.vessel_k}
                   if options.exclude_vessels else None)
        lesion_mask = None if anatomy is None else anatomy.lesions
        parts = []
        if options.roi_source != "atlas":
            for user in user_rois:
                table = user_roi_table(maps, masks, data.voxel_size, user, vessels,
                                       lesions=lesion_mask)
                if table is not None:
                    parts.append(table)
        qc = None
        if anatomy is not None and anatomy.iron_template is not None:
            support = phase.mask_local if phase is not None else anatomy.template_mask
            qc = roi_quality(anatomy.labels, fit.r2star, anatomy.iron_template, support,
                             data.voxel_size)
            flagged = sorted(f"{label_name(r, h)} ({f})" for (r, h), (_s, _b, f) in qc.items()
                             if f not in ("ok", "n/a") and h != "bilateral")
            if flagged:
                session.note("atlas ROIs flagged by the per-ROI registration check (qc_flag "
                             "column of the ROI table; check them before statistics): "
                             + ", ".join(flagged), warn=True)
        if anatomy is not None and options.roi_source != "user":
            atlas = roistats.roi_statistics(maps, anatomy.labels, data.voxel_size,
                                            masks=masks or None, lesion_mask=lesion_mask,
                                            exclude_vessels=vessels, source="atlas",
                                            roi_quality=qc)
            if options.roi_source == "auto" and parts:
                taken = {(r, h) for t in parts for r, h in zip(t.roi, t.hemisphere)}
                atlas = atlas[[(r, h) not in taken
                               for r, h in zip(atlas.roi, atlas.hemisphere)]]
            parts.insert(0, atlas)
        if not parts:
            return None
        table = pd.concat(parts, ignore_index=True)
        path = derivs.path(inputs, "roistats", ext=".tsv")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
        sources = sorted(set(table["source"]))
        dictionary = roistats.data_dictionary(exclude_vessels=vessels, source_levels=sources,
                                              qc=_qc_settings() if qc is not None else None)
        if phase is not None and "MaskQuality" in phase.facts:
            dictionary["QualityControl"] = {"MaskQuality": phase.facts["MaskQuality"],
                                            "MaskWarnings": phase.facts["MaskWarnings"]}
        write_json(sidecar_path(path), dictionary)
        outputs = [path, sidecar_path(path)]
        lesions = None
        if lesion_mask is not None and lesion_mask.any():
            lesions = roistats.lesion_table(maps, lesion_mask, data.voxel_size,
                                            affine=data.affine, masks=masks or None)
            lpath = derivs.path(inputs, "roistats", desc="lesions", ext=".tsv")
            with atomic_path(lpath) as tmp:
                lesions.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
            write_json(sidecar_path(lpath), roistats.lesion_data_dictionary())
            outputs += [lpath, sidecar_path(lpath)]
    return RoiTablesResult(table=table, lesions=lesions, outputs=outputs)


def report_labels(anatomy, user_rois):
    """Native labels for the report's contours: atlas labels, user ROIs drawn over them."""
    from .anatomy.rois import NATIVE_INDEX

    labels = None if anatomy is None else anatomy.labels.copy()
    for user in user_rois:
        for key, mask in user.masks.items():
            if key in NATIVE_INDEX:
                if labels is None:
                    labels = np.zeros(mask.shape, np.int16)
                labels[mask] = NATIVE_INDEX[key]
    return labels


def _version(dist):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"



# -- ROIs from the user's own segmentations (--roi-dseg, --freesurfer-dir) ------------------
@dataclass
class UserRois:
    """User label maps carried to the MEGRE grid: ``masks`` {(roi, hemisphere): bool}."""

    source: str  # "user" or "freesurfer"
    path: Path
    space: str
    masks: dict


def _same_grid(img, shape, affine):
    return tuple(img.shape[:3]) == tuple(shape[:3]) and np.allclose(img.affine, affine, atol=1e-3)


def run_user_rois(session):
    """Every user segmentation of the session on the MEGRE grid (list of `UserRois`; empty
    without ``--roi-dseg``/``--freesurfer-dir``). A segmentation that cannot be used is
    noted and skipped: the session keeps its atlas ROIs.

    Label maps on the MEGRE grid are used as they are; maps in T1w or FLAIR space (and
    FreeSurfer's aseg, which lives in the T1w's scanner space) are carried over by the
    session's rigid registration of that image to the MEGRE magnitude (the one the anatomy
    stage used, computed once), with label interpolation.
    """
    from .anatomy import registration as reg_mod
    from .anatomy.user_rois import load_freesurfer_aseg, load_user_labels

    options, inputs, data = session.options, session.inputs, session.data
    if options.roi_dseg is None and options.freesurfer_dir is None:
        return []
    try:
        found = []
        if options.roi_dseg is not None:
            user = load_user_labels(options.roi_dseg, inputs.subject, inputs.session,
                                    options.roi_labels)
            if user is None:
                raise InputError(
                    f"{options.roi_dseg}: no label map for {inputs.label} (expected "
                    f"sub-{inputs.subject}/"
                    f"{'ses-' + inputs.session + '/' if inputs.session else ''}"
                    f"anat/{inputs.label}[_space-<MEGRE|T1w|FLAIR>]_dseg.nii.gz)")
            found.append(user)
        if options.freesurfer_dir is not None:
            aseg = load_freesurfer_aseg(options.freesurfer_dir, inputs.subject, inputs.session)
            if aseg is None:
                raise InputError(f"{options.freesurfer_dir}: no sub-{inputs.subject}/mri/"
                                 f"aseg.mgz for {inputs.label}")
            found.append(aseg)
        out = []
        for labels in found:
            img = labels.image
            if labels.space == "MEGRE":
                if not _same_grid(img, data.magnitude.shape, data.affine):
                    raise InputError(
                        f"{labels.path}: its grid {tuple(img.shape[:3])} is not the MEGRE grid "
                        f"{tuple(data.magnitude.shape[:3])} (or the affines differ); name its "
                        "space (_space-T1w or _space-FLAIR) or resample it")
                carried = np.rint(np.asanyarray(img.dataobj)).astype(np.int64)
            else:
                if not session.has_image(labels.space):
                    raise InputError(f"{labels.path}: a {labels.space}-space label map needs "
                                     f"the session's {labels.space} image in the BIDS dataset")
                moving = session.image(labels.space)
                if labels.source == "user" and not _same_grid(img, moving.shape, moving.affine):
                    raise InputError(
                        f"{labels.path}: its grid matches neither the MEGRE nor the "
                        f"{labels.space} image {Path(session.image_path(labels.space)).name}; "
                        f"resample it to the {labels.space} grid")
                rigid = session.rigid_to_megre(labels.space)
                as_nifti = nib.Nifti1Image(
                    np.rint(np.asanyarray(img.dataobj)).astype(np.float32), img.affine)
                with session.stage(f"{labels.path.name} -> MEGRE"):
                    carried = np.rint(reg_mod.resample_to_native(
                        as_nifti, session.native, [rigid.path],
                        interpolation="genericLabel")).astype(np.int64)
            masks = {}
            for index, key in labels.names.items():
                mask = carried == index
                if mask.any():
                    masks[key] = masks.get(key, np.zeros(mask.shape, bool)) | mask
            missing = sorted({f"{r}/{h}" for (r, h) in labels.names.values()}
                             - {f"{r}/{h}" for (r, h) in masks})
            if missing:
                LOGGER.warning("%s: %s: labels %s not found on the MEGRE grid", inputs.label,
                               labels.path.name, ", ".join(missing[:8]))
            out.append(UserRois(source=labels.source, path=labels.path, space=labels.space,
                                masks=masks))
        return out
    except BidsIronError as exc:  # the session keeps its atlas ROIs
        session.note(f"user ROIs not used: {exc}", warn=True)
        return []


def user_roi_table(maps, masks, voxel_size, user, vessels=None, lesions=None):
    """``roistats`` rows of one `UserRois`: vocabulary ROIs like the atlas ones (per hemisphere
    and bilateral), other names under their own name."""
    from .anatomy.rois import NATIVE_INDEX
    import pandas as pd

    native = np.zeros(next(iter(maps.values())).shape, np.int16)
    provided = set()
    others = {}
    for (roi, hemi), mask in user.masks.items():
        if (roi, hemi) in NATIVE_INDEX:
            native[mask] = NATIVE_INDEX[(roi, hemi)]
            provided.add((roi, hemi))
            if hemi in ("left", "right"):
                provided.add((roi, "bilateral"))
        else:
            others[(roi, hemi)] = mask if lesions is None else mask & ~np.asarray(lesions, bool)
    parts = []
    if provided:
        table = roistats.roi_statistics(maps, native, voxel_size, masks=masks or None,
                                        exclude_vessels=vessels, source=user.source,
                                        lesion_mask=lesions)
        keep = [(r, h) in provided for r, h in zip(table.roi, table.hemisphere)]
        parts.append(table[keep])
    if others:
        parts.append(roistats.mask_statistics(maps, others, voxel_size, masks=masks or None,
                                              source=user.source))
    if not parts:
        return None
    return pd.concat(parts, ignore_index=True)
