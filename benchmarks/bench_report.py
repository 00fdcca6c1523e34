"""Time the subject HTML report (and the ROI table) for one 192x224x160 synthetic session.

Run by hand::

    /work/venv/bin/python benchmarks/bench_report.py [--out DIR] [--shape 192 224 160]

Prints the seconds per report part and the file size. Target (issue 4): report <= 10 s per
session.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from bids_iron.anatomy.rois import NATIVE_INDEX
from bids_iron.anatomy.roistats import roi_statistics
from bids_iron.report import methods
from bids_iron.report.html import SessionReport, write_subject_report

#: (roi, centre offset from the brain centre in mm (x: +right), semi-axes in mm, R2*, chi)
NUCLEI = (
    ("caudate", (12, 14, 10), (5, 9, 9), 32.0, 0.06),
    ("putamen", (24, 2, 2), (6, 12, 10), 34.0, 0.07),
    ("globus_pallidus", (18, -2, 0), (4, 7, 6), 45.0, 0.16),
    ("thalamus", (9, -14, 4), (8, 12, 9), 27.0, 0.01),
    ("pulvinar", (10, -24, 4), (4, 4, 5), 30.0, 0.03),
    ("substantia_nigra", (10, -16, -14), (3, 6, 3), 44.0, 0.14),
    ("red_nucleus", (5, -18, -10), (3, 3, 3), 40.0, 0.11),
    ("dentate_nucleus", (14, -55, -30), (6, 5, 5), 42.0, 0.10),
    ("csf", (5, 5, 14), (3, 14, 6), 5.0, -0.02),
    ("internal_capsule", (16, -10, 2), (2, 8, 8), 24.0, -0.03),
)


def synthetic_session(shape=(192, 224, 160), voxel_size=(1.0, 1.0, 1.0), n_echoes=6, seed=0,
                      label="sub-bench_ses-1"):
    """A synthetic head with nuclei, maps, labels, template and residual (for timing)."""
    rng = np.random.default_rng(seed)
    vs = np.asarray(voxel_size, dtype=float)
    centre = (np.asarray(shape) - 1) / 2.0
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    mm = [(g - c) * v for g, c, v in zip(grids, centre, vs)]
    head = (mm[0] / 78) ** 2 + (mm[1] / 98) ** 2 + (mm[2] / 72) ** 2 <= 1
    brain = (mm[0] / 68) ** 2 + (mm[1] / 88) ** 2 + (mm[2] / 62) ** 2 <= 1
    labels = np.zeros(shape, dtype=np.int16)
    labels[brain] = NATIVE_INDEX[("white_matter", "left")]
    labels[brain & (mm[0] > 0)] = NATIVE_INDEX[("white_matter", "right")]
    r2 = np.where(brain, 21.0, 0.0).astype(np.float32)
    chi = np.where(brain, -0.02, 0.0).astype(np.float32)
    for roi, (cx, cy, cz), (ax, ay, az), r2v, chiv in NUCLEI:
        for side, sign in (("left", -1), ("right", 1)):
            inside = (((mm[0] - sign * cx) / ax) ** 2 + ((mm[1] - cy) / ay) ** 2
                      + ((mm[2] - cz) / az) ** 2) <= 1
            labels[inside] = NATIVE_INDEX[(roi, side)]
            r2[inside] = r2v
            chi[inside] = chiv
    r2 += rng.normal(0, 1.5, shape).astype(np.float32) * brain
    chi += rng.normal(0, 0.01, shape).astype(np.float32) * brain
    te = 0.004 + 0.005 * np.arange(n_echoes)
    s0 = np.where(brain, 1000.0, np.where(head, 1400.0, 0.0)).astype(np.float32)
    mag = s0[..., None] * np.exp(-np.where(head, np.maximum(r2, 15), 0)[..., None] * te)
    mag = np.abs(mag + rng.normal(0, 15, shape + (n_echoes,)) * (1 + 0j)
                 + 1j * rng.normal(0, 15, shape + (n_echoes,))).astype(np.float32)
    lfs = ndimage.gaussian_filter(chi, 2.0) * brain
    swi = mag[..., 3] * np.where(lfs > 0, np.clip(1 - 30 * lfs, 0, 1) ** 4, 1)
    flair = np.where(brain, 600.0, 300.0 * head).astype(np.float32) + rng.normal(0, 20, shape)
    template = ndimage.gaussian_filter(np.where(labels > 0, 1.0 + 0.1 * (labels % 5), 0.0), 1.5)
    residual = (np.abs(rng.normal(0.01, 0.005, shape)) * brain).astype(np.float32)
    lesions = np.zeros(shape, bool)
    c = [int(round(v)) for v in centre]
    lesions[c[0] + 30:c[0] + 36, c[1] + 20:c[1] + 25, c[2] + 15:c[2] + 19] = True
    return dict(label=label, magnitude=mag, r2star=r2, t2star=np.where(r2 > 0, 1 / np.maximum(
        r2, 1e-3), 0).astype(np.float32), lfs=lfs.astype(np.float32), chi=chi, swi=swi,
        flair=flair.astype(np.float32), mask=brain, labels=labels, template=template,
        residual=residual, lesions=lesions, te=te, voxel_size=tuple(vs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--shape", type=int, nargs=3, default=(192, 224, 160))
    args = parser.parse_args()
    t0 = time.perf_counter()
    s = synthetic_session(tuple(args.shape))
    print(f"synthetic session {args.shape}: {time.perf_counter() - t0:.1f} s to simulate")
    maps = {m: s[m] for m in ("r2star", "t2star", "lfs", "chi")}
    t0 = time.perf_counter()
    table = roi_statistics(maps, s["labels"], s["voxel_size"], lesion_mask=s["lesions"],
                           masks={"lfs": s["mask"], "chi": s["mask"]})
    t_table = time.perf_counter() - t0
    t0 = time.perf_counter()
    table_v = roi_statistics(maps, s["labels"], s["voxel_size"], lesion_mask=s["lesions"],
                             exclude_vessels={"metric": "chi", "k": 3.0})
    t_table_v = time.perf_counter() - t0
    print(f"roi_statistics: {t_table:.2f} s ({len(table)} rows); with vessel exclusion "
          f"{t_table_v:.2f} s ({int(table_v.n_excluded.sum())} voxel-rows excluded)")
    facts = {"SoftwareVersion": "bench", "EchoTime": list(s["te"]), "MagneticFieldStrength": 3.0,
             "R2starMethod": "nlls", "MaskSource": methods.MASK,
             "UnwrappingMethod": "region_growing", "BackgroundRemovalMethod": "resharp",
             "QSMMethod": "tv_admm", "ChiReference": "CSF of the lateral ventricles",
             "LFSReference": "posterior internal capsule", "Template": "MNI152NLin2009cAsym",
             "Atlases": ["MASSP20", "MIAL67ThalamicNuclei", "Diedrichsen2009"]}
    session = SessionReport(label=s["label"], magnitude=s["magnitude"], r2star=s["r2star"],
                            lfs=s["lfs"], chi=s["chi"], swi=s["swi"], flair=s["flair"],
                            mask=s["mask"], labels=s["labels"],
                            template_in_native=s["template"], residual=s["residual"],
                            lesions=s["lesions"], roi_table=table, facts=facts,
                            voxel_size=s["voxel_size"], affine=np.diag([1.0, 1, 1, 1]))
    out = args.out or Path(tempfile.mkdtemp())
    timings = []
    t0 = time.perf_counter()
    path = write_subject_report(out / "sub-bench.html", "bench", [session], timings=timings)
    total = time.perf_counter() - t0
    parts = ", ".join(f"{name} {sec:.2f} s" for name, sec in timings[0][1])
    print(f"report: {total:.2f} s for one session ({parts}); "
          f"{path.stat().st_size / 1e6:.2f} MB -> {path}")


if __name__ == "__main__":
    main()
