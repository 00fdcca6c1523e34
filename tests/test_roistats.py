"""ROI statistics against hand computation on small arrays."""

import numpy as np
import pandas as pd
import pytest

from bids_iron.anatomy import roistats
from bids_iron.anatomy.rois import NATIVE_INDEX, NUCLEI, REFERENCES
from bids_iron.anatomy.roistats import (COLUMNS, data_dictionary, lesion_data_dictionary,
                                        lesion_table, roi_mask, roi_statistics)

VOX = (1.0, 1.0, 2.0)  # mm, voxel volume 2 mm^3


def idx(roi, hemi):
    return NATIVE_INDEX[(roi, hemi)]


def row(table, roi, hemi, metric):
    sel = table[(table.roi == roi) & (table.hemisphere == hemi) & (table.metric == metric)]
    assert len(sel) == 1, (roi, hemi, metric)
    return sel.iloc[0]


def hand_stats(values):
    values = np.asarray(values, dtype=float)
    return values.mean(), np.median(values), values.std(ddof=1), values.size


def erode6(mask):
    """Hand erosion: a voxel stays if it and its 6 face neighbours are in the mask."""
    out = mask.copy()
    padded = np.pad(mask, 1)
    for axis in range(3):
        for shift in (-1, 1):
            out &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return out


@pytest.fixture
def scene():
    """Left caudate (x < 10) and right caudate (x >= 10), blocks of 6x5x5; random maps."""
    rng = np.random.default_rng(0)
    labels = np.zeros((20, 12, 12), dtype=np.int16)
    labels[2:8, 3:8, 3:8] = idx("caudate", "left")
    labels[12:18, 3:8, 3:8] = idx("caudate", "right")
    maps = {"r2star": rng.uniform(10, 40, labels.shape),
            "chi": rng.normal(0.05, 0.02, labels.shape)}
    return labels, maps


def test_columns_shape_and_order(scene):
    labels, maps = scene
    table = roi_statistics(maps, labels, VOX)
    assert tuple(table.columns) == COLUMNS
    n_rois = len(NUCLEI + REFERENCES)
    assert len(table) == n_rois * 3 * 2  # every ROI, 3 hemispheres, 2 metrics; no lesions
    assert list(table.metric[:2]) == ["r2star", "chi"]  # METRICS order, not dict order
    assert list(table.hemisphere[:6]) == ["left"] * 2 + ["right"] * 2 + ["bilateral"] * 2
    assert (table.source == "atlas").all()
    assert "lesion" not in set(table.roi)


def test_erosion_and_hemispheres_by_hand(scene):
    labels, maps = scene
    table = roi_statistics(maps, labels, VOX, erode=1)
    for hemi in ("left", "right"):
        raw = labels == idx("caudate", hemi)
        eroded = erode6(raw)
        assert eroded.sum() == 4 * 3 * 3  # 6x5x5 block minus one voxel each side
        for metric in maps:
            r = row(table, "caudate", hemi, metric)
            mean, median, sd, n = hand_stats(maps[metric][eroded])
            assert r["n_voxels"] == n
            assert r["mean"] == pytest.approx(mean, rel=1e-12)
            assert r["median"] == pytest.approx(median, rel=1e-12)
            assert r["sd"] == pytest.approx(sd, rel=1e-12)
            assert r["volume_mm3"] == pytest.approx(n * 2.0)
            assert r["label_volume_mm3"] == pytest.approx(raw.sum() * 2.0)


def test_bilateral_is_union_of_eroded_hemispheres():
    # Two hemisphere ROIs touching at the midline: eroding after the union would keep the
    # midline voxels; eroding each first removes them.
    labels = np.zeros((14, 9, 9), dtype=np.int16)
    labels[2:7, 2:7, 2:7] = idx("putamen", "left")
    labels[7:12, 2:7, 2:7] = idx("putamen", "right")
    values = np.arange(labels.size, dtype=float).reshape(labels.shape)
    table = roi_statistics({"r2star": values}, labels, VOX)
    left = erode6(labels == idx("putamen", "left"))
    right = erode6(labels == idx("putamen", "right"))
    union = left | right
    assert not (erode6(labels > 0) == union).all()  # the two orders really differ here
    r = row(table, "putamen", "bilateral", "r2star")
    assert r["n_voxels"] == union.sum() == 54
    assert r["mean"] == pytest.approx(values[union].mean())
    assert r["median"] == pytest.approx(np.median(values[union]))
    assert r["label_volume_mm3"] == pytest.approx(250 * 2.0)


