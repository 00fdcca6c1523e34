"""The per-subject HTML report ``OUTPUT_DIR/sub-<label>.html``.

One self-contained file (figures embedded as base64 PNG, inline CSS, no scripts, no network
resources), one section per session: a QC box (checks passed, each warning in full), map
mosaics (two rows of four axial slices, a colour bar in the map's units, thin brain-mask and
ROI outlines along the voxel edges), the ROI table (flagged ROIs marked when the table has a
``qc_flag`` column) and the lesions, the registration check, the QC table (named checks with
value and unit, expected range, pass/warn/info; `bids_iron.report.qc`), the methods
paragraph of what was run (`methods_facts`) with references; software versions at the end. The HTML pieces (page,
stylesheet, tables, figures) come from `bids_iron.report._html`, shared with the group report.

Usage (as the workflow does: a section per session when it finishes, the page at the end)::

    from bids_iron.report.html import (SessionReport, assemble_subject_report,
                                       render_session_section)
    session = SessionReport(label="sub-01_ses-1", magnitude=mag, r2star=r2,
                            voxel_size=(1, 1, 2), affine=affine, ...)
    assemble_subject_report(out / "sub-01.html", "01",
                            [(session.label, render_session_section(session))])
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import __version__
from ..anatomy import quality as quality_checks
from . import _html as H
from . import figures, methods, qc

#: Packages whose versions the report lists (distribution names).
SOFTWARE = ("numpy", "scipy", "nibabel", "pandas", "matplotlib", "pybids", "templateflow",
            "antspyx", "numba")

#: How each map is shown: (attribute, title, quantity on the colour bar, units, symmetric
#: range, colour map).
_MAP_VIEWS = (
    ("r2star", "R2*", "R2*", "1/s", False, "gray"),
    ("lfs", "Local field shift", "LFS", "ppm", True, "gray"),
    ("chi", "Susceptibility (chi)", "chi", "ppm", True, "gray"),
    ("swi", "SWI", "SWI", "a.u.", False, "gray"),
    ("flair", "FLAIR (in MEGRE space)", "FLAIR", "a.u.", False, "gray"),
)
#: Why a map can be missing from a session, for the report's note.
_MISSING_WHY = {"r2star": "no magnitude fit", "lfs": "needs the phase images",
                "chi": "needs the phase images", "swi": "made with --swi and the phase images",
                "flair": "needs a FLAIR image and the anatomy stage"}
#: Axial slices of each map mosaic (two rows of `bids_iron.report.figures.MOSAIC_COLUMNS`).
N_SLICES = 8

_METRIC_TITLES = {"r2star": ("R2*", "1/s", 1.0, 4), "t2star": ("T2*", "ms", 1000.0, 4),
                  "lfs": ("LFS", "ppb", 1000.0, 4), "chi": ("chi", "ppb", 1000.0, 4),
                  "chi_wholebrain": ("chi, whole-brain ref.", "ppb", 1000.0, 4)}


@dataclass
class SessionReport:
    """What the report shows for one session; every array but ``magnitude`` is optional.

    All arrays are on the native MEGRE grid (shape (X, Y, Z); ``magnitude`` may have a
    fourth, echo axis).

    Attributes
    ----------
    label : str
        Session label, e.g. ``sub-01_ses-1``.
    magnitude : ndarray
        Magnitude, (X, Y, Z) or (X, Y, Z, n_echoes); the first echo is displayed.
    r2star, lfs, chi, swi, flair : ndarray, optional
        R2* (1/s), local field shift (ppm), chi (ppm), SWI and FLAIR (arbitrary units).
    mask : ndarray of bool, optional
        Brain mask (outline on the mosaics, QC volume and SNR).
    labels : ndarray of int, optional
        Native label map (`bids_iron.anatomy.rois.NATIVE_LABELS`), drawn as contours; it
        also chooses the slices (through the nuclei).
    template_in_native : ndarray, optional
        Template image resampled to the native grid (registration check).
    residual : ndarray, optional
        Normalised RMS residual of the R2* fit (unitless).
    lesions : ndarray of bool, optional
        Lesion mask, drawn on the FLAIR (or R2*) mosaic.
    roi_table : pandas.DataFrame, optional
        The ``roistats`` long table (`bids_iron.anatomy.roistats.roi_statistics`).
    lesion_table : pandas.DataFrame, optional
        The per-lesion table (`bids_iron.anatomy.roistats.lesion_table`).
    facts : dict
        Sidecar facts of the session (`bids_iron.report.methods.methods_text` keys).
    voxel_size : tuple of 3 float
        Voxel size (mm).
    affine : ndarray (4, 4), optional
        Voxel-to-world affine, to display in RAS orientation.
    notes : list of str
        Free notes shown at the top of the section (e.g. "magnitude only").
    """

    label: str
    magnitude: np.ndarray
    r2star: np.ndarray | None = None
    lfs: np.ndarray | None = None
    chi: np.ndarray | None = None
    swi: np.ndarray | None = None
    flair: np.ndarray | None = None
    mask: np.ndarray | None = None
    labels: np.ndarray | None = None
    template_in_native: np.ndarray | None = None
    residual: np.ndarray | None = None
    lesions: np.ndarray | None = None
    roi_table: pd.DataFrame | None = None
    lesion_table: pd.DataFrame | None = None
    facts: dict = field(default_factory=dict)
    voxel_size: tuple = (1.0, 1.0, 1.0)
    affine: np.ndarray | None = None
    notes: list = field(default_factory=list)


def software_versions():
    """{name: version} of bids-iron, Python and the scientific packages (``None``: absent).

    Versions come from the installed distributions' metadata; nothing is imported.
    """
    out = {"bids-iron": __version__, "python": platform.python_version()}
    for name in SOFTWARE:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _volume(value):
    value = float(value)
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"


def _value_text(value, units):
    """A check's value with its unit: whole numbers from 10 up, else 3 significant digits."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return "" if value is None else str(value)
    value = float(value) + 0.0  # -0.0 + 0.0 is 0.0: no "-0"
    text = f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.3g}"
    return f"{text} {units}".strip()


