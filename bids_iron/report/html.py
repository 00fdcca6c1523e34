"""The per-subject HTML report ``OUTPUT_DIR/sub-<label>.html``.

One self-contained file (figures embedded as base64 PNG, inline CSS, no scripts, no network
resources), one section per session: map mosaics with the brain-mask outline and atlas
contours, the ROI table, the registration check, QC (mask volume, R2* fit residual, SNR),
the methods paragraph with references; software versions at the end.

Usage::

    from bids_iron.report.html import SessionReport, write_subject_report
    write_subject_report(out / "sub-01.html", "01",
                         [SessionReport(label="sub-01_ses-1", magnitude=mag, r2star=r2,
                                        voxel_size=(1, 1, 2), affine=affine, ...)])
"""

from __future__ import annotations

import datetime
import html
import importlib.metadata
import platform
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import __version__
from ..bids.derivatives import atomic_path
from . import figures, methods

#: Packages whose versions the report lists (distribution names).
SOFTWARE = ("numpy", "scipy", "nibabel", "pandas", "matplotlib", "pybids", "templateflow",
            "antspyx", "numba")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1280px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.5em;border-bottom:2px solid #444}h2{font-size:1.3em;margin-top:2em;
border-bottom:1px solid #999}h3{font-size:1.05em;margin-top:1.4em}
img{max-width:100%;display:block;margin:0.3em 0}
table{border-collapse:collapse;font-size:0.82em;margin:0.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}
.legend span{display:inline-block;margin-right:0.9em;font-size:0.85em}
.legend i{display:inline-block;width:0.9em;height:0.9em;margin-right:0.3em;
vertical-align:middle;border:1px solid #555}
.note{color:#555;font-size:0.9em}.warn{color:#a00}
.methods{background:#f6f6f6;border-left:4px solid #888;padding:0.6em 1em}
.methods ol{font-size:0.9em}
nav a{margin-right:1em}
"""

#: How each map is shown: (attribute, title, units, symmetric range, colour map).
_MAP_VIEWS = (
    ("r2star", "R2*", "1/s", False, "gray"),
    ("lfs", "Local field shift", "ppm", True, "gray"),
    ("chi", "Susceptibility (chi)", "ppm", True, "gray"),
    ("swi", "SWI", "a.u.", False, "gray"),
    ("flair", "FLAIR (in MEGRE space)", "a.u.", False, "gray"),
)

_METRIC_TITLES = {"r2star": ("R2*", "1/s", 1.0, 4), "t2star": ("T2*", "ms", 1000.0, 4),
                  "lfs": ("LFS", "ppb", 1000.0, 4), "chi": ("chi", "ppb", 1000.0, 4)}


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


def _esc(text):
    return html.escape(str(text), quote=True)


def _anchor(label):
    return "s-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(label))


def _img(png, alt):
    return f'<img src="{figures.png_data_uri(png)}" alt="{_esc(alt)}">'


def _fmt(value, digits=4):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}g}"


def _volume(value):
    value = float(value)
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"


def mask_check_rows(quality):
    """(check, value with unit, status) rows of the phase stage's ``MaskQuality`` facts.

    Status is ``ok``, ``WARN`` (outside the range in brackets, as in the session's log) or
    ``info``. Returns [] when ``quality`` is empty.

    Examples
    --------
    >>> rows = mask_check_rows({"BrainVolumeML": 3612.0, "PartialFieldOfView": False,
    ...                         "FractionKeptByBackgroundRemoval": 0.7,
    ...                         "ResidualBackgroundFraction": 0.13})
    >>> rows[0]
    ('brain mask volume', '3612 mL', 'WARN (800-2200 mL)')
    >>> [r[2] for r in rows[1:]]
    ['info', 'ok (>= 60 %)', 'ok (<= 25 %)']
    """
    from ..anatomy import quality as q

    if not quality:
        return []
    rows = []
    vol = quality.get("BrainVolumeML")
    partial = bool(quality.get("PartialFieldOfView"))
    if vol is not None:
        lo, hi = q.BRAIN_VOLUME_ML
        ok = lo <= vol <= hi
        status = "ok" if ok else ("WARN (partial coverage)" if partial and vol < lo
                                  else f"WARN ({lo:.0f}-{hi:.0f} mL)")
        rows.append(("brain mask volume", f"{vol:.0f} mL", status))
    rows.append(("field of view", "cuts the brain (mask touches its edge)" if partial
                 else "covers the brain", "info"))
    kept = quality.get("FractionKeptByBackgroundRemoval")
    if kept is not None:
        limit = 100 * q.MIN_KEPT_FRACTION
        rows.append(("mask kept by background removal", f"{100 * kept:.0f} %",
                     f"ok (>= {limit:.0f} %)" if kept >= q.MIN_KEPT_FRACTION
                     else f"WARN (< {limit:.0f} %)"))
    res = quality.get("ResidualBackgroundFraction")
    if res is not None:
        limit = 100 * q.MAX_RESIDUAL_BACKGROUND
        rows.append(("residual background (local-field variance in a 2nd-order fit)",
                     f"{100 * res:.0f} %", f"ok (<= {limit:.0f} %)"
                     if res <= q.MAX_RESIDUAL_BACKGROUND else f"WARN (> {limit:.0f} %)"))
    return rows


def _table_html(rows, header):
    parts = ["<table><thead><tr>"]
    parts += [f"<th>{_esc(h)}</th>" for h in header]
    parts.append("</tr></thead><tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def roi_summary_html(table):
    """Wide summary of a roistats table: one row per (roi, hemisphere), ``mean (sd)`` per metric.

    LFS and chi are shown in ppb and T2* in ms for readability (the TSV keeps ppm and s).
    """
    if table is None or len(table) == 0:
        return '<p class="note">No ROI table.</p>'
    metrics = [m for m in _METRIC_TITLES if m in set(table["metric"])]
    header = ["roi", "hemisphere"]
    for m in metrics:
        name, unit, _, _ = _METRIC_TITLES[m]
        header.append(f"{name} mean (sd) [{unit}]")
    header += ["n voxels", "volume (mm³)"]
    if "label_volume_mm3" in table:
        header.append("label volume (mm³)")
    rows = []
    keys = list(dict.fromkeys(zip(table["roi"], table["hemisphere"])))
    grouped = {key: sub for key, sub in table.groupby(["roi", "hemisphere"], sort=False)}
    for key in keys:
        sub = grouped[key]
        by_metric = {r["metric"]: r for _, r in sub.iterrows()}
        row = [key[0], key[1]]
        for m in metrics:
            _, _, scale, digits = _METRIC_TITLES[m]
            r = by_metric.get(m)
            if r is None or not r["n_voxels"]:
                row.append("n/a")
            else:
                row.append(f"{_fmt(r['mean'] * scale, digits)} ({_fmt(r['sd'] * scale, 2)})")
        first = by_metric[metrics[0]] if metrics else sub.iloc[0]
        row += [_fmt(int(first["n_voxels"])), _volume(first["volume_mm3"])]
        if "label_volume_mm3" in table:
            row.append(_volume(first["label_volume_mm3"]))
        rows.append(row)
    note = ("<p class=\"note\">n voxels and volume: the eroded ROI voxels used for "
            f"{_esc(metrics[0] if metrics else 'the first metric')} (other metrics may use "
            "fewer where undefined); see the full table.</p>")
    return _table_html(rows, header) + note


def _full_table_html(table):
    if table is None or len(table) == 0:
        return ""
    return ("<details><summary>Full table (as in the roistats TSV; SI units: R2* 1/s, T2* s, "
            "LFS and chi ppm)</summary>"
            + table.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.6g}",
                            border=0)
            + "</details>")


def _legend_html(labels):
    present = set()
    if labels is not None:
        from ..anatomy.rois import NATIVE_LABELS

        for index in np.unique(labels):
            if int(index) in NATIVE_LABELS:
                present.add(NATIVE_LABELS[int(index)][0])
    items = [f'<span><i style="background:{figures.MASK_COLOUR_HEX}"></i>brain mask</span>']
    items += [f'<span><i style="background:{colour}"></i>{_esc(roi)}</span>'
              for roi, colour in figures.roi_legend()
              if roi in present and roi not in figures.NO_CONTOUR]
    return '<p class="legend">' + "".join(items) + "</p>"


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
    slices = figures.pick_slices(mag_first.shape, labels=labels, mask=mask)
    lesion_slices = None
    if session.lesions is not None and np.any(lesion):
        # the FLAIR (or R2*) row goes through the lesions instead: quantiles of their slices
        z = np.flatnonzero(lesion.sum(axis=(0, 1)))
        weights = lesion.sum(axis=(0, 1))[z]
        cdf = np.cumsum(weights) / weights.sum()
        lesion_slices = sorted({int(z[min(np.searchsorted(cdf, q), z.size - 1)])
                                for q in np.linspace(0.05, 0.95, len(slices))})
    crop = figures.crop_box(mask, mag_first.shape)

    anchor = _anchor(session.label)
    out = [f'<section id="{anchor}"><h2>{_esc(session.label)}</h2>']
    for note in session.notes:
        out.append(f'<p class="note">{_esc(note)}</p>')

    # -- maps
    out.append("<h3>Maps</h3>")
    shown = []
    lesion_row = "flair" if session.flair is not None else "r2star"
    for attr, title, units, symmetric, cmap in _MAP_VIEWS:
        array = getattr(session, attr)
        if array is None:
            continue
        these = slices
        if lesion_slices and attr == lesion_row:
            these, title = lesion_slices, f"{title}, slices through the lesions"
        png = figures.map_mosaic(ras(np.asarray(array)), these, vs_ras, title=title,
                                 units=units, mask=mask, labels=labels, symmetric=symmetric,
                                 cmap=cmap, crop=crop)
        out.append(_img(png, title))
        shown.append(title)
    if not shown:
        png = figures.map_mosaic(mag_first, slices, vs_ras, title="Magnitude (echo 1)",
                                 units="a.u.", mask=mask, labels=labels, crop=crop)
        out.append(_img(png, "magnitude slices"))
    out.append(_legend_html(labels))
    missing = [t for a, t, *_ in _MAP_VIEWS if getattr(session, a) is None]
    if missing:
        out.append(f'<p class="note">Not available for this session: {_esc(", ".join(missing))}.'
                   "</p>")
    out.append('<p class="note">Axial slices through the deep gray matter, subject left on '
               "the left (neurological); yellow: brain mask outline; coloured: atlas ROI "
               "contours (before erosion; white matter not outlined). Display ranges: "
               "0.5-99.5th percentile in the mask (LFS, chi: symmetric, 99.5th percentile of "
               "|value|).</p>")
    log.append(("maps", time.perf_counter() - t0))

    # -- ROI table
    t1 = time.perf_counter()
    out.append("<h3>ROI table</h3>")
    out.append(roi_summary_html(session.roi_table))
    out.append(_full_table_html(session.roi_table))
    if session.lesion_table is not None and len(session.lesion_table):
        out.append("<h3>Lesions</h3>")
        out.append(session.lesion_table.to_html(index=False, na_rep="n/a",
                                                float_format=lambda v: f"{v:.5g}", border=0))
    log.append(("tables", time.perf_counter() - t1))

    # -- registration check
    t2 = time.perf_counter()
    out.append("<h3>Registration check</h3>")
    if session.template_in_native is not None:
        png = figures.registration_figure(mag_first, ras(np.asarray(session.template_in_native)),
                                          slices, vs_ras, mask=mask)
        out.append(_img(png, "template edges over the subject magnitude"))
        out.append('<p class="note">Red: edges (strongest 8 % of the gradient) of the '
                   "template warped to this session, over the first-echo magnitude. They "
                   "should follow the ventricles, the deep gray matter and the brain outline."
                   "</p>")
    else:
        out.append('<p class="note">No template image in native space was given; the '
                   "registration cannot be checked here.</p>")
    log.append(("registration", time.perf_counter() - t2))

    # -- QC
    t3 = time.perf_counter()
    out.append("<h3>Quality control</h3>")
    rows = []
    checks = mask_check_rows(session.facts.get("MaskQuality"))
    if mask is not None and not checks:
        volume = figures.mask_volume_ml(mask, vs)
        flag = "" if 800 <= volume <= 2200 else " (outside 800-2200 mL: partial coverage or " \
                                                "a mask problem?)"
        rows.append(("brain mask volume", f"{volume:.1f} mL{flag}"))
    if mask is not None:
        snr = figures.snr_estimate(mag, np.asarray(session.mask, dtype=bool),
                                   residual=session.residual)
        rows.append(("SNR, echo 1 (background noise)", _fmt(snr["snr_background_first"], 3)))
        rows.append(("SNR, last echo (background noise)", _fmt(snr["snr_background_last"], 3)))
        rows.append(("SNR, echo 1 (R2* fit residual, lower bound)", _fmt(snr["snr_fit"], 3)))
    if session.residual is not None:
        res = np.asarray(session.residual)
        sel = np.asarray(session.mask, dtype=bool) if session.mask is not None else res > 0
        vals = res[sel]
        vals = vals[np.isfinite(vals)]
        if vals.size:
            rows.append(("R2* fit residual, median / 95th percentile",
                         f"{np.median(vals):.3g} / {np.percentile(vals, 95):.3g}"))
    for key in ("SignCheckHighR2starMedianChi", "ChiReferenceValue", "LFSReferenceValue"):
        if session.facts.get(key) is not None:
            rows.append((key, _fmt(session.facts[key], 4)))
    if checks:
        out.append(_table_html(checks, ("mask and field check", "value", "status")))
    for line in session.facts.get("MaskWarnings") or ():
        out.append(f'<p class="note"><b>WARNING</b> {_esc(line)}</p>')
    if rows:
        out.append(_table_html(rows, ("measure", "value")))
    if session.residual is not None:
        png = figures.residual_figure(ras(np.asarray(session.residual)), mask, slices, vs_ras,
                                      labels=labels)
        out.append(_img(png, "R2* fit residual"))
    out.append('<p class="note">SNR (background): mean brain signal / noise sigma, sigma from '
               "the median magnitude of the air in the grid corners, assuming Rayleigh noise "
               "(an index to compare sessions of one protocol; coil combination and filtering "
               "bias it). SNR (fit residual): mean first-echo brain signal / median noise "
               "implied by the mono-exponential fit residual. Residual: "
               "sqrt(sum (S - fit)^2 / sum S^2) per voxel.</p>")
    log.append(("qc", time.perf_counter() - t3))

    # -- methods
    paragraph, refs = methods.methods_text(session.facts)
    out.append("<h3>Methods</h3>")
    out.append(f'<div class="methods"><p>{_esc(paragraph)}</p>')
    if refs:
        out.append("<ol>" + "".join(f"<li>{_esc(r)}</li>" for r in refs) + "</ol>")
    out.append("</div></section>")
    return "\n".join(out)


def render_session_section(session):
    """HTML of one session's section (a fragment `assemble_subject_report` can put together).

    Sessions are processed in parallel processes and possibly in different runs, so the
    workflow renders each section when its session finishes and assembles the subject's
    report from the stored sections afterwards.
    """
    return _session_html(session, [])


def assemble_subject_report(path, subject, sections):
    """Write a subject's report from ``sections``: list of ``(label, html_fragment)``."""
    from pathlib import Path

    subject = str(subject)
    subject = subject[4:] if subject.startswith("sub-") else subject
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = _report_head(subject, when, len(sections))
    if sections:
        parts.append("<nav>" + "".join(f'<a href="#{_anchor(label)}">{_esc(label)}</a>'
                                       for label, _ in sections)
                     + '<a href="#software">software</a></nav>')
    parts.extend(fragment for _, fragment in sections)
    parts.extend(_report_tail())
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def _report_head(subject, when, n_sessions):
    return ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            f"<title>bids-iron report: sub-{_esc(subject)}</title>",
            f"<style>{_CSS}</style>", "</head>", "<body>",
            f"<h1>bids-iron report: sub-{_esc(subject)}</h1>",
            f'<p class="note">bids-iron {_esc(__version__)}, generated {_esc(when)}; '
            f"{n_sessions} session(s).</p>"]


def _report_tail():
    parts = ['<section id="software"><h2>Software</h2>']
    versions = software_versions()
    parts.append(_table_html([(k, v if v is not None else "not installed")
                              for k, v in versions.items()], ("package", "version")))
    parts.append("</section>")
    parts.append("</body></html>")
    return parts


def render_subject_report(subject, sessions, timings=None):
    """The HTML text of a subject's report (see `write_subject_report`)."""
    subject = str(subject)
    subject = subject[4:] if subject.startswith("sub-") else subject
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = _report_head(subject, when, len(sessions))
    if sessions:
        parts.append("<nav>" + "".join(f'<a href="#{_anchor(s.label)}">{_esc(s.label)}</a>'
                                       for s in sessions)
                     + '<a href="#software">software</a></nav>')
    for session in sessions:
        log = []
        parts.append(_session_html(session, log))
        if timings is not None:
            timings.append((session.label, log))
    parts.extend(_report_tail())
    return "\n".join(parts) + "\n"


def write_subject_report(path, subject, sessions, timings=None):
    """Write the subject's HTML report atomically.

    Parameters
    ----------
    path : str or Path
        Output file, normally ``OUTPUT_DIR/sub-<label>.html``.
    subject : str
        Subject label (with or without ``sub-``).
    sessions : list of SessionReport
        One section per session, in this order.
    timings : list, optional
        If given, ``(session label, [(part, seconds), ...])`` are appended (benchmarks).

    Returns
    -------
    Path
        The written file.
    """
    from pathlib import Path

    for session in sessions:
        if not isinstance(session, SessionReport):
            raise ValueError(f"sessions must be SessionReport objects, got "
                             f"{type(session).__name__}")
        if session.magnitude is None:
            raise ValueError(f"session {session.label}: magnitude is required")
        shape = np.shape(session.magnitude)[:3]
        for name in ("r2star", "lfs", "chi", "swi", "flair", "mask", "labels",
                     "template_in_native", "residual", "lesions"):
            array = getattr(session, name)
            if array is not None and np.shape(array)[:3] != shape:
                raise ValueError(f"session {session.label}: {name} has shape "
                                 f"{np.shape(array)}, expected the magnitude grid {shape}")
    text = render_subject_report(subject, sessions, timings=timings)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


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