def test_no_erosion():
    labels = np.zeros((8, 8, 8), dtype=np.int16)
    labels[2:5, 2:5, 2:5] = idx("red_nucleus", "left")
    table = roi_statistics({"r2star": np.full(labels.shape, 20.0)}, labels, VOX, erode=0)
    assert row(table, "red_nucleus", "left", "r2star")["n_voxels"] == 27
    table = roi_statistics({"r2star": np.full(labels.shape, 20.0)}, labels, VOX, erode=1,
                           connectivity=3)
    assert row(table, "red_nucleus", "left", "r2star")["n_voxels"] == 1


def test_thalamus_includes_pulvinar():
    labels = np.zeros((12, 12, 10), dtype=np.int16)
    labels[2:10, 2:10, 2:8] = idx("thalamus", "left")
    labels[2:10, 2:5, 2:8] = idx("pulvinar", "left")  # pulvinar overrides thalamus
    values = np.random.default_rng(1).normal(20, 3, labels.shape)
    table = roi_statistics({"r2star": values}, labels, VOX)
    thal = erode6((labels == idx("thalamus", "left")) | (labels == idx("pulvinar", "left")))
    pulv = erode6(labels == idx("pulvinar", "left"))
    r = row(table, "thalamus", "left", "r2star")
    assert r["n_voxels"] == thal.sum() == 6 * 6 * 4
    assert r["mean"] == pytest.approx(values[thal].mean())
    assert r["label_volume_mm3"] == pytest.approx(8 * 8 * 6 * 2.0)
    p = row(table, "pulvinar", "left", "r2star")
    assert p["n_voxels"] == pulv.sum() == 6 * 1 * 4
    assert p["mean"] == pytest.approx(values[pulv].mean())


def test_support_masks_and_zero_is_missing(scene):
    labels, maps = scene
    chi = maps["chi"].copy()
    support = np.ones(labels.shape, dtype=bool)
    support[:, :, :5] = False  # outside the background-removal mask
    chi[~support] = 0.0
    eroded = erode6(labels == idx("caudate", "left"))
    # explicit support mask
    table = roi_statistics({"r2star": maps["r2star"], "chi": chi}, labels, VOX,
                           masks={"chi": support})
    r = row(table, "caudate", "left", "chi")
    assert r["n_voxels"] == (eroded & support).sum() == 4 * 3 * 2
    assert r["mean"] == pytest.approx(chi[eroded & support].mean())
    assert r["volume_mm3"] == pytest.approx(r["n_voxels"] * 2.0)
    assert row(table, "caudate", "left", "r2star")["n_voxels"] == eroded.sum()
    # without masks, exact zeros are missing; NaN always is
    chi[4, 5, 5] = np.nan
    table = roi_statistics({"chi": chi}, labels, VOX)
    assert row(table, "caudate", "left", "chi")["n_voxels"] == (eroded & support).sum() - 1
    table = roi_statistics({"chi": chi}, labels, VOX, zero_is_missing=False)
    assert row(table, "caudate", "left", "chi")["n_voxels"] == eroded.sum() - 1


def test_vessel_exclusion_removes_planted_outlier(scene):
    labels, maps = scene
    chi = np.full(labels.shape, 0.05)
    chi += np.random.default_rng(3).normal(0, 0.005, labels.shape)
    r2 = maps["r2star"]
    chi[4, 5, 5] = 0.6  # a vein inside the eroded left caudate
    eroded = erode6(labels == idx("caudate", "left"))
    assert eroded[4, 5, 5]
    maps = {"r2star": r2, "chi": chi}
    plain = roi_statistics(maps, labels, VOX)
    clean = roi_statistics(maps, labels, VOX, exclude_vessels={"metric": "chi", "k": 3.0})
    keep = eroded.copy()
    keep[4, 5, 5] = False
    for metric in ("chi", "r2star"):  # the vessel voxel leaves every metric of the ROI
        r = row(clean, "caudate", "left", metric)
        assert r["n_voxels"] == keep.sum()
        assert r["n_excluded"] == 1
        assert r["mean"] == pytest.approx(maps[metric][keep].mean())
        assert row(plain, "caudate", "left", metric)["n_voxels"] == eroded.sum()
    b = row(clean, "caudate", "bilateral", "chi")
    assert b["n_excluded"] == 1
    assert row(clean, "caudate", "right", "chi")["n_excluded"] == 0
    # hand threshold: median + 3 * 1.4826 * MAD of the hemisphere ROI
    values = chi[eroded]
    med = np.median(values)
    thr = med + 3 * 1.4826 * np.median(np.abs(values - med))
    assert (values > thr).sum() == 1
    with pytest.raises(ValueError, match="exclude_vessels"):
        roi_statistics({"r2star": r2}, labels, VOX, exclude_vessels={"metric": "chi"})