def check_rows(checks):
    """(check, value with unit, expected, status, comment) rows of QC checks.

    ``checks`` are `bids_iron.anatomy.quality.Check` rows (`bids_iron.anatomy.quality.
    quality_status`, `bids_iron.report.qc.measure_checks`, ...). Status is ``pass``, ``warn``
    or ``info``; the comment is the warning message, the finding of an information row, or
    what the check means (`bids_iron.report.qc.MEANINGS`). A yes/no information row (field of
    view) shows its finding as the value.

    Examples
    --------
    >>> from bids_iron.anatomy.quality import Check
    >>> check_rows([Check("brain mask volume", 1234.4, "mL", "800-2200 mL", "ok", "")])
    [('brain mask volume', '1234 mL', '800-2200 mL', 'pass', '')]
    """
    rows = []
    for check in checks:
        status = {"ok": "pass", "warn": "warn"}.get(check.status, "info")
        if isinstance(check.value, (bool, np.bool_)):
            rows.append((check.name, check.message, check.allowed, status, ""))
            continue
        comment = check.message or qc.MEANINGS.get(check.name, "")
        rows.append((check.name, _value_text(check.value, check.units), check.allowed, status,
                     comment))
    return rows


def mask_check_rows(quality):
    """`check_rows` of the phase stage's ``MaskQuality`` facts.

    The rows are `bids_iron.anatomy.quality.quality_status` (the checks behind the session's
    warnings). Returns [] when ``quality`` is empty.

    Examples
    --------
    >>> rows = mask_check_rows({"BrainVolumeML": 3612.0, "PartialFieldOfView": False,
    ...                         "FractionKeptByBackgroundRemoval": 0.7,
    ...                         "ResidualBackgroundFraction": 0.13})
    >>> rows[0][:4]
    ('brain mask volume', '3612 mL', '800-2200 mL', 'warn')
    >>> [r[3] for r in rows[1:]]
    ['info', 'pass', 'pass']
    """
    return check_rows(quality_checks.quality_status(quality_checks.quality_from_facts(quality)))


def qc_table_html(checks):
    """The QC table of ``checks``: one row a check, a status mark, warning rows tinted."""
    rows = check_rows(checks)
    cells = [(name, value, allowed, H.mark({"pass": "ok"}.get(status, status)), comment)
             for name, value, allowed, status, comment in rows]
    classes = ["warnrow" if row[3] == "warn" else None for row in rows]
    return H.table(cells, ("check", "value", "expected", "status", "comment"),
                   row_classes=classes).replace("<table>", '<table class="qc">', 1)


