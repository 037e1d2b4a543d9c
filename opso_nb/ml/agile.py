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

Search is exact (cosine similarity with numpy) up to
:data:`EXACT_SEARCH_LIMIT` clips; above that, when ``faiss-cpu`` is installed,
an inverted-file index (``faiss.IndexIVFFlat`` on unit vectors) answers in
milliseconds at a small loss of recall; ``benchmarks/bench_search.py`` measures both.

Clips that could not be embedded (unreadable audio) are NaN rows of an
embeddings table, as in every table of the prediction loop: search leaves them
out and classifiers give them NaN scores.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import param

from opso_nb.audio import Audio
from opso_nb.review import LabelStore, labels_to_one_hot
from opso_nb.spectrogram import Spectrogram
from opso_nb.store import RunStore
from opso_nb.utils import CLIP_INDEX, atomic_write

__all__ = [
    "EXACT_SEARCH_LIMIT",
    "EMBEDDING_PREFIX",
    "EmbeddingSearch",
    "search_by_example",
    "ShallowClassifier",
    "ClassifierLoadError",
    "embedding_model_of",
    "embedding_columns",
    "split_embeddings",
    "load_embeddings",
    "training_labels",
    "plot_clips",
]

#: Up to this many embeddings, search is exact (numpy); above it an approximate faiss index is used when available.
EXACT_SEARCH_LIMIT = 50_000
#: Columns of an embeddings table are ``emb_0``, ``emb_1`` ...
EMBEDDING_PREFIX = "emb_"
_FORMAT = "opso_nb.ShallowClassifier"
_FORMAT_VERSION = 1
_BLOCK_ROWS = 65536  # rows per block when checking or normalising: no temporary as large as the table


def embedding_columns(size: int) -> list:
    """Column names of an embeddings table: ``emb_0`` ... ``emb_{size-1}``."""
    return [f"{EMBEDDING_PREFIX}{i}" for i in range(int(size))]


def split_embeddings(table, size: int, model_name: str, return_preds: bool = False, failures=None,
                     return_invalid_samples: bool = False):
    """What an ``embed()`` method returns, from the prediction loop's table (embedding columns first).

    Returns ``embeddings`` (its ``attrs["embedding_model"]`` set to
    ``model_name``), then the remaining columns as ``preds`` if
    ``return_preds``, then ``failures`` if ``return_invalid_samples``: one
    value alone, or a tuple. A ``table`` of None (``return_scores=False``)
    gives None in place of the tables.
    """
    embeddings = preds = None
    if table is not None:
        embeddings = table.iloc[:, :size]
        embeddings.attrs["embedding_model"] = model_name
        preds = table.iloc[:, size:]
    result = (embeddings,) + ((preds,) if return_preds else ()) + ((failures,) if return_invalid_samples else ())
    return result if len(result) > 1 else result[0]


def load_embeddings(output_path, files=None, return_preds: bool = False):
    """Read the embeddings of a (finished or interrupted) streamed ``embed()`` run.

    Parameters
    ----------
    output_path : str or Path
        The ``output_path`` given to :meth:`opso_nb.ml.birdnet.BirdNET.embed`
        or :meth:`opso_nb.ml.cnn.CNN.embed` (its latest embedding run), or a
        run's sub-folder.
    files : list of str, optional
        Only these input files, in this order (default: all finished files).
    return_preds : bool
        Also return the scores stored beside the embeddings by a run with
        ``return_preds=True`` (no columns if the run had none).

    Returns
    -------
    (embeddings, failures) or (embeddings, preds, failures)
        Embeddings indexed by ``(file, start_time, end_time)``, float32
        columns ``emb_*``, with ``attrs["embedding_model"]`` as when computed;
        the scores on the same index; the failures table of
        :mod:`opso_nb.failures`.
    """
    run = RunStore.existing(output_path, job="embed")
    table, failures = run.read(files)
    size = sum(str(c).startswith(EMBEDDING_PREFIX) for c in table.columns)
    model = (run.settings.get("output") or {}).get("embedding_model")
    return split_embeddings(table, size, model, return_preds, failures, return_invalid_samples=True)


def embedding_model_of(embeddings: pd.DataFrame) -> str | None:
    """The embedding model named in ``embeddings.attrs`` (None when the table does not say)."""
    return embeddings.attrs.get("embedding_model")


