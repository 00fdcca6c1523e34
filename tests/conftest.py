"""Shared fixtures: simulated BIDS datasets with ground truth (qsm-forward building blocks)."""

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import phantom as P  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_SMALL = SHARED / "data" / "real" / "mrt-small"


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


def run_cli(*args, anatomy=False):
    """Run ``python -m bids_iron`` in a subprocess; return (code, stdout, stderr).

    Participant-level runs get ``--no-anatomy`` unless ``anatomy=True`` (or the test passes
    ``--templateflow-home``/``--no-anatomy`` itself): the tests of other stages do not need
    the template registration, which the anatomy tests exercise with a synthetic
    TemplateFlow home.
    """
    import subprocess

    args = [str(a) for a in args]
    if ("participant" in args and not anatomy
            and not {"--templateflow-home", "--no-anatomy"} & set(args)):
        args.append("--no-anatomy")
    proc = subprocess.run([sys.executable, "-m", "bids_iron", *args],
                          capture_output=True, text=True, timeout=900)
    return proc.returncode, proc.stdout, proc.stderr