def qc_summary_html(checks):
    """The box over a session: how many checks passed, then each warning in full (the
    line of the session's log, with what to do)."""
    warned = [c for c in checks if c.status == "warn"]
    passed = sum(c.status == "ok" for c in checks)
    text = f"Quality control: {passed} check{'s' if passed != 1 else ''} passed"
    if warned:
        text += (f", {len(warned)} warning{'s' if len(warned) != 1 else ''}: "
                 + "; ".join(c.name for c in warned))
    items = "".join(f"<li><b>WARNING</b> {H.escape(c.message or c.name)}</li>" for c in warned)
    return (f'<div class="summary{" has-warn" if warned else ""}"><p>{H.escape(text)} '
            "(see <i>Quality control</i> below).</p>"
            + (f"<ul>{items}</ul>" if items else "") + "</div>")


def roi_summary_html(table):
    """Wide summary of a roistats table: one row per (roi, hemisphere), ``mean (sd)`` per metric.

    LFS and chi are shown in ppb and T2* in ms for readability (the TSV keeps ppm and s).
    With a ``qc_flag`` column, a ``QC`` column marks each row (pass, or warn with the reasons
    of `bids_iron.report.qc.flagged_rois`), flagged rows are tinted and a line above the table
    names them.
    """
    if table is None or len(table) == 0:
        return H.note("No ROI table: ROI statistics need the anatomy stage (atlas ROIs) or "
                      "--roi-dseg (your own segmentation).")
    flags = qc.flagged_rois(table)
    has_flags = "qc_flag" in table
    metrics = [m for m in _METRIC_TITLES if m in set(table["metric"])]
    header = ["roi", "hemisphere"]
    for m in metrics:
        name, unit, _, _ = _METRIC_TITLES[m]
        header.append(f"{name} mean (sd) [{unit}]")
    header += ["n voxels", "volume (mm³)"]
    if "label_volume_mm3" in table:
        header.append("label volume (mm³)")
    if has_flags:
        header.append("QC")
    rows, classes = [], []
    keys = list(dict.fromkeys(zip(table["roi"], table["hemisphere"])))
    grouped = {key: sub for key, sub in table.groupby(["roi", "hemisphere"], sort=False)}
    for key in keys:
        sub = grouped[key]
        by_metric = {r["metric"]: r for _, r in sub.iterrows()}
        row = [key[0], key[1]] + _metric_cells(by_metric, metrics)
        first = by_metric[metrics[0]] if metrics else sub.iloc[0]
        row += [H.number(int(first["n_voxels"])), _volume(first["volume_mm3"])]
        if "label_volume_mm3" in table:
            row.append(_volume(first["label_volume_mm3"]))
        reasons = flags.get((str(key[0]), str(key[1])))
        if has_flags:
            words = "; ".join(reasons or [])
            if reasons and "registration_similarity" in first:
                words += f"; similarity {H.number(first['registration_similarity'], 2)}"
            if reasons and "brain_fraction" in first:
                words += f"; in mask {H.number(100 * first['brain_fraction'], 3)} %"
            row.append(H.Markup(f'<div class="left">{H.mark("warn" if reasons else "ok")} '
                                f"{H.escape(words)}</div>"))
        rows.append(row)
        classes.append("flag" if reasons else None)
    head = ""
    if flags:
        names = ", ".join(f"{roi} {hemi}" for roi, hemi in flags)
        head = (f'<p class="note warn"><b>{len(flags)} ROI{"s" if len(flags) != 1 else ""} '
                f'flagged</b> (qc_flag of the ROI table; tinted below): {H.escape(names)}. '
                "Check their outlines on the maps before using their values.</p>")
    note = H.note("n voxels and volume: the eroded ROI voxels used for "
                  f"{metrics[0] if metrics else 'the first metric'} (other metrics may use "
                  "fewer where undefined); see the full table.")
    return head + H.table(rows, header, row_classes=classes) + note


def _metric_cells(by_metric, metrics):
    """``mean (sd)`` cells of ``metrics`` (in `_METRIC_TITLES` display units) from
    ``{metric: row}``; ``n/a`` where a metric has no row or no voxels."""
    cells = []
    for m in metrics:
        _, _, scale, digits = _METRIC_TITLES[m]
        r = by_metric.get(m)
        if r is None or not r["n_voxels"]:
            cells.append("n/a")
        else:
            cells.append(mean_sd_text(r["mean"] * scale, r["sd"] * scale, digits))
    return cells


