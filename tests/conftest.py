"""Shared fixtures: simulated BIDS datasets with ground truth (qsm-forward building blocks)."""

import collections
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import phantom as P  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_SMALL = SHARED / "data" / "real" / "mrt-small"

#: Test files that take tens of seconds each (template registrations, whole-head phantoms),
#: longest first. With ``--dist loadfile`` (each file runs on one worker) they are started
#: first, so that no long file starts when the other workers are nearly done; the other files
#: follow in pytest-xdist's own order (most tests first). Only the order changes.
LONG_FILES = ("test_anatomy_via_t1w.py", "test_whole_head.py", "test_cli_anatomy.py",
              "test_registration.py", "test_user_rois.py", "test_cli_participant.py",
              "test_resume.py", "test_cli_inputs_options.py", "test_demo.py",
              "test_reliability.py", "test_slurm.py")


def _by_file(config):
    """Whether pytest-xdist hands out whole files (``--dist loadfile``/``loadscope``); in a
    worker (where ``dist`` reads "no") the controller says so through ``workerinput``."""
    if hasattr(config, "workerinput"):
        return bool(config.workerinput.get("long_files_first"))
    return getattr(config.option, "dist", "no") in ("loadfile", "loadscope")


class _TellWorkers:
    """pytest-xdist hook on the controller: the workers order their collection."""

    def pytest_configure_node(self, node):
        node.workerinput["long_files_first"] = True


def pytest_configure(config):
    if _by_file(config) and not hasattr(config, "workerinput"):
        config.option.loadscopereorder = False  # the collection order below is the schedule
        config.pluginmanager.register(_TellWorkers(), "long_files_first")


def pytest_collection_modifyitems(config, items):
    if not _by_file(config):
        return
    path = {item: item.nodeid.split("::")[0] for item in items}
    count = collections.Counter(path.values())

    def rank(item):
        name = path[item].rsplit("/", 1)[-1]
        if name in LONG_FILES:
            return 0, LONG_FILES.index(name)
        return 1, -count[path[item]]

    items.sort(key=rank)  # stable: each file's tests keep their order


@pytest.fixture(scope="session")
def head_phantom():
    """The default 64x64x48, 2 mm phantom."""
    return P.make_phantom()


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory, head_phantom):
    """A BIDS dataset: sub-01 with ses-1 (SNR 100, phase) and ses-2 (SNR 50, phase),
    sub-02 without sessions (magnitude only). Ground truth under ``<root>.truth/``."""
    root = tmp_path_factory.mktemp("bids") / "ds"
    affine, _ = P.oblique_affine(head_phantom.voxel_size, 0.0, 0, head_phantom.labels.shape)
    d1 = P.simulate_gre(head_phantom, snr=100, seed=1)
    d2 = P.simulate_gre(head_phantom, snr=50, seed=2)
    P.write_megre(root, d1, affine, "01", "1")
    P.write_megre(root, d2, affine, "01", "2")
    P.write_megre(root, d1, affine, "02", None, with_phase=False)
    (root / "participants.tsv").write_text("participant_id\tage\tgroup\nsub-01\t40\tMS\nsub-02\t38\tHC\n")
    truth = P.write_truth(root.parent, head_phantom, affine, d1, name="ds.truth")
    return root, truth


def copy_dataset(src, dst):
    """A private writable copy of a dataset (tests that break inputs use this)."""
    shutil.copytree(src, dst)
    return dst


def set_sidecar(path, **changes):
    """Edit (or delete with None) keys of a JSON sidecar."""
    meta = json.loads(Path(path).read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    Path(path).write_text(json.dumps(meta))


def _cli_args(args, anatomy, n_procs=None):
    """Argument strings for a test run of the command.

    Participant-level runs get ``--no-anatomy`` unless ``anatomy=True`` (or the test passes
    ``--templateflow-home``/``--no-anatomy`` itself): the tests of other stages do not need
    the template registration, which the anatomy tests exercise with a synthetic
    TemplateFlow home. With ``n_procs``, participant-level runs that do not pass
    ``--n-procs`` get ``--n-procs n_procs``.
    """
    args = [str(a) for a in args]
    if ("participant" in args and not anatomy
            and not {"--templateflow-home", "--no-anatomy"} & set(args)):
        args.append("--no-anatomy")
    if (n_procs is not None and "participant" in args
            and not {"--n-procs", "--n_procs"} & set(args)):
        args += ["--n-procs", str(n_procs)]
    return args


def run_cli(*args, anatomy=False, n_procs=1):
    """Run the ``bids-iron`` command in this process; return (code, stdout, stderr).

    ``bids_iron.cli.main`` with stdout and stderr captured (its console log handler is made
    at call time on the redirected ``sys.stderr``); ``SystemExit`` (argparse: usage errors,
    ``--help``, ``--version``) gives its code. Afterwards the ``bids_iron`` logger and the
    environment (``TEMPLATEFLOW_HOME`` and ITK threads are set by the run) are as before, so
    nothing leaks into later tests. ``--no-anatomy`` as in `_cli_args`.

    Sessions run one after another (``--n-procs 1``) unless the test passes ``--n-procs`` or
    ``n_procs=None`` (the default: one per core, so it depends on the machine): starting a
    pool of worker processes costs seconds per run, and the tests that are about parallel
    sessions ask for them. `run_cli_subprocess` runs a real ``python -m bids_iron`` process.
    """
    import contextlib
    import io
    import logging
    import os
    import warnings

    from bids_iron import cli

    argv = _cli_args(args, anatomy, n_procs)
    logger = logging.getLogger("bids_iron")
    saved = logger.handlers[:], logger.level, logger.propagate, logger.disabled
    environ = dict(os.environ)
    out, err = io.StringIO(), io.StringIO()

    def show(message, category, filename, lineno, file=None, line=None):
        # as in a fresh process: Python warnings go to (the captured) stderr
        err.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            warnings.showwarning = show
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if exc.code is not None and not isinstance(exc.code, int):
                    err.write(f"{exc.code}\n")
    finally:
        for handler in logger.handlers:
            if handler not in saved[0]:
                handler.close()
        logger.handlers[:], logger.level, logger.propagate, logger.disabled = saved
        os.environ.clear()
        os.environ.update(environ)
    return code, out.getvalue(), err.getvalue()


def run_cli_subprocess(*args, anatomy=False, timeout=900):
    """Run ``python -m bids_iron`` in a subprocess; return (code, stdout, stderr).

    For the tests that need a real process (the entry point itself, a killed run);
    ``--no-anatomy`` as in `_cli_args`.
    """
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "bids_iron", *_cli_args(args, anatomy)],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr
