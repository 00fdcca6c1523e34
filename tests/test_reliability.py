"""Reliability at scale (issue 15): reruns that notice changed inputs and damaged outputs,
a dataset with a broken file outside the selection, clean stops and one run per OUTPUT_DIR.

All on a coarse 32x32x24 (4 mm) phantom: a session takes a second or two.
"""

import json
import os
import shutil

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