def mean_sd_text(mean, sd, digits=4):
    """``"mean (sd)"`` with the sd to 2 significant digits and the mean to the same decimals
    (never ``-0``); ``digits`` significant digits for the mean when the sd is not a positive
    number.

    Examples
    --------
    >>> mean_sd_text(22.6426, 0.676368), mean_sd_text(-2.4e-08, 17.2), mean_sd_text(154.0, 1.7)
    ('22.64 (0.68)', '0 (17)', '154.0 (1.7)')
    >>> mean_sd_text(0.0123, float("nan"))
    '0.0123 (n/a)'
    """
    mean, sd = float(mean), float(sd)
    if not (np.isfinite(sd) and sd > 0) or not np.isfinite(mean):
        return f"{H.number(mean, digits)} ({H.number(sd, 2)})"
    decimals = int(min(6, max(0, 1 - np.floor(np.log10(sd)))))
    text = f"{mean:.{decimals}f}"
    if float(text) == 0:
        text = text.lstrip("-")
    return f"{text} ({sd:.{decimals}f})"


def lesion_summary_html(table):
    """Wide summary of a per-lesion table (`bids_iron.anatomy.roistats.lesion_table`): one
    row per lesion with its volume, centroid (world mm) and ``mean (sd)`` per metric in the
    units of `roi_summary_html`; "" without lesions."""
    if table is None or len(table) == 0:
        return ""
    metrics = [m for m in _METRIC_TITLES if m in set(table["metric"])]
    header = ["lesion", "volume (mm³)", "centroid x, y, z (mm)"]
    header += [f"{_METRIC_TITLES[m][0]} mean (sd) [{_METRIC_TITLES[m][1]}]" for m in metrics]
    rows = []
    for lesion, sub in table.groupby("lesion_id", sort=False):
        by_metric = {r["metric"]: r for _, r in sub.iterrows()}
        first = sub.iloc[0]
        volume = first.get("lesion_volume_mm3", first.get("volume_mm3"))
        centroid = ", ".join(H.number(first.get(f"centroid_{a}"), 3) for a in "xyz")
        rows.append([lesion, _volume(volume), centroid] + _metric_cells(by_metric, metrics))
    return (H.table(rows, header) + H.note(
        "Lesions: connected components of the lesion mask on the MEGRE grid, largest first, "
        "not eroded; the full table is in the lesion roistats TSV."))


def _full_table_html(table):
    if table is None or len(table) == 0:
        return ""
    return ("<details><summary>Full table (as in the roistats TSV; SI units: R2* 1/s, T2* s, "
            "LFS and chi ppm)</summary>" + H.frame(table, digits=6) + "</details>")


def _legend_html(labels, mask=True):
    """The colour legend of the outlines drawn: the brain mask (when there is one) and the
    ROIs present in ``labels``; "" when nothing is outlined."""
    present = set()
    if labels is not None:
        from ..anatomy.rois import NATIVE_LABELS

        for index in np.unique(labels):
            if int(index) in NATIVE_LABELS:
                present.add(NATIVE_LABELS[int(index)][0])
    items = ([f'<span><i style="background:{figures.MASK_COLOUR_HEX}"></i>brain mask</span>']
             if mask else [])
    items += [f'<span><i style="background:{colour}"></i>{H.escape(roi)}</span>'
              for roi, colour in figures.roi_legend()
              if roi in present and roi not in figures.NO_CONTOUR]
    return '<p class="legend">' + "".join(items) + "</p>" if items else ""


