"""One session's context, shared by its stages, and the typed results the stages return.

A `Session` holds what every stage of one session needs: the BIDS inputs, the loaded data,
the options, the derivatives writer, the session's logger (``OUTPUT_DIR/logs/<label>.log``,
which also receives the package's warnings while the session runs, in worker processes as
well), the work folder and a cache of the registrations to the MEGRE grid, so each image
(T1w, FLAIR) is registered once per session whichever stages need it (template registration,
lesion masks, user ROIs).

Each stage is ``run_<stage>(session) -> <Stage>Result`` (see `bids_iron.workflow`); the
results are kept on the session (``session.r2star``, ``.anatomy``, ``.phase``,
``.user_rois``, ``.rois``) for the stages after it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError


class Stage:
    """Context manager timing and logging one step of a session (``session.stage(name)``)."""

    def __init__(self, log, label, name=""):
        self.log, self.label, self.name = log, label, name

    def __call__(self, name):
        return Stage(self.log, self.label, name)

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.log.info("%s: %s ...", self.label, self.name, extra={"stage": self.name})
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.log.info("%s: %s done (%.1f s)", self.label, self.name,
                          time.perf_counter() - self.t0)


#: The label of the session running in this process (None between sessions): every log
#: record made meanwhile carries it as ``record.session_label`` (`_label_records`), so a
#: warning of any module is shown and filed with its session, in worker processes too.
_CURRENT_LABEL = None
_base_factory = logging.getLogRecordFactory()


def _label_records(*args, **kwargs):
    record = _base_factory(*args, **kwargs)
    if not hasattr(record, "session_label"):
        record.session_label = _CURRENT_LABEL
    return record


if getattr(logging.getLogRecordFactory(), "__name__", "") != "_label_records":
    logging.setLogRecordFactory(_label_records)


def with_label(record):
    """A record's message with its session label in front (unless it already names the
    session) and a WARNING/ERROR tag at those levels: the console's and the logs' text."""
    message = record.getMessage()
    label = getattr(record, "session_label", None)
    if label and not message.startswith(label):
        message = f"{label}: {message}"
    if record.levelno >= logging.WARNING:
        message = f"{record.levelname} {message}"
    return message


class LabelledFormatter(logging.Formatter):
    """``%(asctime)s`` then `with_label` (and the traceback, if any)."""

    def formatMessage(self, record):
        record.message = with_label(record)
        return super().formatMessage(record)


@contextlib.contextmanager
def warnings_to_log(logger=None):
    """Python warnings raised in the block (the package's ``warnings.warn``, numpy's, ...)
    become WARNING records of ``logger`` (default the package's): on the console and in the
    logs with the session label instead of bare lines on stderr."""
    logger = logger or logging.getLogger("bids_iron")

    def show(message, category, filename, lineno, file=None, line=None):
        logger.warning("%s: %s", category.__name__, message)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


class _PackageRecords(logging.Filter):
    """Records of the package's modules (``bids_iron.*``), not of the session loggers (those
    reach the session file through their own handler)."""

    def filter(self, record):
        return not record.name.startswith("bids_iron.session.")


@dataclass
class R2starResult:
    """R2*/T2*/S0 of a session (`bids_iron.maps.r2star.R2starFit`) and the files written."""

    fit: object
    outputs: list = field(default_factory=list)


@dataclass
class RoiTablesResult:
    """The session's ROI table, per-lesion table (or None) and the files written."""

    table: object = None
    lesions: object = None
    outputs: list = field(default_factory=list)


