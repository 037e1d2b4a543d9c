"""Boxed (time-frequency) annotations: Raven selection tables in and out, and clip labels.

A :class:`BoxedAnnotations` holds one row per box drawn on a spectrogram (for
example a Raven Pro selection). Its ``df`` has the columns

``audio_file, annotation_file, annotation, start_time, end_time, low_f, high_f``

plus any extra columns kept from the source tables. Times are seconds from the
start of the audio file; frequencies are Hz.

From boxes it makes *clip labels*: the project's clip table (a DataFrame indexed
by ``(file, start_time, end_time)``) with one 0/1 column per class.

Real selection tables vary, so the reader tolerates: other names for the
annotation column, tables without one, extra columns that differ between
files, header-only tables, UTF-8 byte-order marks, CRLF line endings, short rows
(empty trailing cells), duplicated Waveform/Spectrogram rows of one selection,
and multi-file tables (``Begin File``/``Begin Path``/``File Offset (s)``).
A malformed row raises :class:`AnnotationTableError` naming the file, the line
and the column (or is skipped and listed in ``BoxedAnnotations.report`` with
``errors="skip"``). Nothing is dropped without being reported.

Examples
--------
>>> from opso_nb import sample_data
>>> from opso_nb.annotations import BoxedAnnotations
>>> wav, table = sample_data.annotated_recording()
>>> boxes = BoxedAnnotations.from_raven_files([table], audio_files=[wav])
>>> boxes.df.annotation.head(3).tolist()
['NOCA', 'WOTH', 'EATO']
>>> labels = boxes.one_hot_clip_labels(clip_duration=5, min_label_overlap=0.25)
>>> labels.index.names
FrozenList(['file', 'start_time', 'end_time'])
"""
from __future__ import annotations

import csv
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from opso_nb.utils import CLIP_INDEX, atomic_write, generate_clip_times_df, validate_clip_table

__all__ = [
    "AnnotationTableError",
    "BoxedAnnotations",
    "DEFAULT_ANNOTATION_COLUMNS",
    "FilePairing",
    "pair_audio_and_tables",
    "table_stem",
    "load_table",
    "is_raven_table",
    "label_colors",
    "categorical_to_one_hot",
    "one_hot_to_categorical",
    "one_hot_labels_on_time_interval",
]

#: Column names (compared case-insensitively) taken as the annotation column
#: when ``annotation_column="auto"``; the first one present in a table wins.
DEFAULT_ANNOTATION_COLUMNS = (
    "annotation",
    "annotations",
    "label",
    "labels",
    "species",
    "class",
    "code",
    "tag",
)

#: Raven column -> BoxedAnnotations column, for the four box coordinates.
_RAVEN_BOX_COLUMNS = {
    "begin time (s)": "start_time",
    "end time (s)": "end_time",
    "low freq (hz)": "low_f",
    "high freq (hz)": "high_f",
}
_RAVEN_NAMES = {
    "start_time": "Begin Time (s)",
    "end_time": "End Time (s)",
    "low_f": "Low Freq (Hz)",
    "high_f": "High Freq (Hz)",
}
_MULTIFILE_COLUMNS = ("begin file", "begin path", "file offset (s)")

#: Columns every BoxedAnnotations.df has, in this order.
STANDARD_COLUMNS = [
    "audio_file",
    "annotation_file",
    "annotation",
    "start_time",
    "end_time",
    "low_f",
    "high_f",
]

_REPORT_COLUMNS = ["annotation_file", "line", "column", "action", "problem"]

# Float noise guard for overlap comparisons (seconds or fraction).
_EPS = 1e-9


class AnnotationTableError(ValueError):
    """An annotation table is malformed.

    Attributes
    ----------
    path : str
        The table file.
    line : int or None
        1-based line number in the file (the header is line 1), if the problem is in a row.
    row : int or None
        1-based number of the data row (the first row under the header is 1).
    column : str or None
        Column name, if the problem is in one cell or a missing column.
    reason : str
        What is wrong.
    """

    def __init__(self, path, reason: str, line: int | None = None, column: str | None = None,
                 row: int | None = None):
        self.path = str(path)
        self.line = line
        self.row = row
        self.column = column
        self.reason = reason
        where = self.path
        if line is not None:
            where += f", line {line}"
        if row is not None:
            where += f" (selection row {row})"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {reason}")


# --------------------------------------------------------------------------- reading


def _read_text(path: Path) -> str:
    """Text of a table; UTF-8 (BOM stripped) or, failing that, Windows-1252/Latin-1."""
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise AnnotationTableError(path, "cannot decode the file as text")  # pragma: no cover