def _session_html(session, log):
    """HTML of one session's section."""
    t0 = time.perf_counter()
    vs = session.voxel_size
    affine = session.affine

    def ras(array):
        return figures.as_ras(array, affine, vs)[0] if array is not None else None

    _, vs_ras = figures.as_ras(np.zeros((1, 1, 1)), affine, vs)
    mag = np.asarray(session.magnitude)
    mag_first = ras(mag[..., 0] if mag.ndim == 4 else mag)
    mask = ras(None if session.mask is None else np.asarray(session.mask, dtype=bool))
    labels = ras(session.labels)
    lesion = None
    if session.lesions is not None:
        from ..anatomy.rois import NATIVE_INDEX

        lesion = ras(np.asarray(session.lesions) > 0)
        base = labels if labels is not None else np.zeros(lesion.shape, dtype=np.int16)
        labels = np.where(lesion, NATIVE_INDEX[("lesion", "bilateral")], base)
    slices = figures.pick_slices(mag_first.shape, labels=labels, mask=mask, n=N_SLICES)
    lesion_slices = None
    if session.lesions is not None and np.any(lesion):
        # the FLAIR (or R2*) row goes through the lesions instead: quantiles of their slices
        z = np.flatnonzero(lesion.sum(axis=(0, 1)))
        weights = lesion.sum(axis=(0, 1))[z]
        cdf = np.cumsum(weights) / weights.sum()
        lesion_slices = sorted({int(z[min(np.searchsorted(cdf, q), z.size - 1)])
                                for q in np.linspace(0.05, 0.95, len(slices))})
    crop = figures.crop_box(mask, mag_first.shape)

    out = [H.note(note) for note in session.notes]
    summary_at = len(out)  # the QC summary line goes here, once the checks are made

    # -- maps
    out.append("<h3>Maps</h3>")
    out.append(_legend_html(labels, mask is not None))
    shown = []
    lesion_row = "flair" if session.flair is not None else "r2star"
    for attr, title, quantity, units, symmetric, cmap in _MAP_VIEWS:
        array = getattr(session, attr)
        if array is None:
            continue
        these = slices
        if lesion_slices and attr == lesion_row:
            these, title = lesion_slices, f"{title}, slices through the lesions"
        png = figures.map_mosaic(ras(np.asarray(array)), these, vs_ras, title=title,
                                 units=units, mask=mask, labels=labels, symmetric=symmetric,
                                 cmap=cmap, crop=crop, quantity=quantity)
        out.append(H.figure(png, f"{title} [{units}]"))
        shown.append(title)
    if not shown:
        png = figures.map_mosaic(mag_first, slices, vs_ras, title="Magnitude (echo 1)",
                                 units="a.u.", mask=mask, labels=labels, crop=crop,
                                 quantity="magnitude")
        out.append(H.figure(png, "magnitude slices"))
    missing = [f"{title} ({_MISSING_WHY[attr]})" for attr, title, *_ in _MAP_VIEWS
               if getattr(session, attr) is None]
    if missing:
        out.append(H.note(f"Not available for this session: {'; '.join(missing)}."))
    outlines = ("; thin coloured lines: ROI outlines along the voxel edges, just inside "
                "each region (before erosion; white matter not outlined)"
                if labels is not None else "; no ROI outlines (no atlas or user ROIs)")
    where = ("in the mask (LFS, chi: symmetric, 99.5th percentile of |value|)"
             if mask is not None else "of the whole grid (no brain mask)")
    mask_words = "; yellow: brain mask outline" if mask is not None else ""
    out.append(H.note("Axial slices through the deep gray matter (z: slice index), subject "
                      f"left on the left (neurological){mask_words}{outlines}. Colour bars in "
                      f"the map's units; display ranges: 0.5-99.5th percentile {where}."))
    log.append(("maps", time.perf_counter() - t0))

    # -- ROI table
    t1 = time.perf_counter()
    out.append("<h3>ROI table</h3>")
    out.append(roi_summary_html(session.roi_table))
    out.append(_full_table_html(session.roi_table))
    if session.lesion_table is not None and len(session.lesion_table):
        out.append("<h3>Lesions</h3>")
        out.append(lesion_summary_html(session.lesion_table))
    log.append(("tables", time.perf_counter() - t1))

    # -- registration check
    t2 = time.perf_counter()
    out.append("<h3>Registration check</h3>")
    if session.template_in_native is not None:
        png = figures.registration_figure(mag_first, ras(np.asarray(session.template_in_native)),
                                          slices, vs_ras, mask=mask)
        out.append(H.figure(png, "template outlines over the subject magnitude"))
        out.append(H.note("Red: iso-intensity lines of the template warped to this session "
                          "(30, 55 and 80 % of its 99.5th percentile: brain outline and tissue "
                          "boundaries), over the first-echo magnitude. They should follow the "
                          "ventricles, the deep gray matter and the brain outline."))
    else:
        out.append(H.note("No template was registered to this session (the anatomy stage "
                          "did not run: --no-anatomy, or no template); nothing to check."))
    log.append(("registration", time.perf_counter() - t2))

    # -- QC
    t3 = time.perf_counter()
    out.append("<h3>Quality control</h3>")
    checks, warnings = session_checks(session)
    out.insert(summary_at, qc_summary_html(checks))
    if checks:
        out.append(qc_table_html(checks))
    shown_messages = {check.message for check in checks}
    for line in warnings:
        if line not in shown_messages:  # a warning of the phase stage with no row here
            out.append(f'<p class="note warn"><b>WARNING</b> {H.escape(line)}</p>')
    if session.residual is not None:
        png = figures.residual_figure(ras(np.asarray(session.residual)), mask, slices, vs_ras,
                                      labels=labels)
        out.append(H.figure(png, "R2* fit residual"))
    log.append(("qc", time.perf_counter() - t3))

    # -- methods
    paragraph, refs = methods.methods_text(methods_facts(session))
    out.append("<h3>Methods</h3>")
    out.append(f'<div class="methods"><p>{H.escape(paragraph)}</p>')
    if refs:
        out.append("<ol>" + "".join(f"<li>{H.escape(r)}</li>" for r in refs) + "</ol>")
    out.append("</div>")
    return H.section(session.label, out, id=H.anchor(session.label))


