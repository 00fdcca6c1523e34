"""One session, end to end: inputs -> maps -> derivatives (and, with later stages, tables).

`run_participants` discovers sessions and runs `process_session` on each (in parallel
processes with ``n_procs > 1``); a failing session is logged and reported, never fatal to
the others.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .bids.derivatives import Derivatives, options_digest
from .bids.discovery import find_sessions
from .bids.load import load_session
from .errors import BidsIronError
from .maps import r2star as r2star_maps
from .report import methods

LOGGER = logging.getLogger("bids_iron")


@dataclass
class Options:
    """Processing options of a participant-level run (the CLI fills them)."""

    r2star_method: str = r2star_maps.DEFAULT_R2STAR_METHOD
    b0: float | None = None
    force: bool = False
    work_dir: Path | None = None
    n_procs: int = 1
    n_threads: int | None = None

    def digest(self):
        """Hash of the options that change outputs (not force/n_procs/work_dir)."""
        keep = {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("force", "n_procs", "n_threads", "work_dir")}
        keep["version"] = __version__
        return options_digest(keep)


@dataclass
class SessionResult:
    label: str
    status: str  # "done", "skipped", "failed"
    seconds: float = 0.0
    outputs: list = field(default_factory=list)
    message: str = ""
    notes: list = field(default_factory=list)


class _Stage:
    """Context manager timing and logging one stage of a session."""

    def __init__(self, log, label, name):
        self.log, self.label, self.name = log, label, name

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.log.info("%s: %s ...", self.label, self.name)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.log.info("%s: %s done (%.1f s)", self.label, self.name,
                          time.perf_counter() - self.t0)


def _session_logger(output_dir, label):
    """A logger that writes this session's lines to OUTPUT_DIR/logs/<label>.log too."""
    log = logging.getLogger(f"bids_iron.session.{label}")
    log.setLevel(logging.INFO)
    logs = Path(output_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / f"{label}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log, handler


def _common_sidecar(derivs, data, extra=None):
    sidecar = {
        "Sources": [derivs.bids_uri(p) for p in data.sources],
        "EchoTime": [float(t) for t in data.te],
        "SoftwareName": "bids-iron",
        "SoftwareVersion": __version__,
    }
    if data.b0 is not None:
        sidecar["MagneticFieldStrength"] = data.b0
    sidecar.update(extra or {})
    return sidecar


def write_r2star_maps(derivs, inputs, data, options, log):
    """Fit R2* and write R2*, T2* and S0 maps; return the written paths."""
    method = options.r2star_method
    with _Stage(log, inputs.label, f"R2* fit ({method}, {len(data.te)} echoes)"):
        fit = r2star_maps.fit_r2star(data.magnitude, data.te, method=method,
                                     n_threads=options.n_threads)
    algorithm, reference = methods.describe(methods.R2STAR, fit.method)
    params = {"R2starMethod": fit.method, "R2starClipRange": [0.0, r2star_maps.R2STAR_MAX],
              "T2starMax": r2star_maps.T2STAR_MAX}
    base = dict(EstimationAlgorithm=algorithm, EstimationReference=reference, **params)
    outputs = []
    for suffix, array, units, desc in (
            ("R2starmap", fit.r2star, "1/s", "R2* (transverse relaxation rate)"),
            ("T2starmap", fit.t2star, "s", "T2* = 1/R2*"),
            ("S0map", fit.s0, "arbitrary", "signal extrapolated to TE = 0")):
        sidecar = _common_sidecar(derivs, data, {"Units": units, "Description": desc, **base})
        outputs.append(derivs.save_map(inputs, array, data.affine, suffix, sidecar,
                                       header=data.header))
    if options.work_dir is not None:
        work = Path(options.work_dir) / inputs.label
        work.mkdir(parents=True, exist_ok=True)
        np.save(work / "r2star_fit_residual.npy", fit.residual)
    return outputs, fit


def process_session(inputs, output_dir, bids_dir, options):
    """Run every stage for one session. Returns a `SessionResult`; never raises."""
    t0 = time.perf_counter()
    derivs = Derivatives(output_dir, bids_dir)
    log, handler = _session_logger(output_dir, inputs.label)
    result = SessionResult(label=inputs.label, status="failed")
    try:
        digest = options.digest()
        if not options.force and derivs.is_done(inputs, digest):
            log.info("%s: already finished with these options; skipped (use --force to redo)",
                     inputs.label)
            result.status = "skipped"
            return result
        derivs.clear_done(inputs)
        with _Stage(log, inputs.label, "loading and checking inputs"):
            data = load_session(inputs, b0_override=options.b0)
        outputs, _ = write_r2star_maps(derivs, inputs, data, options, log)
        if not inputs.has_phase:
            note = "magnitude only: R2*/T2*/S0 written; phase stages (field, LFS, QSM) skipped"
            log.info("%s: %s", inputs.label, note)
            result.notes.append(note)
        derivs.mark_done(inputs, outputs, digest)
        result.status, result.outputs = "done", outputs
    except BidsIronError as exc:
        result.message = str(exc)
        log.error("%s: %s", inputs.label, exc)
    except Exception as exc:  # a bug or an unforeseen input: keep the other sessions going
        result.message = f"{type(exc).__name__}: {exc} (see logs/{inputs.label}.log)"
        log.error("%s: unexpected error\n%s", inputs.label, traceback.format_exc())
    finally:
        result.seconds = time.perf_counter() - t0
        log.removeHandler(handler)
        handler.close()
    return result


def _worker_init():
    """In a worker process, keep stdout quiet; the parent reports progress."""
    logging.getLogger("bids_iron").handlers[:] = []
    logging.getLogger("bids_iron").propagate = False


def run_participants(bids_dir, output_dir, participant_labels=None, session_labels=None,
                     options=None):
    """Process every selected session; return the list of `SessionResult`."""
    options = options or Options()
    sessions = find_sessions(bids_dir, participant_labels, session_labels)
    Derivatives(output_dir, bids_dir).write_dataset_description()
    n = len(sessions)
    LOGGER.info("found %d session(s) with multi-echo GRE data", n)
    results = []
    n_procs = max(1, min(options.n_procs, n))
    if options.n_threads is None:
        options = dataclasses.replace(options, n_threads=max(1, (os.cpu_count() or 1) // n_procs))

    def report(i, res):
        extra = f" ({res.message})" if res.message else ""
        LOGGER.info("[%d/%d] %s: %s in %.1f s%s", i, n, res.label, res.status, res.seconds, extra)

    if n_procs == 1:
        for i, inputs in enumerate(sessions, start=1):
            LOGGER.info("[%d/%d] %s: started", i, n, inputs.label)
            res = process_session(inputs, output_dir, bids_dir, options)
            results.append(res)
            report(i, res)
    else:
        with concurrent.futures.ProcessPoolExecutor(n_procs, initializer=_worker_init) as pool:
            futures = {pool.submit(process_session, s, output_dir, bids_dir, options): s
                       for s in sessions}
            for i, fut in enumerate(concurrent.futures.as_completed(futures), start=1):
                try:
                    res = fut.result()
                except Exception as exc:  # the worker process itself died
                    res = SessionResult(label=futures[fut].label, status="failed",
                                        message=f"worker died: {exc}")
                results.append(res)
                report(i, res)
    return results
