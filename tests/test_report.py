"""The subject HTML report: one offline file, sections, optional pieces, methods text.

Reports are made as the workflow makes them: `render_session_section` of each session, stored
at `report_section_path`, then `assemble_reports` (see `write_report`).
"""

import re
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import screenshots

from bids_iron.anatomy.quality import (Check, mask_field_quality, quality_facts,
                                       quality_status, quality_warnings)
from bids_iron.anatomy.rois import NATIVE_INDEX
from bids_iron.anatomy.roistats import roi_statistics
from bids_iron.report import figures, methods
from bids_iron.report.html import (SessionReport, check_rows, mask_check_rows, methods_facts,
                                   render_session_section, roi_summary_html, session_checks,
                                   software_versions, write_subject_report)
from bids_iron.workflow import assemble_reports, report_section_path

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "wbr", "source"}


class Checker(HTMLParser):
    """Collects tags, img sources, hrefs and checks that non-void tags are balanced."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags = [], [], []
        self.srcs, self.hrefs, self.h3, self._in_h3 = [], [], [], False
        self.doctype = False

    def handle_decl(self, decl):
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.srcs.append(attrs.get("src", ""))
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "h3":
            self._in_h3 = True
            self.h3.append("")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag == "h3":
            self._in_h3 = False
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()

    def handle_data(self, data):
        if self._in_h3:
            self.h3[-1] += data


def check_html(path):
    text = path.read_text(encoding="utf-8")
    checker = Checker()
    checker.feed(text)
    checker.close()
    assert checker.doctype
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, checker.stack
    # offline: no external resources at all
    for value in checker.srcs + checker.hrefs:
        assert not re.match(r"\s*(https?:)?//", value), value
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", text, re.I)
    assert "url(" not in text  # no CSS-loaded resources
    return text, checker


def qc_rows(text):
    """{check: (value, expected, status, comment)} of each QC table of a report, in order."""
    import html as html_lib

    tables = re.findall(r'<table class="qc">(.*?)</table>', text, re.DOTALL)
    out = []
    for table in tables:
        rows = {}
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.DOTALL)[1:]:
            cells = [html_lib.unescape(re.sub(r"<[^>]+>", "", c))
                     for c in re.findall(r"<td>(.*?)</td>", row, re.DOTALL)]
            rows[cells[0]] = tuple(cells[1:])
        out.append(rows)
    return out


def write_report(out, subject, sessions):
    """The workflow's report path: each session's section rendered and stored where the
    workflow keeps it, then the subject's page assembled from the stored sections."""
    for session in sessions:
        text = render_session_section(session)
        path = report_section_path(SimpleNamespace(root=out),
                                   SimpleNamespace(subject=subject, label=session.label))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    written = assemble_reports(out, [subject])
    assert written == [out / f"sub-{subject}.html"]
    return written[0]


def phase_facts(label, mask, lfs, voxel_size):
    """The brain-mask QC facts the phase stage puts in ``phase.facts`` (the workflow passes
    them on to the report): MaskQuality in the sidecar form and the warning lines."""
    eroded = mask.copy()
    eroded[[0, -1]] = False  # background removal erodes the mask
    quality = mask_field_quality(mask, mask & np.roll(eroded, 1, axis=0), lfs, voxel_size)
    return {"MaskQuality": quality_facts(quality),
            "MaskWarnings": quality_warnings(quality, label),
            "LFSReferenceValue": 0.0012, "ChiReferenceValue": -0.0031,
            "SignCheckHighR2starMedianChi": 0.0101}