def methods_facts(session):
    """The facts of `bids_iron.report.methods.methods_text` for ``session``: its own facts,
    the bids-iron version that renders it unless they name one, and the ``source`` levels of
    its ROI table as ``ROISources`` (none without a table: no ROI statistics are claimed)."""
    facts = {"SoftwareVersion": __version__, **session.facts}
    table = session.roi_table
    facts["ROISources"] = ([] if table is None or len(table) == 0 else
                           list(dict.fromkeys(table.get("source", ["atlas"]))))
    return facts


def session_checks(session):
    """Every QC check of a session, in table order, and the phase stage's warning lines.

    The brain-mask and field checks (`_mask_checks`), then `bids_iron.report.qc.
    measure_checks` (SNR and the R2* fit residual in the brain mask, the chi sign check,
    reference values, solver convergence) and `bids_iron.report.qc.roi_flag_checks`.

    Returns
    -------
    checks : list of bids_iron.anatomy.quality.Check
    warnings : list of str
    """
    checks, warnings = _mask_checks(session)
    snr = residual = None
    mask = None if session.mask is None else np.asarray(session.mask, dtype=bool)
    if mask is not None:
        snr = figures.snr_estimate(session.magnitude, mask, residual=session.residual)
    if session.residual is not None:
        res = np.asarray(session.residual)
        residual = res[mask] if mask is not None else res[res > 0]
    checks = checks + qc.measure_checks(session.facts, snr, residual, session.label)
    checks += qc.roi_flag_checks(session.roi_table, session.label)
    return checks, warnings


def _mask_checks(session):
    """`quality_status` rows and warning lines of a session's brain mask and field.

    From the phase stage's ``MaskQuality`` and ``MaskWarnings`` facts (the lines its log has);
    without them, the volume and field-of-view checks of ``session.mask``.
    """
    facts = session.facts.get("MaskQuality")
    if facts:
        checks = quality_checks.quality_status(quality_checks.quality_from_facts(facts),
                                               session.label)
    elif session.mask is not None:
        mask = np.asarray(session.mask, dtype=bool)
        checks = quality_checks.quality_status(
            {"brain_volume_ml": figures.mask_volume_ml(mask, session.voxel_size),
             "partial_fov": quality_checks.touches_edge(mask)}, session.label)
    else:
        return [], []
    warnings = session.facts.get("MaskWarnings")
    if warnings is None:
        warnings = [check.message for check in checks if check.status == "warn"]
    return checks, list(warnings)


def check_session(session):
    """Raise ValueError unless ``session`` is a `SessionReport` with a magnitude and every
    array on the magnitude's grid."""
    if not isinstance(session, SessionReport):
        raise ValueError(f"sessions must be SessionReport objects, got {type(session).__name__}")
    if session.magnitude is None:
        raise ValueError(f"session {session.label}: magnitude is required")
    shape = np.shape(session.magnitude)[:3]
    for name in ("r2star", "lfs", "chi", "swi", "flair", "mask", "labels",
                 "template_in_native", "residual", "lesions"):
        array = getattr(session, name)
        if array is not None and np.shape(array)[:3] != shape:
            raise ValueError(f"session {session.label}: {name} has shape {np.shape(array)}, "
                             f"expected the magnitude grid {shape}")


