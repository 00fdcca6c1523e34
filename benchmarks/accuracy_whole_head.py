"""Accuracy of the app's phase stage on the realistic whole-head phantom (run by hand).

Simulates a whole-head MEGRE scan (``tests/realistic_head.py``: MNI152 2009 brain, scalp, fat
and muscle with signal, skull, diploe, sinuses, ear canals, veins, calcification, 2nd-order
shim residual, Rician noise) and runs ``bids_iron.phase_stage.run_phase_stage`` from raw
phase exactly as a participant run does (R2* from the app's default fit; no atlas, so chi is
referenced to the R2* CSF and LFS to the whole-brain mean). Prints, per variant:

- mask Dice vs the true brain, brain volume, non-brain voxels in the mask, the fraction of
  the mask kept by background removal;
- LFS vs the true local field: r of the 16 nucleus ROI means (per hemisphere);
- chi (QSM-CI metrics over the output mask, both de-meaned there): NRMSE, HFEN, XSIM,
  deep-GM slope and r of the 16 nucleus ROI means, mean absolute ROI error (ppm; both
  referenced to their whole-mask means); ``nrmse_inner``: NRMSE without the mask's outer
  2 mm (partial volume with bone and dura); ``kept_brain``: the fraction of the TRUE brain
  inside the output mask; the bias of each nucleus (%, both referenced to the mask mean).

    python benchmarks/accuracy_whole_head.py [--voxel 1 1 1] [--variants full oblique ...]
        [--set brain_mask=threshold --set background_method=pdf ...]
        [--set qsm_method=tfi --qsm-param preconditioner=10 --qsm-param max_iter=20 ...]

``--qsm-param key=value`` passes a keyword argument to the chosen dipole method's function
(e.g. TFI's ``preconditioner``, ``alpha``, ``max_iter``; tv_admm's ``free_rim``);
``--background-param key=value`` to the background method's (e.g. PDF's ``shell_damp``). Each stage
prints its wall time, the CPU time of this process (all threads; on a shared machine the
wall time grows with the load, the CPU time much less) and the process's peak resident
memory during it (the high-water mark is reset before each stage through
``/proc/self/clear_refs``, so the number is the stage's own peak, including the arrays
already held); the chain's peak is the largest.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from functools import partial
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import realistic_head as H  # noqa: E402
from _timing import peak_rss_gib  # noqa: E402

from bids_iron.maps import registry  # noqa: E402
from bids_iron.maps.r2star import fit_r2star  # noqa: E402
from bids_iron.phase_stage import run_phase_stage  # noqa: E402
from bids_iron.workflow import Options  # noqa: E402

VARIANTS = {
    "full": {},
    "snr50": {"snr": 50.0},
    "oblique": {"angle_deg": 20.0},
    "aniso": {"voxel_z": 2.0},
    "cut_vertex": {"coverage": "cut_vertex"},
    "cut_cerebellum": {"coverage": "cut_cerebellum"},
    # a second head: atlas nuclei, older iron values, the head deformed (see
    # tests/registration_subject.independent_master); the defaults were not tuned on it
    "independent": {"anatomy": "independent"},
}


def simulate_variant(name, voxel, seed=0):
    kw = dict(VARIANTS[name])
    vs = list(voxel)
    if "voxel_z" in kw:
        vs[2] = vs[2] * kw.pop("voxel_z")
    return H.simulate(voxel_size=tuple(vs), seed=seed, **kw)


def _reset_peak_rss():
    """Reset this process's VmHWM (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run(acq, options, peaks=None):
    r2 = fit_r2star(acq.magnitude, acq.te)
    r2star = getattr(r2, "r2star", r2[0] if isinstance(r2, tuple) else r2)
    peaks = [] if peaks is None else peaks

    @contextlib.contextmanager
    def stage(name):
        _reset_peak_rss()
        t, c = time.perf_counter(), time.process_time()
        yield
        peak = peak_rss_gib()
        peaks.append(peak)
        print(f"    {name}: {time.perf_counter() - t:.1f} s ({time.process_time() - c:.1f} s "
              f"CPU), peak RSS {peak:.2f} GiB", flush=True)

    return run_phase_stage(H.as_megre(acq), options, stage, r2star=r2star)


def parse_params(items):
    """``key=value`` items as keyword arguments (int, float, bool or str values)."""
    out = {}
    for item in items or []:
        key, value = item.split("=", 1)
        for kind in (int, float):
            try:
                out[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


@contextlib.contextmanager
def with_params(family, name, params):
    """For the block, the ``family`` method ``name`` registered again with ``params`` bound;
    its record as it was afterwards (so calls do not stack)."""
    record = registry.get(family, name)
    default = registry.default(family).name == name
    if params:
        registry.register(dataclasses.replace(
            record, function=partial(record.function, **params)), default=default)
    try:
        yield
    finally:
        registry.register(record, default=default)


def parse_set(items):
    out = {}
    for item in items or []:
        key, value = item.split("=", 1)
        out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxel", type=float, nargs=3, default=(2.0, 2.0, 2.0))
    ap.add_argument("--variants", nargs="+", default=["full"], choices=sorted(VARIANTS))
    ap.add_argument("--set", action="append", help="option=value for Options (repeatable)")
    ap.add_argument("--qsm-param", action="append",
                    help="key=value for the dipole method's function (repeatable)")
    ap.add_argument("--background-param", action="append",
                    help="key=value for the background method's function (repeatable), "
                         "e.g. shell_damp=3e-3 for pdf")
    args = ap.parse_args()
    options = dataclasses.replace(Options(anatomy=False, report=False), **parse_set(args.set))
    qsm_params = parse_params(args.qsm_param)
    bg_params = parse_params(args.background_param)
    with with_params("dipole", options.qsm_method, qsm_params), \
            with_params("background", options.background_method, bg_params):
        run_variants(args, options, qsm_params, bg_params)


def run_variants(args, options, qsm_params, bg_params):
    """Each of ``args.variants`` through the chain with ``options``, scored against truth."""
    print(f"options: brain_mask={options.brain_mask} background={options.background_method} "
          f"qsm={options.qsm_method} refine_mask={options.refine_mask} "
          f"qsm params={qsm_params} background params={bg_params}")
    for name in args.variants:
        t = time.perf_counter()
        acq = simulate_variant(name, args.voxel)
        print(f"{name}: simulated {acq.magnitude.shape} in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        peaks = []
        res = run(acq, options, peaks)
        dt = time.perf_counter() - t
        m = H.evaluate(acq, res)
        bias = m.pop("bias")
        print(f"  {name}: " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in m.items())
              + f"  ({dt:.1f} s, peak RSS {max(peaks, default=float('nan')):.2f} GiB)",
              flush=True)
        inv = res.facts.get("DipoleInversion", {})
        print(f"    inversion: n_iter={inv.get('n_iter')} n_fft={inv.get('n_fft')} "
              f"converged={inv.get('converged')}"
              + (f" gn_steps={inv['gn_steps']}" if "gn_steps" in inv else "")
              + (f" bregman_steps={inv['bregman_steps']} residuals "
                 # tfi_admm: before each step; tv_admm's discrepancy rule: TV's, then final
                 f"{inv.get('residuals', [inv.get('residual_tv'), inv.get('residual')])} "
                 f"(target {inv.get('discrepancy_target')})"
                 if "bregman_steps" in inv else ""))
        print("    nucleus bias %: " + "  ".join(f"{k}={v:+.0f}" for k, v in bias.items()))


if __name__ == "__main__":
    main()
