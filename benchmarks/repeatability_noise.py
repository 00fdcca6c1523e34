"""Scan-rescan noise of the nucleus means: the whole chain on two noise realisations (run by hand).

The realistic head is simulated twice with different noise (seeds 1 and 2, the same anatomy)
and the app's phase stage runs on each with ``tfi_admm`` in one or more settings; printed per
setting: the Bregman steps taken, the RMS and largest difference of the 16 nucleus chi means
(left/right, referenced to the mask mean) between the two realisations (what noise alone
moves a region's value by, ppb), and their mean absolute error against the truth::

    python benchmarks/repeatability_noise.py [--voxel 1 1 1] [--variant full]
        [--set label:key=value,...]   (default: without and with the Bregman steps)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import realistic_head as H  # noqa: E402
from accuracy_whole_head import (  # noqa: E402
    parse_params, run, simulate_variant, with_params)

from bids_iron.workflow import Options  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxel", type=float, nargs=3, default=(2.0, 2.0, 2.0))
    ap.add_argument("--variant", default="full")
    ap.add_argument("--set", action="append",
                    help="label:key=value,... for tfi_admm (repeatable)")
    args = ap.parse_args()
    configs = []
    for item in args.set or ["without:bregman_max=0", "default:"]:
        label, _, rest = item.partition(":")
        configs.append((label, parse_params([p for p in rest.split(",") if p])))
    out = {}
    for seed in (1, 2):
        acq = simulate_variant(args.variant, tuple(args.voxel), seed=seed)
        for label, kw in configs:
            with with_params("dipole", "tfi_admm", kw):
                res = run(acq, Options(anatomy=False, report=False, qsm_method="tfi_admm"))
            ev = res.mask_local & acq.brain_mask
            est = H.roi_means(res.chi_ppm - res.chi_ppm[ev].mean(), acq, ev)
            truth = H.roi_means(acq.chi - acq.chi[ev].mean(), acq, ev)
            out[label, seed] = (est, truth, res.facts["DipoleInversion"].get("bregman_steps"))
    print(f"\n{tuple(args.voxel)} mm, {args.variant}; 16 nucleus means (ppb):")
    for label, _ in configs:
        (a, ta, sa), (b, _, sb) = out[label, 1], out[label, 2]
        d = a - b
        print(f"  {label:<12} steps {sa}, {sb}; seed 1 - seed 2: RMS "
              f"{1000 * np.sqrt(np.nanmean(d ** 2)):.2f}, largest "
              f"{1000 * np.nanmax(np.abs(d)):.2f}; mean |error| against the truth "
              f"{1000 * np.nanmean(np.abs(a - ta)):.2f}", flush=True)


if __name__ == "__main__":
    main()
