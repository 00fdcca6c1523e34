"""Group level: a synthetic cohort with known effects, exact p-values, degenerate inputs."""

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from bids_iron.errors import InputError
from bids_iron.group.agecorr import fit_age_curve, saturation
from bids_iron.group.compare import compare_two
from bids_iron.group.run import run_group
from bids_iron.group.synthetic import TRUTH, make_cohort
from bids_iron.options import GroupOptions

ROIS = [("putamen", "left"), ("putamen", "right"), ("globus_pallidus", "left"),
        ("caudate", "bilateral")]
METRICS = ("r2star", "t2star", "chi")


def read(out, name):
    return pd.read_csv(out / "group" / name, sep="\t", keep_default_na=False, na_values=["n/a"])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """30 HC + 30 MS, two sessions two years apart; run once with figures."""
    root = tmp_path_factory.mktemp("cohort")
    bids, out, truth = make_cohort(root, n_per_group=(30, 30), rois=ROIS, metrics=METRICS,
                                   seed=3)
    written = run_group(bids, out, GroupOptions(clinical_columns=["EDSS"],
                                                   covariates=["age", "sex"]))
    return bids, out, truth, written


# -- outputs --------------------------------------------------------------------------------

def test_outputs_have_dictionaries_figures_and_report(cohort):
    _, out, _, written = cohort
    group = out / "group"
    names = {p.name for p in written}
    for stem in ("group_roistats", "group_summary", "group_comparisons", "group_agefit",
                 "group_longitudinal", "group_longitudinal_summary", "group_correlations",
                 "group_regressions"):
        assert f"{stem}.tsv" in names and f"{stem}.json" in names
        table = read(out, f"{stem}.tsv")
        sidecar = json.loads((group / f"{stem}.json").read_text())
        assert list(sidecar) == list(table.columns)
        assert all(entry["Description"] for entry in sidecar.values())
    assert json.loads((group / "group_roistats.json").read_text())["age"]["Units"] == "years"
    for stem in ("boxplot_r2star", "EDSS_r2star", "spaghetti_chi", "boxplotagecorrected_chi"):
        assert (group / f"group_desc-{stem}.png").stat().st_size > 1000
        assert (group / f"group_desc-{stem}.svg").read_text().lstrip().startswith("<?xml")
    html = (group / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 12 and "group_comparisons.tsv" in html
    assert not list(group.glob(".*tmp*"))  # atomic writes left nothing behind


def test_cohort_table_joins_demographics(cohort):
    _, out, _, _ = cohort
    data = read(out, "group_roistats.tsv")
    assert len(data) == 60 * 2 * len(ROIS) * len(METRICS)
    assert set(data.group) == {"HC", "MS"}
    # age: participants.tsv age at the first session + acq_time difference (2 years)
    wide = data.drop_duplicates(["participant_id", "session_id"]).pivot(
        index="participant_id", columns="session_id", values="age")
    np.testing.assert_allclose(wide["ses-02"] - wide["ses-01"], 2.0, atol=0.01)
    assert set(data.age_source) == {"participants.tsv+acq_time"}
    assert data.loc[data.group == "HC", "EDSS"].isna().all()


# -- known effects ----------------------------------------------------------------------------

def test_group_difference_recovered(cohort):
    _, out, _, _ = cohort
    cmp = read(out, "group_comparisons.tsv")
    base = cmp[(cmp.section == "baseline") & (cmp.metric == "r2star")]
    assert set(zip(base.group_a, base.group_b)) == {("MS", "HC")}
    true = TRUTH["r2star"][3]
    raw = base[base.measure == "raw"]
    corr = base[base.measure == "age_corrected"]
    # direction everywhere; magnitude within 3 standard errors (age-corrected values)
    assert (raw.difference > 0).all() and (raw.cohen_d > 0).all() and (raw.r_rb > 0).all()
    se = np.sqrt(corr.sd_a ** 2 / corr.n_a + corr.sd_b ** 2 / corr.n_b)
    assert (np.abs(corr.difference - true) < 3 * se).all()
    assert (corr.q_welch < 0.05).all() and (corr.q_mwu < 0.05).all()
    # chi: paramagnetic increase in MS too
    chi = cmp[(cmp.section == "baseline") & (cmp.metric == "chi") & (cmp.measure == "age_corrected")]
    assert (chi.difference > 0).all()
    # t2star = 1/r2star goes the other way
    t2 = cmp[(cmp.section == "baseline") & (cmp.metric == "t2star") & (cmp.measure == "raw")]
    assert (t2.difference < 0).all()


def test_age_curve_recovered(cohort):
    _, out, _, _ = cohort
    fits = read(out, "group_agefit.tsv")
    a, b, c = TRUTH["r2star"][:3]
    r2 = fits[fits.metric == "r2star"]
    assert (r2.model == "exponential").sum() >= 3
    for row in r2[r2.model == "exponential"].itertuples():
        for age in (30.0, 50.0, 65.0):
            assert abs(saturation(age, row.a, row.b, row.c) - saturation(age, a, b, c)) < 1.2
    data = read(out, "group_roistats.tsv")
    hc = data[(data.group == "HC") & data.is_baseline]
    assert np.isclose(fits.reference_age.iloc[0], hc.drop_duplicates("participant_id").age.mean())
    # age-corrected control values no longer depend on age; raw ones do
    for _, chunk in hc[hc.metric == "r2star"].groupby(["roi", "hemisphere"]):
        assert abs(stats.pearsonr(chunk.age, chunk.mean_agecorrected).statistic) < 0.2
    raw_r = [stats.pearsonr(ch.age, ch["mean"]).statistic
             for _, ch in hc[hc.metric == "r2star"].groupby(["roi", "hemisphere"])]
    assert np.mean(raw_r) > 0.4


def test_fit_age_curve_exact_and_fallback():
    age = np.linspace(10, 80, 40)
    fit = fit_age_curve(age, saturation(age, 12.0, 0.04, 15.0))
    assert fit["model"] == "exponential"
    np.testing.assert_allclose([fit["a"], fit["b"], fit["c"]], [12.0, 0.04, 15.0], rtol=1e-4)
    lin = fit_age_curve(age, 3.0 + 0.1 * age)
    assert lin["model"] == "linear" and "linear fit used" in lin["note"]
    np.testing.assert_allclose([lin["slope"], lin["intercept"]], [0.1, 3.0])
    few = fit_age_curve([30, 40], [1.0, 2.0])
    assert few["model"] == "none" and "no age fit" in few["note"]


def test_two_year_change_recovered(cohort):
    _, out, _, _ = cohort
    long = read(out, "group_longitudinal.tsv")
    assert long.participant_id.nunique() == 60
    np.testing.assert_allclose(long.interval_years, 2.0, atol=0.01)
    r2 = long[long.metric == "r2star"]
    np.testing.assert_allclose(r2.change, r2.value_last - r2.value_first)
    np.testing.assert_allclose(r2.change_per_year, r2.change / r2.interval_years)
    np.testing.assert_allclose(r2.percent_change, 100 * r2.change / r2.value_first.abs())
    cmp = read(out, "group_comparisons.tsv")
    ch = cmp[(cmp.section == "change") & (cmp.measure == "change_per_year")
             & (cmp.metric == "r2star")]
    true = TRUTH["r2star"][4]  # extra yearly increase in MS (ageing is common to both)
    se = np.sqrt(ch.sd_a ** 2 / ch.n_a + ch.sd_b ** 2 / ch.n_b)
    assert (np.abs(ch.difference - true) < 3 * se).all()
    assert (ch.difference > 0).all()
    summ = read(out, "group_longitudinal_summary.tsv")
    ms = summ[(summ.group == "MS") & (summ.measure == "change") & (summ.metric == "r2star")]
    assert (ms["mean"] > 0).all() and (ms.p_wilcoxon < 0.05).all()


def test_edss_slope_recovered(cohort):
    _, out, _, _ = cohort
    corr = read(out, "group_correlations.tsv")
    ms = corr[(corr.subset == "MS") & (corr.measure == "raw") & (corr.metric == "r2star")]
    true = TRUTH["r2star"][5]
    assert (ms.pearson_r > 0.3).all() and (ms.spearman_rho > 0.3).all()
    assert (np.abs(ms.ols_beta - true) < 3 * ms.ols_beta_se).all()
    assert (ms.ols_n == 30).all() and (ms.ols_covariates == "age + sex").all()
    hc = corr[(corr.subset == "HC")]
    assert hc.pearson_r.isna().all() and hc.note.str.contains("n = 0 pairs").all()


# -- p-values equal scipy/statsmodels ---------------------------------------------------------

def test_comparison_pvalues_match_scipy(cohort):
    _, out, _, _ = cohort
    data = read(out, "group_roistats.tsv")
    long = read(out, "group_longitudinal.tsv")
    cmp = read(out, "group_comparisons.tsv")
    checked = 0
    for row in cmp.itertuples():
        if row.section == "change":
            src, col = long, row.measure
        else:
            src = data[data.is_baseline] if row.section == "baseline" else \
                data[data.session_id == row.section]
            col = "mean" if row.measure == "raw" else "mean_agecorrected"
        unit = src[(src.roi == row.roi) & (src.hemisphere == row.hemisphere)
                   & (src.metric == row.metric)]
        a = unit.loc[unit.group == row.group_a, col].dropna().to_numpy()
        b = unit.loc[unit.group == row.group_b, col].dropna().to_numpy()
        mw = stats.mannwhitneyu(a, b, alternative="two-sided")
        tt = stats.ttest_ind(a, b, equal_var=False)
        np.testing.assert_allclose([row.u, row.p_mwu, row.t, row.p_welch],
                                   [mw.statistic, mw.pvalue, tt.statistic, tt.pvalue],
                                   rtol=1e-6)
        pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1))
                         / (len(a) + len(b) - 2))
        np.testing.assert_allclose(row.cohen_d, (a.mean() - b.mean()) / pooled, rtol=1e-6)
        np.testing.assert_allclose(row.r_rb, 2 * mw.statistic / (len(a) * len(b)) - 1,
                                   rtol=1e-6)
        checked += 1
    assert checked == len(cmp) == len(ROIS) * len(METRICS) * (3 * 2 + 3)
    for _, fam in cmp.groupby(["section", "measure"]):
        np.testing.assert_allclose(fam.q_mwu, stats.false_discovery_control(fam.p_mwu),
                                   rtol=1e-6)
        np.testing.assert_allclose(fam.q_welch, stats.false_discovery_control(fam.p_welch),
                                   rtol=1e-6)


