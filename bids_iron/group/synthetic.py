"""A synthetic cohort with known effects, written as bids-iron outputs (tests, benchmarks, demos).

Model of each ROI value (``mean`` of roistats.tsv) for participant i at a session of age t:

    value = a (1 - exp(-b t)) + c                 (age curve, every participant)
            + group_effect                        (patients only)
            + yearly_change * years_since_first   (patients only, beyond ageing)
            + edss_slope * (EDSS - edss_mean)     (patients only; EDSS per participant)
            + site_offset * noise                   (``site_offsets``, per site, in noise SDs)
            + lesion_slope * ln(1 + lesion volume)  (patients; ``lesion_slope`` per metric)
            + volume_slope * (ROI volume - 5000 mm^3) / 1000   (``volume_slope`` per metric)
            + noise (SD ``noise``)

with per-metric scaling (r2star in 1/s; t2star = 1/r2star; chi and lfs in ppm). EDSS is n/a
for controls. The truth is returned so that callers can check what the statistics recover.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_ROIS = [("caudate", "left"), ("caudate", "right"), ("putamen", "left"),
                ("putamen", "right"), ("globus_pallidus", "left"),
                ("globus_pallidus", "right"), ("thalamus", "left"), ("thalamus", "right"),
                ("red_nucleus", "bilateral"), ("substantia_nigra", "bilateral")]
#: metric -> (a, b, c, group_effect, yearly_change, edss_slope, noise)
TRUTH = {"r2star": (15.0, 0.05, 14.0, 2.0, 0.5, 0.8, 1.0),
         "chi": (0.10, 0.05, 0.0, 0.012, 0.004, 0.006, 0.008),
         "lfs": (0.02, 0.05, 0.0, 0.003, 0.001, 0.0015, 0.002)}


def make_cohort(root, n_per_group=(30, 30), groups=("HC", "MS"), sessions=2, interval_years=2.0,
                rois=DEFAULT_ROIS, metrics=("r2star", "t2star", "chi", "lfs"), seed=0,
                age_range=(20.0, 70.0), edss_mean=3.0, with_acq_time=True,
                age_in="participants", truth=None, site_offsets=None, lesion_slope=None,
                volume_slope=None):
    """Write ``root/bids`` (participants.tsv, sessions.tsv) and ``root/derivatives``
    (roistats.tsv per session). Returns (bids_dir, output_dir, truth dict).

    ``age_in``: ``participants`` (baseline age; sessions add acq_time) or ``sessions``.
    The first group is the controls (no group effect, no extra change, EDSS n/a).
    ``truth``: {metric: (a, b, c, group_effect, yearly_change, edss_slope, noise)} replacing
    rows of `TRUTH`. ``site_offsets``: {site: offset in noise SDs}; participants are assigned
    to the sites in turn (column ``site`` of participants.tsv). ``lesion_slope``: {metric:
    change per ln(mm^3)}; every session then gets a lesion mask and, for patients, a
    ``*_desc-lesions_roistats.tsv`` with 1-6 lesions (total volume log-uniform, 300-30000
    mm^3, growing 10 % a year), as the participant level writes with ``--lesion-masks``.
    ``volume_slope``: {metric: change per cm^3 of ROI volume}; roistats.tsv then has
    ``label_volume_mm3``: 5000 mm^3 x a per-participant-and-ROI factor (SD 10 %, drawn from
    a separate generator so the other values do not change), patients losing 1 % a year.
    """
    truth_table = {**TRUTH, **(truth or {})}
    sites = list(site_offsets or {})
    rng = np.random.default_rng(seed)
    vrng = np.random.default_rng(seed + 1000)
    root = Path(root)
    bids, deriv = root / "bids", root / "derivatives"
    bids.mkdir(parents=True, exist_ok=True)
    prow = []
    sub_i = 0
    start = datetime.datetime(2015, 1, 5, 9, 0, 0)
    for gi, (group, n) in enumerate(zip(groups, n_per_group)):
        patient = gi > 0
        for _ in range(n):
            sub_i += 1
            sub = f"sub-{sub_i:03d}"
            age0 = rng.uniform(*age_range)
            edss = float(np.round(rng.uniform(0, 6) * 2) / 2) if patient else np.nan
            sex = "F" if rng.random() < 0.6 else "M"
            site = sites[sub_i % len(sites)] if sites else None
            lesion0 = float(np.exp(rng.uniform(np.log(300), np.log(30000)))) \
                if (patient and lesion_slope) else 0.0
            n_lesions = int(rng.integers(1, 7)) if lesion0 else 0
            vol0 = {r: 5000.0 * vrng.normal(1.0, 0.1) for r in rois} if volume_slope else {}
            prow.append({"participant_id": sub, "age": round(age0, 2), "sex": sex,
                         "group": group, "EDSS": edss, **({"site": site} if sites else {})})
            srows = []
            t0 = start + datetime.timedelta(days=int(rng.integers(0, 700)))
            for s in range(sessions):
                years = s * interval_years
                acq = t0 + datetime.timedelta(days=years * 365.25)
                ses = f"ses-{s + 1:02d}"
                age = age0 + years
                srows.append({"session_id": ses,
                              "acq_time": acq.strftime("%Y-%m-%dT%H:%M:%S") if with_acq_time
                              else "n/a", "age": round(age, 2)})
                lesion_mm3 = lesion0 * 1.1 ** years
                rows = []
                for roi, hemi in rois:
                    vol = vol0.get((roi, hemi), np.nan) * (0.99 ** years if patient else 1.0)
                    base_r2 = None
                    for metric in metrics:
                        key = "r2star" if metric == "t2star" else metric
                        a, b, c, ge, yc, es, noise = truth_table[key]
                        v = a * (1 - np.exp(-b * age)) + c + rng.normal(0, noise)
                        if sites:
                            v += site_offsets[site] * noise
                        if lesion_slope and patient:
                            v += lesion_slope.get(key, 0.0) * np.log1p(lesion_mm3)
                        if volume_slope:
                            v += volume_slope.get(key, 0.0) * (vol - 5000.0) / 1000.0
                        if patient:
                            v += ge + yc * years + es * (edss - edss_mean)
                        if metric == "r2star":
                            base_r2 = v
                        if metric == "t2star":
                            v = 1.0 / (base_r2 if base_r2 is not None else v)
                        rows.append({"roi": roi, "hemisphere": hemi, "metric": metric,
                                     "mean": v, "median": v, "sd": abs(v) * 0.1,
                                     "n_voxels": 200, "volume_mm3": 1600.0, "source": "atlas",
                                     **({"label_volume_mm3": vol} if volume_slope else {})})
                d = deriv / sub / ses / "anat"
                d.mkdir(parents=True, exist_ok=True)
                pd.DataFrame(rows).to_csv(d / f"{sub}_{ses}_roistats.tsv", sep="\t", index=False,
                                          float_format="%.8g")
                if lesion_slope:
                    _write_lesions(d, f"{sub}_{ses}", lesion_mm3, n_lesions, rng)
            sdf = pd.DataFrame(srows)
            if age_in != "sessions":
                sdf = sdf.drop(columns="age")
            (bids / sub).mkdir(exist_ok=True)
            sdf.to_csv(bids / sub / f"{sub}_sessions.tsv", sep="\t", index=False, na_rep="n/a")
    pdf = pd.DataFrame(prow)
    pdf.to_csv(bids / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    truth = {"metrics": truth_table, "lesion_slope": dict(lesion_slope or {}),
             "volume_slope": dict(volume_slope or {}),
             "site_offsets": dict(site_offsets or {}), "edss_mean": edss_mean,
             "interval_years": interval_years,
             "groups": list(groups)}
    return bids, deriv, truth


def _write_lesions(folder, label, total_mm3, n_lesions, rng):
    """A (tiny) lesion mask image and, with lesions, the per-lesion table of the session."""
    import nibabel as nib

    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1, 1, 1] = 1 if n_lesions else 0
    nib.save(nib.Nifti1Image(mask, np.eye(4)), folder / f"{label}_desc-lesion_mask.nii.gz")
    if not n_lesions:
        return
    share = rng.dirichlet(np.ones(n_lesions)) * total_mm3
    rows = [{"lesion_id": i + 1, "metric": metric, "mean": 30.0 if metric == "r2star" else 0.02,
             "median": 30.0, "sd": 1.0, "n_voxels": max(1, int(v)), "volume_mm3": v,
             "lesion_volume_mm3": v} for i, v in enumerate(sorted(share, reverse=True))
            for metric in ("r2star", "chi")]
    pd.DataFrame(rows).to_csv(folder / f"{label}_desc-lesions_roistats.tsv", sep="\t",
                              index=False, float_format="%.8g")
