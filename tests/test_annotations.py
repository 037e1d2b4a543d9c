"""Tests for opso_nb.annotations: Raven I/O tolerance, errors, editing, clip-label arithmetic."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from opso_nb import sample_data
from opso_nb.annotations import (
    AnnotationTableError,
    BoxedAnnotations,
    categorical_to_one_hot,
    load_table,
    one_hot_labels_on_time_interval,
    one_hot_to_categorical,
    pair_audio_and_tables,
    table_stem,
)

FIX = Path(__file__).parent / "fixtures" / "raven"
SR = 8000


def make_wav(path: Path, seconds: float, sr: int = SR) -> str:
    """A real (quiet noise) WAV of the given length."""
    rng = np.random.default_rng(0)
    sf.write(path, (rng.standard_normal(int(round(seconds * sr))) * 0.01).astype("float32"), sr)
    return str(path)


def boxes(rows, audio="a.wav"):
    """BoxedAnnotations from (start, end, label) tuples for one file."""
    df = pd.DataFrame(rows, columns=["start_time", "end_time", "annotation"])
    df["audio_file"] = audio
    return BoxedAnnotations(df)


def load_quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BoxedAnnotations.from_raven_files(*args, **kwargs)


# ----------------------------------------------------------------------------- reading


def test_bundled_recording_table():
    wav, table = sample_data.annotated_recording()
    ann = BoxedAnnotations.from_raven_files([table], audio_files=[wav])
    assert len(ann) == 279
    assert list(ann.df.columns[:7]) == [
        "audio_file", "annotation_file", "annotation", "start_time", "end_time", "low_f", "high_f"
    ]
    first = ann.df.iloc[0]
    assert first.annotation == "NOCA"
    assert first.start_time == pytest.approx(0.17809591100000002)
    assert first.end_time == pytest.approx(3.390418452)
    assert (first.low_f, first.high_f) == (1340.5, 2899.9)
    assert first.audio_file == str(wav) and first.annotation_file == str(table)
    assert ann.report.empty
    assert (ann.df.start_time < 10).sum() == 9  # first 9 boxes fall in the 10 s snippet


def test_bom_and_crlf():
    ann = BoxedAnnotations.from_raven_files(FIX / "bom_crlf.Table.1.selections.txt")
    assert ann.df.annotation.tolist() == ["WOTH", "EATO"]
    assert ann.df.end_time.tolist() == [1.5, 2.75]
    # the BOM must not leak into the first column name
    assert "Selection" in ann.df.columns and ann.df.Selection.tolist() == [1, 2]


def test_other_annotation_column_name_and_lowercase():
    f = FIX / "label_column.Table.1.selections.txt"
    ann = BoxedAnnotations.from_raven_files(f)
    assert ann.df.annotation.tolist() == ["Woth", "WOTH", "noca"]
    assert ann.df.Score.tolist() == [0.9, 0.4, 0.7]
    assert ann.df.Notes.tolist()[0] == "faint" and pd.isna(ann.df.Notes.iloc[1])
    low = BoxedAnnotations.from_raven_files(f, lowercase_labels=True)
    assert low.unique_labels() == ["woth", "noca"]
    # explicit list of accepted names, case-insensitive; first present wins
    by_list = BoxedAnnotations.from_raven_files(f, annotation_column=["Species", "LABEL"])
    assert by_list.df.annotation.tolist() == ["Woth", "WOTH", "noca"]
    # 0.9 spelling: position of the column
    by_idx = BoxedAnnotations.from_raven_files(f, annotation_column_idx=7)
    assert by_idx.df.annotation.tolist()[0] == "faint"


def test_keep_extra_columns():
    f = FIX / "label_column.Table.1.selections.txt"
    none = BoxedAnnotations.from_raven_files(f, keep_extra_columns=False)
    assert list(none.df.columns) == [
        "audio_file", "annotation_file", "annotation", "start_time", "end_time", "low_f", "high_f"
    ]
    some = BoxedAnnotations.from_raven_files(f, keep_extra_columns=["notes"])
    assert list(some.df.columns[7:]) == ["Notes"]


def test_no_annotation_column_is_reported_not_fatal():
    f = FIX / "no_annotation_column.Table.1.selections.txt"
    with pytest.warns(UserWarning, match="no annotation column"):
        ann = BoxedAnnotations.from_raven_files(f)
    assert len(ann) == 2 and ann.df.annotation.isna().all()
    assert ann.report.action.tolist() == ["labels left empty"]
    assert ann.report.annotation_file.iloc[0] == str(f)
    # annotation_column=None asks for no labels: nothing to report
    quiet = BoxedAnnotations.from_raven_files(f, annotation_column=None)
    assert quiet.report.empty and quiet.df.annotation.isna().all()


def test_empty_tables_and_differing_columns_concatenate():
    files = [
        FIX / "empty.Table.1.selections.txt",
        FIX / "bom_crlf.Table.1.selections.txt",
        FIX / "label_column.Table.1.selections.txt",
    ]
    ann = BoxedAnnotations.from_raven_files(files)
    assert len(ann) == 5
    assert ann.df.annotation_file.map(lambda p: Path(p).name).tolist() == [
        "bom_crlf.Table.1.selections.txt"] * 2 + ["label_column.Table.1.selections.txt"] * 3
    # columns present only in one table are NaN for the others
    assert ann.df.Score.isna().tolist() == [True, True, False, False, False]
    empty = BoxedAnnotations.from_raven_files(files[0])
    assert len(empty) == 0 and empty.unique_labels() == []
    assert sample_data.path("annotated/EmptyExample.Table.1.selections.txt").exists()
    assert len(BoxedAnnotations.from_raven_files(
        sample_data.path("annotated/EmptyExample.Table.1.selections.txt"))) == 0


def test_short_rows_from_bundled_table():
    # header has Species, distance, type; rows leave the last two off
    ann = BoxedAnnotations.from_raven_files(
        sample_data.path("annotated/MSD-0003_20180427_2minstart00.Table.1.selections.txt")
    )
    assert len(ann) == 10
    assert ann.df.annotation.iloc[:2].tolist() == ["WOTH", "EATO"]
    assert "distance" in ann.df.columns


def test_annotation_column_named_annotation():
    ann = BoxedAnnotations.from_raven_files(sample_data.path("annotated/raven_with_Annotation_col.txt"))
    assert ann.df.annotation.tolist() == ["CSWA"]


def test_cp1252_and_blank_lines():
    ann = BoxedAnnotations.from_raven_files(FIX / "cp1252.Table.1.selections.txt")
    assert ann.df.annotation.tolist() == ["Grive à dos olive"] * 2
    assert "Espèce" in ann.df.columns


def test_multifile_table_uses_begin_file_and_file_offset(tmp_path):
    ann = BoxedAnnotations.from_raven_files(FIX / "multifile.Table.1.selections.txt")
    assert ann.df.audio_file.tolist() == ["clip_a.wav", "clip_b.wav"]
    # times within each file: File Offset + box length
    assert ann.df.start_time.tolist() == [1.0, 2.0]
    assert ann.df.end_time.tolist() == [2.0, 3.5]


def test_waveform_duplicates_dropped_and_reported():
    with pytest.warns(UserWarning, match="problem"):
        ann = BoxedAnnotations.from_raven_files(FIX / "two_views.Table.1.selections.txt")
    assert ann.df.annotation.tolist() == ["WOTH", "EATO"]
    assert ann.df.low_f.tolist() == [1000, 2000]  # spectrogram rows kept
    assert ann.report.action.tolist() == ["dropped duplicate"] * 2
    assert ann.report.line.tolist() == [2, 4]


@pytest.mark.parametrize(
    "name, line, row, column, words",
    [
        ("text_in_number", 3, 2, "Begin Time (s)", "'abc'"),
        ("end_before_start", 2, 1, "End Time (s)", "before it starts"),
        ("missing_start", 2, 1, "Begin Time (s)", "missing value"),
        ("too_many_cells", 3, 2, None, "9 cells"),
        ("missing_end_time", 1, None, "End Time (s)", "no 'End Time (s)' column"),
    ],
)
def test_malformed_tables_name_file_line_and_column(name, line, row, column, words):
    f = FIX / f"{name}.Table.1.selections.txt"
    with pytest.raises(AnnotationTableError) as info:
        BoxedAnnotations.from_raven_files(f)
    err = info.value
    assert err.path == str(f) and err.line == line and err.row == row and err.column == column
    assert words in str(err) and str(f) in str(err) and f"line {line}" in str(err)
    if column:
        assert repr(column) in str(err)


def test_skip_mode_keeps_good_rows_and_reports_bad_ones():
    f = FIX / "text_in_number.Table.1.selections.txt"
    with pytest.warns(UserWarning, match="skipped row"):
        ann = BoxedAnnotations.from_raven_files(f, errors="skip")
    assert ann.df.start_time.tolist() == [0.5, 3.0]
    rep = ann.report.iloc[0]
    assert (rep.line, rep.column, rep.action) == (3, "Begin Time (s)", "skipped row")


def test_missing_and_empty_files_raise():
    with pytest.raises(AnnotationTableError, match="empty"):
        BoxedAnnotations.from_raven_files(FIX / "zero_bytes.Table.1.selections.txt")
    with pytest.raises(AnnotationTableError, match="does not exist"):
        BoxedAnnotations.from_raven_files(FIX / "nope.txt")
    with pytest.raises(ValueError, match="one audio file per table"):
        BoxedAnnotations.from_raven_files([FIX / "empty.Table.1.selections.txt"], audio_files=["a.wav", "b.wav"])


def test_audacity_labels():
    wav = sample_data.path("annotated/spinetail.wav")
    ann = load_table(sample_data.path("annotated/spinetail.txt"), audio_file=wav)
    first = ann.df.iloc[0]
    assert (first.start_time, first.end_time, first.annotation) == (0.101385, 0.367520, "SP")
    assert (first.low_f, first.high_f) == (6441.064453, 12296.577148)
    assert ann.unique_labels() == ["SP", "CRER"]
    assert (ann.df.audio_file == str(wav)).all()


# ----------------------------------------------------------------------------- round trips


def test_raven_round_trip(tmp_path):
    wav, table = sample_data.annotated_recording()
    ann = BoxedAnnotations.from_raven_files([table], audio_files=[wav])
    written = ann.to_raven_files(tmp_path)
    assert [p.name for p in written] == ["Recording_1_Segment_07-snippet.Table.1.selections.txt"]
    text = written[0].read_text()
    assert text.splitlines()[0].split("\t")[:8] == [
        "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
        "Low Freq (Hz)", "High Freq (Hz)", "Annotation",
    ]
    assert "\r" not in text and not text.startswith("\ufeff")
    back = BoxedAnnotations.from_raven_files(written, audio_files=[wav])
    cols = ["audio_file", "annotation", "start_time", "end_time", "low_f", "high_f"]
    pd.testing.assert_frame_equal(back.df[cols], ann.df[cols])
    # no temp files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [written[0].name]


def test_to_raven_files_one_per_audio_and_empty_tables(tmp_path):
    a, b, c = make_wav(tmp_path / "a.wav", 3), make_wav(tmp_path / "b.wav", 3), make_wav(tmp_path / "c.wav", 3)
    df = pd.DataFrame({
        "audio_file": [a, b, a], "start_time": [0.0, 1.0, 2.0], "end_time": [1.0, 2.0, 2.5],
        "annotation": ["x", "y\tz", np.nan], "score": [0.5, 0.25, 1.0],
    })
    out = tmp_path / "out"
    written = BoxedAnnotations(df, audio_files=[a, b, c]).to_raven_files(out)
    assert sorted(p.name for p in written) == [f"{s}.Table.1.selections.txt" for s in "abc"]
    pairing = pair_audio_and_tables(tmp_path, out)
    assert list(pairing.pairs.index) == ["a", "b", "c"]
    back = pairing.load()
    assert len(back) == 3
    assert back.df.annotation.isna().tolist() == [False, True, False]
    assert back.df.annotation[[0, 2]].tolist() == ["x", "y z"]
    # missing frequencies are written as 0 Hz .. Nyquist so Raven accepts the table
    assert (back.df.low_f == 0).all() and (back.df.high_f == SR / 2).all()
    assert back.df.score.tolist() == [0.5, 1.0, 0.25]
    assert len(BoxedAnnotations.from_raven_files(out / "c.Table.1.selections.txt")) == 0


def test_csv_round_trip_and_bad_csv(tmp_path):
    ann = BoxedAnnotations.from_raven_files(FIX / "label_column.Table.1.selections.txt")
    path = ann.to_csv(tmp_path / "boxes.csv")
    back = BoxedAnnotations.from_csv(path)
    pd.testing.assert_frame_equal(back.df, ann.df, check_dtype=False)
    (tmp_path / "bad.csv").write_text("start_time,end_time,annotation\n1,2,a\nx,3,b\n")
    with pytest.raises(AnnotationTableError, match=r"line 3.*'start_time'"):
        BoxedAnnotations.from_csv(tmp_path / "bad.csv")


def test_concat():
    a = boxes([(0, 1, "x")], "a.wav")
    b = boxes([(2, 3, "y")], "b.wav")
    both = a + b
    assert both.df.audio_file.tolist() == ["a.wav", "b.wav"]
    assert BoxedAnnotations.concat([a, b, a]).df.annotation.tolist() == ["x", "y", "x"]


# ----------------------------------------------------------------------------- editing


def test_subset_convert_unique_global():
    ann = boxes([(0, 1, "GWWA_song"), (1, 2, "?"), (2, 3, "GWWA_song"), (3, 4, None)])
    assert ann.unique_labels() == ["GWWA_song", "?"]
    assert ann.subset(["?"]).df.start_time.tolist() == [1.0]
    assert ann.subset(["?", None]).df.start_time.tolist() == [1.0, 3.0]
    conv = ann.convert_labels({"GWWA_song": "GWWA", "?": np.nan})
    assert conv.df.annotation.isna().tolist() == [False, True, False, True]
    assert conv.df.annotation[[0, 2]].tolist() == ["GWWA", "GWWA"]
    assert conv.unique_labels() == ["GWWA"]
    assert ann.unique_labels() == ["GWWA_song", "?"]  # out of place
    table = pd.DataFrame({"from": ["?"], "to": ["unsure"]})
    assert ann.convert_labels(table).unique_labels() == ["GWWA_song", "unsure"]
    assert ann.global_one_hot_labels(["?", "GWWA_song", "DOG"]) == [1, 1, 0]


def test_trim_edge_modes_and_zero_length():
    ann = boxes([(4, 7, "a"), (6, 8, "b"), (9, 12, "c"), (5, 5, "z0"), (10, 10, "z1"), (11, 13, "out")])
    t = ann.trim(5, 10)
    assert t.df.annotation.tolist() == ["a", "b", "c", "z0"]
    assert t.df[["start_time", "end_time"]].values.tolist() == [[0, 2], [1, 3], [4, 5], [0, 0]]
    keep = ann.trim(5, 10, edge_mode="keep")
    assert keep.df[["start_time", "end_time"]].values.tolist()[:3] == [[-1, 2], [1, 3], [4, 7]]
    assert ann.trim(5, 10, edge_mode="remove").df.annotation.tolist() == ["b", "z0"]


def test_bandpass():
    df = pd.DataFrame({"audio_file": "a.wav", "start_time": [0, 0, 0], "end_time": [1, 1, 1],
                       "low_f": [100, 900, 3000], "high_f": [1200, 2000, 4000], "annotation": list("abc")})
    bp = BoxedAnnotations(df).bandpass(1000, 2500)
    assert bp.df.annotation.tolist() == ["a", "b"]
    assert bp.df[["low_f", "high_f"]].values.tolist() == [[1000, 1200], [1000, 2000]]
    assert BoxedAnnotations(df).bandpass(1000, 2500, "remove").df.annotation.tolist() == []


# ----------------------------------------------------------------------------- clip labels


def test_coyote_dog_example():
    """The manual's example: 15 s in three 5 s clips, coyote 2.5-4 s, dog 4-10 s."""
    ann = boxes([(2.5, 4, "COYOTE"), (4, 10, "DOG")], "yard.wav")
    labels = ann.one_hot_clip_labels(clip_duration=5, min_label_overlap=0.25, full_duration=15)
    assert labels.index.names == ["file", "start_time", "end_time"]
    assert labels.index.tolist() == [("yard.wav", 0.0, 5.0), ("yard.wav", 5.0, 10.0), ("yard.wav", 10.0, 15.0)]
    assert labels.columns.tolist() == ["COYOTE", "DOG"]
    assert labels.values.tolist() == [[1, 1], [0, 1], [0, 0]]