def small_session(label="sub-01_ses-1", full=True, seed=0):
    rng = np.random.default_rng(seed)
    shape = (40, 48, 32)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    c = [(s - 1) / 2 for s in shape]
    brain = sum(((g - ci) / r) ** 2 for g, ci, r in zip(grids, c, (15, 19, 12))) <= 1
    mag = np.abs(rng.normal(0, 10, shape + (4,)) + 1j * rng.normal(0, 10, shape + (4,)))
    mag[brain] += 800 * np.exp(-25 * 0.005 * np.arange(1, 5))
    if not full:
        return SessionReport(label=label, magnitude=mag.astype(np.float32))
    labels = np.zeros(shape, np.int16)
    labels[brain] = NATIVE_INDEX[("white_matter", "left")]
    labels[12:17, 20:27, 14:19] = NATIVE_INDEX[("putamen", "left")]
    labels[23:28, 20:27, 14:19] = NATIVE_INDEX[("putamen", "right")]
    labels[15:19, 27:31, 15:19] = NATIVE_INDEX[("caudate", "left")]
    r2 = np.where(brain, 20 + rng.normal(0, 1, shape), 0).astype(np.float32)
    chi = np.where(brain, rng.normal(0, 0.02, shape), 0).astype(np.float32)
    lesions = np.zeros(shape, bool)
    lesions[20:22, 30:32, 20:22] = True
    table = roi_statistics({"r2star": r2, "chi": chi}, labels, (1, 1, 2), lesion_mask=lesions)
    # as the workflow's report section puts them together: fit, phase facts, options, anatomy
    facts = {"EchoTime": [0.005, 0.01, 0.015, 0.02], "MagneticFieldStrength": 3.0,
             "R2starMethod": "nlls", "ROIErosion": 1, "VesselExclusion": None,
             **phase_facts(label, brain, chi * 0.5, (1.0, 1.0, 2.0)),
             "UnwrappingMethod": "laplacian", "BackgroundRemovalMethod": "vsharp",
             "QSMMethod": "tkd", "Template": "MNI152NLin2009cAsym", "Atlases": ["MASSP20"],
             "SoftwareVersion": "0.1.0"}
    return SessionReport(
        label=label, magnitude=mag.astype(np.float32), r2star=r2, lfs=chi * 0.5, chi=chi,
        swi=mag[..., 2], flair=mag[..., 0] * 0.7, mask=brain, labels=labels,
        template_in_native=brain * 100.0, residual=np.where(brain, 0.01, 0).astype(np.float32),
        lesions=lesions, roi_table=table, facts=facts, voxel_size=(1.0, 1.0, 2.0),
        affine=np.diag([1.0, 1.0, 2.0, 1.0]), notes=["a note <b>escaped</b>"])


def test_full_report(tmp_path):
    session = small_session()
    path = write_report(tmp_path, "01", [session])
    assert path == tmp_path / "sub-01.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub-01", "sub-01.html"]
    assert not list(tmp_path.rglob(".*"))  # no temporary left
    text, checker = check_html(path)
    assert "<title>bids-iron report: sub-01</title>" in text
    assert [h.strip() for h in checker.h3] == ["Maps", "ROI table", "Registration check",
                                               "Quality control", "Methods"]
    # R2*, LFS, chi, SWI, FLAIR mosaics + registration + residual figures, all embedded
    assert len(checker.srcs) == 7
    assert all(s.startswith("data:image/png;base64,") for s in checker.srcs)
    assert 'id="software"' in text and "numpy" in text and "bids-iron" in text
    # one QC table of named checks with units, expected ranges and pass/warn marks
    (qc,) = qc_rows(text)
    # the phase stage's mask checks: a ~29 mL test brain is outside the adult range
    value, expected, status, comment = qc["brain mask volume"]
    assert (value, expected) == ("29 mL", "800-2200 mL") and status == "\u26a0 warn"
    assert comment.startswith("sub-01_ses-1: brain mask volume 29 mL is outside")
    assert qc["mask kept by background removal"][1:3] == (">= 60 %", "\u2713 pass")
    assert qc["field of view"][0] == "covers the brain" and qc["field of view"][2] == "info"
    assert qc["chi reference value subtracted"][0] == "-0.0031 ppm"
    assert check_rows([Check("x", -0.0, "ppm", "", "info", "")])[0][1] == "0 ppm"
    assert qc["chi sign check (median chi of the 1 % highest-R2* voxels)"][:3] == (
        "0.0101 ppm", ">= 0 ppm", "\u2713 pass")
    assert qc["R2* fit residual (median)"][0] == "1 %"
    assert float(qc["SNR, last echo (background noise)"][0]) > 3
    assert qc["SNR, last echo (background noise)"][1:3] == (">= 3", "\u2713 pass")
    assert not any(key.startswith(("MaskQuality", "Sign", "ChiRef")) for key in qc)
    assert 'class="summary has-warn"' in text and "1 warning: brain mask volume" in text
    assert text.index('class="summary') < text.index("<h3>Maps</h3>")
    # the warning in full at the top of the session, as in its log
    assert text.count("<b>WARNING</b> sub-01_ses-1: brain mask volume 29 mL is outside") == 1
    assert "putamen" in text and "R2* mean (sd) [1/s]" in text
    assert "Marquardt" in text and "Fonov" in text  # references from the facts
    assert "&lt;b&gt;escaped&lt;/b&gt;" in text
    assert "Not available" not in text
    assert 'alt="FLAIR (in MEGRE space), slices through the lesions [a.u.]"' in text
    for alt in ("R2* [1/s]", "Local field shift [ppm]", "Susceptibility (chi) [ppm]"):
        assert f'alt="{alt}"' in text
    # larger mosaics: the page's width (~1200 px), two rows of four slices
    import base64
    import io

    from PIL import Image

    sizes = [Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size
             for src in checker.srcs[:5]]
    assert all(width >= 1200 and height >= 500 for width, height in sizes), sizes


