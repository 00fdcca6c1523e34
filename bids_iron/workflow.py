"""One session, end to end: inputs -> maps -> derivatives (and, with later stages, tables).

`run_participants` discovers sessions and runs `process_session` on each (in parallel
processes with ``n_procs > 1``); a failing session is logged and reported, never fatal to
the others.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .bids.derivatives import Derivatives
from .cpus import available_cpus
from .bids.discovery import find_sessions
from .bids.load import load_session
from .errors import BidsIronError, InputError
from .maps import r2star as r2star_maps
from .maps import registry
from .anatomy_stage import (prepare_atlases, report_labels, run_anatomy, run_roi_tables,
                            run_user_rois)
from .bids.derivatives import atomic_path
from .phase_stage import check_phase_inputs, run_phase_stage
from .options import Options  # noqa: F401  (re-exported: bids_iron.workflow.Options)
from .report import methods
from .session import R2starResult, Session

LOGGER = logging.getLogger("bids_iron")


#: ``extra=`` of a log record that goes to the log files but not to the console (a session's
#: error: the console shows it in the session's progress line).
FILES_ONLY = {"console": False}


@dataclass
class SessionResult:
    label: str
    status: str  # "done", "skipped", "failed"
    seconds: float = 0.0
    outputs: list = field(default_factory=list)
    message: str = ""
    notes: list = field(default_factory=list)


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


# -- the stages: run_<stage>(session) -> <Stage>Result ------------------------------------------
def run_load(session):
    """Read the echoes and check the metadata every later stage needs (before any output)."""
    with session.stage("loading and checking inputs"):
        session.data = load_session(session.inputs, b0_override=session.options.b0,
                                    load_phase=session.options.phase)
        check_phase_inputs(session.data, session.options.phase_range)
        check_r2star_method(session.data, session.options.r2star_method)
    return session.data


def check_r2star_method(data, name):
    """`InputError` when the chosen R2* method cannot fit these echoes (e.g. ``arlo`` with 2
    or unequally spaced echoes): the method's own checks, run on one voxel before any
    output is written."""
    method = registry.get("r2star", name)
    try:
        method.function(data.magnitude[:1, :1, :1], data.te, n_threads=1)
    except ValueError as exc:
        raise InputError(f"{data.sources[0]}: --r2star-method {name} cannot fit these "
                         f"{len(data.te)} echoes ({exc}); choose another --r2star-method "
                         f"(default {registry.default('r2star').name})") from None


def run_r2star(session):
    """Fit R2* and write R2*, T2* and S0 maps (`R2starResult`)."""
    data, derivs, inputs = session.data, session.derivs, session.inputs
    method = registry.get("r2star", session.options.r2star_method)
    with session.stage(f"R2* fit ({method.name}, {len(data.te)} echoes)"):
        fit = method.function(data.magnitude, data.te, n_threads=session.options.n_threads)
    params = {"R2starMethod": fit.method, "R2starClipRange": [0.0, r2star_maps.R2STAR_MAX],
              "T2starMax": r2star_maps.T2STAR_MAX}
    base = dict(EstimationAlgorithm=method.algorithm, EstimationReference=method.reference,
                **params)
    outputs = []
    for suffix, array, units, desc in (
            ("R2starmap", fit.r2star, "1/s", "R2* (transverse relaxation rate)"),
            ("T2starmap", fit.t2star, "s", "T2* = 1/R2*"),
            ("S0map", fit.s0, "arbitrary", "signal extrapolated to TE = 0")):
        sidecar = _common_sidecar(derivs, data, {"Units": units, "Description": desc,
                                                 "SkullStripped": False, **base})
        outputs.append(derivs.save_map(inputs, array, data.affine, suffix, sidecar,
                                       header=data.header))
    if session.options.work_dir is not None:  # kept for the user (nothing reads it back)
        session.work.mkdir(parents=True, exist_ok=True)
        np.save(session.work / "r2star_fit_residual.npy", fit.residual)
    return R2starResult(fit=fit, outputs=outputs)


def run_phase(session):
    """Field, LFS, chi (and SWI) of a session with phase (`PhaseResult`, or None without
    phase); writes the mask, field, LFS, Chimap (and SWI) with their sidecars."""
    inputs, options, data, derivs = session.inputs, session.options, session.data, session.derivs
    if not options.phase:
        session.notes.append("--no-phase: phase stages skipped")
        return None
    if not inputs.has_phase:
        session.note("magnitude only: R2*/T2*/S0 written; phase stages (field, LFS, QSM) "
                     "skipped")
        return None
    anatomy = session.anatomy
    res = run_phase_stage(data, options, session.stage, r2star=session.r2star.fit.r2star,
                          labels=None if anatomy is None else anatomy.labels,
                          template_mask=None if anatomy is None else anatomy.template_mask)
    facts = res.facts
    unwrap = registry.get("unwrap", options.unwrap_method)
    background = registry.get("background", options.background_method)
    dipole = registry.get("dipole", options.qsm_method)
    chain = {
        "PhaseScaling": facts["PhaseScaling"], "PhaseSign": facts["PhaseSign"],
        "PhaseConvention": "phase = +2*pi*f*TE + offset; paramagnetic -> positive field",
        "MaskSource": facts["MaskSource"], "UnwrappingMethod": options.unwrap_method,
        "UnwrappingAlgorithm": unwrap.algorithm, "B0Direction": facts["B0Direction"],
    }
    outputs = []

    def save(array, suffix, desc, units, algorithm, reference, extra, dtype=np.float32,
             affine=None):
        sidecar = _common_sidecar(derivs, data, {
            "Units": units, "EstimationAlgorithm": algorithm, "EstimationReference": reference,
            "SkullStripped": True, **chain, **extra})  # zero outside the (eroded) mask
        outputs.append(derivs.save_map(inputs, array, data.affine if affine is None else affine,
                                       suffix, sidecar, desc=desc, header=data.header,
                                       dtype=dtype))

    qc = {"MaskQuality": facts["MaskQuality"], "MaskWarnings": facts["MaskWarnings"]}
    save(res.mask.astype(np.uint8), "mask", "brain", "arbitrary", facts["MaskSource"], "",
         {"Type": "Brain", "Description": "brain mask used for field estimation",
          "SpatialReference": derivs.bids_uri(data.sources[0]), **qc},
         dtype=np.uint8)
    outputs.append(derivs.save_map(  # BIDS field maps need their magnitude beside them
        inputs, data.magnitude[..., 0], data.affine, "magnitude",
        _common_sidecar(derivs, data, {
            "Units": "arbitrary", "EchoTime": float(data.te[0]), "SkullStripped": False,
            "Description": "first-echo magnitude: the magnitude image of the field maps"}),
        header=data.header))
    save(res.field_hz, "fieldmap", "total", "Hz", f"{unwrap.algorithm}; {methods.FIELD[0]}",
         f"{unwrap.reference}; {methods.FIELD[1]}",
         {"Description": "total field (tissue + background), frequency offset in Hz"})
    bg = {"BackgroundRemovalMethod": options.background_method,
          "BackgroundRemovalAlgorithm": background.algorithm,
          "BackgroundRemovalReference": background.reference,
          **{k: facts[k] for k in ("BackgroundRemovalFallback", "BackgroundRemoval")
             if k in facts}}
    save(res.lfs_ppm, "fieldmap", "lfs", "ppm", methods.LFS[0], methods.LFS[1],
         {**bg, "Description": "local field shift (LFS, Hammond 2008) in ppm of B0",
          "LFSReference": facts["LFSReference"],
          "LFSReferenceValue": facts["LFSReferenceValue"],
          **({"LFSReferenceVoxels": facts["LFSReferenceVoxels"]}
             if "LFSReferenceVoxels" in facts else {}), **qc})
    save(res.chi_ppm, "Chimap", None, "ppm", dipole.algorithm, dipole.reference,
         {**bg, "QSMMethod": options.qsm_method, "ChiReference": facts["ChiReference"],
          "ChiReferenceValue": facts["ChiReferenceValue"],
          "ChiWholeBrainReference": facts["ChiWholeBrain"],
          **({"ChiReferenceVoxels": facts["ChiReferenceVoxels"]}
             if "ChiReferenceVoxels" in facts else {}),
          "DipoleInversion": facts["DipoleInversion"],
          **({"RegularizationSelection": facts["RegularizationSelection"]}
             if "RegularizationSelection" in facts else {}),
          "SignCheckHighR2starMedianChi": facts.get("SignCheckHighR2starMedianChi"), **qc,
          "Description": "magnetic susceptibility, ppm, paramagnetic positive"})
    if res.swi is not None:
        save(res.swi, "MEGRE", "swi", "arbitrary", methods.SWI[0], methods.SWI[1],
             {**bg, "EchoTimeUsed": facts["SWIEchoTime"]})
        half = (facts["SWIMinIPSlices"] - 1) / 2.0
        mip_affine = data.affine.copy()
        mip_affine[:3, 3] = data.affine[:3, :3] @ np.array([0.0, 0.0, half]) + data.affine[:3, 3]
        save(res.swi_mip, "MEGRE", "swimip", "arbitrary",
             f"minimum-intensity projection of SWI over {facts['SWIMinIPSlices']} slices "
             "(sliding slab along the third voxel axis)", methods.SWI[1],
             {"MinIPSlices": facts["SWIMinIPSlices"]}, affine=mip_affine)
    res.outputs = outputs
    return res


def process_session(inputs, output_dir, bids_dir, options, atlas_files=None, work_root=None):
    """Run every stage of one session. Returns a `SessionResult`; never raises.

    The stages, in order, each ``run_<stage>(session)`` on the shared `Session`: load ->
    R2* -> anatomy (registration, labels, FLAIR, lesions) -> phase (mask, field, LFS, QSM,
    SWI) -> user ROIs -> ROI tables -> report section.
    """
    t0 = time.perf_counter()
    derivs = Derivatives(output_dir, bids_dir)
    result = SessionResult(label=inputs.label, status="failed")
    work_root = Path(work_root or options.work_dir or tempfile.mkdtemp(prefix="bids-iron-"))
    with Session(inputs, options, derivs, work_root, atlas_files) as session:
        log = session.log
        try:
            digest = options.digest()
            done, why = (False, "") if options.force else derivs.done_status(inputs, digest)
            if done:
                result.message = ("already finished with these options and inputs; --force "
                                  "redoes it")
                log.info("%s: %s", inputs.label, result.message)
                result.status = "skipped"
                return result
            if why:
                session.note(f"redone: {why} since it last finished")
            derivs.clear_done(inputs)
            run_load(session)
            session.r2star = run_r2star(session)
            session.anatomy = run_anatomy(session)
            session.phase = run_phase(session)
            session.user_rois = run_user_rois(session)
            session.rois = run_roi_tables(session)
            report = run_report(session)
            outputs = [p for stage in (session.r2star, session.anatomy, session.phase,
                                       session.rois) if stage is not None
                       for p in stage.outputs] + ([report] if report is not None else [])
            derivs.mark_done(inputs, outputs, digest)
            result.status, result.outputs = "done", outputs
        except BidsIronError as exc:
            result.message = str(exc)
            # to the session and run logs; the console shows it once, in the progress line
            log.error("%s: %s", inputs.label, exc, extra=FILES_ONLY)
        except Exception as exc:  # a bug or an unforeseen input: keep the other sessions going
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                where = Path(exc.filename).parent if exc.filename else "a work or output folder"
                result.message = (f"{where}: {exc.strerror}; free space there (or give "
                                  "--work-dir on a larger disk) and rerun")
                log.error("%s: %s", inputs.label, result.message, extra=FILES_ONLY)
            else:
                result.message = f"{type(exc).__name__}: {exc} (see logs/{inputs.label}.log)"
                log.error("%s: unexpected error\n%s", inputs.label, traceback.format_exc(),
                          extra=FILES_ONLY)
            derivs.remove_temporaries(inputs)
        finally:
            result.notes = list(session.notes)
            result.seconds = time.perf_counter() - t0
    return result


def report_section_path(derivs, inputs):
    """Where a session's report section is kept until the subject report is assembled."""
    return derivs.root / f"sub-{inputs.subject}" / "figures" / f"{inputs.label}_report.html"