def test_box_straddling_two_clips_min_label_overlap():
    # box 4.8-6.0 s: 0.2 s in clip 0-5, 1.0 s in clip 5-10
    ann = boxes([(4.8, 6.0, "x")])
    clip_df = pd.DataFrame({"file": "a.wav", "start_time": [0.0, 5.0], "end_time": [5.0, 10.0]})
    assert ann.one_hot_labels_like(clip_df, min_label_overlap=0.25)["x"].tolist() == [0, 1]
    assert ann.one_hot_labels_like(clip_df, min_label_overlap=0.2)["x"].tolist() == [1, 1]
    assert ann.one_hot_labels_like(clip_df, min_label_overlap=1.01)["x"].tolist() == [0, 0]
    # fraction rule is OR-ed: 1.0/1.2 = 0.83 of the box lies in the second clip
    assert ann.one_hot_labels_like(clip_df, 5, min_label_fraction=0.8)["x"].tolist() == [0, 1]
    assert ann.one_hot_labels_like(clip_df, 5, min_label_fraction=0.1)["x"].tolist() == [1, 1]


def test_overlapping_clips_and_short_boxes():
    # 3 s clips every 2 s over 9 s: (0,3),(2,5),(4,7),(6,9)
    ann = boxes([(2.9, 3.0, "chip"), (4.5, 6.5, "song")])
    labels = ann.one_hot_clip_labels(3, clip_overlap=1, min_label_overlap=0.25, min_label_fraction=None,
                                     full_duration=9, class_subset=["song", "chip", "absent"])
    assert labels.index.get_level_values("start_time").tolist() == [0, 2, 4, 6]
    assert labels["song"].tolist() == [0, 1, 1, 1]  # overlaps 0.5, 2.0, 0.5 s
    assert labels["chip"].tolist() == [0, 0, 0, 0]  # 0.1 s is below min_label_overlap
    assert labels["absent"].tolist() == [0, 0, 0, 0]
    frac = ann.one_hot_clip_labels(3, 1, min_label_overlap=0.25, min_label_fraction=1, full_duration=9)
    assert frac["chip"].tolist() == [1, 1, 0, 0]
    # OpenSoundscape 0.9's default min_label_fraction=1: a box wholly inside a clip labels it
    default = ann.one_hot_clip_labels(3, 1, min_label_overlap=0.25, full_duration=9)
    pd.testing.assert_frame_equal(default, frac)
    # the newer name clip_labels defaults to min_label_fraction=None, as in OpenSoundscape >= 0.10
    newer = ann.clip_labels(3, 0.25, full_duration=9, clip_overlap=1, class_subset=["song", "chip", "absent"])
    pd.testing.assert_frame_equal(newer, labels)


