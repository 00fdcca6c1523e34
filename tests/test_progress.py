"""The console's progress bar: shown on a terminal (a pseudo-terminal here), absent in a
pipe, and every log line still printed once above it."""

import io
import logging
import os
import re
import sys

from bids_iron.progress import ConsoleHandler, short_stage
from conftest import _cli_args


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _record(msg, **extra):
    record = logging.LogRecord("bids_iron", logging.INFO, __file__, 1, msg, None, None)
    record.__dict__.update(extra)
    return record


def _feed(handler):
    handler.emit(_record("found 2 session(s)", progress_total=2))
    handler.emit(_record("s1: R2* fit (nlls) ...", stage="R2* fit (nlls)", session_label="s1"))
    handler.emit(_record("s2: field map ...", stage="field map", session_label="s2"))
    handler.emit(_record("[1/2] s1: done in 1.0 s", progress_done="s1"))
    handler.emit(_record("[2/2] s2: done in 2.0 s", progress_done="s2"))
    handler.emit(_record("report: x.html"))


def test_bar_on_a_terminal_counts_sessions_and_keeps_each_line_once():
    stream = _Terminal()
    handler = ConsoleHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    _feed(handler)
    text = stream.getvalue()
    for line in ("found 2 session(s)", "s1: R2* fit (nlls) ...", "[1/2] s1: done in 1.0 s",
                 "[2/2] s2: done in 2.0 s", "report: x.html"):
        assert text.count(line + "\n") == 1, line
    assert re.search(r"sessions 0/2 \|", text) and re.search(r"sessions 1/2 \|", text)
    assert "<00:00, s1: R2* fit | s2: field map" in text  # what each running session is doing
    assert re.search(r"sessions 2/2 \|", text)
    assert handler._bar is None  # closed when the last session finished


def test_no_bar_in_a_pipe_or_with_tqdm_disable(monkeypatch):
    stream = io.StringIO()
    handler = ConsoleHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    _feed(handler)
    assert "sessions" not in stream.getvalue() and "|" not in stream.getvalue()
    assert stream.getvalue().count("\n") == 6
    monkeypatch.setenv("TQDM_DISABLE", "1")
    stream = _Terminal()
    handler = ConsoleHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    _feed(handler)
    assert "sessions 1/2" not in stream.getvalue()


def test_short_stage_names():
    assert short_stage("dipole inversion (tv_admm)") == "dipole inversion"
    assert len(short_stage("x" * 80)) == 34


def test_a_real_run_on_a_terminal_shows_the_bar(sim_dataset, tmp_path):
    """bids-iron in a pseudo-terminal, 2 workers: the bar counts 3 sessions and names stages
    of the running ones (their records come from the worker processes)."""
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    root, _ = sim_dataset
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))  # 160 columns
    proc = subprocess.Popen([sys.executable, "-m", "bids_iron", *_cli_args(
        (root, tmp_path / "out", "participant", "--n-procs", "2", "--r2star-method",
         "loglinear", "--no-report"), False)], stdin=slave, stdout=slave, stderr=slave,
        close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=600) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert re.search(r"sessions 3/3 \|", text), text[-2000:]
    # the bar's line: count, bar, times, then what a running session does
    assert re.search(r"sessions [0-2]/3 \|[^|\n]*\| \S+<\S+, sub-0[12](_ses-\d)?: [A-Za-z]", text)
    assert text.count("[3/3]") == 1
