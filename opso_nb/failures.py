"""One table of failures for every batch operation in opso_nb.

Training, validation, prediction, class activation maps, RIBBIT over folders,
clip tables and localization all report what they could not do in the same
shape, so a user (or a dashboard) reads every failure list the same way:

========== ===========================================================
column     meaning
========== ===========================================================
file       the input file (str; a non-UTF-8 name keeps its surrogate escapes)
start_time start of the clip in seconds (NaN: the whole file)
end_time   end of the clip in seconds (NaN: the whole file)
stage      what was being done: ``"load"``, ``"preprocess"``, ``"score"``,
           ``"write"``, ``"quarantine"`` ...
error      exception type and message, e.g. ``"AudioLoadError: x.wav: file is empty"``
========== ===========================================================
"""
from __future__ import annotations

import math

import pandas as pd

__all__ = ["FAILURE_COLUMNS", "STAGES", "describe_error", "failure_record", "failures_frame", "summarize_failures"]

FAILURE_COLUMNS = ["file", "start_time", "end_time", "stage", "error"]

#: Stages used by opso_nb itself (any string is accepted).
STAGES = ("load", "preprocess", "score", "localize", "write", "quarantine")


def describe_error(error) -> str:
    """``"TypeName: message"`` for an exception; a string is returned unchanged."""
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(error)


def failure_record(file, error, start_time=None, end_time=None, stage: str = "load") -> dict:
    """One failure row (a dict with :data:`FAILURE_COLUMNS` keys).

    Parameters
    ----------
    file : str or Path
        The input file.
    error : Exception or str
        What went wrong (exceptions are written as ``"TypeName: message"``).
    start_time, end_time : float, optional
        The clip's bounds in seconds; None (NaN) when the whole file failed.
    stage : str
        What was being done when it failed (see :data:`STAGES`).
    """
    return {
        "file": str(file),
        "start_time": math.nan if start_time is None else float(start_time),
        "end_time": math.nan if end_time is None else float(end_time),
        "stage": str(stage),
        "error": describe_error(error),
    }


def failures_frame(records=()) -> pd.DataFrame:
    """DataFrame with exactly :data:`FAILURE_COLUMNS` from failure records (dicts or tuples in column order).

    Missing ``stage`` or time values in dict records are filled (``"load"``, NaN).
    """
    rows = []
    for rec in records:
        if isinstance(rec, dict):
            rows.append(failure_record(rec.get("file", ""), rec.get("error", ""), rec.get("start_time"),
                                       rec.get("end_time"), rec.get("stage") or "load"))
        else:
            rows.append(dict(zip(FAILURE_COLUMNS, rec)))
    # object columns built explicitly: pandas >= 3 would infer UTF-8 strings, which cannot hold the
    # surrogate escapes of file names that are not valid UTF-8
    columns = {c: pd.Series([r.get(c) for r in rows], dtype=object) for c in FAILURE_COLUMNS}
    return pd.DataFrame(columns).astype({"start_time": float, "end_time": float})


def summarize_failures(failures: pd.DataFrame, limit: int = 3) -> str:
    """One human-readable line: how many failed, in how many files, with the first reasons.

    Returns ``""`` for an empty table. Used in warnings and dashboard messages so
    that every failure list gives the reason per file.
    """
    if failures is None or len(failures) == 0:
        return ""
    first_error = {}  # no groupby: it cannot factorize file names that are not valid UTF-8 (pandas >= 3)
    for file, error in zip(failures["file"], failures["error"]):
        first_error.setdefault(file, error)
    n_files = len(first_error)
    shown = [f"{file}: {error}" for file, error in list(first_error.items())[:limit]]
    more = f" (and {n_files - len(shown)} more file(s))" if n_files > len(shown) else ""
    return f"{len(failures)} failure(s) in {n_files} file(s): " + "; ".join(shown) + more