def test_correlation_and_ols_pvalues_match(cohort):
    _, out, _, _ = cohort
    data = read(out, "group_roistats.tsv")
    base = data[data.is_baseline]
    corr = read(out, "group_correlations.tsv")
    reg = read(out, "group_regressions.tsv")
    rows = corr[(corr.measure == "raw") & corr.p_pearson.notna()]
    assert len(rows) == 2 * len(ROIS) * len(METRICS)  # subsets all and MS
    for row in rows.itertuples():
        unit = base[(base.roi == row.roi) & (base.hemisphere == row.hemisphere)
                    & (base.metric == row.metric) & base.EDSS.notna()]
        if row.subset != "all":
            unit = unit[unit.group == row.subset]
        pr = stats.pearsonr(unit.EDSS, unit["mean"])
        sr = stats.spearmanr(unit.EDSS, unit["mean"])
        np.testing.assert_allclose([row.pearson_r, row.p_pearson, row.spearman_rho,
                                    row.p_spearman],
                                   [pr.statistic, pr.pvalue, sr.statistic, sr.pvalue], rtol=1e-6)
        X = sm.add_constant(np.column_stack([unit.EDSS, unit.age, (unit.sex == "M").astype(float)]))
        res = sm.OLS(unit["mean"].to_numpy(), X).fit()
        np.testing.assert_allclose([row.ols_beta, row.p_ols, row.ols_r2],
                                   [res.params[1], res.pvalues[1], res.rsquared], rtol=1e-6)
        np.testing.assert_allclose(row.ols_beta_std,
                                   res.params[1] * unit.EDSS.std() / unit["mean"].std(), rtol=1e-6)
        terms = reg[(reg.subset == row.subset) & (reg.measure == "raw") & (reg.roi == row.roi)
                    & (reg.hemisphere == row.hemisphere) & (reg.metric == row.metric)]
        assert list(terms.term) == ["const", "EDSS", "age", "sex=M"]
        np.testing.assert_allclose(terms.p, res.pvalues, rtol=1e-6)


