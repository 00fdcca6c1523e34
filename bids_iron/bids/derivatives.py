"""BIDS-Derivatives output: file names, JSON sidecars, atomic writes, completion records.

Every file is written to a temporary name in its final folder and renamed into place
(``os.replace`` is atomic on POSIX), so an interrupted run never leaves a truncated output.
A session counts as finished only when its completion record (written last) lists outputs
that all exist.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from .. import CODE_URL, __version__
from ..errors import BidsIronError

PIPELINE_NAME = "bids-iron"
_UMASK = os.umask(0o022)
os.umask(_UMASK)
DONE_RECORD = ".bids-iron-done.json"


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are for others too
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path, data):
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_nifti(path, array, affine, header=None, dtype=np.float32):
    """Write a NIfTI image atomically with the given dtype (float32 for maps)."""
    array = np.asarray(array)
    if array.dtype != dtype:
        array = array.astype(dtype)
    img = nib.Nifti1Image(array, affine)
    if header is not None:
        img.header.set_xyzt_units(*header.get_xyzt_units())
        img.header.set_qform(*header.get_qform(coded=True))
        img.header.set_sform(*header.get_sform(coded=True))
    if img.header.get_xyzt_units()[0] == "unknown":
        # the affine is in mm (BIDS); an input without units would otherwise pass its
        # "unknown" on (the BIDS validator's NIFTI_UNIT warning)
        img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(dtype)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def sidecar_path(path):
    """The JSON sidecar path of an image path (``x.nii.gz`` -> ``x.json``)."""
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def ensure_outside(output_dir, bids_dir):
    """Refuse an output folder inside the input dataset (bids-iron never writes there)."""
    out = Path(output_dir).resolve()
    src = Path(bids_dir).resolve()
    if out == src or src in out.parents:
        raise BidsIronError(f"{output_dir}: OUTPUT_DIR is inside BIDS_DIR {bids_dir}; bids-iron "
                            "never writes into the input dataset: choose a folder outside it")


def ensure_own_output(output_dir):
    """Refuse an OUTPUT_DIR that holds another pipeline's derivatives (its
    dataset_description.json names no bids-iron in GeneratedBy) or a raw dataset."""
    path = Path(output_dir) / "dataset_description.json"
    try:
        description = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise BidsIronError(f"{path}: unreadable ({exc}); OUTPUT_DIR must be empty or a "
                            "bids-iron output folder: fix or remove it") from None
    generated = description.get("GeneratedBy") or []
    names = [g.get("Name") for g in generated if isinstance(g, dict)]
    if PIPELINE_NAME not in names:
        owner = ", ".join(str(n) for n in names if n) or description.get("DatasetType", "raw")
        raise BidsIronError(f"{output_dir}: holds another dataset ({owner}, per its "
                            "dataset_description.json); choose an empty folder or a bids-iron "
                            "output folder as OUTPUT_DIR (e.g. derivatives/bids-iron)")


#: Outputs the BIDS specification has no names for, listed in the derivatives' .bidsignore
#: (the official validator then reports them as ignored, not as errors).
BIDSIGNORE = ("*.html", "**/figures", "logs", "group", "work", "*_roistats.tsv",
              "*_roistats.json", "*_morph.tsv", "*_morph.json", "*_xfm.nii.gz", "*_xfm.json",
              "*_xfm.h5", "*_xfm.mat")

DERIVATIVES_README = """# {name}

Written by bids-iron {version} ({url}): brain iron maps from multi-echo gradient echo
(MEGRE) scans.

Per session, in `sub-<label>[/ses-<label>]/anat/`, on the MEGRE grid:

- `*_R2starmap`, `*_T2starmap`, `*_S0map`: R2* (1/s), T2* (s) and S0 from the magnitude.
- `*_desc-brain_mask`: the mask the field was estimated in.
- `*_Chimap`: magnetic susceptibility (ppm, paramagnetic positive).

and in `fmap/` (BIDS names for a directly measured field map, "case 3"):

- `*_desc-total_fieldmap` (Hz): the total field (tissue + background).
- `*_desc-lfs_fieldmap` (ppm of B0): the local field shift (background removed).
- `*_magnitude`: the first-echo magnitude the two field maps belong to.
- `*_desc-iron_dseg` and `*_roistats.tsv`: the regions and their statistics.
- `anat/*_desc-volumes_morph.tsv` (sessions with a T1w): total, cortical, deep and cerebellar
  gray matter, white matter, CSF and intracranial volume, in mm^3 and as a fraction of it.

