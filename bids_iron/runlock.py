"""Runs that share an OUTPUT_DIR, and work folders that outlive a killed run.

`output_lock`: a run holds its selected sessions of OUTPUT_DIR (the group level: all of
them) for as long as it runs. Each run writes ``OUTPUT_DIR/.bids-iron-locks/run-<host>-<pid>-<id>.json``
(its sessions, host, pid, start time, command) and keeps an exclusive ``flock`` on it; a
second run whose sessions overlap stops at once with one line naming the first (or, with
``--wait-for-lock``, waits for it). Runs on disjoint sessions (a SLURM array with one
participant per task) run side by side. The kernel drops a ``flock`` when its process dies,
even by ``kill -9``, so a killed run never leaves a lock that blocks the next one: a lock file
nobody holds is stale and removed. Checks and writes happen under a short lock on
``.guard``, so two runs starting at the same moment cannot both win.

`work_folder`: the default work folder ``$TMPDIR/bids-iron-work-<pid>-*`` holds a ``.lock``
held by its run; `remove_stale_work_folders` (at the start of every run) removes those of
runs that died (kill -9, a node reboot) whatever their process namespace (containers).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .errors import BidsIronError

LOGGER = logging.getLogger("bids_iron")

LOCK_DIR = ".bids-iron-locks"
#: The sessions of a group-level run: all of them.
ALL = "*"
WORK_PREFIX = "bids-iron-work-"


class OutputInUse(BidsIronError):
    """Another run holds sessions of this OUTPUT_DIR."""


def _try_lock(fd):
    """Exclusive flock without waiting: True if taken."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def _guard(folder):
    with open(folder / ".guard", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _live_runs(folder):
    """The lock records of runs that hold their lock; stale ones are removed."""
    live = []
    for path in sorted(folder.glob("run-*.json")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            if _try_lock(fd):  # nobody holds it: its run died
                path.unlink(missing_ok=True)
                continue
            try:
                live.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # being written: count it as holding everything
                live.append({"sessions": ALL, "pid": "?", "host": "?", "started": "?"})
        finally:
            os.close(fd)
    return live


def _overlap(mine, theirs):
    if mine == ALL or theirs == ALL:
        return bool(mine) and bool(theirs)
    return sorted(set(mine) & set(theirs))


def _describe(output_dir, other, shared):
    what = ("all sessions (a group-level run)" if other.get("sessions") == ALL
            else f"{len(shared)} of the selected sessions, e.g. {shared[0]}"
            if isinstance(shared, list) and shared else "the selected sessions")
    return (f"{output_dir}: another bids-iron run (pid {other.get('pid')} on "
            f"{other.get('host')}, started {other.get('started')}) is writing {what}; let it "
            "finish, pass --wait-for-lock to wait for it, or choose another OUTPUT_DIR")


@contextlib.contextmanager
def output_lock(output_dir, sessions, wait=False, poll_seconds=2.0):
    """Hold ``sessions`` (labels, or `ALL`) of ``output_dir`` while the block runs.

    Raises `OutputInUse` (one line naming the other run) when another live run holds any of
    them, unless ``wait`` (then it logs once and polls every ``poll_seconds``).
    """
    folder = Path(output_dir) / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    sessions = ALL if sessions == ALL else sorted(sessions)
    host, pid = socket.gethostname(), os.getpid()
    own = folder / f"run-{host}-{pid}-{uuid.uuid4().hex[:8]}.json"
    record = {"sessions": sessions, "pid": pid, "host": host,
              "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join(sys.argv)}
    told = False
    while True:
        with _guard(folder):
            conflict = next(((run, shared) for run in _live_runs(folder)
                             if (shared := _overlap(sessions, run.get("sessions", ALL)))), None)
            if conflict is None:
                fh = open(own, "w")
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.write(json.dumps(record))
                fh.flush()
                break
        message = _describe(output_dir, *conflict)
        if not wait:
            raise OutputInUse(message)
        if not told:
            LOGGER.info("waiting: %s", message.split("; let it")[0])
            told = True
        time.sleep(poll_seconds)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            own.unlink()
        fh.close()  # releases the flock


# -- work folders -----------------------------------------------------------------------
@contextlib.contextmanager
def work_folder():
    """A fresh ``$TMPDIR/bids-iron-work-<pid>-*`` folder, locked while the block runs and
    removed after it (on every exit path but kill -9, which the next run cleans up)."""
    remove_stale_work_folders()
    try:
        path = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-"))
        fh = open(path / ".lock", "w")
    except OSError as exc:
        raise BidsIronError(f"{tempfile.gettempdir()}: cannot create a work folder "
                            f"({exc.strerror}); free space there, set TMPDIR, or pass "
                            "--work-dir DIR") from None
    fcntl.flock(fh, fcntl.LOCK_EX)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        fh.close()


def remove_stale_work_folders(tmp=None):
    """Remove the default work folders of runs that died (their ``.lock`` is free); returns
    how many were removed."""
    removed = 0
    for path in Path(tmp or tempfile.gettempdir()).glob(f"{WORK_PREFIX}*"):
        lock = path / ".lock"
        try:
            if path.stat().st_uid != os.getuid() or not lock.is_file():
                continue
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            stale = _try_lock(fd)
        finally:
            os.close(fd)
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    if removed:
        LOGGER.info("removed %d work folder(s) of runs that were killed", removed)
    return removed