@pytest.mark.skipif(screenshots.chromium() is None, reason="no Chromium to render the page")
def test_report_as_a_browser_shows_it(tmp_path):
    """Headless Chromium renders the report: it has content, nothing spills to the right of
    the 1300 px page (tables, mosaics, legend), and each map mosaic is shown at its full
    ~1215 px (a black band that wide: its title bar), not shrunk."""
    from PIL import Image

    path = write_report(tmp_path / "out", "01", [small_session()])
    screenshots.screenshot(path, tmp_path / "shot.png", height=9000, tile=9000)
    pixels = np.asarray(Image.open(tmp_path / "shot.png").convert("L"))
    assert pixels.shape[0] > 3000 and (pixels < 200).mean() > 0.05
    assert (pixels[:, 1360:] > 245).all()  # the page is 1300 px wide, centred: margins stay

    def longest_black_run(row):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row < 20, [0]]).astype(int)))
        return int(np.max(edges[1::2] - edges[::2])) if edges.size else 0

    wide = np.array([longest_black_run(row) >= 1200 for row in pixels])
    bands = np.flatnonzero(np.diff(wide.astype(int)) == 1)
    assert len(bands) >= 5  # R2*, LFS, chi, SWI, FLAIR at least


def test_optional_pieces_missing(tmp_path):
    only_mag = small_session("sub-02_ses-a", full=False)
    mag3d = SessionReport(label="sub-02_ses-b", magnitude=only_mag.magnitude[..., 0],
                          mask=np.ones(only_mag.magnitude.shape[:3], bool))
    path = write_report(tmp_path, "02", [only_mag, mag3d])
    text, checker = check_html(path)
    assert text.count("<section id=\"s-sub-02_ses-") == 2
    assert 'href="#s-sub-02_ses-a"' in text
    assert text.index('id="s-sub-02_ses-a"') < text.index('id="s-sub-02_ses-b"')
    # a mask without the phase stage's facts: its own volume and field-of-view checks
    qc = qc_rows(text)
    assert len(qc) == 1 and qc[0]["field of view"][0].startswith("cuts the brain")
    assert qc[0]["brain mask volume"][3].startswith(
        "sub-02_ses-b: brain mask volume 61 mL is below 800 mL")
    assert "Quality control: 0 checks passed" in text  # the magnitude-only session
    assert "Not available for this session" in text
    # the magnitude-only session has no mask: no mask in the legend, nor in the note
    first = text[:text.index('id="s-sub-02_ses-b"')]
    assert "brain mask</span>" not in first and "yellow: brain mask" not in first
    assert "0.5-99.5th percentile of the whole grid (no brain mask)" in first
    assert "No template was registered to this session" in text
    assert "SWI (made with --swi and the phase images)" in text
    assert "no ROI outlines" in text
    assert "No ROI table" in text
    assert len(checker.srcs) == 2  # one magnitude mosaic per session


