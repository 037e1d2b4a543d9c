"""OpenSoundscape 0.9 parity of ``opso_nb.annotations`` and ``opso_nb.data_selection`` (issue 13).

Two parts:

* the names claimed, with the signatures the 0.9 manual documents (parameter
  order, keyword names, defaults): each must exist; documented defaults we
  change on purpose are listed with the left-out names, and both lists must be
  explained in ``docs/differences/annotations.md``;
* behaviour with known answers, worked out by hand or taken from the manual's
  tutorial (the Golden-winged Warbler table, the coyote/dog example).
"""
from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import opso_nb
from opso_nb.annotations import BoxedAnnotations

DIFFERENCES = Path(__file__).resolve().parents[1] / "docs" / "differences" / "annotations.md"
REQUIRED = inspect.Parameter.empty

#: Documented signatures (0.9 manual): name -> [(parameter, default or REQUIRED), ...] in order.
#: A documented REQUIRED parameter may have a default here (an extension, not a difference).
CLAIMED = {
    "annotations.BoxedAnnotations": [("df", REQUIRED)],
    "annotations.BoxedAnnotations.bandpass": [("low_f", REQUIRED), ("high_f", REQUIRED), ("edge_mode", "trim")],
    "annotations.BoxedAnnotations.convert_labels": [("conversion_table", REQUIRED)],
    "annotations.BoxedAnnotations.from_raven_files": [
        ("raven_paths", REQUIRED), ("audio_files", None), ("annotation_column_idx", 7), ("keep_extra_columns", True)],
    "annotations.BoxedAnnotations.global_one_hot_labels": [("classes", REQUIRED)],
    "annotations.BoxedAnnotations.one_hot_clip_labels": [
        ("clip_duration", REQUIRED), ("clip_overlap", REQUIRED), ("min_label_overlap", REQUIRED),
        ("min_label_fraction", 1), ("full_duration", None), ("class_subset", None), ("final_clip", None)],
    "annotations.BoxedAnnotations.one_hot_labels_like": [
        ("clip_df", REQUIRED), ("min_label_overlap", REQUIRED), ("min_label_fraction", None),
        ("class_subset", None), ("warn_no_annotations", False)],
    "annotations.BoxedAnnotations.subset": [("classes", REQUIRED)],
    "annotations.BoxedAnnotations.to_raven_files": [("save_dir", REQUIRED)],
    "annotations.BoxedAnnotations.trim": [("start_time", REQUIRED), ("end_time", REQUIRED), ("edge_mode", "trim")],
    "annotations.BoxedAnnotations.unique_labels": [],
    "annotations.categorical_to_one_hot": [("labels", REQUIRED), ("class_subset", None)],
    "annotations.one_hot_labels_on_time_interval": [
        ("df", REQUIRED), ("class_subset", REQUIRED), ("start_time", REQUIRED), ("end_time", REQUIRED),
        ("min_label_overlap", REQUIRED), ("min_label_fraction", None)],
    "annotations.one_hot_to_categorical": [("one_hot", REQUIRED), ("classes", REQUIRED)],
    "data_selection.resample": [
        ("df", REQUIRED), ("n_samples_per_class", REQUIRED), ("upsample", True), ("downsample", True),
        ("with_replace", False), ("random_state", None)],
    "data_selection.upsample": [
        ("input_df", REQUIRED), ("label_column", "Labels"), ("with_replace", False), ("random_state", None)],
}

#: Documented parameter -> our parameter at the same position (the documented name is also accepted).
POSITIONAL_NAMES = {
    ("annotations.BoxedAnnotations.from_raven_files", "raven_paths"): "raven_files",
    ("annotations.BoxedAnnotations.from_raven_files", "annotation_column_idx"): "annotation_column",
}

#: Documented defaults changed on purpose: (name, parameter) -> word the differences page uses.
CHANGED_DEFAULTS = {
    ("annotations.BoxedAnnotations.from_raven_files", "annotation_column_idx"): "annotation_column_idx=7",
}

#: Documented names left out: name -> word the differences page uses.
LEFT_OUT = {"annotations.diff": "annotations.diff"}