def test_one_hot_clip_labels_reads_durations_and_includes_unannotated_files(tmp_path):
    a = make_wav(tmp_path / "a.wav", 7.0)
    b = make_wav(tmp_path / "b.wav", 4.0)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF")
    ann = BoxedAnnotations(pd.DataFrame({"audio_file": [a], "start_time": [3.5], "end_time": [4.5],
                                         "annotation": ["x"]}))
    with pytest.warns(UserWarning, match="broken.wav"):
        labels, invalid = ann.one_hot_clip_labels(
            2, 0, 0.25, final_clip="remainder", audio_files=[a, b, str(bad)], return_invalid_samples=True
        )
    assert labels.index.tolist() == [
        (a, 0.0, 2.0), (a, 2.0, 4.0), (a, 4.0, 6.0), (a, 6.0, 7.0), (b, 0.0, 2.0), (b, 2.0, 4.0)
    ]
    assert labels["x"].tolist() == [0, 1, 1, 0, 0, 0]
    assert invalid.file.tolist() == [str(bad)]


def test_bundled_recording_labels_by_hand():
    wav, table = sample_data.annotated_recording()
    ann = BoxedAnnotations.from_raven_files([table], audio_files=[wav])
    with pytest.warns(UserWarning, match=r"270 box\(es\) start after the end of their audio file"):
        labels = ann.one_hot_clip_labels(clip_duration=5, clip_overlap=0, min_label_overlap=0.25)
    # the table spans 300 s but the audio is 10 s: two clips
    assert len(labels) == 2
    inside = ann.trim(0, 10).df
    for (_, t0, t1), row in labels.iterrows():
        for cls in labels.columns:
            b = inside[inside.annotation == cls]
            ov = (np.minimum(b.end_time, t1) - np.maximum(b.start_time, t0)).max() if len(b) else 0
            assert row[cls] == float(ov >= 0.25)
    assert labels.loc[(str(wav), 0.0, 5.0), "NOCA"] == 1


