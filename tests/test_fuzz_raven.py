"""Property-based tests of the Raven reader and writer (Hypothesis).

* Valid tables round-trip exactly: boxes written with ``to_raven_files`` read
  back with ``from_raven_files`` are the same boxes (times, frequencies,
  labels, extra columns), whatever the labels' characters.
* Mangled tables (random bytes, wrong columns, odd encodings, odd numbers,
  truncation) only ever raise :class:`AnnotationTableError`, naming the file
  and a line that exists; with ``errors="skip"`` they never raise, and every
  box that loads is a valid box.

Example counts are bounded so the module runs in well under 30 s.
"""
from __future__ import annotations

import codecs
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opso_nb.annotations import AnnotationTableError, BoxedAnnotations, is_raven_table, load_table

# derandomized, no example database: the same examples on every machine, nothing written to the working folder
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
#: Peak Python allocation (tracemalloc) allowed while reading one mangled table of a few hundred bytes:
#: a table that claims a huge number of rows or columns must not make the reader build it.
ALLOCATION_BOUND = 32 * 2**20
# writing and reading back costs ~50 ms an example (pandas overhead, fsync of atomic writes)
FUZZ_WRITES = settings(FUZZ, max_examples=35)

RAVEN_HEADER = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                "High Freq (Hz)", "Species", "Notes"]

# ----------------------------------------------------------------------------- strategies

# printable text of any script; control characters (tabs, line breaks) are what the writer replaces
label_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12).map(
    str.strip).filter(bool)
seconds = st.floats(min_value=0, max_value=1e5, allow_nan=False, allow_infinity=False)
hertz = st.floats(min_value=0, max_value=5e4, allow_nan=False, allow_infinity=False)


@st.composite
def boxes_tables(draw):
    n = draw(st.integers(0, 8))
    start = draw(st.lists(seconds, min_size=n, max_size=n))
    length = draw(st.lists(st.floats(0, 600, allow_nan=False), min_size=n, max_size=n))
    low = draw(st.lists(hertz, min_size=n, max_size=n))
    band = draw(st.lists(hertz, min_size=n, max_size=n))
    return pd.DataFrame({
        "audio_file": "rec.wav",
        "annotation": draw(st.lists(st.one_of(st.none(), label_text), min_size=n, max_size=n)),
        "start_time": np.array(start, dtype=float),
        "end_time": np.array(start, dtype=float) + np.array(length, dtype=float),
        "low_f": np.array(low, dtype=float),
        "high_f": np.array(low, dtype=float) + np.array(band, dtype=float),
        "score": draw(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=n, max_size=n)),
        # "c" keeps every comment text: a column whose every cell is a number is read as numbers
        "comment": draw(st.lists(st.one_of(st.none(), label_text.map("c".__add__)), min_size=n, max_size=n)),
    })


odd_numbers = st.sampled_from([
    "1e5", "1E-3", ".5", "5.", "+1", "-1", "-0", "inf", "-inf", "nan", "NaN", "1e400", "1e-400",
    "\u0663", "\uff13", "\u0969", "1_0", "0x10", "1,5", " 2 ", "", "\u22121", "\u00bd", "\u00b2", "1e", "e5",
    "--1", "1.2.3", "\u00a03", "3\u200b", "١.٥", "𝟑",
])
junk_text = st.text(st.characters(), max_size=20)
cell = st.one_of(odd_numbers, junk_text, st.sampled_from(["WOTH", "Spectrogram 1", "Waveform 1", "1", "2"]))
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp1252",
                             "latin-1"])


