"""Find every session's ``roistats.tsv`` and join it with ``participants.tsv``/``sessions.tsv``.

File input only; the statistics live in the other modules of `bids_iron.group` and take the
long table this module returns.

Age per session (years)
-----------------------
1. the age column (``--age-column``, default ``age``) of the subject's ``sessions.tsv``;
2. else the same column of ``participants.tsv``, taken as the age at the participant's first
   session (earliest ``acq_time`` in ``sessions.tsv``), plus the time from that session to this
   one (``acq_time`` difference / 365.25 days) when both dates are known;
3. else the participants.tsv age unchanged (same for every session), or n/a.

The column ``age_source`` says which rule gave each value.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

LOG = logging.getLogger("bids_iron.group")

#: Columns every roistats.tsv must have.
REQUIRED_ROISTATS = ("roi", "hemisphere", "metric", "mean")
#: Optional roistats columns carried into the cohort table.
OPTIONAL_ROISTATS = ("median", "sd", "n_voxels", "volume_mm3", "source", "label_volume_mm3")
#: Columns that identify one analysis unit (one ROI value per session).
UNIT_KEYS = ["roi", "hemisphere", "metric", "source"]
#: Column names the cohort table uses itself (clinical columns/covariates may not reuse them).
RESERVED = {"participant_id", "session_id", "roi", "hemisphere", "metric", "source", "mean",
            "median", "sd", "n_voxels", "volume_mm3", "group", "age_source", "acq_time",
            "session_order", "n_sessions", "is_baseline", "years_from_baseline",
            "mean_agecorrected", "roistats_file", "missing_sessions", "site_source",
            "mean_harmonized", "roi_volume_mm3"}

_NA = ["n/a", "N/A", ""]


def read_tsv(path):
    """Read a BIDS TSV (``n/a`` is missing; everything else kept as written)."""
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=_NA)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read as a tab-separated table ({exc}); "
                         "fix or remove the file") from None


def _numeric(series, path, column, fix):
    """Convert a column to float; an InputError names the file, column and bad values."""
    values = pd.to_numeric(series, errors="coerce")
    bad = series[values.isna() & series.notna()]
    if len(bad):
        shown = ", ".join(repr(v) for v in sorted(set(bad.astype(str)))[:3])
        raise InputError(f"{path}: column '{column}' has non-numeric values ({shown}); {fix}")
    return values.astype(float)


#: Column names taken as clinical without a JSON description (lower case, letters and digits
#: only: ``disease_duration``, ``Disease Duration`` and ``diseaseduration`` all match).
CLINICAL_NAMES = ("edss", "msss", "armss", "diseaseduration", "duration", "lesionload",
                  "lesionvolume", "lesioncount", "t2lesionvolume", "t1lesionvolume",
                  "enhancinglesions", "gdlesions", "relapses", "sdmt", "pasat", "t25fw",
                  "nhpt", "9hpt", "mmse", "moca", "updrs", "hoehnyahr", "cdr")


def read_json(path):
    """A JSON file as a dict; InputError naming the file when it cannot be read."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as JSON ({exc}); fix or remove the file") \
            from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: not a JSON object; write {{\"column\": {{...}}}}")
    return value


def find_clinical_columns(bids_dir, participants, sessions, exclude=()):
    """Numeric columns of participants.tsv / sessions.tsv that look clinical.

    A column counts when every value given is a number (at least 3 values, not all equal)
    and it is described in participants.json / sessions.json (the dataset's top level or the
    subject's ``sub-<label>_sessions.json``) or its name is a known clinical score
    (`CLINICAL_NAMES`). ``exclude``: columns used otherwise (group, age, site, covariates).

    Returns
    -------
    list of (column, file, reason) in table order, participants.tsv first.
    """
    bids_dir = Path(bids_dir)
    described = {"participants.tsv": set(), "sessions.tsv": set()}
    if (bids_dir / "participants.json").exists():
        described["participants.tsv"] |= set(read_json(bids_dir / "participants.json"))
    for path in [bids_dir / "sessions.json"] + sorted(bids_dir.glob("sub-*/sub-*_sessions.json")):
        if path.exists():
            described["sessions.tsv"] |= set(read_json(path))
    skip = set(exclude) | RESERVED | {"participant_id", "session_id", "acq_time"}
    found, seen = [], set()
    for name, table in (("participants.tsv", participants), ("sessions.tsv", sessions)):
        for column in table.columns:
            if column in skip or column in seen:
                continue
            values = table[column].dropna()
            numbers = pd.to_numeric(values, errors="coerce")
            if len(values) < 3 or numbers.isna().any() or numbers.nunique() < 2:
                continue
            key = re.sub(r"[^a-z0-9]", "", str(column).lower())
            if column in described[name]:
                reason = f"described in {name.replace('.tsv', '.json')}"
            elif key in CLINICAL_NAMES:
                reason = "clinical name"
            else:
                continue
            found.append((column, name, reason))
            seen.add(column)
    return found


#: Lesion-load columns joined per session (from the participant level's lesion outputs).
LESION_LOAD = ("lesion_volume_mm3", "lesion_volume_log", "lesion_count")


def read_lesion_load(output_dir, visits):
    """Per-session lesion load from the participant level's lesion outputs.

    For each session with a lesion mask on the MEGRE grid (``*_desc-lesion_mask.nii[.gz]``,
    written with ``--lesion-masks``): ``lesion_volume_mm3`` (sum of the lesions'
    ``lesion_volume_mm3`` in ``*_desc-lesions_roistats.tsv``; 0 without that table, i.e. an
    empty mask), ``lesion_volume_log`` = ln(1 + lesion_volume_mm3) (the log-transformed T2
    lesion volume of the MS studies; +1 keeps lesion-free sessions), ``lesion_count`` and
    ``lesion_<metric>``, the voxel-weighted mean of the metric over every lesion. Sessions
    without a lesion mask are absent (n/a, not 0).

    Returns
    -------
    DataFrame: participant_id, session_id, `LESION_LOAD`, lesion_<metric> columns.
    """
    root = Path(output_dir)
    rows = []
    for sub, ses in zip(visits["participant_id"], visits["session_id"]):
        anat = root / sub / ("" if ses == "n/a" else ses) / "anat"
        if not (list(anat.glob("*_desc-lesion_mask.nii.gz")) +
                list(anat.glob("*_desc-lesion_mask.nii"))):
            continue
        row = {"participant_id": sub, "session_id": ses, "lesion_volume_mm3": 0.0,
               "lesion_count": 0}
        for path in sorted(anat.glob("*_desc-lesions_roistats.tsv")):
            table = read_tsv(path)
            for column in ("lesion_id", "lesion_volume_mm3", "metric", "mean", "n_voxels"):
                if column not in table.columns:
                    raise InputError(f"{path}: column '{column}' is missing; rerun the "
                                     "participant level for this session")
            for column in ("lesion_volume_mm3", "mean", "n_voxels"):
                table[column] = _numeric(table[column], path, column,
                                         "rerun the participant level for this session")
            per = table.drop_duplicates("lesion_id")
            row["lesion_volume_mm3"] += float(per["lesion_volume_mm3"].sum())
            row["lesion_count"] += int(len(per))
            for metric, chunk in table[table.metric != "none"].groupby("metric"):
                ok = chunk["mean"].notna() & (chunk["n_voxels"] > 0)
                if ok.any():
                    w = chunk.loc[ok, "n_voxels"]
                    row[f"lesion_{metric}"] = float((chunk.loc[ok, "mean"] * w).sum() / w.sum())
        row["lesion_volume_log"] = float(np.log1p(row["lesion_volume_mm3"]))
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["participant_id", "session_id",
                                                         *LESION_LOAD])


