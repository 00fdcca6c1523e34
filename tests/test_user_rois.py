"""ROIs from the user's own segmentations (--roi-dseg, --freesurfer-dir)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

import phantom as P
from conftest import run_cli

NAMES = {1: "left_caudate", 2: "right_caudate", 3: "left_putamen", 4: "right_putamen",
         5: "left_globus_pallidus", 6: "right_globus_pallidus", 7: "left_thalamus",
         8: "right_thalamus", 9: "superior_sagittal_vein"}  # the last is outside the vocabulary
T1_CONTRAST = {0: 0.0, 1: 0.45, 2: 1.0, 3: 0.62, 4: 0.12, 5: 0.66, 6: 0.7, 7: 0.9, 8: 0.82,
               9: 0.84, 10: 0.86, 11: 0.86, 12: 0.6, 13: 0.0}


def _user_labels(ph):
    out = np.zeros(ph.labels.shape, np.int16)
    for index, name in NAMES.items():
        if index == 9:
            out[ph.label_mask("vein")] = 9
            continue
        hemi, roi = name.split("_", 1)
        out[ph.label_mask(roi, hemi)] = index
    return out


def _rigid(deg_z, shift):
    a = np.deg2rad(deg_z)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    m[:3, 3] = shift
    return m


def _resample(volume, src_affine, shape, dst_affine, motion, order):
    """``volume`` (on src grid) seen on a dst grid after head ``motion`` (dst world -> src world)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), 0).reshape(3, -1)
    world = dst_affine[:3, :3] @ ijk + dst_affine[:3, 3:4]
    world = motion[:3, :3] @ world + motion[:3, 3:4]
    src = np.linalg.inv(src_affine)
    vox = src[:3, :3] @ world + src[:3, 3:4]
    return ndimage.map_coordinates(volume, vox, order=order, mode="constant").reshape(shape)