def test_bad_arguments(tmp_path):
    session = small_session()
    session.chi = session.chi[:-1]
    with pytest.raises(ValueError, match="chi"):
        write_report(tmp_path, "01", [session])
    with pytest.raises(ValueError, match="SessionReport"):
        write_report(tmp_path, "01", [{"label": "x"}])
    with pytest.raises(ValueError, match="chi"):  # the one-call form checks every session first
        write_subject_report(tmp_path / "sub-01.html", "01", [small_session(full=False), session])
    assert not any(tmp_path.iterdir())


def test_write_subject_report_timings(tmp_path):
    """The one-call form (benchmarks): the same sections and page, with per-part timings."""
    timings = []
    path = write_subject_report(tmp_path / "sub-03.html", "sub-03",
                                [small_session("sub-03_ses-1", full=False)], timings=timings)
    text, checker = check_html(path)
    assert "<title>bids-iron report: sub-03</title>" in text and len(checker.srcs) == 1
    assert [label for label, _ in timings] == ["sub-03_ses-1"]
    assert [part for part, _ in timings[0][1]] == ["maps", "tables", "registration", "qc"]


@pytest.mark.parametrize(("quality", "n_warnings"), [
    ({"brain_volume_ml": 3400.0, "partial_fov": False, "kept_fraction": 0.95,
      "residual_background": 0.01}, 1),
    ({"brain_volume_ml": 400.0, "partial_fov": True, "kept_fraction": 0.6,
      "residual_background": 0.25}, 1),  # the limits themselves pass
    ({"brain_volume_ml": 1500.0, "partial_fov": False, "kept_fraction": 0.59,
      "residual_background": 0.4}, 2),
    ({"brain_volume_ml": 800.0, "partial_fov": False, "kept_fraction": 0.7,
      "residual_background": None}, 0)])
def test_report_checks_and_warnings_agree(quality, n_warnings):
    """The report's check table and the session's warnings are one set of checks: a WARN row
    for each warning line, in order, on the numbers as stored in the sidecar."""
    rows = mask_check_rows(quality_facts(quality))
    warned = [row[0] for row in rows if row[3] == "warn"]
    assert all(row[4] for row in rows if row[3] == "warn")  # the message is the comment
    lines = quality_warnings(quality, "s")
    assert len(warned) == len(lines) == n_warnings
    assert [r.name for r in quality_status(quality) if r.status == "warn"] == warned
    words = {"brain mask volume": "brain mask volume", "mask kept by background removal":
             "background removal kept", "residual background (local-field variance in a "
             "2nd-order fit)": "2nd-order polynomial"}
    assert all(words[name] in line for name, line in zip(warned, lines))
    assert {r[0] for r in rows if r[3] == "info"} == {"field of view"}


def test_mosaic_structure():
    """Each mosaic: a tile per slice (>= 250 px wide), a colour bar labelled with the quantity
    and its physical units and no offset, thin outlines along voxel edges that leave the
    inside of a nucleus uncovered."""
    session = small_session()
    slices = [14, 15, 16, 17, 18]
    fig = figures.mosaic_figure(session.chi, slices, (1.0, 1.0, 2.0), title="Susceptibility",
                                units="ppm", quantity="chi", mask=session.mask,
                                labels=session.labels, symmetric=True)
    (ax, bar) = fig.get_axes()  # one image axis for the slices, the colour bar's
    assert [t.get_text() for t in ax.texts if t.get_text().startswith("z=")] == [
        f"z={k}" for k in slices]
    assert {t.get_text() for t in ax.texts} >= {"L", "R"}
    assert bar.get_ylabel() == "chi [ppm]"
    assert not bar.yaxis.get_offset_text().get_text()
    ticks = bar.get_yticks()
    assert ticks.min() < 0 < ticks.max()  # symmetric range of a chi map
    sheet = ax.get_images()[0].get_array()
    crop = figures.crop_box(session.mask, session.chi.shape)
    tile_px = (ax.get_position().width * fig.get_figwidth() * figures.DPI
               * (crop[0].stop - crop[0].start) / sheet.shape[1])
    assert tile_px >= 250
    (lines,) = ax.collections
    assert len(lines.get_segments()) > 100 and max(lines.get_linewidths()) <= 1.0
    # every outline segment lies on a voxel edge, inset into its region: none crosses the
    # inside of the left putamen (x 12..16, y 20..26 on slice 14)
    segments, which = figures.outline_segments(session.labels[:, :, 14])
    putamen = NATIVE_INDEX[("putamen", "left")]
    mine = segments[which == putamen]
    xs, ys = mine[..., 0], mine[..., 1]
    assert xs.min() >= 11.5 and xs.max() <= 16.5 and ys.min() >= 19.5 and ys.max() <= 26.5
    inner = (xs > 11.5 + 0.5) & (xs < 16.5 - 0.5) & (ys > 19.5 + 0.5) & (ys < 26.5 - 0.5)
    assert not inner.all(axis=1).any()
    assert len(mine) == 2 * (5 + 7)  # the rectangle's perimeter in voxel edges


