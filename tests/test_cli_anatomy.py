"""Participant level with anatomy: registration, native labels, ROI table, FLAIR, lesions,
atlas reference regions and the HTML report (synthetic TemplateFlow home)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

import phantom as P
import tf_home
from bids_iron.anatomy.rois import NATIVE_INDEX, NUCLEI
from conftest import run_cli

LESION_CENTRE_MM = np.array([-24.0, -18.0, 14.0])  # left periventricular white matter
LESION_RADIUS_MM = 5.0


def _rigid(deg_x, shift):
    a = np.deg2rad(deg_x)
    m = np.eye(4)
    m[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    m[:3, 3] = shift
    return m


@pytest.fixture(scope="module")
def anatomy_run(tmp_path_factory, head_phantom):
    ph = head_phantom
    root = tmp_path_factory.mktemp("anat") / "ds"
    affine, _ = P.oblique_affine(ph.voxel_size, 0.0, 0, ph.labels.shape)
    world = np.stack(np.meshgrid(*[np.arange(n) for n in ph.labels.shape], indexing="ij"), -1)
    world = world @ affine[:3, :3].T + affine[:3, 3]
    lesion = np.linalg.norm(world - LESION_CENTRE_MM, axis=-1) <= LESION_RADIUS_MM
    data = P.simulate_gre(ph, snr=100, seed=7)
    anat = P.write_megre(root, data, affine, "01", "1")
    # FLAIR: same scanner grid, head moved by 4 degrees about x and (3, -2, 2) mm
    flair_contrast = {0: 0.0, 1: 0.3, 2: 0.55, 3: 0.75, 4: 0.05}
    flair = np.full(ph.labels.shape, 0.65, np.float32)
    for index, value in flair_contrast.items():
        flair[ph.labels == index] = value
    flair[lesion] = 1.2
    motion = _rigid(4.0, (3.0, -2.0, 2.0))  # world of the FLAIR content -> world of MEGRE
    vox = np.linalg.inv(affine) @ motion @ affine
    moved = ndimage.affine_transform(flair, vox[:3, :3], vox[:3, 3], order=1)
    moved_lesion = ndimage.affine_transform(lesion.astype(np.float32), vox[:3, :3], vox[:3, 3],
                                            order=1) >= 0.5
    nib.save(nib.Nifti1Image(moved, affine), str(anat / "sub-01_ses-1_FLAIR.nii.gz"))
    (anat / "sub-01_ses-1_FLAIR.json").write_text("{}")
    lesions = root.parent / "lesions" / "sub-01" / "ses-1" / "anat"
    lesions.mkdir(parents=True)
    nib.save(nib.Nifti1Image(moved_lesion.astype(np.uint8), affine),
             str(lesions / "sub-01_ses-1_space-FLAIR_desc-lesion_mask.nii.gz"))
    (root.parent / "lesions" / "dataset_description.json").write_text(
        json.dumps({"Name": "lesions", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))
    tf = tf_home.build_tf_home(root.parent / "templateflow", fine=2.0)
    out = root.parent / "out"
    code, _, err = run_cli(root, out, "participant", "--templateflow-home", tf,
                           "--lesion-masks", root.parent / "lesions", "--swi")
    assert code == 0, err
    return out / "sub-01" / "ses-1" / "anat", ph, lesion, out, err


def test_labels_and_transforms_written(anatomy_run):
    anat, ph, _, _, _ = anatomy_run
    dseg = nib.load(anat / "sub-01_ses-1_desc-iron_dseg.nii.gz")
    assert dseg.shape == ph.labels.shape and dseg.get_data_dtype() == np.int16
    table = pd.read_csv(anat / "sub-01_ses-1_desc-iron_dseg.tsv", sep="\t")
    assert list(table.columns) == ["index", "name"] and "left_caudate" in set(table["name"])
    assert (anat / "sub-01_ses-1_from-MNI152NLin2009cAsym_to-MEGRE_mode-image_xfm.nii.gz").exists()
    labels = np.asarray(dseg.dataobj)
    # registration put the big nuclei where the phantom has them
    for name in ("caudate", "putamen", "thalamus"):
        for hemi, h in (("left", 1), ("right", 2)):
            got = labels == NATIVE_INDEX[(name, hemi)]
            if name == "thalamus":
                got |= labels == NATIVE_INDEX[("pulvinar", hemi)]
            truth = ph.label_mask(name, hemi)
            dice = 2 * (got & truth).sum() / (got.sum() + truth.sum())
            assert dice >= 0.75, (name, hemi, dice)


def test_roi_table(anatomy_run):
    anat, ph, _, _, _ = anatomy_run
    table = pd.read_csv(anat / "sub-01_ses-1_roistats.tsv", sep="\t")
    for column in ("roi", "hemisphere", "metric", "mean", "median", "sd", "n_voxels",
                   "volume_mm3", "source"):
        assert column in table.columns
    assert set(NUCLEI) <= set(table["roi"])
    assert {"r2star", "t2star", "lfs", "chi", "chi_wholebrain"} == set(table["metric"])
    assert {"left", "right", "bilateral"} == set(table["hemisphere"])
    side = json.loads((anat / "sub-01_ses-1_roistats.json").read_text())
    assert side["metric"]["Levels"] and "mean" in side
    qc = side["QualityControl"]
    assert 300 < qc["MaskQuality"]["BrainVolumeML"] < 500  # the small test phantom's brain
    assert any("outside 800-2200 mL" in w for w in qc["MaskWarnings"])
    # whole-brain referenced chi: the CSF-referenced values shifted by one offset, and the
    # CSF reference region's mean on that scale is in the Chimap sidecar
    bil = table[table.hemisphere == "bilateral"].pivot(index="roi", columns="metric",
                                                       values="mean")
    offsets = (bil["chi_wholebrain"] - bil["chi"]).dropna()
    assert offsets.std() < 1e-5
    chi_side = json.loads((anat / "sub-01_ses-1_Chimap.json").read_text())
    wb = chi_side["ChiWholeBrainReference"]
    assert abs(offsets.mean() + wb["WholeBrainMean"]) < 1e-5
    assert wb["ReferenceRegionVoxels"] >= 20 and wb["ReferenceRegionSD"] > 0
    # R2* of the large nuclei close to the truth (registration + 1-voxel erosion)
    r2 = table[(table.metric == "r2star") & (table.hemisphere == "bilateral")].set_index("roi")
    for name in ("putamen", "globus_pallidus", "caudate", "thalamus"):
        truth = ph.r2star[ph.label_mask(name)].mean()
        assert abs(r2.loc[name, "mean"] - truth) / truth < 0.10, (name, r2.loc[name, "mean"], truth)


def test_atlas_references_used(anatomy_run):
    anat, _, _, _, _ = anatomy_run
    chi = json.loads((anat / "sub-01_ses-1_Chimap.json").read_text())
    assert chi["ChiReference"].startswith("CSF of the lateral ventricles (atlas")
    lfs = json.loads((anat.parent / "fmap" / "sub-01_ses-1_desc-lfs_fieldmap.json").read_text())
    assert lfs["LFSReference"].startswith("posterior limb of the internal capsule")


def test_flair_and_lesions(anatomy_run):
    anat, ph, lesion, _, _ = anatomy_run
    flair = nib.load(anat / "sub-01_ses-1_space-MEGRE_FLAIR.nii.gz")
    assert flair.shape == ph.labels.shape
    native = np.asarray(nib.load(anat / "sub-01_ses-1_space-MEGRE_desc-lesion_mask.nii.gz").dataobj) > 0
    dice = 2 * (native & lesion).sum() / (native.sum() + lesion.sum())
    assert dice >= 0.7, dice  # the head motion between FLAIR and MEGRE was undone
    table = pd.read_csv(anat / "sub-01_ses-1_roistats.tsv", sep="\t")
    assert (table.roi == "lesion").any()
    per_lesion = pd.read_csv(anat / "sub-01_ses-1_desc-lesions_roistats.tsv", sep="\t")
    assert len(per_lesion) >= 1


def test_report(anatomy_run):
    _, _, _, out, _ = anatomy_run
    html = (out / "sub-01.html").read_text()
    assert "sub-01_ses-1" in html and "data:image/png;base64" in html
    assert "Methods" in html or "methods" in html


def test_missing_templates_named(tmp_path, sim_dataset):
    root, _ = sim_dataset
    empty = tmp_path / "tf_empty"
    empty.mkdir()
    code, _, err = run_cli(root, tmp_path / "out", "participant", "--participant-label", "02",
                           "--templateflow-home", empty)
    assert code == 2 and "Traceback" not in err
    line = [l for l in err.splitlines() if l.startswith("bids-iron: error:")][0]
    assert "TEMPLATEFLOW_HOME" in line and str(empty) in line and "--no-anatomy" in line
