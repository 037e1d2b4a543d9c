""":class:`BoxedAnnotations`: time-frequency boxes for one or more audio files, and what to do with them."""
from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from opso_nb.annotations._common import (
    REPORT_COLUMNS,
    STANDARD_COLUMNS,
    AnnotationTableError,
    as_list,
    path_key,
    path_keys,
)
from opso_nb.annotations._text import parse_numbers, read_table_text
from opso_nb.annotations.audacity import read_audacity_table
from opso_nb.annotations.clip_labels import label_clips
from opso_nb.annotations.raven import MULTIFILE_COLUMNS, RAVEN_BOX_COLUMNS, raven_table_text, read_raven_table
from opso_nb.audio import audio_info
from opso_nb.failures import failure_record, failures_frame, summarize_failures
from opso_nb.utils import CLIP_INDEX, atomic_write, generate_clip_times_df

__all__ = ["BoxedAnnotations", "LABEL_PALETTE", "label_colors"]

#: Colour-blind-friendly categorical palette (Okabe & Ito) used for box labels.
LABEL_PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")


def label_colors(labels) -> dict:
    """``{label: hex colour}``, cycling through :data:`LABEL_PALETTE` in the order given."""
    return {label: LABEL_PALETTE[i % len(LABEL_PALETTE)] for i, label in enumerate(labels)}


class _NotGiven:
    """Default of ``annotation_column_idx``: unlike an explicit ``None`` ("no label column"), it defers
    to ``annotation_column``."""

    def __repr__(self) -> str:
        return "<not given>"


_NOT_GIVEN = _NotGiven()


