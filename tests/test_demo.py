"""``bids-iron-demo``: the simulated cohort is what it claims, and the whole demo runs.

The cohort's truth is checked on the images themselves (not on the constants that made them):
the group effect and the two-year change in the basal ganglia, lesions only in patients, a
Siemens-like phase that the loader reads back to the simulated field. The end-to-end test runs
the real command (registration, atlas ROIs, both levels) on the smallest cohort and the
official BIDS validator on its outputs.
"""

import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_iron.demo import dataset as D
from bids_iron.demo.head import TISSUES

PUTAMEN = [k for k, v in TISSUES.items() if v[0] == "putamen"][0]


@pytest.fixture(scope="module")
def head():
    return D.Head()


def _putamen_chi(head, row, years):
    maps = head.tissue(row, years, 0)
    return float(maps["chi"][head.ph.labels == PUTAMEN].mean())


def test_built_in_effects(head):
    hc, ms = D.COHORT[1], D.COHORT[5]  # 37 and 39 years
    assert _putamen_chi(head, ms, 0) > 1.08 * _putamen_chi(head, hc, 0)  # group effect
    change_ms = _putamen_chi(head, ms, 2) / _putamen_chi(head, ms, 0) - 1
    change_hc = _putamen_chi(head, hc, 2) / _putamen_chi(head, hc, 0) - 1
    assert change_ms > change_hc + 0.03  # faster accumulation in MS
    assert 0 < change_hc < 0.03  # controls: their age effect only


def test_cohort_selection():
    assert [r["group"] for r in D.cohort(4)] == ["HC", "HC", "MS", "MS"]
    ten = D.cohort(10)
    assert len({r["participant_id"] for r in ten}) == 10
    assert sum(r["group"] == "MS" and r["EDSS"] > 0 for r in ten) == 5  # an EDSS correlation
    with pytest.raises(ValueError, match="4, 6, 8 or 10"):
        D.cohort(5)


def test_scan_is_scanner_like(tmp_path, head):
    root, lesions = tmp_path / "bids", tmp_path / "lesions"
    rows = (D.COHORT[0], D.COHORT[4])
    D.write_cohort_tables(root, rows)
    for s, row in enumerate(rows):
        scan = D.simulate_scan(head, row, int(row["participant_id"][4:]), 1)
        D.write_scan(root, lesions, scan, row["participant_id"], "2")
    anat = root / "sub-05" / "ses-2" / "anat"
    phase = nib.load(anat / "sub-05_ses-2_echo-3_part-phase_MEGRE.nii.gz")
    values = np.asarray(phase.dataobj)
    assert values.dtype == np.int16 and values.min() >= -4096 and values.max() <= 4094
    side = json.loads((anat / "sub-05_ses-2_echo-3_part-phase_MEGRE.json").read_text())
    assert side["EchoTime"] == D.TE[2] and side["Units"] == "arbitrary"
    # lesions: a mask for the patient only, bright on FLAIR
    assert not (lesions / "sub-01").exists()
    mask = nib.load(lesions / "sub-05" / "ses-2" / "anat"
                    / "sub-05_ses-2_space-FLAIR_desc-lesion_mask.nii.gz")
    flair = nib.load(anat / "sub-05_ses-2_FLAIR.nii.gz").get_fdata()
    les = np.asarray(mask.dataobj) > 0
    assert les.sum() > 20 and flair[les].mean() > 1.3 * np.percentile(flair[flair > 0], 90)
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    assert list(table["participant_id"]) == ["sub-01", "sub-05"]
    sessions = pd.read_csv(root / "sub-05" / "sub-05_sessions.tsv", sep="\t")
    days = pd.to_datetime(sessions["acq_time"]).diff().dt.days.iloc[1]
    assert days == pytest.approx(730, abs=1)
    exe = shutil.which("bids-validator-deno")
    proc = subprocess.run([exe, str(root), "--json"], capture_output=True, text=True,
                          timeout=300)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    assert not [i for i in issues if i["severity"] == "error"]
    # build_dataset in 2 processes writes the same bytes (each session has its own seeds)
    par = tmp_path / "parallel"
    lines = []
    D.build_dataset(par / "bids", par / "lesions", rows, progress=lines.append, n_procs=2)
    assert lines == [f"simulated {r['participant_id']} ses-{s} ({r['group']})"
                     for r in rows for s in D.SESSIONS]
    for serial in [p for p in (root / "sub-05" / "ses-2" / "anat").iterdir()] + [
            p for p in (lesions / "sub-05").rglob("*.nii.gz")] + [root / "participants.tsv"]:
        other = (par / "bids" / serial.relative_to(root) if serial.is_relative_to(root)
                 else par / "lesions" / serial.relative_to(lesions))
        assert other.read_bytes() == serial.read_bytes(), serial.name


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The real command on the smallest cohort (2 controls, 2 patients, 2 sessions each)."""
    import contextlib
    import io

    from bids_iron.demo.run import main

    out = tmp_path_factory.mktemp("demo") / "demo"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([str(out), "--n-participants", "4", "--n-procs", "2"])
    return code, stdout.getvalue(), out


def test_demo_runs_both_levels(demo_run):
    code, text, out = demo_run
    assert code == 0, text
    derivs = out / "derivatives" / "bids-iron"
    assert str(derivs / "group" / "report.html") in text
    assert len(list(derivs.glob("sub-*.html"))) == 4
    tables = [p for p in derivs.glob("sub-*/ses-*/anat/*_roistats.tsv")
              if "_desc-lesions_" not in p.name]  # per-lesion tables: patients only
    assert len(tables) == 8
    # the built-in group effect comes back through registration, atlas ROIs and statistics
    cohort = pd.read_csv(derivs / "group" / "group_roistats.tsv", sep="\t")
    chi = cohort[(cohort.metric == "chi") & (cohort.hemisphere == "bilateral")
                 & (cohort.roi == "globus_pallidus")]
    means = chi.groupby("group")["mean"].mean()
    assert means["MS"] > 1.05 * means["HC"], means
    for name in ("group_comparisons", "group_mixedmodels", "group_longitudinal"):
        assert (derivs / "group" / f"{name}.tsv").exists(), name


def test_demo_derivatives_pass_the_bids_validator(demo_run):
    _, _, out = demo_run
    exe = shutil.which("bids-validator-deno")
    proc = subprocess.run([exe, str(out / "derivatives" / "bids-iron"), "--json"],
                          capture_output=True, text=True, timeout=300)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("location")) for i in issues if i["severity"] == "error"]
    assert not errors, errors[:5]
    # recommended keys too (SpatialReference of the brain masks, atlas labels, lesion masks)
    missing = [(i.get("subCode"), i.get("location")) for i in issues
               if i["code"] == "SIDECAR_KEY_RECOMMENDED"]
    assert not missing, missing[:5]