def _write(path, data, affine, meta=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    if meta is not None:
        path.with_name(path.name.split(".nii")[0] + ".json").write_text(json.dumps(meta))


def _label_tsv(path):
    path.write_text("index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in NAMES.items()))


@pytest.fixture(scope="module")
def user_setup(tmp_path_factory, head_phantom):
    ph = head_phantom
    base = tmp_path_factory.mktemp("user")
    root = base / "ds"
    affine, _ = P.oblique_affine(ph.voxel_size, 0.0, 0, ph.labels.shape)
    anat = P.write_megre(root, P.simulate_gre(ph, snr=100, seed=11), affine, "01", "1")
    user = _user_labels(ph)
    t1_src = np.zeros(ph.labels.shape, np.float32)
    for index, value in T1_CONTRAST.items():
        t1_src[ph.labels == index] = value
    grids = {}
    # T1w: 1.5 mm grid, head moved by 3 degrees and (2, -3, 1.5) mm; FLAIR: 2.5 mm grid, other motion
    for space, vox, shape, motion in (("T1w", 1.5, (84, 84, 64), _rigid(3.0, (2.0, -3.0, 1.5))),
                                      ("FLAIR", 2.5, (52, 52, 38), _rigid(-2.0, (-2.5, 1.0, 2.0)))):
        grid = np.diag([vox, vox, vox, 1.0])
        grid[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * vox
        image = _resample(t1_src if space == "T1w" else 1.0 - 0.7 * t1_src, affine, shape, grid,
                          motion, order=1).astype(np.float32)
        _write(anat / f"sub-01_ses-1_{space}.nii.gz", image, grid, {})
        grids[space] = (grid, shape, motion)
    for space in ("MEGRE", "T1w", "FLAIR"):
        folder = base / f"rois_{space}" / "sub-01" / "ses-1" / "anat"
        entity = "" if space == "MEGRE" else f"_space-{space}"
        if space == "MEGRE":
            data, grid = user, affine
        else:
            grid, shape, motion = grids[space]
            data = _resample(user.astype(np.float32), affine, shape, grid, motion, order=0)
        _write(folder / f"sub-01_ses-1{entity}_dseg.nii.gz", data.astype(np.int16), grid)
        _label_tsv(folder / f"sub-01_ses-1{entity}_dseg.tsv")
    return base, root, ph, user


def _run(base, root, rois_folder, tag, *extra):
    out = base / f"out_{tag}"
    code, _, err = run_cli(root, out, "participant", "--roi-dseg", rois_folder, *extra)
    table = out / "sub-01/ses-1/anat/sub-01_ses-1_roistats.tsv"
    return code, err, pd.read_csv(table, sep="\t") if table.exists() else None


@pytest.fixture(scope="module")
def space_runs(user_setup):
    """One --roi-dseg run per space of the label map (MEGRE, T1w, FLAIR): (code, err, table)."""
    base, root, _, _ = user_setup
    return {space: _run(base, root, base / f"rois_{space}", space)
            for space in ("MEGRE", "T1w", "FLAIR")}


def test_same_means_from_megre_t1w_and_flair_space(user_setup, space_runs):
    tables = {}
    for space in ("MEGRE", "T1w", "FLAIR"):
        code, err, table = space_runs[space]
        assert code == 0, err
        assert set(table["source"]) == {"user"}
        tables[space] = table.set_index(["roi", "hemisphere", "metric"])
    ref = tables["MEGRE"]
    for space in ("T1w", "FLAIR"):
        for roi in ("caudate", "putamen", "globus_pallidus", "thalamus"):
            for metric in ("r2star", "chi"):
                a = ref.loc[(roi, "bilateral", metric), "mean"]
                b = tables[space].loc[(roi, "bilateral", metric), "mean"]
                # 2 %, and for chi at least 1 ppb (the thalamus, 0.03 ppm with its iron-richer
                # pulvinar, measured 0.74 ppb apart from FLAIR-space labels)
                tol = 0.02 * abs(a) if metric == "r2star" else max(0.02 * abs(a), 0.001)
                assert abs(b - a) <= tol, (space, roi, metric, a, b)
    # names outside the vocabulary are kept as they are
    assert ("superior_sagittal_vein", "bilateral", "r2star") in ref.index


def test_erosion_rule_applies(user_setup, space_runs):
    base, root, ph, user = user_setup
    _, _, table = space_runs["MEGRE"]
    row = table[(table.roi == "putamen") & (table.hemisphere == "left") & (table.metric == "r2star")]
    mask = user == 3
    eroded = ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1))
    assert int(row["n_voxels"].iloc[0]) == int(eroded.sum())
    truth = ph.r2star[eroded].mean()
    assert abs(row["mean"].iloc[0] - truth) / truth < 0.01


def test_freesurfer_aseg(user_setup, tmp_path):
    base, root, ph, user = user_setup
    aseg_ids = {("caudate", "left"): 11, ("caudate", "right"): 50, ("putamen", "left"): 12,
                ("putamen", "right"): 51, ("globus_pallidus", "left"): 13,
                ("globus_pallidus", "right"): 52, ("thalamus", "left"): 10,
                ("thalamus", "right"): 49}
    seg = np.zeros(ph.labels.shape, np.int32)
    for (roi, hemi), value in aseg_ids.items():
        seg[ph.label_mask(roi, hemi)] = value
    seg[ph.label_mask("csf") & (ph.hemisphere == 0)] = 4
    # FreeSurfer's conformed space: 1 mm, its own grid, same scanner (world) coordinates as T1w
    grid, shape = np.diag([1.0, 1.0, 1.0, 1.0]), (128, 128, 96)
    grid[:3, 3] = -(np.asarray(shape) - 1) / 2.0
    affine, _ = P.oblique_affine(ph.voxel_size, 0.0, 0, ph.labels.shape)
    t1w = nib.load(str(root / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"))
    # aseg is in the T1w's scanner space: the head as the T1w saw it (moved), on a 1 mm grid
    motion = _rigid(3.0, (2.0, -3.0, 1.5))
    conformed = _resample(seg.astype(np.float32), affine, shape, grid, motion, order=0)
    subjects = tmp_path / "freesurfer"
    (subjects / "sub-01" / "mri").mkdir(parents=True)
    nib.save(nib.MGHImage(conformed.astype(np.int32), grid), str(subjects / "sub-01/mri/aseg.mgz"))
    out = tmp_path / "out"
    code, _, err = run_cli(root, out, "participant", "--freesurfer-dir", subjects)
    assert code == 0, err
    table = pd.read_csv(out / "sub-01/ses-1/anat/sub-01_ses-1_roistats.tsv", sep="\t")
    assert set(table["source"]) == {"freesurfer"}
    got = set(zip(table.roi, table.hemisphere))
    for key in aseg_ids:
        assert key in got
    assert ("csf", "left") in got or ("csf", "bilateral") in got
    r2 = table[(table.metric == "r2star") & (table.hemisphere == "bilateral")].set_index("roi")
    for roi in ("putamen", "globus_pallidus", "caudate", "thalamus"):
        truth = ph.r2star[ph.label_mask(roi)].mean()
        assert abs(r2.loc[roi, "mean"] - truth) / truth < 0.05, roi
    assert t1w.shape == (84, 84, 64)


def test_label_missing_from_table_is_named(user_setup, tmp_path):
    base, root, ph, user = user_setup
    rois = tmp_path / "rois"
    folder = rois / "sub-01" / "ses-1" / "anat"
    _write(folder / "sub-01_ses-1_dseg.nii.gz", user.astype(np.int16),
           P.oblique_affine(ph.voxel_size, 0.0, 0, ph.labels.shape)[0])
    (folder / "sub-01_ses-1_dseg.tsv").write_text("index\tname\n1\tleft_caudate\n")
    code, err, table = _run(tmp_path, root, rois, "missing")
    assert code == 0 and "Traceback" not in err
    assert "are not in sub-01_ses-1_dseg.tsv" in err and "user ROIs not used" in err
    assert table is None  # --no-anatomy: no atlas ROIs either, so no table


def test_grid_matching_no_input_is_named(user_setup, tmp_path):
    base, root, ph, user = user_setup
    rois = tmp_path / "rois"
    folder = rois / "sub-01" / "ses-1" / "anat"
    _write(folder / "sub-01_ses-1_dseg.nii.gz", user[:-4].astype(np.int16), np.eye(4))
    _label_tsv(folder / "sub-01_ses-1_dseg.tsv")
    code, err, _ = _run(tmp_path, root, rois, "grid")
    assert code == 0 and "is not the MEGRE grid" in err