def resolve(dotted: str):
    module_name, *attrs = dotted.split(".")
    obj = importlib.import_module(f"opso_nb.{module_name}")
    for i, attr in enumerate(attrs):
        if not hasattr(obj, attr):
            # a class lives in the module; its methods on the class
            obj = importlib.import_module(f"opso_nb.{module_name}.{'.'.join(attrs[:i + 1])}")
        else:
            obj = getattr(obj, attr)
    return obj


@pytest.mark.parametrize("name", sorted(CLAIMED))
def test_claimed_name_has_the_documented_signature(name):
    obj = resolve(name)
    params = [p for p in inspect.signature(obj).parameters.values() if p.name not in ("self", "cls")]
    by_name = {p.name: p for p in params}
    for position, (documented, default) in enumerate(CLAIMED[name]):
        ours = POSITIONAL_NAMES.get((name, documented), documented)
        assert params[position].name == ours, f"{name}: position {position} is {params[position].name}"
        assert params[position].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,)
        assert documented in by_name, f"{name} does not accept {documented}= by keyword"
        if default is REQUIRED or (name, documented) in CHANGED_DEFAULTS:
            continue
        assert by_name[documented].default == default, f"{name}({documented}=...) default"


def test_left_out_names_are_absent_and_every_difference_is_explained():
    page = DIFFERENCES.read_text(encoding="utf-8")
    for name, word in LEFT_OUT.items():
        module_name, attr = name.split(".")
        assert not hasattr(importlib.import_module(f"opso_nb.{module_name}"), attr)
        assert word in page
    for word in CHANGED_DEFAULTS.values():
        assert word in page


def test_package_keeps_the_module_path_and_public_names():
    import opso_nb.annotations as annotations

    assert annotations.__file__.endswith("annotations/__init__.py")
    for name in annotations.__all__:
        assert getattr(annotations, name) is not None
    assert opso_nb.annotations.BoxedAnnotations is BoxedAnnotations


# ----------------------------------------------------------------------------- the manual's tutorial table

# 13738.Table.1.selections.txt of the manual's Golden-winged Warbler example (times, frequencies, labels)
GWWA = [
    (0.459636, 2.298182, 4029.8, 17006.4, "GWWA_song"),
    (6.705283, 8.246417, 4156.6, 17031.7, "GWWA_song"),
    (13.464641, 15.005775, 3903.1, 17082.4, "?"),
    (20.128208, 21.601748, 4055.2, 16930.3, "GWWA_song"),
    (26.047590, 27.521131, 4207.2, 17057.1, "GWWA_song"),
    (33.121946, 34.663079, 4207.2, 17082.4, "GWWA_song"),
    (42.967925, 44.427946, 4181.9, 17057.1, "GWWA_song"),
    (52.417508, 53.891048, 4232.6, 16930.3, "GWWA_song"),
]