class Session:
    """Everything the stages of one session share (see the module docstring).

    Use as a context manager: entering opens the session's log file (and routes the
    package's warnings to it), leaving closes it.
    """

    def __init__(self, inputs, options, derivs, work_root, atlas_files=None):
        self.inputs, self.options, self.derivs = inputs, options, derivs
        self.atlas_files = atlas_files
        self.work = Path(work_root) / inputs.label
        self.data = None
        self.notes, self.outputs = [], []
        self.r2star = self.anatomy = self.phase = self.rois = None
        self.user_rois = []
        self._registrations, self._images, self._native = {}, {}, None
        self.log = logging.getLogger(f"bids_iron.session.{inputs.label}")
        self._handlers = []

    @property
    def label(self):
        return self.inputs.label

    # -- logging ------------------------------------------------------------------------------
    def __enter__(self):
        global _CURRENT_LABEL
        _CURRENT_LABEL = self.label
        self.log.setLevel(logging.INFO)
        logs = Path(self.derivs.root) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{self.label}.log"
        form = LabelledFormatter("%(asctime)s %(message)s")
        own = logging.FileHandler(path)
        own.setFormatter(form)
        self.log.addHandler(own)
        # the package's own records (physics, QC warnings) reach the session file too, at
        # WARNING and above, whatever process the session runs in
        package = logging.getLogger("bids_iron")
        extra = logging.FileHandler(path)
        extra.setFormatter(form)
        extra.setLevel(logging.WARNING)
        extra.addFilter(_PackageRecords())
        package.addHandler(extra)
        if package.level == logging.NOTSET or package.level > logging.WARNING:
            package.setLevel(logging.WARNING)
        self._handlers = [(self.log, own), (package, extra)]
        self._warnings = warnings_to_log()
        self._warnings.__enter__()
        return self

    def __exit__(self, *exc):
        global _CURRENT_LABEL
        _CURRENT_LABEL = None
        if getattr(self, "_warnings", None) is not None:
            self._warnings.__exit__(None, None, None)
            self._warnings = None
        for logger, handler in self._handlers:
            logger.removeHandler(handler)
            handler.close()
        self._handlers = []
        return False

    def stage(self, name):
        """A `Stage` timer for one step, logging to the session's log."""
        return Stage(self.log, self.label, name)

    def note(self, text, warn=False):
        """A note for the report and the run summary (also logged)."""
        (self.log.warning if warn else self.log.info)("%s: %s", self.label, text)
        self.notes.append(text)

    # -- images and registrations to the MEGRE grid --------------------------------------------
    @property
    def native(self):
        """The native reference image (RSS magnitude on the MEGRE grid), computed once."""
        if self._native is None:
            from .anatomy.registration import native_reference

            self._native = native_reference(self.data)
        return self._native

    def image_path(self, space):
        """The session's ``T1w`` or ``FLAIR`` file in the BIDS dataset (None if it has none)."""
        return {"T1w": self.inputs.t1w, "FLAIR": self.inputs.flair}[space]

    def has_image(self, space):
        return self.image_path(space) is not None

    def image(self, space):
        """The session's ``T1w`` or ``FLAIR`` image (nibabel, loaded once); `InputError`
        when the dataset has none."""
        import nibabel as nib

        if space not in self._images:
            path = self.image_path(space)
            if path is None:
                raise InputError(f"{self.label}: this needs the session's {space} image in "
                                 "the BIDS dataset")
            self._images[space] = nib.load(str(path))
        return self._images[space]

    def rigid_to_megre(self, space):
        """The ``space`` (T1w or FLAIR) -> MEGRE rigid transform, registered once per session
        (`bids_iron.anatomy.registration.register_rigid`)."""
        if space not in self._registrations:
            from .anatomy import registration as reg_mod

            work = self.work / "registration"
            work.mkdir(parents=True, exist_ok=True)
            with self.stage(f"{space} -> MEGRE (rigid)"):
                self._registrations[space] = reg_mod.register_rigid(
                    self.image(space), self.native, work, prefix=f"from-{space}_to-MEGRE_",
                    n_threads=self.options.n_threads)
        return self._registrations[space]

    @property
    def registrations(self):
        """The registrations computed so far, ``{space: RigidTransform}`` (read only)."""
        return dict(self._registrations)