#: Brain-volume columns offered to the correlations and the stepwise selection when the
#: clinical columns are found automatically (head-size normalised, as SIENAX reports them).
VOLUME_CANDIDATES = ("gm_fraction_icv", "cortical_gm_fraction_icv", "wm_fraction_icv")


def read_brain_volumes(output_dir, visits):
    """Per-session brain volumes from the participant level's volumes tables.

    For each session with ``anat/*_desc-volumes_morph.tsv`` (written when the session has a
    T1w, `bids_iron.volumes_stage`): ``<structure>_volume_mm3`` and
    ``<structure>_fraction_icv`` of every structure of
    `bids_iron.anatomy.volumes.STRUCTURES` (``icv_volume_mm3`` without a fraction). Sessions
    without the table are absent (n/a in the group table).

    Returns
    -------
    DataFrame: participant_id, session_id and the volume columns.
    """
    from ..anatomy.volumes import read_volumes

    root = Path(output_dir)
    rows = []
    for sub, ses in zip(visits["participant_id"], visits["session_id"]):
        anat = root / sub / ("" if ses == "n/a" else ses) / "anat"
        for path in sorted(anat.glob("*_desc-volumes_morph.tsv"))[:1]:
            rows.append({"participant_id": sub, "session_id": ses, **read_volumes(path)})
    return pd.DataFrame(rows, columns=None if rows else ["participant_id", "session_id"])


