"""Every bad input gets a one-line error naming the file and the fix, and no partial output.

The loader's checks are tested where they are made: `bids_iron.bids.load.load_session` (and
the phase stage's metadata check, `bids_iron.phase_stage.check_phase_inputs`) on the session
that `find_sessions` finds, as the workflow's first stage calls them before anything of the
session is written. The workflow turns any `BidsIronError` there into the session's
``bids-iron: failed: <label>: <message>`` line; one command-line run checks that wiring (one
line, no traceback, no partial output, the other session unaffected).
"""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

import phantom as P
from bids_iron.bids.discovery import find_sessions
from bids_iron.bids.load import load_session
from bids_iron.errors import BidsIronError
from bids_iron.phase_stage import check_phase_inputs
from conftest import run_cli, set_sidecar


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """Two sessions of one subject on a coarse 32x32x24 (4 mm) grid: fast to copy and run."""
    ph = P.make_phantom((32, 32, 24), (4.0, 4.0, 4.0))
    affine, _ = P.oblique_affine(ph.voxel_size, 0.0, 0, ph.labels.shape)
    root = tmp_path_factory.mktemp("small") / "ds"
    data = P.simulate_gre(ph, snr=80)
    P.write_megre(root, data, affine, "01", "a")
    P.write_megre(root, data, affine, "01", "b")
    return root


@pytest.fixture
def broken(small_dataset, tmp_path):
    """A writable copy of the small dataset and an output folder."""
    root = tmp_path / "ds"
    shutil.copytree(small_dataset, root)
    return root, tmp_path / "out"


def _echo(root, ses, n, part="mag", ext=".nii.gz"):
    return root / "sub-01" / f"ses-{ses}" / "anat" / f"sub-01_ses-{ses}_echo-{n}_part-{part}_MEGRE{ext}"


def _load(root, label):
    """Load and check one session as the workflow's first stage does (default options: no
    --b0, phase on)."""
    inputs = {s.label: s for s in find_sessions(root)}[label]
    data = load_session(inputs, b0_override=None, load_phase=True)
    check_phase_inputs(data)
    return data


def _assert_input_refused(root, needle, fix):
    """Session a is refused with a one-line message naming the file and the fix; session b
    (untouched) still loads."""
    with pytest.raises(BidsIronError) as info:
        _load(root, "sub-01_ses-a")
    message = str(info.value)
    assert message and "\n" not in message, message
    assert needle in message and fix in message, message
    assert _load(root, "sub-01_ses-b").magnitude.shape == (32, 32, 24, 5)


def test_missing_echo_time(broken):
    root, _ = broken
    set_sidecar(_echo(root, "a", 2, ext=".json"), EchoTime=None)
    _assert_input_refused(root, "echo-2_part-mag_MEGRE.nii.gz", "add \"EchoTime\"")


def test_echo_time_in_milliseconds(broken):
    root, _ = broken
    set_sidecar(_echo(root, "a", 3, ext=".json"), EchoTime=16.0)
    _assert_input_refused(root, "echo-3_part-mag", "milliseconds")


def test_echo_count_mismatch(broken):
    root, _ = broken
    _echo(root, "a", 5, "phase").unlink()
    _echo(root, "a", 5, "phase", ".json").unlink()
    _assert_input_refused(root, "4 phase echoes for 5 magnitude echoes", "_part-phase")


def test_shape_mismatch(broken):
    root, _ = broken
    path = _echo(root, "a", 2)
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.ones((30, 32, 24), np.float32), img.affine), path)
    _assert_input_refused(root, "echo-2_part-mag", "share one voxel grid")


def test_affine_mismatch(broken):
    root, _ = broken
    path = _echo(root, "a", 4)
    img = nib.load(path)
    affine = img.affine.copy()
    affine[0, 3] += 5.0
    nib.save(nib.Nifti1Image(img.get_fdata().astype(np.float32), affine), path)
    _assert_input_refused(root, "echo-4_part-mag", "share one voxel grid")


def test_single_echo(broken):
    root, _ = broken
    for n in range(2, 6):
        for part in ("mag", "phase"):
            _echo(root, "a", n, part).unlink()
            _echo(root, "a", n, part, ".json").unlink()
    _assert_input_refused(root, "only 1 echo", "R2* needs at least 2 echoes")


