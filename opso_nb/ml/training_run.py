"""Run CNN training in a background thread and report progress as events.

:class:`TrainingSession` holds everything a person chooses before training (labels
table, preprocessor config, architecture, a few hyper-parameters) as ``param``
parameters, builds the :class:`~opso_nb.ml.cnn.CNN`, and trains it in a thread.
Progress arrives as dicts in :attr:`TrainingSession.events` (a thread-safe queue), so
a dashboard can poll it from its own thread and ``stop()`` can end training after
the current batch. Models are written to ``runs_folder/run_name/``: ``best.model``
(best validation score; the file the prediction explorer offers), ``epoch-N.model``,
``last.model`` and ``metrics.csv``.

A run never mixes with an earlier one of the same name: before training, the files
already in the run folder are moved (not deleted) to a sibling folder
``<run_name>-previous-<date>-<time>`` (the time of the newest of those files), named
in :attr:`TrainingSession.previous_run`.

A run that cannot train honestly (no training clip readable, or more than the
model's ``max_failed_fraction`` of them failing) ends in state ``"failed"`` with
the reason in :attr:`TrainingSession.error` and the failures in
:attr:`TrainingSession.failures`; nothing is saved as ``last.model`` then, and a
``best.model`` written by the epochs before the failure is renamed
``best-before-failure.model``, so no failed run is offered as a trained model.
"""
from __future__ import annotations

import queue
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import param

from opso_nb.failures import failures_frame
from opso_nb.ml.cnn import CNN, default_preprocessor
from opso_nb.preprocess.preprocessors import load_preprocessor
from opso_nb.utils import CLIP_INDEX


#: File name of the one-hot label table a clip review exports for training (``ReviewSession.export``).
TRAINING_LABELS_NAME = "training_labels.csv"


def read_labels_table(path) -> pd.DataFrame:
    """Read a clip-label CSV: columns file, start_time, end_time (or just file) and 0/1 class columns.

    Relative file paths are taken relative to the CSV's folder.

    Raises
    ------
    ValueError
        Naming the file and the problem (missing columns, non-0/1 labels, no rows).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"labels table {path} does not exist")
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise ValueError(f"cannot read labels table {path}: {e}") from None
    if "file" not in df.columns:
        raise ValueError(f"labels table {path} needs a 'file' column; it has {list(df.columns)}")
    if len(df) == 0:
        raise ValueError(f"labels table {path} has no rows")
    base = path.parent
    df["file"] = [str(p if Path(p).is_absolute() else base / p) for p in df["file"].astype(str)]
    index = CLIP_INDEX if all(c in df.columns for c in CLIP_INDEX) else ["file"]
    df = df.set_index(index)
    classes = [c for c in df.columns if not str(c).startswith("Unnamed")]
    df = df[classes]
    bad = [c for c in classes if not df[c].dropna().isin([0, 1]).all() or df[c].isna().any()]
    if bad:
        raise ValueError(f"labels table {path}: columns {bad} must hold only 0/1 (no blanks)")
    if not classes:
        raise ValueError(f"labels table {path} has no class columns")
    return df.astype(int)


def split_train_validation(labels: pd.DataFrame, validation_fraction=0.2, random_state=0):
    """Split a clip-label table by file (clips of one file never straddle the split), stratified by label set.

    Returns
    -------
    (train_df, validation_df)
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    files = labels.index.get_level_values("file")
    per_file = labels.groupby(files).max()
    keys = per_file.astype(str).agg("".join, axis=1)
    rng = np.random.default_rng(random_state)
    valid_files = set()
    for key in sorted(keys.unique()):
        group = list(per_file.index[keys == key])
        rng.shuffle(group)
        n_valid = int(round(validation_fraction * len(group)))
        if len(group) >= 2:
            n_valid = min(max(n_valid, 1), len(group) - 1)
        valid_files.update(group[:n_valid])
    is_valid = np.array([f in valid_files for f in files])
    return labels[~is_valid], labels[is_valid]


