"""Regressions for reading Raven (and Audacity, CSV) tables from the hardening issue (12, item 7).

Each test writes a small table by hand with a known answer: which boxes load,
which rows are reported, and what the error names (file, line, column).
"""
from __future__ import annotations

import codecs
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opso_nb.annotations import AnnotationTableError, BoxedAnnotations, is_raven_table, load_table

HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSpecies\n"


def table(tmp_path: Path, rows: list[str], name="t.Table.1.selections.txt", header=HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def load_all_warnings(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        boxes = BoxedAnnotations.from_raven_files(*args, **kwargs)
    return boxes, [str(w.message) for w in caught]


# ----------------------------------------------------------------------------- repeated selection numbers


def test_rows_sharing_a_selection_number_are_distinct_boxes(tmp_path):
    # a hand-edited table: three boxes numbered 1, 1, 2 (copy-pasted rows)
    f = table(tmp_path, [
        "1\tSpectrogram 1\t1\t0.5\t1.5\t100\t2000\tWOTH",
        "1\tSpectrogram 1\t1\t2.5\t3.5\t200\t3000\tEATO",
        "2\tSpectrogram 1\t1\t4.0\t5.0\t300\t4000\tWOTH",
    ])
    boxes, messages = load_all_warnings(f)
    assert boxes.df.annotation.tolist() == ["WOTH", "EATO", "WOTH"]
    assert boxes.df.start_time.tolist() == [0.5, 2.5, 4.0]
    assert boxes.df.Selection.tolist() == [1, 1, 2]
    assert len(messages) == 1 and "kept repeated selection" in messages[0]
    rep = boxes.report
    assert rep.action.tolist() == ["kept repeated selection"]
    assert (rep.line.iloc[0], rep.column.iloc[0]) == (3, "Selection")
    assert "line 2" in rep.problem.iloc[0]


def test_view_duplicates_need_the_same_times(tmp_path):
    # selection 1 in two views with the same times: one box; selection 2's waveform row has other times:
    # a different box that happens to share the number
    f = table(tmp_path, [
        "1\tWaveform 1\t1\t0.5\t1.5\t0\t0\tWOTH",
        "1\tSpectrogram 1\t1\t0.5\t1.5\t1000\t3000\tWOTH",
        "2\tSpectrogram 1\t1\t2.0\t3.0\t2000\t4000\tEATO",
        "2\tWaveform 1\t1\t2.2\t2.9\t0\t0\tEATO",
    ])
    boxes, _ = load_all_warnings(f)
    assert boxes.df.start_time.tolist() == [0.5, 2.0, 2.2]
    assert boxes.df.low_f.tolist() == [1000, 2000, 0]
    assert boxes.report.action.tolist() == ["dropped duplicate", "kept repeated selection"]
    assert boxes.report.line.tolist() == [2, 5]


def test_same_box_on_two_channels_is_kept_twice(tmp_path):
    f = table(tmp_path, [
        "1\tSpectrogram 1\t1\t0.5\t1.5\t100\t2000\tWOTH",
        "1\tSpectrogram 1\t2\t0.5\t1.5\t100\t2000\tWOTH",
    ])
    boxes, _ = load_all_warnings(f)
    assert boxes.df.Channel.tolist() == [1, 2]
    assert boxes.report.action.tolist() == ["kept repeated selection"]


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("text", [
    "\u0663",  # Arabic-Indic three
    "\uff13.5",  # full-width 3
    "\u0969",  # Devanagari three
    "1_000",  # Python's digit separator
    "1,5",  # decimal comma
    "\u2212" "1",  # Unicode minus sign
    "\u00bd",  # vulgar fraction one half
    "0x10",
    "1.2.3",
])
def test_only_ascii_decimal_numbers_are_times(tmp_path, text):
    f = table(tmp_path, ["1\tSpectrogram 1\t1\t0.5\t1.5\t100\t2000\tWOTH",
                         f"2\tSpectrogram 1\t1\t{text}\t3.5\t100\t2000\tEATO"])
    with pytest.raises(AnnotationTableError) as info:
        BoxedAnnotations.from_raven_files(f)
    err = info.value
    assert (err.path, err.line, err.row, err.column) == (str(f), 3, 2, "Begin Time (s)")
    assert repr(text) in str(err) and "ASCII digits" in str(err)
    boxes, _ = load_all_warnings(f, errors="skip")
    assert boxes.df.annotation.tolist() == ["WOTH"]
    assert boxes.report[["line", "column", "action"]].values.tolist() == [[3, "Begin Time (s)", "skipped row"]]


@pytest.mark.parametrize("text, value", [("1e1", 10.0), (".5", 0.5), ("5.", 5.0), ("+2", 2.0), (" 3 ", 3.0),
                                         ("1E-1", 0.1)])
def test_ascii_number_spellings_are_read(tmp_path, text, value):
    f = table(tmp_path, [f"1\tSpectrogram 1\t1\t{text}\t20\t100\t2000\tWOTH"])
    assert BoxedAnnotations.from_raven_files(f).df.start_time.tolist() == [value]


def test_frequency_in_other_digits_is_an_error(tmp_path):
    f = table(tmp_path, ["1\tSpectrogram 1\t1\t0.5\t1.5\t\u0661\u0660\u0660\t2000\tWOTH"])
    with pytest.raises(AnnotationTableError, match=r"line 2.*'Low Freq \(Hz\)'"):
        BoxedAnnotations.from_raven_files(f)


@pytest.mark.parametrize("row, column, words", [
    ("1\tSpectrogram 1\t1\t0.5\t1.5\t-100\t2000\tWOTH", "Low Freq (Hz)", "negative frequency -100.0 Hz"),
    ("1\tSpectrogram 1\t1\t0.5\t1.5\t-300\t-100\tWOTH", "Low Freq (Hz)", "negative frequency -300.0 Hz"),
    ("1\tSpectrogram 1\t1\t0.5\t1.5\t3000\t2000\tWOTH", "High Freq (Hz)", "below low frequency"),
    ("1\tSpectrogram 1\t1\t0.5\t1.5\t100\tinf\tWOTH", "High Freq (Hz)", "not a finite number"),
    ("1\tSpectrogram 1\t1\t-0.5\t1.5\t100\t2000\tWOTH", "Begin Time (s)", "negative time -0.5 s"),
    ("1\tSpectrogram 1\t1\t2.5\t1.5\t100\t2000\tWOTH", "End Time (s)", "before it starts"),
    ("1\tSpectrogram 1\t1\t0.5\t1e400\t100\t2000\tWOTH", "End Time (s)", "not a finite number"),
])
def test_negative_and_inverted_boxes_are_rejected_or_reported(tmp_path, row, column, words):
    f = table(tmp_path, ["2\tSpectrogram 1\t1\t3.0\t4.0\t100\t2000\tEATO", row])
    with pytest.raises(AnnotationTableError) as info:
        BoxedAnnotations.from_raven_files(f)
    assert (info.value.line, info.value.column) == (3, column) and words in str(info.value)
    boxes, messages = load_all_warnings(f, errors="skip")
    assert boxes.df.annotation.tolist() == ["EATO"]
    assert boxes.report[["line", "column", "action"]].values.tolist() == [[3, column, "skipped row"]]
    assert words in boxes.report.problem.iloc[0] and "skipped row" in messages[0]


def test_missing_frequencies_are_allowed(tmp_path):
    f = table(tmp_path, ["1\tSpectrogram 1\t1\t0.5\t1.5\t\t\tWOTH"])
    boxes = BoxedAnnotations.from_raven_files(f)
    assert boxes.df.low_f.isna().all() and boxes.df.high_f.isna().all() and boxes.report.empty


# ----------------------------------------------------------------------------- encodings

TEXT = (HEADER + "1\tSpectrogram 1\t1\t0.5\t1.5\t100\t2000\tGrive à dos olive\n"
        "2\tSpectrogram 1\t1\t2\t3\t100\t2000\t鶯\n")


@pytest.mark.parametrize("encoded", [
    TEXT.encode("utf-8"),
    codecs.BOM_UTF8 + TEXT.encode("utf-8"),
    codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"),
    codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"),
    TEXT.encode("utf-16-le"),  # no byte-order mark: recognised by its zero bytes
    TEXT.encode("utf-16-be"),
    TEXT.encode("utf-32"),
    TEXT.replace("\n", "\r\n").encode("utf-16"),
], ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom", "utf16le", "utf16be", "utf32", "utf16-crlf"])
def test_unicode_encodings_are_decoded(tmp_path, encoded):
    f = tmp_path / "t.txt"
    f.write_bytes(encoded)
    boxes = BoxedAnnotations.from_raven_files(f)
    assert boxes.df.annotation.tolist() == ["Grive à dos olive", "鶯"]
    assert boxes.df.end_time.tolist() == [1.5, 3.0]
    assert "Selection" in boxes.df.columns and is_raven_table(f)


def test_windows_1252_fallback(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes(TEXT.replace("鶯", "Grive").encode("cp1252"))
    assert BoxedAnnotations.from_raven_files(f).df.annotation.tolist() == ["Grive à dos olive", "Grive"]


@pytest.mark.parametrize("raw, words, line", [
    (codecs.BOM_UTF16_LE + HEADER.encode("utf-16-le") + b"\x00", "not valid UTF-16", 2),  # odd length
    (codecs.BOM_UTF16_LE + HEADER.encode("utf-16-le") + "\ud800".encode("utf-16-le", "surrogatepass"),
     "not valid UTF-16", 2),
    (codecs.BOM_UTF8 + HEADER.encode("utf-8") + b"1\t\xff\xfe\n", "not valid UTF-8", 2),
    (HEADER.encode("utf-8") + b"1\tSpectrogram 1\x00\t1\n", "zero bytes", 2),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "zero bytes", 3),
])
def test_undecodable_and_binary_tables_name_file_and_line(tmp_path, raw, words, line):
    f = tmp_path / "t.txt"
    f.write_bytes(raw)
    with pytest.raises(AnnotationTableError) as info:
        BoxedAnnotations.from_raven_files(f)
    assert words in str(info.value) and info.value.line == line and str(f) in str(info.value)
    good = table(tmp_path, ["1\tSpectrogram 1\t1\t0.5\t1.5\t100\t2000\tWOTH"], name="good.txt")
    boxes, _ = load_all_warnings([f, good], errors="skip")
    assert boxes.df.annotation.tolist() == ["WOTH"]
    assert boxes.report[["line", "action"]].values.tolist() == [[line, "skipped table"]]
    assert not is_raven_table(f)


def test_huge_cell_is_data_not_a_csv_error(tmp_path):
    # Python's csv module refuses cells over 128 KiB with a raw csv.Error; Raven does not care
    label = "x" * 200_000
    f = table(tmp_path, [f"1\tSpectrogram 1\t1\t0.5\t1.5\t100\t2000\t{label}"])
    assert BoxedAnnotations.from_raven_files(f).df.annotation.str.len().tolist() == [200_000]


def test_bare_cr_and_other_line_separators(tmp_path):
    f = tmp_path / "t.txt"
    # old Mac line ends; U+2028 inside a label is not a line break
    f.write_bytes((HEADER + "1\tSpectrogram 1\t1\t0.5\t1.5\t100\t2000\ta\u2028b\n").replace("\n", "\r").encode())
    boxes = BoxedAnnotations.from_raven_files(f)
    assert boxes.df.annotation.tolist() == ["a\u2028b"]


# ----------------------------------------------------------------------------- files that are not tables


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")
def test_named_pipe_is_refused_without_blocking(tmp_path):
    pipe = tmp_path / "pipe.Table.1.selections.txt"
    os.mkfifo(pipe)
    with pytest.raises(AnnotationTableError, match="not a regular file"):
        BoxedAnnotations.from_raven_files(pipe)
    assert not is_raven_table(pipe)
    with pytest.raises(AnnotationTableError, match="not a regular file"):
        load_table(pipe)


def test_folder_missing_file_and_impossible_name(tmp_path):
    with pytest.raises(AnnotationTableError, match="is a folder"):
        BoxedAnnotations.from_raven_files(tmp_path)
    with pytest.raises(AnnotationTableError, match="not a usable file name"):
        BoxedAnnotations.from_raven_files(str(tmp_path / "a\x00b.txt"))
    with pytest.raises(AnnotationTableError, match="does not exist"):
        load_table(tmp_path / "gone.txt")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads anything")
def test_permission_denied_is_named(tmp_path):
    f = table(tmp_path, ["1\tSpectrogram 1\t1\t0.5\t1.5\t100\t2000\tWOTH"])
    f.chmod(0)
    try:
        with pytest.raises(AnnotationTableError, match="permission denied"):
            BoxedAnnotations.from_raven_files(f)
    finally:
        f.chmod(0o644)


# ----------------------------------------------------------------------------- Audacity and CSV


def test_audacity_numbers_and_frequencies(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("0.5\t1.0\tSP\n\\\t100\t2000\n\u0661\t2.0\tX\n\\\t5\t6\n3.0\t4.0\tCRER\n\\\t-5\t200\n")
    with pytest.raises(AnnotationTableError) as info:
        BoxedAnnotations.from_audacity([f])
    assert (info.value.line, info.value.column) == (3, "start/end")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boxes = BoxedAnnotations.from_audacity([f], errors="skip")
    assert boxes.df.annotation.tolist() == ["SP", "CRER"]
    assert (boxes.df.low_f.iloc[0], boxes.df.high_f.iloc[0]) == (100, 2000)
    assert np.isnan(boxes.df.low_f.iloc[1])  # its frequency line had a negative frequency
    assert boxes.report.line.tolist() == [3, 4, 6]
    assert boxes.report.problem.iloc[1] == "frequency line of a skipped label"


def test_csv_with_other_digits(tmp_path):
    f = tmp_path / "boxes.csv"
    f.write_text("start_time,end_time,annotation\n1,2,a\n\u0663,4,b\n", encoding="utf-8")
    with pytest.raises(AnnotationTableError, match=r"line 3, column 'start_time'"):
        BoxedAnnotations.from_csv(f)
    f.write_text("start_time,end_time,annotation\n1,2,a\n5,4,b\n")
    with pytest.raises(AnnotationTableError, match=r"line 3, column 'end_time'.*ends before it starts"):
        BoxedAnnotations.from_csv(f)
    f.write_bytes(b"\x00\x01")
    with pytest.raises(AnnotationTableError, match="zero bytes"):
        BoxedAnnotations.from_csv(f)


# ----------------------------------------------------------------------------- writing


def test_written_tables_stay_tables(tmp_path):
    """Control characters in labels or extra columns never break the written table."""
    df = pd.DataFrame({"audio_file": "a.wav", "start_time": [0.0, 1.0], "end_time": [0.5, 2.0],
                       "low_f": [0.0, 10.0], "high_f": [100.0, 20.0],
                       "annotation": ["a\tb\r\nc", "nul\x00here\x0b"], "note\tx": ["\x1c", None]})
    written = BoxedAnnotations(df).to_raven_files(tmp_path)
    back = BoxedAnnotations.from_raven_files(written, audio_files=["a.wav"])
    assert back.df.annotation.tolist() == ["a b c", "nul here"]
    assert "note x" in back.df.columns and back.df["note x"].isna().all()
    assert back.df.start_time.tolist() == [0.0, 1.0] and back.report.empty
