"""CNN classifiers for audio clips: build, train, evaluate, save and load.

A :class:`CNN` bundles a torch network, the class names, the clip length it was
trained on (``sample_duration``, seconds) and the preprocessor that turns a clip
into the network's input tensor. Training takes a clip table (index ``file`` or
``(file, start_time, end_time)``, one 0/1 column per class); prediction over
long recordings lives in :mod:`opso_nb.ml.prediction`.

Samples are read through :class:`~opso_nb.ml.safe_dataset.SafeDataset`: a clip
that cannot be read is skipped and listed in :attr:`CNN.failed_samples` (the
failure schema of :mod:`opso_nb.failures`), but a run where no training clip can
be read, or more than ``max_failed_fraction`` of them, stops with
:class:`TrainingFailed` instead of pretending to learn.

Saved models are one file written with ``torch.save`` holding only tensors and
plain Python values (loadable with ``torch.load(..., weights_only=True)``): the
network weights with their SHA-256 checksum (verified on load), the optimizer
state (to continue training) and a JSON config with a format version, so files
load across package versions.

Examples
--------
>>> from opso_nb.ml.cnn import CNN, load_model          # doctest: +SKIP
>>> model = CNN("resnet18", classes=["frog"], sample_duration=2.0, weights=None)
>>> model.train(train_df, valid_df, epochs=5, batch_size=16, save_path="runs/frog")
>>> model.save("frog.model"); model = load_model("frog.model")
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import io
import json
import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import param
import torch
from tqdm.auto import tqdm

from opso_nb import __version__, metrics
from opso_nb.failures import FAILURE_COLUMNS, failures_frame, summarize_failures
from opso_nb.ml import cam, cnn_architectures, prediction
from opso_nb.ml.agile import embedding_columns, split_embeddings
from opso_nb.ml.datasets import CACHE as SAMPLE_CACHE
from opso_nb.ml.datasets import AudioFileDataset
from opso_nb.ml.loss import BCEWithLogitsLoss_hot, CrossEntropyLoss_hot, ResampleLoss
from opso_nb.ml.safe_dataset import SafeDataset
from opso_nb.ml.sampling import ClassAwareSampler, ImbalancedDatasetSampler
from opso_nb.ml.utils import (
    apply_activation_layer,
    autocast,
    autocast_dtype,
    loader_worker_init,
    network_forward,
    prepare_network,
    to_network_input,
)
from opso_nb.preprocess.preprocessors import SpectrogramPreprocessor, preprocessor_from_dict
from opso_nb.utils import atomic_path, atomic_write, remove_stale_temp_files

#: Version of the saved-model file layout. Bump when the layout changes and keep
#: reading the older ones in :func:`load_model`. 2: weights carry a SHA-256 checksum.
MODEL_FORMAT_VERSION = 2
_MAGIC = "opso_nb.CNN"
_TORCH_DICT_MAGIC = "opso_nb.CNN.torch_dict"


class ModelLoadError(ValueError):
    """A file could not be read as an opso_nb model; names the path and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load model from {path}: {reason}")


class TrainingFailed(RuntimeError):
    """Training cannot go on: no training sample could be read, or too many failed.

    Attributes
    ----------
    failures : pandas.DataFrame
        The failures seen so far (schema of :mod:`opso_nb.failures`).
    """

    def __init__(self, message: str, failures=None):
        self.failures = failures_frame(failures or [])
        super().__init__(message)


class TrainingStopped(Exception):
    """Internal signal: the ``stop_event`` passed to :meth:`CNN.train` was set."""


def _default_device():
    if torch.cuda.is_available():
        return torch.device("cuda:0")
    return torch.device("cpu")


def default_preprocessor(sample_duration, out_shape=(224, 224, 3)):
    """``SpectrogramPreprocessor(sample_duration, out_shape=...)`` from :mod:`opso_nb.preprocess`."""
    return SpectrogramPreprocessor(sample_duration=sample_duration, out_shape=out_shape)


def _preprocessor_to_dict(preprocessor):
    if preprocessor is None:
        return None
    to_dict = getattr(preprocessor, "to_dict", None)
    if to_dict is None:
        warnings.warn(
            f"preprocessor {type(preprocessor).__name__} has no to_dict(); it is not saved with the model",
            UserWarning,
            stacklevel=3,
        )
        return None
    return to_dict()


def weights_checksum(state_dict, config: str = "") -> str:
    """SHA-256 (hex) of a network's weights and a model's config text.

    Covers every tensor's name, dtype, shape and bytes (in name order, in the
    standard memory layout, so channels-last weights give the same value), then
    ``config``. Stored in model files and checked by :func:`load_model`: a
    changed byte in the weights or the config gives a different value.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    digest.update(config.encode())
    return digest.hexdigest()


def _label_array(df: pd.DataFrame, classes, name: str) -> np.ndarray:
    """0/1 float array of ``df``'s class columns in ``classes`` order; clear errors otherwise."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a DataFrame of 0/1 labels with one column per class")
    missing = [c for c in classes if c not in df.columns]
    if missing:
        raise ValueError(
            f"{name} lacks columns for classes {missing}; its columns are {list(df.columns)} "
            f"and the model's classes are {list(classes)}"
        )
    values = df[list(classes)].to_numpy(dtype=float)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} must hold only 0/1 labels; row {df.index[row]!r} column {classes[col]!r} "
            f"is {values[row, col]!r} ({int(bad.sum())} bad values in all)"
        )
    return values


