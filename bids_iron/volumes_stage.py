"""Brain and structure volumes of a session from its T1w (participant level).

Runs `bids_iron.anatomy.volumes` on the session's T1w with the anatomy stage's
template -> T1w registration and writes
``sub-<l>[/ses-<s>]/anat/sub-<l>[_ses-<s>]_desc-volumes_morph.tsv`` plus its JSON data
dictionary. Per-ROI volumes are in the ROI tables (``volume_mm3``, ``label_volume_mm3``).
"""

from __future__ import annotations

import time

import numpy as np

from .bids.derivatives import atomic_path, sidecar_path, write_json


def _t1w_transforms(reg):
    """Template -> T1w transforms (antsApplyTransforms order) of a `SessionRegistration`,
    or None when the template was not registered to a T1w."""
    stem = f"from-{reg.template}_to-T1w_mode-image_xfm"
    if f"{stem}.mat" not in reg.files:
        return None
    warp = [reg.files[f"{stem}.nii.gz"]] if f"{stem}.nii.gz" in reg.files else []
    return warp + [reg.files[f"{stem}.mat"]]


def _deep_and_cerebellum(atlas_files, reg, grid, to_t1w, cache_dir=None):
    """Deep gray matter nuclei (atlas labels) and the cerebellum (SUIT atlas, None without
    it) on the segmentation grid."""
    from .anatomy import registration as reg_mod
    from .anatomy.rois import NATIVE_LABELS, NUCLEI

    nuclei = [i for i, (roi, _h) in NATIVE_LABELS.items() if roi in NUCLEI]
    deep = np.zeros(grid.shape[:3], bool)
    for space, img in reg_mod.cached_template_labels(atlas_files, cache_dir).items():
        if space == "SUIT" and not reg.suit_transforms:
            continue
        chain = to_t1w + (list(reg.suit_transforms) if space == "SUIT" else [])
        warped = reg_mod.resample_to_native(img, grid, chain, "genericLabel")
        deep |= np.isin(np.rint(warped).astype(int), nuclei)
    cerebellum = None
    suit = atlas_files.sources("SUIT")
    if suit and reg.suit_transforms:  # every SUIT label: the cerebellum
        cerebellum = reg_mod.mask_to_native(suit[0].dseg, grid,
                                            to_t1w + list(reg.suit_transforms))
    return deep, cerebellum


def t1w_volumes(t1w_img, reg, atlas_files, to_t1w=None, cache_dir=None):
    """Volumes (`volumes.tissue_volumes`) of a T1w image registered to the template.

    Parameters
    ----------
    t1w_img : nibabel image
        The session's T1w.
    reg : bids_iron.anatomy.registration.SessionRegistration
        The anatomy stage's registration (template -> T1w parts in ``reg.files``).
    atlas_files : bids_iron.anatomy.templates.AtlasFiles
    to_t1w : list of str, optional
        Template -> T1w transforms (default: from ``reg``).
    cache_dir : path-like, optional
        The run's template cache (`registration.cached_template_labels`): the atlas labels
        the registration built are read from it, not built again.

    Returns
    -------
    (dict, dict)
        The volumes and the method description of the data dictionary (with ``Seconds``).
    """
    from .anatomy import registration as reg_mod
    from .anatomy import volumes

    t0 = time.perf_counter()
    to_t1w = _t1w_transforms(reg) if to_t1w is None else to_t1w
    grid = reg_mod._downsample(reg_mod._as_img3d(t1w_img, "T1w"), volumes.SEGMENT_MM)
    voxel = tuple(float(v) for v in np.sqrt((grid.affine[:3, :3] ** 2).sum(0)))
    mask = reg_mod.mask_to_native(atlas_files.brain_mask, grid, to_t1w)
    deep, cerebellum = _deep_and_cerebellum(atlas_files, reg, grid, to_t1w, cache_dir)
    post = volumes.segment_tissues(np.asarray(grid.dataobj, np.float32), mask, voxel)
    result = volumes.tissue_volumes(post, voxel, deep_gm=deep & mask,
                                    cerebellum=None if cerebellum is None
                                    else cerebellum & mask)
    method = {
        "Segmentation": f"ANTs Atropos, 3 classes, k-means initialisation, Potts MRF "
                        f"{volumes.MRF_WEIGHT}, after N4 bias correction, on the T1w at "
                        f"{'x'.join(f'{v:g}' for v in voxel)} mm",
        "IntracranialMask": f"tpl-{atlas_files.template} brain mask carried to the T1w by "
                            "the template -> T1w registration (affine + SyN), >= 0.5",
        "DeepGrayMatter": [a.name for a in atlas_files.atlases],
        "Cerebellum": "SUIT atlas (Diedrichsen2009) registered to the T1w"
                      if cerebellum is not None else "not available: cerebellar gray matter "
                                                     "is inside cortical_gm",
        "Seconds": round(time.perf_counter() - t0, 1)}
    return result, method


def run_volumes(session, reg, atlas_files):
    """Write the session's volumes table (list of paths written; empty, with a note, when
    the session has no T1w or the template was not registered to it)."""
    from .anatomy import volumes

    if not session.has_image("T1w"):
        session.note("brain volumes not computed: the session has no T1w (the volumes "
                     "table needs one)")
        return []
    to_t1w = _t1w_transforms(reg)
    if to_t1w is None:
        session.note("brain volumes not computed: the template was registered to the MEGRE "
                     "magnitude, not to the T1w (drop --no-t1w)")
        return []
    if atlas_files.brain_mask is None:
        session.note("brain volumes not computed: the template has no brain mask "
                     f"(tpl-{atlas_files.template}_res-01_desc-brain_mask) for the "
                     "intracranial volume", warn=True)
        return []
    derivs, inputs = session.derivs, session.inputs
    with session.stage("brain volumes (T1w, Atropos GM/WM/CSF)"):
        result, method = t1w_volumes(session.image("T1w"), reg, atlas_files, to_t1w,
                                     cache_dir=session.work.parent / "templateflow_cache")
    table = volumes.volumes_table(result)
    path = derivs.path(inputs, "morph", desc="volumes", ext=".tsv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    dictionary = volumes.data_dictionary(method)
    seconds = method["Seconds"]
    dictionary["Sources"] = [derivs.bids_uri(session.image_path("T1w"))]
    write_json(sidecar_path(path), dictionary)
    icv = result["icv"][0]
    session.log.info("%s: brain volumes: ICV %.0f mL, GM %.0f mL (cortical %.0f), WM %.0f mL, "
                     "CSF %.0f mL (%.1f s)", session.label, icv / 1e3, result["gm"][0] / 1e3,
                     result["cortical_gm"][0] / 1e3, result["wm"][0] / 1e3,
                     result["csf"][0] / 1e3, seconds)
    return [path, sidecar_path(path)]
