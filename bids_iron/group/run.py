"""The group level: read every session's roistats.tsv, write the cohort tables, figures and
report to OUTPUT_DIR/group/. File I/O and orchestration only; the statistics are in
`summary`, `compare`, `agecorr`, `longitudinal`, `correlations`, `mixed`, `manova`,
`stepwise` and `harmonize`."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..report import _html as H
from ._common import UNIT_KEYS, group_levels, join_notes
from .agecorr import FIT_COLUMNS, age_correct, fit_age_curves
from .collect import collect_cohort
from .compare import compare_groups
from .correlations import correlate
from .dictionary import write_table
from .harmonize import combat, site_effects
from .longitudinal import CHANGE_MEASURES, change_summary, changes
from .manova import repeated_manova
from .mixed import mixed_models
from .stepwise import stepwise_table
from .summary import sections, summarize

LOG = logging.getLogger("bids_iron.group")

METHODS = """
<p>Every statistic uses each session's ROI <code>mean</code> (roistats.tsv), per roi x hemisphere
x metric x source. Groups come from participants.tsv column <code>{group_column}</code>;
controls are <code>{control_label}</code>. <b>Sections</b>: each session label (that session
of every participant), <code>baseline</code> (every participant's first session, by
acq_time, else by label) and <code>change</code> (first to last session).</p>
<p><b>Group comparisons</b>: each group against the controls (difference = group - controls),
then the other pairs. Mann-Whitney U (scipy, two-sided) with rank-biserial r = 2U/(n1 n2) - 1;
Welch t-test (scipy, equal_var=False) with Cohen's d on the pooled SD. Benjamini-Hochberg q
separately for each test, family = every roi x hemisphere x metric x source x pair test of one
section and measure. No test with n &lt; 3 in a group or without variance (n/a and a note).</p>
<p><b>Age correction</b>: R(age) = a(1 - exp(-b age)) + c fitted on the controls' baseline
sessions (scipy.optimize.curve_fit, 0.001 &le; b &le; 2 per year, start from a grid over b);
a straight line where that fit fails (see notes); corrected = value - R(age) + R({ref}).</p>
<p><b>Longitudinal</b>: participants with &ge; 2 sessions; change = last - first, percent of
the first value, per year (acq_time needed). Within-group: Wilcoxon signed-rank and one-sample
t against 0; between groups: as above (section change).</p>
<p><b>Missing ROI tables</b>: sessions are ordered over every session listed in
sessions.tsv or present in OUTPUT_DIR; a listed session without an ROI table is named in the
log and in <code>missing_sessions</code> (group_roistats.tsv); a missing baseline is not
replaced by the next session (baseline section without that participant; change from the
first session with values, noted).</p>
<p><b>Mixed models</b> (group_mixedmodels.tsv): per roi x hemisphere x metric x source, every
session: value ~ group * years + covariates ({covariates}) with a random intercept per
participant (REML; the estimates of statsmodels MixedLM); years since the first session;
Wald z, p and 95 % interval; q per measure x term. A note instead of numbers when the model
does not converge or the design is degenerate.</p>
<p><b>Repeated-measures MANOVA</b> (group_manova.tsv): per metric, the nuclei together as
dependent variables (statsmodels MANOVA): group on the mean of first and last session, time
and group x time on last - first (sum-coded groups, centred covariates); participants with
every nucleus.</p>
<p><b>Correlations</b>: Pearson and Spearman (scipy) of raw and age-corrected baseline values
and of change against each clinical column (clinical value at the first session), in everyone
with values (<code>all</code>) and per group; OLS (statsmodels) value ~ clinical + covariates
({covariates}); standardized beta = beta SD(x)/SD(y). q per subset x measure x clinical column
family.</p>
"""


def _cohort_table(data, control_label, missing=None):
    visits = data.drop_duplicates(["participant_id", "session_id"])
    missing = missing if missing is not None else pd.DataFrame(columns=["participant_id"])
    group_of = visits.drop_duplicates("participant_id").set_index("participant_id")["group"]
    rows = []
    for g in group_levels(visits["group"], control_label) + ["n/a"]:
        v = visits[visits["group"].isna()] if g == "n/a" else visits[visits["group"] == g]
        if v.empty:
            continue
        base = v[v["is_baseline"]]
        rows.append({"group": g, "participants": v["participant_id"].nunique(),
                     "sessions": len(v),
                     "with >= 2 sessions": int((v.drop_duplicates("participant_id")
                                                ["n_sessions"] >= 2).sum()),
                     "sessions without ROI table": int(
                         (missing.participant_id.map(group_of).fillna("n/a") == g).sum()),
                     "baseline age mean": base["age"].mean(),
                     "baseline age SD": base["age"].std(ddof=1) if len(base) > 1 else np.nan})
    return pd.DataFrame(rows)


def _figure_jobs(data, out, control_label, clinical_columns, ref_age, with_sites):
    """The group figures in report order: ``[(function, args, kwargs, caption, clinical)]``;
    ``clinical`` names the clinical column of a scatter plot (its ``fits`` come from the
    correlation table, `_scatter_fits`), else None. ``data`` must not change afterwards: the
    jobs are drawn in other processes while the tables are computed."""
    from . import plots
    from ._common import METRIC_LABELS

    metrics = [m for m in ("r2star", "t2star", "lfs", "chi") if m in set(data["metric"])]
    metrics += sorted(set(data["metric"]) - set(metrics))
    base = data[data["is_baseline"]]
    jobs = []
    for metric in metrics:
        label = METRIC_LABELS.get(metric, metric).split(" (")[0]
        jobs.append((plots.box_strip, (base, metric, out / f"group_desc-boxplot_{metric}",
                                       "mean", control_label),
                     dict(title=f"{label} at baseline by group"),
                     f"{label} at baseline by group", None))
        if data["mean_agecorrected"].notna().any():
            text = f"{label} at baseline, age-corrected to {ref_age:.1f} years"
            jobs.append((plots.box_strip, (
                base, metric, out / f"group_desc-boxplotagecorrected_{metric}",
                "mean_agecorrected", control_label), dict(title=text), text, None))
        if with_sites:
            jobs.append((plots.site_panel, (base, metric, out / f"group_desc-sites_{metric}"),
                         {}, f"{label} by site before and after harmonisation", None))
        for clin in [c for c in clinical_columns if c != "lesion_count"]:
            safe = "".join(ch for ch in clin if ch.isalnum())
            jobs.append((plots.scatter_clinical, (
                base, metric, clin, out / f"group_desc-{safe}_{metric}", "mean",
                control_label), dict(title=f"{label} at baseline against {clin}"),
                f"{label} at baseline against {clin}", clin))
        jobs.append((plots.spaghetti, (data, metric, out / f"group_desc-spaghetti_{metric}",
                                       "mean", control_label), {},
                     f"{label} over sessions", None))
    return jobs


def _scatter_fits(corr, clinical, metric):
    """{unit: (pearson r, q)} of the correlation table (subset all, raw): the units whose
    scatter plot gets a line; empty without the table."""
    if corr is None:
        return {}
    rows = corr[(corr.subset == "all") & (corr.measure == "raw")
                & (corr.clinical == clinical) & (corr.metric == metric)]
    return {tuple(r[k] for k in UNIT_KEYS): (r["pearson_r"], r["q_pearson"])
            for r in rows.to_dict("records")}


def run_group(bids_dir, output_dir, options=None, log=None):
    """Run the group level; return the list of files written under OUTPUT_DIR/group/.

    Parameters
    ----------
    bids_dir, output_dir : path-like
        Raw BIDS dataset (participants.tsv, sessions.tsv) and bids-iron derivatives
        (sub-*/[ses-*/]anat/*_roistats.tsv).
    options : bids_iron.options.GroupOptions or None
        Group column and control label, age column (None: ``age`` when present), clinical
        columns and covariates of the regressions, reference age of the age-corrected values
        (None: the controls' mean baseline age), figures on/off. None: the defaults.
    log : logging.Logger or None

    Raises
    ------
    bids_iron.errors.InputError
        Missing inputs or missing/inconsistent columns (message names file and column).
    """
    from ..options import GroupOptions

    options = options or GroupOptions()
    group_column, control_label = options.group_column, options.control_label
    age_column, reference_age, figures = (options.age_column, options.reference_age,
                                          options.figures)
    clinical_columns, covariates = options.clinical_columns, options.covariates
    log = log or LOG
    start = time.perf_counter()
    clinical_columns = (None if not clinical_columns else
                        [] if [c.lower() for c in clinical_columns] == ["none"]
                        else list(clinical_columns))
    covariates = list(covariates)
    out = Path(output_dir) / "group"
    data, info = collect_cohort(bids_dir, output_dir, group_column, age_column,
                                clinical_columns, covariates, log=log,
                                site_column=options.site_column)
    covariates, clinical_columns = info["covariates"], info["clinical_columns"]
    levels = group_levels(data["group"], control_label)
    if control_label not in levels:
        log.warning("group: no participant has %s '%s' (groups: %s); no age correction, and "
                    "groups are compared pairwise", group_column, control_label,
                    ", ".join(levels) or "none")
    if len(levels) < 2:
        log.warning("group: only %d group(s) (%s); group comparisons are n/a", len(levels),
                    ", ".join(levels) or "none")
    written = []

    # age correction
    if info["age_available"]:
        fits = fit_age_curves(data, "mean", control_label, reference_age, log=log)
        data["mean_agecorrected"] = age_correct(data, fits)
    else:
        fits = data[UNIT_KEYS].drop_duplicates().reset_index(drop=True)
        for c in FIT_COLUMNS:
            fits[c] = np.nan
        fits["model"] = "none"
        fits["note"] = f"no age column ('{info['age_column']}'): no age correction"
        data["mean_agecorrected"] = np.nan
    ref_age = fits["reference_age"].dropna()
    ref_age = float(ref_age.iloc[0]) if len(ref_age) else np.nan
    measures = [("raw", "mean")]
    if data["mean_agecorrected"].notna().any():
        measures.append(("age_corrected", "mean_agecorrected"))
    fits.insert(0, "measure", "raw")

    # site harmonisation (ComBat; age and group protected; age model again on the controls)
    sites = None
    if options.harmonize == "combat":
        if not data["site"].notna().any():
            raise InputError(f"{Path(bids_dir) / 'participants.tsv'}: --harmonize combat needs "
                             "the scanner site: add a 'site' column (or name one with "
                             "--site-column), or InstitutionName/ManufacturersModelName in the "
                             "GRE sidecars")
        data["mean_harmonized"], hnotes = combat(data, "mean", ("age", "group"))
        for (metric, source), note in hnotes.items():
            if note:
                log.warning("group: ComBat %s (%s): %s", metric, source, note)
        if data["mean_harmonized"].notna().any():
            measures.append(("harmonized", "mean_harmonized"))
            if info["age_available"]:
                hfits = fit_age_curves(data, "mean_harmonized", control_label, reference_age,
                                       log=log)
                data["mean_harmonized_agecorrected"] = age_correct(data, hfits,
                                                                   "mean_harmonized")
                hfits.insert(0, "measure", "harmonized")
                fits = pd.concat([fits, hfits], ignore_index=True)
                if data["mean_harmonized_agecorrected"].notna().any():
                    measures.append(("harmonized_age_corrected",
                                     "mean_harmonized_agecorrected"))
            sites = site_effects(data, "mean", "mean_harmonized")
            sites["note"] = [join_notes(n, hnotes.get((m, s), "")) for n, m, s in
                             zip(sites["note"], sites["metric"], sites["source"])]

    # 7. figures: drawn in worker processes while the tables below are computed; the
    # scatter plots once the correlation table exists (their lines follow it)
    fig_jobs, order = [], []
    drawer = contextlib.nullcontext()
    if figures:
        from .plots import FigureDrawer
        fig_jobs = _figure_jobs(data.copy(), out, control_label, clinical_columns, ref_age,
                                sites is not None)
        drawer = FigureDrawer(len(fig_jobs))
        for i, (func, args, kwargs, _caption, clin) in enumerate(fig_jobs):
            if clin is None:
                drawer.submit(func, args, kwargs)
                order.append(i)
    with drawer:
        # 1. cohort table
        cohort = data.drop(columns=["roistats_file"]).copy()
        cohort.insert(cohort.columns.get_loc("session_id") + 1, "group", cohort.pop("group"))
        written += write_table(cohort, out / "group_roistats.tsv")
        written += write_table(fits, out / "group_agefit.tsv")
        if sites is not None:
            written += write_table(sites, out / "group_harmonization.tsv")

        # 2-3. summaries and comparisons per section and measure
        summaries, comparisons = [], []
        for section, rows in sections(data):
            for measure, column in measures:
                summaries.append(summarize(rows, column, control_label, section, measure))
                comparisons.append(compare_groups(rows, column, control_label, section, measure))

        # 5. longitudinal
        extra = [c for c in clinical_columns + covariates if c not in ("age", "group")]
        change = changes(data, "mean", extra=extra)
        if "age" in covariates:
            change["age"] = change["age_first"]
        written += write_table(change, out / "group_longitudinal.tsv")
        change_sum = change_summary(change, control_label)
        written += write_table(change_sum, out / "group_longitudinal_summary.tsv")
        for measure in CHANGE_MEASURES:
            if not change.empty:
                comparisons.append(compare_groups(change, measure, control_label, "change",
                                                  measure))
        summary = pd.concat(summaries, ignore_index=True)
        comparison = pd.concat(comparisons, ignore_index=True)
        written += write_table(summary, out / "group_summary.tsv")
        written += write_table(comparison, out / "group_comparisons.tsv")

        # 5b. mixed models (every session) and repeated-measures MANOVA across the nuclei
        mixed = pd.concat([mixed_models(data, column, covariates, control_label, measure)
                           for measure, column in measures], ignore_index=True)
        written += write_table(mixed, out / "group_mixedmodels.tsv")
        manova = pd.concat([repeated_manova(data, column, covariates, control_label, measure)
                            for measure, column in measures], ignore_index=True)
        written += write_table(manova, out / "group_manova.tsv")

        # 6. correlations
        corr = reg = None
        if clinical_columns:
            base = data[data["is_baseline"]]
            parts = [correlate(base, col, clinical_columns, covariates, measure)
                     for measure, col in measures]
            if not change.empty:
                parts += [correlate(change, m, clinical_columns, covariates, m)
                          for m in ("change", "change_per_year")]
            corr = pd.concat([p[0] for p in parts], ignore_index=True)
            reg = pd.concat([p[1] for p in parts], ignore_index=True)
            written += write_table(corr, out / "group_correlations.tsv")
            written += write_table(reg, out / "group_regressions.tsv")
        for i, (func, args, kwargs, _caption, clin) in enumerate(fig_jobs):
            if clin is not None:
                drawer.submit(func, args, {**kwargs, "fits": _scatter_fits(corr, clin, args[1])})
                order.append(i)
        # 6b. forward stepwise regression at baseline: clinical columns, age, numeric covariates
        candidates = list(dict.fromkeys(
            clinical_columns + [c for c in covariates if c in data and c != "group"
                                and pd.api.types.is_numeric_dtype(data[c])]
            + [c for c in ("lesion_volume_log", "lesion_count") if c in info["lesion_columns"]]
            + (["roi_volume_mm3"] if data["roi_volume_mm3"].nunique() > 1 else [])))
        step = None
        if candidates:
            base = data[data["is_baseline"]]
            step = pd.concat([stepwise_table(rows, "mean", candidates, "raw", subset=subset)
                              for subset, rows in [("all", base)] + [
                                  (g, base[base["group"] == g]) for g in levels]],
                             ignore_index=True)
            written += write_table(step, out / "group_stepwise.tsv")
        if not clinical_columns and covariates:
            log.warning("group: --covariates given without --clinical-columns; no regressions "
                        "(the covariates enter the mixed models and the MANOVA)")
        t_tables = time.perf_counter() - start

        # 7. figures (submitted above): their results in report order
        figs = []
        if figures:
            drawn = [None] * len(fig_jobs)
            for i, paths in zip(order, drawer.results()):
                drawn[i] = paths
            figs = [(p, job[3]) for p, job in zip(drawn, fig_jobs) if p]
            for p, _ in figs:
                written += p
        t_figs = time.perf_counter() - start - t_tables

        # report: summary (cohort, significant findings), tables, methods, figures
        from .report import (PRIMARY_MEASURES, details_html, figure_html, findings, primary_rows,
                             sentences_html, table_html)
        present = [m for m, _ in measures]
        primary = next(m for m in PRIMARY_MEASURES if m in present)
        analyses = {"comparisons": comparison, "mixed": mixed, "manova": manova,
                    "correlations": corr, "stepwise": step}
        found = findings(analyses, control_label, primary)
        cov_text = ", ".join(covariates) or "none"
        clin = pd.DataFrame(info["clinical"], columns=["column", "file", "why", "n_participants"])
        summary_html = [table_html(_cohort_table(data, control_label, info["missing_sessions"])),
                        "<h3>Clinical columns used</h3>",
                        table_html(clin) if len(clin) else
                        "<p>No clinical columns (none named with --clinical-columns, none found)."
                        "</p>"]
        if data["site"].notna().any():
            visits = data.drop_duplicates(["participant_id", "session_id"])
            counts = visits["site"].value_counts()
            summary_html.append(
                f"<p><b>Sites</b> ({info['site_source']}): " + ", ".join(
                    f"{H.escape(k)} ({v} sessions)" for k, v in counts.items()) +
                ("; harmonised with ComBat (measures <i>harmonized</i>)." if sites is not None
                 else "; not harmonised (--harmonize combat).") + "</p>")
        summary_html.append("<h3>Significant findings (Benjamini-Hochberg q &lt; 0.05)</h3>")
        summary_html.append(H.note(
            f"Measure: {primary.replace('_', ' ')} (comparisons also the yearly change); "
            "correlations and stepwise models within the patient groups; R2* rather than T2*. Each "
            "sentence: effect with its 95 % interval, test, p, q and n; at most 5 per analysis "
            "here, more under each analysis; every measure in the tables."))
        for name, (sents, n, tname) in found.items():
            summary_html += [f"<h4>{H.escape(name)}</h4>", sentences_html(sents[:5], n, tname)]
        blocks = [("Summary", summary_html)]
        cmp_cols = ["section", "measure", "roi", "hemisphere", "metric", "group_a", "group_b",
                    "n_a", "n_b", "difference", "ci_low", "ci_high", "percent_difference",
                    "p_welch", "q_welch", "cohen_d", "p_mwu", "q_mwu", "r_rb", "note"]

        def analysis(name, key, table_name, table, qcol, cols=None):
            sents, n, _ = found.get(name, ([], 0, ""))
            part = [] if name not in found else [sentences_html(sents, n, table_name)]
            shown = table if cols is None else table[[c for c in cols if c in table]]
            main = primary_rows(key, shown, primary, control_label)
            main = main.drop(columns=["rois", "candidates"], errors="ignore")
            return (f"{name} ({table_name})", part + [
                table_html(main, qcol=qcol),
                details_html(shown, f"every measure and subset of {table_name}", qcol)])

        blocks.append(analysis("Group differences", "comparisons", "group_comparisons.tsv",
                               comparison[comparison.section.isin(["baseline", "change"])],
                               "q_welch", cmp_cols))
        blocks.append(analysis("Change over time (mixed models)", "mixed", "group_mixedmodels.tsv",
                               mixed[mixed.term.str.startswith("group[T.") | (mixed.term == "years")
                                     | (mixed.term == "n/a")], "q"))
        blocks.append(analysis("Nuclei together (MANOVA)", "manova", "group_manova.tsv",
                               manova[manova.test.isin(["Pillai's trace", "n/a"])], "q"))
        if not change.empty:
            per_year = change_sum[change_sum.measure == "change_per_year"]
            main = per_year if per_year["n"].gt(0).any() else change_sum[
                change_sum.measure == "change"]
            blocks.append(("Change within groups (group_longitudinal_summary.tsv)", [
                table_html(main, qcol="q_ttest"),
                details_html(change_sum, "every measure of group_longitudinal_summary.tsv",
                             "q_ttest")]))
        if corr is not None:
            blocks.append(analysis("Clinical correlations", "correlations",
                                   "group_correlations.tsv", corr, "q_spearman"))
        if step is not None:
            blocks.append(analysis("Stepwise regression", "stepwise", "group_stepwise.tsv", step,
                                   None))
        if sites is not None:
            site_figs = [figure_html(p[0], c) for p, c in figs if "harmonis" in c]
            blocks.append(("Site harmonisation (group_harmonization.tsv)", [
                H.note("Site F test of value ~ site + group + age at baseline, before (raw) and "
                       "after ComBat (harmonized); a removed site effect has a large p after."),
                table_html(sites)] + site_figs))
        sel = summary[summary.section == "baseline"]
        sel = sel[["measure", "group", "roi", "hemisphere", "metric", "source", "n", "mean_sd",
                   "median_iqr", "note"]]
        blocks.append(("Group summary (baseline; group_summary.tsv)", [
            table_html(sel[sel.measure == primary]),
            details_html(sel, "every measure of group_summary.tsv")]))
        blocks.append(("Age fit on controls (group_agefit.tsv)", [
            details_html(fits, "the fitted age curves")]))
        blocks.append(("Methods", [METHODS.format(group_column=group_column,
                                                  control_label=control_label,
                                                  ref=f"{ref_age:.1f} years" if np.isfinite(ref_age)
                                                  else "reference age", covariates=cov_text)]))
        other_figs = [(p, c) for p, c in figs if "harmonis" not in c]
        if other_figs:
            blocks.append(("Figures", [figure_html(p[0], c) for p, c in other_figs]))
        blocks.append(("Files", ["<ul>" + "".join(
            f"<li><a href='{p.name}'>{p.name}</a></li>" for p in written
            if p.suffix in (".tsv", ".json")) + "</ul>"]))
        from .report import write_report
        written.append(write_report(out / "report.html", "bids-iron group report", blocks))
        log.info("group: %d files in %s (tables %.1f s, figures drawn meanwhile, %.1f s more)",
                 len(written), out, t_tables, t_figs)
        return written
