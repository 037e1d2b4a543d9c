"""CNN classifiers for audio clips: build, train, evaluate, save and load.

A :class:`CNN` bundles a torch network, the class names, the clip length it was
trained on (``sample_duration``, seconds) and the preprocessor that turns a clip
into the network's input tensor. Training takes a clip table (index ``file`` or
``(file, start_time, end_time)``, one 0/1 column per class); prediction over
long recordings lives in :mod:`opso_nb.ml.prediction`.

Saved models are one file written with ``torch.save`` holding only tensors and
plain Python values (loadable with ``torch.load(..., weights_only=True)``): the
network weights, the optimizer state (to continue training) and a JSON config
with a format version, so files load across package versions.

Examples
--------
>>> from opso_nb.ml.cnn import CNN, load_model          # doctest: +SKIP
>>> model = CNN("resnet18", classes=["frog"], sample_duration=2.0, weights=None)
>>> model.train(train_df, valid_df, epochs=5, batch_size=16, save_path="runs/frog")
>>> model.save("frog.model"); model = load_model("frog.model")
"""
from __future__ import annotations

import copy
import io
import json
import math
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import param
import torch

from opso_nb import metrics as _metrics
from opso_nb.ml import cnn_architectures
from opso_nb.ml.loss import BCEWithLogitsLoss_hot, CrossEntropyLoss_hot, ResampleLoss
from opso_nb.ml.utils import autocast, autocast_dtype, loader_worker_init, prepare_network, to_network_input
from opso_nb.utils import atomic_path

#: Version of the saved-model file layout. Bump when the layout changes and keep
#: reading the older ones in :func:`load_model`.
MODEL_FORMAT_VERSION = 1
_MAGIC = "opso_nb.CNN"


class ModelLoadError(ValueError):
    """A file could not be read as an opso_nb model; names the path and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load model from {path}: {reason}")


class TrainingStopped(Exception):
    """Internal signal: the ``stop_event`` passed to :meth:`CNN.train` was set."""


def _package_version() -> str:
    try:
        import opso_nb

        return opso_nb.__version__
    except Exception:  # pragma: no cover
        return "unknown"


def _default_device():
    if torch.cuda.is_available():
        return torch.device("cuda:0")
    return torch.device("cpu")


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


def default_preprocessor(sample_duration, out_shape=(224, 224, 3)):
    """``SpectrogramPreprocessor(sample_duration, out_shape=...)`` from :mod:`opso_nb.preprocess`."""
    from opso_nb.preprocess.preprocessors import SpectrogramPreprocessor

    return SpectrogramPreprocessor(sample_duration=sample_duration, out_shape=out_shape)


def _preprocessor_from_dict(d):
    """Rebuild a preprocessor from its ``to_dict()`` form via opso_nb.preprocess."""
    if d is None:
        return None
    from opso_nb.preprocess import preprocessors as pp

    for name in ("preprocessor_from_dict", "from_dict", "load_preprocessor"):
        fn = getattr(pp, name, None)
        if callable(fn):
            return fn(d)
    cls_name = d.get("class") or d.get("type") or d.get("name") if isinstance(d, dict) else None
    cls = getattr(pp, str(cls_name), None) or getattr(pp, "BasePreprocessor", None)
    if cls is not None and hasattr(cls, "from_dict"):
        return cls.from_dict(d)
    raise ValueError("opso_nb.preprocess.preprocessors provides no way to rebuild a preprocessor from a dict")


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


class _SafeItems(torch.utils.data.Dataset):
    """Wraps a dataset so a failing item returns its error instead of raising.

    The collate function drops failures and reports them, so one corrupt file never
    stops an epoch and labels stay aligned with scores (items carry their index).
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        try:
            sample = self.dataset[i]
            err = getattr(sample, "preprocessing_exception", None)
            if err is not None:
                return i, None, f"{type(err).__name__}: {err}"
            data = sample.data if hasattr(sample, "data") else sample
            data = torch.as_tensor(data, dtype=torch.float32)
            return i, data, None
        except Exception as e:  # bad input is normal: report, keep going
            return i, None, f"{type(e).__name__}: {e}"


def _collate(items):
    good = [(i, x) for i, x, err in items if err is None]
    failed = [(i, err) for i, x, err in items if err is not None]
    if good:
        idx = torch.as_tensor([i for i, _ in good], dtype=torch.long)
        x = torch.stack([x for _, x in good])
    else:
        idx, x = torch.zeros(0, dtype=torch.long), None
    return idx, x, failed


