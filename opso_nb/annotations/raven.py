"""Raven Pro/Lite selection tables: reading one table into boxes, and writing boxes back as text.

A selection table is tab-separated text with a header row. Reading goes in
named steps (:func:`read_raven_table`):

1. the file is read and decoded (:func:`opso_nb.annotations._text.read_table_text`);
2. the header says where the box coordinates, labels and other columns are
   (:func:`_read_header`, :func:`_annotation_column_index`, :func:`_extra_column_indices`);
3. the rows become a table of text cells (:func:`_cell_table`);
4. times and frequencies are parsed and checked, and each bad row gets an
   :class:`AnnotationTableError` (:func:`_box_coordinates`, :func:`_row_problems`);
5. bad rows raise or are reported, per ``errors`` (:func:`_handle_problems`);
6. labels, audio files and extra columns are assembled (:func:`_assemble`);
7. a selection listed once per Raven view is kept once (:func:`_drop_view_duplicates`),
   and rows that share a selection number but differ are kept and reported
   (:func:`_report_repeated_selections`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from opso_nb.annotations._common import (
    DEFAULT_ANNOTATION_COLUMNS,
    STANDARD_COLUMNS,
    AnnotationTableError,
    short_list,
)
from opso_nb.annotations._text import maybe_numeric, parse_numbers, read_table_text, split_rows

__all__ = ["RAVEN_COLUMNS", "is_raven_table", "raven_table_text", "read_raven_table"]

#: Raven column (lower case) -> BoxedAnnotations column, for the four box coordinates.
RAVEN_BOX_COLUMNS = {
    "begin time (s)": "start_time",
    "end time (s)": "end_time",
    "low freq (hz)": "low_f",
    "high freq (hz)": "high_f",
}
#: BoxedAnnotations column -> Raven's header for it.
RAVEN_COLUMNS = {
    "start_time": "Begin Time (s)",
    "end_time": "End Time (s)",
    "low_f": "Low Freq (Hz)",
    "high_f": "High Freq (Hz)",
}
#: Columns of Raven's multi-file tables (lower case).
MULTIFILE_COLUMNS = ("begin file", "begin path", "file offset (s)")

_UNITS = {"start_time": "seconds", "end_time": "seconds", "low_f": "Hz", "high_f": "Hz"}

# Tabs and line breaks would break the table; other control characters Raven cannot show.
_UNWRITABLE = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass
class _Layout:
    """Where things are in one table's header (0-based column positions)."""

    header: list
    header_line: int
    box: dict  # start_time/end_time/low_f/high_f -> position or None
    annotation: int | None = None
    offset: int | None = None
    begin_path: int | None = None
    begin_file: int | None = None
    view: int | None = None
    selection: int | None = None
    channel: int | None = None
    extras: list = field(default_factory=list)

    def name(self, position: int) -> str:
        return self.header[position]


def _find_column(names_lower: list, wanted) -> int | None:
    for w in wanted:
        w = str(w).strip().lower()
        if w in names_lower:
            return names_lower.index(w)
    return None


# --------------------------------------------------------------------------- steps


def _read_header(path: Path, header_row: tuple, column_mapping_dict: dict | None) -> _Layout:
    """Column names (trailing empty names dropped, renamed per ``column_mapping_dict``) and box positions."""
    header_line, cells = header_row
    header = [h.strip().lstrip("\ufeff") for h in cells]
    while header and header[-1] == "":  # some Raven versions end the header with a tab
        header.pop()
    if column_mapping_dict:
        mapping = {str(k).lower(): v for k, v in column_mapping_dict.items()}
        header = [str(mapping.get(h.lower(), h)) for h in header]
    names_lower = [h.lower() for h in header]
    dupes = sorted({h for h in names_lower if h != "" and names_lower.count(h) > 1})
    if dupes:
        raise AnnotationTableError(path, f"header has duplicate column names {short_list(dupes)}", line=header_line)
    box = {ours: _find_column(names_lower, [raven, ours]) for raven, ours in RAVEN_BOX_COLUMNS.items()}
    for ours in ("start_time", "end_time"):
        if box[ours] is None:
            raise AnnotationTableError(
                path,
                f"no {RAVEN_COLUMNS[ours]!r} column (columns are {short_list(header)}); "
                "is this a Raven selection table?",
                line=header_line,
                column=RAVEN_COLUMNS[ours],
            )
    return _Layout(
        header=header,
        header_line=header_line,
        box=box,
        offset=_find_column(names_lower, ["file offset (s)"]),
        begin_path=_find_column(names_lower, ["begin path"]),
        begin_file=_find_column(names_lower, ["begin file"]),
        view=_find_column(names_lower, ["view"]),
        selection=_find_column(names_lower, ["selection"]),
        channel=_find_column(names_lower, ["channel"]),
    )


