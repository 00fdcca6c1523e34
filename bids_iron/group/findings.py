"""Results as the sentences a paper would write: effect, 95 % interval, test, p, q, n.

Pure functions from rows of the group tables to text; the report puts the significant ones
(Benjamini-Hochberg q < `Q_LEVEL`) first, each next to its table. Numbers: 3 significant
digits; p and q as ``0.012`` or ``< 0.001``; units from the metric
(`bids_iron.anatomy.roistats.METRIC_UNITS`).

Examples
--------
>>> row = dict(section="baseline", measure="raw", roi="putamen", hemisphere="left",
...            metric="r2star", source="atlas", group_a="MS", group_b="HC", n_a=30, n_b=28,
...            difference=2.1, ci_low=1.2, ci_high=3.0, percent_difference=7.9, t=4.6,
...            df=55.2, p_welch=2.6e-05, q_welch=3.1e-04, q_mwu=5e-4)
>>> comparison_sentence(row)  # doctest: +NORMALIZE_WHITESPACE
'At baseline, R2* in the left putamen was higher in MS than in HC by 2.1 1/s (95 % CI 1.2 to
3; +7.9 %; Welch t(55.2) = 4.6, p < 0.001, q < 0.001; n = 30 and 28).'
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..anatomy.roistats import METRIC_UNITS

Q_LEVEL = 0.05
METRIC_NAMES = {"r2star": "R2*", "t2star": "T2*", "lfs": "the local field shift",
                "chi": "\u03c7", "chi_wholebrain": "\u03c7 (whole-brain reference)"}
MEASURE_TEXT = {"raw": "", "age_corrected": "age-corrected ", "harmonized": "harmonised ",
                "harmonized_age_corrected": "harmonised, age-corrected "}


def fmt(x, digits=3):
    """A number with ``digits`` significant digits ('n/a' when not finite)."""
    x = float(x)
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}g}"


def fmt_p(p, name="p"):
    """``p = 0.012`` / ``p < 0.001``."""
    p = float(p)
    if not np.isfinite(p):
        return f"{name} n/a"
    return f"{name} < 0.001" if p < 0.001 else f"{name} = {p:.2g}"


def place(row):
    """'the left putamen', 'the red nucleus' (bilateral), plus a non-atlas source."""
    hemi = "" if row["hemisphere"] == "bilateral" else f"{row['hemisphere']} "
    source = row.get("source", "n/a")
    extra = "" if source in ("atlas", "n/a", None) or pd.isna(source) else f" ({source} ROI)"
    return f"the {hemi}{str(row['roi']).replace('_', ' ')}{extra}"


def quantity(row, measure=None):
    """'R2*' or 'age-corrected R2*'."""
    measure = row.get("measure", "raw") if measure is None else measure
    return MEASURE_TEXT.get(measure, f"{measure} ") + METRIC_NAMES.get(row["metric"],
                                                                        row["metric"])


def unit(row):
    return METRIC_UNITS.get(row["metric"], "")


def comparison_sentence(row):
    """A group comparison row (group_comparisons.tsv) as a sentence (Welch test)."""
    section = row["section"]
    measure = row.get("measure", "raw")
    u = unit(row)
    if section == "change":
        what = {"change": f"the change of {quantity(row, 'raw')}",
                "percent_change": f"the percent change of {quantity(row, 'raw')}",
                "change_per_year": f"the yearly change of {quantity(row, 'raw')}"}[measure]
        u = {"change": u, "percent_change": "%", "change_per_year": f"{u} per year"}[measure]
        start = f"From the first to the last session, {what}"
    else:
        when = "At baseline" if section == "baseline" else f"In {section}"
        start = f"{when}, {quantity(row)}"
    diff = float(row["difference"])
    direction = "higher" if diff > 0 else "lower"
    low, high = ((row["ci_low"], row["ci_high"]) if diff > 0
                 else (-float(row["ci_high"]), -float(row["ci_low"])))
    pct = row.get("percent_difference", np.nan)
    pct = f"; {float(pct):+.2g} %" if np.isfinite(float(pct)) and section != "change" else ""
    return (f"{start} in {place(row)} was {direction} in {row['group_a']} than in "
            f"{row['group_b']} by {fmt(abs(diff))} {u} (95 % CI {fmt(low)} to "
            f"{fmt(high)}{pct}; Welch t({fmt(row['df'])}) = {fmt(row['t'])}, "
            f"{fmt_p(row['p_welch'])}, {fmt_p(row['q_welch'], 'q')}; n = {int(row['n_a'])} and "
            f"{int(row['n_b'])}).")


def mixed_sentence(row, control_label="HC"):
    """A mixed-model term row (group_mixedmodels.tsv) as a sentence."""
    term, u = row["term"], unit(row)
    stats = (f"(95 % CI {fmt(row['ci_low'])} to {fmt(row['ci_high'])}; linear mixed model, "
             f"z = {fmt(row['z'])}, {fmt_p(row['p'])}, {fmt_p(row['q'], 'q')}; "
             f"{int(row['n_participants'])} participants, {int(row['n_sessions'])} sessions)")
    est = float(row["estimate"])
    q = quantity(row)
    if term.startswith("group[T.") and est < 0:  # the interval of the size of the effect
        stats = stats.replace(f"95 % CI {fmt(row['ci_low'])} to {fmt(row['ci_high'])}",
                              f"95 % CI {fmt(-float(row['ci_high']))} to "
                              f"{fmt(-float(row['ci_low']))}")
    if term.startswith("group[T.") and term.endswith("]:years"):
        g = term[len("group[T."):-len("]:years")]
        return (f"The yearly change of {q} in {place(row)} was {fmt(abs(est))} {u} per year "
                f"{'larger' if est > 0 else 'smaller'} in {g} than in {control_label} {stats}.")
    if term.startswith("group[T.") and term.endswith("]"):
        g = term[len("group[T."):-1]
        return (f"At the first session, {q} in {place(row)} was {fmt(abs(est))} {u} "
                f"{'higher' if est > 0 else 'lower'} in {g} than in {control_label} {stats}.")
    if term == "years":
        return (f"In {control_label}, {q} in {place(row)} changed by {fmt(est)} {u} per year "
                f"{stats}.")
    return (f"{q[0].upper() + q[1:]} in {place(row)} changed by {fmt(est)} {u} per unit of "
            f"{term} {stats}.")


def manova_sentence(row):
    """A MANOVA row (group_manova.tsv) as a sentence."""
    effect = {"group": "differed between groups", "time": "changed over time",
              "group:time": "changed differently in the groups (group x time)"}[row["effect"]]
    return (f"Across {int(row['n_rois'])} nuclei, {quantity(row)} {effect} ({row['test']} = "
            f"{fmt(row['value'])}, F({fmt(row['num_df'])}, {fmt(row['den_df'])}) = "
            f"{fmt(row['F'])}, {fmt_p(row['p'])}, {fmt_p(row['q'], 'q')}; "
            f"n = {int(row['n_participants'])}).")


def correlation_sentence(row):
    """A correlation row (group_correlations.tsv) as a sentence (Spearman, then OLS)."""
    who = "everyone" if row["subset"] == "all" else row["subset"]
    measure = row["measure"]
    if measure in ("change", "change_per_year"):
        what = ("the change of " if measure == "change" else "the yearly change of ") + \
            quantity(row, "raw")
    else:
        what = f"baseline {quantity(row)}"
    rho = float(row["spearman_rho"])
    text = (f"In {who}, {what} in {place(row)} correlated "
            f"{'positively' if rho > 0 else 'negatively'} with {row['clinical']} (Spearman rho "
            f"= {fmt(rho, 2)}, {fmt_p(row['p_spearman'])}, {fmt_p(row['q_spearman'], 'q')}; "
            f"Pearson r = {fmt(row['pearson_r'], 2)}; n = {int(row['n'])})")
    if np.isfinite(float(row.get("ols_beta", np.nan))):
        cov = row.get("ols_covariates") or ""
        adj = f" adjusted for {cov.replace(' + ', ', ')}" if cov and not pd.isna(cov) else ""
        text += (f"; OLS{adj}: {fmt(row['ols_beta'])} {unit(row)} per unit of "
                 f"{row['clinical']} (standardized {fmt(row['ols_beta_std'], 2)}, "
                 f"{fmt_p(row['p_ols'])})")
    return text + "."


def stepwise_sentence(rows):
    """The rows of one unit and subset of group_stepwise.tsv as one sentence."""
    first = rows.iloc[0]
    who = "everyone" if first["subset"] == "all" else first["subset"]
    entered = rows[rows["step"].notna()].sort_values("step")
    if entered.empty:
        return ""
    steps = "; then ".join(
        f"{r.term} (R2 change {fmt(r.r2_change, 2)}, {fmt_p(r.p_change)}; beta "
        f"{fmt(r.beta)}, standardized {fmt(r.beta_std, 2)})" for r in entered.itertuples())
    return (f"In {who}, forward stepwise regression of baseline {quantity(first)} in "
            f"{place(first)} entered {steps}; final R2 = {fmt(entered.r2.iloc[-1], 2)} "
            f"(n = {int(first['n'])}).")


def significant(table, qcol, q_level=Q_LEVEL):
    """Rows with ``qcol`` < ``q_level``, smallest q first."""
    if table is None or table.empty or qcol not in table:
        return table.iloc[0:0] if table is not None else pd.DataFrame()
    sel = table[pd.to_numeric(table[qcol], errors="coerce") < q_level]
    return sel.sort_values(qcol, kind="stable")