@pytest.fixture
def gwwa_table(tmp_path):
    path = tmp_path / "13738.Table.1.selections.txt"
    lines = ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tCall\tNotes"]
    lines += [f"{i}\tSpectrogram 1\t1\t{s}\t{e}\t{lo}\t{hi}\t{label}\t" for i, (s, e, lo, hi, label) in
              enumerate(GWWA, start=1)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_manual_loading_examples(gwwa_table):
    # annotation_column_idx=7: the first user column ("Call" is not a name "auto" knows)
    ann = BoxedAnnotations.from_raven_files([gwwa_table], audio_files=["13738.wav"], annotation_column_idx=7)
    assert len(ann) == 8
    assert ann.df.annotation.head().tolist() == ["GWWA_song", "GWWA_song", "?", "GWWA_song", "GWWA_song"]
    assert ann.df.start_time.tolist() == [g[0] for g in GWWA]
    assert ann.df.high_f.tolist() == [g[3] for g in GWWA]
    assert {"Channel", "Notes", "View", "Selection"} <= set(ann.df.columns)
    positional = BoxedAnnotations.from_raven_files([gwwa_table], ["13738.wav"], 7, ["Notes"])
    assert list(positional.df.columns[7:]) == ["Notes"] and positional.df.Notes.isna().all()
    with pytest.warns(UserWarning, match="no annotation column"):  # "Call" is not a name "auto" looks for
        named = BoxedAnnotations.from_raven_files(raven_paths=[gwwa_table], keep_extra_columns=None)
    assert named.df.shape == (8, 7) and named.df.annotation.isna().all()
    # annotation_column_idx=None: no label column, even when one exists
    blank = BoxedAnnotations.from_raven_files([gwwa_table], annotation_column_idx=None, annotation_column="Call")
    assert blank.df.annotation.isna().all() and blank.report.empty


def test_manual_convert_subset_and_clip_labels(gwwa_table):
    ann = BoxedAnnotations.from_raven_files([gwwa_table], audio_files=["13738.wav"], annotation_column="Call")
    corrected = ann.convert_labels({"GWWA_song": "GWWA", "?": np.nan})
    assert corrected.df.annotation.isna().tolist() == [False, False, True] + [False] * 5
    assert corrected.unique_labels() == ["GWWA"]
    assert ann.unique_labels() == ["GWWA_song", "?"]  # out of place
    table = pd.DataFrame({"original": ["GWWA_song"], "new": ["GWWA"]})
    assert ann.convert_labels(table).unique_labels() == ["GWWA", "?"]
    unsure = ann.subset(["?"])
    assert unsure.df[["start_time", "end_time"]].values.tolist() == [[13.464641, 15.005775]]
    labels = ann.one_hot_clip_labels(full_duration=60, clip_duration=5, clip_overlap=0,
                                     class_subset=["GWWA_song"], min_label_overlap=0.25)
    assert labels.index.names == ["file", "start_time", "end_time"]
    assert labels.GWWA_song.head().tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]  # as printed in the manual
    assert labels.GWWA_song.tolist() == [1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 0]  # by hand, all 12 clips
    three = ann.one_hot_clip_labels(clip_duration=3, clip_overlap=0, min_label_overlap=0.1, full_duration=60)
    assert three.columns.tolist() == ["GWWA_song", "?"]
    assert three.iloc[:2].values.tolist() == [[1, 0], [0, 0]]
    assert three.loc[("13738.wav", 12.0, 15.0)].tolist() == [0, 1]
    assert ann.global_one_hot_labels(["?", "GWWA_song", "DOG"]) == [1, 1, 0]


def test_columns_differing_between_files_and_to_raven_files(gwwa_table, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("Begin Time (s)\tEnd Time (s)\tSpecies\tScore\n1.0\t2.0\tEATO\t0.5\n")
    ann = BoxedAnnotations.from_raven_files([gwwa_table, other], audio_files=["13738.wav", "other.wav"],
                                            annotation_column=["Call", "Species"])
    assert ann.df.annotation.tolist()[-2:] == ["GWWA_song", "EATO"]
    assert ann.df.Score.isna().sum() == 8 and ann.df.Score.iloc[-1] == 0.5
    assert ann.df.Notes.isna().all() and ann.df.low_f.isna().tolist() == [False] * 8 + [True]
    # one tab-separated file per audio file, re-loadable
    out = ann.to_raven_files(tmp_path / "out")
    assert sorted(p.name for p in out) == ["13738.Table.1.selections.txt", "other.Table.1.selections.txt"]
    header = out[0].read_text().splitlines()[0].split("\t")
    assert header[:8] == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                          "High Freq (Hz)", "Annotation"]
    back = BoxedAnnotations.from_raven_files(out, audio_files=["13738.wav", "other.wav"])
    pd.testing.assert_frame_equal(back.df[["annotation", "start_time", "end_time"]],
                                  ann.df[["annotation", "start_time", "end_time"]])


def test_a_file_column_is_the_audio_file(tmp_path):
    df = pd.DataFrame({"file": ["a.wav", "b.wav"], "start_time": [0.0, 1.0], "end_time": [1.0, 2.0],
                       "annotation": ["x", "y"]})
    ann = BoxedAnnotations(df)
    assert ann.df.audio_file.tolist() == ["a.wav", "b.wav"]
    assert sorted(p.name for p in ann.to_raven_files(tmp_path)) == ["a.Table.1.selections.txt",
                                                                     "b.Table.1.selections.txt"]


