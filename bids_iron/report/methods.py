"""What each algorithm is called in sidecars and methods text, with its reference.

One place for the words, so sidecars (EstimationAlgorithm / EstimationReference) and the
report's methods paragraph never disagree.
"""

from ..maps import registry

#: {method: (EstimationAlgorithm, EstimationReference)} of each family, from the method
#: registry (`bids_iron.maps.registry`), where each method's words are kept with its record.
R2STAR = registry.texts("r2star")
UNWRAP = registry.texts("unwrap")
BACKGROUND = registry.texts("background")
DIPOLE = registry.texts("dipole")



MASK = ("whole-head GRE brain extraction: Otsu threshold of the root-sum-of-squares "
        "magnitude over echoes, Euclidean erosion (4 mm, grown until the core no longer "
        "reaches the scalp), largest component, opening back to the thresholded tissue and "
        "hole filling")
MASK_THRESHOLD = ("Otsu threshold of the root-sum-of-squares magnitude over echoes, hole "
                  "filling, morphological opening/closing and the largest connected component "
                  "(no scalp removal)")

FIELD = ("MCPC-3D-S phase-offset removal, then a magnitude^2-weighted linear fit of the "
         "unwrapped phase over TE through the origin",
         "Eckstein K, Dymerska B, Bachrata B, et al. Computationally efficient combination of "
         "multi-channel phase data from multi-echo acquisitions (ASPIRE). Magn Reson Med "
         "2018;79:2996-3006")

LFS = ("Local field shift: unwrapped, background-removed phase expressed in ppm of B0, with "
       "the mean of a reference region subtracted",
       "Hammond KE, Lupo JM, Xu D, et al. Development of a robust method for generating 7.0 T "
       "multichannel phase images of the brain with application to normal volunteers and "
       "patients with neurodegenerative diseases. NeuroImage 2008;39:1682-1692")

SWI = ("Susceptibility-weighted imaging: magnitude multiplied by a positive-phase mask "
       "(1 - phase/pi on 0..pi) to the 4th power, from the background-removed phase",
       "Haacke EM, Xu Y, Cheng YC, Reichenbach JR. Susceptibility weighted imaging (SWI). Magn "
       "Reson Med 2004;52:612-618")


# -- Anatomy words and the methods paragraph (issue 4) ----------------------------------------
#: Template registration (ANTs via ANTsPy) and template/atlas sources.
REGISTRATION = ("ANTs registration (ANTsPy): rigid and affine stages followed by symmetric "
                "normalisation (SyN)",
                "Avants BB, Epstein CL, Grossman M, Gee JC. Symmetric diffeomorphic image "
                "registration with cross-correlation: evaluating automated labeling of elderly "
                "and neurodegenerative brain. Med Image Anal 2008;12:26-41")
TEMPLATEFLOW = ("TemplateFlow",
                "Ciric R, Thompson WH, Lorenz R, et al. TemplateFlow: FAIR-sharing of "
                "multi-scale, multi-species brain models. Nat Methods 2022;19:1568-1571")
TEMPLATES = {
    "MNI152NLin2009cAsym": ("ICBM 152 nonlinear asymmetrical template, version 2009c",
                            "Fonov V, Evans AC, Botteron K, et al. Unbiased average "
                            "age-appropriate atlases for pediatric studies. NeuroImage "
                            "2011;54:313-327"),
    "SUIT": ("spatially unbiased infratentorial template (SUIT)",
             "Diedrichsen J. A spatially unbiased atlas template of the human cerebellum. "
             "NeuroImage 2006;33:127-138"),
}
ATLASES = {
    "MASSP20": ("MASSP subcortical atlas (caudate, putamen, globus pallidus, thalamus, "
                "substantia nigra, red nucleus, lateral ventricles, internal capsule)",
                "Bazin PL, Alkemade A, Mulder MJ, Henry AG, Forstmann BU. Multi-contrast "
                "anatomical subcortical structures parcellation. eLife 2020;9:e59430; "
                "Alkemade A, Bazin PL, Balesar R, et al. A unified 3D map of microscopic "
                "architecture and MRI of the human brain. Sci Adv 2022;8:eabj7892"),
    "MIAL67ThalamicNuclei": ("probabilistic atlas of the thalamic nuclei (pulvinar)",
                             "Najdenovska E, Aleman-Gomez Y, Battistella G, et al. In-vivo "
                             "probabilistic atlas of human thalamic nuclei based on diffusion-"
                             "weighted magnetic resonance imaging. Sci Data 2018;5:180270"),
    "Diedrichsen2009": ("probabilistic cerebellar atlas (dentate nuclei)",
                        "Diedrichsen J, Balsters JH, Flavell J, Cussans E, Ramnani N. A "
                        "probabilistic MR atlas of the human cerebellum. NeuroImage "
                        "2009;46:39-46"),
}


