"""Pieces shared by every part of :mod:`opso_nb.annotations`: the error type, column names, path keys."""
from __future__ import annotations

import os

import pandas as pd

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

#: Columns of ``BoxedAnnotations.report``.
REPORT_COLUMNS = ["annotation_file", "line", "column", "action", "problem"]

# Float noise guard for overlap comparisons (seconds or fraction).
EPS = 1e-9


class AnnotationTableError(ValueError):
    """An annotation table is malformed or cannot be read.

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

    def report_row(self, action: str) -> tuple:
        """This problem as one row of ``BoxedAnnotations.report`` (see :data:`REPORT_COLUMNS`)."""
        return (self.path, float("nan") if self.line is None else self.line, self.column, action, self.reason)


def as_list(files) -> list | None:
    """``None`` stays None, one path becomes ``[path]``, anything else a list."""
    if files is None:
        return None
    if isinstance(files, (str, os.PathLike)):
        return [files]
    return list(files)


def path_key(path: str) -> str:
    """Key for matching one file named by different spellings (relative/absolute, ./, ..)."""
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


def path_keys(paths: pd.Series) -> pd.Series:
    """:func:`path_key` of each path, computed once per distinct path."""
    paths = paths.astype(str)
    lookup = {p: path_key(p) for p in pd.unique(paths)}
    return paths.map(lookup).reset_index(drop=True)


def short_list(names, most: int = 12, width: int = 40) -> str:
    """``names`` for an error message: at most ``most`` of them, each cut to ``width`` characters."""
    names = [str(n) if len(str(n)) <= width else str(n)[: width - 1] + "…" for n in names]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return repr(names[:most]) + more
