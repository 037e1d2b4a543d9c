"""Agile modelling on embeddings: search by example and shallow classifiers (synthetic vectors with known answers)."""
import json

import numpy as np
import pandas as pd
import pytest

from opso_nb.ml.agile import ClassifierLoadError, EmbeddingSearch, ShallowClassifier, search_by_example
from opso_nb.utils import CLIP_INDEX


def embeddings_table(vectors, model="test-model"):
    n = len(vectors)
    index = pd.MultiIndex.from_arrays([[f"f{i // 10}.wav" for i in range(n)], [3.0 * (i % 10) for i in range(n)],
                                       [3.0 * (i % 10) + 3 for i in range(n)]], names=CLIP_INDEX)
    table = pd.DataFrame(np.asarray(vectors, dtype=np.float32), index=index)
    table.columns = [f"e{i}" for i in range(table.shape[1])]
    table.attrs["embedding_model"] = model
    return table


def two_clusters(n=200, dim=32, seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, dim))
    label = np.arange(n) % 2
    vectors = centres[label] + spread * rng.normal(size=(n, dim))
    return embeddings_table(vectors), label


def test_search_finds_the_query_first_and_its_cluster():
    table, label = two_clusters()
    query = table.index[4]
    hits = search_by_example(table, query, k=20)
    assert hits.index[0] == query and hits.similarity.iloc[0] == pytest.approx(1.0, abs=1e-5)
    matched = label[table.index.get_indexer(hits.index)]
    assert (matched == label[4]).all()
    # (file, time) finds the clip containing that time
    by_time = search_by_example(table, (query[0], query[1] + 1.0), k=1)
    assert by_time.index[0] == query
    assert list(hits["rank"][:3]) == [1, 2, 3]


def test_ivf_index_agrees_with_exact_search_on_clustered_vectors():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(50, 64))
    vectors = centres[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 64))
    table = embeddings_table(vectors)
    exact = EmbeddingSearch(table, method="exact")
    ivf = EmbeddingSearch(table, method="ivf", n_probe=8)
    queries = vectors[:20]
    pe, _ = exact.search(queries, 10)
    pi, _ = ivf.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(pe, pi)])
    assert recall >= 0.9


@pytest.mark.parametrize("hidden_units", [0, 16])
def test_shallow_classifier_separates_held_out_clips_and_round_trips(tmp_path, hidden_units):
    from sklearn.metrics import roc_auc_score

    table, label = two_clusters(n=300, spread=1.2, seed=1)
    labels = pd.DataFrame({"call": label}, index=table.index)
    train, test = labels.iloc[:100], labels.iloc[100:]
    model = ShallowClassifier(hidden_units=hidden_units, seed=0).fit(table, train)
    scores = model.predict(table.loc[test.index])
    assert roc_auc_score(test["call"], scores["call"]) > 0.95
    path = model.save(tmp_path / "clf.json")
    again = ShallowClassifier.load(path)
    np.testing.assert_allclose(again.predict(table).to_numpy(), model.predict(table).to_numpy(), atol=1e-6)
    assert again.embedding_model == "test-model" and again.classes == ["call"]
    next_up = model.suggest(scores, "call", labelled=train.index, n=5, mode="uncertain")
    assert len(next_up) == 5 and (next_up.score - 0.5).abs().max() <= (scores["call"] - 0.5).abs().max()


def test_numpy_scoring_equals_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    table, label = two_clusters(n=120, spread=1.5, seed=2)
    labels = pd.DataFrame({"call": label}, index=table.index)
    model = ShallowClassifier(balanced=False, regularization=0.5).fit(table, labels)
    ref = LogisticRegression(C=0.5, max_iter=1000).fit(table.to_numpy(), label)
    np.testing.assert_allclose(model.predict(table)["call"], ref.predict_proba(table.to_numpy())[:, 1], atol=1e-4)


def test_classifier_refuses_other_embeddings_and_bad_files(tmp_path):
    table, label = two_clusters()
    model = ShallowClassifier().fit(table, pd.DataFrame({"call": label}, index=table.index))
    other = table.copy()
    other.attrs["embedding_model"] = "another-model"
    with pytest.raises(ValueError, match="another-model"):
        model.predict(other)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "opso_nb.ShallowClassifier", "version": 1, "classes": ["a"],
                               "layers": [{"weights": [[1.0, 2.0]], "bias": [0.0]}]}))
    with pytest.raises(ClassifierLoadError, match="shapes"):
        ShallowClassifier.load(bad)
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(ClassifierLoadError, match="junk.json"):
        ShallowClassifier.load(tmp_path / "junk.json")
    with pytest.raises(ValueError, match="both present and absent"):
        ShallowClassifier().fit(table, pd.DataFrame({"call": 1}, index=table.index))


def test_search_by_example_with_the_ivf_index_skips_failed_clips_and_finds_the_query():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(20, 32))
    vectors = centres[rng.integers(0, 20, 2000)] + 0.2 * rng.normal(size=(2000, 32))
    vectors[7] = np.nan  # a clip that failed
    table = embeddings_table(vectors)
    with pytest.warns(UserWarning, match="1 clip"):
        searcher = EmbeddingSearch(table, method="ivf", n_probe=8)
    assert searcher.vectors is None and searcher.size == 1999  # the index holds the only normalised copy
    query = table.index[11]
    hits = search_by_example(table, query, k=5, searcher=searcher)
    assert hits.index[0] == query and table.index[7] not in hits.index
    with pytest.warns(UserWarning, match="1 clip"):
        exact = search_by_example(table, query, k=5, method="exact")
    assert len(set(hits.index) & set(exact.index)) >= 4