def _join_sessions(data, table):
    """Add the columns of a per-session ``table`` (participant_id, session_id, numbers) to
    the long ``data`` in place (n/a for sessions it lacks); returns the columns added."""
    if not len(table):
        return []
    merged = data[["participant_id", "session_id"]].merge(
        table, how="left", on=["participant_id", "session_id"]).set_axis(data.index)
    columns = [c for c in table.columns if c not in ("participant_id", "session_id")]
    for column in columns:
        data[column] = merged[column].astype(float)
    return columns


#: Sidecar fields that name a scanner site, in the order they enter the site label.
SITE_FIELDS = ("InstitutionName", "Manufacturer", "ManufacturersModelName",
               "MagneticFieldStrength")


def sidecar_sites(bids_dir, visits, log=None):
    """{(participant_id, session_id): site label} from the sessions' GRE sidecars.

    The label joins `SITE_FIELDS` of the first ``*_MEGRE.json`` / ``*_T2starw.json`` of the
    session's anat folder (e.g. ``Hospital A / Siemens Prisma / 3 T``); sessions without
    such a sidecar or without any of the fields get no site. An unreadable sidecar is a
    warning (that session gets no site), not an error.
    """
    bids_dir = Path(bids_dir)
    log = log or LOG
    out = {}
    for sub, ses in zip(visits["participant_id"], visits["session_id"]):
        anat = bids_dir / sub / ("" if ses == "n/a" else ses) / "anat"
        paths = sorted(anat.glob("*_MEGRE.json")) + sorted(anat.glob("*_T2starw.json"))
        for path in paths:
            try:
                meta = read_json(path)
            except InputError as exc:
                log.warning("%s; no site from it", exc)
                continue
            parts = [str(meta[k]) + (" T" if k == "MagneticFieldStrength" else "")
                     for k in SITE_FIELDS if meta.get(k) not in (None, "")]
            if parts:
                out[(sub, ses)] = " / ".join(parts)
                break
    return out


def _natural_key(label):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(label))]


def find_roistats(output_dir):
    """All ``sub-*/[ses-*/]anat/*_roistats.tsv`` under OUTPUT_DIR, sorted (the per-lesion
    tables ``*_desc-lesions_roistats.tsv`` are read by `read_lesion_load`)."""
    root = Path(output_dir)
    paths = list(root.glob("sub-*/anat/*_roistats.tsv")) + \
        list(root.glob("sub-*/ses-*/anat/*_roistats.tsv"))
    return sorted(p for p in paths if "_desc-lesions_" not in p.name)


def read_roistats(paths):
    """Concatenate roistats tables, adding participant_id, session_id and roistats_file."""
    frames = []
    for path in paths:
        table = read_tsv(path)
        for column in REQUIRED_ROISTATS:
            if column not in table.columns:
                raise InputError(f"{path}: column '{column}' is missing; rerun the participant "
                                 "level for this session (roistats.tsv needs roi, hemisphere, "
                                 "metric, mean)")
        up = path.parent.parent
        sub, ses = (up.parent.name, up.name) if up.name.startswith("ses-") else (up.name, None)
        table = table[[c for c in REQUIRED_ROISTATS + OPTIONAL_ROISTATS if c in table.columns]]
        table.insert(0, "session_id", ses or "n/a")
        table.insert(0, "participant_id", sub)
        table["roistats_file"] = str(path)
        frames.append(table)
    raw = pd.concat(frames, ignore_index=True)
    data = raw[["participant_id", "session_id"]].copy()
    for column in REQUIRED_ROISTATS[:3]:
        data[column] = raw[column].astype(str).str.strip()
    data["source"] = raw["source"].fillna("n/a").astype(str) if "source" in raw else "n/a"
    for column in ("mean", "median", "sd", "n_voxels", "volume_mm3", "label_volume_mm3"):
        if column not in raw:
            data[column] = np.nan
            continue
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = values.isna() & raw[column].notna()
        if bad.any():
            first = raw[bad].iloc[0]
            raise InputError(f"{first.roistats_file}: column '{column}' has non-numeric value "
                             f"{first[column]!r}; rerun the participant level for this session")
        data[column] = values.astype(float)
    data = data.rename(columns={"label_volume_mm3": "roi_volume_mm3"})
    data["roistats_file"] = raw["roistats_file"]
    dup = data.duplicated(["participant_id", "session_id"] + UNIT_KEYS, keep=False)
    if dup.any():
        row = data[dup].iloc[0]
        files = sorted(set(data.loc[dup & (data.participant_id == row.participant_id)
                                    & (data.session_id == row.session_id), "roistats_file"]))
        raise InputError(f"{files[0]}: ROI '{row.roi}' {row.hemisphere} {row.metric} appears "
                         f"more than once for {row.participant_id} {row.session_id} "
                         f"(files: {', '.join(Path(f).name for f in files)}); keep one "
                         "roistats.tsv per session")
    return data