def test_path_spellings_match_and_mismatch_warns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ann = boxes([(0, 1, "x")], "./sub/../a.wav")
    clip_df = pd.DataFrame({"file": [str(tmp_path / "a.wav")], "start_time": [0.0], "end_time": [1.0]})
    assert ann.one_hot_labels_like(clip_df, 0.25)["x"].tolist() == [1]
    other = pd.DataFrame({"file": ["elsewhere.wav"], "start_time": [0.0], "end_time": [1.0]})
    with pytest.warns(UserWarning, match="none of the files"):
        ann.one_hot_labels_like(other, 0.25)


def test_module_helpers():
    df = pd.DataFrame({"start_time": [0.0, 3.0], "end_time": [2.0, 4.0], "annotation": ["a", "b"]})
    assert one_hot_labels_on_time_interval(df, ["a", "b"], 1.5, 3.2, 0.25) == {"a": 1, "b": 0}
    arr, classes = categorical_to_one_hot([["white", "red"], ["green", "white"]])
    assert classes == ["white", "red", "green"] and arr.tolist() == [[1, 1, 0], [1, 0, 1]]
    assert one_hot_to_categorical(arr, classes) == [["white", "red"], ["white", "green"]]


def test_bad_arguments():
    ann = boxes([(0, 1, "x")])
    with pytest.raises(ValueError, match="edge_mode"):
        ann.trim(0, 1, edge_mode="cut")
    with pytest.raises(ValueError, match="min_label_fraction"):
        ann.one_hot_clip_labels(1, 0, 0.1, min_label_fraction=2, full_duration=2)
    with pytest.raises(ValueError, match="ends before it starts"):
        BoxedAnnotations(pd.DataFrame({"start_time": [2.0], "end_time": [1.0]}))


