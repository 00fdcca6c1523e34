"""The console of a run: its log lines and, where a terminal is attached, a progress bar.

The bar counts the run's finished sessions and shows what each running session is doing
(its current stage), in the main process whatever the number of workers: the workers' log
records reach the parent through a queue, and a few of them carry the attributes below
(set with ``extra=``), which is all the bar reads:

``progress_total``
    the number of sessions of the run (the record that starts the bar);
``stage``
    the stage a session has just started (`bids_iron.session.Stage`);
``progress_done``
    the label of a session that finished (done, skipped or failed);
``progress_end``
    the run stops early (the bar is closed where it stands).

Without a terminal (``docker run`` without ``-t``, Slurm, a pipe, a file) the console is
the plain log lines. ``TQDM_DISABLE=1`` turns the bar off on a terminal too.
"""

from __future__ import annotations

import logging
import os
import sys

#: Longest text shown for one running session's stage in the bar (characters).
STAGE_CHARS = 34


def short_stage(name, limit=STAGE_CHARS):
    """A stage's name for the bar: up to its first parenthesis or comma, at most ``limit``
    characters.

    >>> short_stage("registration MNI152NLin2009cAsym -> MEGRE, via T1w (T1w->MEGRE rigid)")
    'registration MNI152NLin2009cAsym…'
    >>> short_stage("R2* fit (nlls, 5 echoes)")
    'R2* fit'
    """
    text = name.split(" (")[0].split(",")[0].strip()
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "\u2026"


class ConsoleHandler(logging.StreamHandler):
    """Log lines on ``stream``, plus a progress bar of the run's sessions (tqdm) when
    ``stream`` is a terminal (or ``bar=True``): the lines are written above the bar.

    Parameters
    ----------
    stream : file object
        Default ``sys.stderr``.
    bar : bool or None
        None: a bar when ``stream.isatty()``.
    """

    def __init__(self, stream=None, bar=None):
        super().__init__(stream if stream is not None else sys.stderr)
        if bar is None:
            isatty = getattr(self.stream, "isatty", None)
            bar = bool(isatty and isatty())
        # tqdm reads TQDM_* when it is imported; read here, it works for a handler made later
        self.bar_wanted = bar and os.environ.get("TQDM_DISABLE", "").lower() not in (
            "1", "true", "yes")
        self._bar = None
        self._running = {}

    # -- the bar ----------------------------------------------------------------------------
    def _start(self, total):
        from tqdm import tqdm

        self._close()
        self._running = {}
        self._bar = tqdm(total=int(total), file=self.stream, unit="session", dynamic_ncols=True,
                         leave=True, desc="sessions",
                         bar_format="{desc} {n_fmt}/{total_fmt} |{bar:16}| "
                                    "{elapsed}<{remaining}{postfix}")

    def _close(self):
        if self._bar is not None:
            self._bar.set_postfix_str("", refresh=False)
            self._bar.close()
            self._bar = None

    def _track(self, record):
        total = getattr(record, "progress_total", None)
        if total and self.bar_wanted:
            self._start(total)
        if self._bar is None:
            return False
        label = getattr(record, "session_label", None)
        stage = getattr(record, "stage", None)
        if stage is not None and label:
            self._running[label] = short_stage(stage)
        done = getattr(record, "progress_done", None)
        if done is not None:
            self._running.pop(done, None)
            self._bar.update(1)
        return True

    def _postfix(self):
        if self._bar is None:
            return
        self._bar.set_postfix_str(" | ".join(f"{k}: {v}" for k, v in self._running.items()),
                                  refresh=False)
        self._bar.refresh()
        if self._bar.n >= self._bar.total:
            self._close()

    # -- logging.Handler ----------------------------------------------------------------------
    def emit(self, record):
        try:
            if not self._track(record):
                return super().emit(record)
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            if getattr(record, "progress_end", False):
                self._close()
            else:
                self._postfix()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)

    def close(self):
        self._close()
        super().close()