class TrainingSession(param.Parameterized):
    """Settings for one training run, and the run itself (in a background thread)."""

    labels_path = param.String(default="", doc="CSV of clip labels: file, start_time, end_time, one 0/1 column per class.")
    preprocessor_config = param.String(default="", doc="JSON preprocessor config (e.g. saved by the preprocessing "
                                                       "tuner); empty = default spectrogram preprocessor.")
    architecture = param.Selector(default="resnet18", objects=[
        "resnet18", "resnet34", "resnet50", "efficientnet_b0", "densenet121", "vgg11_bn", "squeezenet1_0",
        "alexnet"], doc="Network architecture (torchvision).")
    pretrained = param.Boolean(default=False, doc="Start from ImageNet weights (only if already on disk).")
    sample_duration = param.Number(default=1.0, bounds=(0.1, 60), doc="Clip length (s) when no preprocessor config is given.")
    image_size = param.Integer(default=64, bounds=(32, 512), doc="Height and width of the network input (pixels).")
    channels = param.Integer(default=1, bounds=(1, 3), doc="Input channels.")
    epochs = param.Integer(default=3, bounds=(1, 1000), doc="Passes over the training clips.")
    batch_size = param.Integer(default=8, bounds=(1, 512), doc="Clips per gradient step.")
    learning_rate = param.Number(default=0.01, bounds=(1e-6, 1.0), doc="SGD learning rate.")
    freeze_feature_extractor = param.Boolean(default=False, doc="Train only the last layer.")
    single_target = param.Boolean(default=False, doc="Exactly one class per clip.")
    validation_fraction = param.Number(default=0.25, bounds=(0.05, 0.9), doc="Share of files held out for validation.")
    num_workers = param.Integer(default=0, bounds=(0, 32), doc="Preprocessing worker processes (0 = in the training thread).")
    runs_folder = param.String(default="runs", doc="Folder holding one sub-folder per run.")
    run_name = param.String(default="run1", doc="Sub-folder of runs_folder for this run's models and metrics.")
    state = param.Selector(default="idle", objects=["idle", "running", "stopping", "done", "stopped", "failed"],
                           constant=True, doc="What the background training is doing.")

    #: Name a failed run's best model is renamed to (so it is not taken for a finished run's ``best.model``).
    FAILED_BEST_NAME = "best-before-failure.model"

    def __init__(self, **params):
        super().__init__(**params)
        self.events: queue.Queue = queue.Queue()
        self.model = None
        self.error = None
        #: Folder the files of an earlier run of the same name were moved to by the last start (or None).
        self.previous_run: Path | None = None
        self.failures = failures_frame()
        self._thread = None
        self._stop = threading.Event()

    @property
    def run_folder(self) -> Path:
        return Path(self.runs_folder) / self.run_name

    @property
    def model_path(self) -> Path:
        """Where the best model is written (the prediction explorer looks for ``*/best.model``)."""
        return self.run_folder / "best.model"

    def set_aside_previous_run(self, keep=()) -> Path | None:
        """Move what an earlier run left in :attr:`run_folder` to a new sibling folder; nothing is deleted.

        The sibling is ``<run_name>-previous-<YYYYmmdd-HHMMSS>``, stamped with the modification
        time of the newest file moved (``-2``, ``-3``... if that name is taken).

        Parameters
        ----------
        keep : iterable of str or Path
            Files of the new run already written to the run folder (e.g. its labels table);
            they stay.

        Returns
        -------
        Path or None
            The folder the files were moved to; None when there was nothing to move.

        Raises
        ------
        RuntimeError
            This session is training (into that folder).
        OSError
            A file cannot be moved.
        """
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("training is already running")
        folder = self.run_folder
        if not folder.is_dir():
            return None
        kept = {Path(k).resolve() for k in keep if k}
        leftovers = sorted(p for p in folder.iterdir() if p.resolve() not in kept)
        if not leftovers:
            return None
        newest = max(p.lstat().st_mtime for p in leftovers)
        stem = f"{folder.name}-previous-{time.strftime('%Y%m%d-%H%M%S', time.localtime(newest))}"
        target, n = folder.with_name(stem), 2
        while target.exists():
            target, n = folder.with_name(f"{stem}-{n}"), n + 1
        target.mkdir(parents=True)
        for p in leftovers:
            p.rename(target / p.name)  # a sibling folder, so the same file system: a rename, no copy
        return target

    def _set_state(self, value):
        with param.edit_constant(self):
            self.state = value

    def load_data(self):
        """Read and split the labels table; returns (train_df, validation_df)."""
        if not self.labels_path:
            raise ValueError("choose a labels table (CSV) first")
        labels = read_labels_table(self.labels_path)
        return split_train_validation(labels, self.validation_fraction)

    def build_model(self, classes):
        """A CNN configured from these settings."""
        preprocessor = None
        if self.preprocessor_config:
            try:
                preprocessor = load_preprocessor(self.preprocessor_config)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"cannot use preprocessor config {self.preprocessor_config}: {e}") from None
        shape = (self.image_size, self.image_size, self.channels)
        if preprocessor is None:
            preprocessor = default_preprocessor(self.sample_duration, shape)
        duration = getattr(preprocessor, "sample_duration", None) or self.sample_duration
        model = CNN(self.architecture, classes, duration, single_target=self.single_target,
                    preprocessor=preprocessor, sample_shape=getattr(preprocessor, "out_shape", None) or shape,
                    weights="DEFAULT" if self.pretrained else None, device="cpu", verbose=0,
                    optimizer_params={"lr": self.learning_rate, "momentum": 0.9, "weight_decay": 0.0005})
        if self.freeze_feature_extractor:
            model.freeze_feature_extractor()
        return model

    def start(self):
        """Validate the inputs, set an earlier run's files aside, then train in a background thread.

        Raises
        ------
        ValueError
            Bad inputs (nothing is moved or written then).
        RuntimeError
            Training is already running.
        OSError
            The earlier run's files cannot be moved.
        """
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("training is already running")
        train_df, valid_df = self.load_data()
        self.model = self.build_model(list(train_df.columns))
        self.previous_run = self.set_aside_previous_run(keep=[self.labels_path])
        self.error = None
        self.failures = failures_frame()
        self._stop.clear()
        self.events = queue.Queue()
        self._set_state("running")
        self.events.put({"event": "start", "n_train": len(train_df), "n_valid": len(valid_df),
                         "classes": list(train_df.columns), "epochs": self.epochs,
                         "previous_run": str(self.previous_run) if self.previous_run else None})
        self._thread = threading.Thread(target=self._run, args=(train_df, valid_df), daemon=True,
                                        name=f"training-{self.run_name}")
        self._thread.start()

    def _run(self, train_df, valid_df):
        try:
            self.model.train(
                train_df, valid_df if len(valid_df) else None, epochs=self.epochs, batch_size=self.batch_size,
                num_workers=self.num_workers, save_path=self.run_folder, save_interval=0,
                invalid_samples_log=str(self.run_folder / "invalid_samples.log"),
                progress_callback=self.events.put, stop_event=self._stop,
            )
            self.failures = self.model.failed_samples
            self.model.save(self.run_folder / "last.model")
            if not self.model_path.exists():  # no validation ran: the last model is the best we have
                self.model.save(self.model_path)
            final = "stopped" if self._stop.is_set() else "done"
            self._set_state(final)
            self.events.put({"event": "finished", "state": final, "model_path": str(self.model_path),
                             "n_failed": len(self.failures)})
        except Exception as e:  # reported to the UI; the thread must not die silently
            self.failures = self.model.failed_samples  # filled by train() even when it raises
            self.error = f"{type(e).__name__}: {e}"
            renamed = None
            if self.model_path.exists():  # from an epoch before the failure: not a finished run's result
                try:
                    renamed = self.model_path.replace(self.model_path.with_name(self.FAILED_BEST_NAME))
                except OSError as err:
                    self.error += f" (and {self.model_path} could not be renamed: {err})"
            self._set_state("failed")
            self.events.put({"event": "failed", "error": self.error, "n_failed": len(self.failures),
                             "renamed_best": str(renamed) if renamed else None,
                             "traceback": traceback.format_exc()})

    def stop(self):
        """Ask training to stop after the current batch (finished epochs and best.model are kept)."""
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._set_state("stopping")

    def join(self, timeout=None):
        """Wait for the background thread."""
        if self._thread is not None:
            self._thread.join(timeout)

    def drain_events(self) -> list:
        """All events queued since the last call (non-blocking)."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out
