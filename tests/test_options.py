"""Options are declared once: parser, Options, digest, README and the method registry agree."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bids_iron import options as O
from bids_iron.cli import build_parser
from bids_iron.errors import BidsIronError
from bids_iron.maps import registry
from bids_iron.report import methods

README = Path(__file__).resolve().parents[1] / "README.rst"


def _parse(*extra):
    return build_parser().parse_args(["bids", "out", "participant", *extra])


def test_readme_lists_every_option_as_declared():
    block = O.readme_block(README.read_text())
    assert block is not None, "README.rst lacks the generated options section"
    assert block == O.options_rst(), (
        "README.rst's options differ from bids_iron/options.py: paste the output of "
        "python -m bids_iron.options between the begin-options/end-options markers")
    for f in O.Options.declared():
        assert O._flags(f)[0] in block


def test_parser_defaults_are_the_declared_defaults():
    args = _parse()
    assert O.Options.from_args(args) == O.Options()
    assert O.GroupOptions.from_args(args) == O.GroupOptions()
    assert O.Selection.from_args(args) == O.Selection()
    flags = {s for a in build_parser()._actions for s in a.option_strings}
    for cls in O.DECLARED:
        for f in cls.declared():
            assert set(O._flags(f)) <= flags, f.name


def test_every_flag_reaches_its_field(tmp_path):
    mask = tmp_path / "mask.nii.gz"
    mask.write_bytes(b"x")
    args = _parse("--r2star-method", "arlo", "--b0", "7", "--no-phase", "--phase-range", "0",
                  "4095", "--invert-phase", "yes", "--mask", str(mask), "--brain-mask",
                  "threshold", "--no-refine-mask", "--unwrap-method", "laplacian",
                  "--background-method", "lbv", "--qsm-method", "medi", "--chi-reference",
                  "white_matter", "--lfs-reference", "mean", "--swi", "--no-anatomy",
                  "--no-t1w", "--exclude-vessels", "chi", "--vessel-k", "2.5", "--no-report",
                  "--roi-source", "both", "--n-procs", "3", "--clean-workdir", "--force",
                  "--participant-label", "01", "02", "-v")
    opts = O.Options.from_args(args)
    assert opts == O.Options(
        r2star_method="arlo", b0=7.0, phase=False, phase_range=(0.0, 4095.0),
        invert_phase="yes", mask=mask, brain_mask="threshold", refine_mask=False,
        unwrap_method="laplacian", background_method="lbv", qsm_method="medi",
        chi_reference="white_matter", lfs_reference="mean", swi=True, anatomy=False,
        use_t1w=False, exclude_vessels="chi", vessel_k=2.5, report=False, roi_source="both",
        n_procs=3, clean_work_dir=True, force=True)
    assert O.Selection.from_args(args) == O.Selection(participant_label=("01", "02"),
                                                      verbose=True)
    group = O.GroupOptions.from_args(build_parser().parse_args(
        ["b", "o", "group", "--clinical-columns", "EDSS", "--no-figures", "--reference-age",
         "40"]))
    assert group == O.GroupOptions(clinical_columns=("EDSS",), figures=False,
                                   reference_age=40.0)


def test_digest_follows_the_outputs_flag():
    base = O.Options().digest()
    for f in dataclasses.fields(O.Options):
        changed = {"force": True, "report": False, "n_procs": 4, "n_threads": 2,
                   "work_dir": Path("/w"), "clean_work_dir": True,
                   "templateflow_home": Path("/t")}.get(f.name)
        if changed is not None:
            assert f.metadata["outputs"] is False, f.name
            assert O.Options(**{f.name: changed}).digest() == base, f.name
    for name, value in (("qsm_method", "tkd"), ("chi_reference", "mean"), ("vessel_k", 2.0),
                        ("refine_mask", False), ("brain_mask", "threshold")):
        assert O.Options(**{name: value}).digest() != base, name


@pytest.mark.parametrize("flag, kind", [("--mask", "file"), ("--atlas-labels", "file"),
                                        ("--roi-dseg", "folder"), ("--lesion-masks", "folder")])
def test_missing_paths_named_with_their_option(tmp_path, flag, kind):
    missing = tmp_path / "nothere"
    atlas = tmp_path / "atlas.nii.gz"
    atlas.write_bytes(b"x")
    extra = ["--atlas-file", str(atlas)] if flag == "--atlas-labels" else []
    with pytest.raises(BidsIronError) as err:
        O.Options.from_args(_parse(flag, str(missing), *extra))
    assert str(err.value) == f"{missing}: {flag} {kind} not found"


def test_atlas_file_needs_labels(tmp_path):
    atlas = tmp_path / "atlas.nii.gz"
    atlas.write_bytes(b"x")
    with pytest.raises(BidsIronError, match="--atlas-file and --atlas-labels go together"):
        O.Options.from_args(_parse("--atlas-file", str(atlas)))


def test_a_registered_method_is_a_choice_everywhere():
    """Adding a method is one function and one record: CLI choices, --help, sidecar words."""
    def invert_dipole_zero(local_field_ppm, mask, voxel_size, b0_dir, **_):
        from bids_iron.maps.dipole import invert_dipole_tkd

        return invert_dipole_tkd(np.zeros_like(local_field_ppm), mask, voxel_size, b0_dir)

    record = registry.Method("dipole", "zero", invert_dipole_zero, "returns zero",
                             "Zero susceptibility", "Nobody 2026")
    registry.register(record)
    try:
        args = _parse("--qsm-method", "zero")
        assert O.Options.from_args(args).qsm_method == "zero"
        assert "zero (returns zero)" in build_parser().format_help().replace("\n", " ") \
            or "zero (returns" in build_parser().format_help()
        assert registry.texts("dipole")["zero"] == ("Zero susceptibility", "Nobody 2026")
        from bids_iron.maps.dipole import invert_dipole

        m = np.zeros((8, 8, 8), bool)
        m[2:6, 2:6, 2:6] = True
        assert invert_dipole(np.ones(m.shape), m, (1, 1, 1), method="zero").chi.max() == 0
    finally:
        registry._REGISTRY["dipole"].pop("zero")
    with pytest.raises(SystemExit):
        _parse("--qsm-method", "zero")


def test_registry_feeds_the_sidecar_words():
    for family, table in (("r2star", methods.R2STAR), ("unwrap", methods.UNWRAP),
                          ("background", methods.BACKGROUND), ("dipole", methods.DIPOLE)):
        assert tuple(table) == registry.names(family)
        assert registry.default(family).name in table
    assert registry.get("background", "pdf").needs == ("b0_dir",)
    with pytest.raises(ValueError, match="needs 'magnitude'"):
        registry.extra_inputs(registry.get("dipole", "medi"), {})
    calls = []
    out = registry.extra_inputs(registry.get("dipole", "medi"),
                                {"magnitude": lambda: calls.append(1) or 5, "b0_dir": (0, 0, 1)})
    assert out == {"magnitude": 5} and calls == [1]