def test_non_finite_values(broken):
    root, _ = broken
    path = _echo(root, "a", 3)
    img = nib.load(path)
    data = img.get_fdata().astype(np.float32)
    data[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), path)
    _assert_input_refused(root, "echo-3_part-mag", "non-finite")


@pytest.mark.parametrize("content,needle", [(b"", "empty (0 bytes)"),
                                            (b"this is not a nifti file", "cannot be read")])
def test_empty_or_unreadable_file(broken, content, needle):
    root, _ = broken
    _echo(root, "a", 1).write_bytes(content)
    _assert_input_refused(root, needle, "re-")


def test_all_zero_image(broken):
    root, _ = broken
    path = _echo(root, "a", 1)
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), path)
    _assert_input_refused(root, "every voxel is 0", "re-export")


def _remove_field_strength(root, ses):
    for n in (1, 2, 3, 4, 5):
        for part in ("mag", "phase"):
            path = _echo(root, ses, n, part, ".json")
            if path.exists():
                set_sidecar(path, MagneticFieldStrength=None)


def test_missing_field_strength(broken):
    """No MagneticFieldStrength with phase: refused by the checks run before any output."""
    root, _ = broken
    _remove_field_strength(root, "a")
    _assert_input_refused(root, "MagneticFieldStrength", "--b0")


def test_session_failure_on_the_command_line(broken):
    """End to end: the bad session fails with one ``bids-iron: failed:`` line naming the file
    and the fix, no traceback, not even its R2* maps written; the other session is done.
    (Missing MagneticFieldStrength: the check that comes last before the first map.)"""
    root, out = broken
    _remove_field_strength(root, "a")
    code, _, err = run_cli(root, out, "participant")
    assert code != 0
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.startswith("bids-iron: failed: sub-01_ses-a")]
    assert len(lines) == 1, err
    assert "MagneticFieldStrength" in lines[0] and "--b0" in lines[0], lines[0]
    anat = out / "sub-01" / "ses-a" / "anat"
    assert not anat.exists() or not list(anat.glob("*")), "partial output written"
    # the other session is unaffected
    assert (out / "sub-01" / "ses-b" / "anat" / "sub-01_ses-b_R2starmap.nii.gz").exists()


def _assert_run_refused(code, err, needle):
    assert code == 2
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.startswith("bids-iron: error:")]
    assert len(lines) == 1 and needle in lines[0], err


def test_output_inside_bids_dir_refused(broken):
    root, _ = broken
    code, _, err = run_cli(root, root / "derivatives" / "bids-iron", "participant")
    _assert_run_refused(code, err, "inside BIDS_DIR")
    assert not (root / "derivatives").exists()


def test_not_a_bids_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(tmp_path / "empty", tmp_path / "out", "participant")
    _assert_run_refused(code, err, "dataset_description.json")


def test_unknown_participant(broken):
    root, out = broken
    code, _, err = run_cli(root, out, "participant", "--participant-label", "99")
    _assert_run_refused(code, err, "no participant(s) 99")


def test_b0_override_recorded(broken):
    root, out = broken
    code, _, err = run_cli(root, out, "participant", "--session-label", "b", "--b0", "7")
    assert code == 0, err
    side = json.loads((out / "sub-01/ses-b/anat/sub-01_ses-b_R2starmap.json").read_text())
    assert side["MagneticFieldStrength"] == 7.0
    assert not (out / "sub-01" / "ses-a").exists()


# -- sidecars that contradict each other (issue 15): refused before any image is read -----
def _swap_echo_times(root, ses, a, b, part="mag"):
    pa, pb = _echo(root, ses, a, part, ".json"), _echo(root, ses, b, part, ".json")
    ta, tb = (json.loads(p.read_text())["EchoTime"] for p in (pa, pb))
    set_sidecar(pa, EchoTime=tb)
    set_sidecar(pb, EchoTime=ta)


def test_swapped_echo_times(broken):
    """EchoTime of echo 2 and echo 4 swapped (data untouched): the echo numbers and the TE
    order disagree; the message names both files."""
    root, _ = broken
    _swap_echo_times(root, "a", 2, 4)
    _assert_input_refused(root, "echo-2_part-mag_MEGRE.nii.gz, sub-01_ses-a_echo-3_part-mag",
                          "fix the EchoTime")