# ----------------------------------------------------------------------------- clip labels by hand


def test_coyote_and_dog():
    """The manual's one-hot example: 15 s in 5 s clips; coyote 2.5-4 s, dog 4-10 s."""
    ann = BoxedAnnotations(pd.DataFrame({"audio_file": "yard.wav", "start_time": [2.5, 4.0], "end_time": [4.0, 10.0],
                                         "annotation": ["COYOTE", "DOG"]}))
    labels = ann.one_hot_clip_labels(clip_duration=5, clip_overlap=0, min_label_overlap=0.25, full_duration=15)
    assert labels.reset_index().values.tolist() == [
        ["yard.wav", 0.0, 5.0, 1.0, 1.0], ["yard.wav", 5.0, 10.0, 0.0, 1.0], ["yard.wav", 10.0, 15.0, 0.0, 0.0]]


@pytest.mark.parametrize("overlap, fraction, expected", [
    # box 4.8-6.0 s (1.2 s) in clips 0-5 and 5-10: 0.2 s and 1.0 s inside, fractions 1/6 and 5/6
    (0.2, None, [1, 1]), (0.21, None, [0, 1]), (1.0, None, [0, 1]), (1.01, None, [0, 0]),
    (10, 0.16, [1, 1]), (10, 0.17, [0, 1]), (10, 0.83, [0, 1]), (10, 0.84, [0, 0]),
    (0.21, 0.84, [0, 1]), (10, 1, [0, 0]),
])
def test_overlap_and_fraction_thresholds(overlap, fraction, expected):
    ann = BoxedAnnotations(pd.DataFrame({"audio_file": "a.wav", "start_time": [4.8], "end_time": [6.0],
                                         "annotation": ["x"]}))
    clips = pd.DataFrame({"file": "a.wav", "start_time": [0.0, 5.0], "end_time": [5.0, 10.0]})
    assert ann.one_hot_labels_like(clips, overlap, fraction)["x"].tolist() == expected
    assert [ann.one_hot_labels_like(clips.iloc[[i]], overlap, fraction)["x"].iloc[0] for i in (0, 1)] == expected
    from opso_nb.annotations import one_hot_labels_on_time_interval

    got = [one_hot_labels_on_time_interval(ann.df, ["x"], t0, t1, overlap, fraction)["x"] for t0, t1 in
           [(0, 5), (5, 10)]]
    assert got == expected


def test_trim_and_bandpass_known_answers():
    df = pd.DataFrame({"audio_file": "a.wav", "annotation": list("abcdef"),
                       "start_time": [6.0, 4.0, 9.0, 5.0, 10.0, 11.0], "end_time": [7.0, 6.0, 12.0, 5.0, 10.0, 12.0],
                       "low_f": [100, 900, 1500, 0, 0, 2600], "high_f": [500, 1200, 3000, 10, 10, 4000]})
    ann = BoxedAnnotations(df)
    trimmed = ann.trim(5, 10)
    # 6 s becomes 1 s; zero-length boxes: at 5 s kept, at 10 s left out ([lower, upper))
    assert trimmed.df.annotation.tolist() == ["a", "b", "c", "d"]
    assert trimmed.df[["start_time", "end_time"]].values.tolist() == [[1, 2], [0, 1], [4, 5], [0, 0]]
    assert ann.trim(5, 10, "keep").df[["start_time", "end_time"]].values.tolist()[:3] == [[1, 2], [-1, 1], [4, 7]]
    assert ann.trim(5, 10, "remove").df.annotation.tolist() == ["a", "d"]
    band = ann.bandpass(1000, 2500)
    assert band.df.annotation.tolist() == ["b", "c"]
    assert band.df[["low_f", "high_f"]].values.tolist() == [[1000, 1200], [1500, 2500]]
    assert ann.bandpass(1000, 2500, "keep").df.high_f.tolist() == [1200, 3000]
    assert ann.bandpass(1000, 3000, "remove").df.annotation.tolist() == ["c"]
    assert ann.df.start_time.tolist()[0] == 6.0  # out of place


