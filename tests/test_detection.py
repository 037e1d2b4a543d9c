"""Threshold helpers: detections, counts, precision/recall/F1, Raven and CSV export."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from opso_nb.detection import (
    detect,
    detection_counts,
    detections_table,
    precision_recall_curve_table,
    top_clips as detection_top,
    predict_multi_target_labels,
    predict_single_target_labels,
    threshold_for_precision,
    threshold_metrics,
    thresholds_per_class,
    write_detections_csv,
    write_raven_tables,
)
from opso_nb.metrics import precision_recall_f1

IDX = pd.MultiIndex.from_tuples(
    [("a.wav", 0.0, 2.0), ("a.wav", 1.0, 3.0), ("a.wav", 2.0, 4.0), ("a.wav", 6.0, 8.0),
     ("b.wav", 0.0, 2.0), ("b.wav", 2.0, 4.0)],
    names=["file", "start_time", "end_time"],
)


@pytest.fixture
def scores():
    return pd.DataFrame({"frog": [0.9, 0.8, 0.2, 0.7, np.nan, 0.1],
                         "bird": [0.1, 0.3, 0.6, 0.6, 0.95, 0.5]}, index=IDX)


@pytest.fixture
def labels():
    return pd.DataFrame({"frog": [1, 1, 0, 0, 1, 1], "bird": [0, 0, 1, 1, 1, 0]}, index=IDX)


def test_threshold_forms(scores):
    assert thresholds_per_class(scores, 0.5).tolist() == [0.5, 0.5]
    assert thresholds_per_class(scores, [0.1, 0.2]).tolist() == [0.1, 0.2]
    assert thresholds_per_class(scores, {"bird": 0.3, "frog": 0.4}).tolist() == [0.4, 0.3]
    with pytest.raises(ValueError, match="2 classes"):
        thresholds_per_class(scores, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="bird"):
        thresholds_per_class(scores, {"frog": 0.4})
    with pytest.raises(TypeError):
        detect(scores.to_numpy(), 0.5)


def test_detect_keeps_scores_equal_to_the_threshold_and_nan_false(scores):
    # score >= threshold, as OpenSoundscape 0.13's predict_multi_target_labels and sklearn's curves
    hits = detect(scores, {"frog": 0.8, "bird": 0.5})
    assert hits["frog"].tolist() == [True, True, False, False, False, False]
    assert hits["bird"].tolist() == [False, False, True, True, True, True]
    assert detection_counts(scores, 0.5).to_dict() == {"frog": 3, "bird": 4}
    assert predict_multi_target_labels(scores, 0.5)["frog"].tolist() == [1, 1, 0, 1, 0, 0]
    assert predict_multi_target_labels(scores, {"frog": 0.8, "bird": 0.5}).astype(bool).equals(hits)
    single = predict_single_target_labels(scores)
    assert single.sum(axis=1).tolist() == [1] * 6
    assert single["bird"].tolist() == [0, 0, 1, 0, 1, 1]


def test_threshold_metrics_known_counts(scores, labels):
    m = threshold_metrics(scores, labels, 0.5)
    # frog: scored clips 0,1,2,3,5 (4 is NaN); detected 0,1,3; positives 0,1,5
    assert m.loc["frog", ["tp", "fp", "fn", "tn"]].tolist() == [2, 1, 1, 1]
    assert m.loc["frog", "precision"] == pytest.approx(2 / 3)
    assert m.loc["frog", "recall"] == pytest.approx(2 / 3)
    assert m.loc["frog", "f1"] == pytest.approx(2 / 3)
    # bird: detected 2,3,4 (positive) and 5 (0.5, at the threshold: negative); nothing missed
    assert m.loc["bird", ["tp", "fp", "fn"]].tolist() == [3, 1, 0]
    assert m.loc["bird", "precision"] == 0.75 and m.loc["bird", "f1"] == pytest.approx(6 / 7)
    # nothing detected: precision is 0, as opso_nb.metrics (scikit-learn's zero_division=0) gives
    none = threshold_metrics(scores, labels, 5.0)
    assert none.loc["frog", "precision"] == 0 and none.loc["frog", "recall"] == 0
    p, r, f1 = precision_recall_f1(labels[["frog"]].to_numpy()[[0, 1, 2, 3, 5]],
                                   np.zeros((5, 1), dtype=int))
    assert (none.loc["frog", "precision"], none.loc["frog", "recall"], none.loc["frog", "f1"]) == (p[0], r[0], f1[0])


def test_curve_matches_pointwise_metrics(scores, labels):
    curve = precision_recall_curve_table(scores, labels)
    for cls in ["frog", "bird"]:
        c = curve[curve["class"] == cls]
        # the lowest threshold is the lowest score: every clip detected
        assert c["threshold"].iloc[0] == scores[cls].min() and c["recall"].iloc[0] == 1.0
        for t, tp, fp, fn, precision in c[["threshold", "tp", "fp", "fn", "precision"]].itertuples(index=False):
            m = threshold_metrics(scores, labels, t).loc[cls]
            assert (tp, fp, fn, precision) == (m.tp, m.fp, m.fn, m.precision)
    t = threshold_for_precision(scores, labels, 1.0)
    assert t["bird"] == pytest.approx(0.6)  # at or above 0.6: clips 2, 3, 4, all birds (0.5 adds a non-bird)
    assert t["frog"] == pytest.approx(0.8)  # at or above 0.8: clips 0, 1
    # applied with detect, the threshold picks exactly the clips that gave that precision
    assert threshold_metrics(scores, labels, t).loc[["frog", "bird"], "precision"].tolist() == [1.0, 1.0]


def tied_scores_and_labels(seed, n=300):
    """Scores rounded to 0.05 (many ties) with labels more often 1 at high scores."""
    rng = np.random.default_rng(seed)
    s = np.round(rng.uniform(0, 1, n) / 0.05) * 0.05
    y = rng.uniform(size=n) < s
    return s, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_table_matches_sklearn_on_tied_scores(seed):
    from sklearn.metrics import precision_recall_curve

    s, y = tied_scores_and_labels(seed)
    index = pd.MultiIndex.from_arrays([[f"r{i}.wav" for i in range(len(s))], np.zeros(len(s)), np.ones(len(s))],
                                      names=["file", "start_time", "end_time"])
    curve = precision_recall_curve_table(pd.DataFrame({"frog": s}, index=index),
                                         pd.DataFrame({"frog": y.astype(int)}, index=index))
    precision, recall, thresholds = precision_recall_curve(y, s, drop_intermediate=False)
    # sklearn: score >= threshold, one point per distinct score, then (1, 0) with no threshold: nothing detected
    np.testing.assert_array_equal(curve["threshold"], thresholds)
    np.testing.assert_allclose(curve["precision"], precision[:-1])
    np.testing.assert_allclose(curve["recall"], recall[:-1])
    assert len(thresholds) < len(s)  # ties were there to be tested


def test_detections_agree_with_the_curve_at_every_threshold():
    s, y = tied_scores_and_labels(3, n=60)
    index = pd.MultiIndex.from_arrays([[f"r{i}.wav" for i in range(len(s))], np.zeros(len(s)), np.ones(len(s))],
                                      names=["file", "start_time", "end_time"])
    scores, labels = pd.DataFrame({"frog": s}, index=index), pd.DataFrame({"frog": y.astype(int)}, index=index)
    for row in precision_recall_curve_table(scores, labels).itertuples(index=False):
        hits = detect(scores, row.threshold)["frog"].to_numpy()
        assert (row.tp, row.fp) == (int((hits & y).sum()), int((hits & ~y).sum()))


def test_unmatched_labels_rejected(scores, labels):
    with pytest.raises(ValueError, match="do not match"):
        threshold_metrics(scores, labels.reset_index(drop=True), 0.5)
    with pytest.raises(ValueError, match="no column"):
        threshold_metrics(scores, labels[["frog"]], 0.5)


def test_detections_table_and_merge(scores):
    det = detections_table(scores, 0.5)
    assert det.columns.tolist() == ["file", "start_time", "end_time", "class", "score"]
    assert len(det) == 7  # bird's 0.5 in b.wav reaches the threshold
    merged = detections_table(scores, 0.5, merge=True)
    frog_a = merged[(merged["file"] == "a.wav") & (merged["class"] == "frog")]
    assert frog_a[["start_time", "end_time", "score"]].values.tolist() == [[0.0, 3.0, 0.9], [6.0, 8.0, 0.7]]
    bird_a = merged[(merged["file"] == "a.wav") & (merged["class"] == "bird")]
    assert bird_a[["start_time", "end_time"]].values.tolist() == [[2.0, 4.0], [6.0, 8.0]]


def test_raven_and_csv_export(scores, tmp_path):
    from opso_nb import sample_data

    birds = str(sample_data.birds())
    s = scores.rename(index={"a.wav": birds}, level="file")
    det = detections_table(s, 0.5)
    written = write_raven_tables(det, tmp_path / "raven", include_empty_files=["c.wav"])
    names = sorted(p.name for p in written)
    assert names == ["b.Table.1.selections.txt", "birds_10s.Table.1.selections.txt", "c.Table.1.selections.txt"]
    table = pd.read_csv(tmp_path / "raven" / "birds_10s.Table.1.selections.txt", sep="\t")
    assert table.columns.tolist()[:7] == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
                                         "Low Freq (Hz)", "High Freq (Hz)"]
    assert table["Selection"].tolist() == [1, 2, 3, 4, 5]
    assert table["Begin Time (s)"].tolist() == [0.0, 1.0, 2.0, 6.0, 6.0]
    assert table["Annotation"].tolist() == ["frog", "frog", "bird", "bird", "frog"]
    assert table["High Freq (Hz)"].iloc[0] == 16000.0  # Nyquist of the 32 kHz file
    assert len(pd.read_csv(tmp_path / "raven" / "c.Table.1.selections.txt", sep="\t")) == 0
    path = write_detections_csv(det, tmp_path / "det.csv")
    pd.testing.assert_frame_equal(pd.read_csv(path), det)
    assert not list(tmp_path.glob(".*tmp*"))


def test_top_clips_skip_overlaps(scores):
    top = detection_top(scores, "frog", 3)
    # 0.9 (a 0-2) wins; 0.8 (a 1-3) overlaps it and is skipped; then 0.7 (a 6-8), 0.2 (a 2-4)
    assert top.index.tolist() == [("a.wav", 0.0, 2.0), ("a.wav", 6.0, 8.0), ("a.wav", 2.0, 4.0)]
    assert top["score"].tolist() == [0.9, 0.7, 0.2]
    assert detection_top(scores, "frog", 2, allow_overlap=True)["score"].tolist() == [0.9, 0.8]
    with pytest.raises(ValueError, match="no class"):
        detection_top(scores, "owl")
