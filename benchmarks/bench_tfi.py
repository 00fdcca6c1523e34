"""Time and accuracy of total field inversion (TFI) on the chain's own input (run by hand).

The whole-head phantom (``tests/realistic_head.py``, SNR 100) is run once through the phase
stage from raw phase with ``--qsm-method tfi`` exactly as ``accuracy_whole_head.py`` does;
the total field, brain mask and output mask the chain hands TFI are cached (``--cache``),
so that each variant of `bids_iron.maps.tfi.invert_total_field_tfi` is timed alone, back to
back on the same arrays. Per variant: CPU time (user + sys of this process, all threads),
wall time, peak resident memory of the call (VmHWM reset before it), CG iterations and
Gauss-Newton steps, and the scores of ``accuracy_whole_head.py`` (chi NRMSE % over the
output mask and without its outer 2 mm, XSIM, deep-GM slope, nucleus bias %), the nucleus
bias against the ventricles and the share of the squared error in the bone partial-volume
shell (`bone_shell`); first, what a map exact everywhere but that shell (made 0) scores.

    python benchmarks/bench_tfi.py [--voxel 1 1 1] [--variant oblique] [--run default]
        [--run admm:solver=admm] [--run "fast:max_iter=3,cg_tol=0.01"]
        [--run "a:solver=admm,shell_damp=0"] ...

``--run label:key=value,...`` passes keyword arguments to the function (repeatable; the
label alone runs the defaults: the Gauss-Newton CG solver; with ``solver=admm`` the
ADMM iterations and the start's CG iterations are printed instead of CG's iterations and
steps). ``--variant`` takes a phantom variant of ``accuracy_whole_head.py`` (cached
apart). ``--run chain_default`` times the default dipole method of the app instead, on the
default background removal's local field from the same input (the background step
untimed; scored on its own mask). ``--save label`` keeps a variant's chi map in the cache
directory so that later variants are also compared with it (``--against label``: NRMSE %
of the difference over the output mask).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import realistic_head as H  # noqa: E402
from _timing import peak_rss_gib  # noqa: E402
from accuracy_inversion import Truth  # noqa: E402  (cached arrays with label_mask)
from accuracy_whole_head import _reset_peak_rss, parse_params  # noqa: E402
from qsm_metrics import metrics  # noqa: E402

from bids_iron.maps import registry  # noqa: E402
from bids_iron.maps.dipole import DipoleInversionResult  # noqa: E402
from bids_iron.maps.tfi import invert_total_field_tfi  # noqa: E402


def prepare(voxel, cache, variant="full"):
    """The chain's TFI input on the phantom (simulated and run once, then cached)."""
    extra = "" if variant == "full" else f"_{variant}"
    path = Path(cache) / f"tfi_input_{'x'.join(f'{v:g}' for v in voxel)}{extra}.npz"
    if path.exists():
        d = Truth(np.load(path))
        if "noise_sd" in d:  # older caches lack the field's noise: made again
            return d
    from accuracy_whole_head import run, simulate_variant
    from bids_iron.workflow import Options

    acq = simulate_variant(variant, tuple(voxel))
    seen = {}
    record = registry.get("dipole", "tfi")

    def spy(field, mask, voxel_size, b0_dir, noise_sd, **kw):  # keep the input, skip it
        seen.update(total=field, mask=mask, b0_dir=np.asarray(b0_dir), noise_sd=noise_sd,
                    extra=sorted(kw))
        return DipoleInversionResult(chi=np.zeros(mask.shape, np.float32), n_fft=0, n_iter=0,
                                     method="tfi", parameters={})

    registry.register(dataclasses.replace(record, function=spy, needs=("noise_sd",)))
    try:
        res = run(acq, dataclasses.replace(Options(anatomy=False, report=False),
                                           qsm_method="tfi"))
    finally:
        registry.register(record)
    if seen["extra"]:
        print(f"note: the chain also passes {seen['extra']} (not cached)")
    data = {"total": seen["total"], "mask": seen["mask"], "mask_local": res.mask_local,
            "noise_sd": seen["noise_sd"],
            "b0_dir": seen["b0_dir"], "voxel_size": np.asarray(acq.voxel_size),
            "chi": acq.chi, "labels": acq.labels, "hemisphere": acq.hemisphere,
            "brain_mask": acq.brain_mask}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return Truth(data)