def _describe_sample(df, i):
    key = df.index[i]
    return key if isinstance(key, tuple) else (key, None, None)


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
        True: exactly one class per clip (softmax, cross-entropy, selected by F1).
        False (default): any number of classes per clip (sigmoid, BCE, selected by mAP).
    preprocessor : object, optional
        Turns a clip into a tensor (``.forward(sample, bypass_augmentations=...)``).
        Default: ``SpectrogramPreprocessor(sample_duration, out_shape=sample_shape)``.
    sample_shape : tuple, optional
        ``(height, width, channels)`` of the network input; default the preprocessor's
        ``out_shape`` or (224, 224, 3). Channels other than 3 adapt the first conv.
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
    use_amp = param.Boolean(
        None, allow_None=True,
        doc="Mixed precision (bfloat16/float16 maths, float32 weights) in training and prediction: True, False, "
        "or None = automatic (on for GPUs and for CPUs with native bfloat16, where it is up to 2x faster).",
    )
    verbose = param.Integer(1, bounds=(0, 3), doc="0 silent, 1 progress bars and epoch summaries, 2 batch logs.")

    def __init__(self, architecture, classes, sample_duration, single_target=False, preprocessor=None,
                 sample_shape=None, weights="DEFAULT", device=None, preprocessor_class=None, **params):
        super().__init__(single_target=single_target, sample_duration=float(sample_duration), **params)
        classes = list(classes)
        if not classes:
            raise ValueError("classes must list at least one class name")
        if len(set(classes)) != len(classes):
            raise ValueError(f"class names must be unique, got {classes}")
        self.classes = classes

        if preprocessor is None:
            shape = tuple(sample_shape) if sample_shape is not None else (224, 224, 3)
            if preprocessor_class is not None:
                preprocessor = preprocessor_class(sample_duration=self.sample_duration, out_shape=shape)
            else:
                preprocessor = default_preprocessor(self.sample_duration, shape)
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

        self.loss_cls = None  # None: chosen from single_target; or a loss class, e.g. ResampleLoss
        self.loss_fn = None
        self.opt_net = None
        self.scheduler = None
        self.current_epoch = 0
        self.loss_hist = {}
        self.train_metrics = pd.DataFrame()
        self.valid_metrics = pd.DataFrame()
        self.best_score = None
        self.best_epoch = None
        self._best_state = None
        self.failed_samples = pd.DataFrame(columns=["file", "start_time", "end_time", "error"])
        self.wandb_logging = {"n_preview_samples": 8, "top_samples_classes": None, "n_top_samples": 3}
        self._pending_optimizer_state = None

    # ------------------------------------------------------------------ basics
    def __repr__(self):
        return (f"<CNN {self.architecture_name or type(self.network).__name__} classes={self.classes} "
                f"sample_duration={self.sample_duration} single_target={self.single_target}>")

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

    # ----------------------------------------------------------- optimisation
    def _init_optimizer(self):
        opt_cls = getattr(torch.optim, self.optimizer)
        accepted = set(opt_cls.__init__.__code__.co_varnames)

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
        # the LR schedule is applied by hand at epoch ends (see _cool_learning_rate) so
        # that it lives in the optimizer state and survives save/load
        self.scheduler = None

    def _cool_learning_rate(self):
        """Multiply learning rates by ``lr_cooling_factor`` every ``lr_update_interval`` epochs."""
        if self.current_epoch % self.lr_update_interval == 0:
            for g in self.opt_net.param_groups:
                g["lr"] *= self.lr_cooling_factor

    def _class_weight_tensor(self, labels: np.ndarray):
        cw = self.class_weights
        if cw is None:
            return None
        if isinstance(cw, str):
            if cw != "balanced":
                raise ValueError(f"class_weights must be None, 'balanced' or a list, got {cw!r}")
            pos = labels.sum(0)
            n = len(labels)
            if self.single_target:
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
        elif self.single_target:
            self.loss_fn = CrossEntropyLoss_hot(weight=weight, label_smoothing=self.label_smoothing)
        else:
            self.loss_fn = BCEWithLogitsLoss_hot(pos_weight=weight, label_smoothing=self.label_smoothing)

    def _activate(self, logits):
        return torch.softmax(logits, 1) if self.single_target else torch.sigmoid(logits)

    # ------------------------------------------------------------ data access
    def _dataset(self, df, bypass_augmentations):
        from opso_nb.ml.datasets import AudioFileDataset

        return AudioFileDataset(df, self.preprocessor, bypass_augmentations=bypass_augmentations)

    def _loader(self, df, batch_size, num_workers, bypass_augmentations, shuffle=False, sampler=None):
        ds = _SafeItems(self._dataset(df, bypass_augmentations))
        return torch.utils.data.DataLoader(
            ds, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
            shuffle=shuffle and sampler is None, sampler=sampler,
            persistent_workers=False, pin_memory=self.device.type == "cuda",
            worker_init_fn=loader_worker_init if num_workers else None,
        )

    def _train_sampler(self, labels):
        if self.sampler is None:
            return None
        from opso_nb.ml import sampling

        if self.sampler == "imbalanced":
            return sampling.ImbalancedDatasetSampler(labels)
        return sampling.ClassAwareSampler(labels)

    # --------------------------------------------------------------- metrics
    def eval(self, targets, scores, logging_offset=0):
        """Overall score and metrics dict for ``targets`` (0/1) and activated ``scores``.

        The score is ``selection_metric`` if set, else mean average precision
        ("map") for multi-target and class-averaged F1 for single-target models.
        """
        if self.single_target:
            m = _metrics.single_target_metrics(targets, scores, class_names=self.classes)
        else:
            m = _metrics.multi_target_metrics(targets, scores, class_names=self.classes, threshold=self.threshold)
        key = self.selection_metric or ("f1" if self.single_target else "map")
        return m.get(key, float("nan")), m

    @staticmethod
    def _metrics_row(m, loss):
        keys = ["map", "macro_roc_auc", "micro_roc_auc", "precision", "recall", "f1"]
        row = {"loss": loss}
        row.update({k: m.get(k, float("nan")) for k in keys})
        return row

    def _run_inference(self, df, batch_size, num_workers, bypass_augmentations=True, desc="validation"):
        """Logits for every row of ``df`` (NaN rows for samples that failed) and the mean loss."""
        loader = self._loader(df, batch_size, num_workers, bypass_augmentations)
        logits = np.full((len(df), len(self.classes)), np.nan, dtype=np.float32)
        failures = []
        self.network.eval()
        amp_dtype = autocast_dtype(self.device, self.use_amp)
        with torch.no_grad():
            for idx, x, failed in self._progress(loader, desc):
                failures.extend(failed)
                if x is None:
                    continue
                with autocast(self.device, amp_dtype):
                    out = self.network(to_network_input(x, self.device, self.channels_last))
                logits[idx.numpy()] = out.float().cpu().numpy()
        return logits, failures

    def _progress(self, iterable, desc):
        if self.verbose < 1:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, leave=False)

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
            Clips per gradient step.
        num_workers : int
            Worker processes for preprocessing (0 = this process).
        save_path : str or Path
            Folder for ``epoch-N.model`` (every ``save_interval`` epochs), ``best.model``
            (best validation score so far) and ``metrics.csv``.
        save_interval : int
            Epochs between checkpoint files (0 or None: none, only ``best.model``).
        log_interval : int
            Batches between loss printouts (with ``verbose >= 2``).
        validation_interval : int
            Epochs between validations; the best model only updates on those.
        invalid_samples_log : str or None
            Text file listing samples that failed to load (written at the end).
        raise_errors : bool
            Raise at the first sample that fails instead of skipping it.
        wandb_session : wandb run, optional
            Logs loss and metrics per epoch when given; wandb is never required.
        progress_callback : callable, optional
            Called with a dict per batch (``event="batch"``) and per epoch
            (``event="epoch"``, with the metric rows); for dashboards.
        stop_event : threading.Event, optional
            When set (e.g. from another thread), training stops after the current batch;
            completed epochs and ``best.model`` are kept.

        Returns
        -------
        None. Fills ``loss_hist``, ``train_metrics``, ``valid_metrics``, ``best_score``,
        ``best_epoch`` and ``failed_samples``.
        """
        y_train = _label_array(train_df, self.classes, "train_df")
        y_valid = _label_array(validation_df, self.classes, "validation_df") if validation_df is not None else None
        if len(train_df) == 0 and epochs > 0:
            raise ValueError("train_df is empty")
        if self.single_target and len(y_train) and not np.all(y_train.sum(1) == 1):
            bad = train_df.index[y_train.sum(1) != 1][0]
            raise ValueError(f"single_target model needs exactly one positive class per row; row {bad!r} has "
                             f"{int(y_train[list(train_df.index).index(bad)].sum())}")
        save_path = Path(save_path)
        save_path.mkdir(parents=True, exist_ok=True)
        self._init_loss_fn(y_train)
        if self.opt_net is None:
            self._init_optimizer()
        failures = []
        stop = stop_event or threading.Event()
        patience_left = self.early_stopping_patience

        def record_failures(df, failed):
            for i, err in failed:
                f, s, e = _describe_sample(df, i)
                if raise_errors:
                    raise RuntimeError(f"sample {f} ({s}-{e} s) failed to load: {err}")
                failures.append({"file": f, "start_time": s, "end_time": e, "error": err})

        def notify(**info):
            if progress_callback is not None:
                progress_callback(info)

        try:
            for _ in range(epochs):
                epoch = self.current_epoch
                if stop.is_set():
                    break
                sampler = self._train_sampler(y_train)
                loader = self._loader(train_df, batch_size, num_workers, bypass_augmentations=False,
                                      shuffle=True, sampler=sampler)
                n_batches = len(loader)
                self.network.train()
                amp_dtype = autocast_dtype(self.device, self.use_amp)
                # float16 gradients underflow without scaling; bfloat16 has float32's range
                scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
                targets_all, scores_all, losses, n_seen = [], [], [], 0
                y_t = torch.tensor(y_train, dtype=torch.float32)
                if self.verbose:
                    print(f"Training Epoch {epoch}")
                t0 = time.perf_counter()
                for b, (idx, x, failed) in enumerate(self._progress(loader, f"epoch {epoch}")):
                    record_failures(train_df, failed)
                    if x is not None:
                        y = y_t[idx].to(self.device)
                        with autocast(self.device, amp_dtype):
                            out = self.network(to_network_input(x, self.device, self.channels_last))
                        out = out.float()  # the loss in float32
                        loss = self.loss_fn(out, y)
                        self.opt_net.zero_grad()
                        scaler.scale(loss).backward()
                        scaler.step(self.opt_net)
                        scaler.update()
                        losses.append(float(loss.detach()) * len(idx))
                        n_seen += len(idx)
                        targets_all.append(y.cpu().numpy())
                        scores_all.append(self._activate(out.detach()).float().cpu().numpy())
                        if self.verbose >= 2 and log_interval and b % log_interval == 0:
                            print(f"Epoch: {epoch} [batch {b}/{n_batches}, {100 * b / n_batches:.2f}%] "
                                  f"DistLoss: {losses[-1] / len(idx):.3f}")
                    notify(event="batch", epoch=epoch, batch=b + 1, n_batches=n_batches,
                           loss=losses[-1] / max(len(idx), 1) if losses else float("nan"))
                    if stop.is_set():
                        raise TrainingStopped
                epoch_loss = sum(losses) / n_seen if n_seen else float("nan")
                t_row = {"loss": epoch_loss}
                if n_seen:
                    _, m = self.eval(np.concatenate(targets_all), np.concatenate(scores_all))
                    t_row = self._metrics_row(m, epoch_loss)
                t_row["clips_per_s"] = n_seen / max(time.perf_counter() - t0, 1e-9)
                self.train_metrics = pd.concat([self.train_metrics, pd.DataFrame([t_row], index=[epoch])])
                self.train_metrics.index.name = "epoch"
                self.loss_hist[epoch] = epoch_loss
                self.current_epoch += 1
                self._cool_learning_rate()

                v_row = None
                if y_valid is not None and (epoch + 1) % max(validation_interval, 1) == 0:
                    v_row, improved = self._validate(validation_df, y_valid, batch_size, num_workers,
                                                     record_failures, epoch, save_path)
                    if improved:
                        patience_left = self.early_stopping_patience
                    elif patience_left is not None:
                        patience_left -= 1
                if save_interval and (epoch + 1) % save_interval == 0:
                    self.save(save_path / f"epoch-{epoch}.model")
                self._write_metrics_csv(save_path)
                if self.verbose:
                    msg = f"Epoch {epoch}: train loss {epoch_loss:.4f}"
                    if v_row is not None:
                        msg += f", validation {self._selection_key()} {v_row[self._selection_key()]:.3f}"
                    print(msg)
                if wandb_session is not None:
                    log = {f"train/{k}": v for k, v in t_row.items()}
                    if v_row is not None:
                        log.update({f"validation/{k}": v for k, v in v_row.items()})
                    wandb_session.log(log, step=epoch)
                notify(event="epoch", epoch=epoch, train=t_row, valid=v_row, best_score=self.best_score,
                       best_epoch=self.best_epoch)
                if patience_left is not None and patience_left <= 0:
                    if self.verbose:
                        print(f"Early stopping: no better validation score for "
                              f"{self.early_stopping_patience} validations")
                    break
            if epochs == 0 and y_valid is not None:
                self._validate(validation_df, y_valid, batch_size, num_workers, record_failures,
                               self.current_epoch, save_path)
        except TrainingStopped:
            if self.verbose:
                print(f"Training stopped during epoch {self.current_epoch}")
            notify(event="stopped", epoch=self.current_epoch)
        finally:
            self.failed_samples = pd.DataFrame(failures, columns=["file", "start_time", "end_time", "error"])
            if invalid_samples_log and failures:
                from opso_nb.utils import atomic_write

                with atomic_write(invalid_samples_log) as fh:
                    self.failed_samples.to_csv(fh, sep="\t", index=False)
        if self.best_epoch is not None and self.verbose:
            print(f"Best Model Appears at Epoch {self.best_epoch} with Validation score {self.best_score:.3f}.")
        notify(event="done", epoch=self.current_epoch, best_score=self.best_score, best_epoch=self.best_epoch)

    def _selection_key(self):
        return self.selection_metric or ("f1" if self.single_target else "map")

    def _validate(self, validation_df, y_valid, batch_size, num_workers, record_failures, epoch, save_path):
        logits, failed = self._run_inference(validation_df, batch_size, num_workers)
        record_failures(validation_df, failed)
        ok = ~np.isnan(logits).any(1)
        if ok.any():
            lt = torch.as_tensor(logits[ok])
            yt = torch.as_tensor(y_valid[ok], dtype=torch.float32)
            with torch.no_grad():
                vloss = float(self.loss_fn.to("cpu")(lt, yt))
            self.loss_fn.to(self.device)
            scores = self._activate(lt).numpy()
            score, m = self.eval(y_valid[ok], scores)
        else:
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

    def _write_metrics_csv(self, save_path):
        from opso_nb.utils import atomic_write

        table = self.metrics_table()
        with atomic_write(Path(save_path) / "metrics.csv") as fh:
            table.to_csv(fh)

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
        return clone

    def _hyperparams(self) -> dict:
        names = ["optimizer", "optimizer_params", "lr_update_interval", "lr_cooling_factor", "label_smoothing",
                 "class_weights", "sampler", "early_stopping_patience", "selection_metric", "threshold", "use_amp",
                 "verbose"]
        return {n: getattr(self, n) for n in names}

    # -------------------------------------------------------------- prediction
    def predict(self, samples, **kwargs):
        """Score clips of audio files; see :func:`opso_nb.ml.prediction.predict` for the arguments."""
        from opso_nb.ml.prediction import predict

        return predict(self, samples, **kwargs)

    def generate_cams(self, samples, method="gradcam", classes=None, target_layers=None, guided_backprop=False,
                      split_files_into_clips=True, bypass_augmentations=True, batch_size=1, num_workers=0):
        """Class activation maps for clips; see :func:`opso_nb.ml.cam.generate_cams`."""
        from opso_nb.ml.cam import generate_cams

        return generate_cams(self, samples, method=method, classes=classes, target_layers=target_layers,
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
            "package_version": _package_version(),
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

    def save(self, path, save_optimizer=True):
        """Write weights, optimizer state and config to one file (atomically).

        Load it with :func:`load_model`; the file holds only tensors and plain values,
        so ``torch.load(path, weights_only=True)`` reads it.
        """
        payload = {
            "magic": _MAGIC,
            "format_version": MODEL_FORMAT_VERSION,
            "config": json.dumps(self.config(), default=str),
            "network_state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "optimizer_state_dict": self.opt_net.state_dict() if (save_optimizer and self.opt_net) else None,
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    def save_weights(self, path):
        """Save only the network's ``state_dict`` (plain torch file)."""
        with atomic_path(path) as tmp:
            torch.save(self.network.state_dict(), tmp)

    def load_weights(self, path, strict=True):
        """Load a ``state_dict`` file (from :meth:`save_weights` or torchvision) into the network."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        if isinstance(state, dict) and state.get("magic") == _MAGIC:
            state = state["network_state_dict"]
        return self.network.load_state_dict(state, strict=strict)

    @classmethod
    def from_torchvision_state_dict(cls, state_dict, architecture, classes, sample_duration, **kwargs):
        """Build a CNN from a plain torchvision state dict (a dict or a file path).

        This is how models from older versions are brought over: save the old
        network's ``state_dict()`` there, then load it here. Key prefixes of
        OpenSoundscape 0.6.0 (``feature.`` and ``classifier.``) are renamed to
        torchvision's; the number of input channels is read from the first conv.
        """
        if isinstance(state_dict, (str, Path)):
            state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
            if isinstance(state_dict, dict) and "model_state_dict" in state_dict:
                state_dict = state_dict["model_state_dict"]
            elif isinstance(state_dict, dict) and "network_state_dict" in state_dict:
                state_dict = state_dict["network_state_dict"]
        renamed = {}
        for k, v in state_dict.items():
            if k.startswith("feature."):
                k = k[len("feature."):]
            elif k.startswith("classifier."):
                k = "fc." + k[len("classifier."):]
            renamed[k] = v
        conv = [v for k, v in renamed.items() if v.ndim == 4]
        channels = int(conv[0].shape[1]) if conv else 3
        kwargs.setdefault("weights", None)
        shape = kwargs.pop("sample_shape", None) or (224, 224, channels)
        model = cls(architecture, classes, sample_duration, sample_shape=shape, **kwargs)
        model.network.load_state_dict(renamed)
        return model


def load_model(path, device=None, architecture=None, preprocessor=None):
    """Load a model written by :meth:`CNN.save`.

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
        For missing, truncated or foreign files, naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise ModelLoadError(path, "file is empty")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(path, f"not a readable torch file (truncated or another format?): {reason}") from None
    if not isinstance(payload, dict) or payload.get("magic") != _MAGIC:
        if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise ModelLoadError(path, "this is a plain state dict, not an opso_nb model; use "
                                       "CNN.from_torchvision_state_dict(path, architecture, classes, sample_duration)")
        raise ModelLoadError(path, "not an opso_nb model file (no opso_nb header)")
    version = int(payload.get("format_version", 0))
    if version > MODEL_FORMAT_VERSION:
        raise ModelLoadError(path, f"saved with a newer model format ({version}) than this package reads "
                                   f"({MODEL_FORMAT_VERSION}); upgrade opso_nb")
    try:
        cfg = json.loads(payload["config"])
        state = payload["network_state_dict"]
    except (KeyError, json.JSONDecodeError) as e:
        raise ModelLoadError(path, f"damaged model config: {e}") from None

    arch = architecture if architecture is not None else cfg.get("architecture")
    if arch is None:
        raise ModelLoadError(path, "the model was built on a custom torch module; pass it as load_model(path, "
                                   "architecture=module)")
    try:
        if preprocessor is None:
            preprocessor = _preprocessor_from_dict(cfg.get("preprocessor"))
    except Exception as e:
        warnings.warn(f"could not rebuild the saved preprocessor ({e}); using the default one", UserWarning,
                      stacklevel=2)
        preprocessor = None
    hyper = dict(cfg.get("hyperparameters") or {})
    model = CNN(arch, cfg["classes"], cfg["sample_duration"], single_target=cfg.get("single_target", False),
                preprocessor=preprocessor, sample_shape=cfg.get("sample_shape"), weights=None, device=device,
                **hyper)
    if isinstance(arch, str):
        model.architecture_name = arch
    try:
        model.network.load_state_dict(state)
    except RuntimeError as e:
        raise ModelLoadError(path, f"weights do not fit architecture {arch!r}: {str(e).splitlines()[0]}") from None
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


def use_resample_loss(model: CNN):
    """Switch a multi-target model to :class:`~opso_nb.ml.loss.ResampleLoss` (in place)."""
    if model.single_target:
        raise ValueError("ResampleLoss is for multi-target models (single_target=False)")
    model.loss_cls = ResampleLoss


def separate_feat_clf(model: CNN, feature_lr=None, classifier_lr=None):
    """Give the feature extractor and the classifier layer separate optimizer settings (in place).

    Sets ``model.optimizer_params`` to ``{"feature": {...}, "classifier": {...}}`` (copies
    of the current settings, with the given learning rates) and resets the optimizer.
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
    model.opt_net = None
    return model


#: OpenSoundscape's name for :func:`separate_feat_clf` (works for any architecture here).
separate_resnet_feat_clf = separate_feat_clf
