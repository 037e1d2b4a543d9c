"""Metrics against hand-computed values (and scikit-learn's definitions)."""
import numpy as np
import pandas as pd
import pytest

from opso_nb import metrics


def test_roc_auc_known_values():
    # 3 positives, 2 negatives; pairs (pos > neg): 0.9>{0.3,0.5}, 0.4>{0.3}, 0.8>{0.3,0.5} -> 5 of 6
    t = [1, 0, 1, 0, 1]
    s = [0.9, 0.3, 0.4, 0.5, 0.8]
    assert metrics.roc_auc(t, s) == pytest.approx(5 / 6)
    assert metrics.roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # tie counts one half
    assert np.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))


def test_average_precision_known_values():
    # sklearn doc example: average_precision_score([0,0,1,1],[0.1,0.4,0.35,0.8]) = 0.8333
    assert metrics.average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.83333333)
    assert metrics.average_precision([1, 0, 1], [0.9, 0.5, 0.7]) == pytest.approx(1.0)
    assert np.isnan(metrics.average_precision([0, 0], [0.1, 0.2]))


def test_multi_target_metrics_table_and_thresholds():
    t = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = np.array([[0.9, 0.5], [0.4, 0.6], [0.6, 0.4], [0.1, 0.1]])
    m = metrics.multi_target_metrics(t, s, class_names=["a", "b"], threshold=0.5)
    # class a: predictions [1,0,1,0] == targets -> P=R=F1=1
    # class b: scores >= 0.5 -> preds [1,1,0,0] vs targets [0,1,1,0] -> P=R=F1=0.5
    # class b AUC: positives 0.6, 0.4 vs negatives 0.5, 0.1 -> 3 of 4 pairs
    assert m["a"]["f1"] == 1.0
    assert m["b"]["precision"] == 0.5 and m["b"]["recall"] == 0.5
    assert m["f1"] == pytest.approx((1 + 0.5) / 2)
    assert m["a"]["au_roc"] == 1.0
    assert m["macro_roc_auc"] == pytest.approx((1 + 0.75) / 2)
    table = metrics.metrics_table(t, s, class_names=["a", "b"])
    assert list(table.index) == ["a", "b"] and "avg_precision" in table.columns


def test_single_target_and_label_helpers():
    s = pd.DataFrame([[0.1, 0.9], [0.8, 0.2]], columns=["x", "y"])
    labels = metrics.predict_single_target_labels(s)
    assert isinstance(labels, pd.DataFrame) and labels.values.tolist() == [[0, 1], [1, 0]]
    assert metrics.predict_multi_target_labels(s, {"x": 0.5, "y": 0.95}).values.tolist() == [[0, 0], [1, 0]]
    m = metrics.single_target_metrics([[0, 1], [1, 0]], s.values, class_names=["x", "y"])
    assert m["accuracy"] == 1.0 and m["f1"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        metrics.multi_target_metrics(np.zeros((2, 2)), np.zeros((3, 2)))
    with pytest.warns(UserWarning, match="all nan"):
        metrics.multi_target_metrics(np.zeros((2, 1)), np.full((2, 1), np.nan))


def test_ranking_metrics_equal_sklearn_on_random_scores_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(3)
    t = rng.integers(0, 2, size=200)
    s = np.round(rng.random(200), 1)  # one decimal: many tied scores
    assert metrics.roc_auc(t, s) == pytest.approx(roc_auc_score(t, s), abs=1e-12)
    assert metrics.average_precision(t, s) == pytest.approx(average_precision_score(t, s), abs=1e-12)
    # NaN scores (clips that failed) are left out, not ranked
    s_nan = s.copy()
    s_nan[:10] = np.nan
    assert metrics.roc_auc(t, s_nan) == pytest.approx(roc_auc_score(t[10:], s[10:]), abs=1e-12)


def test_precision_recall_f1_equal_sklearn():
    from sklearn.metrics import precision_recall_fscore_support

    t = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
    p = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0]])
    precision, recall, f1 = metrics.precision_recall_f1(t, p)
    ref = precision_recall_fscore_support(t, p, average=None, zero_division=0)
    np.testing.assert_allclose(precision, ref[0])
    np.testing.assert_allclose(recall, ref[1])
    np.testing.assert_allclose(f1, ref[2])
    # by hand, class 0: tp 2 (rows 0, 4), fp 1 (row 3), fn 1 (row 2) -> P = R = F1 = 2/3
    assert precision[0] == pytest.approx(2 / 3) and recall[0] == pytest.approx(2 / 3)
    assert (precision[2], recall[2], f1[2]) == (0.0, 0.0, 0.0)  # class never present nor predicted
    one = metrics.precision_recall_f1([1, 0, 1, 1], [1, 1, 0, 1])  # a single class
    assert [round(float(v[0]), 4) for v in one] == [0.6667, 0.6667, 0.6667]


def test_multi_target_metrics_match_opensoundscape_numbers():
    # the values OpenSoundscape 0.13.2's multi_target_metrics gives on these inputs
    t = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = np.array([[0.9, 0.5], [0.4, 0.6], [0.6, 0.4], [0.1, 0.1]])
    m = metrics.multi_target_metrics(t, s, ["a", "b"], 0.5)
    assert m["map"] == pytest.approx(0.9166666666666666)
    assert m["au_roc"] == pytest.approx(0.875)
    assert m["jaccard"] == pytest.approx(2 / 3) and m["hamming_loss"] == 0.25
    assert m["b"]["avg_precision"] == pytest.approx(0.8333333333333333) and m["b"]["support"] == 2


def test_one_predict_single_target_labels_for_both_paths():
    from opso_nb import detection

    assert detection.predict_single_target_labels is metrics.predict_single_target_labels
    assert detection.predict_multi_target_labels is metrics.predict_multi_target_labels
    s = np.array([[0.1, 0.9], [np.nan, np.nan], [np.nan, 0.3], [0.7, 0.7]])
    # an all-NaN row (a clip that could not be read) gets no label; NaN never wins; ties go to the first class
    assert metrics.predict_single_target_labels(s).tolist() == [[0, 1], [0, 0], [0, 1], [1, 0]]
    as_list = metrics.predict_single_target_labels(s.tolist())
    assert isinstance(as_list, list) and as_list[1] == [0, 0]
    import torch

    as_tensor = metrics.predict_single_target_labels(torch.tensor(s))
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.tolist()[2] == [0, 1]
    assert metrics.predict_multi_target_labels(s, [0.5, 0.2]).tolist() == [[0, 1], [0, 0], [0, 1], [1, 1]]
    with pytest.raises(ValueError, match="3 thresholds for 2 classes"):
        metrics.predict_multi_target_labels(s, [0.1, 0.2, 0.3])
    with pytest.raises(TypeError, match="DataFrame"):
        metrics.predict_multi_target_labels(s, {"a": 0.5})


def test_single_target_metrics_are_class_averaged():
    t = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    s = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    m = metrics.single_target_metrics(t, s, class_names=["x", "y", "z"])
    # predictions x, y, z, x: class x P 1/2 R 1, y P 1 R 1, z P 1 R 1/2
    assert m["accuracy"] == 0.75
    assert m["precision"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
