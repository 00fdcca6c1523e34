"""The phase half of a session: radians -> mask -> field -> local field -> LFS and QSM (-> SWI).

Each step calls a pure function of `bids_iron.maps` (or `bids_iron.anatomy.brain_mask`) and
records its choice and parameters for the sidecars. File writing goes through
`bids_iron.bids.derivatives.Derivatives`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage

from .anatomy.brain_mask import (BrainMaskError, brain_mask_from_gre, mask_from_magnitude,
                                 refine_mask_by_quality)
from .anatomy.quality import (mask_field_quality, quality_facts, quality_from_facts,
                              quality_warnings)
from .anatomy.tissue import CSF_MAX_R2STAR, csf_mask_from_r2star
from .errors import InputError
from .maps import background as background_maps
from .maps import dipole as dipole_maps
from .maps import lfs as lfs_maps
from .maps import swi as swi_maps
from .maps.combine import estimate_field_map
from .maps import registry
from .maps.kernels import b0_direction_from_affine
from .maps.phase import scale_phase_to_radians
from .maps.units import GAMMA_BAR_HZ_PER_T, hz_to_ppm
from .report import methods

LOGGER = logging.getLogger("bids_iron")

#: Manufacturers whose stored phase runs opposite to bids-iron's convention
#: (phase = +2*pi*f*TE, paramagnetic -> positive field). GE's phase is left-handed relative
#: to Siemens/Philips; invert with ``--invert-phase yes`` if a sign check says otherwise.
INVERTED_PHASE_MANUFACTURERS = ("GE",)


@dataclass
class PhaseResult:
    """Arrays of the phase stage (float32 unless noted), the facts for the sidecars and the
    files written (``outputs``, filled by `bids_iron.workflow.run_phase`)."""

    mask: np.ndarray  # bool, the mask the field was estimated in
    mask_local: np.ndarray  # bool, after background removal (eroded)
    field_hz: np.ndarray
    local_ppm: np.ndarray
    lfs_ppm: np.ndarray
    chi_ppm: np.ndarray
    swi: np.ndarray | None = None
    swi_mip: np.ndarray | None = None
    facts: dict = field(default_factory=dict)
    outputs: list = field(default_factory=list)


def phase_sign(option, manufacturer):
    """+1 or -1: the factor applied to stored phase (``option`` is auto/yes/no)."""
    if option == "yes":
        return -1.0
    if option == "no":
        return 1.0
    maker = (manufacturer or "").upper()
    return -1.0 if any(maker.startswith(m) for m in INVERTED_PHASE_MANUFACTURERS) else 1.0


def phase_to_radians(data, phase_range, source):
    """Stored phase -> radians in [-pi, pi), or `InputError` naming ``source``."""
    if data.phase_is_radians and phase_range is None:
        return data.phase.astype(np.float32, copy=False), "radians (sidecar Units rad)"
    try:
        return scale_phase_to_radians(data.phase, value_range=phase_range)
    except ValueError:
        lo, hi = float(np.nanmin(data.phase)), float(np.nanmax(data.phase))
        degrees = ((-180.5 <= lo < -90 and 90 < hi <= 180.5)
                   or (0 <= lo < 90 and 270 < hi <= 360.5))
        hint = (f" (degrees? --phase-range {-180 if lo < 0 else 0} {180 if lo < 0 else 360})"
                if degrees else "")
        raise InputError(f"{source}: phase range not understood (values {lo:.4g}..{hi:.4g}); "
                         f"give the stored values of -pi and +pi with --phase-range LO "
                         f"HI{hint}") from None


def load_mask(path, data):
    """A user mask on the MEGRE grid, or `InputError`."""
    try:
        img = nib.load(str(path))
        mask = np.asanyarray(img.dataobj) > 0
    except Exception as exc:
        raise InputError(f"{path}: --mask cannot be read as NIfTI ({exc})") from None
    if mask.shape[:3] != data.magnitude.shape[:3] or not np.allclose(img.affine, data.affine,
                                                                      atol=1e-3):
        raise InputError(f"{path}: --mask is not on the MEGRE grid {data.magnitude.shape[:3]}; "
                         "resample it to the first echo's grid")
    if not mask.any():
        raise InputError(f"{path}: --mask is empty")
    return mask.reshape(mask.shape[:3])


#: The sign check ignores the mask's outer millimetres (`veins_paramagnetic`).
SIGN_CHECK_MARGIN_MM = 5.0


def veins_paramagnetic(chi, r2star, mask, voxel_size=None):
    """Sign safeguard: median chi of the 1 % highest-R2* voxels in the mask (ppm).

    Veins and iron-rich nuclei have both the highest R2* and positive chi; a clearly negative
    value suggests inverted phase (see ``--invert-phase``). Returns None (no verdict) when
    the mask is tiny or R2* has no distinct high tail (99th percentile below 1.5 x the
    median, e.g. a phantom of uniform R2*), where the top voxels are just noise. With
    ``voxel_size`` (mm) the outer `SIGN_CHECK_MARGIN_MM` of the mask are left out: a mask
    that keeps the whole brain (PDF) reaches voxels that share volume with bone and dura,
    whose R2* is high and whose chi is negative (on the realistic head phantom they turned
    the check negative for correct phase).
    """
    if voxel_size is not None:
        inner = mask & (ndimage.distance_transform_edt(mask, sampling=voxel_size)
                        > SIGN_CHECK_MARGIN_MM)
        if inner.sum() >= 100:
            mask = inner
    values = r2star[mask]
    if values.size < 100:
        return None
    cut, median = np.percentile(values, [99, 50])
    if not cut > 1.5 * median:
        return None
    top = mask & (r2star >= cut)
    return float(np.median(chi[top]))


def wholebrain_reference(chi, mask, reference):
    """The consensus' second reference: chi's whole-brain mean in ``mask`` (ppm, on the
    reported scale) and the reference region's mean and SD after subtracting it.

    ``reference`` is the reference region (bool array, inside ``mask`` as every reference
    of the chain is) or a string/None (no region).
    """
    mean = float(chi[mask].mean())
    out = {"WholeBrainMean": round(mean, 6)}
    if isinstance(reference, np.ndarray) and (reference & mask).sum() >= 2:
        values = chi[reference & mask] - mean
        out.update(ReferenceRegionMean=round(float(values.mean()), 6),
                   ReferenceRegionSD=round(float(values.std(ddof=1)), 6),
                   ReferenceRegionVoxels=int(values.size))
    return out


def _session_name(data):
    """The session's name for messages: the first input file's name up to its echo entity."""
    name = data.sources[0].name if data.sources else "session"
    return name.split("_echo-")[0] if "_echo-" in name else name


def _atlas_reference(labels, roi, support):
    from .anatomy_stage import reference_mask

    return reference_mask(labels, roi, support) if labels is not None else None


def _phase_source(data):
    """The first phase (or imaginary) file, for messages."""
    return str(data.phase_sources[0]) if data.phase_sources else "phase"


def check_phase_inputs(data, phase_range=None, scaling=True):
    """The phase stage's input checks, run before anything of the session is written:
    field strength known and (``scaling``) the stored phase range readable
    (`phase_to_radians`); `InputError` naming the file and the fix."""
    if data.phase is None:
        return
    if data.b0 is None:
        raise InputError(f"{data.sources[0]}: no MagneticFieldStrength in the sidecar; add it "
                         "(tesla) or pass --b0")
    if scaling:
        phase_to_radians(data, phase_range, _phase_source(data))


def run_phase_stage(data, options, stage, r2star=None, labels=None, template_mask=None):
    """Compute field, local field, LFS, chi (and SWI) for one session's `MegreData`.

    ``stage(name)`` is a context manager that logs and times a step. ``labels`` (native atlas
    labels) provide the reference regions (CSF, white matter, posterior internal capsule);
    ``template_mask`` is the template's brain mask warped to the session.
    """
    facts = {}
    check_phase_inputs(data, scaling=False)  # the scaling is checked right below
    with stage("phase to radians"):
        phase, how = phase_to_radians(data, options.phase_range, _phase_source(data))
        sign = phase_sign(options.invert_phase, data.manufacturer)
        if sign < 0:
            phase = -phase
        facts["PhaseScaling"] = how
        facts["PhaseSign"] = ("inverted" if sign < 0 else "as stored") + \
            f" (--invert-phase {options.invert_phase}, Manufacturer {data.manufacturer})"
    voxel_size = data.voxel_size
    with stage("brain mask"):
        if options.mask is not None:
            mask = load_mask(options.mask, data)
            facts["MaskSource"] = f"user mask {options.mask}"
        elif options.brain_mask == "template":
            if template_mask is None or not template_mask.any():
                raise InputError(f"{data.sources[0]}: --brain-mask template needs the anatomy "
                                 "stage (template registration); drop --no-anatomy")
            mask = template_mask.astype(bool)
            facts["MaskSource"] = "template brain mask registered to the session"
        elif options.brain_mask == "threshold":
            mask = mask_from_magnitude(data.magnitude, voxel_size)
            facts["MaskSource"] = methods.MASK_THRESHOLD
        else:
            try:
                mask = brain_mask_from_gre(data.magnitude, voxel_size)
            except BrainMaskError as exc:
                raise InputError(f"{data.sources[0]}: no brain found in the magnitude ({exc}); "
                                 "give a brain mask with --mask, or try --brain-mask template "
                                 "or --brain-mask threshold") from None
            facts["MaskSource"] = methods.MASK
    with stage(f"field map ({options.unwrap_method} unwrapping, MCPC-3D-S, weighted fit)"):
        fmap = estimate_field_map(phase, data.magnitude, data.te, voxel_size, mask=mask,
                                  unwrap_method=options.unwrap_method)
    del phase
    field_hz = fmap.field_hz
    if options.refine_mask and options.mask is None:  # a user's mask is used as given
        with stage("mask refined by phase quality"):
            before = int(mask.sum())
            mask = refine_mask_by_quality(mask, fmap.field_sd_hz, voxel_size=voxel_size)
            field_hz = np.where(mask, field_hz, 0).astype(np.float32)
            facts["MaskSource"] += (f"; refined by phase quality: voxels whose field standard "
                                    f"error exceeds median + 5 MAD removed ({before - int(mask.sum())} "
                                    "voxels)")
    b0_dir = tuple(float(v) for v in b0_direction_from_affine(data.affine))
    facts["B0Direction"] = [round(v, 6) for v in b0_dir]
    # what a method may need beyond its family's arguments (registry.NEEDS), made on demand
    available = {"b0_dir": b0_dir,
                 "magnitude": lambda: np.sqrt(np.mean(data.magnitude ** 2, axis=-1)),
                 "phase_scale": 2 * np.pi * GAMMA_BAR_HZ_PER_T * 1e-6 * data.b0
                 * float(np.mean(data.te)),
                 # the echo fit's standard error (tfi_admm's Bregman steps, discrepancy)
                 "noise_sd": lambda: np.nan_to_num(
                     hz_to_ppm(fmap.field_sd_hz, data.b0)).astype(np.float32)}
    with stage(f"background removal ({options.background_method})"):
        method = registry.get("background", options.background_method)
        try:
            removed = method.function(field_hz, mask, voxel_size,
                                      **registry.extra_inputs(method, available))
        except background_maps.MaskVanishedError as exc:
            # a small crop or thin slab: the SMV erosion leaves nothing; PDF needs no erosion
            LOGGER.warning("%s: %s background removal left no brain (%s); using PDF instead "
                           "(choose it with --background-method pdf)", _session_name(data),
                           options.background_method, exc)
            pdf = registry.get("background", "pdf")
            removed = pdf.function(field_hz, mask, voxel_size,
                                   **registry.extra_inputs(pdf, available))
            facts["BackgroundRemovalFallback"] = (f"pdf ({options.background_method} left no "
                                                  "brain after its erosion)")
        local_hz, mask_local = removed.local_field, removed.mask
        facts["BackgroundRemoval"] = {"n_iter": int(removed.n_iter),
                                      "converged": bool(removed.converged)}
        if not removed.converged:
            LOGGER.warning("%s: %s background removal stopped after %d iterations before "
                           "reaching its tolerance; check the local field in the report",
                           _session_name(data), removed.method, removed.n_iter)
    local_ppm = hz_to_ppm(local_hz, data.b0).astype(np.float32)
    quality = mask_field_quality(mask, mask_local, local_hz, voxel_size)
    facts["MaskQuality"] = quality_facts(quality)
    # warnings from the numbers as stored, so the report's check table (which reads the
    # sidecar's rounded numbers) never disagrees with them at a limit
    facts["MaskWarnings"] = quality_warnings(quality_from_facts(facts["MaskQuality"]),
                                             _session_name(data))
    for line in facts["MaskWarnings"]:
        LOGGER.warning("%s", line)
    with stage("local field shift"):
        lfs_region, facts["LFSReference"] = None, "whole-brain mean of the (eroded) mask"
        if options.lfs_reference == "internal_capsule":
            lfs_region = _atlas_reference(labels, "internal_capsule", mask_local)
            if lfs_region is not None:
                facts["LFSReference"] = ("posterior limb of the internal capsule (atlas, "
                                         "eroded by 1 voxel)")
                facts["LFSReferenceVoxels"] = int(lfs_region.sum())
            else:
                facts["LFSReference"] += (" (posterior internal capsule unavailable: "
                                          + ("too small in the mask)" if labels is not None
                                             else "no anatomy stage)"))
        lfs_ref = lfs_maps.lfs_reference_value(local_hz, mask_local, data.b0,
                                               reference_mask=lfs_region)
        lfs_ppm = lfs_maps.local_field_shift(local_hz, mask_local, data.b0,
                                             reference_mask=lfs_region)
        facts["LFSReferenceValue"] = round(float(lfs_ref), 6)
    with stage(f"dipole inversion ({options.qsm_method})"):
        method = registry.get("dipole", options.qsm_method)
        extra = registry.extra_inputs(method, available)
        if options.qsm_alpha == "lcurve":
            curve = dipole_maps.lcurve_alpha(local_ppm, mask_local, voxel_size, b0_dir,
                                             method=method.name)
            extra["alpha"] = curve.alpha
            if curve.alpha in (curve.alphas[0], curve.alphas[-1]):
                LOGGER.warning("%s: the L-curve chose the %s weight it tried (alpha %g): no "
                               "inflection between %g and %g; check the chi map, or use "
                               "--qsm-alpha fixed", _session_name(data),
                               "largest" if curve.alpha == curve.alphas[0] else "smallest",
                               curve.alpha, curve.alphas[-1], curve.alphas[0])
            facts["RegularizationSelection"] = {
                "Rule": f"L-curve, {curve.rule}", "Alphas": curve.alphas,
                "DataTerm": [round(v, 6) for v in curve.data_term],
                "TotalVariation": [round(v, 3) for v in curve.regularizer],
                "Curvature": [round(v, 5) for v in curve.curvature], "Chosen": curve.alpha}
        elif options.qsm_alpha == "discrepancy":  # the noise: the echo fit's standard error
            extra.update(dipole_maps.DISCREPANCY_SETTINGS, noise_sd=available["noise_sd"]())
        if method.field == "total":
            # total field inversion (tfi): the total field in the whole brain mask, its own
            # background sources; the background removal above still gives the LFS, and chi
            # is reported in its mask like every other output
            total_ppm = hz_to_ppm(field_hz, data.b0).astype(np.float32)
            result = method.function(total_ppm, mask, voxel_size, b0_dir, **extra)
            del total_ppm
            result.chi = np.where(mask_local, result.chi, np.float32(0))
        else:
            result = method.function(local_ppm, mask_local, voxel_size, b0_dir, **extra)
        if options.qsm_alpha == "discrepancy":
            used = result.parameters  # sums of squares over the mask, ppm^2
            facts["RegularizationSelection"] = {
                "Rule": f"discrepancy principle, {used['bregman_steps']} Bregman steps adding "
                        "the data residual back",
                "NoiseLevel": used["discrepancy_target"], "ResidualTV": used["residual_tv"],
                "Residual": used["residual"], "BregmanSteps": used["bregman_steps"]}
        reference = {"none": None, "mean": "mean"}.get(options.chi_reference)
        chi_reference_text = {
            "mean": "whole-brain mean of the (eroded) mask",
            "none": "none (mean of the inversion)"}.get(options.chi_reference)
        if options.chi_reference == "csf":
            reference = _atlas_reference(labels, "csf", mask_local)
            chi_reference_text = "CSF of the lateral ventricles (atlas, eroded by 1 voxel)"
            if reference is None:
                if r2star is None:
                    raise InputError("--chi-reference csf needs the R2* map of the session")
                reference = csf_mask_from_r2star(r2star, mask_local)
                chi_reference_text = (f"CSF: brain voxels with R2* < {CSF_MAX_R2STAR:g} 1/s, "
                                      "eroded by 1 voxel, components of >= 20 voxels (mainly "
                                      "the lateral ventricles)")
            if reference.sum() < 20:
                LOGGER.warning("%s: fewer than 20 CSF voxels (atlas ventricles or R2* < %g 1/s) "
                               "in the brain mask; chi is referenced to the whole-brain mean",
                               data.sources[0].name, CSF_MAX_R2STAR)
                reference = "mean"
                chi_reference_text = ("whole-brain mean of the (eroded) mask (CSF reference "
                                      "unavailable: fewer than 20 CSF voxels in the mask)")
            else:
                facts["ChiReferenceVoxels"] = int(reference.sum())
        elif options.chi_reference == "white_matter":
            reference = _atlas_reference(labels, "white_matter", mask_local)
            if reference is None:
                raise InputError(f"{data.sources[0]}: --chi-reference white_matter needs the "
                                 "atlas white matter (anatomy stage) inside the brain mask")
            chi_reference_text = "white matter (template WM probability > 0.9, eroded)"
            facts["ChiReferenceVoxels"] = int(reference.sum())
        if reference is None:
            chi = result.chi
            facts["ChiReferenceValue"] = 0.0
        else:
            chi, value = dipole_maps.reference_chi(result.chi, mask_local, reference,
                                                   return_reference=True)
            facts["ChiReferenceValue"] = round(float(value), 6)
        facts["ChiReference"] = chi_reference_text
        facts["ChiWholeBrain"] = wholebrain_reference(chi, mask_local, reference)
        facts["DipoleInversion"] = {"n_fft": result.n_fft, "n_iter": result.n_iter,
                                    "converged": bool(getattr(result, "converged", True)),
                                    **{k: v for k, v in result.parameters.items()
                                       if np.isscalar(v) or isinstance(v, (list, tuple))}}
    if r2star is not None:
        check = veins_paramagnetic(chi, r2star, mask_local, voxel_size)
        facts["SignCheckHighR2starMedianChi"] = None if check is None else round(check, 5)
        if check is not None and check < 0:
            LOGGER.warning("%s: chi of the highest-R2* voxels (veins, iron) is negative (%.4f "
                           "ppm): the phase sign may be inverted; try --invert-phase",
                           _session_name(data), check)
    out = PhaseResult(mask=mask, mask_local=mask_local, field_hz=field_hz, local_ppm=local_ppm,
                       lfs_ppm=lfs_ppm, chi_ppm=chi, facts=facts)
    if options.swi:
        with stage("SWI"):
            last = data.magnitude.shape[-1] - 1
            echo = min(last, int(np.argmin(np.abs(data.te - 0.02))))  # echo nearest 20 ms
            local_phase = (2 * np.pi * local_hz * data.te[echo]).astype(np.float32)
            out.swi = swi_maps.swi(data.magnitude[..., echo], local_phase, power=4,
                                   mask=mask_local)
            n_slices = max(1, int(round(8.0 / voxel_size[2])))  # ~8 mm slabs
            out.swi_mip = swi_maps.minimum_intensity_projection(out.swi, n_slices=n_slices,
                                                                axis=2)
            facts["SWIEchoTime"] = float(data.te[echo])
            facts["SWIMinIPSlices"] = n_slices
    return out