def run_report(session):
    """Render this session's report section (HTML with embedded figures) to a file; returns
    its path (None with ``--no-report``)."""
    from .report.html import SessionReport, render_session_section

    if not session.options.report:
        return None
    options, data, fit = session.options, session.data, session.r2star.fit
    phase, anatomy, rois = session.phase, session.anatomy, session.rois
    with session.stage("report section"):
        facts = {"R2starMethod": fit.method, "EchoTime": [float(t) for t in data.te],
                 "MagneticFieldStrength": data.b0, "ROIErosion": 1,
                 "VesselExclusion": options.exclude_vessels}
        if phase is not None:
            facts.update(phase.facts, UnwrappingMethod=options.unwrap_method,
                         BackgroundRemovalMethod=options.background_method,
                         QSMMethod=options.qsm_method)
        if anatomy is not None:
            facts.update(anatomy.facts)
            facts.setdefault("Lesions", bool(anatomy.lesions is not None
                                             and anatomy.lesions.any()))
        report = SessionReport(
            label=session.label, magnitude=data.magnitude, r2star=fit.r2star,
            lfs=None if phase is None else phase.lfs_ppm,
            chi=None if phase is None else phase.chi_ppm,
            swi=None if phase is None else phase.swi,
            flair=None if anatomy is None else anatomy.flair,
            mask=None if phase is None else phase.mask,
            labels=report_labels(anatomy, session.user_rois),
            template_in_native=None if anatomy is None else anatomy.template_in_native,
            residual=fit.residual, lesions=None if anatomy is None else anatomy.lesions,
            roi_table=None if rois is None else rois.table,
            lesion_table=None if rois is None else rois.lesions, facts=facts,
            voxel_size=data.voxel_size, affine=data.affine, notes=list(session.notes))
        path = report_section_path(session.derivs, session.inputs)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(render_session_section(report), encoding="utf-8")
    return path


