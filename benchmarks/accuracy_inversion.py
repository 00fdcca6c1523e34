"""Dipole inversion and background removal on the realistic whole-head phantom (run by hand).

Two parts, each on the same arrays for every method (``tests/realistic_head.py``, 1 mm
192 x 224 x 160 by default, cached in ``--cache``):

``dipole``
    Inversion from the TRUE local field (ppm, the brain's own sources) in the TRUE brain mask,
    optionally plus Gaussian field noise (``--noise`` ppm). A total-field method (``tfi``,
    ``tfi_admm``, the default) inverts it as a total field whose background is zero (it
    still fits background sources around the mask, and may take some of the field). Scored
    over the brain mask (both maps de-meaned there): NRMSE (%), HFEN (%), XSIM, deep-GM
    slope and r of the 16 nucleus ROI means, and the bias of each nucleus (%, left and
    right pooled, both maps referenced to the whole-brain mean): "no lost iron" means every
    nucleus within 5 %.
``total``
    Susceptibility from the TRUE total field (after the shim) in the TRUE brain mask,
    optionally plus field noise: a total-field method (``tfi``) inverts it directly, any
    other dipole method inverts PDF's local field (``--total-background`` to change that);
    scored as ``dipole``.
``background``
    Background removal from the TRUE total field (after the shim) in the TRUE brain mask.
    Scored: the fraction of the brain mask kept, local-field NRMSE (%) on the kept mask and
    on the mask every method keeps (both de-meaned there), and the r of the 16 ROI means;
    then the same method from the true LOCAL field alone (no background at all): its error
    there ("floor") is the part of the local field it cannot tell from a background (the
    field of the sources at the brain's edge: bone partial volume, the venous sinuses),
    which no background can be blamed for; and from the true background alone (total minus
    local field): what it leaves in the brain ("left", % of the local field's norm) is
    background it fails to remove. The share of the local field those edge sources make is
    printed first. ``--no-edge-sources`` runs this part on the head with
    those sources made CSF (`without_edge_sources`).

Wall time on this machine (``workers=-1``) is printed for every method.

    python benchmarks/accuracy_inversion.py [--part dipole total background] [--voxel 1 1 1]
        [--dipole tv_admm l1_tv ...] [--background vsharp pdf ...] [--noise 0]
        [--total tfi tv_admm ...]
        [--set tv_admm:alpha=5e-5 --set vsharp:radii_mm=1,12,1 ...] [--anatomy independent]
        [--no-edge-sources]

A method may be given as ``name@label`` to run it twice with different ``--set`` values,
e.g. ``--background vsharp vsharp@small --set vsharp@small:radii_mm=1,12,1``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import qsm_forward

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import realistic_head as H  # noqa: E402
from qsm_metrics import metrics  # noqa: E402

from bids_iron.maps import background as bg  # noqa: E402
from bids_iron.maps import dipole as dp  # noqa: E402
from bids_iron.maps import registry  # noqa: E402

#: rad/ppm given to the methods that need ``phase_scale``: 2 pi x 42.58 MHz/T x 3 T x 20 ms
#: (the phantom's 3 T, a mean TE of 20 ms).
PHASE_SCALE = 2 * np.pi * 42.577478 * 3.0 * 0.020


class Truth(dict):
    """The cached truth arrays, with the phantom's `label_mask` (for `H.roi_means` and
    `H.nucleus_bias`)."""

    label_mask = H.Acquisition.label_mask

    def __getattr__(self, name):
        return self[name]


def load(voxel, cache, anatomy="mni"):
    """The simulated acquisition's truth arrays (cached as .npz); ``anatomy`` as
    `realistic_head.simulate` ("independent": the second head)."""
    extra = "" if anatomy == "mni" else f"_{anatomy}"
    path = Path(cache) / f"realistic_head_{'x'.join(f'{v:g}' for v in voxel)}{extra}.npz"
    if path.exists():
        return Truth(np.load(path))
    t = time.perf_counter()
    acq = H.simulate(voxel_size=tuple(voxel), snr=None, anatomy=anatomy)
    print(f"simulated in {time.perf_counter() - t:.0f} s", flush=True)
    data = {"chi": acq.chi, "local": acq.local_field_ppm, "total": acq.total_field_ppm,
            "mask": acq.brain_mask, "labels": acq.labels, "hemisphere": acq.hemisphere,
            "b0_dir": np.asarray(acq.b0_dir), "voxel_size": np.asarray(acq.voxel_size),
            "magnitude": acq.magnitude[..., 0]}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return Truth(data)


def parse_sets(items):
    out = {}
    for item in items or []:
        name, rest = item.split(":", 1)
        key, value = rest.split("=", 1)
        if "," in value:
            value = tuple(float(v) for v in value.split(","))
        else:
            try:
                value = int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    value = {"true": True, "false": False}.get(value.lower(), value)
        out.setdefault(name, {})[key] = value
    return out


def score_chi(chi, d, mask):
    truth = d["chi"]
    met = metrics(chi, truth, mask)
    met["nrmse_inner"] = metrics(chi, truth, H.without_rim(mask, d["voxel_size"]))["nrmse"]
    e = chi - chi[mask].mean()
    t = truth - truth[mask].mean()
    t16, e16 = H.roi_means(t, d, mask), H.roi_means(e, d, mask)
    ok = np.isfinite(t16) & np.isfinite(e16)
    slope = float(np.polyfit(t16[ok], e16[ok], 1)[0])
    r = float(np.corrcoef(t16[ok], e16[ok])[0, 1])
    return met, slope, r, H.nucleus_bias(e, t, d, mask)


def run_dipole(d, methods, sets, noise, phase_scale=PHASE_SCALE, source="local",
               background="pdf"):
    """Each dipole method from the true local field (``source="local"``), or from the true
    total field (``"total"``: a total-field method directly, the others after
    ``background`` removal)."""
    mask = d["mask"].astype(bool)
    f = d[source].astype(np.float32) * mask
    if noise:
        f = (f + np.random.default_rng(1).normal(0, noise, f.shape).astype(np.float32)) * mask
    vs, b0 = tuple(d["voxel_size"]), tuple(d["b0_dir"])
    print(f"\nDIPOLE from the true {source} field (noise {noise} ppm), brain "
          f"{mask.sum()} voxels at {vs} mm"
          + (f"; local-field methods after {background}" if source == "total" else ""))
    head = (f"{'method':<22}{'NRMSE':>7}{'inner':>7}{'HFEN':>7}{'XSIM':>7}{'slope':>7}{'r':>7}"
            f"{'time s':>8}{'iter':>6}  "
            + " ".join(f"{H.NUCLEUS_SHORT[n]:>5}" for n in H.NUCLEI))
    print(head + "   (nucleus bias %)")
    rows = []
    for label in methods:
        name = label.split("@")[0]
        kw = dict(sets.get(label, {}))
        record = registry.get("dipole", name)
        needs = record.needs
        if "magnitude" in needs:
            kw.setdefault("magnitude", d["magnitude"])
        if "phase_scale" in needs:
            kw.setdefault("phase_scale", phase_scale)
        if kw.get("bregman_from"):  # the discrepancy level: the noise added (None: noise-free)
            kw.setdefault("noise_sd", noise or None)
        t0 = time.perf_counter()
        field, m_in = f, mask
        if source == "total" and record.field == "local":
            rec = registry.get("background", background.split("@")[0])
            extra = dict(sets.get(background, {}))  # --total-background pdf@x --set pdf@x:k=v
            if "b0_dir" in rec.needs:
                extra.setdefault("b0_dir", b0)
            field, m_in = rec.function(f, mask, vs, **extra)
        # a total-field method on the true local field: a total field with no background
        res = dp.invert_dipole(field, m_in, vs, b0_dir=b0, method=name, **kw)
        dt = time.perf_counter() - t0
        met, slope, r, bias = score_chi(res.chi, d, mask)
        rows.append((label, met, slope, r, bias, dt))
        print(f"{label:<22}{met['nrmse']:7.1f}{met['nrmse_inner']:7.1f}{met['hfen']:7.1f}{met['xsim']:7.3f}"
              f"{slope:7.3f}{r:7.3f}{dt:8.1f}{res.n_iter:6d}  "
              + " ".join(f"{bias[n]:5.0f}" for n in H.NUCLEI), flush=True)
    return rows


def _nrmse(est, truth, mask):
    """Local-field NRMSE (%) in ``mask``, both fields de-meaned there."""
    a = est[mask] - est[mask].mean()
    b = truth[mask] - truth[mask].mean()
    return 100 * np.linalg.norm(a - b) / np.linalg.norm(b)


def rim_share(d):
    """How much of the true local field the sources in the brain's outer 2 mm make
    (bone partial volume, the venous sinuses against the skull): the norm of their field
    over the norm of the whole local field, in the brain and without its outer 2 mm."""
    mask = d["mask"].astype(bool)
    vs = tuple(d["voxel_size"])
    inner = H.without_rim(mask, vs)
    rim = (mask & ~inner).astype(np.float32)
    # as the phantom made the truth (qsm-forward's field of chi x mask)
    f = qsm_forward.generate_field((d["chi"] * rim).astype(np.float64), voxel_size=list(vs),
                                   B0_dir=list(d["b0_dir"])) * mask
    return tuple(float(np.linalg.norm(f[m] - f[m].mean())
                       / np.linalg.norm(d["local"][m] - d["local"][m].mean()))
                 for m in (mask, inner))


def without_edge_sources(d):
    """The truth with the brain's edge sources turned into tissue of chi 0 (CSF): the mask's
    voxels with bone partial volume (chi < -0.1 ppm) and the veins' (sinuses' and
    cortical veins', label and 2 voxels around it where chi > 0.1 ppm). The local field is
    made again from that chi and the total field changed by the same difference: a head
    whose mask edge holds no sources, to show what each method does there (not a head a
    scanner gives)."""
    from scipy import ndimage

    mask = d["mask"].astype(bool)
    chi = d["chi"].astype(np.float64)
    vein = ndimage.binary_dilation(d["labels"] == H.INDEX["vein"], iterations=2)
    edge = mask & ((chi < -0.1) | (vein & (chi > 0.1)))
    clean = np.where(edge, 0.0, chi) * mask
    local = qsm_forward.generate_field(clean, voxel_size=list(d["voxel_size"]),
                                       B0_dir=list(d["b0_dir"]))
    local = ((local - local[mask].mean()) * mask).astype(np.float32)
    out = Truth(d)
    out.update(chi=np.where(edge, 0.0, d["chi"]).astype(np.float32), local=local,
               total=(d["total"] - d["local"] + local).astype(np.float32))
    print(f"edge sources removed: {edge.sum()} voxels ({100 * edge.mean() / mask.mean():.1f} "
          "% of the brain)")
    return out


def run_background(d, methods, sets):
    """Each background method from the true total field, again from the true local field
    alone (no background: what it removes then is the part of the local field that it
    cannot tell from a background, the floor of its error on this head), and from the true
    background alone (what it leaves is background it fails to remove)."""
    mask = d["mask"].astype(bool)
    total = (d["total"] * mask).astype(np.float32)
    vs, b0 = tuple(d["voxel_size"]), tuple(d["b0_dir"])
    truth = d["local"]
    print(f"\nBACKGROUND from the true total field, brain {mask.sum()} voxels at {vs} mm")
    share = rim_share(d)
    print(f"the sources in the brain's outer 2 mm make {100 * share[0]:.0f} % of the true "
          f"local field's norm in the brain, {100 * share[1]:.0f} % without the outer 2 mm")
    results = {}
    for label in methods:
        name = label.split("@")[0]
        kw = dict(sets.get(label, {}))
        if name == "pdf":
            kw.setdefault("b0_dir", b0)
        t0 = time.perf_counter()
        res = bg.remove_background(total, mask, vs, method=name, **kw)
        dt = time.perf_counter() - t0
        floor = bg.remove_background((truth * mask).astype(np.float32), mask, vs, method=name,
                                     **kw)
        left = bg.remove_background(((d["total"] - truth) * mask).astype(np.float32), mask, vs,
                                    method=name, **kw)
        results[label] = (res.local_field, res.mask, dt, floor.local_field, left.local_field)
    common = mask.copy()
    for result in results.values():
        common &= result[1]
    print(f"common mask: {100 * common.sum() / mask.sum():.1f} % of the brain")
    print(f"{'':<22}{'':>8}{'from the total field':>30}{'':>16}{'floor':>16}{'left':>16}")
    print(f"{'method':<22}{'kept %':>8}{'NRMSE':>8}{'inner':>8}{'NRMSE common':>14}"
          f"{'r ROI':>8}{'time s':>8}{'NRMSE':>8}{'inner':>8}{'%':>8}{'inner':>8}")
    for label, (local, m, dt, floor, left) in results.items():
        t16, e16 = H.roi_means(truth, d, m), H.roi_means(local, d, m)
        ok = np.isfinite(t16) & np.isfinite(e16)
        r = np.corrcoef(t16[ok], e16[ok])[0, 1]
        inner = H.without_rim(m, vs)  # the outer 2 mm: bone partial volume
        # the background the method leaves in the brain, over the local field's norm
        print(f"{label:<22}{100 * m.sum() / mask.sum():8.1f}{_nrmse(local, truth, m):8.1f}"
              f"{_nrmse(local, truth, inner):8.1f}{_nrmse(local, truth, common):14.1f}"
              f"{r:8.3f}{dt:8.1f}{_nrmse(floor, truth, m):8.1f}"
              f"{_nrmse(floor, truth, inner):8.1f}{_nrmse(left + truth, truth, m):8.1f}"
              f"{_nrmse(left + truth, truth, inner):8.1f}", flush=True)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", nargs="+", default=["dipole", "background"],
                    choices=("dipole", "total", "background"))
    ap.add_argument("--voxel", type=float, nargs=3, default=(1.0, 1.0, 1.0))
    ap.add_argument("--dipole", nargs="+", default=list(dp.DIPOLE_METHODS))
    ap.add_argument("--background", nargs="+", default=list(bg.BACKGROUND_METHODS))
    ap.add_argument("--total", nargs="+", default=["tfi", "tv_admm"],
                    help="dipole methods for --part total (local-field ones after "
                         "--total-background)")
    ap.add_argument("--total-background", default="pdf")
    ap.add_argument("--noise", type=float, default=0.0, help="field noise SD (ppm)")
    ap.add_argument("--phase-scale", type=float, default=PHASE_SCALE,
                    help="rad/ppm for the methods that need it (default 3 T, TE 20 ms)")
    ap.add_argument("--set", action="append", help="method:key=value (repeatable)")
    ap.add_argument("--no-edge-sources", action="store_true",
                    help="background part on a head whose mask edge holds no sources "
                         "(bone partial volume and veins there made CSF)")
    ap.add_argument("--anatomy", default="mni", choices=("mni", "independent"),
                    help="the head (independent: the second head, other atlases and shape)")
    ap.add_argument("--cache", default="/tmp/bids_iron_bench")
    args = ap.parse_args(argv)
    d = load(args.voxel, args.cache, args.anatomy)
    sets = parse_sets(args.set)
    if "dipole" in args.part:
        run_dipole(d, args.dipole, sets, args.noise, args.phase_scale)
    if "total" in args.part:
        run_dipole(d, args.total, sets, args.noise, args.phase_scale, source="total",
                   background=args.total_background)
    if "background" in args.part:
        run_background(without_edge_sources(d) if args.no_edge_sources else d,
                       args.background, sets)


if __name__ == "__main__":
    main()
