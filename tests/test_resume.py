"""Kill a run with SIGKILL in the middle of a session; the same command then finishes it."""

import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np

import phantom as P
from conftest import run_cli


def _dataset(root, head_phantom):
    affine, _ = P.oblique_affine(head_phantom.voxel_size, 0.0, 0, head_phantom.labels.shape)
    for i, ses in enumerate(("1", "2", "3")):
        P.write_megre(root, P.simulate_gre(head_phantom, snr=80, seed=10 + i), affine, "01", ses)
    return root


def _done(out, ses):
    return out / "sub-01" / f"ses-{ses}" / f".bids-iron-done_sub-01_ses-{ses}.json"


def test_sigkill_then_rerun_redoes_only_unfinished(head_phantom, tmp_path):
    root = _dataset(tmp_path / "ds", head_phantom)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "bids_iron", str(root), str(out),
                             "participant", "--n-procs", "1", "--no-anatomy"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started_second = out / "sub-01/ses-2/anat/sub-01_ses-2_R2starmap.nii.gz"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not started_second.exists():
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _done(out, "1").exists(), "the first session should have finished before the kill"
    assert not _done(out, "3").exists()
    # leave a stale temporary as a write interrupted at the worst moment would
    stale = out / "sub-01/ses-2/anat/.sub-01_ses-2_Chimap.nii.gz.x1y2.tmp.nii.gz"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"\x1f\x8b truncated")
    first = out / "sub-01/ses-1/anat/sub-01_ses-1_Chimap.nii.gz"
    first_mtime = first.stat().st_mtime_ns

    code, _, err = run_cli(root, out, "participant", "--n-procs", "1")
    assert code == 0, err
    assert "sub-01_ses-1: skipped" in err
    skip = [l for l in err.splitlines() if "sub-01_ses-1: skipped" in l][0]
    assert "already finished with these options and inputs" in skip and "--force" in skip
    assert first.stat().st_mtime_ns == first_mtime  # finished session untouched
    for ses in ("1", "2", "3"):
        record = json.loads(_done(out, ses).read_text())
        for entry in record["outputs"]:
            rel = entry["path"]
            path = out / rel
            if path.name.endswith(".nii.gz"):
                data = np.asanyarray(nib.load(str(path)).dataobj)  # reads the whole file
                assert np.all(np.isfinite(data)), rel
            elif path.suffix == ".json":
                json.loads(path.read_text())
            else:  # the report section (HTML), complete
                assert path.read_text().rstrip().endswith("</section>"), rel
    assert not list(out.rglob("*.tmp*")), "temporary files left behind"


def test_clean_workdir_and_default_n_procs(head_phantom, tmp_path):
    from bids_iron.workflow import default_n_procs

    assert 1 <= default_n_procs() <= (os.cpu_count() or 1)
    root = tmp_path / "ds"
    affine, _ = P.oblique_affine(head_phantom.voxel_size, 0.0, 0, head_phantom.labels.shape)
    P.write_megre(root, P.simulate_gre(head_phantom, snr=80), affine, "01", with_phase=False)
    work = tmp_path / "work"
    # no --n-procs: the default number of parallel sessions (run_cli passes 1 otherwise)
    code, _, err = run_cli(root, tmp_path / "out", "participant", "--work-dir", work,
                           n_procs=None)
    assert code == 0 and (work / "sub-01" / "r2star_fit_residual.npy").exists()
    code, _, err = run_cli(root, tmp_path / "out", "participant", "--work-dir", work,
                           "--force", "--clean-workdir", n_procs=None)
    assert code == 0 and not (work / "sub-01").exists()
