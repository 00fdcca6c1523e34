"""Time registration + label transfer on a 1 mm 192 x 224 x 160 synthetic MEGRE session.

Run by hand (2 cores is the target machine):

    python benchmarks/bench_registration.py [--threads 2] [--warp 2.0] [--work DIR]

A synthetic TEMPLATEFLOW_HOME (tests/tf_home.py: 1 mm res-01 atlases, 2 mm res-02 T1w/T2w,
SUIT) is built, a subject (template anatomy + rigid motion + smooth warp, 4-echo MEGRE
magnitude) rendered on a 1 mm 192 x 224 x 160 grid, its R2* fitted (the app's default
registration uses it; ``--no-iron`` for the T1w/magnitude-only registration), then in THIS
process:
`fetch_atlas_files`, `register_to_session` (SUIT -> template included, i.e. the uncached
first-session cost; a second session reuses the cache), `warp_labels_to_native`. Printed:
seconds per step (wall and process CPU), peak RSS (ru_maxrss, includes the subject arrays),
Dice per nucleus and of the warped template brain mask.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warp", type=float, default=2.0)
    ap.add_argument("--work", default=None)
    ap.add_argument("--no-iron", action="store_true",
                    help="without the R2* channel and local refinement (--no-registration-iron)")
    args = ap.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tests"))
    sys.path.insert(0, str(root))
    import nibabel as nib
    import tf_home as T
    from bids_iron.anatomy import registration as R, rois, templates as TP

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_reg_"))
    home = work / "templateflow"
    if not (home / "tpl-SUIT").exists():
        T.build_tf_home(home)
    subj = T.make_subject(shape=(192, 224, 160), voxel_size=1.0, warp_mm=args.warp)
    img = nib.Nifti1Image(subj.magnitude, subj.affine)
    import numpy as np
    from bids_iron.maps.r2star import fit_r2star
    iron = None if args.no_iron else nib.Nifti1Image(
        np.asarray(fit_r2star(subj.magnitude, subj.te).r2star, np.float32), subj.affine)

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    rows = []
    for label, cache in (("first session (SUIT uncached)", work / "cache_new"),
                         ("next session (SUIT cached)", work / "cache_new")):
        t0, c0 = time.perf_counter(), cpu()
        af = TP.fetch_atlas_files(templateflow_home=home)
        reg = R.register_to_session(img, af, work_dir=work / "reg", cache_dir=cache,
                                    n_threads=args.threads, iron_img=iron)
        t1 = time.perf_counter()
        nl = R.warp_labels_to_native(reg, af)
        t2, c2 = time.perf_counter(), cpu()
        rows.append((label, t1 - t0, t2 - t1, t2 - t0, c2 - c0, dict(reg.timings)))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    for label, treg, tlab, tot, c, tim in rows:
        print(f"{label}: registration {treg:.1f} s, label transfer {tlab:.1f} s, total {tot:.1f} s "
              f"wall, {c:.1f} s CPU; steps {', '.join(f'{k} {v:.1f}' for k, v in tim.items())}")
    print(f"peak RSS {peak_gb:.2f} GB (targets: <= 60 s per session on 2 cores, <= 4 GB)")
    out = []
    for roi in ("caudate", "putamen", "globus_pallidus", "thalamus", "pulvinar",
                "substantia_nigra", "red_nucleus", "dentate_nucleus"):
        for h, hemi in ((1, "left"), (2, "right")):
            est = nl.labels == rois.NATIVE_INDEX[(roi, hemi)]
            if roi == "thalamus":
                est |= nl.labels == rois.NATIVE_INDEX[("pulvinar", hemi)]
            out.append(f"{roi}-{hemi[0]} {R.dice(T.truth_mask(subj, roi, h), est):.2f}")
    print("Dice: " + ", ".join(out))
    print(f"template brain mask Dice {R.dice(nl.brain_mask, subj.brain_mask):.3f}")


if __name__ == "__main__":
    main()
