"""BIDS-style data dictionaries (JSON beside each TSV) and atomic TSV writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..anatomy.roistats import METRIC_UNITS
from ..bids.derivatives import atomic_path, sidecar_path, write_json

_METRIC_UNIT_TEXT = ", ".join(f"{k}: {v}" for k, v in METRIC_UNITS.items())
_VALUE_UNITS = f"unit of the row's metric ({_METRIC_UNIT_TEXT})"

#: name -> (Description, Units or None, Levels or None)
COLUMNS = {
    "participant_id": ("Participant label (sub-<label>)", None, None),
    "session_id": ("Session label (ses-<label>); n/a for datasets without sessions", None, None),
    "roi": ("Region of interest (bids_iron.anatomy.rois vocabulary)", None, None),
    "hemisphere": ("Hemisphere of the ROI", None,
                   {"left": "left", "right": "right", "bilateral": "both or midline"}),
    "metric": ("Quantity measured in the ROI", None,
               {"r2star": "R2* (1/s)", "t2star": "T2* (s)", "lfs": "local field shift (ppm)",
                "chi": "magnetic susceptibility (ppm)",
                "chi_wholebrain": "magnetic susceptibility referenced to the whole brain "
                                  "(ppm)"}),
    "source": ("Origin of the ROI mask (atlas, user, freesurfer; n/a if not recorded)", None,
               None),
    "mean": ("ROI mean of the metric in this session (the value all statistics use)",
             _VALUE_UNITS, None),
    "median": ("ROI median of the metric", _VALUE_UNITS, None),
    "sd": ("ROI standard deviation of the metric over voxels", _VALUE_UNITS, None),
    "n_voxels": ("Voxels in the (eroded) ROI", None, None),
    "volume_mm3": ("Volume of the voxels averaged (eroded ROI)", "mm^3", None),
    "roi_volume_mm3": ("Volume of the ROI label in the subject's space before erosion "
                       "(roistats.tsv label_volume_mm3; n/a when not written)", "mm^3", None),
    "roistats_file": ("roistats.tsv the row comes from", None, None),
    "group": ("Group label from participants.tsv (--group-column)", None, None),
    "age": ("Age at the session (see age_source)", "years", None),
    "age_source": ("Where the age comes from", None,
                   {"sessions.tsv": "age column of sessions.tsv",
                    "participants.tsv+acq_time": "participants.tsv age (at the first session) "
                    "plus the acq_time difference", "participants.tsv": "participants.tsv age "
                    "(no dates to adjust it)", "n/a": "no age"}),
    "acq_time": ("Session date and time from sessions.tsv", None, None),
    "session_order": ("Rank of the session within the participant among the sessions listed "
                      "in sessions.tsv or with an ROI table (1 = first; by acq_time, else by "
                      "session label)", None, None),
    "missing_sessions": ("Sessions of this participant listed in sessions.tsv without an ROI "
                         "table (left out; '(baseline)' when the first one is missing)", None,
                         None),
    "n_sessions": ("Sessions of the participant with roistats.tsv", None, None),
    "is_baseline": ("True for the participant's first session (False for every session when "
                    "the first one has no ROI table)", None, None),
    "years_from_baseline": ("Time since the participant's first session (acq_time)", "years",
                            None),
    "mean_agecorrected": ("mean - R(age) + R(reference_age), R fitted on controls (see "
                          "group_agefit.tsv); n/a without age or fit", _VALUE_UNITS, None),
    "section": ("Which sessions: a session label (that session of every participant), "
                "'baseline' (every participant's first session) or 'change' (first to last "
                "session, group_longitudinal.tsv)", None, None),
    "measure": ("Value analysed", None,
                {"raw": "ROI mean", "age_corrected": "age-corrected ROI mean",
                 "harmonized": "ROI mean after ComBat site harmonisation",
                 "harmonized_age_corrected": "harmonised ROI mean, age-corrected (age model "
                                             "fitted on the controls' harmonised values)",
                 "change": "last - first session", "percent_change": "100 change / |first|",
                 "change_per_year": "change / interval in years"}),
    "n": ("Number of values used (n/a values left out)", None, None),
    "n_missing": ("Rows with n/a values left out", None, None),
    "q1": ("First quartile (linear interpolation)", _VALUE_UNITS, None),
    "q3": ("Third quartile (linear interpolation)", _VALUE_UNITS, None),
    "min": ("Minimum", _VALUE_UNITS, None),
    "max": ("Maximum", _VALUE_UNITS, None),
    "mean_sd": ("'mean (SD)', 4 significant digits", None, None),
    "median_iqr": ("'median (Q1-Q3)', 4 significant digits", None, None),
    "note": ("Why a statistic is n/a, or what was left out; empty when nothing to say", None,
             None),
    "group_a": ("First group of the pair (differences are a - b)", None, None),
    "group_b": ("Second group of the pair: the controls when they take part", None, None),
    "n_a": ("Values in group a", None, None),
    "n_b": ("Values in group b", None, None),
    "mean_a": ("Mean of group a", _VALUE_UNITS, None),
    "mean_b": ("Mean of group b", _VALUE_UNITS, None),
    "sd_a": ("SD of group a (ddof=1)", _VALUE_UNITS, None),
    "sd_b": ("SD of group b (ddof=1)", _VALUE_UNITS, None),
    "median_a": ("Median of group a", _VALUE_UNITS, None),
    "median_b": ("Median of group b", _VALUE_UNITS, None),
    "difference": ("mean_a - mean_b", _VALUE_UNITS, None),
    "percent_difference": ("100 (mean_a - mean_b) / |mean_b|", "%", None),
    "ci_low": ("Lower end of the 95 % interval (comparisons: Welch interval of mean_a - mean_b; "
               "mixed models: Wald interval of the estimate)", "as the estimate/difference",
               None),
    "ci_high": ("Upper end of the 95 % interval", "as the estimate/difference", None),
    "u": ("Mann-Whitney U statistic of group a (scipy.stats.mannwhitneyu, two-sided)", None,
          None),
    "p_mwu": ("Two-sided p of the Mann-Whitney U test", None, None),
    "r_rb": ("Rank-biserial correlation 2U/(n_a n_b) - 1 (+1: every a above every b)", None,
             None),
    "t": ("t statistic", None, None),
    "df": ("Welch-Satterthwaite degrees of freedom", None, None),
    "p_welch": ("Two-sided p of Welch's t-test (scipy.stats.ttest_ind, equal_var=False)", None,
                None),
    "cohen_d": ("Cohen's d: (mean_a - mean_b) / pooled SD, pooled SD = sqrt(((n_a-1) sd_a^2 + "
                "(n_b-1) sd_b^2) / (n_a + n_b - 2))", None, None),
    "q_mwu": ("Benjamini-Hochberg q of p_mwu; family: every roi x hemisphere x metric x source "
              "x pair test with the same section and measure", None, None),
    "q_welch": ("Benjamini-Hochberg q of p_welch; family as q_mwu", None, None),
    "model": ("Age model fitted on the controls", None,
              {"exponential": "R(age) = a (1 - exp(-b age)) + c",
               "linear": "R(age) = intercept + slope age (exponential fit failed)",
               "none": "no fit (too few controls or no age)"}),
    "age_min": ("Youngest control in the fit", "years", None),
    "age_max": ("Oldest control in the fit", "years", None),
    "a": ("Amplitude a of R(age) = a (1 - exp(-b age)) + c", _VALUE_UNITS, None),
    "a_se": ("Standard error of a (curve_fit covariance)", _VALUE_UNITS, None),
    "b": ("Rate b of the saturation", "1/year", None),
    "b_se": ("Standard error of b", "1/year", None),
    "c": ("Offset c (value at age 0)", _VALUE_UNITS, None),
    "c_se": ("Standard error of c", _VALUE_UNITS, None),
    "slope": ("Slope of the linear fallback", f"({_VALUE_UNITS})/year", None),
    "slope_se": ("Standard error of the slope", f"({_VALUE_UNITS})/year", None),
    "intercept": ("Intercept of the linear fallback", _VALUE_UNITS, None),
    "r2": ("Coefficient of determination of the fitted model", None, None),
    "rmse": ("Root mean square residual of the fit", _VALUE_UNITS, None),
    "r2_linear": ("R2 of a straight line on the same data, for comparison", None, None),
    "reference_age": ("Age the corrected values refer to", "years", None),
    "value_at_reference": ("R(reference_age)", _VALUE_UNITS, None),
    "first_session": ("First session (by acq_time, else label)", None, None),
    "last_session": ("Last session", None, None),
    "interval_years": ("Time from first to last session (acq_time)", "years", None),
    "age_first": ("Age at the first session", "years", None),
    "value_first": ("ROI mean at the first session", _VALUE_UNITS, None),
    "value_last": ("ROI mean at the last session", _VALUE_UNITS, None),
    "change": ("value_last - value_first", _VALUE_UNITS, None),
    "percent_change": ("100 change / |value_first|", "%", None),
    "change_per_year": ("change / interval_years (n/a without dates)", f"({_VALUE_UNITS})/year",
                        None),
    "w": ("Wilcoxon signed-rank statistic (change against 0)", None, None),
    "p_wilcoxon": ("Two-sided p of the Wilcoxon signed-rank test (scipy.stats.wilcoxon)", None,
                   None),
    "p_ttest": ("Two-sided p of the one-sample t-test against 0 (scipy.stats.ttest_1samp)", None,
                None),
    "q_wilcoxon": ("Benjamini-Hochberg q of p_wilcoxon; family: every group x roi x hemisphere "
                   "x metric x source with the same measure", None, None),
    "q_ttest": ("Benjamini-Hochberg q of p_ttest; family as q_wilcoxon", None, None),
    "subset": ("Participants analysed: 'all' (everyone with values) or one group", None, None),
    "clinical": ("Clinical column (--clinical-columns)", None, None),
    "pearson_r": ("Pearson correlation (scipy.stats.pearsonr)", None, None),
    "p_pearson": ("Two-sided p of Pearson r", None, None),
    "spearman_rho": ("Spearman rank correlation (scipy.stats.spearmanr)", None, None),
    "p_spearman": ("Two-sided p of Spearman rho: exact (every pairing) for n <= 9, scipy's t "
                   "approximation above", None, None),
    "ols_beta": ("OLS coefficient of the clinical column in value ~ clinical + covariates "
                 "(statsmodels)", "value unit per clinical unit", None),
    "ols_beta_se": ("Standard error of ols_beta", "value unit per clinical unit", None),
    "ols_beta_std": ("Standardized coefficient ols_beta SD(clinical)/SD(value)", None, None),
    "p_ols": ("Two-sided p of ols_beta (t-test)", None, None),
    "ols_r2": ("R2 of the OLS model", None, None),
    "ols_r2_adj": ("Adjusted R2 of the OLS model", None, None),
    "ols_n": ("Rows in the OLS model (complete cases)", None, None),
    "ols_covariates": ("Covariates in the OLS model besides the clinical column", None, None),
    "q_pearson": ("Benjamini-Hochberg q of p_pearson; family: every roi x hemisphere x metric x "
                  "source with the same subset, measure and clinical column", None, None),
    "q_spearman": ("Benjamini-Hochberg q of p_spearman; family as q_pearson", None, None),
    "q_ols": ("Benjamini-Hochberg q of p_ols; family as q_pearson", None, None),
    "term": ("Model term ('const' = intercept; categorical covariates as name=level)", None,
             None),
    "beta": ("OLS coefficient", None, None),
    "se": ("Standard error of beta", None, None),
    "beta_std": ("Standardized coefficient beta SD(term)/SD(value); n/a for const", None, None),
    "p": ("Two-sided p of beta (t-test)", None, None),
}

COLUMNS.update({
    "estimate": ("Fixed-effect estimate (linear mixed model, REML); time terms per year; "
                 "sd(...) rows: estimated standard deviation",
                 "unit of the row's measure (per year for "
                 "terms with 'years')", None),
    "z": ("Wald z = estimate / se", None, None),
    "n_participants": ("Participants in the model (complete cases)", None, None),
    "q": ("Benjamini-Hochberg q of p; family: see the table's description of p", None, None),
    "design": ("Sessions used", None, {"first-last": "first and last session of participants "
               "with >= 2 sessions", "baseline": "first session only (no repeated measures)"}),
    "effect": ("Effect tested", None, {
        "group": "between groups (mean of first and last session, or baseline)",
        "time": "change from first to last session, averaged over groups",
        "group:time": "group x time interaction (change differs between groups)"}),
    "test": ("Multivariate test statistic (statsmodels MANOVA.mv_test)", None, None),
    "value": ("Value of the test statistic", None, None),
    "num_df": ("Numerator degrees of freedom of the F approximation", None, None),
    "den_df": ("Denominator degrees of freedom of the F approximation", None, None),
    "F": ("F approximation of the test statistic", None, None),
    "n_rois": ("Nuclei (roi x hemisphere) as dependent variables", None, None),
    "rois": ("The dependent variables", None, None),
})

COLUMNS.update({
    "site": ("Scanner site of the session (--site-column, 'site' or the GRE sidecars)", None,
             None),
    "site_source": ("Where the site comes from (a column, or 'sidecars': InstitutionName / "
                    "Manufacturer / ManufacturersModelName / MagneticFieldStrength)", None,
                    None),
    "mean_harmonized": ("mean after ComBat site harmonisation (neuroCombat; age and group "
                        "protected); n/a where not harmonised", _VALUE_UNITS, None),
    "mean_harmonized_agecorrected": ("mean_harmonized - R(age) + R(reference_age), R fitted "
                                     "on the controls' harmonised values", _VALUE_UNITS, None),
    "lesion_volume_mm3": ("Total lesion volume of the session (sum over the lesions of "
                          "*_desc-lesions_roistats.tsv; 0 for an empty lesion mask; n/a "
                          "without a lesion mask)", "mm^3", None),
    "lesion_volume_log": ("ln(1 + lesion_volume_mm3)", "ln(mm^3)", None),
    "lesion_count": ("Lesions (connected components) in the session's lesion mask", None,
                     None),
    "n_sites": ("Sites with baseline sessions in the test", None, None),
    "f_site_raw": ("F of the site terms in value ~ site + group + age (OLS, baseline), raw "
                   "values", None, None),
    "p_site_raw": ("p of f_site_raw", None, None),
    "f_site_harmonized": ("The same F on the harmonised values", None, None),
    "p_site_harmonized": ("p of f_site_harmonized", None, None),
    "step": ("Order of entry in the forward stepwise selection (1 = first)", None, None),
    "r2_change": ("Increase of R2 when the term entered", None, None),
    "f_change": ("Partial F of the R2 increase (1 and n - k degrees of freedom)", None, None),
    "p_change": ("p of the partial F; entry needs p < 0.05", None, None),
    "candidates": ("Candidate predictors offered to the selection (complete cases)", None,
                   None),
})



def _volume_columns():
    """Entries of the brain-volume columns (`bids_iron.anatomy.volumes.STRUCTURES`)."""
    from ..anatomy.volumes import STRUCTURE_DESCRIPTIONS

    out = {}
    for name, text in STRUCTURE_DESCRIPTIONS.items():
        out[f"{name}_volume_mm3"] = (
            f"Volume of the session's {text} (T1w, *_desc-volumes_morph.tsv; n/a without a "
            "T1w)", "mm^3", None)
        if name != "icv":
            out[f"{name}_fraction_icv"] = (f"{name}_volume_mm3 / icv_volume_mm3 (head-size "
                                           "normalised)", None, None)
    return out


COLUMNS.update(_volume_columns())

#: Overrides for columns whose meaning depends on the table.
TABLE_OVERRIDES = {
    "group_mixedmodels.tsv": {
        "term": ("Model term of value ~ group * years + covariates + (1 | participant): "
                 "Intercept, group[T.<label>] (group - controls at the first session), years "
                 "(yearly change of the controls), group[T.<label>]:years (group x time "
                 "interaction: difference of the yearly change), covariates (name=level for "
                 "categories), sd(participant) and sd(residual) (random-effect SDs, no test); "
                 "n/a: no model (see note)", None, None),
        "se": ("Standard error of the estimate", "as estimate", None),
        "p": ("Two-sided p of the Wald z test", None, None),
        "q": ("Benjamini-Hochberg q of p; family: every roi x hemisphere x metric x source "
              "with the same measure and term", None, None),
        "n_sessions": ("Sessions in the model (complete cases)", None, None)},
    "group_stepwise.tsv": {
        "term": ("Variable that entered at this step; 'none': no candidate entered; 'n/a': "
                 "no model (see note)", None, None),
        "r2": ("R2 of the model after this step", None, None),
        "beta": ("OLS coefficient in the final model", "value unit per predictor unit", None),
        "se": ("Standard error of beta", "value unit per predictor unit", None),
        "beta_std": ("Standardized coefficient beta SD(term)/SD(value)", None, None),
        "t": ("t statistic of beta in the final model", None, None),
        "p": ("Two-sided p of beta in the final model (conditional on the selection)", None,
              None),
        "n": ("Participants in the selection (complete cases)", None, None)},
    "group_manova.tsv": {
        "p": ("p of the F approximation", None, None),
        "q": ("Benjamini-Hochberg q of p; family: every metric x source with the same "
              "measure, effect and test", None, None),
        "measure": ("Value analysed", None, {"raw": "ROI mean",
                                             "age_corrected": "age-corrected ROI mean"})},
    "group_summary.tsv": {"mean": ("Group mean of the ROI means", _VALUE_UNITS, None),
                          "sd": ("Group SD of the ROI means (ddof=1)", _VALUE_UNITS, None),
                          "median": ("Group median of the ROI means", _VALUE_UNITS, None)},
    "group_longitudinal_summary.tsv": {
        "mean": ("Group mean of the measure (change)", "see measure", None),
        "sd": ("Group SD of the measure (ddof=1)", "see measure", None),
        "median": ("Group median of the measure", "see measure", None)},
    "group_regressions.tsv": {"n": ("Rows in the OLS model", None, None),
                              "t": ("t statistic of beta", None, None)},
}


def _lesion_metric(column):
    """Description of a ``lesion_<metric>`` column (voxel-weighted mean over the lesions)."""
    metric = column[len("lesion_"):]
    return (f"Mean {metric} over every lesion of the session (voxel-weighted mean of the "
            "per-lesion means)", f"unit of {metric} ({METRIC_UNITS.get(metric, 'see metric')})",
            None)


def dictionary(table, name, extra=None):
    """The BIDS data dictionary of a table: {column: {Description, Units?, Levels?}}."""
    extra = extra or {}
    overrides = TABLE_OVERRIDES.get(name, {})
    out = {}
    for column in table.columns:
        if column in extra:
            desc, units, levels = extra[column]
        elif column.startswith("lesion_") and column[7:] in METRIC_UNITS:
            desc, units, levels = _lesion_metric(column)
        else:
            desc, units, levels = overrides.get(column, COLUMNS.get(
                column, (f"Column '{column}' from participants.tsv/sessions.tsv", None, None)))
        entry = {"Description": desc}
        if units:
            entry["Units"] = units
        if levels:
            entry["Levels"] = levels
        out[column] = entry
    return out


def write_table(table, path, extra=None):
    """Write ``table`` as a BIDS TSV (n/a for missing) plus its JSON dictionary, atomically.

    Returns the two paths written.
    """
    path = Path(path)
    table = table.copy()
    for column in table.columns:
        if pd.api.types.is_datetime64_any_dtype(table[column]):
            table[column] = table[column].dt.strftime("%Y-%m-%dT%H:%M:%S")
        elif pd.api.types.is_float_dtype(table[column]):
            table[column] = table[column].replace([np.inf, -np.inf], np.nan)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.10g")
    sidecar = dictionary(table, path.name, extra)
    json_path = sidecar_path(path)
    write_json(json_path, sidecar)
    return [path, json_path]
