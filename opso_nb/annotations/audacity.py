"""Audacity label tracks: ``start<TAB>end<TAB>label`` lines, each optionally followed by a
``\\<TAB>low<TAB>high`` line with the label's frequency range (Hz)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from opso_nb.annotations._common import STANDARD_COLUMNS, AnnotationTableError
from opso_nb.annotations._text import parse_number, read_table_text, split_rows

__all__ = ["read_audacity_table"]


def _frequency_range(cells: list) -> tuple[float, float]:
    """``(low, high)`` Hz of a frequency line; ValueError if it is not two valid frequencies."""
    low = parse_number(cells[1]) if len(cells) > 1 else np.nan
    high = parse_number(cells[2]) if len(cells) > 2 else np.nan
    if np.isinf(low) or np.isinf(high) or low < 0 or high < 0 or high < low:
        raise ValueError
    return low, high


def _time_range(cells: list) -> tuple[float, float]:
    """``(start, end)`` s of a label line; ValueError unless 0 <= start <= end, both finite."""
    start, end = parse_number(cells[0]), parse_number(cells[1])
    if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end < start:
        raise ValueError
    return start, end


def read_audacity_table(path, audio_file=None, lowercase_labels: bool = False,
                        errors: str = "raise") -> tuple[pd.DataFrame, list]:
    """Read one Audacity label track.

    Returns ``(df, report)`` as :func:`opso_nb.annotations.raven.read_raven_table`
    does. Numbers must be written with ASCII digits; frequencies are NaN for
    labels without a frequency line.

    Raises
    ------
    AnnotationTableError
        The file cannot be read, a frequency line comes before any label, or
        (``errors="raise"``) a malformed line.
    """
    path = Path(path)
    records, report = [], []

    def problem(line, column, text):
        err = AnnotationTableError(path, text, line=line, column=column)
        if errors == "raise":
            raise err
        report.append(err.report_row("skipped row"))

    current = None  # the label a frequency line belongs to (None after a skipped label)
    seen_label = False
    for line, cells in split_rows(read_table_text(path)):
        cells = [c.strip() for c in cells]
        if cells[0] == "\\":  # frequency line of the label above it
            if not seen_label:
                raise AnnotationTableError(path, "frequency line before any label", line=line)
            if current is None:
                problem(line, "low/high frequency", "frequency line of a skipped label")
                continue
            try:
                current["low_f"], current["high_f"] = _frequency_range(cells)
            except ValueError:
                problem(line, "low/high frequency",
                        f"expected '\\<TAB>low<TAB>high' with 0 <= low <= high (Hz, ASCII digits), got {cells}")
            continue
        current, seen_label = None, True
        try:
            start, end = _time_range(cells)
        except (ValueError, IndexError):
            problem(line, "start/end",
                    f"expected 'start<TAB>end<TAB>label' with 0 <= start <= end (s, ASCII digits), got {cells}")
            continue
        label = cells[2] if len(cells) > 2 and cells[2] else np.nan
        if lowercase_labels and isinstance(label, str):
            label = label.lower()
        current = dict(audio_file=str(audio_file) if audio_file is not None else np.nan,
                       annotation_file=str(path), annotation=label, start_time=start,
                       end_time=end, low_f=np.nan, high_f=np.nan)
        records.append(current)
    return pd.DataFrame(records, columns=STANDARD_COLUMNS), report