def _is_missing(value) -> bool:
    return value is None or (not isinstance(value, (str, os.PathLike)) and pd.isna(value))


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
        or dropped while reading, rows kept although they repeat a selection
        number, and tables without an annotation column. Empty when everything
        was read as is.

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
            report.reset_index(drop=True) if report is not None else pd.DataFrame(columns=REPORT_COLUMNS)
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_raven_files(
        cls,
        raven_files=None,
        audio_files=None,
        annotation_column="auto",
        keep_extra_columns=True,
        lowercase_labels: bool = False,
        errors: str = "raise",
        column_mapping_dict: dict | None = None,
        annotation_column_idx=_NOT_GIVEN,
        raven_paths=None,
    ) -> "BoxedAnnotations":
        """Load Raven Pro/Lite selection tables (tab-separated ``.txt``).

        Parameters
        ----------
        raven_files : str, Path or list of them
            Selection tables (required; ``raven_paths``, OpenSoundscape 0.9's
            name, is accepted as an alias).
        audio_files : list, optional
            The audio file of each table, same length as ``raven_files``
            (``None`` entries allowed). If omitted, a table's ``Begin Path``
            or ``Begin File`` column names the audio of each row, when present.
        annotation_column : "auto", str, list of str, int or None
            Which column holds the labels. ``"auto"`` (default): the first of
            :data:`DEFAULT_ANNOTATION_COLUMNS` present; a name or list of names
            (case-insensitive, first found wins, so tables that call it
            ``Species`` in one file and ``Label`` in another load together);
            an int: 0-based column position (7 is the first user column of a
            standard Raven table); ``None``: no labels (``annotation`` is NaN).
            A table without a matching column loads with empty labels and is
            listed in :attr:`report` (and a warning).
        keep_extra_columns : bool or list of str
            Keep all other columns (True), none (False or None) or only those
            named. Columns missing from some tables are NaN for those tables' rows.
        lowercase_labels : bool
            Lower-case all labels (``"WOTH"`` and ``"woth"`` become one class).
        errors : {"raise", "skip"}
            Malformed rows (text or non-ASCII digits in a number column;
            missing, negative or infinite times; end before start; negative
            frequencies or high below low; too many cells) and unreadable tables
            (missing, empty, binary, not a regular file, undecodable, no time
            columns): raise :class:`AnnotationTableError` naming file, line and
            column, or skip them and list them in :attr:`report` (with a warning).
        column_mapping_dict : dict, optional
            Rename table columns before reading, e.g. ``{"Start (s)": "Begin Time (s)"}``.
        annotation_column_idx : int or None, optional
            OpenSoundscape 0.9's parameter: the 0-based position of the label
            column, or ``None`` for no label column. Overrides ``annotation_column``
            when given.

        Returns
        -------
        BoxedAnnotations

        Raises
        ------
        AnnotationTableError
            Unreadable tables and (``errors="raise"``) malformed rows.

        Notes
        -----
        Tables are decoded from UTF-8 (with or without byte-order mark),
        UTF-16 or UTF-32 (with byte-order mark; Raven on Windows can write
        UTF-16), else Windows-1252. Only ASCII decimal numbers (``12.5``,
        ``1e-3``) are read as times and frequencies. Labels have surrounding
        whitespace stripped; empty labels become NaN.

        When a selection appears once per Raven view (``Waveform 1`` and
        ``Spectrogram 1``, same selection number and times), only the
        spectrogram row is kept; the others are listed in :attr:`report`. Rows
        that share a selection number but are different boxes are all kept and
        listed in :attr:`report` (with a warning). With a ``File Offset (s)``
        column, times are converted to seconds within each row's own audio file.
        """
        if raven_paths is not None:
            raven_files = raven_paths
        if raven_files is None:
            raise TypeError("from_raven_files needs the Raven tables: raven_files (or raven_paths)")
        if annotation_column_idx is not _NOT_GIVEN:
            annotation_column = annotation_column_idx

        def read(table, audio):
            return read_raven_table(table, audio, annotation_column, keep_extra_columns, lowercase_labels, errors,
                                    column_mapping_dict)

        return cls._load_tables(read, raven_files, audio_files, errors, "raven_files")

    @classmethod
    def from_audacity(cls, audacity_files, audio_files=None, lowercase_labels=False, errors="raise"):
        """Load Audacity label-track exports (``start<TAB>end<TAB>label``, optional frequency lines).

        Parameters are as in :meth:`from_raven_files`. Frequencies are NaN for
        labels without a ``\\`` frequency line.
        """
        def read(table, audio):
            return read_audacity_table(table, audio, lowercase_labels, errors)

        return cls._load_tables(read, audacity_files, audio_files, errors, "audacity_files")

    @classmethod
    def _load_tables(cls, read, tables, audio_files, errors: str, what: str) -> "BoxedAnnotations":
        """Read each table with ``read(table, audio file or None)``; with ``errors="skip"`` an unreadable
        table is reported and the others still load."""
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        tables = as_list(tables)
        audio_list = as_list(audio_files)
        if audio_list is not None and len(audio_list) != len(tables):
            raise ValueError(
                f"audio_files has {len(audio_list)} entries but {what} has {len(tables)}; "
                "give one audio file per table (or None)"
            )
        frames, report = [], []
        for i, table in enumerate(tables):
            audio = audio_list[i] if audio_list is not None else None
            try:
                df, rows = read(table, None if _is_missing(audio) else audio)
            except AnnotationTableError as err:
                if errors == "raise":
                    raise
                report.append(err.report_row("skipped table"))
                continue
            frames.append(df)
            report.extend(rows)
        return cls._finish_loading(frames, report, audio_list)

    @classmethod
    def _finish_loading(cls, frames, report, audio_list):
        frames = [f for f in frames if len(f)] or frames[:1]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=STANDARD_COLUMNS)
        report_df = pd.DataFrame(report, columns=REPORT_COLUMNS)
        if len(report_df):
            counts = report_df["action"].value_counts().to_dict()
            first = report_df.iloc[0]
            warnings.warn(
                f"annotation tables loaded with {len(report_df)} problem(s) {counts}; "
                f"first: {first.annotation_file}: {first.problem}. See BoxedAnnotations.report.",
                stacklevel=4,  # from_raven_files/from_audacity -> _load_tables -> here
            )
        audio = None
        if audio_list is not None:
            audio = [str(a) for a in audio_list if not _is_missing(a)]
        return cls(df, audio_files=audio, report=report_df)

    @classmethod
    def from_csv(cls, path) -> "BoxedAnnotations":
        """Load a table written by :meth:`to_csv` (columns as :attr:`df`; ``file`` is taken as ``audio_file``).

        Raises
        ------
        AnnotationTableError
            The file cannot be read as CSV, lacks ``start_time``/``end_time``,
            or has a cell that is not a number (ASCII digits) in a time or
            frequency column, a missing time, or a box that ends before it starts.
        """
        text = read_table_text(path)
        try:
            df = pd.read_csv(io.StringIO(text))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, ValueError) as err:
            raise AnnotationTableError(path, f"not a readable CSV table ({err})") from None
        missing = [c for c in ("start_time", "end_time") if c not in df.columns]
        if missing:
            raise AnnotationTableError(path, f"missing column(s) {missing}", column=missing[0])
        for col in ("start_time", "end_time", "low_f", "high_f"):
            if col in df.columns and not pd.api.types.is_numeric_dtype(df[col]):
                values, bad = parse_numbers(df[col].where(df[col].notna(), "").astype(str).str.strip())
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise AnnotationTableError(
                        path, f"text {df[col].iloc[i]!r} where a number belongs", line=i + 2, column=col
                    )
                df[col] = values
        start, end = df["start_time"].to_numpy(float), df["end_time"].to_numpy(float)
        bad = np.isnan(start) | np.isnan(end) | (end < start)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            column = "start_time" if np.isnan(start[i]) else "end_time"
            raise AnnotationTableError(path, f"missing time or ends before it starts (start_time={start[i]}, "
                                       f"end_time={end[i]})", line=i + 2, column=column)
        return cls(df)

    @classmethod
    def concat(cls, objects: Sequence["BoxedAnnotations"]) -> "BoxedAnnotations":
        """Join several BoxedAnnotations into one (rows, audio file lists and reports)."""
        objects = list(objects)
        if not objects:
            return cls()
        frames = [o.df for o in objects if len(o.df)] or [objects[0].df]
        df = pd.concat(frames, ignore_index=True)
        if any(o.audio_files is None for o in objects):
            audio = None
        else:
            audio = list(dict.fromkeys(a for o in objects for a in o.audio_files))
        reports = [o.report for o in objects if len(o.report)]
        report = pd.concat(reports, ignore_index=True) if reports else None
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
        keep_nan = any(_is_missing(c) for c in classes)
        named = [c for c in classes if not _is_missing(c)]
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
            key = path_key(str(audio_file))
            df = df[df["audio_file"].notna().to_numpy() & (path_keys(df["audio_file"]) == key).to_numpy()]
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
        # matplotlib is imported only to plot: it is slow to import and picks a backend on import
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

    def _raven_groups(self, audio_files) -> list:
        """``(audio file or None, its rows)`` for every file with boxes, then the ``audio_files`` without."""
        df = self.df
        has_file = df["audio_file"].notna()
        groups = [(str(f), rows) for f, rows in df[has_file].groupby(df["audio_file"][has_file].astype(str),
                                                                       sort=False)]
        named = {f for f, _ in groups}
        extra = audio_files if audio_files is not None else (self.audio_files or [])
        groups += [(str(f), df.iloc[:0]) for f in dict.fromkeys(str(f) for f in extra) if str(f) not in named]
        if (~has_file).any():
            groups.append((None, df[~has_file]))
        return groups

    def to_raven_files(self, save_dir, audio_files=None, annotation_column_name: str = "Annotation") -> list[Path]:
        """Write one Raven selection table per audio file into ``save_dir``.

        Files are named ``<audio stem>.Table.1.selections.txt`` (so
        :func:`pair_audio_and_tables` pairs them back) and written atomically,
        in UTF-8 with LF line ends. Columns: ``Selection, View, Channel,
        Begin Time (s), End Time (s), Low Freq (Hz), High Freq (Hz)``, the
        label column, then extra columns (e.g. scores). Raven Lite shows only
        the first non-standard column.

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
        frequency cells. Tabs, line breaks and other control characters inside
        text cells become spaces. Times and frequencies are written exactly
        (shortest round-tripping decimal). Boxes with no audio file go to
        ``unknown_audio.Table.1.selections.txt``.
        """
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        skip_cols = set(STANDARD_COLUMNS) | {"Selection", "View", "Channel"} | {
            c for c in self.df.columns if c.lower() in RAVEN_BOX_COLUMNS or c.lower() in MULTIFILE_COLUMNS
        }
        extras = [c for c in self.df.columns if c not in skip_cols]
        written, used_names = [], set()
        for audio, rows in self._raven_groups(audio_files):
            stem = Path(audio).stem if audio is not None else "unknown_audio"
            name = f"{stem}.Table.1.selections.txt"
            k = 2
            while name in used_names:  # two audio files with one stem in different folders
                name = f"{stem}_{k}.Table.1.selections.txt"
                k += 1
            used_names.add(name)
            nyquist = 0.0
            if rows["high_f"].isna().any() and audio is not None:
                try:
                    nyquist = audio_info(audio).sample_rate / 2
                except OSError:  # unreadable or missing audio (AudioLoadError is an OSError): 0 Hz
                    nyquist = 0.0
            out = pd.DataFrame(
                {
                    "Selection": np.arange(1, len(rows) + 1),
                    "View": rows["View"].fillna("Spectrogram 1").values if "View" in rows else "Spectrogram 1",
                    "Channel": rows["Channel"].fillna(1).astype(int).values if "Channel" in rows else 1,
                    "Begin Time (s)": rows["start_time"].values,
                    "End Time (s)": rows["end_time"].values,
                    "Low Freq (Hz)": rows["low_f"].fillna(0).values,
                    "High Freq (Hz)": rows["high_f"].fillna(nyquist).values,
                    annotation_column_name: rows["annotation"].values,
                }
            )
            for c in extras:
                out[c] = rows[c].values
            target = save_dir / name
            with atomic_write(target, "w", newline="", encoding="utf-8") as handle:
                handle.write(raven_table_text(out))
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
        return label_clips(self.df, clip_df, min_label_overlap, min_label_fraction, class_subset,
                           warn_no_annotations)

    def _clip_table(self, audio_files, clip_duration, clip_overlap, final_clip, full_duration):
        """Clips of every audio file, each file's duration (s), and failures (files whose duration is unreadable)."""
        if audio_files is None:
            audio_files = self.audio_files
        if audio_files is None:
            audio_files = list(pd.unique(self.df["audio_file"].dropna().astype(str)))
        frames, durations, failures = [], {}, []
        for f in (str(f) for f in as_list(audio_files)):
            duration = full_duration.get(f) if isinstance(full_duration, dict) else full_duration
            if duration is None:
                try:
                    duration = audio_info(f).duration
                except OSError as err:  # AudioLoadError, or the file vanished or became unreadable
                    failures.append(failure_record(f, err, stage="load"))
                    continue
            times = generate_clip_times_df(duration, clip_duration, clip_overlap, final_clip)
            times.insert(0, "file", f)
            frames.append(times)
            durations[path_key(f)] = float(duration)
        clip_df = (pd.concat(frames, ignore_index=True) if frames
                   else pd.DataFrame(columns=CLIP_INDEX)).set_index(CLIP_INDEX)
        return clip_df, durations, failures_frame(failures)

    def _warn_about_boxes_beyond(self, durations: dict) -> None:
        """Boxes that start after the end of their recording cannot label any clip: say so."""
        if not durations or not len(self.df):
            return
        keys = path_keys(self.df["audio_file"].where(self.df["audio_file"].notna(), ""))
        limit = keys.map(durations).to_numpy(dtype=float)
        beyond = self.df["start_time"].to_numpy(dtype=float) >= limit  # NaN limit -> False
        if beyond.any():
            first = self.df.iloc[int(np.flatnonzero(beyond)[0])]
            warnings.warn(
                f"{int(beyond.sum())} box(es) start after the end of their audio file and label no clip "
                f"(e.g. {first['annotation']} at {first['start_time']:.3f} s in {first['audio_file']}, "
                f"which lasts {durations[path_key(str(first['audio_file']))]:.3f} s)",
                stacklevel=3,
            )

    def one_hot_clip_labels(
        self,
        clip_duration: float,
        clip_overlap: float = 0,
        min_label_overlap: float = 0.25,
        min_label_fraction: float | None = 1,
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
        min_label_overlap : float
            Seconds of a box inside a clip that make its class present.
        min_label_fraction : float or None
            Fraction (0-1) of a box inside a clip that also does. The default,
            1, is OpenSoundscape 0.9's: a box that lies wholly inside a clip
            labels it however short it is. ``None``: only ``min_label_overlap``
            counts (the default of :meth:`clip_labels`).
        full_duration : float or dict, optional
            Seconds of audio to cover (one number for all files, or
            ``{audio_file: seconds}``). Default: each file's duration, read from
            its header.
        class_subset : list, optional
            Classes (columns). Default: :meth:`unique_labels`.
        final_clip : {None, "remainder", "full", "extend"}
            What to do with the leftover shorter than a clip.
        audio_files : list, optional
            Files to label, including files without boxes (all-zero rows).
            Default: :attr:`audio_files` if set, else the files in ``df``.
        return_invalid_samples : bool
            Also return the failures table (:mod:`opso_nb.failures`) of audio
            files whose duration could not be read; they are skipped either way
            (with a warning).

        Returns
        -------
        pandas.DataFrame or (pandas.DataFrame, pandas.DataFrame)
            Labels indexed by (file, start_time, end_time), one float 0.0/1.0
            column per class; and the failures when asked for.
        """
        if self.df["audio_file"].isna().any():
            warnings.warn(
                f"{int(self.df['audio_file'].isna().sum())} box(es) have no audio_file and cannot be "
                "assigned to clips; pass audio_files to from_raven_files",
                stacklevel=2,
            )
        clip_df, durations, failures = self._clip_table(audio_files, clip_duration, clip_overlap, final_clip,
                                                        full_duration)
        self._warn_about_boxes_beyond(durations)
        if len(failures):
            warnings.warn(f"audio files skipped, their duration could not be read: {summarize_failures(failures)}",
                          stacklevel=2)
        labels = self.one_hot_labels_like(clip_df, min_label_overlap, min_label_fraction, class_subset)
        if return_invalid_samples:
            return labels, failures
        return labels

    def clip_labels(
        self,
        clip_duration: float,
        min_label_overlap: float,
        min_label_fraction: float | None = None,
        full_duration=None,
        class_subset=None,
        audio_files=None,
        clip_overlap: float = 0,
        final_clip: str | None = None,
        return_invalid_samples: bool = False,
    ):
        """:meth:`one_hot_clip_labels` under its newer OpenSoundscape name, parameter order and default.

        Here ``min_label_overlap`` comes second and ``min_label_fraction``
        defaults to ``None`` (only the overlap in seconds counts), as in
        OpenSoundscape 0.10 and later. Labels are returned as 0/1 columns.
        """
        return self.one_hot_clip_labels(
            clip_duration, clip_overlap, min_label_overlap, min_label_fraction, full_duration, class_subset,
            final_clip, audio_files, return_invalid_samples,
        )
