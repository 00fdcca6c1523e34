"""`bids-iron BIDS_DIR OUTPUT_DIR group` from the command line."""

import pandas as pd

from bids_iron.group.synthetic import make_cohort
from conftest import run_cli


def test_group_level_command(tmp_path):
    bids, out, _ = make_cohort(tmp_path, n_per_group=(8, 8), rois=[("putamen", "left"), ("globus_pallidus", "left")],
                               metrics=("r2star", "chi"))
    code, _, err = run_cli(bids, out, "group", "--clinical-columns", "EDSS", "--no-figures")
    assert code == 0, err
    group = out / "group"
    for name in ("group_roistats", "group_summary", "group_comparisons", "group_correlations"):
        assert (group / f"{name}.tsv").exists() and (group / f"{name}.json").exists(), name
    comparisons = pd.read_csv(group / "group_comparisons.tsv", sep="\t")
    assert {"roi", "metric"} <= set(comparisons.columns)
    assert (group / "report.html").exists()


def test_group_level_missing_column(tmp_path):
    bids, out, _ = make_cohort(tmp_path, n_per_group=(4, 4), rois=[("putamen", "left")],
                               metrics=("r2star",))
    code, _, err = run_cli(bids, out, "group", "--group-column", "diagnosis")
    assert code == 2 and "Traceback" not in err
    line = [l for l in err.splitlines() if l.startswith("bids-iron: error:")][0]
    assert "participants.tsv" in line and "diagnosis" in line


def test_group_level_harmonize_and_no_clinical_columns(tmp_path):
    bids, out, _ = make_cohort(tmp_path, n_per_group=(9, 9), rois=[("putamen", "left"), ("caudate", "left")],
                               metrics=("r2star",), site_offsets={"A": 0.0, "B": 2.0, "C": -1.0})
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    participants.rename(columns={"site": "centre"}).to_csv(bids / "participants.tsv", sep="\t",
                                                            index=False, na_rep="n/a")
    code, _, err = run_cli(bids, out, "group", "--site-column", "centre", "--harmonize", "combat",
                           "--clinical-columns", "none", "--no-figures")
    assert code == 0, err
    group = out / "group"
    assert (group / "group_harmonization.tsv").exists() and (group / "group_mixedmodels.tsv").exists()
    assert not (group / "group_correlations.tsv").exists()
    measures = set(pd.read_csv(group / "group_comparisons.tsv", sep="\t").measure)
    assert "harmonized" in measures


def test_group_level_after_no_anatomy_says_why(tmp_path):
    """Maps without ROI tables (a --no-anatomy run): the error says the anatomy stage or
    user ROIs make ROI tables, not 'run the participant level first'."""
    bids, out, _ = make_cohort(tmp_path, n_per_group=(2, 2), rois=[("putamen", "left")],
                               metrics=("r2star",))
    for table in out.glob("sub-*/**/*_roistats.*"):
        maps = table.with_name(table.name.split("_roistats")[0] + "_R2starmap.nii.gz")
        maps.write_bytes(b"")  # what a --no-anatomy run leaves: maps only
        table.unlink()
    code, _, err = run_cli(bids, out, "group")
    assert code == 2 and "Traceback" not in err
    line = [l for l in err.splitlines() if l.startswith("bids-iron: error:")][0]
    assert "--no-anatomy" in line and "--roi-dseg" in line and "first" not in line
