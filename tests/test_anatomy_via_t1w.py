"""Template registration through the session's T1w (template -> T1w -> MEGRE), on the dataset
of test_user_rois.py (MEGRE, T1w and FLAIR with head motion between them).

Its own file: the registration takes most of a minute, so that ``--dist loadfile`` can run it
alongside the user-ROI tests rather than after them.
"""

import json

import nibabel as nib
import numpy as np

import tf_home
from bids_iron.anatomy.rois import NATIVE_INDEX
from conftest import run_cli
from test_user_rois import user_setup  # noqa: F401  (the module-scoped dataset fixture)


def test_anatomy_through_the_t1w(user_setup):  # noqa: F811
    """With a T1w in the session, the template goes template -> T1w -> MEGRE (the default)."""
    base, root, ph, user = user_setup
    tf = tf_home.build_tf_home(base / "templateflow_t1w", fine=2.0)
    out = base / "out_anatomy_t1w"
    code, _, err = run_cli(root, out, "participant", "--templateflow-home", tf, "--no-phase")
    assert code == 0, err
    anat = out / "sub-01/ses-1/anat"
    side = json.loads((anat / "sub-01_ses-1_desc-iron_dseg.json").read_text())
    assert side["Registration"].startswith("via T1w")
    labels = np.asarray(nib.load(anat / "sub-01_ses-1_desc-iron_dseg.nii.gz").dataobj)
    for name in ("caudate", "putamen", "globus_pallidus"):
        for hemi in ("left", "right"):
            got = labels == NATIVE_INDEX[(name, hemi)]
            truth = ph.label_mask(name, hemi)
            dice = 2 * (got & truth).sum() / (got.sum() + truth.sum())
            assert dice >= 0.75, (name, hemi, dice)