def test_one_hot_helpers_round_trip():
    from opso_nb.annotations import categorical_to_one_hot, one_hot_to_categorical

    arr, classes = categorical_to_one_hot([["white", "red"], ["green", "white"]])
    assert classes == ["white", "red", "green"] and arr.tolist() == [[1, 1, 0], [1, 0, 1]]
    assert one_hot_to_categorical(arr, classes) == [["white", "red"], ["white", "green"]]
    arr, classes = categorical_to_one_hot([[0, 1, 2], [3]], class_subset=[3, 2, 1, 0])
    assert arr.tolist() == [[0, 1, 1, 1], [1, 0, 0, 0]] and classes == [3, 2, 1, 0]


# ----------------------------------------------------------------------------- empty annotations


def test_empty_annotations(tmp_path):
    header_only = tmp_path / "silent.Table.1.selections.txt"
    header_only.write_text("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\t"
                           "High Freq (Hz)\tSpecies\n")
    ann = BoxedAnnotations.from_raven_files([header_only], audio_files=["silent.wav"])
    assert len(ann) == 0 and ann.unique_labels() == [] and ann.audio_files == ["silent.wav"]
    assert ann.global_one_hot_labels(["WOTH"]) == [0]
    labels = ann.one_hot_clip_labels(clip_duration=2, clip_overlap=0, min_label_overlap=0.25, full_duration=5,
                                     class_subset=["WOTH", "EATO"])
    assert labels.index.tolist() == [("silent.wav", 0.0, 2.0), ("silent.wav", 2.0, 4.0)]
    assert (labels.values == 0).all() and labels.columns.tolist() == ["WOTH", "EATO"]
    assert ann.one_hot_clip_labels(2, 0, 0.25, full_duration=5).shape == (2, 0)
    clips = pd.DataFrame({"file": "silent.wav", "start_time": [0.0], "end_time": [2.0]})
    assert ann.one_hot_labels_like(clips, 0.25, class_subset=["WOTH"]).values.tolist() == [[0.0]]
    written = ann.to_raven_files(tmp_path / "out")
    assert [p.name for p in written] == ["silent.Table.1.selections.txt"]
    assert len(written[0].read_text().splitlines()) == 1
    assert len(ann.trim(0, 1)) == 0 and len(ann.bandpass(0, 10)) == 0 and len(ann.subset(["x"])) == 0
    assert len(ann.convert_labels({"a": "b"})) == 0
    assert len(BoxedAnnotations()) == 0


# ----------------------------------------------------------------------------- data_selection


def test_resample_counts_and_order():
    from opso_nb.data_selection import resample

    df = pd.DataFrame({"a": [1] * 5 + [0] * 2 + [0], "b": [0] * 5 + [1] * 2 + [0]}, index=list("pqrstuvw"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = resample(df, 3, random_state=1)
    assert out.sum().tolist() == [3, 3] and out.a.tolist() == [1, 1, 1, 0, 0, 0]  # ordered by class
    assert out.index[:3].isin(list("pqrst")).all() and out.index[:3].is_unique
    assert sorted(out.index[3:]) == sorted(["u", "v", out.index[3:][2]])  # both b rows, one twice
    kept = resample(df, 3, random_state=1, n_samples_without_labels=None)
    assert kept.index[-1] == "w" and len(kept) == 7
    assert resample(df, 3, upsample=False, random_state=1, n_samples_without_labels=None).sum().tolist() == [3, 2]


def test_upsample_documented_algorithm():
    from opso_nb.data_selection import upsample

    df = pd.DataFrame({"file": list("abcdefg"), "Labels": ["x"] * 5 + ["y"] * 2})
    out = upsample(df, random_state=3)
    ys = out[out.Labels == "y"].file.tolist()
    # 5 // 2 = 2 whole copies of each y row, then 1 more drawn at random
    assert len(ys) == 5 and ys[:4] == ["f", "g", "f", "g"] and ys[4] in ("f", "g")
    assert out[out.Labels == "x"].file.tolist() == list("abcde")