def _annotation_column_index(path: Path, layout: _Layout, annotation_column, report: list) -> int | None:
    """Position of the label column; a table without the wanted column is reported (labels left empty)."""
    header = layout.header
    if annotation_column is None:
        return None
    if isinstance(annotation_column, (int, np.integer)) and not isinstance(annotation_column, bool):
        position = int(annotation_column)
        if not 0 <= position < len(header):
            raise AnnotationTableError(
                path,
                f"annotation_column={position} but the table has only {len(header)} columns {short_list(header)}",
                line=layout.header_line,
            )
        return position
    if isinstance(annotation_column, str) and annotation_column == "auto":
        wanted = list(DEFAULT_ANNOTATION_COLUMNS)
    elif isinstance(annotation_column, str):
        wanted = [annotation_column]
    else:
        wanted = list(annotation_column)
    position = _find_column([h.lower() for h in header], wanted)
    if position is None:
        report.append(AnnotationTableError(
            path, f"no annotation column (looked for {wanted}; columns are {short_list(header)})"
        ).report_row("labels left empty"))
    return position


def _extra_column_indices(layout: _Layout, keep_extra_columns) -> list:
    """Positions of the other columns to keep: all, none, or those named (case-insensitive)."""
    if keep_extra_columns is False or keep_extra_columns is None:
        return []
    used = {i for i in layout.box.values() if i is not None}
    if layout.annotation is not None:
        used.add(layout.annotation)
    header = layout.header
    extras = [i for i in range(len(header)) if i not in used and header[i] != ""]
    if keep_extra_columns is not True:
        keep = {str(k).lower() for k in ([keep_extra_columns] if isinstance(keep_extra_columns, str)
                                         else keep_extra_columns)}
        extras = [i for i in extras if header[i].lower() in keep]
    # an extra column must not shadow a standard column of the same name
    return [i for i in extras if header[i] not in STANDARD_COLUMNS]


def _cell_table(path: Path, data_rows: list, layout: _Layout) -> tuple[pd.DataFrame, np.ndarray, list]:
    """Data rows as a DataFrame of stripped text cells (one column per header position).

    Raven leaves trailing empty cells off, so short rows are padded with "".
    Returns the cells, the line number of each row, and an
    :class:`AnnotationTableError` (or None) per row for rows with more
    non-empty cells than the header has columns.
    """
    width = len(layout.header)
    lines = np.array([line for line, _ in data_rows], dtype=np.int64)
    problems = [None] * len(data_rows)
    cells = []
    for k, (line, row) in enumerate(data_rows):
        if len(row) > width and any(c.strip() for c in row[width:]):
            problems[k] = AnnotationTableError(
                path, f"row has {len(row)} cells but the header has {width} columns", line=line, row=k + 1
            )
        row = [c.strip() for c in row[:width]]
        cells.append(row + [""] * (width - len(row)))
    table = np.empty((len(cells), width), dtype=object)
    if cells:
        table[:] = cells
    frame = pd.DataFrame(table, columns=range(width), dtype=object)
    return frame, lines, problems