# ----------------------------------------------------------------------------- pairing


def test_pairing_reports_both_sides(tmp_path):
    audio, tables = tmp_path / "audio", tmp_path / "tables"
    audio.mkdir(), tables.mkdir()
    for stem in ["r1", "r2", "r.3"]:
        make_wav(audio / f"{stem}.wav", 0.5)
    (tables / "r1.Table.1.selections.txt").write_text("x")
    (tables / "r.3.Table.2.selections.txt").write_text("x")
    (tables / "orphan.selections.txt").write_text("x")
    (tables / "r2.Table.1.selections.txt").write_text("x")
    (tables / "r2.txt").write_text("x")  # second table for r2: ambiguous
    p = pair_audio_and_tables(audio, tables)
    assert list(p.pairs.index) == ["r.3", "r1"]
    assert p.audio_without_table == []
    assert [Path(f).name for f in p.tables_without_audio] == ["orphan.selections.txt"]
    assert sorted(p.ambiguous.file.map(lambda f: Path(f).name)) == ["r2.Table.1.selections.txt", "r2.txt"]
    assert "2 pairs" in repr(p)
    assert table_stem("x/13738.Table.1.selections.txt") == "13738"


def test_boxes_overlapping_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    ann = boxes([(0, 1, "x"), (2, 4, "y"), (5, 5, "z")], "a.wav") + boxes([(0, 9, "x")], "b.wav")
    win = ann.boxes_overlapping(0.5, 3, audio_file="a.wav")
    assert win.df.annotation.tolist() == ["x", "y"] and win.df.start_time.tolist() == [0.0, 2.0]
    assert ann.boxes_overlapping(5, 6).df.annotation.tolist() == ["z", "x"]
    ax = ann.plot(audio_file="a.wav", start_time=0, end_time=3, default_high_f=1000)
    assert len(ax.patches) == 2 and [t.get_text() for t in ax.texts] == ["x", "y"]