def _split_rows(text: str) -> list[tuple[int, list[str]]]:
    """Tab-separated rows as (line number, cells); blank lines are left out.

    Raven never quotes, so quote characters are data (QUOTE_NONE). ``newline``
    handling by ``io.StringIO(newline="")`` copes with LF, CRLF and bare CR.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = []
    for cells in reader:
        line = reader.line_num
        if not cells or all(c.strip() == "" for c in cells):
            continue
        rows.append((line, cells))
    return rows


def _parse_float(value: str):
    value = value.strip()
    if value == "":
        return np.nan
    return float(value)


def _find_column(names_lower: list[str], wanted: Iterable[str]) -> int | None:
    for w in wanted:
        w = str(w).strip().lower()
        if w in names_lower:
            return names_lower.index(w)
    return None


def _resolve_audio_name(name: str, table: Path) -> str:
    """A ``Begin File`` name, resolved next to the table when such a file exists there."""
    candidate = table.parent / name
    return str(candidate) if candidate.exists() else name


def _read_one_raven_table(
    path,
    audio_file,
    annotation_column,
    keep_extra_columns,
    lowercase_labels: bool,
    errors: str,
    column_mapping_dict: dict | None,
):
    """Parse one Raven selection table. Returns (DataFrame, report rows)."""
    path = Path(path)
    report: list[tuple] = []
    if not path.exists():
        raise AnnotationTableError(path, "file does not exist")
    if path.is_dir():
        raise AnnotationTableError(path, "is a folder, not a selection table")
    text = _read_text(path)
    rows = _split_rows(text)
    if not rows:
        raise AnnotationTableError(
            path, "file is empty: not even a header row (a Raven table with no selections still has one)"
        )
    header_line, header = rows[0]
    header = [h.strip().lstrip("\ufeff") for h in header]
    # Raven writes a trailing tab after the last header name in some versions.
    while header and header[-1] == "":
        header.pop()
    if column_mapping_dict:
        mapping = {str(k).lower(): v for k, v in column_mapping_dict.items()}
        header = [mapping.get(h.lower(), h) for h in header]
    names_lower = [h.lower() for h in header]
    dupes = sorted({h for h in names_lower if names_lower.count(h) > 1 and h != ""})
    if dupes:
        raise AnnotationTableError(path, f"header has duplicate column names {dupes}", line=header_line)

    box_idx = {}
    for raven_lower, ours in _RAVEN_BOX_COLUMNS.items():
        idx = _find_column(names_lower, [raven_lower, ours])
        box_idx[ours] = idx
    for ours in ("start_time", "end_time"):
        if box_idx[ours] is None:
            raise AnnotationTableError(
                path,
                f"no {_RAVEN_NAMES[ours]!r} column (columns are {header}); is this a Raven selection table?",
                line=header_line,
                column=_RAVEN_NAMES[ours],
            )

    # which column holds the labels
    if annotation_column is None:
        ann_idx = None
    elif isinstance(annotation_column, (int, np.integer)) and not isinstance(annotation_column, bool):
        ann_idx = int(annotation_column)
        if not 0 <= ann_idx < len(header):
            raise AnnotationTableError(
                path,
                f"annotation_column={ann_idx} but the table has only {len(header)} columns {header}",
                line=header_line,
            )
    else:
        wanted = DEFAULT_ANNOTATION_COLUMNS if annotation_column == "auto" else (
            [annotation_column] if isinstance(annotation_column, str) else list(annotation_column)
        )
        ann_idx = _find_column(names_lower, wanted)
        if ann_idx is None:
            report.append(
                (str(path), np.nan, None, "labels left empty",
                 f"no annotation column (looked for {list(wanted)}; columns are {header})")
            )

    offset_idx = _find_column(names_lower, ["file offset (s)"])
    path_idx = _find_column(names_lower, ["begin path"])
    bfile_idx = _find_column(names_lower, ["begin file"])
    view_idx = _find_column(names_lower, ["view"])
    sel_idx = _find_column(names_lower, ["selection"])

    used = {i for i in box_idx.values() if i is not None}
    if ann_idx is not None:
        used.add(ann_idx)
    extra_idx = [i for i in range(len(header)) if i not in used and header[i] != ""]
    if keep_extra_columns is False or keep_extra_columns is None:
        extra_idx = []
    elif keep_extra_columns is not True:
        keep = [str(k).lower() for k in keep_extra_columns]
        extra_idx = [i for i in extra_idx if names_lower[i] in keep]
    # standard names must not be shadowed by extra columns of the same name
    extra_idx = [i for i in extra_idx if header[i] not in STANDARD_COLUMNS]

    records = []
    for row_no, (line, cells) in enumerate(rows[1:], start=1):
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
            problem = f"row has {len(cells)} cells but the header has {len(header)} columns"
            if errors == "raise":
                raise AnnotationTableError(path, problem, line=line, row=row_no)
            report.append((str(path), line, None, "skipped row", problem))
            continue
        cells = [c.strip() for c in cells[: len(header)]]
        cells += [""] * (len(header) - len(cells))  # Raven leaves trailing empty cells off
        rec = {}
        bad = None
        for ours, idx in box_idx.items():
            if idx is None:
                rec[ours] = np.nan
                continue
            try:
                rec[ours] = _parse_float(cells[idx])
            except ValueError:
                bad = (header[idx], f"text {cells[idx]!r} where a number ({ours}) belongs")
                break
        if bad is None and offset_idx is not None and cells[offset_idx] != "":
            # multi-file table: Begin Time counts from the start of the file list,
            # File Offset from the start of this row's own audio file.
            try:
                offset = _parse_float(cells[offset_idx])
            except ValueError:
                bad = (header[offset_idx], f"text {cells[offset_idx]!r} where a number belongs")
            else:
                length = rec["end_time"] - rec["start_time"]
                rec["start_time"], rec["end_time"] = offset, offset + length
        if bad is None:
            for col in ("start_time", "end_time"):
                if np.isnan(rec[col]):
                    bad = (header[box_idx[col]], "missing value")
                    break
                if not np.isfinite(rec[col]):
                    bad = (header[box_idx[col]], f"not a finite number ({rec[col]})")
                    break
                if rec[col] < 0:
                    bad = (header[box_idx[col]], f"negative time {rec[col]}")
                    break
        if bad is None and rec["end_time"] < rec["start_time"]:
            bad = (header[box_idx["end_time"]],
                   f"ends ({rec['end_time']} s) before it starts ({rec['start_time']} s)")
        if bad is None and rec["high_f"] < rec["low_f"]:
            bad = (header[box_idx["high_f"]],
                   f"high frequency ({rec['high_f']} Hz) below low frequency ({rec['low_f']} Hz)")
        if bad is not None:
            if errors == "raise":
                raise AnnotationTableError(path, bad[1], line=line, column=bad[0], row=row_no)
            report.append((str(path), line, bad[0], "skipped row", bad[1]))
            continue
        label = cells[ann_idx] if ann_idx is not None else ""
        if label == "":
            label = np.nan
        elif lowercase_labels:
            label = label.lower()
        rec["annotation"] = label
        if audio_file is not None:
            rec["audio_file"] = str(audio_file)
        elif path_idx is not None and cells[path_idx]:
            rec["audio_file"] = cells[path_idx]
        elif bfile_idx is not None and cells[bfile_idx]:
            rec["audio_file"] = _resolve_audio_name(cells[bfile_idx], path)
        else:
            rec["audio_file"] = np.nan
        rec["annotation_file"] = str(path)
        for i in extra_idx:
            rec[header[i]] = cells[i] if cells[i] != "" else np.nan
        rec["_line"] = line
        rec["_view"] = cells[view_idx] if view_idx is not None else None
        rec["_selection"] = cells[sel_idx] if sel_idx is not None else None
        records.append(rec)

    extra_names = [header[i] for i in extra_idx]
    df = pd.DataFrame(records, columns=STANDARD_COLUMNS + extra_names + ["_line", "_view", "_selection"])

    # Raven lists a selection once per view (Waveform 1, Spectrogram 1, ...); keep one.
    if view_idx is not None and sel_idx is not None and len(df):
        is_spec = df["_view"].fillna("").str.lower().str.startswith("spectrogram")
        order = np.where(is_spec, 0, 1)
        df = df.assign(_order=order)
        keyed = df.sort_values(["_order", "_line"], kind="stable")
        dup = keyed.duplicated(["_selection", "audio_file"], keep="first")
        for _, r in keyed[dup].iterrows():
            report.append((str(path), int(r["_line"]), header[view_idx], "dropped duplicate",
                           f"selection {r['_selection']} also listed in another view ({r['_view']})"))
        df = keyed[~dup].sort_values("_line").drop(columns="_order")

    df = df.drop(columns=["_line", "_view", "_selection"]).reset_index(drop=True)
    for col in extra_names:
        df[col] = _maybe_numeric(df[col])
    return df, report


def _maybe_numeric(series: pd.Series) -> pd.Series:
    """Convert a text column to numbers when every non-empty value is a number."""
    converted = pd.to_numeric(series, errors="coerce")
    if converted.notna().sum() == series.notna().sum():
        if converted.notna().all() and (converted % 1 == 0).all():
            return converted.astype("int64")
        return converted
    return series


def _read_audacity_table(path, audio_file, lowercase_labels: bool, errors: str):
    """Parse an Audacity label track export (start, end, label; optional ``\\`` frequency lines)."""
    path = Path(path)
    if not path.exists():
        raise AnnotationTableError(path, "file does not exist")
    rows = _split_rows(_read_text(path))
    records, report = [], []
    for line, cells in rows:
        cells = [c.strip() for c in cells]
        if cells[0] == "\\":  # frequency line belonging to the previous label
            if not records:
                raise AnnotationTableError(path, "frequency line before any label", line=line)
            try:
                records[-1]["low_f"] = _parse_float(cells[1])
                records[-1]["high_f"] = _parse_float(cells[2]) if len(cells) > 2 else np.nan
            except (ValueError, IndexError):
                problem = f"bad frequency line {cells}"
                if errors == "raise":
                    raise AnnotationTableError(path, problem, line=line, column="low/high frequency")
                report.append((str(path), line, "low/high frequency", "skipped row", problem))
            continue
        try:
            start, end = _parse_float(cells[0]), _parse_float(cells[1])
            if np.isnan(start) or np.isnan(end) or end < start:
                raise ValueError
        except (ValueError, IndexError):
            problem = f"expected 'start<TAB>end<TAB>label' with end >= start, got {cells}"
            if errors == "raise":
                raise AnnotationTableError(path, problem, line=line, column="start/end")
            report.append((str(path), line, "start/end", "skipped row", problem))
            continue
        label = cells[2] if len(cells) > 2 and cells[2] else np.nan
        if lowercase_labels and isinstance(label, str):
            label = label.lower()
        records.append(dict(audio_file=str(audio_file) if audio_file is not None else np.nan,
                            annotation_file=str(path), annotation=label, start_time=start,
                            end_time=end, low_f=np.nan, high_f=np.nan))
    return pd.DataFrame(records, columns=STANDARD_COLUMNS), report


def is_raven_table(path) -> bool:
    """True if the first non-blank line of ``path`` looks like a Raven header (has ``Begin Time (s)``)."""
    try:
        rows = _split_rows(_read_text(Path(path)))
    except (OSError, AnnotationTableError):
        return False
    return bool(rows) and any(c.strip().lower().lstrip("\ufeff") == "begin time (s)" for c in rows[0][1])


def _as_list(files) -> list:
    if files is None:
        return None
    if isinstance(files, (str, os.PathLike)):
        return [files]
    return list(files)


# --------------------------------------------------------------------------- class


class BoxedAnnotations:
    """Time-frequency boxes (e.g. Raven selections) for one or more audio files.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per box with at least ``start_time`` and ``end_time`` (seconds).
        Missing standard columns (``audio_file``, ``annotation_file``,
        ``annotation``, ``low_f``, ``high_f``) are added as empty. A ``file``
        column (OpenSoundscape 0.9's name) is taken as ``audio_file``.
    audio_files : list of str, optional
        All audio files the annotations describe, including files with no
        boxes at all (those get all-zero clip labels). Defaults to the files
        named in ``df``.
    report : pandas.DataFrame, optional
        Problems met while loading (see :attr:`report`).

    Attributes
    ----------
    df : pandas.DataFrame
        The boxes.
    audio_files : list of str or None
        Audio files covered, with or without boxes.
    report : pandas.DataFrame
        Columns ``annotation_file, line, column, action, problem``: rows skipped
        or dropped while reading and tables without an annotation column.
        Empty when everything was read as is.

    Notes
    -----
    All methods are out-of-place: they return a new object.
    """

    def __init__(self, df: pd.DataFrame | None = None, audio_files=None, report=None):
        if df is None:
            df = pd.DataFrame(columns=STANDARD_COLUMNS)
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
        df = df.copy()
        if "audio_file" not in df.columns and "file" in df.columns:
            df = df.rename(columns={"file": "audio_file"})
        for col in ("start_time", "end_time"):
            if col not in df.columns:
                raise ValueError(f"annotation table needs a {col!r} column; has {list(df.columns)}")
        for col in STANDARD_COLUMNS:
            if col not in df.columns:
                df[col] = np.nan
        for col in ("start_time", "end_time", "low_f", "high_f"):
            try:
                df[col] = pd.to_numeric(df[col]).astype(float)
            except (ValueError, TypeError) as err:
                raise ValueError(f"column {col!r} must be numeric: {err}") from None
        bad = df["start_time"].isna() | df["end_time"].isna() | (df["end_time"] < df["start_time"])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"annotation row {df.index[i]} has a missing time or ends before it starts: "
                f"start_time={df['start_time'].iloc[i]}, end_time={df['end_time'].iloc[i]}"
            )
        extras = [c for c in df.columns if c not in STANDARD_COLUMNS]
        self.df = df[STANDARD_COLUMNS + extras]
        self.audio_files = [str(f) for f in audio_files] if audio_files is not None else None
        self.report = (
            report.reset_index(drop=True) if report is not None else pd.DataFrame(columns=_REPORT_COLUMNS)
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_raven_files(
        cls,
        raven_files,
        audio_files=None,
        annotation_column="auto",
        keep_extra_columns=True,
        lowercase_labels: bool = False,
        errors: str = "raise",
        column_mapping_dict: dict | None = None,
        annotation_column_idx=None,
        raven_paths=None,
    ) -> "BoxedAnnotations":
        """Load Raven Pro/Lite selection tables (tab-separated ``.txt``).

        Parameters
        ----------
        raven_files : str, Path or list of them
            Selection tables (``raven_paths`` is accepted as an alias).
        audio_files : list, optional
            The audio file of each table, same length as ``raven_files``
            (``None`` entries allowed). If omitted, a table's ``Begin Path``
            or ``Begin File`` column names the audio of each row, when present.
        annotation_column : "auto", str, list of str, int or None
            Which column holds the labels. ``"auto"`` (default): the first of
            :data:`DEFAULT_ANNOTATION_COLUMNS` present; a name or list of names
            (case-insensitive, first found wins, so tables that call it
            ``Species`` in one file and ``Label`` in another load together);
            an int: 0-based column position (OpenSoundscape 0.9's
            ``annotation_column_idx``; 7 is the first user column of a
            standard Raven table); ``None``: no labels (``annotation`` is NaN).
            A table without a matching column loads with empty labels and is
            listed in :attr:`report` (and a warning).
        keep_extra_columns : bool or list of str
            Keep all other columns (True), none (False) or only those named.
            Columns missing from some tables are NaN for those tables' rows.
        lowercase_labels : bool
            Lower-case all labels (``"WOTH"`` and ``"woth"`` become one class).
        errors : {"raise", "skip"}
            Malformed rows (text in a number column, missing, negative or
            infinite times, end before start, high below low frequency, too
            many cells) and unreadable tables (missing, empty, no time columns):
            raise :class:`AnnotationTableError` naming file, line and column,
            or skip them and list them in :attr:`report` (with a warning).
        column_mapping_dict : dict, optional
            Rename table columns before reading, e.g. ``{"Start (s)": "Begin Time (s)"}``.
        annotation_column_idx : int or None, optional
            OpenSoundscape 0.9 spelling of an int ``annotation_column``.

        Returns
        -------
        BoxedAnnotations

        Raises
        ------
        AnnotationTableError
            Missing, empty (0-byte) or header-less files, tables without
            ``Begin Time (s)``/``End Time (s)``, and malformed rows (``errors="raise"``).

        Notes
        -----
        Labels have surrounding whitespace stripped; empty labels become NaN.
        When a selection appears once per Raven view (``Waveform 1`` and
        ``Spectrogram 1``), only the spectrogram row is kept; the others are
        listed in :attr:`report`. With a ``File Offset (s)`` column, times are
        converted to seconds within each row's own audio file.
        """
        if raven_paths is not None:
            raven_files = raven_paths
        if annotation_column_idx is not None:
            annotation_column = annotation_column_idx
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        raven_files = _as_list(raven_files)
        audio_list = _as_list(audio_files)
        if audio_list is not None and len(audio_list) != len(raven_files):
            raise ValueError(
                f"audio_files has {len(audio_list)} entries but raven_files has {len(raven_files)}; "
                "give one audio file per table (or None)"
            )
        frames, report = [], []
        for i, table in enumerate(raven_files):
            audio = audio_list[i] if audio_list is not None else None
            if audio is not None and not isinstance(audio, (str, os.PathLike)) and pd.isna(audio):
                audio = None
            try:
                df, rep = _read_one_raven_table(
                    table, audio, annotation_column, keep_extra_columns, lowercase_labels, errors,
                    column_mapping_dict,
                )
            except AnnotationTableError as err:
                if errors == "raise":
                    raise
                # with errors="skip" an unreadable table is reported and the others still load
                report.append((err.path, err.line if err.line is not None else np.nan, err.column,
                               "skipped table", err.reason))
                continue
            frames.append(df)
            report.extend(rep)
        return cls._finish_loading(frames, report, audio_list)

    @classmethod
    def from_audacity(cls, audacity_files, audio_files=None, lowercase_labels=False, errors="raise"):
        """Load Audacity label-track exports (``start<TAB>end<TAB>label``, optional frequency lines).

        Parameters are as in :meth:`from_raven_files`. Frequencies are NaN for
        labels without a ``\\`` frequency line.
        """
        files = _as_list(audacity_files)
        audio_list = _as_list(audio_files)
        if audio_list is not None and len(audio_list) != len(files):
            raise ValueError(f"audio_files has {len(audio_list)} entries but audacity_files has {len(files)}")
        frames, report = [], []
        for i, f in enumerate(files):
            df, rep = _read_audacity_table(f, audio_list[i] if audio_list else None, lowercase_labels, errors)
            frames.append(df)
            report.extend(rep)
        return cls._finish_loading(frames, report, audio_list)

    @classmethod
    def _finish_loading(cls, frames, report, audio_list):
        frames = [f for f in frames if len(f)] or frames[:1]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=STANDARD_COLUMNS)
        report_df = pd.DataFrame(report, columns=_REPORT_COLUMNS)
        if len(report_df):
            counts = report_df["action"].value_counts().to_dict()
            first = report_df.iloc[0]
            warnings.warn(
                f"annotation tables loaded with {len(report_df)} problem(s) {counts}; "
                f"first: {first.annotation_file}: {first.problem}. See BoxedAnnotations.report.",
                stacklevel=3,
            )
        audio = None
        if audio_list is not None:
            audio = [str(a) for a in audio_list if a is not None and not (isinstance(a, float) and np.isnan(a))]
        return cls(df, audio_files=audio, report=report_df)

    @classmethod
    def from_csv(cls, path) -> "BoxedAnnotations":
        """Load a table written by :meth:`to_csv`."""
        path = Path(path)
        if not path.exists():
            raise AnnotationTableError(path, "file does not exist")
        try:
            df = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise AnnotationTableError(path, f"not a readable CSV table ({err})") from None
        missing = [c for c in ("start_time", "end_time") if c not in df.columns]
        if missing:
            raise AnnotationTableError(path, f"missing column(s) {missing}", column=missing[0])
        for col in ("start_time", "end_time", "low_f", "high_f"):
            if col in df.columns:
                values = pd.to_numeric(df[col], errors="coerce")
                bad = values.isna() & df[col].notna()
                if bad.any():
                    i = int(np.flatnonzero(bad.to_numpy())[0])
                    raise AnnotationTableError(
                        path, f"text {df[col].iloc[i]!r} where a number belongs", line=i + 2, column=col
                    )
        try:
            return cls(df)
        except ValueError as err:
            raise AnnotationTableError(path, str(err)) from None

    @classmethod
    def concat(cls, objects: Sequence["BoxedAnnotations"]) -> "BoxedAnnotations":
        """Join several BoxedAnnotations into one (rows, audio file lists and reports)."""
        objects = list(objects)
        if not objects:
            return cls()
        df = pd.concat([o.df for o in objects], ignore_index=True)
        if any(o.audio_files is None for o in objects):
            audio = None
        else:
            audio = list(dict.fromkeys(a for o in objects for a in o.audio_files))
        report = pd.concat([o.report for o in objects], ignore_index=True)
        return cls(df, audio_files=audio, report=report)

    def __add__(self, other):
        if not isinstance(other, BoxedAnnotations):
            return NotImplemented
        return BoxedAnnotations.concat([self, other])

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        n_files = self.df["audio_file"].nunique()
        return (
            f"BoxedAnnotations({len(self.df)} boxes, {n_files} audio file(s), "
            f"{len(self.unique_labels())} label(s))"
        )

    def _new(self, df, audio_files="same") -> "BoxedAnnotations":
        return BoxedAnnotations(
            df.reset_index(drop=True),
            audio_files=self.audio_files if audio_files == "same" else audio_files,
            report=self.report,
        )

    # ------------------------------------------------------------------ editing
    def unique_labels(self) -> list:
        """Distinct labels in order of first appearance, NaN/None excluded."""
        return list(pd.unique(self.df["annotation"].dropna()))

    def subset(self, classes) -> "BoxedAnnotations":
        """Keep only boxes whose label is in ``classes`` (the list may include None/NaN to keep unlabelled boxes)."""
        if isinstance(classes, str):
            classes = [classes]
        classes = list(classes)
        keep_nan = any(c is None or (isinstance(c, float) and np.isnan(c)) for c in classes)
        named = [c for c in classes if not (c is None or (isinstance(c, float) and np.isnan(c)))]
        mask = self.df["annotation"].isin(named)
        if keep_nan:
            mask |= self.df["annotation"].isna()
        return self._new(self.df[mask])

    def convert_labels(self, conversion_table) -> "BoxedAnnotations":
        """Rename labels; unmapped labels stay as they are.

        Parameters
        ----------
        conversion_table : dict, pandas.Series, pandas.DataFrame, str or Path
            ``{old: new}``; a Series (index old, values new); a two-column table
            (first column old, second new; names do not matter) or the path of
            such a CSV. Map to NaN/None to blank a label.
        """
        if isinstance(conversion_table, (str, os.PathLike)):
            conversion_table = pd.read_csv(conversion_table)
        if isinstance(conversion_table, pd.DataFrame):
            if conversion_table.shape[1] != 2:
                raise ValueError(
                    f"conversion table needs exactly 2 columns (current, new); got {list(conversion_table.columns)}"
                )
            mapping = dict(zip(conversion_table.iloc[:, 0], conversion_table.iloc[:, 1]))
        elif isinstance(conversion_table, pd.Series):
            mapping = conversion_table.to_dict()
        elif isinstance(conversion_table, dict):
            mapping = dict(conversion_table)
        else:
            raise TypeError("conversion_table must be a dict, Series, 2-column DataFrame or CSV path")
        mapping = {k: (np.nan if v is None else v) for k, v in mapping.items()}
        df = self.df.copy()
        df["annotation"] = [mapping.get(a, a) if not pd.isna(a) else a for a in df["annotation"]]
        return self._new(df)

    def _crop(self, lo_col, hi_col, lo, hi, edge_mode, shift):
        if edge_mode not in ("trim", "keep", "remove"):
            raise ValueError(f"edge_mode must be 'trim', 'keep' or 'remove', got {edge_mode!r}")
        if hi < lo:
            raise ValueError(f"upper bound ({hi}) is below lower bound ({lo})")
        df = self.df
        a, b = df[lo_col], df[hi_col]
        zero = a == b
        # boxes of zero extent count in [lo, hi); others need to overlap (lo, hi)
        inside = (zero & (a >= lo) & (a < hi)) | (~zero & (a < hi) & (b > lo))
        if lo_col == "low_f":  # boxes without frequencies are not removed by a bandpass
            inside |= a.isna() | b.isna()
        df = df[inside].copy()
        if edge_mode == "remove":
            df = df[~((df[lo_col] < lo) | (df[hi_col] > hi))]
        elif edge_mode == "trim":
            df[lo_col] = df[lo_col].clip(lower=lo)
            df[hi_col] = df[hi_col].clip(upper=hi)
        if shift:
            df[lo_col] -= lo
            df[hi_col] -= lo
        return self._new(df)

    def trim(self, start_time: float, end_time: float, edge_mode: str = "trim") -> "BoxedAnnotations":
        """Keep the boxes within ``[start_time, end_time]`` s and shift times so ``start_time`` becomes 0.

        Parameters
        ----------
        start_time, end_time : float
            Bounds in seconds from the start of each audio file.
        edge_mode : {"trim", "keep", "remove"}
            Boxes crossing a bound are cut to it, kept whole, or removed.
            Zero-length boxes count as inside ``[start_time, end_time)``.
        """
        return self._crop("start_time", "end_time", start_time, end_time, edge_mode, shift=True)

    def bandpass(self, low_f: float, high_f: float, edge_mode: str = "trim") -> "BoxedAnnotations":
        """Keep boxes overlapping ``[low_f, high_f]`` Hz (frequencies are not shifted).

        ``edge_mode`` as in :meth:`trim`. Boxes without frequencies are kept.
        """
        return self._crop("low_f", "high_f", low_f, high_f, edge_mode, shift=False)

    def boxes_overlapping(self, start_time: float, end_time: float, audio_file=None) -> "BoxedAnnotations":
        """Boxes that overlap ``[start_time, end_time]`` s (times unchanged; zero-length boxes count
        in ``[start_time, end_time)``), optionally of one audio file only."""
        df = self.df
        if audio_file is not None:
            key = _path_key(str(audio_file))
            df = df[df["audio_file"].notna().to_numpy() & (_path_keys(df["audio_file"]) == key).to_numpy()]
        a, b = df["start_time"], df["end_time"]
        inside = ((a == b) & (a >= start_time) & (a < end_time)) | ((a < end_time) & (b > start_time))
        return self._new(df[inside])

    def plot(self, ax=None, audio_file=None, start_time: float | None = None, end_time: float | None = None,
             colors: dict | None = None, show_labels: bool = True, default_high_f: float | None = None):
        """Draw the boxes as outlined rectangles with their labels (e.g. over ``Spectrogram.plot``).

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Axes to draw into (a new figure otherwise).
        audio_file : str, optional
            Only boxes of this file.
        start_time, end_time : float, optional
            Only boxes overlapping this window (s).
        colors : dict, optional
            ``{label: colour}``; default from :func:`label_colors`.
        show_labels : bool
            Write each box's label at its top-left corner.
        default_high_f : float, optional
            Top (Hz) for boxes without frequencies (default: the axes' top).

        Returns
        -------
        matplotlib Axes
        """
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3.5))
        sel = self
        if start_time is not None or end_time is not None or audio_file is not None:
            sel = self.boxes_overlapping(
                -np.inf if start_time is None else start_time, np.inf if end_time is None else end_time, audio_file
            )
        colors = colors or label_colors(self.unique_labels())
        top = default_high_f if default_high_f is not None else ax.get_ylim()[1]
        for row in sel.df.itertuples():
            low = 0.0 if pd.isna(row.low_f) else row.low_f
            high = top if pd.isna(row.high_f) else row.high_f
            color = colors.get(row.annotation, "black") if not pd.isna(row.annotation) else "black"
            ax.add_patch(Rectangle((row.start_time, low), row.end_time - row.start_time, high - low,
                                   fill=False, edgecolor=color, linewidth=1.5))
            if show_labels and not pd.isna(row.annotation):
                ax.text(row.start_time, high, str(row.annotation), color=color, fontsize=8,
                        va="bottom", ha="left", clip_on=True)
        return ax

    def global_one_hot_labels(self, classes) -> list:
        """One 0/1 per class in ``classes``: 1 if any box anywhere has that label."""
        present = set(self.unique_labels())
        return [int(c in present) for c in classes]

    # ------------------------------------------------------------------ writing
    def to_csv(self, path) -> Path:
        """Write ``df`` as CSV (atomically); read back with :meth:`from_csv`."""
        path = Path(path)
        with atomic_write(path, "w", newline="") as handle:
            self.df.to_csv(handle, index=False)
        return path

    def to_raven_files(self, save_dir, audio_files=None, annotation_column_name: str = "Annotation") -> list[Path]:
        """Write one Raven selection table per audio file into ``save_dir``.

        Files are named ``<audio stem>.Table.1.selections.txt`` (so
        :func:`pair_audio_and_tables` pairs them back) and written atomically.
        Columns: ``Selection, View, Channel, Begin Time (s), End Time (s),
        Low Freq (Hz), High Freq (Hz)``, the label column, then extra columns
        (e.g. scores). Raven Lite shows only the first non-standard column.

        Parameters
        ----------
        save_dir : str or Path
            Folder (created if missing).
        audio_files : list, optional
            Also write header-only tables for these files when they have no
            boxes. Defaults to :attr:`audio_files` when set.
        annotation_column_name : str
            Header of the label column.

        Returns
        -------
        list of Path
            The files written.

        Notes
        -----
        Boxes without frequencies get ``0`` Hz and the Nyquist frequency of the
        audio (when readable; otherwise ``0``), since Raven rejects empty
        frequency cells. Tabs and line breaks inside text cells become spaces.
        Boxes with no audio file go to ``unknown_audio.Table.1.selections.txt``.
        """
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        df = self.df.copy()
        df["audio_file"] = df["audio_file"].where(df["audio_file"].notna(), None)
        files = list(dict.fromkeys(f for f in df["audio_file"] if f is not None))
        extra_files = audio_files if audio_files is not None else (self.audio_files or [])
        files += [str(f) for f in extra_files if str(f) not in files]
        groups = [(f, df[df["audio_file"] == f]) for f in files]
        if df["audio_file"].isna().any():
            groups.append((None, df[df["audio_file"].isna()]))
        skip_cols = set(STANDARD_COLUMNS) | {"Selection", "View", "Channel"} | {
            c for c in df.columns if c.lower() in _RAVEN_BOX_COLUMNS or c.lower() in _MULTIFILE_COLUMNS
        }
        extras = [c for c in df.columns if c not in skip_cols]
        written, used_names = [], set()
        for audio, rows in groups:
            stem = Path(audio).stem if audio is not None else "unknown_audio"
            name = f"{stem}.Table.1.selections.txt"
            k = 2
            while name in used_names:  # two audio files with one stem in different folders
                name = f"{stem}_{k}.Table.1.selections.txt"
                k += 1
            used_names.add(name)
            nyquist = None
            if rows["high_f"].isna().any() and audio is not None:
                try:
                    from opso_nb.audio import audio_info

                    nyquist = audio_info(audio).sample_rate / 2
                except Exception:  # noqa: BLE001 - any unreadable audio: fall back to 0
                    nyquist = None
            out = pd.DataFrame(
                {
                    "Selection": np.arange(1, len(rows) + 1),
                    "View": rows["View"].fillna("Spectrogram 1").values if "View" in rows else "Spectrogram 1",
                    "Channel": rows["Channel"].fillna(1).astype(int).values if "Channel" in rows else 1,
                    "Begin Time (s)": rows["start_time"].values,
                    "End Time (s)": rows["end_time"].values,
                    "Low Freq (Hz)": rows["low_f"].fillna(0).values,
                    "High Freq (Hz)": rows["high_f"].fillna(nyquist if nyquist else 0).values,
                    annotation_column_name: rows["annotation"].values,
                }
            )
            for c in extras:
                out[c] = rows[c].values
            target = save_dir / name
            with atomic_write(target, "w", newline="", encoding="utf-8") as handle:
                handle.write(_raven_text(out))
            written.append(target)
        return written

    # ------------------------------------------------------------------ clip labels
    def one_hot_labels_like(
        self,
        clip_df: pd.DataFrame,
        min_label_overlap: float,
        min_label_fraction: float | None = None,
        class_subset=None,
        warn_no_annotations: bool = False,
    ) -> pd.DataFrame:
        """0/1 labels per class for the clips of ``clip_df``.

        A class is 1 in a clip if some box of that class overlaps the clip by at
        least ``min_label_overlap`` seconds **or** has at least
        ``min_label_fraction`` of its own length inside the clip.

        Parameters
        ----------
        clip_df : pandas.DataFrame
            Indexed by (file, start_time, end_time) (or with those columns), e.g.
            from :func:`opso_nb.utils.make_clip_df`.
        min_label_overlap : float
            Seconds of overlap needed (0.25 suits typical bird song). Boxes
            shorter than this only count through ``min_label_fraction``.
        min_label_fraction : float, optional
            Fraction (0-1) of a box inside the clip that also makes it count;
            0.5 guarantees every box labels at least one clip when clips tile
            the audio without gaps. ``None``: not used.
        class_subset : list, optional
            Classes (columns). Default: :meth:`unique_labels`.
        warn_no_annotations : bool
            Warn about files in ``clip_df`` that have no boxes.

        Returns
        -------
        pandas.DataFrame
            Index (file, start_time, end_time) as in ``clip_df``; one float
            0.0/1.0 column per class.
        """
        clip_df = validate_clip_table(clip_df, "clip_df")
        if min_label_overlap is None or min_label_overlap < 0:
            raise ValueError(f"min_label_overlap must be >= 0 seconds, got {min_label_overlap}")
        if min_label_fraction is not None and not 0 <= min_label_fraction <= 1:
            raise ValueError(f"min_label_fraction must be between 0 and 1, got {min_label_fraction}")
        classes = self.unique_labels() if class_subset is None else list(class_subset)
        files = clip_df.index.get_level_values("file").astype(str).to_numpy()
        starts = clip_df.index.get_level_values("start_time").to_numpy(dtype=float)
        ends = clip_df.index.get_level_values("end_time").to_numpy(dtype=float)
        out = np.zeros((len(clip_df), len(classes)), dtype=float)

        boxes = self.df[self.df["annotation"].isin(classes) & self.df["audio_file"].notna()]
        box_keys = _path_keys(boxes["audio_file"])
        clip_keys = _path_keys(pd.Series(files))
        class_pos = {c: i for i, c in enumerate(classes)}
        no_boxes = []
        matched_any = False
        box_groups = pd.Series(np.arange(len(boxes))).groupby(box_keys.to_numpy()).indices if len(boxes) else {}
        clip_groups = pd.Series(np.arange(len(files))).groupby(clip_keys.to_numpy()).indices if len(files) else {}
        for key, rows in clip_groups.items():
            if key not in box_groups:
                no_boxes.append(files[rows[0]])
                continue
            fb = boxes.iloc[box_groups[key]]
            matched_any = True
            b_start = fb["start_time"].to_numpy(float)
            b_end = fb["end_time"].to_numpy(float)
            b_cls = np.array([class_pos[a] for a in fb["annotation"]])
            clip_idx, box_idx = _candidate_pairs(starts[rows], ends[rows], b_start, b_end)
            c_start, c_end = starts[rows][clip_idx], ends[rows][clip_idx]
            bs, be = b_start[box_idx], b_end[box_idx]
            b_len = be - bs
            # a box touches a clip if they overlap, or (zero-length box) it lies in [clip start, clip end)
            touches = ((bs < c_end) & (be > c_start)) | ((b_len == 0) & (bs >= c_start) & (bs < c_end))
            overlap = np.minimum(c_end, be) - np.maximum(c_start, bs)
            hit = touches & (overlap >= min_label_overlap - _EPS)
            if min_label_fraction is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    frac = np.where(b_len > 0, overlap / np.where(b_len > 0, b_len, 1), 1.0)
                hit |= touches & (frac >= min_label_fraction - _EPS)
            out[rows[clip_idx[hit]], b_cls[box_idx[hit]]] = 1.0
        unused = boxes[~box_keys.isin(set(clip_groups)).to_numpy()]
        if len(boxes) and len(files) and not matched_any:
            warnings.warn(
                "none of the files in clip_df match the audio_file of any annotation "
                f"(e.g. clip file {files[0]!r} vs annotation file {boxes['audio_file'].iloc[0]!r}); "
                "all labels are 0. Check the paths.",
                stacklevel=2,
            )
        elif len(unused) and warn_no_annotations:
            warnings.warn(f"{len(unused)} boxes are in files not listed in clip_df", stacklevel=2)
        if warn_no_annotations and no_boxes:
            warnings.warn(f"{len(no_boxes)} file(s) in clip_df have no annotations, e.g. {no_boxes[0]}", stacklevel=2)
        return pd.DataFrame(out, index=clip_df.index, columns=classes)

    def one_hot_clip_labels(
        self,
        clip_duration: float,
        clip_overlap: float = 0,
        min_label_overlap: float = 0.25,
        min_label_fraction: float | None = None,
        full_duration=None,
        class_subset=None,
        final_clip: str | None = None,
        audio_files=None,
        return_invalid_samples: bool = False,
    ):
        """Cut every audio file into fixed-length clips and label them 0/1 per class.

        Clips are made as :meth:`opso_nb.audio.Audio.split` would (see
        :func:`opso_nb.utils.generate_clip_times_df`); labels as in
        :meth:`one_hot_labels_like`.

        Parameters
        ----------
        clip_duration : float
            Clip length, seconds.
        clip_overlap : float
            Seconds shared by consecutive clips.
        min_label_overlap, min_label_fraction, class_subset
            As in :meth:`one_hot_labels_like`.
        full_duration : float or dict, optional
            Seconds of audio to cover (one number for all files, or
            ``{audio_file: seconds}``). Default: each file's duration, read from
            its header.
        final_clip : {None, "remainder", "full", "extend"}
            What to do with the leftover shorter than a clip.
        audio_files : list, optional
            Files to label, including files without boxes (all-zero rows).
            Default: :attr:`audio_files` if set, else the files in ``df``.
        return_invalid_samples : bool
            Also return a DataFrame (file, error) of audio files whose duration
            could not be read; they are skipped either way (with a warning).

        Returns
        -------
        pandas.DataFrame or (pandas.DataFrame, pandas.DataFrame)
        """
        from opso_nb.audio import AudioLoadError, audio_info

        if audio_files is None:
            audio_files = self.audio_files
        if audio_files is None:
            audio_files = list(pd.unique(self.df["audio_file"].dropna().astype(str)))
        audio_files = [str(f) for f in _as_list(audio_files)]
        if self.df["audio_file"].isna().any():
            warnings.warn(
                f"{int(self.df['audio_file'].isna().sum())} box(es) have no audio_file and cannot be "
                "assigned to clips; pass audio_files to from_raven_files",
                stacklevel=2,
            )
        frames, invalid, durations = [], [], {}
        for f in audio_files:
            if isinstance(full_duration, dict):
                duration = full_duration.get(f)
            else:
                duration = full_duration
            if duration is None:
                try:
                    duration = audio_info(f).duration
                except AudioLoadError as err:
                    invalid.append((f, str(err)))
                    continue
            times = generate_clip_times_df(duration, clip_duration, clip_overlap, final_clip)
            times.insert(0, "file", f)
            frames.append(times)
            durations[_path_key(f)] = float(duration)
        # boxes past the end of their recording cannot label any clip: say so
        if durations and len(self.df):
            keys = _path_keys(self.df["audio_file"].where(self.df["audio_file"].notna(), ""))
            limit = keys.map(durations).to_numpy(dtype=float)
            beyond = self.df["start_time"].to_numpy(dtype=float) >= limit  # NaN limit -> False
            if beyond.any():
                first = self.df.iloc[int(np.flatnonzero(beyond)[0])]
                warnings.warn(
                    f"{int(beyond.sum())} box(es) start after the end of their audio file and label no clip "
                    f"(e.g. {first['annotation']} at {first['start_time']:.3f} s in {first['audio_file']}, "
                    f"which lasts {durations[_path_key(str(first['audio_file']))]:.3f} s)",
                    stacklevel=2,
                )
        if invalid:
            warnings.warn(
                f"skipped {len(invalid)} audio file(s) whose duration could not be read: "
                + "; ".join(e for _, e in invalid[:3]),
                stacklevel=2,
            )
        clip_df = (pd.concat(frames, ignore_index=True) if frames
                   else pd.DataFrame(columns=CLIP_INDEX)).set_index(CLIP_INDEX)
        labels = self.one_hot_labels_like(clip_df, min_label_overlap, min_label_fraction, class_subset)
        if return_invalid_samples:
            return labels, pd.DataFrame(invalid, columns=["file", "error"])
        return labels


#: Colour-blind-friendly categorical palette (Okabe & Ito) used for box labels.
LABEL_PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")


def label_colors(labels) -> dict:
    """``{label: hex colour}``, cycling through :data:`LABEL_PALETTE` in the order given."""
    return {label: LABEL_PALETTE[i % len(LABEL_PALETTE)] for i, label in enumerate(labels)}


def _candidate_pairs(c_start, c_end, b_start, b_end):
    """(clip index, box index) pairs that may overlap, found by binary search on clip starts.

    A clip can only touch a box if it starts at or before the box ends and after
    ``box start - longest clip``; only those pairs are generated, so the cost
    grows with clips + boxes + overlaps, not clips x boxes.
    """
    if len(c_start) == 0 or len(b_start) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(c_start, kind="stable")
    sorted_start = c_start[order]
    longest = float(np.max(c_end - c_start))
    lo = np.searchsorted(sorted_start, b_start - longest - _EPS, side="left")
    hi = np.searchsorted(sorted_start, b_end, side="right")
    counts = np.maximum(hi - lo, 0)
    box_idx = np.repeat(np.arange(len(b_start)), counts)
    # position within each box's run of candidate clips
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    offsets = np.arange(int(counts.sum())) - run_start
    clip_idx = order[np.repeat(lo, counts) + offsets]
    return clip_idx, box_idx


def _path_key(p: str) -> str:
    """Key for matching one file named by different spellings (relative/absolute, ./, ..)."""
    return os.path.normcase(os.path.normpath(os.path.abspath(p)))


def _path_keys(paths: pd.Series) -> pd.Series:
    """:func:`_path_key` of each path, computed once per distinct path."""
    paths = paths.astype(str)
    unique = pd.unique(paths)
    lookup = {p: _path_key(p) for p in unique}
    return paths.map(lookup).reset_index(drop=True)


def _raven_text(out: pd.DataFrame) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        if isinstance(v, (float, np.floating)):
            return repr(float(v))
        return re.sub(r"[\t\r\n]+", " ", str(v))

    lines = ["\t".join(out.columns)]
    for row in out.itertuples(index=False):
        lines.append("\t".join(cell(v) for v in row))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- module functions


def one_hot_labels_on_time_interval(
    df: pd.DataFrame,
    class_subset,
    start_time: float,
    end_time: float,
    min_label_overlap: float,
    min_label_fraction: float | None = None,
) -> dict:
    """``{class: 0/1}`` for one interval of one file (``df`` has start_time, end_time, annotation)."""
    boxes = BoxedAnnotations(df.assign(audio_file="_"))
    clip = pd.DataFrame({"file": ["_"], "start_time": [start_time], "end_time": [end_time]})
    labels = boxes.one_hot_labels_like(clip, min_label_overlap, min_label_fraction, class_subset)
    return {c: int(v) for c, v in labels.iloc[0].items()}


def categorical_to_one_hot(labels, class_subset=None):
    """List of label lists -> (2-D 0/1 array, classes).

    Examples
    --------
    >>> arr, classes = categorical_to_one_hot([["white", "red"], ["green", "white"]])
    >>> classes, arr.tolist()
    (['white', 'red', 'green'], [[1, 1, 0], [1, 0, 1]])
    """
    if class_subset is None:
        class_subset = list(dict.fromkeys(x for row in labels for x in row))
    pos = {c: i for i, c in enumerate(class_subset)}
    one_hot = np.zeros((len(labels), len(class_subset)), dtype=int)
    for r, row in enumerate(labels):
        for x in row:
            if x in pos:
                one_hot[r, pos[x]] = 1
    return one_hot, list(class_subset)


def one_hot_to_categorical(one_hot, classes) -> list[list]:
    """2-D 0/1 array (rows = samples, columns = ``classes``) -> list of present classes per row."""
    one_hot = np.asarray(one_hot)
    return [[classes[j] for j in np.flatnonzero(row)] for row in one_hot]


# --------------------------------------------------------------------------- pairing files

_TABLE_SUFFIX = re.compile(
    r"(\.table\.\d+)?(\.selections\d*)?(\.annotations)?\.txt$", flags=re.IGNORECASE
)
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".aif", ".aiff")


def table_stem(path) -> str:
    """Name of an annotation table without Raven's suffixes.

    Examples
    --------
    >>> table_stem("site1/20200401_0500.Table.1.selections.txt")
    '20200401_0500'
    >>> table_stem("a.b.selections.txt")
    'a.b'
    """
    return _TABLE_SUFFIX.sub("", Path(path).name)


@dataclass
class FilePairing:
    """Audio files paired with their annotation tables by name.

    Attributes
    ----------
    pairs : pandas.DataFrame
        Index ``stem``; columns ``audio_file`` and ``annotation_file``.
    audio_without_table : list of str
        Audio files no table matched.
    tables_without_audio : list of str
        Tables no audio file matched.
    ambiguous : pandas.DataFrame
        Columns ``stem, kind, file``: names shared by more than one audio file
        or table; those are left unpaired for a person to resolve.
    """

    pairs: pd.DataFrame
    audio_without_table: list = field(default_factory=list)
    tables_without_audio: list = field(default_factory=list)
    ambiguous: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["stem", "kind", "file"]))

    def __repr__(self) -> str:
        return (
            f"FilePairing({len(self.pairs)} pairs, {len(self.audio_without_table)} audio without table, "
            f"{len(self.tables_without_audio)} tables without audio, "
            f"{self.ambiguous['stem'].nunique()} ambiguous names)"
        )

    def load(self, **kwargs) -> BoxedAnnotations:
        """Load all pairs: Raven tables with :meth:`BoxedAnnotations.from_raven_files`, other
        ``.txt`` files as Audacity label tracks. Keyword arguments go to ``from_raven_files``.
        """
        objects = [
            load_table(t, audio_file=a, **kwargs)
            for a, t in zip(self.pairs["audio_file"], self.pairs["annotation_file"])
        ]
        if not objects:
            return BoxedAnnotations(audio_files=[])
        return BoxedAnnotations.concat(objects)


def load_table(path, audio_file=None, **kwargs) -> BoxedAnnotations:
    """Load one annotation table, Raven selection table or Audacity label track (detected from the header).

    Keyword arguments go to :meth:`BoxedAnnotations.from_raven_files` (only
    ``lowercase_labels`` and ``errors`` apply to Audacity files).
    """
    audio = [audio_file] if audio_file is not None else None
    if is_raven_table(path) or not Path(path).exists():
        return BoxedAnnotations.from_raven_files([path], audio_files=audio, **kwargs)
    keep = {k: v for k, v in kwargs.items() if k in ("lowercase_labels", "errors")}
    return BoxedAnnotations.from_audacity([path], audio_files=audio, **keep)


def _list_files(where, extensions, recursive):
    if where is None:
        return []
    if isinstance(where, (str, os.PathLike)) and Path(where).is_dir():
        pattern = "**/*" if recursive else "*"
        return sorted(
            str(p) for p in Path(where).glob(pattern)
            if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")
        )
    if isinstance(where, (str, os.PathLike)):
        if not Path(where).exists():
            raise FileNotFoundError(f"{where}: no such file or folder")
        return [str(where)]
    return [str(p) for p in where]


def pair_audio_and_tables(
    audio, tables=None, audio_extensions=AUDIO_EXTENSIONS, recursive: bool = False
) -> FilePairing:
    """Pair audio files with annotation tables whose names match.

    ``rec1.wav`` pairs with ``rec1.Table.1.selections.txt``, ``rec1.selections.txt``
    or ``rec1.txt``. Names are compared exactly (case-sensitive).

    Parameters
    ----------
    audio : folder or list of files
        Audio files (a folder is searched for ``audio_extensions``).
    tables : folder or list of files, optional
        Tables (``.txt``); default: the ``.txt`` files in the folder(s) of the audio.
    recursive : bool
        Search folders recursively.

    Returns
    -------
    FilePairing
        Pairs plus everything that could not be paired (never silently dropped).
    """
    exts = tuple(e.lower() for e in audio_extensions)
    audio_list = _list_files(audio, exts, recursive)
    if tables is None:
        # default: look for tables next to the audio files
        folders = [audio] if isinstance(audio, (str, os.PathLike)) and Path(audio).is_dir() else sorted(
            {str(Path(f).parent) for f in audio_list})
        table_list = sorted({t for d in folders for t in _list_files(d, (".txt",), recursive)})
    else:
        table_list = _list_files(tables, (".txt",), recursive)
    a = pd.DataFrame({"stem": [Path(f).stem for f in audio_list], "file": audio_list})
    t = pd.DataFrame({"stem": [table_stem(f) for f in table_list], "file": table_list})
    amb_a = a[a["stem"].duplicated(keep=False)].assign(kind="audio")
    amb_t = t[t["stem"].duplicated(keep=False)].assign(kind="table")
    ambiguous = pd.concat([amb_a, amb_t], ignore_index=True)[["stem", "kind", "file"]]
    bad = set(ambiguous["stem"])
    a1 = a[~a["stem"].isin(bad)].set_index("stem")["file"].rename("audio_file")
    t1 = t[~t["stem"].isin(bad)].set_index("stem")["file"].rename("annotation_file")
    joined = pd.concat([a1, t1], axis=1)
    pairs = joined.dropna().sort_index()
    pairs.index.name = "stem"
    return FilePairing(
        pairs=pairs,
        audio_without_table=sorted(joined.loc[joined["annotation_file"].isna(), "audio_file"]),
        tables_without_audio=sorted(joined.loc[joined["audio_file"].isna(), "annotation_file"]),
        ambiguous=ambiguous,
    )
