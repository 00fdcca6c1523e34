"""The ``bids-iron`` command (BIDS-Apps convention): argument parsing, logging, exit codes."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .errors import BidsIronError

LOGGER = logging.getLogger("bids_iron")

EXIT_OK, EXIT_FAILED_SESSIONS, EXIT_USAGE = 0, 1, 2


class _DefaultsShown(argparse.HelpFormatter):
    """Help with each option's default, where it has one worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or not action.option_strings or default is argparse.SUPPRESS
                or default in (None, (), [])
                or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))):
            return text
        if isinstance(default, bool):
            return text + f" (default: {'on' if default else 'off'})"
        return text + " (default: %(default)s)"


def build_parser():
    """The argument parser: positional arguments here, every option from its declaration
    in `bids_iron.options`."""
    from .options import add_arguments

    p = argparse.ArgumentParser(
        prog="bids-iron",
        description="Brain iron from multi-echo gradient-echo MRI: R2*/T2*/S0 maps "
                    "(and, with phase, field, local field shift and QSM) as BIDS-Derivatives.",
        epilog="Example: bids-iron /data/bids /data/bids-iron participant --participant-label 01",
        formatter_class=_DefaultsShown)
    p.add_argument("bids_dir", type=Path, help="the input BIDS dataset (read only)")
    p.add_argument("output_dir", type=Path,
                   help="where derivatives go (created if missing; must be outside bids_dir)")
    p.add_argument("analysis_level", choices=["participant", "group"],
                   help="participant: process each selected session; group: cohort tables, "
                        "statistics and plots from every session's ROI table")
    p.add_argument("--version", action="version", version=f"bids-iron {__version__}")
    return add_arguments(p)


def _setup_logging(output_dir, verbose):
    logs = Path(output_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_path = logs / f"bids-iron_{stamp}_{os.getpid()}.log"
    LOGGER.setLevel(logging.DEBUG if verbose else logging.INFO)
    LOGGER.handlers[:] = []
    from .progress import ConsoleHandler
    from .session import LabelledFormatter

    console = ConsoleHandler(sys.stderr)  # a progress bar too, on a terminal
    console.setFormatter(LabelledFormatter("%(asctime)s %(message)s", "%H:%M:%S"))
    console.addFilter(lambda record: getattr(record, "console", True))  # FILES_ONLY records
    to_file = logging.FileHandler(log_path)
    to_file.setFormatter(LabelledFormatter("%(asctime)s %(name)s %(message)s"))
    LOGGER.addHandler(console)
    LOGGER.addHandler(to_file)
    LOGGER.propagate = False
    return log_path


def _to_run_log(text, exc_info=False):
    """A fatal error into the run log too (when logging is set up: the console has it)."""
    if LOGGER.handlers:
        from .workflow import FILES_ONLY

        LOGGER.error("%s", text, exc_info=exc_info, extra=FILES_ONLY)


def main(argv=None):
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except BidsIronError as exc:
        print(f"bids-iron: error: {exc}", file=sys.stderr)
        _to_run_log(f"bids-iron: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # SIGINT; SIGTERM/SIGHUP (workflow.Stopped)
        name = str(exc) if str(exc).startswith("SIG") else "SIGINT"
        text = (f"bids-iron: stopped by {name}; queued sessions were cancelled, finished "
                "ones are kept: rerun the same command to continue")
        print(text, file=sys.stderr)
        _to_run_log(text)
        return 128 + getattr(signal, name, signal.SIGINT)
    except Exception:  # a bug: the traceback on the console (Python's) and in the run log
        _to_run_log("bids-iron: unexpected error", exc_info=True)
        raise


def _run(args):
    from .bids.derivatives import ensure_outside, ensure_own_output
    from .session import warnings_to_log

    if not args.bids_dir.is_dir():
        raise BidsIronError(f"{args.bids_dir}: BIDS_DIR does not exist or is not a folder")
    ensure_outside(args.output_dir, args.bids_dir)
    ensure_own_output(args.output_dir)
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
    with warnings_to_log():
        if args.analysis_level == "group":
            return _run_group(args)
        return _run_participant(args)


def _run_participant(args):
    from .options import Options, Selection
    from .workflow import run_participants

    options = Options.from_args(args)
    selection = Selection.from_args(args)
    results = run_participants(args.bids_dir, args.output_dir, selection.participant_label,
                               selection.session_label, options,
                               wait_for_lock=selection.wait_for_lock)
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
    from .options import GroupOptions

    from .runlock import ALL, output_lock

    with output_lock(args.output_dir, ALL, wait=args.wait_for_lock):
        written = run_group(args.bids_dir, args.output_dir, GroupOptions.from_args(args),
                            log=LOGGER)
    LOGGER.info("group level: %d files in %s", len(written), args.output_dir / "group")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