def test_begin_path_preferred_and_given_audio_wins():
    f = FIX / "begin_path.Table.1.selections.txt"
    ann = BoxedAnnotations.from_raven_files(f)
    assert ann.df.audio_file.tolist() == ["/data/site1/rec_0500.wav", "/data/site1/rec_0501.wav"]
    assert ann.df.start_time.tolist() == [0.5, 1.0] and ann.df.end_time.tolist() == [1.0, 2.0]
    given = BoxedAnnotations.from_raven_files(f, audio_files=["mine.wav"])
    assert given.df.audio_file.tolist() == ["mine.wav", "mine.wav"]


def test_empty_inputs():
    ann = boxes([(0, 1, "x")])
    empty_clips = pd.DataFrame(columns=["file", "start_time", "end_time"])
    out = ann.one_hot_labels_like(empty_clips, 0.25)
    assert out.shape == (0, 1) and list(out.columns) == ["x"]
    nothing = BoxedAnnotations()
    assert len(nothing) == 0 and nothing.one_hot_clip_labels(3, 0, 0.25).empty


def test_clip_labels_match_brute_force_on_random_boxes():
    """The binary-search pairing must give exactly the labels of checking every clip against every box."""
    rng = np.random.default_rng(42)
    n = 300
    start = np.round(rng.uniform(0, 60, n), 2)
    length = np.round(rng.choice([0.0, 0.05, 0.3, 1.0, 4.0, 12.0], n), 2)
    labels = rng.choice(["a", "b", "c"], n)
    files = rng.choice(["f1.wav", "f2.wav"], n)
    ann = BoxedAnnotations(pd.DataFrame({"audio_file": files, "start_time": start, "end_time": start + length,
                                         "annotation": labels}))
    # irregular clips: unsorted, different lengths, overlapping
    c0 = np.round(rng.uniform(0, 70, 120), 2)
    c1 = c0 + np.round(rng.choice([0.5, 2.0, 5.0, 15.0], 120), 2)
    cf = rng.choice(["f1.wav", "f2.wav", "f3.wav"], 120)
    clip_df = pd.DataFrame({"file": cf, "start_time": c0, "end_time": c1})
    for overlap, fraction in [(0.25, None), (0.0, None), (1.0, 0.5)]:
        got = ann.one_hot_labels_like(clip_df, overlap, fraction, class_subset=["a", "b", "c"])
        for i, (f, t0, t1) in enumerate(zip(cf, c0, c1)):
            for cls in "abc":
                sel = (files == f) & (labels == cls)
                s, e = start[sel], start[sel] + length[sel]
                ln = e - s
                touch = ((s < t1) & (e > t0)) | ((ln == 0) & (s >= t0) & (s < t1))
                ov = np.minimum(e, t1) - np.maximum(s, t0)
                ok = touch & (ov >= overlap - 1e-9)
                if fraction is not None:
                    ok |= touch & (np.where(ln > 0, ov / np.where(ln > 0, ln, 1), 1.0) >= fraction - 1e-9)
                assert got.iloc[i][cls] == float(ok.any()), (i, cls, overlap, fraction)


