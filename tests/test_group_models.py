"""Group level models: mixed models, repeated-measures MANOVA (synthetic cohorts, known truth)."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.multivariate.manova import MANOVA

from bids_iron.group import mixed as mixed_mod
from bids_iron.group.manova import repeated_manova
from bids_iron.group.mixed import fit_mixed
from bids_iron.group.run import run_group
from bids_iron.group.synthetic import make_cohort
from bids_iron.options import GroupOptions

ROIS = [("putamen", "left"), ("putamen", "right"), ("thalamus", "left")]


def read(out, name):
    return pd.read_csv(out / "group" / name, sep="\t", keep_default_na=False, na_values=["n/a"])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """25 HC + 25 MS, two sessions two years apart, tables only; the MS yearly change is
    1/s (R2*) and 8 ppb (chi) beyond ageing, one noise SD per year."""
    root = tmp_path_factory.mktemp("models")
    truth = {"r2star": (15.0, 0.05, 14.0, 2.0, 1.0, 0.8, 1.0),
             "chi": (0.10, 0.05, 0.0, 0.012, 0.008, 0.006, 0.008)}
    bids, out, truth = make_cohort(root, n_per_group=(25, 25), rois=ROIS,
                                   metrics=("r2star", "chi"), seed=11, truth=truth)
    run_group(bids, out, GroupOptions(covariates=["age", "sex"], figures=False))
    return bids, out, truth


def test_mixed_model_recovers_group_by_time(cohort):
    _, out, truth = cohort
    table = read(out, "group_mixedmodels.tsv")
    raw = table[table.measure == "raw"]
    for metric in ("r2star", "chi"):
        _, _, _, ge, yc, _, noise = truth["metrics"][metric]
        rows = raw[(raw.metric == metric) & (raw.term == "group[T.MS]:years")]
        assert len(rows) == len(ROIS)
        # known interaction within 3 standard errors, and detected
        assert (abs(rows.estimate - yc) < 3 * rows.se).all(), rows
        assert (rows.q < 0.05).all()
        assert (rows.ci_low < yc).all() and (rows.ci_high > yc).all()
        assert (rows.n_participants == 50).all() and (rows.n_sessions == 100).all()
    # the same numbers as statsmodels' formula interface on the same rows
    roistats = read(out, "group_roistats.tsv")
    unit = roistats[(roistats.roi == "putamen") & (roistats.hemisphere == "left")
                    & (roistats.metric == "r2star")].rename(columns={"years_from_baseline":
                                                                     "years"})
    ref = smf.mixedlm("mean ~ C(group, Treatment('HC')) * years + age + C(sex)", unit,
                      groups=unit["participant_id"]).fit(reml=True)
    mine = raw[(raw.roi == "putamen") & (raw.hemisphere == "left") & (raw.metric == "r2star")]
    mine = mine.set_index("term")
    name = "C(group, Treatment('HC'))[T.MS]:years"
    assert mine.loc["group[T.MS]:years", "estimate"] == pytest.approx(ref.params[name], rel=1e-4)
    assert mine.loc["group[T.MS]:years", "p"] == pytest.approx(ref.pvalues[name], rel=1e-3)
    assert mine.loc["sex=M", "se"] == pytest.approx(ref.bse["C(sex)[T.M]"], rel=1e-3)
    # q: Benjamini-Hochberg within measure x term
    fam = raw[raw.term == "group[T.MS]"]
    from scipy.stats import false_discovery_control
    assert np.allclose(fam.q, false_discovery_control(fam.p, method="bh"))
    assert {"sd(participant)", "sd(residual)"} <= set(raw.term)


def test_mixed_model_null_rejects_at_nominal_rate():
    """No group x time effect: p < 0.05 in about 5 % of 80 simulated cohorts (<= 12 %)."""
    rng = np.random.default_rng(5)
    pid = np.repeat(np.arange(30), 2)
    group = np.where(pid < 15, "HC", "MS")
    years = np.tile([0.0, 2.0], 30)
    hits = 0
    for _ in range(80):
        y = 20 + 1.0 * (group == "MS") + 0.3 * years + rng.normal(0, 1.0, 30)[pid] \
            + rng.normal(0, 0.7, 60)
        rows, note = fit_mixed(pd.DataFrame({"participant_id": pid, "group": group,
                                             "years": years, "y": y}), "y")
        p = rows.set_index("term").loc["group[T.MS]:years", "p"]
        hits += p < 0.05
    assert hits / 80 <= 0.12, hits


def _sessions(n=20, sessions=2, seed=0):
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n), sessions)
    group = np.where(pid < n // 2, "HC", "MS")
    years = np.tile(np.arange(sessions) * 2.0, n)
    return pd.DataFrame({"participant_id": pid, "group": group, "years": years,
                         "y": 10 + rng.normal(0, 1, n)[pid] + rng.normal(0, 1, n * sessions)})


def test_mixed_model_degenerate_designs_give_notes():
    # one session per participant: no random intercept
    rows, note = fit_mixed(_sessions(sessions=1), "y")
    assert list(rows.term) == ["n/a"] and rows.estimate.isna().all()
    assert "one session per participant" in note
    # a covariate that equals the group: collinear design, no numbers
    table = _sessions()
    table["arm"] = (table.group == "MS").astype(float)
    rows, note = fit_mixed(table, "y", covariates=["arm"])
    assert list(rows.term) == ["n/a"] and "collinear" in note and rows.p.isna().all()
    # one group only: the group terms are left out (named), time still estimated
    rows, note = fit_mixed(table[table.group == "HC"], "y")
    assert "years" in set(rows.term) and not any("group" in t for t in rows.term)
    assert "one group only" in note
    # fewer than 3 participants
    rows, note = fit_mixed(table[table.participant_id < 2], "y")
    assert list(rows.term) == ["n/a"] and "< 3" in note


def test_mixed_model_not_converged_gives_note(monkeypatch):
    from scipy import optimize
    real = optimize.minimize_scalar

    def failing(*args, **kwargs):
        res = real(*args, **kwargs)
        res.success = False
        return res

    monkeypatch.setattr(mixed_mod.optimize, "minimize_scalar", failing)
    rows, note = fit_mixed(_sessions(), "y")
    assert list(rows.term) == ["n/a"] and rows.estimate.isna().all()
    assert "did not converge" in note


@pytest.mark.parametrize("seed, sd_u", [(0, 1.0), (1, 0.3), (2, 0.0)])
def test_reml_equals_statsmodels_mixedlm(seed, sd_u):
    """Unbalanced sessions (1-3 per participant), a continuous covariate: the profiled REML
    equals statsmodels MixedLM (REML), including a random-intercept variance at 0."""
    import warnings

    from statsmodels.regression.mixed_linear_model import MixedLM
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, 60)
    pid = np.repeat(np.arange(60), sizes)
    years = np.concatenate([np.arange(k) * 2.0 for k in sizes]) + rng.normal(0, 0.1, len(pid))
    ms = (pid >= 30).astype(float)
    age = rng.uniform(20, 70, 60)[pid] + years
    X = np.column_stack([np.ones(len(pid)), ms, years, ms * years, age])
    y = X @ [10, 2, 0.1, 0.5, 0.05] + sd_u * rng.normal(0, 1, 60)[pid] + \
        rng.normal(0, 1, len(pid))
    fit = mixed_mod.reml_random_intercept(y, X, pid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MixedLM(y, X, groups=pid).fit(reml=True)
    np.testing.assert_allclose(fit["beta"], ref.fe_params, rtol=1e-5, atol=1e-6)
    assert fit["var_e"] == pytest.approx(ref.scale, rel=1e-4)
    lam = float(np.asarray(ref.cov_re)[0, 0]) / ref.scale
    assert fit["lambda"] == pytest.approx(lam, rel=1e-3, abs=1e-6)
    # standard errors sqrt(diag((X'V^-1X)^-1)) (lme4, SAS): statsmodels GLS with MixedLM's V
    import statsmodels.api as sm
    V = np.eye(len(y)) + lam * (pid[:, None] == pid[None, :])
    np.testing.assert_allclose(fit["se"], sm.GLS(y, X, sigma=V).fit().bse, rtol=1e-4)
    # MixedLM's own (observed-information) standard errors are within 2 %
    np.testing.assert_allclose(fit["se"], ref.bse_fe, rtol=0.02)


def test_manova_matches_statsmodels_and_detects_interaction(cohort):
    _, out, _ = cohort
    table = read(out, "group_manova.tsv")
    raw = table[(table.measure == "raw") & (table.metric == "r2star")]
    assert set(raw.effect) == {"group", "time", "group:time"}
    inter = raw[raw.effect == "group:time"].set_index("test")
    assert inter.loc["Pillai's trace", "p"] < 1e-3  # MS change 1/s per year more than HC
    assert int(inter.loc["Pillai's trace", "n_rois"]) == 3
    # the same test computed here with statsmodels' formula interface on the changes
    roistats = read(out, "group_roistats.tsv")
    r2 = roistats[roistats.metric == "r2star"]
    wide = r2.pivot_table(index=["participant_id", "session_order"],
                          columns=["roi", "hemisphere"], values="mean")
    diff = (wide.xs(2, level="session_order") - wide.xs(1, level="session_order"))
    diff.columns = ["y0", "y1", "y2"]
    first = r2[r2.session_order == 1].drop_duplicates("participant_id").set_index(
        "participant_id")
    diff = diff.join(first[["group", "age", "sex"]])
    ref = MANOVA.from_formula("y0 + y1 + y2 ~ C(group) + age + C(sex)", diff).mv_test()
    stat = ref.results["C(group)"]["stat"]
    assert inter.loc["Pillai's trace", "p"] == pytest.approx(
        stat.loc["Pillai's trace", "Pr > F"], rel=1e-6)
    assert inter.loc["Wilks' lambda", "value"] == pytest.approx(
        stat.loc["Wilks' lambda", "Value"], rel=1e-8)


def test_manova_too_few_participants_gives_note():
    rows = []
    for i in range(4):
        for s in (1, 2):
            for roi in ("a", "b", "c", "d"):
                rows.append(dict(participant_id=f"sub-{i}", group="HC" if i < 2 else "MS",
                                 session_order=s, n_sessions=2, roi=roi, hemisphere="left",
                                 metric="r2star", source="atlas", mean=float(i + s + len(roi))))
    table = repeated_manova(pd.DataFrame(rows))
    assert (table.test == "n/a").all() and table.p.isna().all()
    assert table.note.str.contains("too few for 4 nuclei").all()


def test_clinical_columns_found_automatically(tmp_path):
    bids, out, _ = make_cohort(tmp_path, n_per_group=(6, 6), rois=ROIS[:1], metrics=("r2star",),
                               seed=2)
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    rng = np.random.default_rng(0)
    participants["disease_duration"] = np.where(participants.group == "MS",
                                                rng.uniform(1, 20, len(participants)), np.nan)
    participants["height"] = rng.uniform(150, 190, len(participants))  # neither described
    participants["bmi"] = rng.uniform(18, 30, len(participants))  # described in the JSON
    participants.to_csv(bids / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    (bids / "participants.json").write_text('{"bmi": {"Description": "body mass index"}}')
    run_group(bids, out, GroupOptions(figures=False))
    corr = read(out, "group_correlations.tsv")
    assert set(corr.clinical) == {"EDSS", "disease_duration", "bmi"}
    html = (out / "group" / "report.html").read_text()
    assert "described in participants.json" in html and "clinical name" in html
    # named columns win; 'none' turns the correlations off
    run_group(bids, out, GroupOptions(clinical_columns=["height"], figures=False))
    assert set(read(out, "group_correlations.tsv").clinical) == {"height"}
    for path in (out / "group").glob("group_correlations.*"):
        path.unlink()
    run_group(bids, out, GroupOptions(clinical_columns=["none"], figures=False))
    assert not (out / "group" / "group_correlations.tsv").exists()


def test_forward_stepwise_order_partial_f_and_final_ols():
    import statsmodels.api as sm

    from bids_iron.group.stepwise import forward_stepwise
    rng = np.random.default_rng(4)
    n = 80
    X = pd.DataFrame({"EDSS": rng.uniform(0, 6, n), "lesion_log": rng.normal(8, 1, n),
                      "noise1": rng.normal(0, 1, n), "noise2": rng.normal(0, 1, n)})
    y = 20 + 1.0 * X.EDSS + 0.6 * X.lesion_log + rng.normal(0, 1, n)
    steps, note = forward_stepwise(y.to_numpy(), X)
    assert list(steps.term) == ["EDSS", "lesion_log"] and steps.step.tolist() == [1, 2]
    full = sm.OLS(y, sm.add_constant(X[["EDSS", "lesion_log"]])).fit()
    one = sm.OLS(y, sm.add_constant(X[["EDSS"]])).fit()
    assert steps.r2.iloc[1] == pytest.approx(full.rsquared)
    assert steps.r2_change.iloc[1] == pytest.approx(full.rsquared - one.rsquared)
    f, p, _ = full.compare_f_test(one)
    assert steps.f_change.iloc[1] == pytest.approx(f) and steps.p_change.iloc[1] == \
        pytest.approx(p)
    np.testing.assert_allclose(steps.beta, full.params[1:])
    np.testing.assert_allclose(steps.p, full.pvalues[1:])
    np.testing.assert_allclose(steps.beta_std, full.params[1:] * X[["EDSS", "lesion_log"]].std()
                               / y.std())
    assert abs(steps.beta.iloc[0] - 1.0) < 3 * steps.se.iloc[0]
    # pure noise: nothing enters, a note row instead of a bare header
    steps, note = forward_stepwise(rng.normal(0, 1, n), X[["noise1", "noise2"]])
    assert list(steps.term) == ["none"] and "no candidate entered" in note


def test_stepwise_table_in_group_outputs(cohort):
    _, out, _ = cohort
    step = read(out, "group_stepwise.tsv")
    ms = step[(step.subset == "MS") & (step.metric == "r2star")]
    # MS values depend on EDSS (0.8 per point) and age: both enter for every nucleus
    for _, unit in ms.groupby(["roi", "hemisphere"]):
        assert {"EDSS", "age"} <= set(unit.term)
    assert "EDSS" in step.candidates.iloc[0]


def test_combat_removes_site_offsets_and_keeps_group_effect(tmp_path):
    """Three sites offset by 0, +3 and -2 noise SDs: ComBat removes them (site F test before
    and after) and the MS - HC difference equals the one of the same cohort without sites."""
    offsets = {"A": 0.0, "B": 3.0, "C": -2.0}
    kwargs = dict(n_per_group=(30, 30), rois=ROIS, metrics=("r2star",), seed=21)
    bids, out, _ = make_cohort(tmp_path / "sites", site_offsets=offsets, **kwargs)
    _, out0, _ = make_cohort(tmp_path / "nosites", **kwargs)
    opts = dict(clinical_columns=["none"], figures=False)
    run_group(bids, out, GroupOptions(harmonize="combat", **opts))
    run_group(tmp_path / "nosites" / "bids", out0, GroupOptions(**opts))
    sites = read(out, "group_harmonization.tsv")
    assert len(sites) == len(ROIS) and (sites.n_sites == 3).all()
    assert (sites.p_site_raw < 1e-6).all() and (sites.p_site_harmonized > 0.05).all()
    cmp = read(out, "group_comparisons.tsv")
    cmp0 = read(out0, "group_comparisons.tsv")
    key = ["roi", "hemisphere"]
    h = cmp[(cmp.section == "baseline") & (cmp.measure == "harmonized")].set_index(key)
    r = cmp[(cmp.section == "baseline") & (cmp.measure == "raw")].set_index(key)
    t = cmp0[(cmp0.section == "baseline") & (cmp0.measure == "raw")].set_index(key)
    # harmonised difference close to the site-free one; site spread removed, so the group
    # test is stronger than on the raw values (sites balanced over the groups here)
    assert (abs(h.difference - t.difference) < 0.35).all(), (h.difference, t.difference)
    assert (h.p_welch < r.p_welch).all() and (h.p_welch < 1e-3).all()
    data = read(out, "group_roistats.tsv")
    assert data.mean_harmonized.notna().all() and set(data.site) == {"A", "B", "C"}
    assert {"harmonized", "harmonized_age_corrected"} <= set(
        read(out, "group_mixedmodels.tsv").measure)


def test_site_from_sidecars_and_harmonize_needs_a_site(tmp_path, caplog):
    import json

    from bids_iron.errors import InputError
    bids, out, _ = make_cohort(tmp_path, n_per_group=(6, 6), rois=ROIS, metrics=("r2star",),
                               seed=1)
    with pytest.raises(InputError, match="--harmonize combat needs the scanner site"):
        run_group(bids, out, GroupOptions(harmonize="combat", figures=False))
    for i, sub in enumerate(sorted(p.name for p in bids.glob("sub-*") if p.is_dir())):
        for ses in ("ses-01", "ses-02"):
            anat = bids / sub / ses / "anat"
            anat.mkdir(parents=True)
            meta = {"EchoTime": 0.005, "InstitutionName": "Graz" if i % 2 else "Milan",
                    "ManufacturersModelName": "Prisma", "MagneticFieldStrength": 3}
            (anat / f"{sub}_{ses}_echo-1_part-mag_MEGRE.json").write_text(json.dumps(meta))
    broken = bids / "sub-012" / "ses-02" / "anat" / "sub-012_ses-02_echo-1_part-mag_MEGRE.json"
    broken.write_text("{not json")
    with caplog.at_level("WARNING", logger="bids_iron.group"):
        run_group(bids, out, GroupOptions(harmonize="combat", figures=False,
                                          clinical_columns=["none"]))
    assert any(str(broken) in r.getMessage() and "no site" in r.getMessage()
               for r in caplog.records)
    data = read(out, "group_roistats.tsv")
    assert set(data.site.dropna()) == {"Graz / Prisma / 3 T", "Milan / Prisma / 3 T"}
    assert data[data.site.isna()].session_id.unique().tolist() == ["ses-02"]
    assert set(data.site_source.dropna()) == {"sidecars"} and data.site_source.isna().any()
    assert (out / "group" / "group_harmonization.tsv").exists()


def test_lesion_load_joined_and_slope_recovered(tmp_path):
    """Patients' R2* rises 0.7/s per ln(mm3) of lesion volume: the lesion load is read from
    the participant level's lesion tables, and the slope comes back in the correlations."""
    bids, out, _ = make_cohort(tmp_path, n_per_group=(10, 40), rois=ROIS[:2], metrics=("r2star",),
                               seed=6, lesion_slope={"r2star": 0.7})
    run_group(bids, out, GroupOptions(figures=False, covariates=["age"]))
    data = read(out, "group_roistats.tsv")
    first = data.drop_duplicates(["participant_id", "session_id"])
    hc, ms = first[first.group == "HC"], first[first.group == "MS"]
    assert (hc.lesion_volume_mm3 == 0).all() and (hc.lesion_count == 0).all()
    assert (ms.lesion_volume_mm3 > 250).all() and (ms.lesion_count >= 1).all()
    np.testing.assert_allclose(ms.lesion_volume_log, np.log1p(ms.lesion_volume_mm3))
    assert ms.lesion_r2star.eq(30.0).all()
    reg = read(out, "group_regressions.tsv")
    beta = reg[(reg.subset == "MS") & (reg.measure == "raw") & (reg.clinical == "lesion_volume_log")
               & (reg.term == "lesion_volume_log")]
    assert len(beta) == 2 and (abs(beta.beta - 0.7) < 3 * beta.se).all()
    step = read(out, "group_stepwise.tsv")
    assert "lesion_volume_log" in set(step[step.subset == "MS"].term)
    import json
    meta = json.loads((out / "group" / "group_roistats.json").read_text())
    assert meta["lesion_volume_mm3"]["Units"] == "mm^3" and "lesion_r2star" in meta


def test_roi_volume_association_recovered(tmp_path):
    """R2* falls 1.5/s per cm3 of the ROI's own label volume: roistats' label_volume_mm3
    joins the group table as roi_volume_mm3, and the slope comes back (OLS and stepwise)."""
    bids, out, _ = make_cohort(tmp_path, n_per_group=(30, 30), rois=ROIS[:2],
                               metrics=("r2star",), seed=9, volume_slope={"r2star": -1.5})
    run_group(bids, out, GroupOptions(figures=False, covariates=["age"]))
    data = read(out, "group_roistats.tsv")
    assert data.roi_volume_mm3.between(3000, 7000).all()
    reg = read(out, "group_regressions.tsv")
    beta = reg[(reg.subset == "HC") & (reg.measure == "raw") & (reg.clinical == "roi_volume_mm3")
               & (reg.term == "roi_volume_mm3")]
    assert len(beta) == 2 and (abs(beta.beta * 1000 + 1.5) < 3 * beta.se * 1000).all()
    step = read(out, "group_stepwise.tsv")
    assert (step[step.subset == "HC"].groupby(["roi", "hemisphere"]).term.apply(
        lambda t: "roi_volume_mm3" in set(t))).all()