def split_references(text):
    """The individual references of a ``"A ...; B ..."`` reference string (empty parts dropped).

    References are separated by ``"; "`` followed by an author's capital letter; the ``;`` of
    ``2005;54:1072`` (no space) is part of a reference.
    """
    import re

    return [part.strip() for part in re.split(r";\s+(?=[A-Z][A-Za-z\-']+ [A-Z]{1,3}[,. ])",
                                              text or "") if part.strip()]


#: How the ``source`` levels of an ROI table (other than ``atlas``) read in the methods.
_ROI_SOURCES = {"user": "user-supplied segmentation (--roi-dseg)",
                "freesurfer": "FreeSurfer aseg segmentation (--freesurfer-dir)"}

_PROPER_WORDS = ("Otsu", "Laplacian", "ANTs", "MCPC-3D-S", "Auto-Regression")


def _fmt_ms(values):
    ms = [1000.0 * float(v) for v in values]
    if len(ms) == 1:
        return f"{ms[0]:.3g} ms"
    steps = [b - a for a, b in zip(ms[:-1], ms[1:])]
    if len(ms) > 2 and all(abs(step - steps[0]) <= 0.01 for step in steps):
        return f"{ms[0]:.3g}-{ms[-1]:.3g} ms in steps of {steps[0]:.3g} ms"
    return ", ".join(f"{v:.3g}" for v in ms) + " ms"


def _solver_words(solver, selection=None):
    """``" (alpha = 0.0001, chosen by the L-curve ...; 55 of at most 60 iterations, tolerance
    0.01)"`` from a solver record (`methods_text` keys ``BackgroundRemoval``,
    ``DipoleInversion``), or "" when there is nothing to say.

    Examples
    --------
    >>> _solver_words({"n_iter": 55, "converged": True, "alpha": 1e-4, "max_iter": 60,
    ...                "tol": 0.01})
    ' (regularisation weight alpha = 0.0001; 55 iterations of at most 60, tolerance 0.01)'
    >>> _solver_words({"n_iter": 0, "threshold": 0.19})
    ' (k-space threshold 0.19)'
    >>> _solver_words({"alpha": 1e-4}, {"Rule": "discrepancy principle, 41 Bregman steps"})
    ' (regularisation weight alpha = 0.0001, then 41 Bregman steps, stopped by the discrepancy principle)'
    >>> _solver_words(None)
    ''
    """
    solver = dict(solver or {})
    parts = []
    if solver.get("alpha") is not None:
        words = f"regularisation weight alpha = {float(solver['alpha']):.3g}"
        if selection and selection.get("Rule"):
            head, _, tail = str(selection["Rule"]).partition(", ")
            if head.startswith("discrepancy") and tail:  # alpha fixed; the steps are chosen
                words += f", then {tail}, stopped by the {head}"
            else:
                words += f", chosen by the {head}" + (f" ({tail})" if tail else "")
        parts.append(words)
    if solver.get("lambda") is not None:
        parts.append(f"regularisation weight lambda = {float(solver['lambda']):.3g}"
                     + (f" ({solver['regularizer']} regulariser)"
                        if solver.get("regularizer") else ""))
    if solver.get("threshold") is not None:
        parts.append(f"k-space threshold {float(solver['threshold']):.3g}")
    n_iter = solver.get("n_iter")
    if n_iter:
        words = f"{int(n_iter)} iteration{'s' if int(n_iter) != 1 else ''}"
        if solver.get("max_iter"):
            words += f" of at most {int(solver['max_iter'])}"
        if solver.get("tol") is not None:
            words += f", tolerance {float(solver['tol']):.3g}"
        if solver.get("converged") is False:
            words += ", stopped before reaching the tolerance"
        parts.append(words)
    return f" ({'; '.join(parts)})" if parts else ""