def test_slices_through_nuclei_and_orientation():
    labels = np.zeros((10, 10, 40), np.int16)
    labels[3:6, 3:6, 20:25] = NATIVE_INDEX[("putamen", "left")]
    slices = figures.pick_slices(labels.shape, labels=labels, n=4)
    assert slices[0] >= 20 and slices[-1] <= 24
    mask = np.zeros(labels.shape, bool)
    mask[2:8, 2:8, 10:31] = True
    slices = figures.pick_slices(labels.shape, mask=mask, n=3)
    assert slices == [16, 20, 24]
    # an LPS-stored grid is shown in RAS: the array is flipped on the first two axes
    array = np.arange(24).reshape(2, 3, 4)
    ras, vs = figures.as_ras(array, np.diag([-1.0, -2.0, 3.0, 1.0]), (1.0, 2.0, 3.0))
    assert (ras == array[::-1, ::-1, :]).all() and vs == (1.0, 2.0, 3.0)
    ras, vs = figures.as_ras(array, np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0],
                                              [0, 0, 0, 1.0]]), (1.0, 2.0, 3.0))
    assert ras.shape == (4, 2, 3) and vs == (3.0, 1.0, 2.0)


def test_snr_estimate_on_known_noise():
    rng = np.random.default_rng(5)
    shape = (48, 48, 32)
    sigma = 10.0
    noise = np.abs(rng.normal(0, sigma, shape) + 1j * rng.normal(0, sigma, shape))
    mask = np.zeros(shape, bool)
    mask[14:34, 14:34, 10:22] = True
    mag = noise.copy()
    mag[mask] = 500.0 + rng.normal(0, sigma, mask.sum())
    snr = figures.snr_estimate(mag, mask)
    assert snr["snr_background_first"] == pytest.approx(50.0, rel=0.1)
    assert snr["snr_fit"] is None
    # zero-filled background: no background estimate
    zero = np.where(mask, mag, 0.0)
    assert figures.snr_estimate(zero, mask)["snr_background_first"] is None


def test_methods_paragraph_and_references():
    text = methods.methods_paragraph({
        "EchoTime": [0.004, 0.008, 0.012], "MagneticFieldStrength": 7.0,
        "R2starMethod": "arlo", "UnwrappingMethod": "region_growing",
        "BackgroundRemovalMethod": "pdf", "QSMMethod": "tv_admm",
        "ChiReference": "CSF of the lateral ventricles", "Atlases": ["MASSP20"],
        "ROISources": ["atlas"], "VesselExclusion": {"metric": "chi", "k": 3}})
    assert "B0 = 7 T" in text and "TE = 4-12 ms" in text
    assert "ARLO" in text and "ROMEO" in text and "Liu T" in text and "Bilgic B" in text
    assert "[1] Pei M" in text
    assert "Milovic C" in text  # a two-reference entry is split into two numbered ones
    assert "median + 3 x 1.4826 x MAD" in text
    paragraph, refs = methods.methods_text({})
    assert "bids-iron" in paragraph and refs == []
    # every existing reference string splits into whole references
    for table in (methods.R2STAR, methods.UNWRAP, methods.BACKGROUND, methods.DIPOLE):
        for _, reference in table.values():
            for ref in methods.split_references(reference):
                assert re.search(r"(19|20)\d\d;\d+", ref), ref


