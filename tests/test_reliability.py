"""Reliability at scale (issue 15): reruns that notice changed inputs and damaged outputs,
a dataset with a broken file outside the selection, clean stops and one run per OUTPUT_DIR.

All on a coarse 32x32x24 (4 mm) phantom: a session takes a second or two.
"""

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import phantom as P
from conftest import run_cli, set_sidecar


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    ph = P.make_phantom((32, 32, 24), (4.0, 4.0, 4.0))
    affine, _ = P.oblique_affine(ph.voxel_size, 0.0, 0, ph.labels.shape)
    root = tmp_path_factory.mktemp("small") / "ds"
    data = P.simulate_gre(ph, snr=80)
    P.write_megre(root, data, affine, "01", "a")
    P.write_megre(root, data, affine, "02", "a")
    return root


@pytest.fixture
def copy(small, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(small, root)
    return root, tmp_path / "out"


def _echo(root, sub, n, part="mag", ext=".nii.gz"):
    return (root / f"sub-{sub}" / "ses-a" / "anat"
            / f"sub-{sub}_ses-a_echo-{n}_part-{part}_MEGRE{ext}")


def _status(err, label):
    """The status word of ``label``'s progress line (done/skipped/failed)."""
    lines = [l for l in err.splitlines() if f"] {label}: " in l and " in " in l]
    assert len(lines) == 1, err
    return lines[0].split(f"{label}: ")[1].split()[0]


def _run(root, out, *args):
    code, _, err = run_cli(root, out, "participant", "--no-report", *args)
    assert code == 0, err
    return err


def test_rerun_notices_changed_inputs_and_damaged_outputs(copy):
    root, out = copy
    _run(root, out)
    err = _run(root, out)
    assert _status(err, "sub-01_ses-a") == "skipped" and _status(err, "sub-02_ses-a") == "skipped"

    # same content, new modification time (a fresh clone, a copy): still finished
    os.utime(_echo(root, "01", 2), ns=(1, 1))
    err = _run(root, out)
    assert _status(err, "sub-01_ses-a") == "skipped", err

    # a sidecar edited: redone, and the log says why
    set_sidecar(_echo(root, "01", 3, ext=".json"), RepetitionTime=0.05)
    err = _run(root, out)
    assert _status(err, "sub-01_ses-a") == "done", err
    assert "redone: the input sidecars' metadata changed" in err
    assert _status(err, "sub-02_ses-a") == "skipped"

    # an image replaced by other data (same size on disk is not required)
    path = _echo(root, "02", 4)
    img = nib.load(path)
    nib.save(nib.Nifti1Image(img.get_fdata().astype(np.float32) * 0.9, img.affine), path)
    err = _run(root, out)
    assert _status(err, "sub-02_ses-a") == "done", err
    assert f"redone: the input {path.relative_to(root).as_posix()} changed" in err
    assert _status(err, "sub-01_ses-a") == "skipped"

    # a truncated output (size changed) and an output damaged in place (same size and time)
    chi = out / "sub-01/ses-a/anat/sub-01_ses-a_Chimap.nii.gz"
    chi.write_bytes(chi.read_bytes()[:-100])
    r2 = out / "sub-02/ses-a/anat/sub-02_ses-a_R2starmap.nii.gz"
    st = r2.stat()
    raw = bytearray(r2.read_bytes())
    raw[-10] ^= 0xFF
    r2.write_bytes(bytes(raw))
    os.utime(r2, ns=(st.st_atime_ns, st.st_mtime_ns))
    err = _run(root, out)
    for label, name in (("sub-01_ses-a", chi.name), ("sub-02_ses-a", r2.name)):
        assert _status(err, label) == "done", err
        assert "does not read back" in err and name in err
    np.asarray(nib.load(chi).dataobj)  # readable again


def test_broken_json_outside_the_selection(copy):
    """A malformed T1w sidecar in sub-02 does not stop --participant-label 01 (reported once,
    by name); a malformed echo sidecar fails only its own session."""
    root, out = copy
    t1w = root / "sub-02/ses-a/anat/sub-02_ses-a_T1w.json"
    shutil.copy(_echo(root, "02", 1), t1w.with_name("sub-02_ses-a_T1w.nii.gz"))
    t1w.write_text('{"RepetitionTime": ')
    err = _run(root, out, "--participant-label", "01")
    assert _status(err, "sub-01_ses-a") == "done", err
    warned = [l for l in err.splitlines() if "sub-02_ses-a_T1w.json" in l]
    assert len(warned) == 1 and "not valid JSON" in warned[0], err
    assert "WARNING" in warned[0]

    echo = _echo(root, "02", 3, ext=".json")
    echo.write_text("{")
    code, _, err = run_cli(root, out, "participant", "--no-report")
    assert code == 1
    assert _status(err, "sub-01_ses-a") == "skipped"
    lines = [l for l in err.splitlines() if l.startswith("bids-iron: failed: sub-02_ses-a")]
    assert len(lines) == 1 and str(echo) in lines[0] and "fix the sidecar" in lines[0], err


def test_broken_dataset_description(copy):
    root, out = copy
    (root / "dataset_description.json").write_text("{")
    code, _, err = run_cli(root, out, "participant")
    assert code == 2
    lines = [l for l in err.splitlines() if l.startswith("bids-iron: error:")]
    assert len(lines) == 1 and "dataset_description.json: not valid JSON" in lines[0], err


# -- process control (issue 15 item 5) ----------------------------------------------------
def test_output_lock_one_run_per_session(tmp_path):
    from bids_iron.runlock import ALL, LOCK_DIR, OutputInUse, output_lock

    out = tmp_path / "out"
    with output_lock(out, ["sub-01_ses-a", "sub-02_ses-a"]):
        with pytest.raises(OutputInUse) as info:
            with output_lock(out, ["sub-02_ses-a"]):
                pass
        message = str(info.value)
        assert "\n" not in message and f"pid {os.getpid()}" in message
        assert "--wait-for-lock" in message and "sub-02_ses-a" in message
        with output_lock(out, ["sub-03_ses-a"]):  # disjoint sessions: side by side
            pass
        with pytest.raises(OutputInUse):
            with output_lock(out, ALL):  # the group level needs them all
                pass
    # a lock file nobody holds (its run was killed) is stale: removed, no conflict
    (out / LOCK_DIR / "run-elsewhere-1.json").write_text(json.dumps({"sessions": ALL}))
    with output_lock(out, ALL):
        assert not (out / LOCK_DIR / "run-elsewhere-1.json").exists()


def test_second_run_refused_or_waits(copy):
    import threading

    from bids_iron.runlock import output_lock

    root, out = copy
    with output_lock(out, ["sub-01_ses-a"]):
        code, _, err = run_cli(root, out, "participant")
        assert code == 2
        lines = [l for l in err.splitlines() if l.startswith("bids-iron: error:")]
        assert len(lines) == 1 and "another bids-iron run" in lines[0], err
        assert not (out / "sub-01").exists() and not (out / "sub-02").exists()
        code, _, err = run_cli(root, out, "group")
        assert code == 2 and "another bids-iron run" in err
    release = threading.Event()

    def hold():
        with output_lock(out, ["sub-02_ses-a"]):
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    threading.Timer(2.0, release.set).start()
    time_started = __import__("time").monotonic()
    err = _run(root, out, "--wait-for-lock")
    holder.join()
    assert "waiting: " in err and __import__("time").monotonic() - time_started >= 2.0
    assert _status(err, "sub-02_ses-a") == "done"


def test_foreign_output_dir_refused(copy):
    root, out = copy
    out.mkdir()
    desc = {"Name": "fmriprep", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "fMRIPrep"}]}
    (out / "dataset_description.json").write_text(json.dumps(desc))
    code, _, err = run_cli(root, out, "participant")
    assert code == 2 and "fMRIPrep" in err and "Traceback" not in err, err
    assert json.loads((out / "dataset_description.json").read_text()) == desc
    assert sorted(p.name for p in out.iterdir()) == ["dataset_description.json"]


