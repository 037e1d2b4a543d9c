"""Tests for opso_nb.data_selection on small hand-made label tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from opso_nb.data_selection import (
    add_binary_numeric_labels,
    add_numeric_labels,
    expand_multi_labeled,
    resample,
    train_valid_split,
    upsample,
)


@pytest.fixture
def one_hot():
    idx = pd.MultiIndex.from_tuples(
        [("a.wav", float(i), float(i + 1)) for i in range(7)], names=["file", "start_time", "end_time"]
    )
    # 4 x "robin", 2 x "wren", 1 with neither
    return pd.DataFrame({"robin": [1, 1, 1, 1, 0, 0, 0], "wren": [0, 0, 0, 0, 1, 1, 0]}, index=idx)


def test_resample_up_and_down(one_hot):
    with pytest.warns(UserWarning, match="dropped 1 row"):
        out = resample(one_hot, 3, random_state=0)
    assert out.sum().tolist() == [3, 3]
    assert out.index.names == ["file", "start_time", "end_time"]
    robin = out[out.robin == 1]
    assert robin.index.is_unique and set(robin.index) <= set(one_hot.index[:4])
    wren = out[out.wren == 1]
    # 2 wren rows -> both once, then one of them again
    wren_starts = sorted(wren.index.get_level_values("start_time"))
    assert len(wren_starts) == 3 and set(wren_starts) == {4.0, 5.0}
    # grouped by class in column order
    assert out.robin.tolist() == [1, 1, 1, 0, 0, 0]


def test_resample_flags_and_negatives(one_hot):
    only_down = resample(one_hot, 3, upsample=False, random_state=1, n_samples_without_labels=1)
    assert only_down.sum().tolist() == [3, 2]
    assert len(only_down) == 6 and (only_down.iloc[-1] == 0).all()
    only_up = resample(one_hot, 3, downsample=False, random_state=1, n_samples_without_labels=1)
    assert only_up.sum().tolist() == [4, 3]
    same_a = resample(one_hot, 3, random_state=5, n_samples_without_labels=1)
    same_b = resample(one_hot, 3, random_state=5, n_samples_without_labels=1)
    pd.testing.assert_frame_equal(same_a, same_b)
    with pytest.raises(ValueError, match="one-hot"):
        resample(one_hot.assign(robin=one_hot.robin * 2), 3)


def test_upsample_categorical():
    df = pd.DataFrame({"file": list("abcdefg"), "Labels": ["x"] * 5 + ["y"] * 2})
    out = upsample(df, random_state=0)
    assert out.Labels.value_counts().to_dict() == {"x": 5, "y": 5}
    ys = out[out.Labels == "y"].file.tolist()
    assert sorted(set(ys)) == ["f", "g"] and ys.count("f") >= 2 and ys.count("g") >= 2
    with pytest.raises(ValueError, match="no column 'nope'"):
        upsample(df, label_column="nope")


def test_expand_and_numeric_labels():
    df = pd.DataFrame({"file": ["a", "b", "c"], "Labels": ["robin|wren", "wren", "robin | jay"]})
    ex = expand_multi_labeled(df)
    assert ex.file.tolist() == ["a", "a", "b", "c", "c"]
    assert ex.Labels.tolist() == ["robin", "wren", "wren", "robin", "jay"]
    num, mapping = add_numeric_labels(ex)
    assert mapping == {"jay": 0, "robin": 1, "wren": 2}
    assert num.NumericLabels.tolist() == [1, 2, 2, 1, 0]
    binary, bmap = add_binary_numeric_labels(ex, "wren")
    assert binary.NumericLabels.tolist() == [0, 1, 1, 0, 0] and bmap == {"not_wren": 0, "wren": 1}


def test_train_valid_split_stratified():
    df = pd.DataFrame({"Labels": ["x"] * 10 + ["y"] * 5, "v": np.arange(15)})
    train, valid = train_valid_split(df, train_size=0.8, random_state=3)
    assert train.Labels.value_counts().to_dict() == {"x": 8, "y": 4}
    assert valid.Labels.value_counts().to_dict() == {"x": 2, "y": 1}
    assert sorted(train.v.tolist() + valid.v.tolist()) == list(range(15))
    assert train.v.is_monotonic_increasing
    with pytest.raises(ValueError, match="train_size"):
        train_valid_split(df, train_size=1.5)