def evaluation_mask(d):
    """Where the maps are scored, as `realistic_head.evaluate`: the chain's output mask
    within the true brain."""
    return d["mask_local"] & d["brain_mask"]


def score(chi, d):
    """``accuracy_whole_head``'s chi scores (`realistic_head.evaluate`) of a TFI map."""
    ev = evaluation_mask(d)
    met = metrics(chi, d["chi"], ev)
    inner = metrics(chi, d["chi"], H.without_rim(ev, tuple(d["voxel_size"])))["nrmse"]
    e, t = chi - chi[ev].mean(), d["chi"] - d["chi"][ev].mean()
    t16, e16 = H.roi_means(t, d, ev), H.roi_means(e, d, ev)
    ok = np.isfinite(t16) & np.isfinite(e16)
    slope = float(np.polyfit(t16[ok], e16[ok], 1)[0])
    return met["nrmse"], inner, met["xsim"], slope, H.nucleus_bias(e, t, d, ev)


def csf_bias(chi, d):
    """Nucleus bias % with both maps referenced to the deep CSF (the CSF label eroded by a
    voxel and more than 10 mm inside the mask: the ventricles), as the app's default
    ``--chi-reference csf`` reads them."""
    ev = evaluation_mask(d)
    deep = ev & (ndimage.distance_transform_edt(ev, sampling=tuple(d["voxel_size"])) > 10)
    csf = ndimage.binary_erosion(d["labels"] == H.INDEX["csf"]) & deep
    return H.nucleus_bias(chi - chi[csf].mean(), d["chi"] - d["chi"][csf].mean(), d, ev)


def bone_shell(d):
    """The evaluation mask's voxels that share volume with the skull (truth chi < -0.1 ppm):
    their sources look, through the field, like the background sources just outside the
    mask, so no inversion pins them (README, item 7)."""
    return evaluation_mask(d) & (d["chi"] < -0.1)


def shell_reference(d):
    """NRMSE % (whole, without the outer 2 mm) of the truth with `bone_shell` made 0: a map
    exact everywhere but there, as if it gave those sources to the background."""
    est = np.where(bone_shell(d), np.float32(0), d["chi"])
    return score(est, d)[:2]


def shell_share(chi, d):
    """% of the squared error (maps de-meaned in the evaluation mask) in `bone_shell`."""
    ev = evaluation_mask(d)
    err = (chi - chi[ev].mean()) - (d["chi"] - d["chi"][ev].mean())
    return 100 * float(np.sum(err[bone_shell(d)] ** 2) / np.sum(err[ev] ** 2))


def run_chain_default(d):
    """The default chain on the same input, for comparison: the default background removal
    (untimed) on the mask TFI gets, then the default dipole method (timed)."""
    from bids_iron.maps import background

    vs, b0 = tuple(d["voxel_size"]), tuple(d["b0_dir"])
    name = registry.default("background").name
    extra = {"b0_dir": b0} if "b0_dir" in registry.get("background", name).needs else {}
    bg = background.remove_background(d["total"], d["mask"], vs, method=name, **extra)
    record = registry.default("dipole")
    _reset_peak_rss()
    c0, t0 = time.process_time(), time.perf_counter()
    res = record.function(bg.local_field, bg.mask, vs, b0)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    chi = np.where(d["mask_local"] & bg.mask, res.chi, np.float32(0))
    res.parameters = {**res.parameters, "gn_steps": 0}
    return res, chi, cpu, wall, peak_rss_gib()