def _four_sessions(small, tmp_path):
    root = tmp_path / "ds4"
    shutil.copytree(small, root)
    for sub in ("03", "04"):
        shutil.copytree(root / "sub-01", root / f"sub-{sub}")
        for f in (root / f"sub-{sub}").rglob("sub-01_*"):
            f.rename(f.with_name(f.name.replace("sub-01", f"sub-{sub}")))
    return root


def _children(pid):
    try:
        text = " ".join(p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children"))
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(root, out, tmp, *extra, stage="R2* fit"):
    """``python -m bids_iron`` with 2 workers on 4 sessions; returns the process once a
    session's ``stage`` has started in a worker (its progress line reached the parent)."""
    import subprocess
    import sys
    import time

    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-m", "bids_iron", str(root), str(out),
                             "participant", "--no-anatomy", "--no-report", "--n-procs", "2",
                             *extra], stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        lines.append(line)
        if f"{stage} " in line or time.monotonic() > deadline:
            break
    assert any(f"{stage} " in l for l in lines), "".join(lines)
    return proc, lines


@pytest.mark.parametrize("sig,n_procs", [("SIGINT", "2"), ("SIGTERM", "1")])
def test_signal_stops_workers_and_queue(small, tmp_path, sig, n_procs):
    """SIGINT/SIGTERM to the parent of a --n-procs 2 (or 1) run: queued sessions cancelled,
    workers gone within seconds, no work folder and no temporary left; a rerun finishes the
    rest."""
    import signal
    import time

    root, out, tmp = _four_sessions(small, tmp_path), tmp_path / "out", tmp_path / "tmp"
    proc, lines = _start(root, out, tmp, "--n-procs", n_procs)
    workers = _children(proc.pid)
    assert workers or n_procs == "1"
    t0 = time.monotonic()
    proc.send_signal(getattr(signal, sig))
    rest = proc.stderr.read()
    code = proc.wait(30)
    assert time.monotonic() - t0 < 15
    assert code == 128 + getattr(signal, sig), rest
    assert f"stopped by {sig}" in rest and "Traceback" not in rest, rest
    time.sleep(0.5)
    assert not [w for w in workers if _alive(w)], "worker processes left running"
    assert not list(tmp.glob("bids-iron-work-*")), "work folder left behind"
    assert not list(out.rglob("*.tmp*")), "temporary files left behind"
    done = list(out.rglob(".bids-iron-done_*.json"))
    assert len(done) < 4, "queued sessions were not cancelled"
    code, _, err = run_cli(root, out, "participant", "--no-report")
    assert code == 0, err
    assert len(list(out.rglob(".bids-iron-done_*.json"))) == 4