def test_swapped_sidecar_files(broken):
    """Whole sidecars swapped (EchoNumber travels with them): the name says echo 2, the
    sidecar 4."""
    root, _ = broken
    pa, pb = _echo(root, "a", 2, ext=".json"), _echo(root, "a", 4, ext=".json")
    ta, tb = pa.read_text(), pb.read_text()
    pa.write_text(tb)
    pb.write_text(ta)
    _assert_input_refused(root, "echo-2_part-mag", "EchoNumber 4")


def test_phase_echo_time_typo(broken):
    """One phase sidecar with another echo's TE: refused (was matched to that echo)."""
    root, _ = broken
    set_sidecar(_echo(root, "a", 3, "phase", ".json"), EchoTime=0.010)
    with pytest.raises(BidsIronError) as info:
        _load(root, "sub-01_ses-a")
    message = str(info.value)
    # the order check on the phase echoes or the per-echo comparison: both name echo 3
    assert "echo-3_part-phase" in message and "EchoTime" in message, message
    set_sidecar(_echo(root, "a", 3, "phase", ".json"), EchoTime=0.0161)
    _assert_input_refused(root, "echo-3_part-phase", "same echo times")


@pytest.mark.parametrize("factor,needle", [(10, "outside the 0.5 ms-150 ms"),
                                           (1000, "milliseconds")])
def test_echo_times_scaled(broken, factor, needle):
    """EchoTime x10 (0.04-0.28 s) is outside a GRE's echo times; x1000 is milliseconds."""
    root, _ = broken
    for n in range(1, 6):
        for part in ("mag", "phase"):
            path = _echo(root, "a", n, part, ".json")
            set_sidecar(path, EchoTime=json.loads(path.read_text())["EchoTime"] * factor)
    _assert_input_refused(root, "echo-", needle)


def test_implausible_field_strength(broken):
    root, _ = broken
    for n in range(1, 6):
        for part in ("mag", "phase"):
            set_sidecar(_echo(root, "a", n, part, ".json"), MagneticFieldStrength=3000)
    _assert_input_refused(root, "MagneticFieldStrength 3000", "--b0")


def test_phase_in_degrees(broken):
    """Phase stored in degrees (no Units): a short line offering --phase-range, before any
    output (it used to come after R2*/T2*/S0 were written)."""
    root, _ = broken
    for n in range(1, 6):
        path = _echo(root, "a", n, "phase")
        img = nib.load(path)
        nib.save(nib.Nifti1Image(np.degrees(img.get_fdata()).astype(np.float32), img.affine),
                 path)
        set_sidecar(_echo(root, "a", n, "phase", ".json"), Units=None)
    _assert_input_refused(root, "echo-1_part-phase", "degrees? --phase-range -180 180")
    with pytest.raises(BidsIronError) as info:
        _load(root, "sub-01_ses-a")
    assert len(str(info.value)) < 300 and "value_range" not in str(info.value)


def test_r2star_method_that_cannot_fit(broken):
    """--r2star-method arlo with 2 echoes: one line on the command line, no traceback, no
    output (it printed a traceback)."""
    root, out = broken
    for n in range(3, 6):
        for part in ("mag", "phase"):
            _echo(root, "a", n, part).unlink()
            _echo(root, "a", n, part, ".json").unlink()
    code, _, err = run_cli(root, out, "participant", "--session-label", "a",
                           "--r2star-method", "arlo")
    assert code == 1 and "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.startswith("bids-iron: failed: sub-01_ses-a")]
    assert len(lines) == 1 and "--r2star-method arlo" in lines[0], err
    assert not list((out / "sub-01").rglob("*.nii.gz"))


def test_swapped_echo_times_on_the_command_line(broken):
    """The issue's case end to end: one failed line naming the files and the fix, exit 1,
    no map of that session written."""
    root, out = broken
    _swap_echo_times(root, "a", 2, 4)
    code, _, err = run_cli(root, out, "participant", "--session-label", "a")
    assert code == 1 and "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.startswith("bids-iron: failed: sub-01_ses-a")]
    assert len(lines) == 1 and "echo-2_part-mag" in lines[0], err
    assert "fix the EchoTime" in lines[0]
    assert err.count("fix the EchoTime") == 1, err  # each error printed once
    assert "fix the EchoTime" in (out / "logs" / "sub-01_ses-a.log").read_text()
    assert "fix the EchoTime" in next((out / "logs").glob("bids-iron_*.log")).read_text()
    assert not list((out / "sub-01").rglob("*.nii.gz"))
