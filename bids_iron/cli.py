"""The ``bids-iron`` command (BIDS-Apps convention): argument parsing, logging, exit codes."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import BidsIronError

LOGGER = logging.getLogger("bids_iron")

EXIT_OK, EXIT_FAILED_SESSIONS, EXIT_USAGE = 0, 1, 2


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _field_strength(text):
    value = float(text)
    if not 0 < value < 20:
        raise argparse.ArgumentTypeError(f"must be a field strength in tesla (0-20), got {value}")
    return value


def build_parser():
    from .maps import background, dipole, r2star, unwrap

    p = argparse.ArgumentParser(
        prog="bids-iron",
        description="Brain iron from multi-echo gradient-echo MRI: R2*/T2*/S0 maps "
                    "(and, with phase, field, local field shift and QSM) as BIDS-Derivatives.",
        epilog="Example: bids-iron /data/bids /data/bids-iron participant --participant-label 01",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bids_dir", type=Path, help="the input BIDS dataset (read only)")
    p.add_argument("output_dir", type=Path,
                   help="where derivatives go (created if missing; must be outside bids_dir)")
    p.add_argument("analysis_level", choices=["participant", "group"],
                   help="participant: process each selected session; group: cohort tables, "
                        "statistics and plots from every session's ROI table")
    p.add_argument("--version", action="version", version=f"bids-iron {__version__}")
    sel = p.add_argument_group("selecting data")
    sel.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                     help="participants to process (with or without 'sub-'); default: all")
    sel.add_argument("--session-label", "--session_label", nargs="+", metavar="LABEL",
                     help="sessions to process (with or without 'ses-'); default: all")
    phys = p.add_argument_group("physics")
    phys.add_argument("--r2star-method", choices=r2star.R2STAR_METHODS,
                      default=r2star.DEFAULT_R2STAR_METHOD,
                      help="R2* estimator: loglinear (weighted log-linear), arlo (Pei 2015, "
                           "needs >=3 equally spaced echoes), nlls (non-linear least squares), "
                           "two-echo (closed form on the first two echoes)")
    phys.add_argument("--b0", type=_field_strength, metavar="TESLA",
                      help="main field strength in T; overrides MagneticFieldStrength")
    ph = p.add_argument_group("phase: field map, local field shift (LFS), QSM, SWI")
    ph.add_argument("--no-phase", action="store_true",
                    help="skip the phase stages even when phase images exist")
    ph.add_argument("--phase-range", nargs=2, type=float, metavar=("LO", "HI"),
                    help="stored phase values that mean -pi and +pi (default: detected, e.g. "
                         "-4096 4095 or radians)")
    ph.add_argument("--invert-phase", choices=["auto", "yes", "no"], default="auto",
                    help="flip the phase sign; auto flips for Manufacturer GE so that "
                         "paramagnetic tissue gives positive field")
    ph.add_argument("--mask", type=Path, metavar="FILE",
                    help="brain mask on the MEGRE grid instead of the magnitude-based one")
    ph.add_argument("--unwrap-method", choices=unwrap.UNWRAP_METHODS,
                    default=unwrap.DEFAULT_UNWRAP_METHOD,
                    help="spatial phase unwrapping: ROMEO-like region growing or Laplacian")
    ph.add_argument("--background-method", choices=sorted(background.BACKGROUND_METHODS),
                    default=background.DEFAULT_BACKGROUND_METHOD,
                    help="background field removal: V-SHARP (default), RESHARP, PDF or LBV "
                         "(measured on the realistic head in README.rst)")
    ph.add_argument("--qsm-method", choices=dipole.DIPOLE_METHODS,
                    default=dipole.DEFAULT_DIPOLE_METHOD,
                    help="dipole inversion: TKD, iterative Tikhonov (CG), TV-ADMM or "
                         "MEDI-like magnitude-weighted TV")
    ph.add_argument("--chi-reference", choices=["csf", "white_matter", "mean", "none"],
                    default="csf",
                    help="chi is reported relative to: csf (lateral ventricles of the atlas; "
                         "without anatomy, CSF found by its low R2*), white_matter (atlas), "
                         "mean (whole brain) or none")
    ph.add_argument("--lfs-reference", choices=["internal_capsule", "mean"],
                    default="internal_capsule",
                    help="LFS is reported relative to the posterior limb of the internal "
                         "capsule (atlas; Hammond 2008) or the whole-brain mean")
    ph.add_argument("--refine-mask", action=argparse.BooleanOptionalAction, default=True,
                    help="drop mask voxels whose field fit is poor (standard error above "
                         "median + 5 MAD: veins, sinus-adjacent dropout, low-signal borders) "
                         "before background removal, as the QSM consensus recommends (on by "
                         "default: chi NRMSE 128 -> 51 %% on the realistic head phantom)")
    ph.add_argument("--brain-mask", choices=["magnitude", "threshold", "template"],
                    default="magnitude",
                    help="phase-stage brain mask: 'magnitude' strips scalp, fat, muscle and "
                         "skull of a whole-head scan (Dice 0.99 on the realistic head "
                         "phantom); 'threshold' is the plain Otsu mask (keeps the scalp; for "
                         "brain-only crops); 'template' is the template's mask registered "
                         "to the session")
    ph.add_argument("--swi", action="store_true",
                    help="also write SWI and its minimum-intensity projection")
    an = p.add_argument_group("anatomy: registration, atlas ROIs, lesions, ROI tables, report")
    an.add_argument("--no-anatomy", action="store_true",
                    help="maps only: no template registration, ROI table or atlas references")
    an.add_argument("--templateflow-home", type=Path, metavar="DIR",
                    help="a TemplateFlow home holding the template and atlases (default: "
                         "$TEMPLATEFLOW_HOME); needed offline")
    an.add_argument("--atlas-template", default="MNI152NLin2009cAsym", metavar="NAME",
                    help="TemplateFlow template that is registered to each session")
    an.add_argument("--atlas-file", type=Path, metavar="FILE",
                    help="your own label map in --atlas-template space (with --atlas-labels)")
    an.add_argument("--atlas-labels", type=Path, metavar="TSV",
                    help="index/name table of --atlas-file; names map onto the ROI vocabulary "
                         "(e.g. left_caudate)")
    an.add_argument("--no-t1w", action="store_true",
                    help="register the template to the MEGRE magnitude even when a T1w exists")
    an.add_argument("--lesion-masks", type=Path, metavar="DIR",
                    help="derivatives folder with sub-<l>[/ses-<s>]/anat/sub-<l>[_ses-<s>]"
                         "_space-{FLAIR,T1w}_desc-lesion_mask.nii.gz per session")
    an.add_argument("--exclude-vessels", choices=["chi", "r2star"],
                    help="drop voxels above median + K x MAD of this map inside each ROI")
    an.add_argument("--vessel-k", type=float, default=3.0, metavar="K",
                    help="outlier threshold of --exclude-vessels (robust SDs)")
    an.add_argument("--no-report", action="store_true", help="no HTML report")
    an.add_argument("--roi-dseg", type=Path, metavar="DIR",
                    help="your own label maps: a derivatives folder with sub-<l>[/ses-<s>]/anat/"
                         "sub-<l>[_ses-<s>][_space-<MEGRE|T1w|FLAIR>]_dseg.nii.gz (+ _dseg.tsv)")
    an.add_argument("--roi-labels", type=Path, metavar="TSV",
                    help="one index/name table for every --roi-dseg map (instead of sidecars)")
    an.add_argument("--freesurfer-dir", type=Path, metavar="SUBJECTS_DIR",
                    help="FreeSurfer subjects folder: mri/aseg.mgz gives caudate, putamen, "
                         "pallidum, thalamus and lateral ventricles through the T1w")
    an.add_argument("--roi-source", choices=["auto", "atlas", "user", "both"], default="auto",
                    help="which ROIs fill the table: auto (user where given, atlas for the "
                         "rest), atlas, user, or both (the source column tells them apart)")
    grp = p.add_argument_group("group level")
    grp.add_argument("--group-column", default="group",
                     help="participants.tsv column with the group of each participant")
    grp.add_argument("--control-label", default="HC",
                     help="value of --group-column that marks controls (age fit, reference)")
    grp.add_argument("--age-column", metavar="COLUMN",
                     help="age column (sessions.tsv, else participants.tsv); default 'age' "
                          "when present")
    grp.add_argument("--clinical-columns", nargs="+", default=(), metavar="COLUMN",
                     help="clinical columns to correlate with, e.g. EDSS disease_duration")
    grp.add_argument("--covariates", nargs="+", default=(), metavar="COLUMN",
                     help="covariates of the regressions metric ~ clinical + covariates")
    grp.add_argument("--reference-age", type=float, metavar="YEARS",
                     help="age the age-corrected values refer to (default: controls' mean)")
    grp.add_argument("--no-figures", action="store_true", help="tables only, no plots")
    run = p.add_argument_group("running")
    run.add_argument("--n-procs", "--n_procs", type=_positive_int, metavar="N",
                     help="sessions processed in parallel, each with cores/N threads (default: "
                          "one per core, at most one per 4 GB of available memory)")
    run.add_argument("--work-dir", "-w", type=Path, metavar="DIR",
                     help="keep intermediate results (e.g. fit residuals) here")
    run.add_argument("--clean-workdir", action="store_true",
                     help="remove the work-dir intermediates of sessions that finished")
    run.add_argument("--force", action="store_true",
                     help="redo sessions that already finished with the same options")
    run.add_argument("-v", "--verbose", action="store_true", help="more log output")
    return p


def _setup_logging(output_dir, verbose):
    logs = Path(output_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_path = logs / f"bids-iron_{stamp}_{os.getpid()}.log"
    LOGGER.setLevel(logging.DEBUG if verbose else logging.INFO)
    LOGGER.handlers[:] = []
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    to_file = logging.FileHandler(log_path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    LOGGER.addHandler(console)
    LOGGER.addHandler(to_file)
    LOGGER.propagate = False
    return log_path


def main(argv=None):
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except BidsIronError as exc:
        print(f"bids-iron: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bids-iron: interrupted; finished sessions are kept, rerun to continue",
              file=sys.stderr)
        return 130


def _run(args):
    from .bids.derivatives import ensure_outside
    from .workflow import Options, run_participants

    if not args.bids_dir.is_dir():
        raise BidsIronError(f"{args.bids_dir}: BIDS_DIR does not exist or is not a folder")
    ensure_outside(args.output_dir, args.bids_dir)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BidsIronError(f"{args.output_dir}: cannot create OUTPUT_DIR ({exc.strerror}); "
                            "choose a writable folder") from None
    if args.work_dir is not None:
        ensure_outside(args.work_dir, args.bids_dir)
        args.work_dir.mkdir(parents=True, exist_ok=True)
    log_path = _setup_logging(args.output_dir, args.verbose)
    LOGGER.info("bids-iron %s: %s -> %s (log: %s)", __version__, args.bids_dir,
                args.output_dir, log_path)
    if args.analysis_level == "group":
        return _run_group(args)
    if args.mask is not None and not args.mask.is_file():
        raise BidsIronError(f"{args.mask}: --mask file not found")
    if (args.atlas_file is None) != (args.atlas_labels is None):
        raise BidsIronError("--atlas-file and --atlas-labels go together: give both")
    for option, path in (("--atlas-file", args.atlas_file), ("--atlas-labels", args.atlas_labels)):
        if path is not None and not path.is_file():
            raise BidsIronError(f"{path}: {option} file not found")
    for option, path in (("--roi-dseg", args.roi_dseg), ("--freesurfer-dir", args.freesurfer_dir)):
        if path is not None and not path.is_dir():
            raise BidsIronError(f"{path}: {option} folder not found")
    if args.roi_labels is not None and not args.roi_labels.is_file():
        raise BidsIronError(f"{args.roi_labels}: --roi-labels file not found")
    if args.lesion_masks is not None and not args.lesion_masks.is_dir():
        raise BidsIronError(f"{args.lesion_masks}: --lesion-masks folder not found")
    options = Options(r2star_method=args.r2star_method, b0=args.b0, force=args.force,
                      work_dir=args.work_dir, n_procs=args.n_procs, phase=not args.no_phase,
                      clean_work_dir=args.clean_workdir,
                      phase_range=tuple(args.phase_range) if args.phase_range else None,
                      invert_phase=args.invert_phase, mask=args.mask,
                      unwrap_method=args.unwrap_method,
                      background_method=args.background_method, qsm_method=args.qsm_method,
                      chi_reference=args.chi_reference, swi=args.swi,
                      lfs_reference=args.lfs_reference, brain_mask=args.brain_mask,
                      refine_mask=args.refine_mask,
                      anatomy=not args.no_anatomy, templateflow_home=args.templateflow_home,
                      atlas_template=args.atlas_template, atlas_file=args.atlas_file,
                      atlas_labels=args.atlas_labels, use_t1w=not args.no_t1w,
                      lesion_masks=args.lesion_masks, exclude_vessels=args.exclude_vessels,
                      vessel_k=args.vessel_k, report=not args.no_report,
                      roi_dseg=args.roi_dseg, roi_labels=args.roi_labels,
                      freesurfer_dir=args.freesurfer_dir, roi_source=args.roi_source)
    results = run_participants(args.bids_dir, args.output_dir, args.participant_label,
                               args.session_label, options)
    failed = [r for r in results if r.status == "failed"]
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    LOGGER.info("finished: %d done, %d skipped, %d failed", done, skipped, len(failed))
    if failed:
        for r in failed:
            print(f"bids-iron: failed: {r.label}: {r.message}", file=sys.stderr)
        return EXIT_FAILED_SESSIONS
    return EXIT_OK


def _run_group(args):
    from .group.run import run_group

    written = run_group(args.bids_dir, args.output_dir, group_column=args.group_column,
                        control_label=args.control_label, age_column=args.age_column,
                        clinical_columns=tuple(args.clinical_columns),
                        covariates=tuple(args.covariates), reference_age=args.reference_age,
                        figures=not args.no_figures, log=LOGGER)
    LOGGER.info("group level: %d files in %s", len(written), args.output_dir / "group")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