def render_session_section(session, timings=None):
    """HTML of one session's section (a fragment `assemble_subject_report` can put together).

    Sessions are processed in parallel processes and possibly in different runs, so the
    workflow renders each section when its session finishes and assembles the subject's
    report from the stored sections afterwards. ``session`` is checked first
    (`check_session`); ``timings``, if given, gets ``(part, seconds)`` appended (benchmarks).
    """
    check_session(session)
    return _session_html(session, [] if timings is None else timings)


def assemble_subject_report(path, subject, sections):
    """Write a subject's report from ``sections``: list of ``(label, html_fragment)``.

    The page: title, navigation, the sections in this order, the software versions.
    Written atomically; returns the Path.
    """
    subject = str(subject)
    subject = subject.removeprefix("sub-")
    body = []
    if sections:
        body.append(H.nav([(H.anchor(label), label) for label, _ in sections]
                          + [("software", "software")]))
    body.extend(fragment for _, fragment in sections)
    versions = software_versions()
    body.append(H.section("Software", H.table(
        [(k, v if v is not None else "not installed") for k, v in versions.items()],
        ("package", "version")), id="software"))
    return H.write(path, H.page(f"bids-iron report: sub-{subject}", body,
                                summary=f"{len(sections)} session(s)"))


def write_subject_report(path, subject, sessions, timings=None):
    """Render ``sessions`` and write the subject's report: `render_session_section` for each,
    then `assemble_subject_report` (the workflow's two steps, in one call).

    Parameters
    ----------
    path : str or Path
        Output file, normally ``OUTPUT_DIR/sub-<label>.html``.
    subject : str
        Subject label (with or without ``sub-``).
    sessions : list of SessionReport
        One section per session, in this order; all are checked before anything is written.
    timings : list, optional
        If given, ``(session label, [(part, seconds), ...])`` are appended (benchmarks).

    Returns
    -------
    Path
        The written file.
    """
    for session in sessions:
        check_session(session)
    sections = []
    for session in sessions:
        log = []
        sections.append((session.label, render_session_section(session, log)))
        if timings is not None:
            timings.append((session.label, log))
    return assemble_subject_report(path, subject, sections)


def session_report_from_files(label, files, roi_table=None, lesion_table=None, facts=None,
                              notes=()):
    """A `SessionReport` from NIfTI files on the MEGRE grid (e.g. the written derivatives).

    Parameters
    ----------
    label : str
        Session label (``sub-01_ses-1``).
    files : dict of str -> path or None
        ``magnitude`` (required: the MEGRE magnitude, 4-D or the first echo) and any of
        ``r2star``, ``lfs``, ``chi``, ``swi``, ``flair``, ``mask``, ``labels``,
        ``template_in_native``, ``residual``, ``lesions``; a missing key, None or a path that
        does not exist leaves that piece out. The affine and voxel size come from the
        magnitude image.
    roi_table, lesion_table : pandas.DataFrame, optional
    facts : dict, optional
    notes : sequence of str

    Returns
    -------
    SessionReport
    """
    from pathlib import Path

    import nibabel as nib

    def load(key, dtype=np.float32):
        path = files.get(key)
        if path is None or not Path(path).exists():
            return None
        return np.asarray(nib.load(str(path)).dataobj, dtype=dtype)

    if files.get("magnitude") is None or not Path(files["magnitude"]).exists():
        raise ValueError(f"session {label}: files['magnitude'] is required and must exist")
    img = nib.load(str(files["magnitude"]))
    arrays = {key: load(key) for key in ("r2star", "lfs", "chi", "swi", "flair",
                                         "template_in_native", "residual")}
    mask = load("mask", np.uint8)
    labels = load("labels", np.int16)
    lesions = load("lesions", np.uint8)
    return SessionReport(
        label=label, magnitude=np.asarray(img.dataobj, dtype=np.float32), **arrays,
        mask=None if mask is None else mask > 0, labels=labels,
        lesions=None if lesions is None else lesions > 0, roi_table=roi_table,
        lesion_table=lesion_table, facts=dict(facts or {}),
        voxel_size=tuple(float(v) for v in img.header.get_zooms()[:3]), affine=img.affine,
        notes=list(notes))
