"""Agile modelling on embeddings: search by example, shallow classifiers, what to label next.

An embeddings table has the project's clip-table shape: indexed by ``(file,
start_time, end_time)``, one float32 column per embedding dimension (BirdNET's
1,024 values, or a CNN's penultimate layer; see :meth:`opso_nb.ml.birdnet.BirdNET.embed`
and :meth:`opso_nb.ml.cnn.CNN.embed`). The model that produced it is named in
``table.attrs["embedding_model"]`` (kept in Parquet files), so a classifier
trained on one model's embeddings refuses another's.

The loop: pick a clip with the call you want (:func:`search_by_example` finds
clips that sound alike), label some matches (the same
:class:`opso_nb.review.LabelStore` as clip review), train a
:class:`ShallowClassifier` on the labelled embeddings in seconds, score every
clip, label the top and the most uncertain ones (:meth:`ShallowClassifier.suggest`),
retrain, repeat.

Search is exact (cosine similarity with numpy, in blocks) up to
:data:`EXACT_SEARCH_LIMIT` clips; above that, when ``faiss-cpu`` is installed,
an inverted-file index (``faiss.IndexIVFFlat`` on unit vectors) answers in
milliseconds at a small loss of recall; ``benchmarks/bench_search.py`` measures both.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import param

from opso_nb.utils import CLIP_INDEX, atomic_write

__all__ = [
    "EXACT_SEARCH_LIMIT",
    "EmbeddingSearch",
    "search_by_example",
    "ShallowClassifier",
    "ClassifierLoadError",
    "embedding_model_of",
]

#: Up to this many embeddings, search is exact (numpy); above it an approximate faiss index is used when available.
EXACT_SEARCH_LIMIT = 50_000
_FORMAT = "opso_nb.ShallowClassifier"
_FORMAT_VERSION = 1


def embedding_model_of(embeddings: pd.DataFrame) -> str | None:
    """The embedding model named in ``embeddings.attrs`` (None when the table does not say)."""
    return embeddings.attrs.get("embedding_model")


def _as_matrix(embeddings) -> np.ndarray:
    values = embeddings.to_numpy(dtype=np.float32) if isinstance(embeddings, pd.DataFrame) else np.asarray(
        embeddings, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (clips x dimensions), got shape {values.shape}")
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).any(axis=1).sum())
        raise ValueError(f"{bad} embedding row(s) hold NaN or inf; drop the failed clips first")
    return values


def _unit_rows(values: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.maximum(norms, 1e-12)


def _check_clip_index(embeddings: pd.DataFrame, name="embeddings"):
    if not isinstance(embeddings, pd.DataFrame) or list(embeddings.index.names) != CLIP_INDEX:
        raise ValueError(f"{name} must be a DataFrame indexed by {CLIP_INDEX}")


class EmbeddingSearch:
    """Nearest clips by cosine similarity over an embeddings table.

    Parameters
    ----------
    embeddings : DataFrame
        Indexed by ``(file, start_time, end_time)``; one column per dimension.
    method : {"auto", "exact", "ivf"}
        ``exact``: numpy over all rows. ``ivf``: a faiss inverted-file index
        (needs ``faiss-cpu``). ``auto``: exact up to :data:`EXACT_SEARCH_LIMIT`
        rows, else ivf when faiss is installed.
    n_lists : int, optional
        Clusters of the ivf index (default sqrt(n)).
    n_probe : int
        Clusters searched per query (more: slower, better recall).
    """

    def __init__(self, embeddings: pd.DataFrame, method: str = "auto", n_lists: int | None = None,
                 n_probe: int = 16):
        _check_clip_index(embeddings)
        if method not in ("auto", "exact", "ivf"):
            raise ValueError(f"method must be 'auto', 'exact' or 'ivf', got {method!r}")
        self.index = embeddings.index
        self.embedding_model = embedding_model_of(embeddings)
        # one float32 copy, normalised in place: a million 1,024-value embeddings are 4 GB
        self.vectors = np.array(_as_matrix(embeddings), dtype=np.float32, copy=True)
        self.vectors /= np.maximum(np.linalg.norm(self.vectors, axis=1, keepdims=True), 1e-12)
        if method == "auto":
            method = "exact"
            if len(self.vectors) > EXACT_SEARCH_LIMIT:
                try:
                    import faiss  # noqa: F401  (optional: approximate search on large tables)

                    method = "ivf"
                except ImportError:
                    pass
        self.method = method
        self._faiss = None
        if method == "ivf":
            self._faiss = self._build_ivf(n_lists, n_probe)

    def _build_ivf(self, n_lists, n_probe):
        import faiss

        n, dim = self.vectors.shape
        # sqrt(n) lists and k-means on 40 vectors per list keep building a 10^6-clip index under a minute
        n_lists = int(n_lists or max(1, int(math.sqrt(n))))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        train = self.vectors if n <= 40 * n_lists else self.vectors[rng.choice(n, 40 * n_lists, replace=False)]
        index.train(train)
        index.add(self.vectors)
        index.nprobe = int(min(n_probe, n_lists))
        return index

    def search(self, queries, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Row positions and cosine similarities of the ``k`` nearest clips of each query vector.

        Parameters
        ----------
        queries : array-like, (n_queries, dim) or (dim,)
        k : int

        Returns
        -------
        (positions, similarities) : two ``(n_queries, k)`` arrays, best first.
        """
        q = _unit_rows(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if q.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"queries have {q.shape[1]} dimensions, the embeddings {self.vectors.shape[1]}")
        k = int(min(k, len(self.vectors)))
        if self._faiss is not None:
            sims, pos = self._faiss.search(np.ascontiguousarray(q), k)
            return pos, sims
        positions = np.empty((len(q), k), dtype=np.int64)
        similarities = np.empty((len(q), k), dtype=np.float32)
        for i, query in enumerate(q):
            sims = self.vectors @ query
            top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
            top = top[np.argsort(-sims[top], kind="stable")]
            positions[i], similarities[i] = top, sims[top]
        return positions, similarities