Every image has a JSON sidecar with its units, method, reference and parameters; the HTML
reports (`sub-<label>.html`, `group/`) show the maps, the checks and a methods paragraph.
"""


#: BIDS datatype folder per suffix (default ``anat``). Field maps go to ``fmap/`` with one
#: ``_magnitude`` beside them: BIDS names a directly measured field map ``fmap/*_fieldmap``
#: (units Hz, or ppm for the local field shift) and requires a magnitude with the same
#: entities; in ``anat/`` the official validator rejects the name. The qMRI appendix has no
#: suffix for a local field, so the LFS is a ``fieldmap`` told apart by ``desc-lfs``.
DATATYPES = {"fieldmap": "fmap", "magnitude": "fmap"}


class Derivatives:
    """The BIDS-Derivatives folder bids-iron writes (OUTPUT_DIR)."""

    def __init__(self, output_dir, bids_dir):
        self.root = Path(output_dir)
        self.bids_dir = Path(bids_dir)

    def bids_uri(self, path):
        """BIDS URI of an input file, relative to the raw dataset (``bids:raw:sub-01/...``)."""
        # the dataset path as given, not resolved: a git-annex/DataLad file is a symlink
        # into .git/annex/objects, which is not its name in the dataset
        for resolve in (os.path.abspath, os.path.realpath):
            try:
                rel = Path(resolve(path)).relative_to(resolve(self.bids_dir))
                return f"bids:raw:{rel.as_posix()}"
            except ValueError:
                continue
        return Path(path).resolve().as_uri()

    def write_dataset_description(self):
        """Create or refresh ``dataset_description.json`` (DatasetType derivative)."""
        src_desc = {}
        try:
            src_desc = json.loads((self.bids_dir / "dataset_description.json").read_text())
        except (OSError, ValueError):
            pass
        raw_uri = self.bids_dir.resolve().as_uri()
        description = {
            "Name": f"bids-iron derivatives of {src_desc.get('Name', self.bids_dir.name)}",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": PIPELINE_NAME, "Version": __version__, "CodeURL": CODE_URL}],
            "SourceDatasets": [{"URL": raw_uri, **({"DOI": src_desc["DatasetDOI"]}
                                                   if "DatasetDOI" in src_desc else {})}],
            "DatasetLinks": {"raw": raw_uri},
        }
        write_json(self.root / "dataset_description.json", description)
        self._write_bidsignore()
        readme = self.root / "README.md"
        if not readme.exists():
            readme.write_text(DERIVATIVES_README.format(name=description["Name"],
                                                        version=__version__, url=CODE_URL))

    def _write_bidsignore(self):
        """List what BIDS has no names for (reports, figures, logs, ROI tables, transforms,
        group outputs), keeping any line a user added."""
        path = self.root / ".bidsignore"
        lines = path.read_text().splitlines() if path.exists() else []
        missing = [p for p in BIDSIGNORE if p not in lines]
        if missing:
            with atomic_path(path) as tmp:
                Path(tmp).write_text("\n".join(lines + missing) + "\n")

    def session_dir(self, inputs):
        d = self.root / f"sub-{inputs.subject}"
        if inputs.session:
            d = d / f"ses-{inputs.session}"
        return d

    def path(self, inputs, suffix, desc=None, ext=".nii.gz", space=None, datatype=None):
        """Output path ``sub-<l>[_ses-<s>][_acq-][_run-][_space-][_desc-]_<suffix><ext>`` in
        the ``datatype`` folder (default: `DATATYPES` of the suffix, else ``anat``)."""
        datatype = datatype or DATATYPES.get(suffix, "anat")
        name = inputs.label
        if space:
            name += f"_space-{space}"
        if desc:
            name += f"_desc-{desc}"
        return self.session_dir(inputs) / datatype / f"{name}_{suffix}{ext}"

    def save_map(self, inputs, array, affine, suffix, sidecar, desc=None, header=None,
                 dtype=np.float32, space=None):
        """Write a map and its sidecar atomically; return the image path."""
        path = self.path(inputs, suffix, desc=desc, space=space)
        write_json(sidecar_path(path), sidecar)
        write_nifti(path, array, affine, header=header, dtype=dtype)
        return path

    # -- completion records -------------------------------------------------------------
    def done_record(self, inputs):
        return self.session_dir(inputs) / f"{DONE_RECORD[:-5]}_{inputs.label}.json"

    @staticmethod
    def _input_files(inputs):
        """The session's input images and their sidecars."""
        files = []
        for image in inputs.files:
            files.append(Path(image))
            side = sidecar_path(image)
            if side.exists():
                files.append(side)
        return files

    @staticmethod
    def _metadata_hash(inputs):
        """SHA-256 of the metadata pybids merged for the echoes (inherited sidecars too)."""
        meta = json.dumps([inputs.metadata, inputs.phase_metadata,
                           getattr(inputs, "imag_metadata", [])], sort_keys=True, default=str)
        return hashlib.sha256(meta.encode()).hexdigest()

    def _relative_input(self, path):
        return file_identity(path, self.bids_dir, content=False)["path"]

    def done_status(self, inputs, options_digest):
        """``(True, "")`` when the session finished with these options and these inputs and
        every output reads back with its recorded checksum; else ``(False, why)`` (``why``
        empty when the session never finished).

        An input counts as unchanged with the same size and modification time, or, when the
        time differs (a fresh clone, a copy), the same SHA-256; outputs are read back whole
        and compared with their recorded SHA-256.
        """
        record = self.done_record(inputs)
        if not record.exists():
            return False, ""
        try:
            data = json.loads(record.read_text())
            recorded_inputs, outputs = data["inputs"], data["outputs"]
            files = {f["path"]: f for f in recorded_inputs["files"]}
            outputs = [o for o in outputs if o["path"]]
        except (OSError, ValueError, KeyError, TypeError):
            return False, "its completion record is unreadable or from an older bids-iron"
        if data.get("options") != options_digest:
            return False, "the options changed"
        if self._metadata_hash(inputs) != recorded_inputs.get("metadata"):
            return False, "the input sidecars' metadata changed"
        now = {self._relative_input(p): p for p in self._input_files(inputs)}
        for rel in sorted(set(now) ^ set(files)):
            return False, f"the input files changed ({rel} {'new' if rel in now else 'gone'})"
        for rel, old in files.items():
            if not same_file(old, now[rel]):
                return False, f"the input {rel} changed"
        if not outputs:
            return False, "its completion record lists no outputs"
        for out in outputs:
            if not same_file(out, self.root / out["path"], read_back=True):
                return False, f"the output {out['path']} is missing or does not read back"
        return True, ""

    def is_done(self, inputs, options_digest):
        """True when `done_status` finds the session finished and intact."""
        return self.done_status(inputs, options_digest)[0]

    def mark_done(self, inputs, outputs, options_digest):
        """Write the completion record (last): options, inputs' identity, outputs' checksums."""
        write_json(self.done_record(inputs), {
            "version": __version__, "options": options_digest,
            "inputs": {"files": [file_identity(p, self.bids_dir)
                                 for p in self._input_files(inputs)],
                       "metadata": self._metadata_hash(inputs)},
            "outputs": [file_identity(p, self.root) for p in outputs],
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })

    def clear_done(self, inputs):
        """Forget that the session finished and drop temporaries a killed run left behind."""
        with contextlib.suppress(FileNotFoundError):
            self.done_record(inputs).unlink()
        self.remove_temporaries(inputs)

    def remove_temporaries(self, inputs):
        """Remove the session's temporary files (`atomic_path` names) in its folders."""
        session = self.session_dir(inputs)
        subject = self.root / f"sub-{inputs.subject}"
        for folder in (session, *(session / d for d in ("anat", "fmap")), subject / "figures"):
            for stale in folder.glob(f".{inputs.label}_*.tmp*"):
                if stale.name[len(inputs.label) + 2:].startswith(("acq-", "run-")):
                    continue  # another acquisition's (sub-01_ses-1_acq-x_... for sub-01_ses-1)
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()


def sha256_file(path, chunk=1 << 20):
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path, root, content=True):
    """``{"path", "size", "mtime_ns", "sha256"}`` of a file (``content=False``: the path
    only), ``path`` relative to ``root`` when inside it, without resolving symlinks (a
    git-annex file keeps its dataset path)."""
    path = Path(path)
    try:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        rel = os.path.abspath(path)
    if not content:
        return {"path": rel}
    st = path.stat()
    return {"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": sha256_file(path)}


def same_file(recorded, path, read_back=False):
    """Whether the file at ``path`` is still the ``recorded`` one (`file_identity`): same
    size, and same modification time or, when that differs (a fresh clone, a copy), the
    same SHA-256. ``read_back``: always compare the SHA-256 (the whole file is read)."""
    try:
        st = Path(path).stat()
    except OSError:
        return False
    if st.st_size != recorded.get("size"):
        return False
    if st.st_mtime_ns == recorded.get("mtime_ns") and not read_back:
        return True
    try:
        return sha256_file(path) == recorded.get("sha256")
    except OSError:
        return False


def options_digest(options: dict) -> str:
    """A short stable hash of the processing options (to tell if a rerun must redo work)."""
    text = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
