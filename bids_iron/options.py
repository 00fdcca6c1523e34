"""Every option of ``bids-iron``, declared once.

Each option is a field of `Options` (participant level), `GroupOptions` (group level) or
`Selection` (which sessions, how much logging), declared with `option`: its default, help,
command-line flags, choices, section and whether it changes outputs. From these
declarations come

* the argument parser (`add_arguments`, used by `bids_iron.cli.build_parser`),
* ``Options.from_args`` (parsed arguments -> options, paths checked),
* the rerun digest (`Options.digest`: only the options that change outputs),
* the Boutiques descriptor (`bids_iron.boutiques`, from the parser) and
* the README's options section (`options_rst`; a test fails when README.rst and the code
  disagree: ``python -m bids_iron.options`` prints the section to paste).

The choices of the method options come from the method registry
(`bids_iron.maps.registry`), their defaults from each family's measured default.

Examples
--------
>>> from bids_iron.options import Options
>>> Options().qsm_method
'tfi_admm'
>>> "force" in Options.output_neutral()
True
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .errors import BidsIronError
from .maps import registry

#: Sections of ``--help`` (and of README.rst's options list), in order.
SECTIONS = {
    "selection": "selecting data",
    "physics": "physics",
    "phase": "phase: field map, local field shift (LFS), QSM, SWI",
    "anatomy": "anatomy: registration, atlas ROIs, lesions, ROI tables, report",
    "group": "group level",
    "running": "running",
}


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _field_strength(text):
    value = float(text)
    if not 0 < value < 20:
        raise argparse.ArgumentTypeError(f"must be a field strength in tesla (0-20), got {value}")
    return value


def option(default, help, *, section, flags=None, choices=None, outputs=True, type=None,
           metavar=None, nargs=None, action=None, exists=None, cli=True):
    """A dataclass field that declares one option.

    Parameters
    ----------
    default
        The default value (the only place it is written).
    help : str or callable
        ``--help`` text (argparse ``%`` escaping: write ``%%`` for a percent sign), or a
        zero-argument callable returning it (read when the parser is built).
    section : str
        Key of `SECTIONS`.
    flags : tuple of str, optional
        Command-line flags; default ``--<name-with-dashes>``.
    choices : tuple or callable, optional
        Allowed values, or a zero-argument callable returning them (e.g. a registry family).
    outputs : bool
        Whether the option changes the outputs (part of the rerun digest).
    type, metavar, nargs, action
        As in `argparse.ArgumentParser.add_argument`; ``action="store_false"`` with a
        ``--no-...`` flag declares a switch that is on by default.
    exists : {"file", "dir"}, optional
        A path option that must name an existing file or folder.
    cli : bool
        False for options set by the program, not by the user (e.g. threads per session).
    """
    return field(default=default, metadata=dict(
        help=help, section=section, flags=flags, choices=choices, outputs=outputs, type=type,
        metavar=metavar, nargs=nargs, action=action, exists=exists, cli=cli))


def _meta(f):
    return f.metadata


def _flags(f):
    return _meta(f)["flags"] or ("--" + f.name.replace("_", "-"),)


def _help(f):
    text = _meta(f)["help"]
    return text() if callable(text) else text


def _choices(f):
    choices = _meta(f)["choices"]
    return tuple(choices()) if callable(choices) else choices


def _methods_help(family, lead, tail=""):
    """``--help`` of a method option, read from the registry when the parser is built."""
    def text():
        items = ", ".join(f"{m.name} ({m.summary})" for m in registry.methods(family))
        return f"{lead}: {items}{tail}"
    return text


class _Declared:
    """What `Options`, `GroupOptions` and `Selection` share: construction from parsed
    arguments and the checks the declarations imply."""

    @classmethod
    def declared(cls):
        """The fields that are command-line options."""
        return [f for f in dataclasses.fields(cls) if _meta(f).get("cli", False)]

    @classmethod
    def from_args(cls, args):
        """Options from an `argparse.Namespace` of `bids_iron.cli.build_parser`; path
        options are checked (`BidsIronError` naming the path and the option)."""
        values = {}
        for f in cls.declared():
            value = getattr(args, f.name)
            if isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
        out = cls(**values)
        out.check()
        return out

    def check(self):
        """`BidsIronError` for a path option whose file or folder does not exist."""
        for f in self.declared():
            kind, value = _meta(f)["exists"], getattr(self, f.name)
            if kind is None or value is None:
                continue
            ok = Path(value).is_file() if kind == "file" else Path(value).is_dir()
            if not ok:
                what = "file" if kind == "file" else "folder"
                raise BidsIronError(f"{value}: {_flags(f)[0]} {what} not found")


@dataclass
class Selection(_Declared):
    """Which sessions to process and how much to log (both levels)."""

    participant_label: tuple | None = option(
        None, "participants to process (with or without 'sub-'); default: all",
        section="selection", flags=("--participant-label", "--participant_label"), nargs="+",
        metavar="LABEL")
    session_label: tuple | None = option(
        None, "sessions to process (with or without 'ses-'); default: all",
        section="selection", flags=("--session-label", "--session_label"), nargs="+",
        metavar="LABEL")
    verbose: bool = option(False, "more log output", section="running",
                           flags=("-v", "--verbose"), action="store_true", outputs=False)
    wait_for_lock: bool = option(
        False, "when another bids-iron run holds a selected session of OUTPUT_DIR (or, at "
               "the group level, any), wait for it to end instead of stopping at once",
        section="running", action="store_true", outputs=False)


@dataclass
class Options(_Declared):
    """Processing options of a participant-level run (declared once; see the module)."""

    # -- physics
    r2star_method: str = option(
        registry.default("r2star").name,
        _methods_help("r2star", "R2* estimator"), section="physics",
        choices=lambda: registry.names("r2star"))
    b0: float | None = option(
        None, "main field strength in T; overrides MagneticFieldStrength", section="physics",
        type=_field_strength, metavar="TESLA")
    # -- phase
    phase: bool = option(
        True, "skip the phase stages even when phase images exist", section="phase",
        flags=("--no-phase",), action="store_false")
    phase_range: tuple | None = option(
        None, "stored phase values that mean -pi and +pi (default: detected, e.g. -4096 4095 "
              "or radians)", section="phase", nargs=2, type=float, metavar=("LO", "HI"))
    invert_phase: str = option(
        "auto", "flip the phase sign; auto flips for Manufacturer GE so that paramagnetic "
                "tissue gives positive field", section="phase", choices=("auto", "yes", "no"))
    mask: Path | None = option(
        None, "brain mask on the MEGRE grid instead of the magnitude-based one",
        section="phase", type=Path, metavar="FILE", exists="file")
    brain_mask: str = option(
        "magnitude", "phase-stage brain mask: 'magnitude' strips scalp, fat, muscle and skull "
                     "of a whole-head scan (Dice 0.99 on the realistic head phantom); "
                     "'threshold' is the plain Otsu mask (keeps the scalp; for brain-only "
                     "crops); 'template' is the template's mask registered to the session",
        section="phase", choices=("magnitude", "threshold", "template"))
    refine_mask: bool = option(
        True, "drop mask voxels whose field fit is poor (standard error above median + 5 MAD: "
              "veins, sinus-adjacent dropout, low-signal borders) before background removal, "
              "as the QSM consensus recommends (chi NRMSE 128 -> 51 %% on the realistic head "
              "phantom)", section="phase",
        action=argparse.BooleanOptionalAction)
    unwrap_method: str = option(
        registry.default("unwrap").name, _methods_help("unwrap", "spatial phase unwrapping"),
        section="phase", choices=lambda: registry.names("unwrap"))
    background_method: str = option(
        registry.default("background").name,
        _methods_help("background", "background field removal", " (measured on the "
                      "realistic head in README.rst)"), section="phase",
        choices=lambda: registry.names("background"))
    qsm_method: str = option(
        registry.default("dipole").name, _methods_help("dipole", "dipole inversion"),
        section="phase", choices=lambda: registry.names("dipole"))
    qsm_alpha: str = option(
        "fixed", "TV weight of the dipole inversion: 'fixed' keeps the method's measured weight "
                 "(README.rst); 'lcurve' chooses it per session on the L-curve (Milovic 2021 "
                 "inflection rule; tv_admm and l1_tv; ~5x the inversion's time; the curve "
                 "goes to the sidecar); 'discrepancy' (tv_admm) gives back what TV takes by "
                 "Bregman steps until the data residual matches the field's noise from the "
                 "echo fit (discrepancy principle; the nuclei within 5 %% from a clean local "
                 "field, but it also fits background-removal errors: README.rst)",
        section="phase", choices=("fixed", "lcurve", "discrepancy"))
    chi_reference: str = option(
        "csf", "chi is reported relative to: csf (lateral ventricles of the atlas; without "
               "anatomy, CSF found by its low R2*), white_matter (atlas), mean (whole brain) "
               "or none", section="phase", choices=("csf", "white_matter", "mean", "none"))
    lfs_reference: str = option(
        "internal_capsule", "LFS is reported relative to the posterior limb of the internal "
                            "capsule (atlas; Hammond 2008) or the whole-brain mean",
        section="phase", choices=("internal_capsule", "mean"))
    swi: bool = option(False, "also write SWI and its minimum-intensity projection",
                       section="phase", action="store_true")
    # -- anatomy
    anatomy: bool = option(
        True, "maps only: no template registration, ROI table or atlas references",
        section="anatomy", flags=("--no-anatomy",), action="store_false")
    templateflow_home: Path | None = option(
        None, "a TemplateFlow home holding the template and atlases (default: "
              "$TEMPLATEFLOW_HOME); needed offline", section="anatomy", type=Path,
        metavar="DIR", outputs=False)
    atlas_template: str = option(
        "MNI152NLin2009cAsym", "TemplateFlow template that is registered to each session",
        section="anatomy", metavar="NAME")
    atlas_file: Path | None = option(
        None, "your own label map in --atlas-template space (with --atlas-labels)",
        section="anatomy", type=Path, metavar="FILE", exists="file")
    atlas_labels: Path | None = option(
        None, "index/name table of --atlas-file; names map onto the ROI vocabulary (e.g. "
              "left_caudate)", section="anatomy", type=Path, metavar="TSV", exists="file")
    use_t1w: bool = option(
        True, "register the template to the MEGRE magnitude even when a T1w exists",
        section="anatomy", flags=("--no-t1w",), action="store_false")
    registration_iron: bool = option(
        True, "register the template with the T1w (or magnitude) alone, without the session's "
              "R2* map as a second channel and the local refinement of the nigra, red "
              "nucleus, dentate, pallidum and pulvinar (ROIs then follow anatomy only, not "
              "iron contrast)", section="anatomy",
        flags=("--no-registration-iron",), action="store_false")
    lesion_masks: Path | None = option(
        None, "derivatives folder with sub-<l>[/ses-<s>]/anat/sub-<l>[_ses-<s>]"
              "_space-{FLAIR,T1w}_desc-lesion_mask.nii.gz per session", section="anatomy",
        type=Path, metavar="DIR", exists="dir")
    exclude_vessels: str | None = option(
        None, "drop voxels above median + K x MAD of this map inside each ROI",
        section="anatomy", choices=("chi", "r2star"))
    vessel_k: float = option(3.0, "outlier threshold of --exclude-vessels (robust SDs)",
                             section="anatomy", type=float, metavar="K")
    report: bool = option(True, "no HTML report", section="anatomy", flags=("--no-report",),
                          action="store_false", outputs=False)
    roi_dseg: Path | None = option(
        None, "your own label maps: a derivatives folder with sub-<l>[/ses-<s>]/anat/"
              "sub-<l>[_ses-<s>][_space-<MEGRE|T1w|FLAIR>]_dseg.nii.gz (+ _dseg.tsv)",
        section="anatomy", type=Path, metavar="DIR", exists="dir")
    roi_labels: Path | None = option(
        None, "one index/name table for every --roi-dseg map (instead of sidecars)",
        section="anatomy", type=Path, metavar="TSV", exists="file")
    freesurfer_dir: Path | None = option(
        None, "FreeSurfer subjects folder: mri/aseg.mgz gives caudate, putamen, pallidum, "
              "thalamus and lateral ventricles through the T1w", section="anatomy",
        type=Path, metavar="SUBJECTS_DIR", exists="dir")
    roi_source: str = option(
        "auto", "which ROIs fill the table: auto (user where given, atlas for the rest), "
                "atlas, user, or both (the source column tells them apart)",
        section="anatomy", choices=("auto", "atlas", "user", "both"))
    # -- running
    n_procs: int | None = option(
        None, "sessions processed in parallel, each with cores/N threads (default: one per "
              "core, at most one per 4 GB of available memory)", section="running",
        flags=("--n-procs", "--n_procs"), type=_positive_int, metavar="N", outputs=False)
    n_threads: int | None = option(None, "threads per session (cores / sessions at a time)",
                                   section="running", outputs=False, cli=False)
    work_dir: Path | None = option(
        None, "keep intermediate results (e.g. fit residuals) here", section="running",
        flags=("--work-dir", "-w"), type=Path, metavar="DIR", outputs=False)
    clean_work_dir: bool = option(
        False, "remove the work-dir intermediates of sessions that finished",
        section="running", flags=("--clean-workdir",), action="store_true", outputs=False)
    force: bool = option(False, "redo sessions that already finished with the same options",
                         section="running", action="store_true", outputs=False)

    @classmethod
    def output_neutral(cls):
        """Names of the options that do not change outputs (left out of the digest)."""
        return tuple(f.name for f in dataclasses.fields(cls) if not _meta(f)["outputs"])

    def digest(self):
        """Hash of the options that change outputs, and of the version."""
        from .bids.derivatives import options_digest

        keep = {k: v for k, v in dataclasses.asdict(self).items()
                if k not in self.output_neutral()}
        keep["version"] = __version__
        return options_digest(keep)

    def check(self):
        super().check()
        if (self.atlas_file is None) != (self.atlas_labels is None):
            raise BidsIronError("--atlas-file and --atlas-labels go together: give both")
        from .maps.dipole import DISCREPANCY_METHODS, LCURVE_METHODS

        for rule, allowed in (("lcurve", LCURVE_METHODS), ("discrepancy", DISCREPANCY_METHODS)):
            if self.qsm_alpha == rule and self.qsm_method not in allowed:
                raise BidsIronError(f"--qsm-alpha {rule} works with --qsm-method "
                                    f"{' or '.join(allowed)}, not {self.qsm_method}")


@dataclass
class GroupOptions(_Declared):
    """Options of the group level (declared once; see the module)."""

    group_column: str = option("group", "participants.tsv column with the group of each "
                                        "participant", section="group")
    control_label: str = option("HC", "value of --group-column that marks controls (age fit, "
                                      "reference)", section="group")
    age_column: str | None = option(
        None, "age column (sessions.tsv, else participants.tsv); default 'age' when present",
        section="group", metavar="COLUMN")
    clinical_columns: tuple = option(
        (), "clinical columns to correlate with, e.g. EDSS disease_duration; default: the "
            "numeric columns of participants.tsv/sessions.tsv described in their JSON or with a "
            "clinical name (EDSS, disease duration, lesion load, ...); 'none' for no "
            "correlations", section="group", nargs="+", metavar="COLUMN")
    covariates: tuple = option((), "covariates of the regressions metric ~ clinical + "
                                   "covariates", section="group", nargs="+", metavar="COLUMN")
    reference_age: float | None = option(
        None, "age the age-corrected values refer to (default: controls' mean)",
        section="group", type=float, metavar="YEARS")
    site_column: str | None = option(
        None, "participants.tsv/sessions.tsv column with the scanner site; default: 'site' when "
              "present, else the site read from the sidecars (InstitutionName, "
              "ManufacturersModelName, MagneticFieldStrength)", section="group",
        metavar="COLUMN")
    harmonize: str = option(
        "none", "remove site effects: combat (neuroCombat, empirical Bayes; age and group "
                "protected) adds the measure 'harmonized' to the tables", section="group",
        choices=("none", "combat"))
    figures: bool = option(True, "tables only, no plots", section="group",
                           flags=("--no-figures",), action="store_false")


#: The dataclasses whose fields are command-line options, in --help order of declaration.
DECLARED = (Selection, Options, GroupOptions)


def _fields_in(section):
    return [f for cls in DECLARED for f in cls.declared() if _meta(f)["section"] == section]


def add_arguments(parser):
    """Add every declared option to ``parser``, grouped by `SECTIONS`."""
    for key, title in SECTIONS.items():
        group = parser.add_argument_group(title)
        for f in _fields_in(key):
            meta = _meta(f)
            kwargs = {"dest": f.name, "help": _help(f)}
            if meta["action"] is not None:
                kwargs["action"] = meta["action"]
                if meta["action"] is argparse.BooleanOptionalAction:
                    kwargs["default"] = f.default
            else:
                kwargs["default"] = f.default
                for key_ in ("type", "metavar", "nargs"):
                    if meta[key_] is not None:
                        kwargs[key_] = meta[key_]
                if meta["choices"] is not None:
                    kwargs["choices"] = _choices(f)
            group.add_argument(*_flags(f), **kwargs)
    return parser


def _usage(f):
    meta = _meta(f)
    flags = ", ".join(_flags(f))
    if meta["action"] is argparse.BooleanOptionalAction:
        flag = _flags(f)[0]
        return f"{flag}, --no-{flag[2:]}"
    if meta["action"] is not None:
        return flags
    if meta["choices"] is not None:
        value = "{" + ",".join(_choices(f)) + "}"
    elif isinstance(meta["metavar"], tuple):
        value = " ".join(meta["metavar"])
    else:
        value = meta["metavar"] or f.name.upper()
    if meta["nargs"] == "+":
        value = f"{value} [{value} ...]"
    return f"{_flags(f)[0]} {value}"


def _default_text(f):
    meta, value = _meta(f), f.default
    if meta["action"] in ("store_true", "store_false"):
        return ""
    if meta["action"] is argparse.BooleanOptionalAction:
        return f" (default: {'on' if value else 'off'})"
    if value in (None, ()):
        return ""
    return f" (default: ``{value}``)"


def options_rst():
    """README.rst's list of every option, generated from the declarations."""
    lines = []
    for key, title in SECTIONS.items():
        fields = _fields_in(key)
        if not fields:
            continue
        lines += [f"*{title[0].upper() + title[1:]}*", ""]
        for f in fields:
            text = (_help(f).replace("%%", "%").replace("*", "\\*")
                    .replace("|", "\\|"))
            text = text[0].upper() + text[1:] + _default_text(f) + "."
            lines.append(f"``{_usage(f)}``")
            lines += textwrap.wrap(text, width=92, initial_indent="    ",
                                   subsequent_indent="    ", break_on_hyphens=False)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


#: Markers around the generated section in README.rst.
README_BEGIN = ".. begin-options (generated by python -m bids_iron.options; do not edit)"
README_END = ".. end-options"


def readme_block(readme_text):
    """The generated part of README.rst's text (between the markers), or None."""
    if README_BEGIN not in readme_text or README_END not in readme_text:
        return None
    return readme_text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip("\n") + "\n"


def main():
    sys.stdout.write(options_rst())
    return 0


if __name__ == "__main__":
    sys.exit(main())
