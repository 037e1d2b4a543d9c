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
files, header-only tables, UTF-8 (with or without byte-order mark), UTF-16 and
Windows-1252 text, CRLF line endings, short rows (empty trailing cells), a
selection listed once per Raven view, selection numbers shared by several
boxes, and multi-file tables (``Begin File``/``Begin Path``/``File Offset (s)``).
A malformed row raises :class:`AnnotationTableError` naming the file, the line
and the column (or is skipped and listed in ``BoxedAnnotations.report`` with
``errors="skip"``). Nothing is dropped without being reported.

The package is organised as:

- :mod:`~opso_nb.annotations.boxed`: :class:`BoxedAnnotations`;
- :mod:`~opso_nb.annotations.raven` and :mod:`~opso_nb.annotations.audacity`:
  reading and writing tables (text decoding in ``_text``);
- :mod:`~opso_nb.annotations.clip_labels`: boxes to 0/1 clip labels, one-hot helpers;
- :mod:`~opso_nb.annotations.pairing`: audio files paired with their tables.

Every public name is available from ``opso_nb.annotations`` itself.

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

from opso_nb.annotations._common import (
    DEFAULT_ANNOTATION_COLUMNS,
    REPORT_COLUMNS,
    STANDARD_COLUMNS,
    AnnotationTableError,
)
from opso_nb.annotations.boxed import LABEL_PALETTE, BoxedAnnotations, label_colors
from opso_nb.annotations.clip_labels import (
    categorical_to_one_hot,
    label_clips,
    one_hot_labels_on_time_interval,
    one_hot_to_categorical,
)
from opso_nb.annotations.pairing import FilePairing, load_table, pair_audio_and_tables, table_stem
from opso_nb.annotations.raven import is_raven_table

__all__ = [
    "AnnotationTableError",
    "BoxedAnnotations",
    "DEFAULT_ANNOTATION_COLUMNS",
    "FilePairing",
    "LABEL_PALETTE",
    "REPORT_COLUMNS",
    "STANDARD_COLUMNS",
    "categorical_to_one_hot",
    "is_raven_table",
    "label_clips",
    "label_colors",
    "load_table",
    "one_hot_labels_on_time_interval",
    "one_hot_to_categorical",
    "pair_audio_and_tables",
    "table_stem",
]
