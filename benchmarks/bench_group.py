"""Speed of the group level: 200 participants x 2 sessions x 10 ROIs x 4 metrics.

Target (issue 14): every table including mixed models, MANOVA, stepwise and ComBat <= 60 s
on 2 cores. Run by hand:

    python benchmarks/bench_group.py [--participants 200] [--no-figures] [--repeats 1]
    python benchmarks/bench_group.py --demo DEMO_DIR [--no-figures]

``--demo`` times the group level on a finished ``bids-iron-demo DEMO_DIR`` instead (as the demo
runs it: --clinical-columns EDSS disease_duration; it rewrites DEMO_DIR's group folder), with
the CPU time of this process and of its figure workers: the machine may be shared, and the
figures are drawn in worker processes while the tables are computed.

Writes a synthetic cohort (bids_iron.group.synthetic, 100 HC + 100 MS, two sessions two years
apart, EDSS, three sites, lesion masks and tables) to a temporary folder, then times run_group
(--covariates age sex --harmonize combat) with figures and without, and prints the time of
each and the number of rows of each table.
"""

import argparse
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from bids_iron.group.run import run_group  # noqa: E402
from bids_iron.options import GroupOptions
from bids_iron.group.synthetic import make_cohort


def _cpu():
    """CPU seconds (user + system) of this process and of its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def time_demo(demo, figures_modes):
    """Time run_group on a finished demo output (tables only and/or with figures)."""
    for figures in figures_modes:
        t0, (c0, k0) = time.perf_counter(), _cpu()
        written = run_group(demo / "bids", demo / "derivatives" / "bids-iron", GroupOptions(
            clinical_columns=("EDSS", "disease_duration"), figures=figures))
        c1, k1 = _cpu()
        label = "with figures" if figures else "tables only"
        print(f"demo group level {label}: wall {time.perf_counter() - t0:.1f} s, CPU "
              f"{c1 - c0:.1f} s + figure workers {k1 - k0:.1f} s ({len(written)} files; "
              f"load {os.getloadavg()[0]:.1f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--no-figures", action="store_true", help="time only without figures")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--demo", type=Path, default=None, metavar="DEMO_DIR",
                        help="time the group level of a finished bids-iron-demo output")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.demo is not None:
        time_demo(args.demo, [False] if args.no_figures else [False, True])
        return
    n = args.participants // 2
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        bids, out, _ = make_cohort(Path(tmp), n_per_group=(n, n), sessions=2, seed=1,
                                   site_offsets={"A": 0.0, "B": 2.0, "C": -1.5},
                                   lesion_slope={"r2star": 0.5})
        print(f"cohort: {2 * n} participants x 2 sessions x 10 ROIs x 4 metrics "
              f"(written in {time.perf_counter() - t0:.1f} s); cpus {os.cpu_count()}, "
              f"load {os.getloadavg()[0]:.1f}")
        modes = [False] if args.no_figures else [False, True]
        for figures in modes:
            times, cpu = [], []
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                written = run_group(bids, out, GroupOptions(
                    covariates=("age", "sex"), harmonize="combat", figures=figures))
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            label = "with figures" if figures else "tables only"
            print(f"run_group {label}: best wall {min(times):.1f} s, CPU {min(cpu):.1f} s, "
                  f"of {len(times)} ({len(written)} files; load {os.getloadavg()[0]:.1f})")
        for name in ("group_roistats", "group_summary", "group_comparisons", "group_agefit",
                     "group_longitudinal", "group_correlations", "group_regressions",
                     "group_mixedmodels", "group_manova", "group_stepwise",
                     "group_harmonization"):
            rows = len(pd.read_csv(out / "group" / f"{name}.tsv", sep="\t"))
            print(f"  {name}.tsv: {rows} rows")


if __name__ == "__main__":
    main()