def _box_coordinates(cells: pd.DataFrame, layout: _Layout) -> tuple[dict, dict]:
    """Times (s) and frequencies (Hz) as floats, times moved into each row's own file for multi-file tables.

    Returns ``(values, not_numbers)``: arrays per coordinate (plus ``"offset"``
    when the table has a ``File Offset (s)`` column), and masks of cells that
    are not ASCII decimal numbers.
    """
    values, not_numbers = {}, {}
    for ours, position in layout.box.items():
        if position is None:
            values[ours] = np.full(len(cells), np.nan)
            not_numbers[ours] = np.zeros(len(cells), dtype=bool)
        else:
            values[ours], not_numbers[ours] = parse_numbers(cells[position])
    if layout.offset is not None:
        offset, not_numbers["offset"] = parse_numbers(cells[layout.offset])
        # Begin Time counts from the start of the file list, File Offset from the start
        # of this row's own file: the box keeps its length and starts at the offset.
        moved = ~np.isnan(offset)
        length = values["end_time"] - values["start_time"]
        values["start_time"] = np.where(moved, offset, values["start_time"])
        values["end_time"] = np.where(moved, offset + length, values["end_time"])
    return values, not_numbers


def _not_a_number(text: str, what: str) -> str:
    return f"text {text!r} where a number ({what}) belongs; write numbers with ASCII digits 0-9 and '.' for decimals"


def _row_problems(path: Path, cells: pd.DataFrame, lines: np.ndarray, layout: _Layout, values: dict,
                  not_numbers: dict, problems: list) -> list:
    """The first problem of each row (checks in a fixed order), as :class:`AnnotationTableError` or None."""
    header = layout.header

    def flag(mask, column_position, describe):
        for k in np.flatnonzero(mask):
            if problems[k] is None:
                problems[k] = AnnotationTableError(
                    path, describe(k), line=int(lines[k]), row=k + 1,
                    column=None if column_position is None else header[column_position],
                )

    for ours in ("start_time", "end_time", "low_f", "high_f"):
        position = layout.box[ours]
        if position is not None:
            flag(not_numbers[ours], position,
                 lambda k, p=position, o=ours: _not_a_number(cells.iat[k, p], f"{o}, {_UNITS[o]}"))
    if layout.offset is not None:
        flag(not_numbers["offset"], layout.offset, lambda k: _not_a_number(cells.iat[k, layout.offset], "seconds"))
    with np.errstate(invalid="ignore"):
        for ours in ("start_time", "end_time"):
            v, position = values[ours], layout.box[ours]
            flag(np.isnan(v), position, lambda k: "missing value")
            flag(np.isinf(v), position, lambda k, v=v: f"not a finite number ({v[k]})")
            flag(v < 0, position, lambda k, v=v: f"negative time {v[k]} s")
        start, end = values["start_time"], values["end_time"]
        flag(end < start, layout.box["end_time"], lambda k: f"ends ({end[k]} s) before it starts ({start[k]} s)")
        for ours in ("low_f", "high_f"):
            v, position = values[ours], layout.box[ours]
            if position is not None:
                flag(np.isinf(v), position, lambda k, v=v: f"not a finite number ({v[k]})")
                flag(v < 0, position, lambda k, v=v: f"negative frequency {v[k]} Hz")
        low, high = values["low_f"], values["high_f"]
        if layout.box["high_f"] is not None:
            flag(high < low, layout.box["high_f"],
                 lambda k: f"high frequency ({high[k]} Hz) below low frequency ({low[k]} Hz)")
    return problems


def _handle_problems(problems: list, errors: str, report: list) -> np.ndarray:
    """Raise the first problem (``errors="raise"``) or report every one; returns the mask of good rows."""
    bad = [p for p in problems if p is not None]
    if bad and errors == "raise":
        raise bad[0]
    report.extend(p.report_row("skipped row") for p in bad)
    return np.array([p is None for p in problems], dtype=bool)


def _audio_file_column(cells: pd.DataFrame, layout: _Layout, audio_file, path: Path) -> pd.Series:
    """Audio file of each row: the one given, else ``Begin Path``, else ``Begin File`` (found next to the table)."""
    if audio_file is not None:
        return pd.Series(str(audio_file), index=cells.index, dtype=object)
    out = pd.Series(np.nan, index=cells.index, dtype=object)
    if layout.begin_file is not None:
        names = cells[layout.begin_file]
        resolved = {n: _resolve_audio_name(n, path) for n in pd.unique(names) if n}
        out = names.map(resolved).where(names != "", out)
    if layout.begin_path is not None:
        paths = cells[layout.begin_path]
        out = paths.where(paths != "", out)
    return out


