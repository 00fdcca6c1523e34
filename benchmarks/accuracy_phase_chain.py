"""End-to-end accuracy of the phase chain on the qsm-forward phantom (run by hand).

Phase + magnitude (SNR 100, 3 T, 5 echoes, phase offset, air cavity) -> field -> background
removal -> LFS and chi. Prints, per background x dipole method: chi ROI means vs truth over
the seven deep gray matter nuclei (slope, correlation; both referenced to the whole-brain
mean of the output mask) and the correlation of LFS with the true local field.

    python benchmarks/accuracy_phase_chain.py [--oblique DEG] [--voxel DX DY DZ]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import phantom as P  # noqa: E402

from bids_iron.anatomy.brain_mask import mask_from_magnitude  # noqa: E402
from bids_iron.maps.background import remove_background  # noqa: E402
from bids_iron.maps.combine import estimate_field_map  # noqa: E402
from bids_iron.maps.dipole import invert_dipole  # noqa: E402
from bids_iron.maps.kernels import b0_direction_from_affine  # noqa: E402
from bids_iron.maps.units import hz_to_ppm  # noqa: E402


def roi_fit(chi, truth, ph, mask):
    est, ref = [], []
    for name in P.NUCLEI:
        for hemi in ("left", "right") if name not in ("red_nucleus",) else ("left", "right"):
            roi = ph.label_mask(name, hemi) & mask
            if roi.sum() < 3:
                continue
            est.append(chi[roi].mean())
            ref.append(truth[roi].mean())
    est, ref = np.array(est), np.array(ref)
    slope = np.polyfit(ref, est, 1)[0]
    return slope, np.corrcoef(ref, est)[0, 1], len(est)


def corr(a, b, m):
    a = a[m] - a[m].mean()
    b = b[m] - b[m].mean()
    return float(np.corrcoef(a, b)[0, 1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oblique", type=float, default=0.0)
    ap.add_argument("--voxel", type=float, nargs=3, default=(2.0, 2.0, 2.0))
    ap.add_argument("--shape", type=int, nargs=3, default=(64, 64, 48))
    args = ap.parse_args()
    ph = P.make_phantom(tuple(args.shape), tuple(args.voxel))
    affine, b0_vox = P.oblique_affine(ph.voxel_size, args.oblique, 0, ph.labels.shape)
    data = P.simulate_gre(ph, snr=100, b0_dir=b0_vox, seed=3)
    mask = mask_from_magnitude(data.magnitude, ph.voxel_size)
    t = time.perf_counter()
    fmap = estimate_field_map(data.phase, data.magnitude, data.te, ph.voxel_size, mask=mask)
    print(f"field map {time.perf_counter() - t:.2f} s; mask Dice "
          f"{2 * (mask & ph.brain_mask).sum() / (mask.sum() + ph.brain_mask.sum()):.3f}")
    b0_dir = b0_direction_from_affine(affine)
    for bg in ("vsharp", "resharp", "pdf"):
        kw = {"b0_dir": tuple(b0_dir)} if bg == "pdf" else {}
        local_hz, m2 = remove_background(fmap.field_hz, mask, ph.voxel_size, method=bg, **kw)
        local = hz_to_ppm(local_hz, data.b0)
        r_lfs = corr(local, data.local_field_ppm, m2)
        for dp in ("tkd", "tikhonov_cg", "tv_admm", "medi"):
            kw2 = {"magnitude": data.magnitude[..., 0]} if dp == "medi" else {}
            t = time.perf_counter()
            res = invert_dipole(local, m2, ph.voxel_size, tuple(b0_dir), method=dp, **kw2)
            dt = time.perf_counter() - t
            chi = res.chi - res.chi[m2].mean()
            truth = ph.chi - ph.chi[m2].mean()
            slope, r, n = roi_fit(chi, truth, ph, m2)
            print(f"{bg:8s} {dp:12s} LFS r={r_lfs:.3f}  chi ROI slope={slope:.3f} r={r:.3f} "
                  f"(n={n})  {dt:.2f} s, {res.n_fft} FFTs")


if __name__ == "__main__":
    main()