def test_empty_roi_rows_are_kept(scene):
    labels, maps = scene
    labels = labels.copy()
    labels[1, 1, 1] = idx("red_nucleus", "right")  # one voxel: gone after erosion
    table = roi_statistics(maps, labels, VOX)
    for roi, hemi in (("red_nucleus", "right"), ("dentate_nucleus", "left"),
                      ("white_matter", "bilateral")):
        r = row(table, roi, hemi, "r2star")
        assert r["n_voxels"] == 0 and r["volume_mm3"] == 0
        assert np.isnan(r["mean"]) and np.isnan(r["median"]) and np.isnan(r["sd"])
    assert row(table, "red_nucleus", "right", "r2star")["label_volume_mm3"] == 2.0


def test_lesion_roi_and_table():
    rng = np.random.default_rng(4)
    shape = (20, 20, 10)
    labels = np.zeros(shape, dtype=np.int16)
    labels[:, :, :] = idx("white_matter", "left")
    lesions = np.zeros(shape, dtype=bool)
    lesions[2:6, 2:5, 2:4] = True  # 24 voxels
    lesions[12:14, 12:14, 6] = True  # 4 voxels
    r2 = rng.uniform(10, 30, shape)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[:3, 3] = [-10, -20, -5]
    table = roi_statistics({"r2star": r2}, labels, VOX, lesion_mask=lesions)
    r = row(table, "lesion", "bilateral", "r2star")
    assert r["n_voxels"] == 28  # not eroded
    assert r["mean"] == pytest.approx(r2[lesions].mean())
    assert set(table[table.roi == "lesion"].hemisphere) == {"bilateral"}
    wm = erode6(~lesions)  # lesion voxels leave white matter before erosion
    assert row(table, "white_matter", "left", "r2star")["n_voxels"] == wm.sum()

    lt = lesion_table({"r2star": r2}, lesions, VOX, affine=affine)
    assert tuple(lt.columns) == roistats.LESION_COLUMNS
    assert list(lt.lesion_id) == [1, 2]  # by decreasing size
    big = lt.iloc[0]
    assert big["n_voxels"] == 24 and big["lesion_volume_mm3"] == pytest.approx(48.0)
    assert big["mean"] == pytest.approx(r2[2:6, 2:5, 2:4].mean())
    assert big["sd"] == pytest.approx(r2[2:6, 2:5, 2:4].std(ddof=1))
    assert (big["centroid_i"], big["centroid_j"], big["centroid_k"]) == (3.5, 3.0, 2.5)
    assert (big["centroid_x"], big["centroid_y"], big["centroid_z"]) == (-6.5, -17.0, 0.0)
    small = lt.iloc[1]
    assert small["centroid_k"] == 6 and small["volume_mm3"] == pytest.approx(8.0)
    assert len(lesion_table({"r2star": r2}, lesions, VOX, min_voxels=5)) == 1
    assert lesion_table({"r2star": r2}, np.zeros(shape, bool), VOX).empty


def test_roi_mask_matches_table(scene):
    labels, maps = scene
    mask = roi_mask(labels, "caudate", "bilateral")
    expect = erode6(labels == idx("caudate", "left")) | erode6(labels == idx("caudate",
                                                                             "right"))
    assert (mask == expect).all()


def test_fortran_order_same_result(scene):
    labels, maps = scene
    a = roi_statistics(maps, labels, VOX)
    b = roi_statistics({m: np.asfortranarray(v) for m, v in maps.items()},
                       np.asfortranarray(labels), VOX)
    pd.testing.assert_frame_equal(a, b)


