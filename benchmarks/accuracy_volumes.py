"""Accuracy of the brain volumes (issue 14 item 2) on the demo's phantom head, end to end.

Run by hand:

    python benchmarks/accuracy_volumes.py [--subjects 1 5] [--work DIR]

For each demo participant (`bids_iron.demo.dataset`: the adult-sized head phantom with its own
size, a smooth non-linear warp and its own head position; T1w 2 mm with noise), the demo's
template home is registered to the T1w as the anatomy stage does (T1w -> MEGRE rigid,
template -> T1w affine + SyN) and `bids_iron.volumes_stage.t1w_volumes` measures the volumes.
The truth is the phantom's tissue volume in the subject's space: the master head's labels
sampled through the subject's anatomy (size and warp, as `simulate_scan` builds it) on a
0.5 mm grid (a rigid pose does not change volumes). Truth classes: GM = cortex + cerebellar
cortex + deep nuclei (caudate, putamen, pallidum, thalamus, nigra, red nucleus, dentate);
cortical GM = the cortex label; WM = white matter + brainstem + cerebellar white matter;
CSF = the CSF label; ICV = every brain label (the vein too, 0.3 % of it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests"))

from bids_iron.demo import dataset as D  # noqa: E402
from bids_iron.demo.head import TISSUES  # noqa: E402
from test_volumes import TRUTH  # noqa: E402  (the truth classes of the phantom)


def true_volumes(head, subject_index, step=0.5):
    """Phantom tissue volumes (mm^3) in the subject's space (`TRUTH` classes)."""
    size = 1.0 + np.random.default_rng(subject_index).uniform(-0.04, 0.04)
    lo, hi = -100.0, 100.0
    axis = np.arange(lo, hi, step) + step / 2
    counts = np.zeros(max(TISSUES) + 1)
    for x0 in range(0, len(axis), 40):  # slabs: memory
        xs = axis[x0:x0 + 40]
        world = np.stack(np.meshgrid(xs, axis, axis, indexing="ij")).reshape(3, -1)
        master = (world + D.smooth_warp(world, 2.0, seed=subject_index)) / size
        ijk = head.inverse[:3, :3] @ master + head.inverse[:3, 3:4]
        lab = ndimage.map_coordinates(head.ph.labels, ijk, order=0, mode="constant", cval=0)
        counts += np.bincount(lab.astype(int), minlength=len(counts))[:len(counts)]
    voxel = step ** 3
    return {k: float(counts[v].sum() * voxel) for k, v in TRUTH.items()}


def main(argv=None):
    import nibabel as nib

    from bids_iron.anatomy import registration as R
    from bids_iron.anatomy.templates import fetch_atlas_files
    from bids_iron.demo.templates import build_tf_home
    from bids_iron.volumes_stage import t1w_volumes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bids_iron_volumes_"))
    home = build_tf_home(work / "tf", fine=1.0, scale=D.DEMO_SCALE)
    atlas = fetch_atlas_files(templateflow_home=home)
    head = D.Head()
    errors = {k: [] for k in TRUTH}
    for number in args.subjects:
        row = D.COHORT[number - 1]
        scan = D.simulate_scan(head, row, number, 0)
        t1w = nib.Nifti1Image(scan.t1w, scan.t1w_affine)
        mag = nib.Nifti1Image(scan.magnitude, scan.megre_affine)
        t0 = time.perf_counter()
        reg = R.register_to_session(mag, atlas, t1w_img=t1w, work_dir=work / f"reg{number}",
                                    cache_dir=work / "cache")
        t_reg = time.perf_counter() - t0
        measured, method = t1w_volumes(t1w, reg, atlas)
        truth = true_volumes(head, number)
        print(f"sub-{number:02d}: registration {t_reg:.0f} s, volumes {method['Seconds']} s")
        for k in TRUTH:
            err = 100.0 * (measured[k][0] / truth[k] - 1.0)
            errors[k].append(err)
            print(f"  {k:14s} measured {measured[k][0] / 1e3:8.1f} mL  true "
                  f"{truth[k] / 1e3:8.1f} mL  error {err:+6.1f} %  fraction "
                  f"{measured[k][1]:.3f} (true {truth[k] / truth['icv']:.3f})")
    print("mean |error| %: " + ", ".join(f"{k} {np.mean(np.abs(v)):.1f}"
                                         for k, v in errors.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