def search_by_example(embeddings: pd.DataFrame, queries, k: int = 10, method: str = "auto",
                      searcher: EmbeddingSearch | None = None) -> pd.DataFrame:
    """Clips that sound most like one or more example clips.

    Parameters
    ----------
    embeddings : DataFrame
        The embedded folder (index ``(file, start_time, end_time)``).
    queries : tuple, list of tuples, or DataFrame
        Example clips as ``(file, start_time, end_time)`` keys present in
        ``embeddings``, or ``(file, time)`` pairs (the clip of that file that
        contains ``time``, in seconds), or an embeddings DataFrame of clips
        from elsewhere. With several examples their mean unit vector is the query.
    k : int
        Matches to return.
    method : str
        See :class:`EmbeddingSearch`.
    searcher : EmbeddingSearch, optional
        Reuse an index built earlier on ``embeddings``.

    Returns
    -------
    DataFrame
        Indexed by ``(file, start_time, end_time)`` (best first); columns
        ``rank`` (1 = best) and ``similarity`` (cosine, -1 to 1). An example
        that is in ``embeddings`` is its own best match.
    """
    searcher = searcher or EmbeddingSearch(embeddings, method=method)
    if isinstance(queries, pd.DataFrame):
        query_vectors = _as_matrix(queries)
    else:
        keys = [queries] if isinstance(queries, tuple) else list(queries)
        rows = [_locate(embeddings, key) for key in keys]
        query_vectors = searcher.vectors[rows]
    query = _unit_rows(query_vectors).mean(axis=0)
    positions, sims = searcher.search(query, k)
    found = embeddings.index[positions[0]]
    return pd.DataFrame({"rank": np.arange(1, len(found) + 1), "similarity": sims[0].astype(float)}, index=found)


def _locate(embeddings: pd.DataFrame, key) -> int:
    """Row position of a clip key (file, start, end) or of the clip of ``file`` containing ``time``."""
    if len(key) == 3:
        try:
            loc = embeddings.index.get_loc(tuple(key))
        except KeyError:
            raise KeyError(f"clip {key} is not in the embeddings table") from None
        return int(loc) if isinstance(loc, (int, np.integer)) else int(np.flatnonzero(loc)[0])
    if len(key) == 2:
        file, time = str(key[0]), float(key[1])
        files = embeddings.index.get_level_values("file").astype(str)
        starts = embeddings.index.get_level_values("start_time").to_numpy(dtype=float)
        ends = embeddings.index.get_level_values("end_time").to_numpy(dtype=float)
        hit = np.flatnonzero((files == file) & (starts <= time) & (time < ends))
        if not len(hit):
            raise KeyError(f"no embedded clip of {file} contains {time} s")
        # of overlapping clips, the one whose centre is nearest the time
        return int(hit[np.argmin(np.abs((starts[hit] + ends[hit]) / 2 - time))])
    raise ValueError(f"a query is (file, start_time, end_time) or (file, time), got {key!r}")


