"""``bids-iron-demo OUTPUT_DIR``: simulate a small cohort, run both levels, show the reports.

Offline and from nothing but the installed package: writes, under OUTPUT_DIR::

    bids/                          the raw BIDS dataset (`bids_iron.demo.dataset`)
    derivatives/lesions/           the MS patients' lesion masks (as an expert would give them)
    templateflow/                  a template home in TemplateFlow's layout (`templates`)
    derivatives/bids-iron/         what ``bids-iron`` writes: maps, ROI tables, reports

then runs exactly what a user would type::

    bids-iron OUTPUT_DIR/bids OUTPUT_DIR/derivatives/bids-iron participant \\
        --templateflow-home OUTPUT_DIR/templateflow \\
        --lesion-masks OUTPUT_DIR/derivatives/lesions
    bids-iron OUTPUT_DIR/bids OUTPUT_DIR/derivatives/bids-iron group \\
        --clinical-columns EDSS disease_duration

and prints where the reports are.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import __version__

#: Voxel size (mm) of the demo template's res-01 files (the cohort is 2 mm too).
TEMPLATE_MM = 2.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="bids-iron-demo",
        description="Simulate a small MS cohort (6 participants x 2 sessions; T1w, FLAIR, "
                    "5-echo GRE) with a built-in group effect, run bids-iron's participant "
                    "and group levels on it, and print where the reports are. Offline; a few "
                    "minutes on 2 cores.")
    parser.add_argument("output_dir", type=Path,
                        help="new or empty folder for the dataset, templates and outputs")
    parser.add_argument("--n-participants", type=int, default=6, choices=(4, 6, 8, 10),
                        help="participants, half controls and half MS patients (default: 6; "
                             "10 for EDSS correlations, which need 5 patients)")
    parser.add_argument("--n-procs", type=int, default=None, metavar="N",
                        help="sessions simulated and processed in parallel (default: one per "
                             "core)")
    parser.add_argument("--version", action="version", version=f"bids-iron {__version__}")
    return parser.parse_args(argv)


def main(argv=None):
    """Entry point of ``bids-iron-demo``; returns the exit code."""
    from ..cli import main as bids_iron
    from .dataset import DEMO_SCALE, build_dataset, cohort
    from .templates import build_tf_home

    args = parse_args(argv)
    out = args.output_dir.expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        print(f"bids-iron-demo: {out} is not empty; give a new or empty folder", file=sys.stderr)
        return 2
    start = time.monotonic()
    bids, lesions = out / "bids", out / "derivatives" / "lesions"
    tf_home, derivs = out / "templateflow", out / "derivatives" / "bids-iron"
    print(f"bids-iron-demo: building the template home in {tf_home}", flush=True)
    build_tf_home(tf_home, fine=TEMPLATE_MM, scale=DEMO_SCALE)
    print(f"bids-iron-demo: simulating the cohort in {bids}", flush=True)
    build_dataset(bids, lesions, cohort(args.n_participants),
                  progress=lambda text: print(f"  {text}", flush=True), n_procs=args.n_procs)
    procs = [] if args.n_procs is None else ["--n-procs", str(args.n_procs)]
    steps = (
        ("participant", [str(bids), str(derivs), "participant", "--templateflow-home",
                         str(tf_home), "--lesion-masks", str(lesions), *procs]),
        ("group", [str(bids), str(derivs), "group", "--clinical-columns", "EDSS",
                   "disease_duration"]),
    )
    for level, command in steps:
        print(f"bids-iron-demo: bids-iron {' '.join(command)}", flush=True)
        code = bids_iron(command)
        if code:
            print(f"bids-iron-demo: the {level} level failed (exit {code}); see "
                  f"{derivs / 'logs'}", file=sys.stderr)
            return code
    minutes = (time.monotonic() - start) / 60.0
    print(f"bids-iron-demo: done in {minutes:.1f} min. Open the reports:")
    print(f"  group:       {derivs / 'group' / 'report.html'}")
    for report in sorted(derivs.glob("sub-*.html"))[:2]:
        print(f"  participant: {report}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