def test_failed_age_fits_are_one_warning_not_one_per_unit(caplog):
    """3 controls: every unit falls back to the linear fit; the log says so once, with the
    count (the demo's group level printed 150 such lines)."""
    import logging

    from bids_iron.group.agecorr import fit_age_curves

    rows = [dict(participant_id=f"sub-{i}", group="HC", age=30.0 + 10 * i, is_baseline=True,
                 roi=roi, hemisphere="left", metric="r2star", source="atlas", mean=20.0 + i)
            for i in range(3) for roi in ("caudate", "putamen", "thalamus", "pulvinar")]
    log = logging.getLogger("bids_iron.test_agefit")
    with caplog.at_level(logging.WARNING, logger=log.name):
        fits = fit_age_curves(pd.DataFrame(rows), log=log)
    assert (fits.model == "linear").all()
    assert len(caplog.records) == 1
    assert "for 4 of 4 units (caudate/left/r2star/atlas" in caplog.records[0].getMessage()


def test_small_samples_get_exact_or_no_correlation():
    """n = 3 or 4 pairs: no correlation (rho = 1 with n = 3 used to read p < 0.001); n = 5-9:
    Spearman's p is the exact one of every pairing (here rho = 1 with n = 5: 2/120)."""
    import itertools

    from bids_iron.group.correlations import MIN_N_CORR, correlate

    rows = []
    for n, roi in ((3, "caudate"), (4, "putamen"), (5, "thalamus"), (7, "pulvinar")):
        edss = np.arange(n, dtype=float) + (np.arange(n) % 2) * 0.25  # unequal, no ties
        value = 20 + edss if roi != "pulvinar" else 20 + np.array([2, 1, 4, 3, 7, 5, 6.])
        rows += [dict(group="MS", roi=roi, hemisphere="left", metric="r2star", source="atlas",
                      mean=float(v), EDSS=float(e)) for v, e in zip(value, edss)]
    corr, _ = correlate(pd.DataFrame(rows), "mean", ["EDSS"], subsets=[])
    corr = corr.set_index("roi")
    assert MIN_N_CORR == 5
    for roi in ("caudate", "putamen"):
        assert np.isnan(corr.loc[roi, "p_spearman"]) and "no correlation" in corr.loc[roi, "note"]
    assert corr.loc["thalamus", "spearman_rho"] == pytest.approx(1.0)
    assert corr.loc["thalamus", "p_spearman"] == pytest.approx(2 / 120)
    x = np.array([r["EDSS"] for r in rows if r["roi"] == "pulvinar"])
    y = np.array([r["mean"] for r in rows if r["roi"] == "pulvinar"])
    rho = stats.spearmanr(x, y).statistic
    null = [stats.spearmanr(x, y[list(p)]).statistic for p in itertools.permutations(range(7))]
    assert corr.loc["pulvinar", "p_spearman"] == pytest.approx(
        np.mean(np.abs(null) >= abs(rho) - 1e-12))