def _as_matrix(embeddings, finite: bool = True) -> np.ndarray:
    """float32 values of an embeddings table; ``finite``: NaN/inf anywhere is an error."""
    values = embeddings.to_numpy(dtype=np.float32) if isinstance(embeddings, pd.DataFrame) else np.asarray(
        embeddings, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (clips x dimensions), got shape {values.shape}")
    if finite:
        bad = int((~_finite_rows(values)).sum())
        if bad:
            raise ValueError(f"{bad} embedding row(s) hold NaN or inf (clips that failed); drop them first")
    return values


def _finite_rows(values: np.ndarray) -> np.ndarray:
    """True for rows without NaN/inf, checked in blocks (no boolean copy of a 4 GB table)."""
    ok = np.empty(len(values), dtype=bool)
    for lo in range(0, len(values), _BLOCK_ROWS):
        ok[lo:lo + _BLOCK_ROWS] = np.isfinite(values[lo:lo + _BLOCK_ROWS]).all(axis=1)
    return ok


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
        self.embedding_model = embedding_model_of(embeddings)
        self._values = _as_matrix(embeddings, finite=False)  # the table's own values when they are float32
        finite = _finite_rows(self._values)
        self._rows = None if finite.all() else np.flatnonzero(finite)
        if self._rows is not None:
            warnings.warn(f"{int((~finite).sum())} clip(s) without an embedding (NaN: they failed) are left out "
                          "of the search", UserWarning, stacklevel=2)
        self.index = embeddings.index if self._rows is None else embeddings.index[self._rows]
        self.size, self.dim = len(self.index), self._values.shape[1]
        if not self.size:
            raise ValueError("no clip has an embedding to search")
        if method == "auto":
            method = "exact"
            if self.size > EXACT_SEARCH_LIMIT:
                try:
                    import faiss  # noqa: F401  (optional: approximate search on large tables)

                    method = "ivf"
                except ImportError:
                    pass
        self.method = method
        self.vectors, self._faiss = None, None
        if method == "exact":
            # one normalised float32 copy, made block by block: a million 1,024-value embeddings are 4 GB
            vectors = np.empty((self.size, self.dim), dtype=np.float32)
            for lo in range(0, self.size, _BLOCK_ROWS):
                vectors[lo:lo + _BLOCK_ROWS] = self._from_table(np.arange(lo, min(lo + _BLOCK_ROWS, self.size)))
            self.vectors = vectors
        else:
            self._faiss = self._build_ivf(n_lists, n_probe)

    def _from_table(self, positions) -> np.ndarray:
        rows = positions if self._rows is None else self._rows[positions]
        return _unit_rows(np.asarray(self._values[rows], dtype=np.float32))

    def unit_vectors(self, positions) -> np.ndarray:
        """Embeddings of the clips at ``positions`` (rows of :attr:`index`), scaled to length 1."""
        positions = np.asarray(positions, dtype=np.int64)
        return self.vectors[positions] if self.vectors is not None else self._from_table(positions)

    def _build_ivf(self, n_lists, n_probe):
        import faiss

        # sqrt(n) lists and k-means on 40 vectors per list keep building a 10^6-clip index under a minute
        n_lists = int(n_lists or max(1, int(math.sqrt(self.size))))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = np.arange(self.size) if self.size <= 40 * n_lists else np.sort(
            rng.choice(self.size, 40 * n_lists, replace=False))
        index.train(self.unit_vectors(sample))
        # the index keeps its own copy: add it block by block instead of normalising the whole table at once
        for lo in range(0, self.size, _BLOCK_ROWS):
            index.add(self.unit_vectors(np.arange(lo, min(lo + _BLOCK_ROWS, self.size))))
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
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have {q.shape[1]} dimensions, the embeddings {self.dim}")
        k = int(min(k, self.size))
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
        ``rank`` (1 = best) and ``similarity`` (cosine, -1 to 1). A single
        example that is in ``embeddings`` is its own best match (ahead of
        clips with an identical embedding, e.g. stretches of silence).
        Clips that failed (NaN rows) are never returned.
    """
    searcher = searcher or EmbeddingSearch(embeddings, method=method)
    rows = []
    if isinstance(queries, pd.DataFrame):
        query_vectors = _as_matrix(queries)
    else:
        keys = [queries] if isinstance(queries, tuple) else list(queries)
        rows = [_locate(searcher.index, key) for key in keys]
        query_vectors = searcher.unit_vectors(rows)
    query = _unit_rows(query_vectors).mean(axis=0)
    positions, sims = searcher.search(query, k)
    positions, sims = positions[0], sims[0]
    if len(rows) == 1 and len(positions):
        # its own similarity is the largest possible (1), but identical embeddings (silence) tie with it,
        # and an approximate index may miss it: the example itself comes first
        own = positions == rows[0]
        own_similarity = sims[own][0] if own.any() else np.float32(1.0)
        n = len(positions)
        positions, sims = np.r_[rows[0], positions[~own]][:n], np.r_[own_similarity, sims[~own]][:n]
    found = searcher.index[positions]
    return pd.DataFrame({"rank": np.arange(1, len(found) + 1), "similarity": sims.astype(float)}, index=found)


def _locate(index: pd.MultiIndex, key) -> int:
    """Row position in ``index`` of a clip key (file, start, end) or of the clip of ``file`` containing ``time``."""
    if len(key) == 3:
        try:
            loc = index.get_loc(tuple(key))
        except KeyError:
            raise KeyError(f"clip {key} is not in the embeddings table (or it failed and has no embedding)") from None
        return int(loc) if isinstance(loc, (int, np.integer)) else int(np.flatnonzero(loc)[0])
    if len(key) == 2:
        file, time = str(key[0]), float(key[1])
        files = index.get_level_values("file").astype(str)
        starts = index.get_level_values("start_time").to_numpy(dtype=float)
        ends = index.get_level_values("end_time").to_numpy(dtype=float)
        hit = np.flatnonzero((files == file) & (starts <= time) & (time < ends))
        if not len(hit):
            raise KeyError(f"no embedded clip of {file} contains {time} s")
        # of overlapping clips, the one whose centre is nearest the time
        return int(hit[np.argmin(np.abs((starts[hit] + ends[hit]) / 2 - time))])
    raise ValueError(f"a query is (file, start_time, end_time) or (file, time), got {key!r}")


def training_labels(labels, embeddings: pd.DataFrame | None = None, classes=None, unsure: str = "drop") -> pd.DataFrame:
    """One-hot labels for :meth:`ShallowClassifier.fit`, from the label store shared with clip review.

    Parameters
    ----------
    labels : LabelStore, DataFrame
        A :class:`opso_nb.review.LabelStore`, the table its ``labels()``
        returns (columns ``class`` and ``label``), or one-hot labels already.
    embeddings : DataFrame, optional
        Keep only the labelled clips that have an embedding here (a label
        store may also hold clips of other folders or clip lengths; how many
        were left out is warned).
    classes : list of str, optional
        Classes to train (default: every labelled class).
    unsure : {"drop", "absent"}
        See :func:`opso_nb.review.labels_to_one_hot`.

    Returns
    -------
    DataFrame
        Indexed by ``(file, start_time, end_time)``; one 0/1 column per class.
    """
    if isinstance(labels, LabelStore):
        labels = labels.labels()
    if isinstance(labels, pd.DataFrame) and {"class", "label"} <= set(labels.columns):
        labels = labels_to_one_hot(labels, classes=classes, unsure=unsure)
    elif classes is not None:
        labels = labels[list(classes)]
    _check_clip_index(labels, "labels")
    if embeddings is not None:
        _check_clip_index(embeddings)
        present = embeddings.index[_finite_rows(_as_matrix(embeddings, finite=False))]
        keep = labels.index.isin(present)
        if not keep.all():
            warnings.warn(f"{int((~keep).sum())} labelled clip(s) are not among the embedded clips (other files, "
                          "clip times, or clips that failed) and are left out", UserWarning, stacklevel=2)
        labels = labels[keep]
    return labels


def plot_clips(clips, titles=None, columns: int = 4, max_f: float | None = 12000.0, figsize_per_clip=(3.0, 2.2)):
    """Spectrogram tiles of clips (e.g. search matches or suggestions), each read from its file alone.

    Parameters
    ----------
    clips : DataFrame or list of (file, start_time, end_time)
        A table indexed by ``(file, start_time, end_time)`` (its rows are
        plotted in order) or a list of keys; times in seconds.
    titles : list of str, optional
        One per clip (default: file name and start time).
    columns : int
        Tiles per row.
    max_f : float, optional
        Upper frequency shown (Hz); None: the Nyquist frequency.
    figsize_per_clip : (float, float)
        Inches per tile.

    Returns
    -------
    matplotlib.figure.Figure
        A clip that cannot be read gets a tile saying why.
    """
    import matplotlib.pyplot as plt

    keys = list(clips.index) if isinstance(clips, pd.DataFrame) else [tuple(k) for k in clips]
    n = max(len(keys), 1)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, min(columns, n), figsize=(figsize_per_clip[0] * min(columns, n),
                                                            figsize_per_clip[1] * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(keys):
            ax.axis("off")
            continue
        file, start, end = keys[i]
        title = titles[i] if titles is not None else f"{Path(str(file)).name} {float(start):g} s"
        try:
            audio = Audio.from_file(file, offset=float(start), duration=float(end) - float(start),
                                    out_of_bounds_mode="ignore", load_metadata=False)
            spec = Spectrogram.from_audio(audio)
            if max_f is not None:
                spec = spec.bandpass(0, min(max_f, audio.sample_rate / 2))
            spec.plot(ax=ax, inline=False)
            ax.set_title(title, fontsize=8)
        except Exception as err:  # one unreadable clip must not hide the others
            ax.text(0.5, 0.5, f"cannot read:\n{type(err).__name__}", ha="center", va="center", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


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
    def fit(self, embeddings: pd.DataFrame, labels, classes=None) -> "ShallowClassifier":
        """Train on the labelled clips.

        Parameters
        ----------
        embeddings : DataFrame
            Indexed by ``(file, start_time, end_time)``.
        labels : DataFrame or LabelStore
            One-hot labels (0/1 per class column) on the same index (clips
            missing from ``embeddings`` are an error), e.g. from
            :func:`opso_nb.review.labels_to_one_hot`; or a
            :class:`~opso_nb.review.LabelStore` (or its ``labels()`` table),
            whose clips without an embedding are left out with a warning
            (see :func:`training_labels`).
        classes : list of str, optional
            Classes to train (default: every labelled class).
        """
        _check_clip_index(embeddings)
        if isinstance(labels, LabelStore) or (isinstance(labels, pd.DataFrame) and
                                              {"class", "label"} <= set(labels.columns)):
            labels = training_labels(labels, embeddings, classes)
        elif classes is not None:
            labels = labels[list(classes)]
        _check_clip_index(labels, "labels")
        if labels.shape[1] == 0 or len(labels) == 0:
            raise ValueError("no labelled clips to train on")
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
        """Raw outputs (logits) ``[n_clips, n_classes]``; NaN for clips without an embedding (NaN rows)."""
        self._check_ready(embeddings if isinstance(embeddings, pd.DataFrame) else pd.DataFrame())
        h = _as_matrix(embeddings, finite=False)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def predict(self, embeddings: pd.DataFrame) -> pd.DataFrame:
        """Scores in [0, 1] for every clip: a score table (clip index x classes); NaN where a clip failed."""
        _check_clip_index(embeddings)
        logits = self.decision_function(embeddings)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))
        return pd.DataFrame(scores.astype(np.float32), index=embeddings.index, columns=self.classes)

    def score(self, embedder, samples, **embed_kwargs):
        """Score new recordings without labelling them: embed with ``embedder``, then :meth:`predict`.

        Parameters
        ----------
        embedder : BirdNET, CNN or any object with ``embed(samples, **kwargs)``
            The model whose embeddings this classifier was trained on (checked:
            another model's embeddings are refused).
        samples : files, folder or clip table
            As for ``embedder.embed``.
        **embed_kwargs
            Passed to ``embedder.embed`` (e.g. ``output_path`` to keep the
            embeddings, resumable).

        Returns
        -------
        DataFrame
            Scores (clip index x classes); if ``embed`` returns a tuple (e.g.
            with ``return_invalid_samples=True``), the same tuple with the
            scores in place of the embeddings.
        """
        self._check_ready(pd.DataFrame())
        name = getattr(embedder, "embedding_model", None)
        if isinstance(name, str) and self.embedding_model and name != self.embedding_model:
            raise ValueError(f"this classifier was trained on {self.embedding_model!r} embeddings, not on those "
                             f"of {name!r}")
        result = embedder.embed(samples, **embed_kwargs)
        if isinstance(result, tuple):
            return (self.predict(result[0]),) + tuple(result[1:])
        return self.predict(result)

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
        column = scores[class_name].dropna()
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
