"""Group report: summary first, findings as sentences, tables before figures, figure rules."""

import numpy as np
import pandas as pd
import pytest

from bids_iron.group import plots
from bids_iron.group.findings import comparison_sentence, mixed_sentence
from bids_iron.group.run import run_group
from bids_iron.group.synthetic import make_cohort
from bids_iron.options import GroupOptions


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    bids, out, _ = make_cohort(root, n_per_group=(12, 12), rois=[("putamen", "left"),
                               ("globus_pallidus", "left")], metrics=("r2star", "chi"), seed=4)
    run_group(bids, out, GroupOptions(covariates=["age"]))
    return out, (out / "group" / "report.html").read_text()


def test_summary_first_then_tables_then_figures(report):
    _, html = report
    order = [html.index(s) for s in (
        "<h2>Summary</h2>", "Significant findings", "<h2>Group differences (group_comparisons",
        "<h2>Change over time (mixed models)", "<h2>Methods</h2>", "<h2>Figures</h2>")]
    assert order == sorted(order)
    assert html.index("data:image/png;base64,") > html.index("<h2>Figures</h2>")
    # the known group difference (MS R2* higher by 2/s) is written as a sentence, with its
    # interval, test, p, q and n, and its table row is highlighted
    summary = html[:html.index("<h2>Group differences")]
    assert "R2* in the left putamen was higher in MS than in HC by" in summary
    assert "95 % CI" in summary and "Welch t(" in summary and "n = 12 and 12" in summary
    assert 'class="sig"' in html


def test_sentences_read_like_a_paper():
    row = dict(section="baseline", measure="age_corrected", roi="thalamus", hemisphere="right",
               metric="chi", source="atlas", group_a="MS", group_b="HC", n_a=20, n_b=21,
               difference=-0.012, ci_low=-0.02, ci_high=-0.004, percent_difference=-15.0,
               t=-3.0, df=38.0, p_welch=0.0047, q_welch=0.012)
    text = comparison_sentence(row)
    assert text.startswith("At baseline, age-corrected \u03c7 in the right thalamus was lower "
                           "in MS than in HC by 0.012 ppm (95 % CI 0.004 to 0.02; -15 %;")
    assert "p = 0.0047, q = 0.012; n = 20 and 21)." in text
    row = dict(measure="raw", roi="putamen", hemisphere="left", metric="r2star",
               source="atlas", term="group[T.MS]:years", estimate=0.5, se=0.1, z=5.0,
               p=5.7e-7, q=2e-6, ci_low=0.3, ci_high=0.7, n_participants=50,
               n_sessions=100)
    assert mixed_sentence(row) == (
        "The yearly change of R2* in the left putamen was 0.5 1/s per year larger in MS than "
        "in HC (95 % CI 0.3 to 0.7; linear mixed model, z = 5, p < 0.001, q < 0.001; 50 "
        "participants, 100 sessions).")


def _captured(monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, stem: figs.append(fig) or [stem])
    return figs


def test_box_plot_points_over_boxes_no_box_for_small_groups(monkeypatch, tmp_path):
    figs = _captured(monkeypatch)
    rows = [dict(group=g, roi=roi, hemisphere="left", metric="r2star", source="atlas",
                 mean=1000.0 + 0.01 * i) for roi in ("putamen", "caudate")
            for g, n in (("HC", 6), ("MS", 2)) for i in range(n)]
    plots.box_strip(pd.DataFrame(rows), "r2star", tmp_path / "x", control_label="HC")
    fig = figs[0]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    ax = axes[0]
    # one box (HC, n = 6): box, median, 2 whiskers, 2 caps; MS (n = 2) points only
    assert len(ax.lines) == 6
    points = [c for c in ax.collections if c.get_offsets().shape[0]]
    assert [len(c.get_offsets()) for c in points] == [6, 2]
    assert all(c.get_zorder() > line.get_zorder() for c in points for line in ax.lines)
    # one y-axis for the metric; plain numbers (no "+1e3" offset)
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[1])
    fig.canvas.draw()
    assert ax.yaxis.get_major_formatter().get_offset() == ""


def test_no_fit_line_without_a_correlation(monkeypatch, tmp_path):
    figs = _captured(monkeypatch)
    rng = np.random.default_rng(0)
    rows = [dict(group="MS", roi=roi, hemisphere="left", metric="r2star", source="atlas",
                 mean=float(rng.normal(30, 1)), EDSS=float(i)) for roi in ("putamen", "caudate")
            for i in range(6)]
    unit = ("putamen", "left", "r2star", "atlas")
    plots.scatter_clinical(pd.DataFrame(rows), "r2star", "EDSS", tmp_path / "x",
                           fits={unit: (0.4, 0.2)})
    axes = {ax.get_title(): ax for ax in figs[0].axes if ax.get_visible()}
    assert len(axes["putamen L"].lines) == 1 and len(axes["caudate L"].lines) == 0


def test_report_as_a_browser_shows_it(report, tmp_path):
    """Headless Chromium renders the group report: summary text at the top, nothing spills to
    the right of the 1300 px page (wide tables scroll inside it), figures further down."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import screenshots
    from PIL import Image

    if screenshots.chromium() is None:
        pytest.skip("no Chromium to render the page")
    out, _ = report
    screenshots.screenshot(out / "group" / "report.html", tmp_path / "shot.png", height=12000,
                           tile=12000)
    pixels = np.asarray(Image.open(tmp_path / "shot.png").convert("L"))
    assert pixels.shape[0] > 3000 and (pixels[:1500] < 200).mean() > 0.01
    assert (pixels[:, 1360:] > 245).all()  # page 1300 px wide, centred: the margins stay