def test_skip_mode_reports_unreadable_tables_and_loads_the_rest():
    files = [FIX / "zero_bytes.Table.1.selections.txt", FIX / "missing_end_time.Table.1.selections.txt",
             FIX / "bom_crlf.Table.1.selections.txt"]
    with pytest.warns(UserWarning, match="skipped table"):
        ann = BoxedAnnotations.from_raven_files(files, errors="skip")
    assert ann.df.annotation.tolist() == ["WOTH", "EATO"]
    assert ann.report.action.tolist() == ["skipped table", "skipped table"]
    assert [Path(p).name for p in ann.report.annotation_file] == [f.name for f in files[:2]]
    assert ann.report.column.isna().tolist() == [True, False] and ann.report.column[1] == "End Time (s)"


def test_infinite_time_is_an_error(tmp_path):
    f = tmp_path / "inf.txt"
    f.write_text("Begin Time (s)\tEnd Time (s)\tSpecies\n1\tinf\tx\n")
    with pytest.raises(AnnotationTableError, match=r"line 2.*'End Time \(s\)'.*finite"):
        BoxedAnnotations.from_raven_files(f)


def test_pairing_from_a_list_of_audio_files_looks_next_to_them():
    wav, table = sample_data.annotated_recording()
    p = pair_audio_and_tables([wav])
    assert p.pairs.annotation_file.tolist() == [str(table)]
    assert p.audio_without_table == [] and len(p.tables_without_audio) == 4