def _resolve_audio_name(name: str, table: Path) -> str:
    """A ``Begin File`` name, resolved next to the table when such a file exists there."""
    candidate = table.parent / name
    return str(candidate) if candidate.exists() else name


def _assemble(cells: pd.DataFrame, values: dict, layout: _Layout, audio_file, lowercase_labels: bool,
              path: Path) -> pd.DataFrame:
    """The boxes table: standard columns, then extra columns (numbers where every cell is one)."""
    if layout.annotation is None:
        labels = pd.Series(np.nan, index=cells.index, dtype=object)
    else:
        labels = cells[layout.annotation].where(cells[layout.annotation] != "", np.nan)
        if lowercase_labels:
            labels = labels.str.lower()
    df = pd.DataFrame({
        "audio_file": _audio_file_column(cells, layout, audio_file, path),
        "annotation_file": pd.Series(str(path), index=cells.index, dtype=object),
        "annotation": labels,
        **{ours: values[ours] for ours in ("start_time", "end_time", "low_f", "high_f")},
    }, index=cells.index, columns=STANDARD_COLUMNS)
    for position in layout.extras:
        df[layout.name(position)] = maybe_numeric(cells[position].where(cells[position] != "", np.nan))
    return df


def _drop_view_duplicates(df: pd.DataFrame, cells: pd.DataFrame, lines: np.ndarray, layout: _Layout,
                          path: Path, report: list) -> np.ndarray:
    """Mask of rows to keep when Raven lists one selection once per view.

    Raven writes a selection once for each view it was drawn in (``Waveform 1``,
    ``Spectrogram 1``): same selection number, same times, another view. One
    row per such group is kept, from a spectrogram view when there is one.
    Rows that share a selection number but not the times are different boxes
    and are all kept (see :func:`_report_repeated_selections`).
    """
    keep = np.ones(len(df), dtype=bool)
    if layout.view is None or layout.selection is None or len(df) == 0:
        return keep
    selection = cells[layout.selection]
    view = cells[layout.view]
    key_columns = [selection, df["audio_file"].fillna(""), df["start_time"], df["end_time"]]
    if layout.channel is not None:
        key_columns.append(cells[layout.channel])
    keys = pd.DataFrame({i: np.asarray(c) for i, c in enumerate(key_columns)})
    group = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
    has_selection = (selection != "").to_numpy()
    is_spectrogram = view.str.lower().str.startswith("spectrogram").to_numpy()
    # the row kept for each group: the first spectrogram view listed, else the first row
    order = np.lexsort((np.arange(len(df)), ~is_spectrogram))
    groups_in_order, first = np.unique(group[order], return_index=True)
    kept_row = np.empty(group.max() + 1, dtype=np.int64)
    kept_row[groups_in_order] = order[first]
    group_first = kept_row[group]
    preferred_view = view.to_numpy()[group_first]
    dropped = has_selection & (view.to_numpy() != preferred_view)
    for k in np.flatnonzero(dropped):
        report.append(AnnotationTableError(
            path,
            f"selection {selection.iat[k]} is listed again in view {view.iat[k]!r} with the same times; "
            f"the {preferred_view[k]!r} row (line {lines[group_first[k]]}) is kept",
            line=int(lines[k]), column=layout.name(layout.view),
        ).report_row("dropped duplicate"))
    keep[dropped] = False
    return keep