@pytest.mark.parametrize("stage", ["dipole inversion"])  # the signal tests stop at R2*
def test_kill9_parent_takes_its_workers(small, tmp_path, stage):
    """kill -9 of the parent at a stage: the workers die with it (no orphans); the next run
    removes the dead run's work folder, is not blocked by its lock, and every output of
    every session reads back."""
    import signal
    import time

    root, out, tmp = _four_sessions(small, tmp_path), tmp_path / "out", tmp_path / "tmp"
    proc, _ = _start(root, out, tmp, stage=stage)
    workers = _children(proc.pid)
    assert workers and list(tmp.glob("bids-iron-work-*"))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and [w for w in workers if _alive(w)]:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "orphaned worker processes"
    os.environ["TMPDIR"], saved = str(tmp), os.environ.get("TMPDIR")
    import tempfile
    tempfile.tempdir = None
    try:
        code, _, err = run_cli(root, out, "participant", "--no-report")
    finally:
        if saved is None:
            os.environ.pop("TMPDIR")
        else:
            os.environ["TMPDIR"] = saved
        tempfile.tempdir = None
    assert code == 0, err
    assert "removed 1 work folder(s) of runs that were killed" in err
    assert not list(tmp.glob("bids-iron-work-*"))
    assert not list(out.rglob("*.tmp*"))
    records = list(out.rglob(".bids-iron-done_*.json"))
    assert len(records) == 4
    for record in records:
        for entry in json.loads(record.read_text())["outputs"]:
            if entry["path"].endswith(".nii.gz"):
                assert np.isfinite(np.asarray(nib.load(out / entry["path"]).dataobj)).all()


def test_sources_of_annexed_inputs(tmp_path):
    """A git-annex/DataLad input is a symlink into .git/annex/objects: Sources name it by its
    dataset path."""
    from bids_iron.bids.derivatives import Derivatives

    root = tmp_path / "ds"
    objects = root / ".git" / "annex" / "objects" / "Xy" / "SHA256E-s1--abc.nii.gz"
    objects.parent.mkdir(parents=True)
    objects.write_bytes(b"x")
    link = root / "sub-01" / "anat" / "sub-01_echo-1_part-mag_MEGRE.nii.gz"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(objects, link.parent))
    uri = Derivatives(tmp_path / "out", root).bids_uri(link)
    assert uri == "bids:raw:sub-01/anat/sub-01_echo-1_part-mag_MEGRE.nii.gz"


# -- inputs people have (issue 12 item 3) -------------------------------------------------
def test_four_d_and_dcm2niix_inputs(tmp_path):
    """All echoes in one 4-D file (EchoTime a list) and dcm2niix's *_MEGRE_e<n>[_ph] names
    give the maps of the BIDS one-file-per-echo layout; a 4-D file with one EchoTime is one
    line naming it and the fix."""
    ph = P.make_phantom((32, 32, 24), (4.0, 4.0, 4.0))
    affine, _ = P.oblique_affine(ph.voxel_size, 0.0, 0, ph.labels.shape)
    data = P.simulate_gre(ph, snr=80)
    root = tmp_path / "ds"
    P.write_megre(root, data, affine, "01")
    P.write_megre_layout(root, data, affine, "02", layout="4d")
    P.write_megre_layout(root, data, affine, "03", layout="dcm2niix")
    out = tmp_path / "out"
    err = _run(root, out)
    for sub in ("01", "02", "03"):
        assert _status(err, f"sub-{sub}") == "done", err
    maps = {sub: {name: nib.load(out / f"sub-{sub}/anat/sub-{sub}_{name}.nii.gz").get_fdata()
                  for name in ("R2starmap", "Chimap")} for sub in ("01", "02", "03")}
    for sub in ("02", "03"):
        for name in ("R2starmap", "Chimap"):
            np.testing.assert_allclose(maps[sub][name], maps["01"][name], atol=1e-5)
    side = json.loads((out / "sub-03/anat/sub-03_R2starmap.json").read_text())
    assert side["Sources"][0] == "bids:raw:sub-03/anat/sub-03_MEGRE_e1.nii.gz"
    assert side["EchoTime"] == [float(t) for t in data.te]

    # one EchoTime for a 4-D file of five volumes
    side = root / "sub-02/anat/sub-02_part-mag_MEGRE.json"
    set_sidecar(side, EchoTime=0.004)
    code, _, err = run_cli(root, out, "participant", "--participant-label", "02")
    lines = [l for l in err.splitlines() if l.startswith("bids-iron: failed: sub-02")]
    assert code == 1 and len(lines) == 1, err
    assert "sub-02_part-mag_MEGRE.nii.gz" in lines[0] and "EchoTime as a list" in lines[0], err