def test_argument_checks(scene):
    labels, maps = scene
    with pytest.raises(ValueError, match="maps"):
        roi_statistics({"r2star": maps["r2star"][:-1]}, labels, VOX)
    with pytest.raises(ValueError, match="maps"):
        roi_statistics({"qsm": maps["chi"]}, labels, VOX)
    with pytest.raises(ValueError, match="voxel_size"):
        roi_statistics(maps, labels, (1, 1))
    table = roi_statistics({"r2star": maps["r2star"], "chi": None}, labels, VOX)
    assert set(table.metric) == {"r2star"}


def test_data_dictionary_covers_columns():
    dd = data_dictionary()
    assert set(dd) == set(COLUMNS)
    assert all("Description" in v for v in dd.values())
    assert set(dd["hemisphere"]["Levels"]) == {"left", "right", "bilateral"}
    assert set(dd["metric"]["Levels"]) == {"r2star", "t2star", "lfs", "chi", "chi_wholebrain"}
    assert "1/s" in dd["metric"]["Levels"]["r2star"]
    assert "(s)" in dd["metric"]["Levels"]["t2star"]
    assert "ppm" in dd["metric"]["Levels"]["chi"] and "ppm" in dd["metric"]["Levels"]["lfs"]
    assert "pulvinar" in dd["roi"]["Levels"]["thalamus"]
    assert dd["volume_mm3"]["Units"] == "mm^3"
    assert set(lesion_data_dictionary()) == set(roistats.LESION_COLUMNS)
    assert "vessel" in data_dictionary(exclude_vessels={"metric": "chi", "k": 3})["roi"][
        "Description"].lower()


def test_registration_qc_columns_flag_a_misplaced_roi():
    """Issue 11: per-ROI registration check. A nucleus whose atlas label (and warped iron
    template) sits 4 voxels off the session's high-R2* nucleus is flagged low_similarity; one
    cut by the brain mask is flagged outside_mask; the well placed one is ok."""
    from bids_iron.anatomy_stage import roi_quality

    shape = (40, 40, 30)
    labels = np.zeros(shape, np.int16)
    r2 = np.full(shape, 20.0)
    rng = np.random.default_rng(0)
    boxes = {"globus_pallidus": (slice(8, 14), slice(10, 16), slice(10, 16)),
             "putamen": (slice(26, 32), slice(10, 16), slice(10, 16)),
             "caudate": (slice(8, 14), slice(26, 32), slice(10, 16))}
    template = np.full(shape, 20.0)
    for (roi, box), hemi in zip(boxes.items(), ("left", "right", "left")):
        r2[box] = 40.0
        labels[box] = idx(roi, hemi)
        template[box] = 40.0
    # the putamen label and its template moved by 4 voxels: a registration error
    moved = labels == idx("putamen", "right")
    labels[moved] = 0
    labels[np.roll(moved, 4, axis=1)] = idx("putamen", "right")
    template[boxes["putamen"]] = 20.0
    template[np.roll(moved, 4, axis=1)] = 40.0
    r2 += rng.normal(0, 1.0, shape)
    brain = np.ones(shape, bool)
    brain[:, 29:, :] = False  # cuts the caudate
    qc = roi_quality(labels, r2, template, brain, VOX)
    sim, frac, flag = qc[("globus_pallidus", "left")]
    assert sim > 0.9 and frac == 1.0 and flag == "ok"
    sim, frac, flag = qc[("putamen", "right")]
    assert sim < 0.5 and flag == "low_similarity", (sim, flag)
    sim, frac, flag = qc[("caudate", "left")]
    assert frac == pytest.approx(0.5) and flag == "outside_mask", (sim, frac, flag)
    maps = {"r2star": r2}
    table = roi_statistics(maps, labels, VOX, roi_quality=qc)
    assert list(table.columns) == list(COLUMNS) + list(roistats.QC_COLUMNS)
    assert row(table, "putamen", "right", "r2star").qc_flag == "low_similarity"
    assert row(table, "putamen", "bilateral", "r2star").qc_flag == "low_similarity"
    assert row(table, "globus_pallidus", "left", "r2star").qc_flag == "ok"
    assert row(table, "white_matter", "left", "r2star").qc_flag == "n/a"
    assert np.isnan(row(table, "white_matter", "left", "r2star").registration_similarity)
    d = data_dictionary(qc={"min_similarity": 0.5, "min_brain_fraction": 0.9, "margin_mm": 3})
    assert set(roistats.QC_COLUMNS) <= set(d) and "0.5" in d["qc_flag"]["Description"]
    assert "qc_flag" not in data_dictionary()
