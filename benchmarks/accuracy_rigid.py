"""Accuracy and time of the rigid T1w -> MEGRE registration (`register_rigid`) against a known
head motion (issue 11/12: the demo spends 7.5 s per rigid registration of 2 mm images).

Run by hand (2 cores; 1 ITK thread as when two sessions run at once):

    python benchmarks/accuracy_rigid.py [--seed 3 --seed 4] [--variant NAME ...]

The subject comes from tests/registration_subject.py (independent anatomy, T1w with its own
contrast, coil bias and Rician noise; MEGRE 6 echoes moved against the T1w by a known rotation
and shift). Cases: MEGRE 1 mm / T1w 1 mm (the 1 mm benchmark) and MEGRE 2 mm / T1w 2 mm (the
demo's grids). The registration's fixed image is the MEGRE RSS (`native_reference`), as in the
app. Printed per variant and case: the error of the estimated transform over the MEGRE brain
voxels (mean and maximum distance in mm between where the estimate and the truth put each voxel
in T1w space) and the CPU seconds of `register_rigid` (best of two runs).

A variant sets module constants of bids_iron.anatomy.registration (`VARIANTS`).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> module constants of bids_iron.anatomy.registration
VARIANTS = {
    "default": {},
    "100x50x25, 0.25 (before)": {"RIGID_ITERATIONS": (100, 50, 25), "RIGID_SAMPLING": 0.25},
    "100x50x25, 0.1": {"RIGID_ITERATIONS": (100, 50, 25), "RIGID_SAMPLING": 0.1},
    "100x50x25, 0.05": {"RIGID_ITERATIONS": (100, 50, 25), "RIGID_SAMPLING": 0.05},
    "100x50x10, 0.25": {"RIGID_ITERATIONS": (100, 50, 10), "RIGID_SAMPLING": 0.25},
    "100x50x10, 0.1": {"RIGID_ITERATIONS": (100, 50, 10), "RIGID_SAMPLING": 0.1},
    "100x50x0, 0.25": {"RIGID_ITERATIONS": (100, 50, 0), "RIGID_SAMPLING": 0.25},
}


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def rigid_error(matrix, megre_affine, brain, motion_deg, motion_mm, rotation):
    """Mean and max distance (mm) over the MEGRE brain voxels between the estimated
    fixed -> moving (MEGRE -> T1w world) matrix and the true head motion."""
    import numpy as np
    ijk = np.argwhere(brain).T.astype(float)
    p = megre_affine[:3, :3] @ ijk + megre_affine[:3, 3:4]
    true = rotation(motion_deg) @ p + np.asarray(motion_mm, float)[:, None]
    est = matrix[:3, :3] @ p + matrix[:3, 3:4]
    d = np.linalg.norm(est - true, axis=0)
    return float(d.mean()), float(d.max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, action="append")
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    import inspect
    import os
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    import numpy as np
    import registration_subject as S
    import tf_home as T

    from bids_iron.anatomy import registration as R

    defaults = {k: getattr(R, k) for v in VARIANTS.values() for k in v}
    sig = inspect.signature(S.render_subject).parameters
    motion_deg, motion_mm = sig["motion_deg"].default, sig["motion_mm"].default
    R._ants(args.threads)
    work = Path(tempfile.mkdtemp(prefix="accuracy_rigid_"))
    rows = []
    for seed in args.seed or [3]:
        for megre_vox, t1w_vox in ((1.0, 1.0), (2.0, 2.0)):
            sub = S.render_subject(voxel_size=megre_vox, t1w_voxel=t1w_vox, seed=seed)
            mag = np.asarray(sub.megre.dataobj, np.float32)
            native = R.native_reference(mag, sub.megre.affine)
            for name in args.variant or list(VARIANTS):
                for k, v in defaults.items():
                    setattr(R, k, v)
                for k, v in VARIANTS[name].items():
                    setattr(R, k, v)
                best = np.inf
                for _ in range(2):
                    c0 = _cpu()
                    rig = R.register_rigid(sub.t1w, native, work, n_threads=args.threads)
                    best = min(best, _cpu() - c0)
                mean, mx = rigid_error(rig.matrix, sub.megre.affine, sub.brain_mask,
                                       motion_deg, motion_mm, T.rotation)
                rows.append((seed, f"{megre_vox:g}/{t1w_vox:g}", name, mean, mx, best))
                print(f"seed {seed} MEGRE/T1w {megre_vox:g}/{t1w_vox:g} mm  {name:<26} error "
                      f"mean {mean:.2f} max {mx:.2f} mm  CPU {best:.1f} s", flush=True)
    print(f"\n{'seed':<5}{'MEGRE/T1w mm':<14}{'variant':<28}{'mean mm':>8}{'max mm':>8}"
          f"{'CPU s':>7}")
    for seed, case, name, mean, mx, cpu in rows:
        print(f"{seed:<5}{case:<14}{name:<28}{mean:8.2f}{mx:8.2f}{cpu:7.1f}")


if __name__ == "__main__":
    main()