def _entity_ids(table, column, prefix, path):
    """``table`` with ``column`` present and its values as ``<prefix><label>`` strings."""
    if column not in table.columns:
        raise InputError(f"{path}: column '{column}' is missing; add it (values {prefix}<label>)")
    table[column] = table[column].astype(str).str.strip()
    table.loc[~table[column].str.startswith(prefix), column] = prefix + table[column]
    return table


def _read_participants(bids_dir, group_column):
    path = Path(bids_dir) / "participants.tsv"
    if not path.exists():
        raise InputError(f"{path}: file not found; the group level needs participants.tsv with "
                         f"columns participant_id and '{group_column}'")
    table = _entity_ids(read_tsv(path), "participant_id", "sub-", path)
    if table.participant_id.duplicated().any():
        dup = table.participant_id[table.participant_id.duplicated()].iloc[0]
        raise InputError(f"{path}: column 'participant_id' lists {dup} more than once; "
                         "keep one row per participant")
    if group_column not in table.columns:
        raise InputError(f"{path}: column '{group_column}' (--group-column) is missing; add it "
                         f"or name the group column with --group-column (columns: "
                         f"{', '.join(table.columns)})")
    return path, table


def _read_sessions(bids_dir, participants):
    """All subjects' sessions.tsv stacked (participant_id, session_id, ...) and their paths."""
    frames, paths = [], {}
    for sub in participants:
        path = Path(bids_dir) / sub / f"{sub}_sessions.tsv"
        if not path.exists():
            continue
        table = _entity_ids(read_tsv(path), "session_id", "ses-", path)
        table.insert(0, "participant_id", sub)
        if "acq_time" in table.columns:
            times = pd.to_datetime(table["acq_time"], errors="coerce", format="ISO8601")
            bad = table["acq_time"][times.isna() & table["acq_time"].notna()]
            if len(bad):
                raise InputError(f"{path}: column 'acq_time' has values that are not ISO 8601 "
                                 f"dates ({bad.iloc[0]!r}); write YYYY-MM-DDThh:mm:ss")
            table["acq_time"] = times
        paths[sub] = path
        frames.append(table)
    if not frames:
        return pd.DataFrame(columns=["participant_id", "session_id"]), paths
    return pd.concat(frames, ignore_index=True), paths


def _lookup(column, sessions, participants, data, ppath, spaths, required, numeric, what):
    """Per row of ``data``: sessions.tsv value if present, else participants.tsv value."""
    in_ses = column in sessions.columns
    in_par = column in participants.columns
    if not (in_ses or in_par):
        if required:
            raise InputError(f"{ppath}: column '{column}' ({what}) is missing from participants.tsv "
                             "and every sub-*/sub-*_sessions.tsv; add it or correct the option")
        return None
    result = pd.Series(np.nan if numeric else None, index=data.index,
                       dtype=float if numeric else object)
    if in_ses:
        values = sessions[["participant_id", "session_id", column]]
        if numeric:
            for sub, chunk in values.groupby("participant_id"):
                _numeric(chunk[column], spaths.get(sub, "sessions.tsv"), column,
                         f"write numbers ({what}) or n/a")
        merged = data[["participant_id", "session_id"]].merge(
            values, how="left", on=["participant_id", "session_id"])
        result = merged[column].set_axis(data.index)
        if numeric:
            result = pd.to_numeric(result, errors="coerce").astype(float)
    if in_par:
        pvals = participants.set_index("participant_id")[column]
        if numeric:
            pvals = _numeric(pvals, ppath, column, f"write numbers ({what}) or n/a")
        fill = data["participant_id"].map(pvals)
        result = result.where(result.notna(), fill)
    return result