def assemble_reports(output_dir, subjects):
    """Write OUTPUT_DIR/sub-<l>.html from the stored session sections of each subject."""
    from .report.html import assemble_subject_report

    written = []
    for subject in sorted(set(subjects)):
        # a report a killed run was writing (atomic_path's temporary); a minute old, so not
        # one another run on this subject's other sessions is writing right now
        for stale in Path(output_dir).glob(f".sub-{subject}.html.*.tmp*"):
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > 60:
                    stale.unlink()
        folder = Path(output_dir) / f"sub-{subject}" / "figures"
        sections = [(p.name[: -len("_report.html")], p.read_text(encoding="utf-8"))
                    for p in sorted(folder.glob("*_report.html"))]
        if sections:
            written.append(assemble_subject_report(Path(output_dir) / f"sub-{subject}.html",
                                                   subject, sections))
    return written


#: Peak memory one session may need (full-brain 1 mm, 6 echoes; measured <= 4 GB).
SESSION_MEMORY_BYTES = 4 * 1024 ** 3


def available_memory_bytes():
    """Memory available for new processes (Linux MemAvailable; else total physical)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return SESSION_MEMORY_BYTES


def default_n_procs():
    """Sessions to run at once: one per core, but no more than memory allows (4 GB each)."""
    by_memory = max(1, available_memory_bytes() // SESSION_MEMORY_BYTES)
    return int(max(1, min(available_cpus(), by_memory)))


def _worker_init(queue=None, parent=None):
    """In a worker process: its log records go to the parent through ``queue`` (the parent
    prints each stage's progress line and files them in the run log); Ctrl-C is the
    parent's to handle; the worker dies with the parent (`_die_with_parent`)."""
    import logging.handlers

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    package = logging.getLogger("bids_iron")
    package.handlers[:] = []
    package.propagate = False
    if queue is not None:
        package.addHandler(logging.handlers.QueueHandler(queue))
        package.setLevel(logging.INFO)
    _die_with_parent(parent)


def _die_with_parent(parent):
    """Make this process end when ``parent`` (a pid) does, even by kill -9: the kernel's
    parent-death signal on Linux, and a watchdog thread everywhere."""
    if parent is None:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


class Stopped(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) received: stop like Ctrl-C (queued sessions cancelled, workers
    stopped, temporaries removed)."""


@contextlib.contextmanager
def _signals_stop_the_run():
    """In the main thread, SIGTERM and SIGHUP raise `Stopped` (as SIGINT raises
    KeyboardInterrupt), so every ``finally`` runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_pool(pool, running, derivs):
    """Cancel the queued sessions, stop the workers (SIGTERM, then SIGKILL after 5 s) and
    remove the temporaries of the sessions they were writing."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.terminate()
    deadline = time.monotonic() + 5.0
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
    for inputs in running:
        derivs.remove_temporaries(inputs)


def run_participants(bids_dir, output_dir, participant_labels=None, session_labels=None,
                     options=None, wait_for_lock=False):
    """Process every selected session; return the list of `SessionResult`.

    The run holds its sessions of OUTPUT_DIR (`bids_iron.runlock.output_lock`: another run
    on any of them stops with one line, or waits with ``wait_for_lock``). SIGINT, SIGTERM
    and SIGHUP cancel the queued sessions, stop the workers and remove the work folder and
    temporaries, then raise KeyboardInterrupt.
    """
    from .runlock import output_lock, work_folder

    options = options or Options()
    sessions = find_sessions(bids_dir, participant_labels, session_labels)
    derivs = Derivatives(output_dir, bids_dir)
    with _signals_stop_the_run(), \
            output_lock(output_dir, [s.label for s in sessions], wait=wait_for_lock), \
            (contextlib.nullcontext(Path(options.work_dir)) if options.work_dir
             else work_folder()) as work_root:
        derivs.write_dataset_description()
        results = _run_sessions(sessions, derivs, options, work_root)
        if options.report:
            for path in assemble_reports(output_dir, [s.subject for s in sessions]):
                LOGGER.info("report: %s", path)
    if options.clean_work_dir and options.work_dir is not None:
        for res in results:  # intermediates of finished sessions; failed ones stay for debugging
            if res.status == "done":
                shutil.rmtree(Path(options.work_dir) / res.label, ignore_errors=True)
    return results


def _run_sessions(sessions, derivs, options, work_root):
    n = len(sessions)
    # the console's progress bar (bids_iron.progress) counts these sessions
    LOGGER.info("found %d session(s) with multi-echo GRE data", n, extra={"progress_total": n})
    atlas_files = None
    if options.anatomy:  # once per run: missing templates stop here, before any work
        atlas_files = prepare_atlases(options)
        LOGGER.info("template %s with atlases %s", atlas_files.template,
                    ", ".join(a.name for a in atlas_files.atlases))
    results = []
    n_procs = max(1, min(options.n_procs or default_n_procs(), n))
    LOGGER.info("running %d session(s) at a time", n_procs)
    if options.n_threads is None:
        options = dataclasses.replace(options, n_threads=max(1, available_cpus() // n_procs))

    def report(i, res):
        # a failure's message is printed once, in the summary at the end
        detail = (f" (logs/{res.label}.log; the error is listed at the end)"
                  if res.status == "failed" else f" ({res.message})" if res.message else "")
        LOGGER.info("[%d/%d] %s: %s in %.1f s%s", i, n, res.label, res.status, res.seconds, detail,
                    extra={"progress_done": res.label})

    args = (derivs.root, derivs.bids_dir, options, atlas_files, work_root)
    if n_procs == 1:
        for i, inputs in enumerate(sessions, start=1):
            LOGGER.info("[%d/%d] %s: started", i, n, inputs.label)
            try:
                res = process_session(inputs, *args)
            except KeyboardInterrupt:
                derivs.remove_temporaries(inputs)
                LOGGER.info("stopped: %d session(s) finished", len(results),
                            extra={"progress_end": True})
                raise
            results.append(res)
            report(i, res)
        return results
    # spawn, not fork: forking a process that already ran OpenMP threads (numba, BLAS) can
    # abort the children. The workers' log records come back through a queue.
    import logging.handlers

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    listener = logging.handlers.QueueListener(queue, *LOGGER.handlers,
                                              respect_handler_level=True)
    listener.start()
    pool = concurrent.futures.ProcessPoolExecutor(n_procs, mp_context=context,
                                                  initializer=_worker_init,
                                                  initargs=(queue, os.getpid()))
    futures = {}
    try:
        futures = {pool.submit(process_session, s, *args): s for s in sessions}
        for i, fut in enumerate(concurrent.futures.as_completed(futures), start=1):
            try:
                res = fut.result()
            except Exception as exc:  # the worker process itself died
                res = SessionResult(label=futures[fut].label, status="failed",
                                    message=f"worker died: {exc}")
            results.append(res)
            report(i, res)
    except BaseException:
        running = [s for f, s in futures.items() if not f.done()]
        _stop_pool(pool, running, derivs)
        LOGGER.info("stopped: %d session(s) finished, %d cancelled or stopped", len(results),
                    len(running), extra={"progress_end": True})
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        _stop_listener(listener, queue)
    return results


#: Seconds the log listener gets to pass on the workers' last records once they have stopped.
#: A worker stopped by a signal while it wrote a record can leave half a message in the
#: queue's pipe, on which the listener (and ``QueueListener.stop``, which joins it without a
#: timeout) would wait forever: the signal test saw the parent hang after "stopped".
LOG_DRAIN_SECONDS = 5.0


def _stop_listener(listener, queue, timeout=LOG_DRAIN_SECONDS):
    """Stop a `logging.handlers.QueueListener` without waiting forever for a stuck queue."""
    listener.enqueue_sentinel()
    thread = listener._thread  # a daemon thread: one left blocked does not hold the exit
    if thread is not None:
        thread.join(timeout)
    listener._thread = None
    if thread is not None and thread.is_alive():
        # leave the reader open under the blocked thread (closing it would make the thread
        # fail with a traceback on the console), and do not wait for the feeder at exit
        queue.cancel_join_thread()
        return
    queue.close()