def test_longitudinal_pvalues_match(cohort):
    _, out, _, _ = cohort
    long = read(out, "group_longitudinal.tsv")
    summ = read(out, "group_longitudinal_summary.tsv")
    for row in summ.itertuples():
        x = long[(long.group == row.group) & (long.roi == row.roi)
                 & (long.hemisphere == row.hemisphere) & (long.metric == row.metric)][row.measure]
        np.testing.assert_allclose([row.p_wilcoxon, row.p_ttest],
                                   [stats.wilcoxon(x).pvalue, stats.ttest_1samp(x, 0).pvalue],
                                   rtol=1e-6)


def test_change_tests_batched_equal_scipy_per_sample():
    """The within-group tests of change run once per sample size: the numbers must be those
    of scipy called on each sample alone (exactly): exact Wilcoxon p, ties and zeros
    (permutation or normal p, run alone), n > 50 (normal p)."""
    from bids_iron.group.longitudinal import change_tests

    rng = np.random.default_rng(1)
    samples = []
    for k in range(150):
        x = rng.normal(0.3, 1, 5 if k % 3 else int(rng.integers(3, 20)))
        if k % 5 == 1:
            x = np.round(x) + 0.5 * (k % 2)
        if k % 7 == 2:
            x[0] = 0.0
        if k % 11 == 3:
            x = rng.normal(0, 1, 60) if k % 2 else np.round(rng.normal(0, 1, 60))
        samples.append(x)
    for x, got in zip(samples, change_tests(samples)):
        w, t = stats.wilcoxon(x, alternative="two-sided"), stats.ttest_1samp(x, 0.0)
        assert got == (float(w.statistic), float(w.pvalue), float(t.statistic),
                       float(t.pvalue)), x


def test_compare_two_docs_cohens_d_pooled():
    r = compare_two([1, 2, 3, 4, np.nan], [5, 6, 7, 9], "MS", "HC")
    assert r["n_a"] == 4 and "MS: 1 n/a value left out" in r["note"]
    pooled = np.sqrt((3 * np.var([1, 2, 3, 4], ddof=1) + 3 * np.var([5, 6, 7, 9], ddof=1)) / 6)
    assert np.isclose(r["cohen_d"], (2.5 - 6.75) / pooled)
    assert r["r_rb"] == -1.0


# -- degenerate inputs --------------------------------------------------------------------------

