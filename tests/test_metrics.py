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