def run_variant(d, kw):
    _reset_peak_rss()
    c0, t0 = time.process_time(), time.perf_counter()
    if kw.get("solver") == "admm":  # the app passes the field's noise to tfi_admm
        kw.setdefault("noise_sd", d["noise_sd"])
    res = invert_total_field_tfi(d["total"], d["mask"], tuple(d["voxel_size"]),
                                 tuple(d["b0_dir"]), **kw)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    chi = np.where(d["mask_local"], res.chi, np.float32(0))
    return res, chi, cpu, wall, peak_rss_gib()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxel", type=float, nargs=3, default=(2.0, 2.0, 2.0))
    ap.add_argument("--variant", default="full",
                    help="phantom variant of accuracy_whole_head.py (full, oblique, snr50, ...)")
    ap.add_argument("--run", action="append", help="label[:key=value,...] (repeatable)")
    ap.add_argument("--save", action="append", default=[], help="label whose chi to keep")
    ap.add_argument("--against", help="label of a saved chi to compare with")
    ap.add_argument("--cache", default="/tmp/bids_iron_bench")
    args = ap.parse_args()
    d = prepare(args.voxel, args.cache, args.variant)
    vs = tuple(float(v) for v in d["voxel_size"])
    print(f"TFI input at {vs} mm: grid {d['mask'].shape}, mask {int(d['mask'].sum())} voxels, "
          f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}", flush=True)
    shell = bone_shell(d)
    ev = evaluation_mask(d)
    whole, inner = shell_reference(d)
    print(f"bone partial-volume shell: {100 * shell.sum() / ev.sum():.2f} % of the evaluation "
          f"mask; the truth with it made 0 scores NRMSE {whole:.1f} / inner {inner:.1f} %",
          flush=True)
    ref = None
    tag = "x".join(f"{v:g}" for v in args.voxel) + ("" if args.variant == "full"
                                                     else f"_{args.variant}")
    if args.against:
        ref = np.load(Path(args.cache) / f"tfi_chi_{tag}_{args.against}.npy")
    print(f"{'variant':<24}{'NRMSE':>7}{'inner':>7}{'XSIM':>7}{'slope':>7}{'CPU s':>8}"
          f"{'wall s':>8}{'GiB':>6}{'CG':>6}{'GN':>4}" + ("  vs ref %" if ref is not None
                                                        else "")
          + "  bias % " + " ".join(H.NUCLEUS_SHORT[n] for n in H.NUCLEI))
    for item in args.run or ["default"]:
        label, _, rest = item.partition(":")
        kw = parse_params([p for p in rest.split(",") if p])
        if label == "chain_default":
            res, chi, cpu, wall, rss = run_chain_default(d)
        else:
            res, chi, cpu, wall, rss = run_variant(d, kw)
        nrmse, inner, xsim, slope, bias = score(chi, d)
        diff = ""
        if ref is not None:
            ev = evaluation_mask(d)
            a, b = chi[ev] - chi[ev].mean(), ref[ev] - ref[ev].mean()
            diff = f"{100 * np.linalg.norm(a - b) / np.linalg.norm(b):10.1f}"
        print(f"{label:<24}{nrmse:7.1f}{inner:7.1f}{xsim:7.3f}{slope:7.3f}{cpu:8.1f}{wall:8.1f}"
              f"{rss:6.2f}{res.n_iter:6d}{res.parameters.get('gn_steps', 0):4d}{diff}  "
              + " ".join(f"{bias.get(n, np.nan):+.0f}" for n in H.NUCLEI), flush=True)
        print(f"{'':<24}bias % against the ventricles: "
              + " ".join(f"{v:+.0f}" for v in csf_bias(chi, d).values())
              + f"; {shell_share(chi, d):.0f} % of the squared error in the bone shell",
              flush=True)
        if res.parameters.get("solver") == "admm":
            print(f"{'':<24}ADMM: {res.n_iter} iterations after "
                  f"{res.parameters['start_cg_iter']} CG iterations of the start, change "
                  f"every 5 {res.parameters.get('change')}, grid "
                  f"{res.parameters.get('padded_shape')}; {res.parameters.get('bregman_steps')} "
                  f"Bregman steps, residual {res.parameters.get('residuals')} (noise "
                  f"{res.parameters.get('discrepancy_target')})", flush=True)
        else:
            print(f"{'':<24}CG per step {res.parameters.get('cg_iter_per_step')}, relative "
                  f"step {res.parameters.get('step_change')}, grid "
                  f"{res.parameters.get('padded_shape')}", flush=True)
        if label in args.save:
            np.save(Path(args.cache) / f"tfi_chi_{tag}_{label}.npy", chi)
    with contextlib.suppress(Exception):
        print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