class ClassifierLoadError(ValueError):
    """A file could not be read as a shallow classifier; names the path and the reason."""


class ShallowClassifier(param.Parameterized):
    """A small multi-label classifier on embeddings: logistic regression or a one-hidden-layer MLP.

    Trained with scikit-learn; scored with numpy from the stored weights, so a
    saved classifier is plain JSON (weights, class names, the embedding model's
    name) and loading one can never run code.
    """

    hidden_units = param.Integer(default=0, bounds=(0, 4096),
                                 doc="0: logistic regression per class; > 0: an MLP with one hidden layer of this size.")
    regularization = param.Number(default=1.0, bounds=(1e-6, 1e6),
                                  doc="Inverse L2 strength for logistic regression (sklearn's C); "
                                      "for the MLP, alpha = 1 / (this * number of clips).")
    balanced = param.Boolean(default=True, doc="Weight classes so rare positives count as much as negatives.")
    max_iter = param.Integer(default=1000, bounds=(10, 100000), doc="Optimizer iterations.")
    seed = param.Integer(default=0, doc="Random seed (MLP initialisation).")

    def __init__(self, **params):
        super().__init__(**params)
        self.classes: list[str] = []
        self.embedding_model: str | None = None
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_train = 0

    # ------------------------------------------------------------ training
    def fit(self, embeddings: pd.DataFrame, labels: pd.DataFrame) -> "ShallowClassifier":
        """Train on the labelled clips.

        Parameters
        ----------
        embeddings : DataFrame
            Indexed by ``(file, start_time, end_time)``.
        labels : DataFrame
            One-hot labels (0/1 per class column) on the same index (clips
            missing from ``embeddings`` are an error), e.g. from
            :func:`opso_nb.review.labels_to_one_hot`.
        """
        _check_clip_index(embeddings)
        _check_clip_index(labels, "labels")
        missing = labels.index.difference(embeddings.index)
        if len(missing):
            raise KeyError(f"{len(missing)} labelled clip(s) have no embedding, e.g. {missing[0]}")
        y = labels.to_numpy(dtype=float)
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("labels must be 0/1 (one column per class)")
        for j, name in enumerate(labels.columns):
            if len(np.unique(y[:, j])) < 2:
                raise ValueError(f"class {name!r} needs both present and absent clips to train on "
                                 f"(it has only {'present' if y[0, j] else 'absent'} ones)")
        x = _as_matrix(embeddings.loc[labels.index])
        self.classes = [str(c) for c in labels.columns]
        self.embedding_model = embedding_model_of(embeddings)
        self.n_train = len(x)
        self.layers = self._fit_mlp(x, y) if self.hidden_units else self._fit_logistic(x, y)
        return self

    def _fit_logistic(self, x, y):
        from sklearn.linear_model import LogisticRegression

        weights, biases = [], []
        for j in range(y.shape[1]):
            model = LogisticRegression(C=self.regularization, max_iter=self.max_iter,
                                       class_weight="balanced" if self.balanced else None)
            model.fit(x, y[:, j].astype(int))
            weights.append(model.coef_[0])
            biases.append(model.intercept_[0])
        return [(np.array(weights, dtype=np.float32).T, np.array(biases, dtype=np.float32))]

    def _fit_mlp(self, x, y):
        from sklearn.neural_network import MLPClassifier

        model = MLPClassifier(hidden_layer_sizes=(self.hidden_units,), activation="relu",
                              alpha=1.0 / (self.regularization * len(x)), max_iter=self.max_iter,
                              random_state=self.seed)
        sample_weight = None
        if self.balanced:
            positives = y.mean(axis=0).clip(1e-6, 1 - 1e-6)
            sample_weight = (y / positives + (1 - y) / (1 - positives)).mean(axis=1) / 2
        target = y if y.shape[1] > 1 else y[:, 0].astype(int)
        model.fit(x, target, sample_weight=sample_weight)
        return [(w.astype(np.float32), b.astype(np.float32)) for w, b in zip(model.coefs_, model.intercepts_)]

    # ------------------------------------------------------------ scoring
    def _check_ready(self, embeddings):
        if not self.layers:
            raise RuntimeError("the classifier is not trained: call fit() first")
        model = embedding_model_of(embeddings)
        if self.embedding_model and model and model != self.embedding_model:
            raise ValueError(f"this classifier was trained on {self.embedding_model!r} embeddings; "
                             f"these are from {model!r}")

    def decision_function(self, embeddings) -> np.ndarray:
        """Raw outputs (logits) ``[n_clips, n_classes]``."""
        self._check_ready(embeddings if isinstance(embeddings, pd.DataFrame) else pd.DataFrame())
        h = _as_matrix(embeddings)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def predict(self, embeddings: pd.DataFrame) -> pd.DataFrame:
        """Scores in [0, 1] for every clip: a score table (clip index x classes)."""
        _check_clip_index(embeddings)
        logits = self.decision_function(embeddings)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))
        return pd.DataFrame(scores.astype(np.float32), index=embeddings.index, columns=self.classes)

    def suggest(self, scores: pd.DataFrame, class_name: str, labelled=None, n: int = 10,
                mode: str = "top") -> pd.DataFrame:
        """Clips to label next for one class.

        Parameters
        ----------
        scores : DataFrame
            From :meth:`predict`.
        class_name : str
        labelled : index-like, optional
            Clips already labelled (left out).
        n : int
        mode : {"top", "uncertain"}
            ``top``: the highest scores (confirms what the model finds);
            ``uncertain``: scores nearest 0.5 (teaches the model the most).

        Returns
        -------
        DataFrame
            Indexed by clip, column ``score``.
        """
        if mode not in ("top", "uncertain"):
            raise ValueError(f"mode must be 'top' or 'uncertain', got {mode!r}")
        column = scores[class_name]
        if labelled is not None and len(labelled):
            column = column[~column.index.isin(labelled)]
        key = column if mode == "top" else -(column - 0.5).abs()
        order = key.sort_values(ascending=False, kind="stable").index[: int(n)]
        return column.loc[order].to_frame("score")

    # ------------------------------------------------------------ saving
    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": _FORMAT_VERSION, "classes": self.classes,
                "embedding_model": self.embedding_model, "n_train": self.n_train,
                "settings": {k: v for k, v in self.param.values().items() if k != "name"},
                "layers": [{"weights": w.tolist(), "bias": b.tolist()} for w, b in self.layers]}

    def save(self, path) -> Path:
        """Write the classifier as JSON (atomically): weights, class names, embedding model, settings."""
        if not self.layers:
            raise RuntimeError("nothing to save: the classifier is not trained")
        with atomic_write(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle)
        return Path(path)

    @classmethod
    def load(cls, path) -> "ShallowClassifier":
        """Read a classifier written by :meth:`save` (plain JSON: loading never runs code)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ClassifierLoadError(f"{path}: cannot read a shallow classifier ({err})") from err
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ClassifierLoadError(f"{path}: not an opso_nb shallow classifier file")
        if data.get("version", 0) > _FORMAT_VERSION:
            raise ClassifierLoadError(f"{path}: written by a newer opso_nb (format {data['version']})")
        settings = {k: v for k, v in data.get("settings", {}).items() if k in cls.param}
        model = cls(**settings)
        try:
            model.layers = [(np.asarray(layer["weights"], dtype=np.float32), np.asarray(layer["bias"], dtype=np.float32))
                            for layer in data["layers"]]
            model.classes = [str(c) for c in data["classes"]]
        except (KeyError, TypeError, ValueError) as err:
            raise ClassifierLoadError(f"{path}: malformed classifier weights ({err})") from err
        shapes_ok = all(w.ndim == 2 and b.shape == (w.shape[1],) for w, b in model.layers) and all(
            a[0].shape[1] == b[0].shape[0] for a, b in zip(model.layers, model.layers[1:]))
        if not model.layers or not shapes_ok or model.layers[-1][0].shape[1] != len(model.classes):
            raise ClassifierLoadError(f"{path}: layer shapes do not fit together or do not match the classes")
        model.embedding_model = data.get("embedding_model")
        model.n_train = int(data.get("n_train", 0))
        return model