def test_full_tmpdir(small, tmp_path):
    """A full TMPDIR (a 1 MB tmpfs filled up) no longer fails the sessions: without
    --work-dir nothing of a --no-anatomy run goes there. Needs permission to mount."""
    import subprocess
    import tempfile

    tmp = tmp_path / "tmpfs"
    tmp.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tmp)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'no mount'})")
    saved = os.environ.get("TMPDIR")
    try:
        with open(tmp / "filler", "wb") as fh:
            with pytest.raises(OSError):
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        os.environ["TMPDIR"] = str(tmp)
        tempfile.tempdir = None
        code, _, err = run_cli(small, tmp_path / "out", "participant", "--no-report")
    finally:
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved
        tempfile.tempdir = None
        subprocess.run(["umount", str(tmp)], capture_output=True)
    assert code == 0, err
    assert len(list((tmp_path / "out").rglob(".bids-iron-done_*.json"))) == 2


def test_python_warnings_reach_the_session_log(tmp_path):
    """A Python warning raised while a session runs (a library's, or the package's
    warnings.warn) is a WARNING line with the session label in the session's log."""
    import warnings

    from bids_iron.bids.derivatives import Derivatives
    from bids_iron.bids.discovery import SessionInputs
    from bids_iron.options import Options
    from bids_iron.session import Session

    inputs = SessionInputs(subject="01", session="a", magnitude=[])
    derivs = Derivatives(tmp_path / "out", tmp_path / "ds")
    with Session(inputs, Options(), derivs, tmp_path / "work"):
        warnings.warn("labels outside the vocabulary skipped: hippocampus")
    text = (tmp_path / "out/logs/sub-01_ses-a.log").read_text()
    assert ("WARNING sub-01_ses-a: UserWarning: labels outside the vocabulary skipped: "
            "hippocampus") in text, text


def test_stale_report_temporaries_removed(copy):
    """A subject report's temporary left by a killed run goes at the next assembly; a fresh
    one (another run may be writing it) stays."""
    root, out = copy
    out.mkdir()
    old = out / ".sub-01.html.abc123.tmp.html"
    old.write_text("<html>half")
    os.utime(old, (1, 1))
    fresh = out / ".sub-01.html.def456.tmp.html"
    fresh.write_text("<html>half")
    code, _, err = run_cli(root, out, "participant", "--participant-label", "01")
    assert code == 0, err
    assert not old.exists() and fresh.exists() and (out / "sub-01.html").exists()


def test_log_listener_stops_on_a_broken_queue():
    """A worker stopped while it wrote a log record leaves half a message in the queue's pipe;
    the parent's listener then waits forever for the rest (the signal test once hung so after
    "stopped"). `_stop_listener` gives up after its timeout instead."""
    import logging
    import logging.handlers
    import multiprocessing
    import pickle
    import struct
    import time

    from bids_iron.workflow import _stop_listener

    queue = multiprocessing.get_context("spawn").Queue()
    listener = logging.handlers.QueueListener(queue, logging.NullHandler())
    listener.start()
    # 10 of 100 bytes; the 100 would unpickle as None (the listener's sentinel: trailing
    # bytes are ignored), so the test can let its thread end once it has looked
    start = pickle.dumps(None).ljust(10, b"x")
    os.write(queue._writer.fileno(), struct.pack("!i", 100) + start)
    time.sleep(0.2)
    thread = listener._thread
    t0 = time.monotonic()
    _stop_listener(listener, queue, timeout=1.0)
    assert time.monotonic() - t0 < 3.0
    assert listener._thread is None
    assert thread.is_alive()  # still blocked on the half message
    os.write(queue._writer.fileno(), b"x" * 90)
    thread.join(5.0)  # it would otherwise fail with a traceback when pytest exits
    assert not thread.is_alive()
