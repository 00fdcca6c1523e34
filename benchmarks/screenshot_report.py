"""Look at the participant report as a person would: a participant run on a small simulated
dataset, then headless-Chromium screenshots of the HTML.

Run by hand (about 2-3 minutes on 2 cores)::

    /work/venv/bin/python benchmarks/screenshot_report.py [--out DIR] [--reuse]

It builds, under ``DIR`` (default ``/tmp/bids-iron-screens``):

* ``ds/``: a BIDS dataset of the test head phantom (``tests/phantom.py``, 64x64x48, 2 mm):
  ``sub-01`` (two sessions: MEGRE with phase, FLAIR, a lesion mask) and ``sub-02`` (MEGRE
  magnitude only);
* ``templateflow/``: a synthetic TemplateFlow home (``tests/tf_home.py``);
* ``full/``: ``participant --swi --lesion-masks ...`` (registration, atlas ROIs, ROI tables);
* ``noanat/``: ``participant --no-anatomy`` (no ROI table: the methods must not claim one);

then screenshots every ``sub-*.html`` of both runs with headless Chromium
(``--window-size 1400 x --height``, default 24000 px: a whole report of two sessions) into ``DIR/screens/<run>_sub-XX.png`` and cuts each into
``..._partN.png`` tiles of 1400 x 1600 px that an image viewer shows at full size.
``--reuse`` keeps the dataset and the template home of an earlier call (the runs are redone
with ``--force``, e.g. after a change of the report code). ``--reports DIR`` only takes the
screenshots of the reports in DIR (e.g. ``bids-iron-demo``'s ``derivatives/bids-iron``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import phantom as P
import tf_home
from screenshots import screenshot

LESION_CENTRE_MM = np.array([-24.0, -18.0, 14.0])  # left periventricular white matter
LESION_RADIUS_MM = 5.0


def build_dataset(root):
    """The BIDS dataset (``root/ds``) and its lesion derivative (``root/lesions``)."""
    ph = P.make_phantom()
    ds = root / "ds"
    affine, _ = P.oblique_affine(ph.voxel_size, 0.0, 0, ph.labels.shape)
    world = np.stack(np.meshgrid(*[np.arange(n) for n in ph.labels.shape], indexing="ij"), -1)
    world = world @ affine[:3, :3].T + affine[:3, 3]
    lesion = np.linalg.norm(world - LESION_CENTRE_MM, axis=-1) <= LESION_RADIUS_MM
    flair = np.full(ph.labels.shape, 0.65, np.float32)
    for index, value in {0: 0.0, 1: 0.3, 2: 0.55, 3: 0.75, 4: 0.05}.items():
        flair[ph.labels == index] = value
    flair[lesion] = 1.2
    lesion_root = root / "lesions"
    for session, snr, seed in (("1", 100, 1), ("2", 50, 2)):
        anat = P.write_megre(ds, P.simulate_gre(ph, snr=snr, seed=seed), affine, "01", session)
        nib.save(nib.Nifti1Image(flair, affine), str(anat / f"sub-01_ses-{session}_FLAIR.nii.gz"))
        (anat / f"sub-01_ses-{session}_FLAIR.json").write_text("{}")
        folder = lesion_root / "sub-01" / f"ses-{session}" / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(lesion.astype(np.uint8), affine),
                 str(folder / f"sub-01_ses-{session}_space-FLAIR_desc-lesion_mask.nii.gz"))
    P.write_megre(ds, P.simulate_gre(ph, snr=80, seed=3), affine, "02", None, with_phase=False)
    (ds / "participants.tsv").write_text("participant_id\tage\tgroup\n"
                                         "sub-01\t40\tMS\nsub-02\t38\tHC\n")
    (lesion_root / "dataset_description.json").write_text(json.dumps(
        {"Name": "lesions", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))
    return ds, lesion_root


def run_participant(ds, out, *args):
    """``python -m bids_iron ds out participant ...`` (one process per session, sequential)."""
    cmd = [sys.executable, "-m", "bids_iron", str(ds), str(out), "participant", "--n-procs",
           "1", *[str(a) for a in args]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    print(f"{' '.join(cmd[3:])}: exit {proc.returncode} in {time.perf_counter() - t0:.0f} s")
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
    return proc.returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bids-iron-screens"))
    parser.add_argument("--reuse", action="store_true",
                        help="keep the dataset and template home of an earlier call")
    parser.add_argument("--height", type=int, default=24000, help="window height (px)")
    parser.add_argument("--reports", type=Path, default=None, metavar="DIR",
                        help="only screenshot the sub-*.html of DIR (e.g. the derivatives of "
                             "bids-iron-demo: DEMO/derivatives/bids-iron) into --out/screens")
    args = parser.parse_args()
    if args.reports is not None:
        screens = args.out / "screens"
        screens.mkdir(parents=True, exist_ok=True)
        for html in sorted(args.reports.glob("sub-*.html")):
            tiles = screenshot(html, screens / f"reports_{html.stem}.png", height=args.height)
            print(f"{html} -> {len(tiles)} tiles: {screens}/reports_{html.stem}_part*.png")
        return
    root = args.out
    if root.exists() and not args.reuse:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    ds = root / "ds"
    lesions = root / "lesions"
    if not ds.exists():
        build_dataset(root)
    tf = root / "templateflow"
    if not tf.exists():
        tf_home.build_tf_home(tf, fine=2.0)
    runs = {"full": ("--templateflow-home", tf, "--lesion-masks", lesions, "--swi"),
            "noanat": ("--no-anatomy",)}
    for name, extra in runs.items():
        run_participant(ds, root / name, "--force", *extra)
    screens = root / "screens"
    screens.mkdir(exist_ok=True)
    for name in runs:
        for html in sorted((root / name).glob("sub-*.html")):
            tiles = screenshot(html, screens / f"{name}_{html.stem}.png", height=args.height)
            print(f"{html} -> {len(tiles)} tiles: {tiles[0].parent}/{name}_{html.stem}_part*.png")


if __name__ == "__main__":
    main()