def test_flagged_rois_shown(tmp_path):
    """A qc_flag column (roistats): flagged ROIs named above the table, their rows tinted and
    marked with the reason, and counted as a warning of the QC table; absent: no QC column."""
    session = small_session()
    table = session.roi_table.copy()
    table["qc_flag"] = ""
    table["registration_similarity"] = 0.9
    caudate = (table.roi == "caudate") & (table.hemisphere == "left")
    table.loc[caudate & (table.metric == "chi"), "qc_flag"] = "few voxels"
    table.loc[caudate, "registration_similarity"] = 0.31
    session.roi_table = table
    text, _ = check_html(write_report(tmp_path, "01", [session]))
    assert "<b>1 ROI flagged</b>" in text and "caudate left" in text
    flagged = re.findall(r'<tr class="flag">(.*?)</tr>', text, re.DOTALL)
    assert len(flagged) == 1 and "<td>caudate</td>" in flagged[0]
    assert "chi: few voxels; similarity 0.31" in flagged[0] and "mark-warn" in flagged[0]
    row = qc_rows(text)[0]["ROIs flagged in the ROI table (qc_flag)"]
    assert row[:3] == ("1 ROIs", "0 ROIs", "\u26a0 warn") and "caudate left" in row[3]
    assert "2 warnings: brain mask volume; ROIs flagged" in text
    session.roi_table = table.drop(columns="qc_flag")
    plain = roi_summary_html(session.roi_table)
    assert "flagged" not in plain and 'class="flag"' not in plain and "<th>QC</th>" not in plain
    assert not any("qc_flag" in check.name for check in session_checks(session)[0])


def test_measured_checks_and_limits():
    """The checks beyond the mask: last-echo SNR below 3 warns (Rician floor), a negative chi
    sign check warns, background removal that did not converge warns (as the phase stage's
    log does) while a dipole inversion at its iteration cap is information."""
    from bids_iron.report import qc

    def status(facts, snr=None):
        return {r.name: r.status for r in qc.measure_checks(facts, snr, session="s")}

    assert status({}, {"snr_background_last": 3.0})["SNR, last echo (background noise)"] == "ok"
    assert status({}, {"snr_background_last": 2.9})["SNR, last echo (background noise)"] == "warn"
    sign = "chi sign check (median chi of the 1 % highest-R2* voxels)"
    assert status({"SignCheckHighR2starMedianChi": 0.0})[sign] == "ok"
    assert status({"SignCheckHighR2starMedianChi": -0.001})[sign] == "warn"
    stuck = {"n_iter": 60, "converged": False, "max_iter": 60}
    assert status({"BackgroundRemoval": stuck})["background removal"] == "warn"
    assert status({"DipoleInversion": stuck})["dipole inversion"] == "info"
    assert status({"DipoleInversion": {"n_iter": 0}})["dipole inversion"] == "info"  # TKD
    assert status({}, {}) == {}


def test_lesion_summary():
    """One row per lesion: volume, world centroid and mean (sd) per metric in display units."""
    from bids_iron.anatomy.roistats import lesion_table
    from bids_iron.report.html import lesion_summary_html

    session = small_session()
    lesions = np.zeros(session.lesions.shape, bool)
    lesions[5:7, 5:7, 5:7] = True  # 8 voxels
    lesions[30:33, 30:33, 20:23] = True  # 27 voxels, the first row
    table = lesion_table({"r2star": session.r2star, "chi": session.chi}, lesions, (1, 1, 2),
                         affine=session.affine)
    text = lesion_summary_html(table)
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>", text)
    assert rows == [("1", "54", "31, 31, 42"), ("2", "16", "5.5, 5.5, 11")]
    assert "R2* mean (sd) [1/s]" in text and "chi mean (sd) [ppb]" in text
    assert lesion_summary_html(None) == ""