@st.composite
def mangled_tables(draw) -> bytes:
    """Bytes of a table that may be anything from nearly valid to garbage."""
    kind = draw(st.sampled_from(["bytes", "cells", "columns"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    header = list(RAVEN_HEADER)
    if kind == "columns":  # drop, rename or repeat columns
        header = draw(st.lists(st.sampled_from(RAVEN_HEADER + ["begin time (s)", "View", "", "File Offset (s)",
                                                               "Begin File", "Label"]),
                               min_size=0, max_size=11))
    rows = draw(st.lists(st.lists(cell, min_size=0, max_size=len(header) + 2), max_size=6))
    # mostly plausible rows: start from a valid row and replace a few cells
    for row in rows[: draw(st.integers(0, len(rows)))]:
        valid = ["1", "Spectrogram 1", "1", "0.5", "1.5", "100", "2000", "WOTH", ""]
        row[:] = valid[: len(header)] if not row else [draw(cell) if draw(st.booleans()) else v
                                                       for v in valid[: len(header)]]
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(["\t".join(header)] + ["\t".join(r) for r in rows])
    data = text.encode(draw(encodings), errors="replace")
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # truncated (mid-character for UTF-16/32)
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


# ----------------------------------------------------------------------------- helpers


def assert_valid_boxes(df: pd.DataFrame):
    start, end = df["start_time"].to_numpy(float), df["end_time"].to_numpy(float)
    low, high = df["low_f"].to_numpy(float), df["high_f"].to_numpy(float)
    assert np.isfinite(start).all() and np.isfinite(end).all()
    assert (start >= 0).all() and (end >= start).all()
    assert not np.isinf(low).any() and not np.isinf(high).any()
    assert not (low < 0).any() and not (high < 0).any() and not (high < low).any()


def number_of_lines(data: bytes) -> int:
    # generous bound: any decoding has at most this many line breaks
    return data.count(b"\n") + data.count(b"\r") + 2


# ----------------------------------------------------------------------------- properties


@FUZZ_WRITES
@given(boxes_tables())
def test_valid_tables_round_trip_exactly(df):
    with tempfile.TemporaryDirectory() as folder:
        # audio_files: an empty table is still written (header only)
        written = BoxedAnnotations(df, audio_files=["rec.wav"]).to_raven_files(folder)
        back = BoxedAnnotations.from_raven_files(written, audio_files=["rec.wav"])
    assert back.report.empty
    cols = ["audio_file", "annotation", "start_time", "end_time", "low_f", "high_f"]
    got = back.df[cols].astype({"annotation": object})
    expected = df[cols].astype({"annotation": object}).fillna({"annotation": np.nan})
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_dtype=False)
    if len(df):
        assert back.df["score"].astype(float).tolist() == df["score"].tolist()
        assert back.df["comment"].isna().tolist() == df["comment"].isna().tolist()
        present = df["comment"].notna()
        assert back.df["comment"][present].astype(str).tolist() == df["comment"][present].tolist()
    assert back.df["Selection"].tolist() == list(range(1, len(df) + 1))


@FUZZ_WRITES
@given(st.lists(st.text(max_size=15), min_size=1, max_size=5), st.lists(st.text(max_size=10), max_size=5))
def test_any_text_written_reads_back_as_the_same_number_of_boxes(labels, notes):
    """Tabs, line breaks, NULs in labels and extra columns never break the written table."""
    n = len(labels)
    df = pd.DataFrame({"audio_file": "rec.wav", "start_time": np.arange(n, dtype=float),
                       "end_time": np.arange(n, dtype=float) + 0.5, "low_f": 0.0, "high_f": 100.0,
                       "annotation": labels, "note": (notes + [None] * n)[:n]})
    with tempfile.TemporaryDirectory() as folder:
        written = BoxedAnnotations(df).to_raven_files(folder)
        back = BoxedAnnotations.from_raven_files(written, audio_files=["rec.wav"])
    assert len(back) == n and back.report.empty
    assert back.df.start_time.tolist() == df.start_time.tolist()


@FUZZ
@given(mangled_tables())
def test_mangled_tables_raise_only_the_documented_error(data):
    tracemalloc.start()
    try:
        _check_mangled_table(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < ALLOCATION_BOUND, f"{peak / 2**20:.0f} MiB allocated for a {len(data)}-byte table"


def _check_mangled_table(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.Table.1.selections.txt"
        path.write_bytes(data)
        loaded = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = BoxedAnnotations.from_raven_files([path])
        except AnnotationTableError as err:
            assert err.path == str(path) and str(path) in str(err)
            assert err.line is None or 1 <= err.line <= number_of_lines(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            skipped = BoxedAnnotations.from_raven_files([path], errors="skip")
        assert_valid_boxes(skipped.df)
        lines = skipped.report["line"].dropna()
        assert ((lines >= 1) & (lines <= number_of_lines(data))).all()
        assert set(skipped.report["action"]) <= {"skipped row", "skipped table", "dropped duplicate",
                                                 "kept repeated selection", "labels left empty"}
        if loaded is not None:
            # a table that loads in raise mode loads the same in skip mode, with nothing skipped
            assert_valid_boxes(loaded.df)
            pd.testing.assert_frame_equal(loaded.df, skipped.df)
            assert not skipped.report["action"].isin(["skipped row", "skipped table"]).any()
        assert isinstance(is_raven_table(path), bool)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_table(path, errors="skip")
        except AnnotationTableError as err:
            # only Audacity files can still fail in skip mode (a frequency line before any label)
            assert "frequency line before any label" in str(err)


@FUZZ
@given(st.lists(st.tuples(odd_numbers, odd_numbers, odd_numbers, odd_numbers), min_size=1, max_size=5),
       encodings)
def test_odd_numbers_are_read_exactly_or_rejected(rows, encoding):
    """Each row either loads with the value float() gives for its ASCII text or is reported."""
    lines = ["Begin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSpecies"]
    lines += ["\t".join(r) + f"\tr{k}" for k, r in enumerate(rows)]
    text = "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.txt"
        try:
            path.write_bytes(text.encode(encoding))
        except UnicodeEncodeError:
            path.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            boxes = BoxedAnnotations.from_raven_files(path, errors="skip")
    assert len(boxes) + int((boxes.report["action"] == "skipped row").sum()) == len(rows)
    assert_valid_boxes(boxes.df)
    for _, box in boxes.df.iterrows():
        start, end, low, high = rows[int(box.annotation[1:])]
        for text_value, value in [(start, box.start_time), (end, box.end_time), (low, box.low_f),
                                  (high, box.high_f)]:
            text_value = text_value.strip()
            assert text_value.isascii()
            if text_value in ("", "nan", "NaN"):
                assert np.isnan(value)
            else:
                assert value == float(text_value)