def _report_repeated_selections(cells: pd.DataFrame, lines: np.ndarray, layout: _Layout, path: Path,
                                report: list) -> None:
    """Report rows whose selection number an earlier, different box already has (all are kept)."""
    if layout.selection is None or len(cells) == 0:
        return
    selection = cells[layout.selection]
    repeated = selection.duplicated(keep="first").to_numpy() & (selection != "").to_numpy()
    if not repeated.any():
        return
    first_line = pd.Series(lines, index=selection.index).groupby(selection.to_numpy()).transform("first")
    for k in np.flatnonzero(repeated):
        report.append(AnnotationTableError(
            path,
            f"selection number {selection.iat[k]} is also used by the box on line {first_line.iat[k]}; "
            "both are kept as distinct boxes",
            line=int(lines[k]), column=layout.name(layout.selection),
        ).report_row("kept repeated selection"))


# --------------------------------------------------------------------------- public


def read_raven_table(
    path,
    audio_file=None,
    annotation_column="auto",
    keep_extra_columns=True,
    lowercase_labels: bool = False,
    errors: str = "raise",
    column_mapping_dict: dict | None = None,
) -> tuple[pd.DataFrame, list]:
    """Read one Raven selection table.

    Parameters are those of :meth:`opso_nb.annotations.BoxedAnnotations.from_raven_files`
    for one table and its audio file.

    Returns
    -------
    df : pandas.DataFrame
        One row per box: the standard columns, then the extra columns kept.
    report : list of tuple
        Rows of ``BoxedAnnotations.report`` (skipped rows, dropped duplicates,
        repeated selection numbers, a missing label column).

    Raises
    ------
    AnnotationTableError
        The file cannot be read as a selection table; or, with ``errors="raise"``,
        the first malformed row.
    """
    path = Path(path)
    rows = split_rows(read_table_text(path))
    if not rows:
        raise AnnotationTableError(
            path, "file is empty: not even a header row (a Raven table with no selections still has one)"
        )
    report: list = []
    layout = _read_header(path, rows[0], column_mapping_dict)
    layout.annotation = _annotation_column_index(path, layout, annotation_column, report)
    layout.extras = _extra_column_indices(layout, keep_extra_columns)
    cells, lines, problems = _cell_table(path, rows[1:], layout)
    values, not_numbers = _box_coordinates(cells, layout)
    problems = _row_problems(path, cells, lines, layout, values, not_numbers, problems)
    good = _handle_problems(problems, errors, report)
    df = _assemble(cells, values, layout, audio_file, lowercase_labels, path)
    df, cells, lines = df[good], cells[good], lines[good]
    keep = _drop_view_duplicates(df, cells, lines, layout, path, report)
    df, cells, lines = df[keep], cells[keep], lines[keep]
    _report_repeated_selections(cells, lines, layout, path, report)
    report.sort(key=lambda r: (np.inf if pd.isna(r[1]) else r[1]))
    return df.reset_index(drop=True), report


def is_raven_table(path) -> bool:
    """True if the first non-blank line of ``path`` looks like a Raven header (has ``Begin Time (s)``)."""
    try:
        rows = split_rows(read_table_text(path))
    except AnnotationTableError:
        return False
    return bool(rows) and any(c.strip().lower().lstrip("\ufeff") == "begin time (s)" for c in rows[0][1])


def _text_cells(column: pd.Series) -> list:
    """One column as Raven cells: floats exactly (``repr``), NaN empty, text without tabs or line breaks."""
    values = column.to_numpy(dtype=object)
    out = []
    for v in values:
        if isinstance(v, str):
            out.append(_UNWRITABLE.sub(" ", v))
        elif v is None or (pd.api.types.is_scalar(v) and pd.isna(v)):
            out.append("")
        elif isinstance(v, (float, np.floating)):
            out.append(repr(float(v)))
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            out.append(str(int(v)))
        else:
            out.append(_UNWRITABLE.sub(" ", str(v)))
    return out


def raven_table_text(table: pd.DataFrame) -> str:
    """A DataFrame (columns named as Raven's) as the text of a selection table: tab-separated, LF line ends."""
    header = "\t".join(_UNWRITABLE.sub(" ", str(c)) for c in table.columns)
    columns = [_text_cells(table[c]) for c in table.columns]
    lines = [header] + ["\t".join(cells) for cells in zip(*columns)]
    return "\n".join(lines) + "\n"