def test_methods_follow_what_was_run():
    """Each sentence comes from a fact of the run: solver parameters, version, ROI sources;
    no ROI statistics are claimed without an ROI table (e.g. --no-anatomy)."""
    base = {"SoftwareVersion": "9.8.7", "EchoTime": [0.004, 0.008, 0.012],
            "R2starMethod": "nlls", "UnwrappingMethod": "laplacian",
            "BackgroundRemovalMethod": "vsharp", "ROIErosion": 1,
            "BackgroundRemoval": {"n_iter": 0, "converged": True}}
    tkd = methods.methods_text({**base, "QSMMethod": "tkd",
                                "DipoleInversion": {"n_iter": 0, "threshold": 0.19}})[0]
    assert "bids-iron 9.8.7" in tkd and "k-space threshold 0.19" in tkd
    assert "per nucleus" not in tkd and "Mean, median" not in tkd  # no ROI table
    assert "iterations" not in tkd and "Deep gray matter" not in tkd
    admm = methods.methods_text({
        **base, "QSMMethod": "tv_admm", "ROISources": ["atlas", "user"],
        "BackgroundRemovalFallback": "pdf (vsharp left no brain after its erosion)",
        "DipoleInversion": {"n_iter": 60, "converged": False, "alpha": 2e-4, "max_iter": 60,
                            "tol": 0.01},
        "RegularizationSelection": {"Rule": "L-curve, inflection", "Chosen": 2e-4},
        "Template": "MNI152NLin2009cAsym", "Atlases": ["MASSP20"],
        "Registration": "via T1w (T1w->MEGRE rigid, template->T1w affine+SyN)",
        "RegistrationTool": "ANTsPy 0.5.4", "Lesions": "no lesion mask found"})[0]
    assert ("alpha = 0.0002, chosen by the L-curve (inflection); 60 iterations of at most 60, "
            "tolerance 0.01, stopped before reaching the tolerance") in admm
    assert "PDF was used instead (vsharp left no brain" in admm
    assert "per nucleus and hemisphere" in admm and "user-supplied segmentation" in admm
    assert "via T1w" in admm and "ANTsPy 0.5.4" in admm
    assert "Lesion masks" not in admm  # "no lesion mask found" is not a lesion mask


def test_report_methods_from_the_session(tmp_path):
    """The report's methods name the running bids-iron version and claim ROI statistics only
    when the session has an ROI table."""
    from bids_iron import __version__

    session = small_session()
    session.facts.pop("SoftwareVersion")
    with_table = methods.methods_text(methods_facts(session))[0]
    assert f"bids-iron {__version__}," in with_table and "per nucleus and hemisphere" in with_table
    session.roi_table = None
    assert "per nucleus" not in methods.methods_text(methods_facts(session))[0]


def test_software_versions():
    versions = software_versions()
    assert versions["bids-iron"] and versions["numpy"] == np.__version__
    assert versions["pandas"] == pd.__version__
    assert "antspyx" in versions and "templateflow" in versions


def test_session_report_from_files(tmp_path):
    import nibabel as nib

    from bids_iron.report.html import session_report_from_files

    s = small_session()
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    files = {}
    for key in ("magnitude", "r2star", "mask", "labels"):
        array = getattr(s, key)
        array = array.astype(np.float32 if key in ("magnitude", "r2star") else np.int16)
        files[key] = tmp_path / f"{key}.nii.gz"
        nib.save(nib.Nifti1Image(array, affine), str(files[key]))
    files["chi"] = tmp_path / "absent.nii.gz"
    session = session_report_from_files("sub-01_ses-1", files, roi_table=s.roi_table)
    assert session.voxel_size == (1.0, 1.0, 2.0) and session.chi is None
    assert session.mask.dtype == bool and session.magnitude.shape == s.magnitude.shape
    text, checker = check_html(write_report(tmp_path, "01", [session]))
    assert len(checker.srcs) == 1  # the R2* mosaic only (no residual, no template)
    assert qc_rows(text)[0]["brain mask volume"][2] == "\u26a0 warn"  # the mask's own check