def write_dataset(root, subjects, values, sessions=("ses-01",), acq=True, extra_cols=None):
    """subjects: {sub: (group, age)}; values(sub, ses, roi, metric) -> float."""
    bids, out = root / "bids", root / "out"
    bids.mkdir(parents=True)
    prow = []
    for i, (sub, (group, age)) in enumerate(subjects.items()):
        prow.append({"participant_id": sub, "group": group, "age": age,
                     **(extra_cols(sub) if extra_cols else {})})
        srows = []
        for k, ses in enumerate(sessions):
            rows = [{"roi": roi, "hemisphere": "left", "metric": m, "mean": values(sub, ses, roi, m),
                     "median": 0, "sd": 0, "n_voxels": 10, "volume_mm3": 80, "source": "atlas"}
                    for roi in ("putamen", "caudate") for m in ("r2star", "chi")]
            d = out / sub / ses / "anat" if ses else out / sub / "anat"
            d.mkdir(parents=True)
            name = f"{sub}_{ses}_roistats.tsv" if ses else f"{sub}_roistats.tsv"
            pd.DataFrame(rows).to_csv(d / name, sep="\t", index=False, na_rep="n/a")
            srows.append({"session_id": ses, "acq_time": f"{2018 + 2 * k}-03-0{1 + i % 5}T10:00:00"})
        if sessions[0] and acq:
            (bids / sub).mkdir()
            pd.DataFrame(srows).to_csv(bids / sub / f"{sub}_sessions.tsv", sep="\t", index=False)
    pd.DataFrame(prow).to_csv(bids / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    return bids, out


def _rng_values(seed=0):
    rng = np.random.default_rng(seed)
    return lambda sub, ses, roi, m: float(rng.normal(25 if m == "r2star" else 0.05, 1))


def test_one_group_only(tmp_path):
    subjects = {f"sub-{i:02d}": ("MS", 30 + i) for i in range(8)}
    bids, out = write_dataset(tmp_path, subjects, _rng_values(), sessions=("ses-01", "ses-02"))
    run_group(bids, out, GroupOptions(clinical_columns=(), figures=True))
    cmp = read(out, "group_comparisons.tsv")
    assert cmp.p_mwu.isna().all() and cmp.p_welch.isna().all() and cmp.cohen_d.isna().all()
    assert cmp.note.str.contains("only one group").all()
    fits = read(out, "group_agefit.tsv")
    assert (fits.model == "none").all() and fits.note.str.contains("no control").all()
    assert read(out, "group_roistats.tsv").mean_agecorrected.isna().all()
    assert (out / "group" / "report.html").exists()


def test_one_session_only_and_no_sessions_layer(tmp_path):
    subjects = {f"sub-{i:02d}": ("HC" if i % 2 else "MS", 30 + i) for i in range(10)}
    bids, out = write_dataset(tmp_path, subjects, _rng_values(), sessions=(None,))
    written = run_group(bids, out, GroupOptions(figures=True))
    assert read(out, "group_longitudinal.tsv").empty
    cmp = read(out, "group_comparisons.tsv")
    assert set(cmp.section) == {"baseline"} and cmp.p_mwu.notna().all()
    assert any(p.name == "report.html" for p in written)


def test_fewer_than_three_per_group(tmp_path):
    subjects = {"sub-01": ("HC", 30), "sub-02": ("HC", 40), "sub-03": ("MS", 35),
                "sub-04": ("MS", 45)}
    bids, out = write_dataset(tmp_path, subjects, _rng_values(), sessions=("ses-01", "ses-02"))
    run_group(bids, out, GroupOptions(clinical_columns=(), figures=False))
    cmp = read(out, "group_comparisons.tsv")
    assert cmp.p_mwu.isna().all() and cmp.p_welch.isna().all() and cmp.difference.isna().all()
    assert cmp.note.str.contains("n < 3").all()
    assert cmp.mean_a.notna().all()  # descriptive values stay
    assert read(out, "group_agefit.tsv").note.str.contains("no age fit").all()
    summ = read(out, "group_longitudinal_summary.tsv")
    assert summ.p_wilcoxon.isna().all() and summ.note.str.contains("n = 2 < 3").all()


def test_constant_values(tmp_path):
    subjects = {f"sub-{i:02d}": ("HC" if i % 2 else "MS", 20 + 3 * i) for i in range(12)}
    extra = lambda sub: {"EDSS": 2.0}  # noqa: E731
    bids, out = write_dataset(tmp_path, subjects, lambda *a: 25.0,
                              sessions=("ses-01", "ses-02"), extra_cols=extra)
    run_group(bids, out, GroupOptions(clinical_columns=["EDSS"], figures=False))
    cmp = read(out, "group_comparisons.tsv")
    assert cmp.p_mwu.isna().all() and cmp.note.str.contains("all values equal").all()
    corr = read(out, "group_correlations.tsv")
    assert corr.pearson_r.isna().all() and corr.p_ols.isna().all()
    assert corr.note.str.contains("constant").all()
    fits = read(out, "group_agefit.tsv")
    assert (fits.model == "linear").all() and fits.note.str.contains("constant").all()
    data = read(out, "group_roistats.tsv")
    np.testing.assert_allclose(data.mean_agecorrected, 25.0)  # nothing invented


def test_nan_values_left_out(tmp_path):
    subjects = {f"sub-{i:02d}": ("HC" if i % 2 else "MS", 20 + 3 * i) for i in range(12)}
    base = _rng_values(4)

    def values(sub, ses, roi, m):
        return np.nan if (sub in ("sub-01", "sub-02") and roi == "putamen") else base(sub, ses, roi, m)

    bids, out = write_dataset(tmp_path, subjects, values, sessions=("ses-01", "ses-02"))
    run_group(bids, out, GroupOptions(figures=False))
    cmp = read(out, "group_comparisons.tsv")
    put = cmp[(cmp.roi == "putamen") & (cmp.section == "baseline") & (cmp.measure == "raw")]
    assert (put.n_a == 5).all() and (put.n_b == 5).all()
    assert put.note.str.contains("1 n/a value left out").all() and put.p_mwu.notna().all()
    summ = read(out, "group_summary.tsv")
    assert (summ[(summ.roi == "putamen") & (summ.section == "baseline")].n_missing == 1).all()
    long = read(out, "group_longitudinal.tsv")
    assert long[long.participant_id == "sub-01"].query("roi == 'putamen'").note.str.contains(
        "value n/a").all()


def test_per_year_change_needs_dates(tmp_path):
    subjects = {f"sub-{i:02d}": ("HC" if i % 2 else "MS", 30 + i) for i in range(8)}
    bids, out = write_dataset(tmp_path, subjects, _rng_values(), sessions=("ses-1", "ses-10"),
                              acq=False)
    run_group(bids, out, GroupOptions(figures=False))
    long = read(out, "group_longitudinal.tsv")
    assert (long.first_session == "ses-1").all() and (long.last_session == "ses-10").all()
    assert long.change_per_year.isna().all() and long.change.notna().all()
    assert long.note.str.contains("no acq_time").all()


# -- input errors name file and column ----------------------------------------------------------

@pytest.fixture()
def small(tmp_path):
    subjects = {f"sub-{i:02d}": ("HC" if i % 2 else "MS", 30 + i) for i in range(6)}
    return write_dataset(tmp_path, subjects, _rng_values(),
                         extra_cols=lambda s: {"EDSS": "2.5" if s != "sub-03" else "mild"})


@pytest.mark.parametrize("kwargs, words", [
    ({"group_column": "diagnosis"}, ["participants.tsv", "'diagnosis'", "--group-column"]),
    ({"clinical_columns": ["MSSS"]}, ["participants.tsv", "'MSSS'"]),
    ({"clinical_columns": ["EDSS"]}, ["participants.tsv", "'EDSS'", "non-numeric", "mild"]),
    ({"age_column": "age_at_scan"}, ["participants.tsv", "'age_at_scan'", "--age-column"]),
    ({"covariates": ["site"]}, ["participants.tsv", "'site'"]),
])
def test_missing_or_bad_column_names_file_and_column(small, kwargs, words):
    bids, out = small
    with pytest.raises(InputError) as err:
        run_group(bids, out, GroupOptions(figures=False, **kwargs))
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_bad_roistats_and_missing_participant(small):
    bids, out = small
    path = out / "sub-02" / "ses-01" / "anat" / "sub-02_ses-01_roistats.tsv"
    table = pd.read_csv(path, sep="\t")
    table.drop(columns="mean").to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"sub-02_ses-01_roistats.tsv: column 'mean'"):
        run_group(bids, out, GroupOptions(figures=False))
    table.to_csv(path, sep="\t", index=False)
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    participants[participants.participant_id != "sub-04"].to_csv(
        bids / "participants.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"participants.tsv: no row for sub-04"):
        run_group(bids, out, GroupOptions(figures=False))


def test_age_and_clinical_from_sessions_tsv(tmp_path):
    bids, out, _ = make_cohort(tmp_path, n_per_group=(5, 5), rois=ROIS[:1], metrics=("r2star",),
                               age_in="sessions", seed=5)
    # EDSS per session in sessions.tsv wins over participants.tsv
    for path in bids.glob("sub-*/sub-*_sessions.tsv"):
        table = pd.read_csv(path, sep="\t")
        table["age_at_scan"] = table.pop("age")
        table["EDSS"] = [1.0, 4.0]
        table.to_csv(path, sep="\t", index=False)
    run_group(bids, out, GroupOptions(age_column="age_at_scan", clinical_columns=["EDSS"],
                                   figures=False))
    data = read(out, "group_roistats.tsv")
    assert set(data.age_source) == {"sessions.tsv"}
    first = pd.read_csv(bids / "sub-001" / "sub-001_sessions.tsv", sep="\t")
    got = data[data.participant_id == "sub-001"].set_index("session_id")
    np.testing.assert_allclose(got.loc[first.session_id, "age"], first.age_at_scan)
    assert list(got.loc[["ses-01", "ses-02"], "EDSS"]) == [1.0, 4.0]


def test_session_without_roi_table_warns_and_keeps_baseline(tmp_path, caplog):
    """Issue 15 item 4: a listed session without roistats.tsv is one warning line and a note;
    the baseline stays the first listed session (ses-02 does not become the baseline)."""
    bids, out, _ = make_cohort(tmp_path, n_per_group=(5, 5), rois=ROIS[:2], metrics=("r2star",),
                               sessions=3, seed=8)
    (out / "sub-001" / "ses-01" / "anat" / "sub-001_ses-01_roistats.tsv").unlink()
    (out / "sub-007" / "ses-02" / "anat" / "sub-007_ses-02_roistats.tsv").unlink()
    with caplog.at_level("WARNING", logger="bids_iron.group"):
        run_group(bids, out, GroupOptions(figures=False))
    lines = [r.getMessage() for r in caplog.records if "without an ROI table" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "sub-001 ses-01 (baseline)" in lines[0] and "sub-007 ses-02" in lines[0]
    data = read(out, "group_roistats.tsv")
    s1 = data[data.participant_id == "sub-001"].drop_duplicates("session_id").set_index(
        "session_id")
    assert list(s1.session_order) == [2, 3] and not s1.is_baseline.any()
    assert s1.loc["ses-02", "years_from_baseline"] == pytest.approx(2.0, abs=0.01)
    age0 = pd.read_csv(bids / "participants.tsv", sep="\t").set_index("participant_id").loc[
        "sub-001", "age"]
    assert s1.loc["ses-02", "age"] == pytest.approx(age0 + 2.0, abs=0.01)
    assert set(s1.missing_sessions) == {"ses-01 (baseline)"}
    base = read(out, "group_summary.tsv")
    base = base[(base.section == "baseline") & (base.measure == "raw")]
    assert set(base.n) == {5, 4}  # sub-001 (HC) has no baseline
    change = read(out, "group_longitudinal.tsv")
    c1 = change[change.participant_id == "sub-001"].iloc[0]
    assert c1.first_session == "ses-02" and "no ROI table for ses-01 (baseline)" in c1.note
    assert c1.interval_years == pytest.approx(2.0, abs=0.01)
    html = (out / "group" / "report.html").read_text()
    assert "sessions without ROI table" in html
    mixed = read(out, "group_mixedmodels.tsv")
    assert mixed.note.str.contains("2 participants with sessions without an ROI table").all()


def test_welch_interval_of_the_difference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 20), rng.normal(0, 2, 15)
    r = compare_two(a, b)
    half = stats.t.ppf(0.975, r["df"]) * np.sqrt(a.var(ddof=1) / 20 + b.var(ddof=1) / 15)
    assert r["ci_low"] == pytest.approx(r["difference"] - half)
    assert r["ci_high"] == pytest.approx(r["difference"] + half)


def test_compare_pairs_batched_equals_scipy_per_pair():
    """compare_pairs runs scipy once per set of equal-sized pairs: every number must be the
    one of scipy called on that pair alone (exactly), with ties (normal p) and without
    (exact p) mixed in one batch, n/a values, no variance, all equal and too few values."""
    from bids_iron.group.compare import compare_pairs

    rng = np.random.default_rng(3)
    pairs = []
    for k in range(120):
        na, nb = (4, 5) if k % 3 else (int(rng.integers(3, 12)), int(rng.integers(3, 12)))
        a, b = rng.normal(1, 1, na), rng.normal(0, 2, nb)
        if k % 4 == 1:  # ties (rounded values)
            a, b = np.round(a), np.round(b)
        if k % 10 == 2:
            a[0] = np.nan
        pairs.append((a, b, "MS", "HC"))
    pairs += [([1.0, 1, 1], [2.0, 2, 2], "MS", "HC"), ([1.0, 1, 1], [1.0, 1, 1], "MS", "HC"),
              ([1.0, 2], [1.0, 2, 3], "MS", "HC"), ([1.0, 2, 3], [], "MS", "-")]
    batched = compare_pairs(pairs)
    for (a, b, la, lb), got in zip(pairs, batched):
        a = np.asarray(a, float)[np.isfinite(a)]
        b = np.asarray(b, float)[np.isfinite(b)]
        assert got["n_a"] == len(a) and got["n_b"] == len(b)
        if len(a) < 3 or len(b) < 3 or np.all(np.r_[a, b] == a[0]):
            assert np.isnan(got["p_mwu"]) and np.isnan(got["p_welch"]), got["note"]
            continue
        mw = stats.mannwhitneyu(a, b, alternative="two-sided")
        assert (got["u"], got["p_mwu"]) == (float(mw.statistic), float(mw.pvalue))
        if a.std() == 0 and b.std() == 0:
            assert np.isnan(got["p_welch"]) and "no variance" in got["note"]
            continue
        tt = stats.ttest_ind(a, b, equal_var=False)
        ci = tt.confidence_interval(0.95)
        assert (got["t"], got["p_welch"], got["df"], got["ci_low"], got["ci_high"]) == tuple(
            float(v) for v in (tt.statistic, tt.pvalue, tt.df, ci.low, ci.high))


def test_compare_groups_without_rows_keeps_its_columns():
    from bids_iron.group.compare import compare_groups
    empty = pd.DataFrame(columns=["group", "roi", "hemisphere", "metric", "source", "mean"])
    table = compare_groups(empty)
    assert table.empty and {"mean_a", "ci_low", "q_welch", "note"} <= set(table.columns)


# -- brain volumes (issue 14 item 2) ----------------------------------------------------------

def _write_volumes(out, slope, seed=0):
    """A ``desc-volumes_morph.tsv`` per session (as the participant level writes with a T1w;
    GM fraction of ICV ~ N(0.45, 0.03)) and R2* raised by ``slope`` per unit GM fraction;
    returns {(participant, session): gm_fraction_icv}."""
    from bids_iron.anatomy.volumes import STRUCTURES, volumes_table

    rng = np.random.default_rng(seed)
    written = {}
    for path in sorted(out.glob("sub-*/ses-*/anat/*_roistats.tsv")):
        icv = rng.normal(1.4e6, 1e5)
        gm = rng.normal(0.45, 0.03)
        share = {"icv": 1.0, "gm": gm, "cortical_gm": gm - 0.06, "deep_gm": 0.04,
                 "cerebellar_gm": 0.02, "wm": 0.40, "csf": 0.6 - gm}
        table = volumes_table({k: (share[k] * icv, share[k]) for k in STRUCTURES})
        label = path.name.replace("_roistats.tsv", "")
        table.to_csv(path.with_name(f"{label}_desc-volumes_morph.tsv"), sep="\t", index=False)
        rois = pd.read_csv(path, sep="\t")
        rois.loc[rois.metric == "r2star", "mean"] += slope * (gm - 0.45)
        rois.to_csv(path, sep="\t", index=False, float_format="%.8g")
        written[(path.parents[2].name, path.parents[1].name)] = (gm, gm * icv, icv)
    return written


def test_brain_volumes_joined_and_association_recovered(tmp_path):
    """R2* rises 40/s per unit GM fraction of ICV: the per-session volumes tables join the
    group table (mm3 and fractions, n/a without a table), the GM fraction is offered to the
    regressions and the stepwise selection, and the slope comes back; a covariate can name
    a volume column."""
    bids, out, _ = make_cohort(tmp_path, n_per_group=(30, 30), rois=ROIS[:2],
                               metrics=("r2star",), seed=11)
    written = _write_volumes(out, slope=40.0)
    missing = next(iter(out.glob("sub-060/ses-02/anat/*_desc-volumes_morph.tsv")))
    missing.unlink()
    run_group(bids, out, GroupOptions(figures=False, covariates=["age", "icv_volume_mm3"]))
    data = read(out, "group_roistats.tsv")
    first = data.drop_duplicates(["participant_id", "session_id"]).set_index(
        ["participant_id", "session_id"])
    gm, gm_mm3, icv = written[("sub-001", "ses-01")]
    row = first.loc[("sub-001", "ses-01")]
    assert row.gm_fraction_icv == pytest.approx(gm, rel=1e-5)
    assert row.gm_volume_mm3 == pytest.approx(gm_mm3, rel=1e-5)
    assert row.icv_volume_mm3 == pytest.approx(icv, rel=1e-5)
    assert row.wm_fraction_icv == pytest.approx(0.40, rel=1e-5)
    assert "icv_fraction_icv" not in data.columns
    assert np.isnan(first.loc[("sub-060", "ses-02")].gm_volume_mm3)
    reg = read(out, "group_regressions.tsv")
    beta = reg[(reg.subset == "all") & (reg.measure == "raw")
               & (reg.clinical == "gm_fraction_icv") & (reg.term == "gm_fraction_icv")]
    assert len(beta) == 2 and (abs(beta.beta - 40.0) < 3 * beta.se).all()
    step = read(out, "group_stepwise.tsv")
    assert "gm_fraction_icv" in set(step[step.subset == "all"].term)
    meta = json.loads((out / "group" / "group_roistats.json").read_text())
    assert meta["gm_volume_mm3"]["Units"] == "mm^3"
    assert "head-size" in meta["cortical_gm_fraction_icv"]["Description"]


def test_broken_volumes_table_is_one_clear_line(tmp_path):
    bids, out, _ = make_cohort(tmp_path, n_per_group=(3, 3), rois=ROIS[:1],
                               metrics=("r2star",), seed=12)
    anat = out / "sub-002" / "ses-01" / "anat"
    bad = anat / "sub-002_ses-01_desc-volumes_morph.tsv"
    bad.write_text("structure\tvolume_mm3\nicv\t1400000\n")
    with pytest.raises(InputError, match="sub-002_ses-01_desc-volumes_morph.tsv.*"
                                         "fraction_icv.*rerun the participant level"):
        run_group(bids, out, GroupOptions(figures=False))