def methods_text(facts):
    """The methods paragraph and its numbered references, from a session's facts.

    Parameters
    ----------
    facts : dict
        Facts of the session as written in its sidecars; every key is optional and a
        sentence is left out when its facts are missing. Keys used: ``SoftwareVersion``,
        ``MagneticFieldStrength`` (T), ``EchoTime`` (list, s), ``VoxelSize`` (mm),
        ``R2starMethod`` (key of `R2STAR`), ``MaskSource`` (text), ``UnwrappingMethod``
        (key of `UNWRAP`), ``BackgroundRemovalMethod`` (key of `BACKGROUND`),
        ``LFSReference`` (text), ``QSMMethod`` (key of `DIPOLE`), ``ChiReference`` (text),
        ``SWIEchoTime`` (s; SWI was made), ``Template`` (TemplateFlow name), ``Atlases``
        (list of atlas names, keys of `ATLASES` or free text), ``RegistrationMethod`` and
        ``RegistrationReference`` (text; default `REGISTRATION`), ``Registration`` (how the
        template reached the session, text), ``RegistrationTool`` (e.g. ``"ANTsPy 0.5.4"``),
        ``BackgroundRemoval`` and ``DipoleInversion`` (solver records: ``n_iter``,
        ``converged`` and the parameters, e.g. ``alpha``, ``threshold``, ``max_iter``,
        ``tol``), ``RegularizationSelection`` (dict with ``Rule``, ``Chosen``),
        ``ROISources`` (the ``source`` levels of the session's ROI table; without it no ROI
        statistics are claimed), ``ROIErosion`` (voxels, default 1), ``VesselExclusion``
        (dict ``{"metric", "k"}`` or None), ``Lesions`` (bool, or text: true when it does
        not start with "no").

    Returns
    -------
    paragraph : str
        Methods text with bracketed reference numbers ``[1]``.
    references : list of str
        The references, numbered in order of first citation.
    """
    facts = dict(facts or {})
    refs = []

    def cite(reference):
        numbers = []
        for ref in split_references(reference):
            if ref not in refs:
                refs.append(ref)
            numbers.append(refs.index(ref) + 1)
        return f" [{', '.join(str(n) for n in numbers)}]" if numbers else ""

    def lower_first(text):
        word = text.split(" ", 1)[0]
        if word in _PROPER_WORDS or word[:2] == word[:2].upper():
            return text
        return text[:1].lower() + text[1:]

    out = []
    version = facts.get("SoftwareVersion")
    acq = "Multi-echo gradient-echo (MEGRE) data"
    details = []
    if facts.get("EchoTime"):
        te = facts["EchoTime"]
        details.append(f"{len(te)} echoes, TE = {_fmt_ms(te)}")
    if facts.get("MagneticFieldStrength"):
        details.append(f"B0 = {float(facts['MagneticFieldStrength']):g} T")
    if facts.get("VoxelSize"):
        details.append("voxel size " + " x ".join(f"{float(v):.3g}" for v in facts["VoxelSize"])
                       + " mm")
    if details:
        acq += " (" + "; ".join(details) + ")"
    out.append(f"{acq} were processed with bids-iron"
               + (f" {version}" if version else "") + ", on the native MEGRE voxel grid.")
    method = facts.get("R2starMethod")
    if method in R2STAR:
        algorithm, reference = R2STAR[method]
        out.append(f"R2* maps were estimated voxel-wise by {lower_first(algorithm)}"
                   f"{cite(reference)}, and T2* = 1/R2*.")
    mask = facts.get("MaskSource")
    if mask and str(mask).startswith("user mask"):
        out.append("A user-provided brain mask was used.")
    elif mask:
        out.append(f"The brain mask was obtained by {lower_first(mask)}.")
    unwrap = facts.get("UnwrappingMethod")
    if unwrap in UNWRAP:
        algorithm, reference = UNWRAP[unwrap]
        out.append(f"Phase images were unwrapped by {lower_first(algorithm)}{cite(reference)}; "
                   f"the field map was obtained by {FIELD[0]}{cite(FIELD[1])}.")
    background = facts.get("BackgroundRemovalMethod")
    if background in BACKGROUND:
        algorithm, reference = BACKGROUND[background]
        out.append(f"Background fields were removed with {algorithm}{cite(reference)}"
                   + _solver_words(facts.get("BackgroundRemoval")) + ".")
        if facts.get("BackgroundRemovalFallback"):
            out.append(f"For this session PDF was used instead "
                       f"{facts['BackgroundRemovalFallback'].removeprefix('pdf ')}.")
        lfs_ref = facts.get("LFSReference")
        out.append(f"The local field shift (LFS) was computed in ppm of B0{cite(LFS[1])}"
                   + (f", referenced to the {lfs_ref}" if lfs_ref else "") + ".")
    qsm = facts.get("QSMMethod")
    if qsm in DIPOLE:
        algorithm, reference = DIPOLE[qsm]
        chi_ref = facts.get("ChiReference")
        out.append(f"Magnetic susceptibility (chi, ppm, paramagnetic positive) was computed "
                   f"by {lower_first(algorithm)}{cite(reference)}"
                   + _solver_words(facts.get("DipoleInversion"),
                                   facts.get("RegularizationSelection"))
                   + (f", and referenced to the {lower_first(chi_ref)}" if chi_ref else "")
                   + ".")
    if facts.get("SWIEchoTime"):
        out.append(f"Susceptibility-weighted images were made from the echo at "
                   f"{1000 * float(facts['SWIEchoTime']):.3g} ms{cite(SWI[1])}.")
    template = facts.get("Template")
    atlases = facts.get("Atlases") or []
    if template or atlases:
        reg_method = facts.get("RegistrationMethod") or REGISTRATION[0]
        reg_ref = facts.get("RegistrationReference") or REGISTRATION[1]
        text = "Deep gray matter regions of interest were taken from "
        names = []
        for atlas in atlases:
            if atlas in ATLASES:
                names.append(f"the {ATLASES[atlas][0]}{cite(ATLASES[atlas][1])}")
            else:
                names.append(str(atlas))
        if len(names) > 1:
            text += ", ".join(names[:-1]) + " and " + names[-1]
        else:
            text += names[0] if names else "atlas labels"
        if template:
            tname, tref = TEMPLATES.get(template, (template, ""))
            text += (f" in the {tname}{cite(tref)} space ({template}, obtained with "
                     f"{TEMPLATEFLOW[0]}{cite(TEMPLATEFLOW[1])})")
        text += (f", and brought to each session's MEGRE space by {lower_first(reg_method)}"
                 f"{cite(reg_ref)} with nearest-neighbour label transfer.")
        out.append(text)
        how, tool = facts.get("Registration"), facts.get("RegistrationTool")
        if how or tool:
            out.append("Registration path: " + "; software: ".join(
                str(v) for v in (how, tool) if v) + ".")
    erode = facts.get("ROIErosion", 1)
    sources = list(facts.get("ROISources") or [])
    if sources:
        regions = []
        if "atlas" in sources:
            regions.append("per nucleus and hemisphere (the thalamus including the pulvinar) "
                           "and bilaterally")
        other = [_ROI_SOURCES.get(s, f"{s} segmentation") for s in sources if s != "atlas"]
        if other:
            regions.append("per region of the " + " and the ".join(other))
        roi = ("Mean, median and standard deviation of each map were computed "
               + " and ".join(regions))
        if erode:
            roi += (f", after eroding each region by {int(erode)} voxel"
                    f"{'s' if int(erode) != 1 else ''} (6-connected) to limit partial volume")
        vessels = facts.get("VesselExclusion")
        if vessels:
            roi += (f"; voxels with {vessels.get('metric', 'chi')} above the region median + "
                    f"{float(vessels.get('k', 3.0)):g} x 1.4826 x MAD were excluded as vessels")
        out.append(roi + ".")
    lesions = facts.get("Lesions")
    if lesions and not (isinstance(lesions, str) and lesions.lower().startswith("no")):
        out.append("Lesion masks were transferred to MEGRE space and summarised as a whole and "
                   "per connected lesion (26-connectivity), without erosion.")
    return " ".join(out), refs


def methods_paragraph(facts):
    """The methods text a user pastes into a paper: paragraph, then numbered references.

    Parameters
    ----------
    facts : dict
        See `methods_text`.

    Returns
    -------
    str

    Examples
    --------
    >>> text = methods_paragraph({"R2starMethod": "nlls", "EchoTime": [0.005, 0.01, 0.015],
    ...                           "MagneticFieldStrength": 3.0})
    >>> "R2* maps were estimated" in text and "[1] Marquardt DW" in text
    True
    """
    paragraph, refs = methods_text(facts)
    lines = [paragraph]
    if refs:
        lines.append("")
        lines.append("References")
        lines += [f"[{i}] {ref}" for i, ref in enumerate(refs, start=1)]
    return "\n".join(lines)