def collect_cohort(bids_dir, output_dir, group_column="group", age_column=None,
                   clinical_columns=None, covariates=(), log=None, site_column=None):
    """Build the cohort's long table: every session's ROI values joined with demographics.

    Parameters
    ----------
    bids_dir, output_dir : path-like
        The raw BIDS dataset (participants.tsv, sub-*/sub-*_sessions.tsv) and the bids-iron
        derivatives (sub-*/[ses-*/]anat/*_roistats.tsv).
    group_column : str
        participants.tsv column with the group label.
    age_column : str or None
        Age column (years) in sessions.tsv or participants.tsv; None means ``age`` if present.
    clinical_columns, covariates : sequence of str
        Columns of sessions.tsv (per session) or participants.tsv (per participant).
        Clinical columns must be numeric; covariates may be categorical.

    Returns
    -------
    data : DataFrame
        One row per session x roi x hemisphere x metric x source.
    info : dict
        ``age_available`` (bool), ``files`` (inputs read), ``clinical_columns``, ``covariates``.

    Raises
    ------
    InputError
        No roistats.tsv, missing participants.tsv or a missing/non-numeric column.
    """
    log = log or LOG
    paths = find_roistats(output_dir)
    if not paths:
        if any(Path(output_dir).glob("sub-*/**/anat/*_R2starmap.nii*")):
            raise InputError(
                f"{output_dir}: the participant level made maps but no ROI tables "
                "(sub-*/[ses-*/]anat/*_roistats.tsv): they need the anatomy stage (template "
                "registration; it was off with --no-anatomy) or your own ROIs (--roi-dseg, "
                "--freesurfer-dir); rerun the participant level with one of them")
        raise InputError(f"{output_dir}: no sub-*/[ses-*/]anat/*_roistats.tsv found; run the "
                         "participant level first (bids-iron BIDS_DIR OUTPUT_DIR participant)")
    for name in list(clinical_columns or ()) + [c for c in covariates if c != group_column]:
        if name in RESERVED:
            raise InputError(f"--clinical-columns/--covariates: '{name}' is a column name the "
                             "group tables use themselves; rename that column in "
                             "participants.tsv/sessions.tsv")
    data = read_roistats(paths)
    ppath, participants = _read_participants(bids_dir, group_column)
    missing = sorted(set(data.participant_id) - set(participants.participant_id))
    if missing:
        raise InputError(f"{ppath}: no row for {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} (participants with roistats.tsv "
                         "in OUTPUT_DIR); add their rows to participants.tsv")
    sessions, spaths = _read_sessions(bids_dir, sorted(set(data.participant_id)))

    group = data.participant_id.map(participants.set_index("participant_id")[group_column])
    data["group"] = group.astype(object).where(group.notna(), None)
    nogroup = sorted(set(data.participant_id[data.group.isna()]))
    if nogroup:
        log.warning("%s: column '%s' is n/a for %s; they are left out of group comparisons",
                    ppath, group_column, ", ".join(nogroup[:5]))

    # session order and dates: every session listed in sessions.tsv or present in OUTPUT_DIR
    # counts; the baseline is the first of them, with or without an ROI table (issue 15)
    present = data[["participant_id", "session_id"]].drop_duplicates()
    listed = sessions[sessions.participant_id.isin(set(present.participant_id))]
    listed = listed[[c for c in ("participant_id", "session_id", "acq_time")
                     if c in listed.columns]]
    visits = present.merge(listed, how="outer", on=["participant_id", "session_id"],
                           indicator=True)
    if "acq_time" not in visits.columns:
        visits["acq_time"] = pd.Series(pd.NaT, index=visits.index, dtype="datetime64[ns]")
    visits["acq_time"] = pd.to_datetime(visits["acq_time"])
    visits["has_roistats"] = visits.pop("_merge") != "right_only"
    ordered = []
    for sub, chunk in visits.groupby("participant_id", sort=False):
        if chunk.acq_time.notna().all():
            chunk = chunk.sort_values(["acq_time", "session_id"])
        else:
            labels = list(chunk.session_id)
            chunk = chunk.iloc[sorted(range(len(labels)), key=lambda i: _natural_key(labels[i]))]
        chunk = chunk.assign(session_order=np.arange(1, len(chunk) + 1),
                             n_sessions=int(chunk.has_roistats.sum()),
                             baseline_time=chunk.acq_time.iloc[0])
        ordered.append(chunk)
    visits = pd.concat(ordered, ignore_index=True)
    missing = visits[~visits.has_roistats]
    text = {sub: ", ".join(f"{r.session_id}{' (baseline)' if r.session_order == 1 else ''}"
                           for r in chunk.itertuples())
            for sub, chunk in missing.groupby("participant_id", sort=False)}
    if len(missing):
        shown = "; ".join(f"{sub} {t}" for sub, t in list(text.items())[:5])
        log.warning("sessions.tsv lists %d session%s without an ROI table (%s%s); %s left out "
                    "(a missing baseline is not replaced by the next session; rerun the "
                    "participant level for %s)", len(missing), "s" if len(missing) > 1 else "",
                    shown, " ..." if len(text) > 5 else "",
                    "it is" if len(missing) == 1 else "they are",
                    "it" if len(missing) == 1 else "them")
    merged = data[["participant_id", "session_id"]].merge(
        visits, how="left", on=["participant_id", "session_id"]).set_axis(data.index)
    data["acq_time"] = merged["acq_time"]
    data["session_order"] = merged["session_order"].astype(int)
    data["n_sessions"] = merged["n_sessions"].astype(int)
    data["is_baseline"] = data["session_order"] == 1
    data["missing_sessions"] = data.participant_id.map(text).astype(object)
    delta = data["acq_time"] - merged["baseline_time"]
    data["years_from_baseline"] = delta.dt.total_seconds() / (365.25 * 86400)
    absent = sorted(set(participants.participant_id) - set(present.participant_id),
                    key=_natural_key)
    if absent:
        log.warning("%s: %d participant%s without any ROI table (%s%s) left out", ppath,
                    len(absent), "s" if len(absent) > 1 else "", ", ".join(absent[:5]),
                    " ..." if len(absent) > 5 else "")

    # age
    age_name = age_column or "age"
    data["age"] = np.nan
    data["age_source"] = "n/a"
    if age_name in sessions.columns:
        age = _lookup(age_name, sessions, participants.drop(columns=[age_name], errors="ignore"),
                      data, ppath, spaths, False, True, "age in years")
        data["age"] = age
        data.loc[age.notna(), "age_source"] = "sessions.tsv"
    if age_name in participants.columns:
        page = _numeric(participants.set_index("participant_id")[age_name], ppath, age_name,
                        "write the age in years (number) or n/a")
        # participants.tsv age = age at the first session in sessions.tsv (earliest acq_time)
        base = data.participant_id.map(page)
        if "acq_time" in sessions.columns:
            start = sessions.groupby("participant_id")["acq_time"].min()
            since = (data["acq_time"] - pd.to_datetime(data.participant_id.map(start))) \
                .dt.total_seconds() / (365.25 * 86400)
        else:
            since = pd.Series(np.nan, index=data.index)
        todo = data["age"].isna() & base.notna()
        dated = todo & since.notna()
        data.loc[dated, "age"] = base[dated] + since[dated]
        data.loc[dated, "age_source"] = "participants.tsv+acq_time"
        undated = todo & since.isna()
        data.loc[undated, "age"] = base[undated]
        data.loc[undated, "age_source"] = "participants.tsv"
    if age_name not in sessions.columns and age_name not in participants.columns:
        if age_column:
            raise InputError(f"{ppath}: column '{age_column}' (--age-column) is missing from "
                             "participants.tsv and every sessions.tsv; add it or correct "
                             "--age-column")
        log.warning("%s: no 'age' column in participants.tsv or sessions.tsv; age correction "
                    "is skipped (name the column with --age-column)", ppath)
    age_available = bool(data["age"].notna().any())

    # site: a column (--site-column, else 'site' when present) or the sidecars
    site_name = site_column or "site"
    if site_name in sessions.columns or site_name in participants.columns:
        site = _lookup(site_name, sessions, participants, data, ppath, spaths, False, False,
                       "--site-column")
        data["site"] = site.astype(object).where(site.notna(), None).map(
            lambda v: None if v is None else str(v))
        data["site_source"] = np.where(data["site"].notna(), f"column {site_name}", "n/a")
    elif site_column:
        raise InputError(f"{ppath}: column '{site_column}' (--site-column) is missing from "
                         "participants.tsv and every sessions.tsv; add it or correct "
                         "--site-column")
    else:
        sites = sidecar_sites(bids_dir, present, log)
        data["site"] = [sites.get(k) for k in zip(data.participant_id, data.session_id)]
        data["site_source"] = np.where(data["site"].notna(), "sidecars", "n/a")

    # lesion load per session (participant level with --lesion-masks)
    load = read_lesion_load(output_dir, present)
    lesion_columns = _join_sessions(data, load)
    if lesion_columns:
        log.info("group: lesion load of %d sessions (lesion masks in OUTPUT_DIR)", len(load))

    # brain volumes per session (participant level, sessions with a T1w)
    volumes = read_brain_volumes(output_dir, present)
    volume_columns = _join_sessions(data, volumes)
    if volume_columns:
        log.info("group: brain volumes of %d sessions (volumes tables in OUTPUT_DIR)",
                 len(volumes))
    joined = set(lesion_columns) | set(volume_columns)

    # clinical columns: named, or found (numeric and described in JSON, or a clinical name)
    if clinical_columns is None:
        skip = {group_column, age_name, site_name, *covariates}
        clinical = [{"column": c, "file": f, "why": why} for c, f, why in
                    find_clinical_columns(bids_dir, participants, sessions, skip)]
        for column in ("lesion_volume_log", "lesion_count"):
            if column in lesion_columns and data[column].nunique() > 1:
                clinical.append({"column": column, "file": "OUTPUT_DIR lesion tables",
                                 "why": "lesion load (--lesion-masks)"})
        for column in VOLUME_CANDIDATES:
            if column in volume_columns and data[column].nunique() > 1:
                clinical.append({"column": column, "file": "OUTPUT_DIR volumes tables",
                                 "why": "brain volume (T1w)"})
        if data["roi_volume_mm3"].nunique() > 1:
            clinical.append({"column": "roi_volume_mm3", "file": "roistats.tsv",
                             "why": "the ROI's own label volume (label_volume_mm3)"})
        clinical_columns = [c["column"] for c in clinical]
        if clinical_columns:
            log.info("group: clinical columns found: %s", ", ".join(
                f"{c['column']} ({c['file']}, {c['why']})" for c in clinical))
    else:
        def origin(c):
            return ("sessions.tsv" if c in sessions.columns else "participants.tsv"
                    if c in participants.columns else "OUTPUT_DIR lesion tables"
                    if c in lesion_columns else "OUTPUT_DIR volumes tables"
                    if c in volume_columns else "roistats.tsv")
        clinical = [{"column": c, "file": origin(c), "why": "--clinical-columns"}
                    for c in clinical_columns]
    for column in clinical_columns:
        if (column in joined or column == "roi_volume_mm3") and \
                column not in sessions.columns and column not in participants.columns:
            continue  # joined above from the lesion/volumes tables / the ROI tables
        data[column] = _lookup(column, sessions, participants, data, ppath, spaths, True, True,
                               "--clinical-columns")
    for entry in clinical:
        entry["n_participants"] = int(data.loc[data[entry["column"]].notna(),
                                               "participant_id"].nunique())
    for column in covariates:
        if column in (age_name, group_column) or (
                column in joined and column not in sessions.columns
                and column not in participants.columns):
            continue  # the per-session age, lesion load and volumes above; the group column
        values = _lookup(column, sessions, participants, data, ppath, spaths, True, False,
                         "--covariates")
        as_num = pd.to_numeric(values, errors="coerce")
        data[column] = as_num.astype(float) if (as_num.notna() == values.notna()).all() \
            else values.astype(object)

    n_sub = data.participant_id.nunique()
    n_ses = data.drop_duplicates(["participant_id", "session_id"]).shape[0]
    log.info("group: %d roistats.tsv files, %d participants, %d sessions", len(paths), n_sub,
             n_ses)
    info = {"age_available": age_available, "age_column": age_name,
            "missing_sessions": missing[["participant_id", "session_id", "session_order"]],
            "files": [str(p) for p in paths] + [str(ppath)] + [str(p) for p in spaths.values()],
            "clinical_columns": list(clinical_columns), "clinical": clinical,
            "lesion_columns": lesion_columns, "volume_columns": volume_columns,
            "site_source": (f"column '{site_name}'" if (data["site_source"] != "sidecars").any()
                            else "sidecars") if data["site"].notna().any() else None,
            "covariates": [("age" if c == age_name else "group" if c == group_column else c)
                           for c in covariates]}
    return data, info