def _rename_legacy_keys(state_dict) -> dict:
    """OpenSoundscape 0.6.0 naming (``feature.`` body, ``classifier.`` last layer) -> torchvision's."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("feature."):
            key = key[len("feature."):]
        elif key.startswith("classifier."):
            key = "fc." + key[len("classifier."):]
        renamed[key] = value
    return renamed


def _input_channels(state_dict) -> int:
    """Input channels of the first 4-D (convolution) weight; 3 if there is none."""
    conv = [v for v in state_dict.values() if getattr(v, "ndim", 0) == 4]
    return int(conv[0].shape[1]) if conv else 3


@dataclass
class _Run:
    """What one call of :meth:`CNN.train` needs across its steps."""

    batch_size: int
    num_workers: int
    log_interval: int
    raise_errors: bool
    notify: Callable
    stop: threading.Event
    failures: list = field(default_factory=list)


class CNN(param.Parameterized):
    """A CNN classifier for fixed-length audio clips.

    Parameters
    ----------
    architecture : str or torch.nn.Module
        A name from :func:`opso_nb.ml.cnn_architectures.list_architectures` (e.g.
        ``"resnet18"``) or any module mapping ``[batch, C, H, W]`` to ``[batch, n_classes]``.
    classes : list of str
        Class names, in the order of the network's outputs.
    sample_duration : float
        Clip length in seconds.
    single_target : bool
        True: exactly one class per clip (softmax, cross-entropy, selected by F1);
        with a single class, a clip either has it or not (sigmoid, BCE, F1).
        False (default): any number of classes per clip (sigmoid, BCE, selected by mAP).
    preprocessor_class : class
        Preprocessor built when ``preprocessor`` is not given, as
        ``preprocessor_class(sample_duration=..., out_shape=sample_shape)``
        (default :class:`~opso_nb.preprocess.preprocessors.SpectrogramPreprocessor`).
    sample_shape : tuple, optional
        ``(height, width, channels)`` of the network input; default the preprocessor's
        ``out_shape`` or (224, 224, 3). Channels other than 3 adapt the first conv.
    preprocessor : object, optional
        Turns a clip into a tensor (``.forward(sample, bypass_augmentations=...)``).
    weights : str or None
        Pretrained weights for a named architecture, see :mod:`opso_nb.ml.cnn_architectures`
        (``"DEFAULT"`` = ImageNet if cached on disk, never downloaded).
    device : str or torch.device, optional
        Default: first GPU if present, else CPU.
    **params
        Values for the training parameters below.

    Attributes
    ----------
    channels_last : bool
        Feed the network channels-last (NHWC) tensors and keep its weights that way:
        10-25% faster convolutions on CPUs (oneDNN) and GPUs. True for named
        architectures; False for your own modules, which may ``.view()`` activations.
    scheduler : torch.optim.lr_scheduler.LRScheduler or None
        Learning-rate schedule stepped once per epoch. None (default): a ``StepLR``
        multiplying the rate by ``lr_cooling_factor`` every ``lr_update_interval``
        epochs, built at :meth:`train` and kept in step with ``current_epoch``, so the
        schedule continues after :func:`load_model`. Assign your own scheduler built on
        ``opt_net`` (see :meth:`_init_optimizer`) to replace it; it is not saved.
    loss_cls : class or None
        None: chosen from ``single_target``; or a loss class, e.g. ResampleLoss.
    failed_samples : pandas.DataFrame
        Samples that could not be read in the last training, validation or
        activation-map run (file, start_time, end_time, stage, error).
    """

    single_target = param.Boolean(False, doc="One positive class per clip (softmax) instead of any number (sigmoid).")
    sample_duration = param.Number(2.0, bounds=(0, None), inclusive_bounds=(False, True), doc="Clip length (s).")
    optimizer = param.Selector(default="SGD", objects=["SGD", "Adam", "AdamW"], doc="torch.optim class.")
    optimizer_params = param.Dict(
        default={"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005},
        doc="Keyword arguments of the optimizer, or {'feature': {...}, 'classifier': {...}} for separate "
        "settings of the feature extractor and the classifier layer.",
    )
    lr_update_interval = param.Integer(10, bounds=(1, None), doc="Epochs between learning-rate reductions.")
    lr_cooling_factor = param.Number(0.7, bounds=(0, 1), doc="Learning rate multiplier at each reduction.")
    label_smoothing = param.Number(0.0, bounds=(0, 0.5), doc="Label smoothing for the loss (0 = off).")
    class_weights = param.Selector(
        default=None, objects=[None, "balanced"], check_on_set=False,
        doc="None, 'balanced' (inverse class frequency) or a list of one weight per class.",
    )
    sampler = param.Selector(
        default=None, objects=[None, "imbalanced", "class_aware"],
        doc="How to draw training batches: shuffled (None), balanced by class ('imbalanced'), "
        "or class-aware (each batch from few classes, evenly).",
    )
    early_stopping_patience = param.Integer(
        None, bounds=(1, None), allow_None=True,
        doc="Stop after this many validations without a better score (None = never).",
    )
    selection_metric = param.String(
        default=None, allow_None=True,
        doc="Validation metric for the best model: None = 'map' (multi-target) or 'f1' (single-target).",
    )
    threshold = param.Number(0.5, bounds=(0, 1), doc="Score threshold for precision/recall/F1 (multi-target).")
    max_failed_fraction = param.Number(
        0.5, bounds=(0, 1),
        doc="Training stops with TrainingFailed once more than this fraction of the training (or validation) "
        "samples could not be read; 1 = never (but a run where no training sample can be read always fails).",
    )
    use_amp = param.Boolean(
        None, allow_None=True,
        doc="Mixed precision (bfloat16/float16 maths, float32 weights) in training and prediction: True, False, "
        "or None = automatic (on for GPUs and for CPUs with native bfloat16, where it is up to 2x faster).",
    )
    verbose = param.Integer(1, bounds=(0, 3), doc="Printed detail: 0 nothing, 1 progress bars, epochs and metrics, "
                                                  "2 per-class metrics, 3 everything.")
    logging_level = param.Integer(1, bounds=(0, 3), doc="Detail written to log_file, levels as for verbose.")
    log_file = param.Parameter(None, doc="Text file that training messages are appended to (None = no file).")

    def __init__(self, architecture, classes, sample_duration, single_target=False,
                 preprocessor_class=SpectrogramPreprocessor, sample_shape=None, *, preprocessor=None,
                 weights="DEFAULT", device=None, **params):
        super().__init__(single_target=single_target, sample_duration=float(sample_duration), **params)
        classes = list(classes)
        if not classes:
            raise ValueError("classes must list at least one class name")
        if len(set(classes)) != len(classes):
            raise ValueError(f"class names must be unique, got {classes}")
        self.classes = classes

        if preprocessor is None:
            shape = tuple(sample_shape) if sample_shape is not None else (224, 224, 3)
            preprocessor = (preprocessor_class or SpectrogramPreprocessor)(
                sample_duration=self.sample_duration, out_shape=shape)
        elif sample_shape is None:
            sample_shape = getattr(preprocessor, "out_shape", None)
        self.preprocessor = preprocessor
        self.sample_shape = tuple(sample_shape) if sample_shape is not None else (224, 224, 3)
        num_channels = int(self.sample_shape[2]) if len(self.sample_shape) > 2 else 1

        if isinstance(architecture, str):
            network = cnn_architectures.build_architecture(
                architecture, len(classes), weights=weights, num_channels=num_channels
            )
            self.architecture_name = architecture
        elif isinstance(architecture, torch.nn.Module):
            network = architecture
            self.architecture_name = getattr(architecture, "constructor_name", None)
        else:
            raise TypeError("architecture must be a name (str) or a torch.nn.Module")
        self.network = network
        self.device = torch.device(device) if device is not None else _default_device()
        # NHWC is faster for convolutions; only for our named architectures, since a user's
        # own module may call .view() on activations, which needs the default layout
        self.channels_last = isinstance(architecture, str)
        prepare_network(self.network, self.device, self.channels_last)

        self.loss_cls = None
        self.loss_fn = None
        self.opt_net = None
        self.scheduler = None
        self._builtin_scheduler = None  # the StepLR made by _prepare_optimizer, while it is in use
        self.current_epoch = 0
        self.loss_hist = {}
        self.train_metrics = pd.DataFrame()
        self.valid_metrics = pd.DataFrame()
        self.best_score = None
        self.best_epoch = None
        self._best_state = None
        self.failed_samples = failures_frame()
        self._pending_optimizer_state = None

    # ------------------------------------------------------------------ basics
    def __repr__(self):
        return (f"<CNN {self.architecture_name or type(self.network).__name__} classes={self.classes} "
                f"sample_duration={self.sample_duration} single_target={self.single_target}>")

    @property
    def score_activation(self) -> str:
        """Activation turning this model's outputs into scores: ``"softmax"`` (single-target, several
        classes) or ``"sigmoid"``."""
        return "softmax" if self.single_target and len(self.classes) > 1 else "sigmoid"

    @property
    def classifier_layer_names(self) -> list:
        names = getattr(self.network, "classifier_layer_names", None)
        if names:
            return list(names)
        # custom module: take the last layer that has parameters
        last = [n for n, m in self.network.named_modules() if n and list(m.parameters(recurse=False))]
        return last[-1:] if last else []

    def _classifier_params(self):
        mods = dict(self.network.named_modules())
        params = []
        for n in self.classifier_layer_names:
            params.extend(mods[n].parameters())
        return params

    def freeze_feature_extractor(self):
        """Train only the classifier layer: turn off gradients elsewhere (in place)."""
        cnn_architectures.freeze_params(self.network)
        for p in self._classifier_params():
            p.requires_grad = True
        self.opt_net = None  # rebuilt with the trainable parameters at the next train()

    def unfreeze(self):
        """Turn gradients back on for every layer."""
        for p in self.network.parameters():
            p.requires_grad = True
        self.opt_net = None

    def _log(self, message, level=1, offset=0):
        """Print ``message`` if ``verbose + offset >= level``; append it to ``log_file`` if
        ``logging_level + offset >= level``."""
        if self.verbose + offset >= level:
            print(message)
        if self.log_file and self.logging_level + offset >= level:
            with open(self.log_file, "a", encoding="utf-8") as handle:
                handle.write(f"{message}\n")

    # ----------------------------------------------------------- optimisation
    def _init_optimizer(self):
        """Build ``opt_net`` from ``optimizer`` and ``optimizer_params`` (restoring a loaded state)."""
        opt_cls = getattr(torch.optim, self.optimizer)
        accepted = set(inspect.signature(opt_cls).parameters)

        def clean(d):
            return {k: v for k, v in d.items() if k in accepted}

        op = dict(self.optimizer_params)
        if "feature" in op and "classifier" in op:
            clf_ids = {id(p) for p in self._classifier_params()}
            feat = [p for p in self.network.parameters() if id(p) not in clf_ids and p.requires_grad]
            clf = [p for p in self.network.parameters() if id(p) in clf_ids and p.requires_grad]
            groups = [dict(params=feat, **clean(op["feature"])), dict(params=clf, **clean(op["classifier"]))]
            groups = [g for g in groups if g["params"]]
            self.opt_net = opt_cls(groups)
        else:
            trainable = [p for p in self.network.parameters() if p.requires_grad]
            if not trainable:
                raise ValueError("no trainable parameters: the whole network is frozen")
            self.opt_net = opt_cls(trainable, **clean(op))
        if self._pending_optimizer_state is not None:
            try:  # continuing training: momentum buffers and (cooled) learning rates come back
                self.opt_net.load_state_dict(self._pending_optimizer_state)
            except (ValueError, KeyError):
                warnings.warn("saved optimizer state does not fit the current optimizer; starting it fresh",
                              UserWarning, stacklevel=3)
            self._pending_optimizer_state = None
        if self.scheduler is not None and self.scheduler is self._builtin_scheduler:
            self.scheduler = None  # the built-in schedule belongs to the old optimizer

    def _prepare_optimizer(self):
        """Optimizer and learning-rate schedule for a call of :meth:`train`."""
        if self.opt_net is None:
            self._init_optimizer()
        if self.scheduler is None or self.scheduler is self._builtin_scheduler:
            # rebuilt at every train() so that changed lr_update_interval / lr_cooling_factor apply; the
            # learning rates in opt_net already carry the cooling of earlier epochs (they are saved with
            # it), so the schedule only has to know where it stands
            self.scheduler = torch.optim.lr_scheduler.StepLR(
                self.opt_net, step_size=self.lr_update_interval, gamma=self.lr_cooling_factor)
            self.scheduler.last_epoch = self.current_epoch
            self._builtin_scheduler = self.scheduler

    def _class_weight_tensor(self, labels: np.ndarray):
        cw = self.class_weights
        if cw is None:
            return None
        if isinstance(cw, str):
            if cw != "balanced":
                raise ValueError(f"class_weights must be None, 'balanced' or a list, got {cw!r}")
            pos = labels.sum(0)
            n = len(labels)
            if self.score_activation == "softmax":
                w = n / (len(self.classes) * np.maximum(pos, 1))
            else:  # BCE pos_weight: negatives per positive
                w = (n - pos) / np.maximum(pos, 1)
        else:
            w = np.asarray(cw, dtype=float)
            if w.shape != (len(self.classes),):
                raise ValueError(f"class_weights needs {len(self.classes)} values, got {w.shape}")
        return torch.as_tensor(w, dtype=torch.float32, device=self.device)

    def _init_loss_fn(self, labels: np.ndarray):
        weight = self._class_weight_tensor(labels)
        if self.loss_cls is ResampleLoss:
            if self.single_target:
                raise ValueError("ResampleLoss is for multi-target models (single_target=False)")
            self.loss_fn = ResampleLoss(labels.sum(0), train_num=len(labels)).to(self.device)
        elif self.loss_cls is not None:
            self.loss_fn = self.loss_cls()
        elif self.score_activation == "softmax":
            self.loss_fn = CrossEntropyLoss_hot(weight=weight, label_smoothing=self.label_smoothing)
        else:
            self.loss_fn = BCEWithLogitsLoss_hot(pos_weight=weight, label_smoothing=self.label_smoothing)

    def _activate(self, logits):
        return apply_activation_layer(logits, self.score_activation)

    # ------------------------------------------------------------ data access
    def _dataset(self, df, bypass_augmentations):
        """AudioFileDataset of ``df``; with the class columns (in class order) when it has them."""
        if all(c in df.columns for c in self.classes):
            df = df[list(self.classes)]
        return AudioFileDataset(df, self.preprocessor, bypass_augmentations=bypass_augmentations,
                                cache_bytes=SAMPLE_CACHE.max_bytes)

    def _safe_dataset(self, df, bypass_augmentations) -> SafeDataset:
        """The safe loading path: bad samples are skipped (``"none"``) and recorded."""
        return SafeDataset(self._dataset(df, bypass_augmentations), invalid_sample_behavior="none")

    def _loader(self, safe, batch_size, num_workers, shuffle=False, sampler=None):
        return safe.loader(
            batch_size=batch_size, num_workers=num_workers, shuffle=shuffle and sampler is None, sampler=sampler,
            persistent_workers=False, pin_memory=self.device.type == "cuda",
            worker_init_fn=loader_worker_init if num_workers else None,
        )

    def _train_sampler(self, labels):
        if self.sampler is None:
            return None
        if self.sampler == "imbalanced":
            return ImbalancedDatasetSampler(labels)
        return ClassAwareSampler(labels)

    def _progress(self, iterable, desc):
        if self.verbose < 1:
            return iterable
        return tqdm(iterable, desc=desc, leave=False)

    # --------------------------------------------------------------- metrics
    def eval(self, targets, scores, logging_offset=0):
        """Overall score and metrics dict for ``targets`` (0/1) and activated ``scores``.

        The score is ``selection_metric`` if set, else mean average precision
        ("map") for multi-target and class-averaged F1 for single-target models.
        Single-target models with one class are scored as presence/absence at
        ``threshold``.

        Parameters
        ----------
        targets : array-like (n_samples, n_classes)
            0/1 labels.
        scores : array-like (n_samples, n_classes)
            Scores after the activation (sigmoid or softmax).
        logging_offset : int
            Added to ``verbose`` and ``logging_level`` for the messages of this call:
            -1 prints one level less. The score is printed at level 1, per-class
            metrics at level 2.

        Returns
        -------
        (float, dict)
        """
        if self.score_activation == "softmax":
            m = metrics.single_target_metrics(targets, scores, class_names=self.classes)
        else:
            m = metrics.multi_target_metrics(targets, scores, class_names=self.classes, threshold=self.threshold)
        key = self._selection_key()
        score = m.get(key, float("nan"))
        self._log("Metrics:", 1, logging_offset)
        self._log(f"\t{key.upper()}: {score:.3f}", 1, logging_offset)
        for c in self.classes:
            self._log(f"\t{c}: " + ", ".join(f"{k} {v:.3f}" for k, v in m[c].items()), 2, logging_offset)
        return score, m

    def _selection_key(self):
        return self.selection_metric or ("f1" if self.single_target else "map")

    @staticmethod
    def _metrics_row(m, loss):
        keys = ["map", "macro_roc_auc", "micro_roc_auc", "precision", "recall", "f1"]
        row = {"loss": loss}
        row.update({k: m.get(k, float("nan")) for k in keys})
        return row

    def _inference(self, safe, batch_size, num_workers, desc="validation"):
        """Logits for every row of ``safe`` (NaN rows for samples that failed) and the new failure records."""
        logits = np.full((len(safe), len(self.classes)), np.nan, dtype=np.float32)
        failures = []
        amp_dtype = autocast_dtype(self.device, self.use_amp)
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.inference_mode():
                for batch in self._progress(self._loader(safe, batch_size, num_workers), desc):
                    failures.extend(batch.failed_samples)
                    x, _ = batch
                    if len(batch.indices):
                        out = network_forward(self.network, x, self.device, amp_dtype, self.channels_last)
                        logits[batch.indices] = out.numpy()
        finally:
            self.network.train(was_training)
        return logits, failures

    def _run_inference(self, df, batch_size, num_workers, bypass_augmentations=True, desc="validation"):
        """Logits for every row of ``df`` (NaN rows for samples that failed) and the failure records."""
        return self._inference(self._safe_dataset(df, bypass_augmentations), batch_size, num_workers, desc)

    # --------------------------------------------------------------- training
    def train(self, train_df, validation_df=None, epochs=1, batch_size=1, num_workers=0, save_path=".",
              save_interval=1, log_interval=10, validation_interval=1,
              invalid_samples_log="./invalid_training_samples.log", raise_errors=False, wandb_session=None,
              progress_callback=None, stop_event=None):
        """Train the network on labelled clips, validating and saving as it goes.

        Parameters
        ----------
        train_df : DataFrame
            Index ``file`` or ``(file, start_time, end_time)`` (seconds); one 0/1 column per class.
        validation_df : DataFrame, optional
            Same shape; without it no best model is selected.
        epochs : int
            Passes over ``train_df`` (0 is allowed: only validates).
        batch_size : int
            Clips per gradient step. A batch left with a single clip (the last one, or
            after failures) is skipped when the network's batch-norm layers cannot
            train on one clip at this input size (feature maps of 1x1).
        num_workers : int
            Worker processes for preprocessing (0 = this process).
        save_path : str or Path
            Folder for ``epoch-N.model`` (every ``save_interval`` epochs), ``best.model``
            (best validation score so far) and ``metrics.csv``.
        save_interval : int
            Epochs between checkpoint files (0 or None: none, only ``best.model``).
        log_interval : int
            Batches between loss messages (at ``verbose`` / ``logging_level`` 1).
        validation_interval : int
            Epochs between validations; the best model only updates on those.
        invalid_samples_log : str or None
            Tab-separated file listing the samples that could not be read (file,
            start_time, end_time, stage, error), written at the end if any failed.
        raise_errors : bool
            Stop with :class:`TrainingFailed` at the first sample that fails instead of skipping it.
        wandb_session : wandb run, optional
            Loss and metrics are logged per epoch (``session.log``); wandb is never required.
        progress_callback : callable, optional
            Called with a dict per batch (``event="batch"``), per epoch (``event="epoch"``,
            with the metric rows) and at the end (``"stopped"``, ``"done"``); for dashboards.
        stop_event : threading.Event, optional
            When set (e.g. from another thread), training stops after the current batch;
            completed epochs and ``best.model`` are kept.

        Raises
        ------
        TrainingFailed
            No training sample could be read, or more than ``max_failed_fraction`` of the
            training or validation samples failed (the message names the first failures
            and their reasons); nothing more is saved as best.
        ValueError
            Label tables that do not fit the model's classes (named in the message).

        Returns
        -------
        None. Fills ``loss_hist``, ``train_metrics``, ``valid_metrics``, ``best_score``,
        ``best_epoch`` and ``failed_samples``.
        """
        y_train, y_valid = self._check_label_tables(train_df, validation_df, epochs)
        save_path = Path(save_path)
        save_path.mkdir(parents=True, exist_ok=True)
        # models and tables of an earlier run that was killed mid-save; an hour old cannot be a live save
        remove_stale_temp_files(save_path, older_than_s=3600)
        self._init_loss_fn(y_train)
        self._prepare_optimizer()
        run = _Run(batch_size=int(batch_size), num_workers=int(num_workers), log_interval=log_interval,
                   raise_errors=raise_errors, notify=progress_callback or (lambda info: None),
                   stop=stop_event or threading.Event())
        train_safe = self._safe_dataset(train_df, bypass_augmentations=False) if epochs else None
        valid_safe = self._safe_dataset(validation_df, bypass_augmentations=True) if y_valid is not None else None
        patience_left = self.early_stopping_patience
        try:
            for _ in range(epochs):
                if run.stop.is_set():
                    break
                epoch = self.current_epoch
                t_row = self._train_epoch(train_safe, y_train, run, epoch)
                self.current_epoch += 1
                self.scheduler.step()
                v_row = None
                if valid_safe is not None and (epoch + 1) % max(validation_interval, 1) == 0:
                    v_row, improved = self._validate(valid_safe, y_valid, run, epoch, save_path)
                    if improved:
                        patience_left = self.early_stopping_patience
                    elif patience_left is not None:
                        patience_left -= 1
                self._end_epoch(epoch, t_row, v_row, save_path, save_interval, wandb_session, run)
                if patience_left is not None and patience_left <= 0:
                    self._log(f"Early stopping: no better validation score for {self.early_stopping_patience} "
                              "validations")
                    break
            if epochs == 0 and valid_safe is not None:
                self._validate(valid_safe, y_valid, run, self.current_epoch, save_path)
        except TrainingStopped:
            self._log(f"Training stopped during epoch {self.current_epoch}")
            run.notify({"event": "stopped", "epoch": self.current_epoch})
        finally:
            self._finish_failures(run, invalid_samples_log)
        if self.best_epoch is not None:
            self._log(f"Best Model Appears at Epoch {self.best_epoch} with Validation score {self.best_score:.3f}.")
        run.notify({"event": "done", "epoch": self.current_epoch, "best_score": self.best_score,
                    "best_epoch": self.best_epoch})

    def _check_label_tables(self, train_df, validation_df, epochs):
        """Label arrays of the training and validation tables, or clear errors naming the problem."""
        y_train = _label_array(train_df, self.classes, "train_df")
        y_valid = _label_array(validation_df, self.classes, "validation_df") if validation_df is not None else None
        if len(train_df) == 0 and epochs > 0:
            raise ValueError("train_df is empty")
        if self.score_activation == "softmax":
            for name, y, df in (("train_df", y_train, train_df), ("validation_df", y_valid, validation_df)):
                if y is not None and len(y) and not np.all(y.sum(1) == 1):
                    row = int(np.flatnonzero(y.sum(1) != 1)[0])
                    raise ValueError(f"a single_target model needs exactly one positive class per row; {name} "
                                     f"row {df.index[row]!r} has {int(y[row].sum())}")
        return y_train, y_valid

    def _collect_failures(self, run, batch, safe, what):
        """Record a batch's failures; stop the run if they are more than it allows."""
        if not batch.failed_samples:
            return
        run.failures.extend(batch.failed_samples)
        if run.raise_errors:
            first = batch.failed_samples[0]
            raise TrainingFailed(f"{what} sample {first['file']} [{first['start_time']}-{first['end_time']} s] "
                                 f"failed ({first['stage']}): {first['error']}", run.failures)
        n_bad, n = len(safe._invalid_indices), len(safe)
        if n_bad > self.max_failed_fraction * n:
            none_read = " (none could be read so far)" if not safe._valid_indices else ""
            raise TrainingFailed(
                f"{n_bad} of {n} {what} samples could not be read{none_read}, more than "
                f"max_failed_fraction={self.max_failed_fraction:g}; "
                f"{summarize_failures(safe.failed_samples)}", run.failures)

    def _train_epoch(self, safe, y_train, run, epoch) -> dict:
        """One pass over the training samples; returns the epoch's metrics row."""
        safe.begin_epoch()  # samples kept from the last epoch serve again only if nothing random or changed
        loader = self._loader(safe, run.batch_size, run.num_workers, shuffle=True,
                              sampler=self._train_sampler(y_train))
        n_batches = len(loader)
        amp_dtype = autocast_dtype(self.device, self.use_amp)
        # float16 gradients underflow without scaling; bfloat16 has float32's range
        scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
        targets, scores, loss_sum, n_seen = [], [], 0.0, 0
        self.network.train()
        self._log(f"Training Epoch {epoch}")
        t0 = time.perf_counter()
        for b, batch in enumerate(self._progress(loader, f"epoch {epoch}")):
            self._collect_failures(run, batch, safe, "training")
            x, y = batch
            loss = float("nan")
            if len(batch.indices) == 1 and not self._can_train_on_one(x, amp_dtype):
                self._log(f"Epoch {epoch}: batch {b} skipped: it holds one clip, too few for the network's "
                          "batch-norm layers at this input size", 2)
            elif len(batch.indices):
                y = y.to(self.device)
                out, loss = self._train_step(x, y, amp_dtype, scaler)
                loss_sum += loss * len(y)
                n_seen += len(y)
                targets.append(y.cpu().numpy())
                scores.append(self._activate(out).numpy())
                if run.log_interval and b % run.log_interval == 0:
                    self._log(f"Epoch: {epoch} [batch {b}/{n_batches}, {100 * b / n_batches:.2f}%]\n"
                              f"\tDistLoss: {loss:.3f}")
            run.notify({"event": "batch", "epoch": epoch, "batch": b + 1, "n_batches": n_batches, "loss": loss})
            if run.stop.is_set():
                raise TrainingStopped
        if n_seen == 0:
            raise TrainingFailed("no training sample could be read; "
                                 f"{summarize_failures(safe.failed_samples) or 'no failures were recorded'}",
                                 run.failures)
        epoch_loss = loss_sum / n_seen
        _, m = self.eval(np.concatenate(targets), np.concatenate(scores))
        row = self._metrics_row(m, epoch_loss)
        row["clips_per_s"] = n_seen / max(time.perf_counter() - t0, 1e-9)
        self.train_metrics = pd.concat([self.train_metrics, pd.DataFrame([row], index=[epoch])])
        self.train_metrics.index.name = "epoch"
        self.loss_hist[epoch] = epoch_loss
        return row

    def _can_train_on_one(self, x, amp_dtype) -> bool:
        """Whether the network can take a training step on a batch of one clip.

        Batch-norm layers in training mode need more than one value per channel,
        which a single clip only gives while the feature maps are larger than 1x1.
        """
        if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.network.modules()):
            return True
        sizes = []
        hooks = [m.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0][0, 0].numel()))
                 for m in self.network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        was_training = self.network.training
        self.network.eval()  # a probe: running statistics must not change
        try:
            with torch.no_grad():
                network_forward(self.network, x, self.device, amp_dtype, self.channels_last)
        finally:
            for hook in hooks:
                hook.remove()
            self.network.train(was_training)
        return min(sizes, default=2) > 1

    def _train_step(self, x, y, amp_dtype, scaler):
        """Forward, loss, backward and optimizer step on one batch; returns (outputs, loss)."""
        with autocast(self.device, amp_dtype):
            out = self.network(to_network_input(x, self.device, self.channels_last))
        if isinstance(out, (tuple, list)):  # e.g. a network with auxiliary outputs
            out = out[0]
        out = out.float()  # the loss in float32
        loss = self.loss_fn(out, y)
        self.opt_net.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(self.opt_net)
        scaler.update()
        return out.detach().cpu(), float(loss.detach())

    def _validate(self, safe, y_valid, run, epoch, save_path):
        """Score the validation samples, record metrics, keep and save the best model."""
        self._log("Validation.")
        safe.begin_epoch()  # validation never augments: its samples are made once per training run
        logits, failures = self._inference(safe, run.batch_size, run.num_workers)
        run.failures.extend(failures)
        n_bad = len(safe._invalid_indices)
        if n_bad > self.max_failed_fraction * len(safe):
            raise TrainingFailed(f"{n_bad} of {len(safe)} validation samples could not be read, more than "
                                 f"max_failed_fraction={self.max_failed_fraction:g}; "
                                 f"{summarize_failures(safe.failed_samples)}", run.failures)
        ok = ~np.isnan(logits).any(1)
        if ok.any():
            lt = torch.as_tensor(logits[ok])
            with torch.no_grad():
                vloss = float(self.loss_fn(lt.to(self.device), torch.as_tensor(y_valid[ok]).float().to(self.device)))
            score, m = self.eval(y_valid[ok], self._activate(lt).numpy())
        else:
            warnings.warn("no validation sample could be read: no best model this epoch", UserWarning, stacklevel=3)
            vloss, score, m = float("nan"), float("nan"), {}
        row = self._metrics_row(m, vloss)
        self.valid_metrics = pd.concat([self.valid_metrics, pd.DataFrame([row], index=[epoch])])
        self.valid_metrics.index.name = "epoch"
        improved = not math.isnan(score) and (self.best_score is None or score > self.best_score)
        if improved:
            self.best_score = float(score)
            self.best_epoch = epoch
            self._best_state = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
            self.save(Path(save_path) / "best.model")
        return row, improved

    def _end_epoch(self, epoch, t_row, v_row, save_path, save_interval, wandb_session, run):
        """Checkpoint, metrics file, messages and notifications after an epoch."""
        if save_interval and (epoch + 1) % save_interval == 0:
            self.save(save_path / f"epoch-{epoch}.model")
        with atomic_write(save_path / "metrics.csv") as handle:
            self.metrics_table().to_csv(handle)
        message = f"Epoch {epoch}: train loss {t_row['loss']:.4f}"
        if v_row is not None:
            message += f", validation {self._selection_key()} {v_row.get(self._selection_key(), float('nan')):.3f}"
        self._log(message)
        if wandb_session is not None:
            log = {f"train/{k}": v for k, v in t_row.items()}
            if v_row is not None:
                log.update({f"validation/{k}": v for k, v in v_row.items()})
            wandb_session.log(log, step=epoch)
        run.notify({"event": "epoch", "epoch": epoch, "train": t_row, "valid": v_row, "best_score": self.best_score,
                    "best_epoch": self.best_epoch})

    def _finish_failures(self, run, invalid_samples_log):
        """``failed_samples`` from the run (one row per distinct failure), and the log file."""
        self.failed_samples = failures_frame(run.failures).drop_duplicates(FAILURE_COLUMNS).reset_index(drop=True)
        if invalid_samples_log and len(self.failed_samples):
            with atomic_write(invalid_samples_log) as handle:
                self.failed_samples.to_csv(handle, sep="\t", index=False)

    def metrics_table(self) -> pd.DataFrame:
        """Per-epoch table: ``train_*`` and ``valid_*`` columns (loss, map, ROC-AUC, P/R/F1)."""
        parts = []
        if len(self.train_metrics):
            parts.append(self.train_metrics.add_prefix("train_"))
        if len(self.valid_metrics):
            parts.append(self.valid_metrics.add_prefix("valid_"))
        if not parts:
            return pd.DataFrame()
        out = pd.concat(parts, axis=1)
        out.index.name = "epoch"
        return out

    @property
    def best_model(self):
        """A copy of this model with the weights of the best validation epoch (or None)."""
        if self._best_state is None:
            return None
        clone = self._clone()
        clone.network.load_state_dict(self._best_state)
        return clone

    def _clone(self):
        network = copy.deepcopy(self.network)
        clone = CNN(network, self.classes, self.sample_duration, single_target=self.single_target,
                    preprocessor=copy.deepcopy(self.preprocessor), sample_shape=self.sample_shape,
                    device=self.device, **self._hyperparams())
        clone.architecture_name = self.architecture_name
        clone.channels_last = self.channels_last
        return clone

    def _hyperparams(self) -> dict:
        names = ["optimizer", "optimizer_params", "lr_update_interval", "lr_cooling_factor", "label_smoothing",
                 "class_weights", "sampler", "early_stopping_patience", "selection_metric", "threshold",
                 "max_failed_fraction", "use_amp", "verbose", "logging_level"]
        return {n: getattr(self, n) for n in names}

    # -------------------------------------------------------------- prediction
    def predict(self, samples, batch_size=1, num_workers=0, activation_layer=None, split_files_into_clips=True,
                overlap_fraction=0, final_clip=None, bypass_augmentations=True, invalid_samples_log=None,
                raise_errors=False, wandb_session=None, return_invalid_samples=False, **kwargs):
        """Score clips of audio files; see :func:`opso_nb.ml.prediction.predict` for all arguments.

        Returns a DataFrame indexed by (file, start_time, end_time) with one column
        per class (NaN rows for clips that could not be read). The overlap may also
        be given as ``clip_overlap`` (s) or ``clip_overlap_fraction``.
        """
        if overlap_fraction or not {"clip_overlap", "clip_overlap_fraction"} & set(kwargs):
            kwargs["overlap_fraction"] = overlap_fraction  # the default 0 must not contradict another spelling
        return prediction.predict(
            self, samples, batch_size=batch_size, num_workers=num_workers, activation_layer=activation_layer,
            split_files_into_clips=split_files_into_clips, final_clip=final_clip,
            bypass_augmentations=bypass_augmentations, invalid_samples_log=invalid_samples_log,
            raise_errors=raise_errors, wandb_session=wandb_session, return_invalid_samples=return_invalid_samples,
            **kwargs)

    def embed(self, samples, batch_size=1, num_workers=0, target_layer=None, progress_bar=None, return_preds=False,
              avgpool=True, activation_layer=None, split_files_into_clips=True, overlap_fraction=0, final_clip=None,
              bypass_augmentations=True, invalid_samples_log=None, raise_errors=False, return_invalid_samples=False,
              **kwargs):
        """Embeddings of clips: the activations of one layer of the network, one row per clip.

        Runs the prediction loop (:func:`opso_nb.ml.prediction.predict`; same
        inputs, ``output_path`` for a streamed, resumable run stored as float32
        Parquet, failures reported) with a :class:`LayerEmbeddings` output.
        The table feeds search by example and shallow classifiers
        (:mod:`opso_nb.ml.agile`).

        Parameters
        ----------
        target_layer : str, optional
            Name of a module of ``self.network`` (``dict(network.named_modules())``)
            whose output is the embedding. None (default): the input of the
            classifier layer, i.e. the penultimate activations (512 values for
            resnet18).
        progress_bar : bool, optional
            OpenSoundscape's name for ``progress``.
        return_preds : bool
            Also return the class scores of the same pass (with ``activation_layer``).
        avgpool : bool
            Average a layer's output over its spatial dimensions (a
            ``[C, H, W]`` output becomes ``C`` values). Only True is supported:
            a table needs one vector per clip.
        activation_layer : {None, "sigmoid", "softmax", "softmax_and_logit"}
            For the scores of ``return_preds``.

        Returns
        -------
        embeddings : DataFrame
            Indexed by ``(file, start_time, end_time)``, float32 columns
            ``emb_0`` ...; ``attrs["embedding_model"]`` names the network, its
            weights and the layer.
        preds : DataFrame
            Only with ``return_preds``.
        failures : DataFrame
            Only with ``return_invalid_samples``.
        """
        if progress_bar is not None:
            kwargs["progress"] = progress_bar
        if overlap_fraction or not {"clip_overlap", "clip_overlap_fraction"} & set(kwargs):
            kwargs["overlap_fraction"] = overlap_fraction
        output = LayerEmbeddings(self, target_layer=target_layer, avgpool=avgpool, return_preds=return_preds,
                                 activation_layer=activation_layer)
        result = prediction.predict(
            self, samples, batch_size=batch_size, num_workers=num_workers, split_files_into_clips=split_files_into_clips,
            final_clip=final_clip, bypass_augmentations=bypass_augmentations, invalid_samples_log=invalid_samples_log,
            raise_errors=raise_errors, return_invalid_samples=return_invalid_samples, network_output=output, **kwargs)
        table, failures = result if return_invalid_samples else (result, None)
        return split_embeddings(table, output.size, output.embedding_model, return_preds, failures,
                                return_invalid_samples)

    def generate_cams(self, samples, method="gradcam", classes=None, target_layers=None, guided_backprop=False,
                      split_files_into_clips=True, bypass_augmentations=True, batch_size=1, num_workers=0):
        """Class activation maps for clips; see :func:`opso_nb.ml.cam.generate_cams`."""
        return cam.generate_cams(self, samples, method=method, classes=classes, target_layers=target_layers,
                                 guided_backprop=guided_backprop, split_files_into_clips=split_files_into_clips,
                                 bypass_augmentations=bypass_augmentations, batch_size=batch_size,
                                 num_workers=num_workers)

    # ------------------------------------------------------------ persistence
    def config(self) -> dict:
        """The JSON-able description saved with the weights."""

        def clean(v):
            if isinstance(v, (np.floating, np.integer)):
                return v.item()
            return v

        return {
            "format_version": MODEL_FORMAT_VERSION,
            "package": "opso_nb",
            "package_version": __version__,
            "architecture": self.architecture_name,
            "classes": list(self.classes),
            "sample_duration": self.sample_duration,
            "single_target": self.single_target,
            "sample_shape": list(self.sample_shape),
            "preprocessor": _preprocessor_to_dict(self.preprocessor),
            "hyperparameters": {k: clean(v) for k, v in self._hyperparams().items()},
            "loss": None if self.loss_cls is None else self.loss_cls.__name__,
            "current_epoch": self.current_epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "loss_hist": {str(k): v for k, v in self.loss_hist.items()},
            "metrics": json.loads(self.metrics_table().to_json(orient="split")) if len(self.train_metrics) else None,
        }

    def _state_dict_cpu(self) -> dict:
        return {k: v.detach().cpu() for k, v in self.network.state_dict().items()}

    def save(self, path, save_train_loader=False, save_hooks=False, as_torch_dict=False, save_optimizer=True):
        """Write weights (with their checksum), optimizer state and config to one file (atomically).

        Load it with :func:`load_model`; the file holds only tensors and plain values,
        so ``torch.load(path, weights_only=True)`` reads it.

        Parameters
        ----------
        path : str or Path
        save_train_loader, save_hooks : bool
            Accepted for OpenSoundscape compatibility and ignored: opso_nb keeps no
            data loader on the model and never pickles modules (or their hooks).
        as_torch_dict : bool
            Write the version-independent form of :meth:`save_torch_dict` instead.
        save_optimizer : bool
            Keep the optimizer state, to continue training after loading.
        """
        if as_torch_dict:
            return self.save_torch_dict(path)
        config = json.dumps(self.config(), default=str)
        state = self._state_dict_cpu()
        payload = {
            "magic": _MAGIC,
            "format_version": MODEL_FORMAT_VERSION,
            "config": config,
            "network_state_dict": state,
            "weights_sha256": weights_checksum(state, config),
            "optimizer_state_dict": self.opt_net.state_dict() if (save_optimizer and self.opt_net) else None,
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    def save_torch_dict(self, path):
        """Save what any opso_nb version can rebuild: architecture name, weights (with checksum),
        classes, sample shape, sample duration and ``single_target``.

        Preprocessing, training settings and the loss are not kept; reload with
        :meth:`from_torch_dict`.
        """
        if self.architecture_name is None:
            raise ValueError("save_torch_dict needs a named architecture (from list_architectures()); for a "
                             "custom module use save() or save_weights()")
        state = self._state_dict_cpu()
        payload = {
            "magic": _TORCH_DICT_MAGIC,
            "architecture": self.architecture_name,
            "classes": list(self.classes),
            "sample_duration": float(self.sample_duration),
            "single_target": bool(self.single_target),
            "sample_shape": list(self.sample_shape),
            "weights": state,
            "weights_sha256": weights_checksum(state),
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def from_torch_dict(cls, path, device=None):
        """Rebuild a model written by :meth:`save_torch_dict` (default preprocessor, default settings)."""
        payload = _read_model_file(path)
        if not isinstance(payload, dict) or payload.get("magic") != _TORCH_DICT_MAGIC:
            raise ModelLoadError(path, "not written by CNN.save_torch_dict (use load_model for CNN.save files)")
        state = payload["weights"]
        _verify_checksum(path, state, "", payload.get("weights_sha256"))
        model = cls(payload["architecture"], payload["classes"], payload["sample_duration"],
                    single_target=payload.get("single_target", False), sample_shape=payload.get("sample_shape"),
                    weights=None, device=device)
        _load_state(model, state, path)
        return model

    def save_weights(self, path):
        """Save only the network's ``state_dict`` (plain torch file, no checksum)."""
        with atomic_path(path) as tmp:
            torch.save(self.network.state_dict(), tmp)

    def load_weights(self, path, strict=True):
        """Load weights into the network (in place) from a ``state_dict`` file (from :meth:`save_weights`
        or torchvision) or from an opso_nb model file (its checksum is verified)."""
        state = _read_model_file(path)
        if isinstance(state, dict) and state.get("magic") == _MAGIC:
            state = _checked_model_state(path, state)
        elif isinstance(state, dict) and state.get("magic") == _TORCH_DICT_MAGIC:
            _verify_checksum(path, state["weights"], "", state.get("weights_sha256"))
            state = state["weights"]
        return self.network.load_state_dict(state, strict=strict)

    @classmethod
    def from_torchvision_state_dict(cls, state_dict, architecture, classes, sample_duration, **kwargs):
        """Build a CNN from a plain torchvision state dict (a dict or a file path).

        This is how models from older versions are brought over: save the old
        network's ``state_dict()`` there, then load it here. Key prefixes of
        OpenSoundscape 0.6.0 (``feature.`` and ``classifier.``) are renamed to
        torchvision's; the number of input channels is read from the first conv.
        """
        path = None
        if isinstance(state_dict, (str, Path)):
            path = state_dict
            state_dict = _read_model_file(path)
            if isinstance(state_dict, dict) and "model_state_dict" in state_dict:
                state_dict = state_dict["model_state_dict"]
            elif isinstance(state_dict, dict) and "network_state_dict" in state_dict:
                state_dict = state_dict["network_state_dict"]
        renamed = _rename_legacy_keys(state_dict)
        kwargs.setdefault("weights", None)
        shape = kwargs.pop("sample_shape", None) or (224, 224, _input_channels(renamed))
        model = cls(architecture, classes, sample_duration, sample_shape=shape, **kwargs)
        _load_state(model, renamed, path or "state dict")
        return model


class LayerEmbeddings(prediction.NetworkOutput):
    """One layer's activations per clip, from the same forward pass as the scores: the output of :meth:`CNN.embed`.

    A forward hook on the layer catches its input (``target_layer=None``: the
    classifier layer's input, the penultimate activations) or its output
    (a named layer), averaged over any spatial dimensions.

    Parameters
    ----------
    model : CNN
    target_layer : str, optional
        Module name in ``model.network``; None: the input of the classifier layer.
    avgpool : bool
        Must be True (one vector per clip).
    return_preds : bool
        Also return the class scores (columns after the embedding).
    activation_layer : str, optional
        Applied to the scores.
    """

    job = "embed"

    def __init__(self, model, target_layer=None, avgpool=True, return_preds=False, activation_layer=None):
        if not avgpool:
            raise ValueError("avgpool=False is not supported: an embeddings table holds one vector per clip")
        self.scores = prediction.ClassScores(model, activation_layer)
        modules = dict(model.network.named_modules())
        if target_layer is None:
            names = model.classifier_layer_names
            if not names or names[0] not in modules:
                raise ValueError("cannot tell which layer is the classifier of this network; give target_layer")
            self.layer_name, self.capture = names[0], "input"
        elif target_layer in modules and target_layer:
            self.layer_name, self.capture = target_layer, "output"
        else:
            raise ValueError(f"the network has no layer {target_layer!r}; its layers are "
                             f"{[n for n in modules if n][:20]}...")
        self.layer = modules[self.layer_name]
        self.return_preds = bool(return_preds)
        self._caught = None
        self.size = self._embedding_size(model)
        self.columns = embedding_columns(self.size) + (list(self.scores.columns) if return_preds else [])
        self.embedding_model = (f"opso_nb.CNN:{model.architecture_name or type(model.network).__name__}:"
                                f"{prediction.weights_fingerprint(model.network)}:{self.layer_name}.{self.capture}")

    def _embedding_size(self, model) -> int:
        if self.capture == "input" and isinstance(self.layer, torch.nn.Linear):
            return int(self.layer.in_features)
        shape = tuple(model.sample_shape)
        if len(shape) != 3 or any(v is None for v in shape):
            raise ValueError(f"cannot tell the size of layer {self.layer_name!r}'s output for input shape {shape}; "
                             "give the model a fixed sample_shape (height, width, channels)")
        with self.running():  # one pass on a blank input tells the size
            self(torch.zeros(1, shape[2], shape[0], shape[1]))
        return int(self._caught.shape[1])

    def settings(self) -> dict:
        out = {**self.scores.settings(), "output": "layer_embeddings", "layer": self.layer_name,
               "capture": self.capture, "return_preds": self.return_preds, "embedding_model": self.embedding_model}
        if not self.return_preds:
            out.pop("activation_layer")
        return out

    def _catch(self, module, inputs, output=None):
        value = inputs[0] if self.capture == "input" else output
        if isinstance(value, (tuple, list)):
            value = value[0]
        value = value.float()
        self._caught = (value.mean(dim=tuple(range(2, value.dim()))) if value.dim() > 2 else value).cpu()

    @contextlib.contextmanager
    def running(self):
        hook = (self.layer.register_forward_pre_hook(self._catch) if self.capture == "input"
                else self.layer.register_forward_hook(self._catch))
        try:
            with self.scores.running():
                yield
        finally:
            hook.remove()

    def __call__(self, batch):
        self._caught = None
        preds = self.scores(batch)
        if self._caught is None:
            raise RuntimeError(f"layer {self.layer_name!r} was not run by the network's forward pass")
        embeddings = self._caught.numpy()
        return np.concatenate([embeddings, preds], axis=1) if self.return_preds else embeddings


class InceptionV3(CNN):
    """A :class:`CNN` on the Inception v3 architecture (input 299 x 299).

    The auxiliary classifier of Inception v3 is removed (see
    :func:`~opso_nb.ml.cnn_architectures.inception_v3`), so training and
    prediction work as for any other architecture. Batch-norm layers need at
    least two clips per training batch.

    Parameters
    ----------
    classes, sample_duration, single_target, preprocessor_class, weights
        As for :class:`CNN`.
    freeze_feature_extractor : bool
        Train only the final layer.
    sample_shape : tuple
        ``(height, width, channels)``, default (299, 299, 3).
    **kwargs
        Other :class:`CNN` arguments (``preprocessor``, ``device`` and training parameters).
    """

    def __init__(self, classes, sample_duration, single_target=False, preprocessor_class=SpectrogramPreprocessor,
                 freeze_feature_extractor=False, weights="DEFAULT", sample_shape=(299, 299, 3), **kwargs):
        super().__init__("inception_v3", classes, sample_duration, single_target=single_target,
                         preprocessor_class=preprocessor_class, sample_shape=sample_shape, weights=weights, **kwargs)
        if freeze_feature_extractor:
            self.freeze_feature_extractor()


# ----------------------------------------------------------------- model files
def _read_model_file(path):
    """``torch.load(path, weights_only=True)`` with clear errors for missing, empty and foreign files."""
    path = Path(path)
    try:
        info = path.stat()  # stat, not exists(): a folder we may not enter is "permission denied", not "missing"
    except FileNotFoundError:
        raise ModelLoadError(path, "file does not exist") from None
    except PermissionError:
        raise ModelLoadError(path, "permission denied (a folder on the path cannot be entered)") from None
    if not path.is_file():
        raise ModelLoadError(path, "not a regular file")
    if info.st_size == 0:
        raise ModelLoadError(path, "file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise ModelLoadError(path, "permission denied (the file cannot be read)") from None
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            reason = ("it holds pickled Python objects, which opso_nb never unpickles (that could run code); "
                      "save the network's state_dict() with the program that wrote it")
        raise ModelLoadError(path, f"not a readable torch file (truncated or another format?): {reason}") from None


def _verify_checksum(path, state, config, expected):
    if expected is None:
        return
    if weights_checksum(state, config) != expected:
        raise ModelLoadError(path, "the weights do not match their checksum: the file was changed or damaged "
                                   "after it was saved")


def _checked_model_state(path, payload) -> dict:
    """The network weights of a :meth:`CNN.save` payload, after checking them against their checksum."""
    version = int(payload.get("format_version", 0))
    if version > MODEL_FORMAT_VERSION:
        raise ModelLoadError(path, f"saved with a newer model format ({version}) than this package reads "
                                   f"({MODEL_FORMAT_VERSION}); upgrade opso_nb")
    try:
        state = payload["network_state_dict"]
        config = payload["config"]
    except KeyError as e:
        raise ModelLoadError(path, f"damaged model file: no {e}") from None
    if "weights_sha256" in payload:
        _verify_checksum(path, state, config, payload["weights_sha256"])
    else:
        warnings.warn(f"{path} was saved before model files carried a checksum (format {version}); its weights "
                      "cannot be checked for damage. Save it again to add one.", UserWarning, stacklevel=3)
    return state


def _load_state(model, state, path):
    try:
        model.network.load_state_dict(state)
    except RuntimeError as e:
        raise ModelLoadError(path, f"weights do not fit architecture {model.architecture_name!r}: "
                                   f"{str(e).splitlines()[0]}") from None


def load_model(path, device=None, architecture=None, preprocessor=None):
    """Load a model written by :meth:`CNN.save`, checking its weights against their checksum.

    Parameters
    ----------
    path : str or Path
    device : str or torch.device, optional
        Default: first GPU if present, else CPU.
    architecture : torch.nn.Module, optional
        Needed only for models built on a custom module (not a registered name);
        its weights are replaced by the saved ones.
    preprocessor : object, optional
        Use this preprocessor instead of rebuilding the saved one.

    Raises
    ------
    ModelLoadError
        For missing, truncated, damaged (checksum mismatch) or foreign files, and
        saved preprocessors that cannot be rebuilt, naming the file and the problem.

    Warns
    -----
    UserWarning
        For files saved before checksums existed (format 1): they load unchecked.
    """
    path = Path(path)
    payload = _read_model_file(path)
    if not isinstance(payload, dict) or payload.get("magic") != _MAGIC:
        if isinstance(payload, dict) and payload.get("magic") == _TORCH_DICT_MAGIC:
            raise ModelLoadError(path, "written by save_torch_dict; load it with CNN.from_torch_dict(path)")
        if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise ModelLoadError(path, "this is a plain state dict, not an opso_nb model; use "
                                       "CNN.from_torchvision_state_dict(path, architecture, classes, sample_duration)")
        raise ModelLoadError(path, "not an opso_nb model file (no opso_nb header)")
    state = _checked_model_state(path, payload)
    try:
        cfg = json.loads(payload["config"])
    except json.JSONDecodeError as e:
        raise ModelLoadError(path, f"damaged model config: {e}") from None

    arch = architecture if architecture is not None else cfg.get("architecture")
    if arch is None:
        raise ModelLoadError(path, "the model was built on a custom torch module; pass it as load_model(path, "
                                   "architecture=module)")
    if preprocessor is None and cfg.get("preprocessor") is not None:
        try:
            preprocessor = preprocessor_from_dict(cfg["preprocessor"])
        except (ValueError, KeyError, TypeError) as e:
            raise ModelLoadError(path, f"its preprocessor cannot be rebuilt ({e}); pass one with "
                                       "load_model(path, preprocessor=...)") from None
    hyper = {k: v for k, v in (cfg.get("hyperparameters") or {}).items() if k in CNN.param}
    model = CNN(arch, cfg["classes"], cfg["sample_duration"], single_target=cfg.get("single_target", False),
                preprocessor=preprocessor, sample_shape=cfg.get("sample_shape"), weights=None, device=device,
                **hyper)
    if isinstance(arch, str):
        model.architecture_name = arch
    _load_state(model, state, path)
    if cfg.get("loss") == "ResampleLoss":
        model.loss_cls = ResampleLoss
    model.current_epoch = int(cfg.get("current_epoch", 0))
    model.best_score = cfg.get("best_score")
    model.best_epoch = cfg.get("best_epoch")
    model.loss_hist = {int(k): v for k, v in (cfg.get("loss_hist") or {}).items()}
    if cfg.get("metrics"):
        table = pd.read_json(io.StringIO(json.dumps(cfg["metrics"])), orient="split")
        tcols = [c for c in table.columns if c.startswith("train_")]
        vcols = [c for c in table.columns if c.startswith("valid_")]
        model.train_metrics = table[tcols].rename(columns=lambda c: c[6:]).dropna(how="all")
        model.valid_metrics = table[vcols].rename(columns=lambda c: c[6:]).dropna(how="all")
    model._pending_optimizer_state = payload.get("optimizer_state_dict")
    return model


def _legacy_classes(payload, state) -> list:
    """Class names of a pre-0.6 OpenSoundscape checkpoint: ``classes``, else ``labels_yaml``, else numbers."""
    if payload.get("classes"):
        return [str(c) for c in payload["classes"]]
    labels = payload.get("labels_yaml")
    if isinstance(labels, str):
        # a flat YAML mapping "0: negative" per line; read without a YAML parser
        pairs = [line.split(":", 1) for line in labels.splitlines() if ":" in line]
        names = {int(k.strip()): v.strip().strip("'\"") for k, v in pairs if k.strip().isdigit()}
        if names:
            return [names[i] for i in sorted(names)]
    last = [v for v in state.values() if getattr(v, "ndim", 0) == 2][-1:]
    n_outputs = int(last[0].shape[0]) if last else 2
    return [str(i) for i in range(n_outputs)]


def load_outdated_model(path, architecture, sample_duration, model_class=CNN, device=None):
    """Load a CNN checkpoint saved by OpenSoundscape 0.4.x / 0.5.x (or a 0.6.0 state dict).

    Reads the weights (``model_state_dict`` or ``network_state_dict``, with
    0.6.0's ``feature.``/``classifier.`` prefixes renamed) and the class names
    (``classes`` or ``labels_yaml``) with ``torch.load(weights_only=True)``:
    checkpoints that hold pickled Python objects are refused, never unpickled.
    The preprocessing of those versions differed from today's (for instance the
    spectrogram image was inverted); check ``model.preprocessor`` before predicting.
    Save the result with :meth:`CNN.save` and load it later with :func:`load_model`.

    Parameters
    ----------
    path : str or Path
        ``.model`` or ``.tar`` checkpoint.
    architecture : str or torch.nn.Module or None
        As for :class:`CNN`; None for a ``model_class`` whose constructor takes no
        architecture (e.g. :class:`InceptionV3`).
    sample_duration : float
        Clip length (s) the model was trained on.
    model_class : class
        Class to build, normally :class:`CNN`.
    device : str or torch.device, optional

    Raises
    ------
    ModelLoadError
        Unreadable files, files without weights, or weights that do not fit ``architecture``.
    """
    payload = _read_model_file(path)
    if not isinstance(payload, dict):
        raise ModelLoadError(path, "not an OpenSoundscape checkpoint (expected a dict)")
    state = payload.get("model_state_dict") or payload.get("network_state_dict")
    if state is None and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state = payload
    if state is None:
        raise ModelLoadError(path, f"no weights found (keys: {sorted(map(str, payload))[:10]})")
    state = _rename_legacy_keys(state)
    classes = _legacy_classes(payload, state)
    shape = (224, 224, _input_channels(state))
    if architecture is None:
        model = model_class(classes, sample_duration, weights=None, device=device)
    else:
        model = model_class(architecture, classes, sample_duration, sample_shape=shape, weights=None, device=device)
    _load_state(model, state, path)
    warnings.warn(f"{path}: loaded a model from an old OpenSoundscape version; its preprocessing differed from "
                  "today's (e.g. inverted spectrogram images): check model.preprocessor before predicting",
                  UserWarning, stacklevel=2)
    return model


def use_resample_loss(model: CNN):
    """Switch a multi-target model to :class:`~opso_nb.ml.loss.ResampleLoss` (in place)."""
    if model.single_target:
        raise ValueError("ResampleLoss is for multi-target models (single_target=False)")
    model.loss_cls = ResampleLoss


def separate_feat_clf(model: CNN, feature_lr=None, classifier_lr=None):
    """Give the feature extractor and the classifier layer separate optimizer settings (in place).

    Sets ``model.optimizer_params`` to ``{"feature": {...}, "classifier": {...}}`` (copies
    of the current settings, with the given learning rates) and builds a new
    ``model.opt_net`` with the two parameter groups.
    """
    op = dict(model.optimizer_params)
    if "feature" in op:
        feat, clf = dict(op["feature"]), dict(op["classifier"])
    else:
        feat, clf = dict(op), dict(op)
    if feature_lr is not None:
        feat["lr"] = feature_lr
    if classifier_lr is not None:
        clf["lr"] = classifier_lr
    model.optimizer_params = {"feature": feat, "classifier": clf}
    model._pending_optimizer_state = None  # a saved single-group state does not fit two groups
    model._init_optimizer()
    return model


#: OpenSoundscape's name for :func:`separate_feat_clf` (works for any architecture here).
separate_resnet_feat_clf = separate_feat_clf
