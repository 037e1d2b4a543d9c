"""Actions: the named, tunable steps of a preprocessing pipeline.

Each Action is a :class:`param.Parameterized`, so ``pn.Param(action)`` renders a
widget per parameter. Every Action has ``bypass`` (skip it) and
``is_augmentation`` (skipped when augmentations are switched off, e.g. for
validation and prediction). ``go(sample)`` replaces ``sample.data`` with the
step's output. Parameters are read and changed with :meth:`BaseAction.set`,
:meth:`BaseAction.get` or through the live ``params`` Series
(``action.params["max_f"] = 8000`` changes the action).

Randomness comes only from torch's global generator, so ``torch.manual_seed``
makes a whole pipeline (overlay included) reproducible, and DataLoader workers
get distinct streams automatically.

Trust model
-----------
A saved configuration is data, never code. It may name only the action classes
and functions in :data:`ACTION_REGISTRY` and :data:`FUNCTION_REGISTRY`:
opso_nb's own, plus those the user's code registers with
:func:`register_action`. Anything else is refused with
:class:`~opso_nb.preprocess.utils.UnregisteredActionError` before any step
runs; nothing is ever imported by name from a configuration.
"""
from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import param
import torch

from opso_nb.audio import Audio, mix
from opso_nb.preprocess import img_augment, tensor_augment
from opso_nb.preprocess.utils import PreprocessingError, Registry, get_args
from opso_nb.sample import AudioSample
from opso_nb.spectrogram import MelSpectrogram, Spectrogram

#: Action classes a saved configuration may name, by class name.
ACTION_REGISTRY = Registry("action class")
#: Functions a saved configuration may wrap in :class:`Action`, by ``"module:qualname"``.
FUNCTION_REGISTRY = Registry("action function")


def function_name(fn) -> str:
    """The ``"module:qualname"`` name under which ``fn`` is saved in configurations.

    Raises
    ------
    ValueError
        For lambdas and functions defined inside other functions, which have no
        stable name.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<lambda>" in qualname or "<locals>" in qualname:
        raise ValueError(f"{fn!r} has no stable module-level name, so a configuration cannot name it; "
                         "use a function defined at the top level of a module or notebook")
    return f"{module}:{qualname}"


def register_action(obj):
    """Allow saved configurations to name ``obj``; usable as a decorator.

    Parameters
    ----------
    obj : BaseAction subclass or function
        An Action class (registered by class name) or a function or method to
        wrap in :class:`Action` (registered by ``"module:qualname"``).

    Returns
    -------
    obj, unchanged

    Notes
    -----
    Register in your own code, before loading a configuration or model that
    uses the object. Registering is a statement of trust: a configuration can
    then call the object with arguments of its choosing. opso_nb's own names
    cannot be replaced.

    Examples
    --------
    >>> @register_action                                   # doctest: +SKIP
    ... def multiply(x, n=2):
    ...     return x * n
    >>> pre.insert_action("times3", Action(multiply, n=3))  # doctest: +SKIP
    """
    return _register(obj, builtin=False)


def _register(obj, builtin):
    if isinstance(obj, type):
        if not issubclass(obj, BaseAction):
            raise TypeError(f"register_action takes a BaseAction subclass or a function, got class {obj.__name__}")
        return ACTION_REGISTRY.add(obj.__name__, obj, builtin=builtin)
    if not callable(obj):
        raise TypeError(f"register_action takes a BaseAction subclass or a function, got {type(obj).__name__}")
    FUNCTION_REGISTRY.add(function_name(obj), obj, builtin=builtin)
    return obj


def _builtin(obj):
    """Register one of opso_nb's own actions or functions."""
    return _register(obj, builtin=True)


def _rand():
    return float(torch.rand(1).item())


def _uniform(value):
    """A number, or a uniform draw from a (min, max) pair."""
    if isinstance(value, (tuple, list)):
        lo, hi = float(value[0]), float(value[1])
        return lo + (hi - lo) * _rand()
    return float(value)


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.DataFrame):
        return _df_to_json(value)
    return value


def _df_to_json(df):
    multi = isinstance(df.index, pd.MultiIndex)
    index = [list(map(_jsonable, i)) if multi else _jsonable(i) for i in df.index]
    return {"__dataframe__": True, "index_names": [n for n in df.index.names], "index": index,
            "columns": [str(c) for c in df.columns], "data": [[_jsonable(v) for v in row] for row in df.values]}


def _df_from_json(d):
    names = d["index_names"]
    if len(names) > 1:
        index = pd.MultiIndex.from_tuples([tuple(i) for i in d["index"]], names=names)
    else:
        index = pd.Index(d["index"], name=names[0])
    return pd.DataFrame(d["data"], index=index, columns=d["columns"])


def _unjson(value):
    if isinstance(value, dict) and value.get("__dataframe__"):
        return _df_from_json(value)
    return value


class _LiveParams(pd.Series):
    """An Action's parameters as a Series whose item and attribute assignments change the Action.

    ``action.params["max_f"] = 8000`` and ``action.params.max_f = 8000`` work as
    in OpenSoundscape's tutorials; values are validated like :meth:`BaseAction.set`.
    Results of arithmetic on it are plain Series.
    """

    _metadata = ["_owner"]

    @property
    def _constructor(self):
        return pd.Series

    def __setitem__(self, key, value):
        owner = getattr(self, "_owner", None)
        if owner is not None:
            owner._store_param(key, value)
            value = owner.get(key)
        super().__setitem__(key, value)


class BaseAction(param.Parameterized):
    """Parent of all Actions: a pipeline step with tunable parameters.

    Subclasses declare their parameters as ``param`` attributes and implement
    :meth:`go`. A subclass may instead keep plain parameters, as in
    OpenSoundscape: ``self.params["threshold"] = 0.2`` in its ``__init__`` adds
    one (read it back with ``self.params["threshold"]`` or :meth:`get`).

    The live :attr:`params` Series holds the step's parameters.

    Attributes
    ----------
    bypass : bool
        Skip this step.
    is_augmentation : bool
        Random augmentation: skipped when augmentations are bypassed.
    requires_labels : bool
        The step reads ``sample.labels`` (e.g. :class:`Overlay`).
    """

    bypass = param.Boolean(False, doc="Skip this step.")
    is_augmentation = param.Boolean(False, doc="Random augmentation: skipped when augmentations are bypassed.")

    #: parameters that are bookkeeping, not the step's own settings
    _meta = ("name", "bypass", "is_augmentation")
    requires_labels = False

    def __init__(self, **params):
        super().__init__(**params)
        self._extra = {}  # plain (undeclared) parameters, name -> value

    def go(self, sample, **kwargs):
        """Replace ``sample.data`` by this step's output (in place); return the sample."""
        raise NotImplementedError

    def __call__(self, sample, **kwargs):
        return self.go(sample, **kwargs)

    def on(self):
        """Stop bypassing this step."""
        self.bypass = False

    def off(self):
        """Bypass this step."""
        self.bypass = True

    def _declared(self):
        return [k for k in self.param if k not in self._meta]

    def _known(self):
        return self._declared() + list(self._extra)

    def set(self, **kwargs):
        """Change existing parameters; an unknown name raises ``ValueError`` (catches typos)."""
        unknown = [k for k in kwargs if k not in self._known()]
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter(s) {unknown}; it has {self._known()}")
        for key, value in kwargs.items():
            self._store_param(key, value)

    def get(self, key):
        """Value of the parameter ``key``."""
        if key in self._declared():
            return getattr(self, key)
        if key in self._extra:
            return self._extra[key]
        raise KeyError(f"{type(self).__name__} has no parameter {key!r}; it has {self._known()}")

    def _store_param(self, key, value):
        """Set one parameter (declared: validated by param; otherwise kept as a plain parameter)."""
        if key in self._meta:
            raise ValueError(f"{key!r} is not a step parameter; set action.{key} directly")
        if key in self._declared():
            self.param.update(**{key: value})
        else:
            self._extra[key] = value

    @property
    def params(self) -> pd.Series:
        """The step's own parameters (name -> value); item assignment changes the action."""
        values = {k: getattr(self, k) for k in self._declared()}
        values.update(self._extra)
        series = _LiveParams(values, dtype=object)
        series._owner = self
        return series

    def _saved_params(self) -> dict:
        return dict(self.params.items())

    def to_dict(self) -> dict:
        """JSON-friendly description: class name, parameters, bypass, is_augmentation."""
        name = type(self).__name__
        if ACTION_REGISTRY.get(name) is not type(self):
            raise ValueError(f"action class {name} is not registered, so a saved configuration could not name it; "
                             f"call opso_nb.preprocess.actions.register_action({name}) first")
        return {"class": name, "bypass": bool(self.bypass), "is_augmentation": bool(self.is_augmentation),
                "params": {k: _jsonable(v) for k, v in self._saved_params().items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "BaseAction":
        """Rebuild an action written by :meth:`to_dict` (``cls`` must be the registered class)."""
        params = {k: _unjson(v) for k, v in (d.get("params") or {}).items()}
        for k, v in list(params.items()):
            p = cls.param[k] if k in cls.param else None
            if isinstance(p, (param.NumericTuple, param.Tuple)) and isinstance(v, list):
                params[k] = tuple(v)
        try:
            action = cls(**params)
        except TypeError as err:
            raise ValueError(f"cannot rebuild {cls.__name__} from parameters {sorted(params)}: {err}") from None
        action.bypass = bool(d.get("bypass", False))
        action.is_augmentation = bool(d.get("is_augmentation", action.is_augmentation))
        return action

    def __repr__(self):
        kind = "Augmentation Action" if self.is_augmentation else "Action"
        bypassed = " ## Bypassed ##" if self.bypass else ""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if not isinstance(v, pd.DataFrame))
        return f"{kind} {type(self).__name__}({args}){bypassed}"

    __str__ = __repr__


class _Augmentation(BaseAction):
    """An Action that is an augmentation unless told otherwise."""

    def __init__(self, **params):
        params.setdefault("is_augmentation", True)
        super().__init__(**params)


def _keyword_defaults(fn) -> dict:
    """``fn``'s parameters after the first that have defaults (name -> default)."""
    try:
        args = get_args(fn)
    except (TypeError, ValueError):  # builtins without a signature
        return {}
    return {k: v for k, v in list(args.items())[1:] if v is not inspect.Parameter.empty}


def _takes_any_keyword(fn) -> bool:
    try:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True


@_builtin
class Action(BaseAction):
    """Wrap a function ``fn(data, **params)`` (or an unbound method) as a pipeline step.

    Parameters
    ----------
    fn : callable or str
        Called as ``fn(sample.data, **params)``; its result becomes
        ``sample.data``. A string names a registered function
        (``"module:qualname"``, see :func:`register_action`).
    is_augmentation : bool
    bypass : bool
    **kwargs
        Parameters passed to ``fn``. ``params`` holds these plus ``fn``'s other
        keyword defaults; :meth:`set` changes existing ones.

    Notes
    -----
    Saving a pipeline stores ``fn`` by name, so only registered functions can
    be saved and loaded: opso_nb's own, and those registered with
    :func:`register_action`.
    """

    def __init__(self, fn, is_augmentation=False, bypass=False, **kwargs):
        super().__init__(is_augmentation=is_augmentation, bypass=bypass)
        if isinstance(fn, str):
            fn = FUNCTION_REGISTRY.lookup(fn)
        if not callable(fn):
            raise TypeError(f"Action needs a function, got {type(fn).__name__}")
        self.fn = fn
        self._extra = {**_keyword_defaults(fn), **kwargs}
        self._explicit = set(kwargs)  # parameters given or changed: the ones a saved config records

    def go(self, sample, **kwargs):
        sample.data = self.fn(sample.data, **self._extra)
        return sample

    def set(self, **kwargs):
        """Change parameters passed to ``fn``; names ``fn`` does not take raise ``ValueError``."""
        if not _takes_any_keyword(self.fn):
            unknown = [k for k in kwargs if k not in self._extra]
            if unknown:
                raise ValueError(f"{getattr(self.fn, '__qualname__', self.fn)} takes no parameter(s) {unknown}; "
                                 f"it takes {list(self._extra)}")
        for key, value in kwargs.items():
            self._store_param(key, value)

    def _store_param(self, key, value):
        super()._store_param(key, value)
        self._explicit.add(key)

    @property
    def kwargs(self) -> dict:
        """The parameters passed to ``fn`` (a live dict)."""
        return self._extra

    def _saved_params(self):
        return {k: v for k, v in self._extra.items() if k in self._explicit}

    def to_dict(self):
        name = function_name(self.fn)
        if FUNCTION_REGISTRY.get(name) != self.fn:
            raise ValueError(f"Action wraps {name}, which is not registered, so a saved configuration could not "
                             f"name it; call opso_nb.preprocess.actions.register_action on it first")
        return {"class": "Action", "fn": name, "bypass": bool(self.bypass),
                "is_augmentation": bool(self.is_augmentation),
                "params": {k: _jsonable(v) for k, v in self._saved_params().items()}}

    @classmethod
    def from_dict(cls, d):
        fn = FUNCTION_REGISTRY.lookup(d.get("fn"))
        return cls(fn, is_augmentation=bool(d.get("is_augmentation", False)), bypass=bool(d.get("bypass", False)),
                   **{k: _unjson(v) for k, v in (d.get("params") or {}).items()})

    def __repr__(self):
        kind = "Augmentation Action" if self.is_augmentation else "Action"
        return f"{kind} calling {getattr(self.fn, '__qualname__', self.fn)}" + (" ## Bypassed ##" if self.bypass else "")

    __str__ = __repr__


# ------------------------------------------------------------------- audio steps
@_builtin
class AudioClipLoader(BaseAction):
    """Load the sample's clip (only that segment of the file) as :class:`~opso_nb.audio.Audio`.

    The whole file when the sample has no ``start_time``/``duration``. A clip
    running past the end of the file returns the part that exists (the trim
    step pads it); a clip starting past the end is an error. A sample whose
    ``source`` is already an Audio object is cut from it instead of a file.
    """

    sample_rate = param.Integer(None, allow_None=True, bounds=(1, None), doc="Resample to this rate (Hz); None keeps the file's.")
    resample_type = param.String("soxr_hq", doc="Resampler name (see Audio).")

    def go(self, sample, **kwargs):
        if isinstance(sample.source, Audio):
            audio = sample.source
            if sample.start_time is not None or sample.duration is not None:
                start = sample.start_time or 0.0
                end = audio.duration if sample.duration is None else start + sample.duration
                audio = audio.trim(start, end)
            if self.sample_rate is not None and self.sample_rate != audio.sample_rate:
                audio = audio.resample(self.sample_rate, resample_type=self.resample_type)
            sample.data = audio
        else:
            sample.data = Audio.from_file(sample.source, sample_rate=self.sample_rate,
                                          resample_type=self.resample_type, offset=sample.start_time or 0.0,
                                          duration=sample.duration, out_of_bounds_mode="ignore",
                                          load_metadata=False)
        if sample.data.n_samples == 0:
            raise PreprocessingError(f"{sample.source}: clip at {sample.start_time} s has no samples")
        return sample


def trim_audio(sample, extend=True, random_trim=False, tol=1e-5):
    """Cut ``sample.data`` (Audio) to ``sample.target_duration`` seconds.

    Parameters
    ----------
    sample : AudioSample
        ``data`` is an Audio; ``target_duration`` (s) the length wanted (None: no-op).
    extend : bool
        Pad clips shorter than the target with silence at the end.
    random_trim : bool
        Take the window at a uniformly random position in a longer clip (else the start).
    tol : float
        Length differences below this (s) are ignored.

    Returns
    -------
    AudioSample
        The same sample, ``data`` trimmed (``start_time`` moved by a random trim).
    """
    target = sample.target_duration
    audio = sample.data
    if target is None:
        return sample
    if audio.duration > target + tol:
        start = _rand() * (audio.duration - target) if random_trim else 0.0
        audio = audio.trim(start, start + target)
        # keep provenance right: the clip now starts later in the file
        if sample.start_time is not None or start:
            sample.start_time = (sample.start_time or 0.0) + start
        sample.duration = target
    n_target = int(round(target * audio.sample_rate))
    if audio.n_samples < n_target:
        if extend:
            audio = audio.extend_to(target)
        elif audio.duration < target - tol:
            raise PreprocessingError(
                f"{sample.source}: clip is {audio.duration:.3f} s, shorter than sample_duration {target} s "
                "(set extend=True to pad with silence)")
    elif audio.n_samples > n_target:  # rounding leftovers
        audio = audio._new(audio.samples[..., :n_target])
    sample.data = audio
    return sample


@_builtin
class AudioTrim(BaseAction):
    """Trim/pad the audio to the preprocessor's ``sample_duration`` (see :func:`trim_audio`)."""

    extend = param.Boolean(True, doc="Pad short clips with silence to sample_duration.")
    random_trim = param.Boolean(False, doc="Random window position in longer clips (augmentation).")
    tol = param.Number(1e-5, bounds=(0, None), doc="Ignore length differences below this (s).")

    def go(self, sample, **kwargs):
        return trim_audio(sample, extend=self.extend, random_trim=self.random_trim, tol=self.tol)


@_builtin
def audio_add_noise(audio, noise_dB=-30, signal_dB=0, color="white"):
    """Scale the signal by ``signal_dB`` and add noise at ``noise_dB`` dBFS.

    Parameters
    ----------
    audio : Audio
    noise_dB : float or (min, max)
        Level of the noise (dBFS); a pair draws it uniformly.
    signal_dB : float or (min, max)
        Gain applied to the signal before mixing (dB); a pair draws it uniformly.
    color : {"white", "pink", "brown", "blue", "violet"}

    Returns
    -------
    Audio
    """
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    noise = Audio.noise(audio.duration, audio.sample_rate, color=color, dBFS=_uniform(noise_dB), seed=seed)
    noise = noise._new(noise.samples[: audio.n_samples])
    return mix([audio.apply_gain(_uniform(signal_dB)), noise], duration=audio.duration, gain=0)


@_builtin
class AudioAddNoise(_Augmentation):
    """Add coloured noise to the audio (augmentation; see :func:`audio_add_noise`)."""

    noise_dB = param.Parameter(-30, doc="Noise level (dBFS), or (min, max) for a random level.")
    signal_dB = param.Parameter(0, doc="Gain applied to the signal (dB), or (min, max).")
    color = param.Selector(default="white", objects=["white", "pink", "brown", "blue", "violet"])

    def go(self, sample, **kwargs):
        sample.data = audio_add_noise(sample.data, self.noise_dB, self.signal_dB, self.color)
        return sample


@_builtin
def audio_random_gain(audio, dB_range=(-30, 0), clip_range=(-1, 1)):
    """Apply a gain (dB) drawn uniformly from ``dB_range``; the result is clipped to ``clip_range``."""
    return audio.apply_gain(_uniform(dB_range), clip_range=clip_range)


@_builtin
class AudioRandomGain(_Augmentation):
    """Random gain (augmentation; see :func:`audio_random_gain`)."""

    dB_range = param.NumericTuple((-30, 0), length=2, doc="(min, max) gain in dB.")

    def go(self, sample, **kwargs):
        sample.data = audio_random_gain(sample.data, self.dB_range)
        return sample


@_builtin
class AudioToTensor(BaseAction):
    """Audio -> float32 tensor ``[n_samples]`` of its samples (mono), for models that take waveforms.

    Waveform models (BirdNET, other pre-trained audio networks) read samples,
    not spectrograms; stacked, a batch is ``[n_clips, n_samples]``.
    """

    def go(self, sample, **kwargs):
        samples = np.asarray(sample.data.samples, dtype=np.float32)
        if samples.ndim != 1:
            raise PreprocessingError(f"{sample.source}: expected mono audio, got samples of shape {samples.shape}")
        sample.data = torch.from_numpy(np.ascontiguousarray(samples))
        return sample


# ------------------------------------------------------------- spectrogram steps
@_builtin
class SpectrogramAction(BaseAction):
    """Audio -> :class:`~opso_nb.spectrogram.Spectrogram` (parameters as ``Spectrogram.from_audio``)."""

    window_type = param.String("hann", doc="Window taper (scipy.signal.get_window name).")
    window_samples = param.Integer(None, allow_None=True, bounds=(8, None), doc="FFT window length (samples); default 512.")
    window_length_sec = param.Number(None, allow_None=True, bounds=(0, None), doc="Window length (s) instead of samples.")
    overlap_samples = param.Integer(None, allow_None=True, bounds=(0, None), doc="Overlap of consecutive windows (samples).")
    overlap_fraction = param.Number(None, allow_None=True, bounds=(0, 0.99), doc="Overlap as fraction of the window (default 0.5).")
    fft_size = param.Integer(None, allow_None=True, bounds=(8, None), doc="Zero-padded FFT length (samples).")
    decibel_limits = param.NumericTuple((-100, -20), length=2, doc="(min, max) dB kept.")
    dB_scale = param.Boolean(True, doc="Decibel (True) or linear power.")
    scaling = param.Selector(default="spectrum", objects=["spectrum", "density"])
    mel = param.Boolean(False, doc="Mel frequency scale (MelSpectrogram).")
    n_mels = param.Integer(64, bounds=(1, None), doc="Mel bands (when mel=True).")

    def spectrogram_settings(self):
        """``(Spectrogram or MelSpectrogram, keyword arguments of its from_audio)`` this step uses."""
        kw = dict(window_type=self.window_type, window_samples=self.window_samples,
                  window_length_sec=self.window_length_sec, overlap_samples=self.overlap_samples,
                  overlap_fraction=self.overlap_fraction, fft_size=self.fft_size,
                  decibel_limits=tuple(self.decibel_limits), dB_scale=self.dB_scale, scaling=self.scaling)
        if self.window_samples is not None and self.overlap_samples is None and self.overlap_fraction is None:
            kw["overlap_fraction"] = 0.5
        if self.mel:
            return MelSpectrogram, {"n_mels": self.n_mels, **kw}
        return Spectrogram, kw

    def go(self, sample, **kwargs):
        cls, kw = self.spectrogram_settings()
        sample.data = cls.from_audio(sample.data, **kw)
        return sample


@_builtin
class SpectrogramBandpass(BaseAction):
    """Keep the rows of the spectrogram between ``min_f`` and ``max_f`` (Hz)."""

    min_f = param.Number(0.0, bounds=(0, None), doc="Lowest frequency kept (Hz).")
    max_f = param.Number(11025.0, bounds=(0, None), doc="Highest frequency kept (Hz).")
    out_of_bounds_ok = param.Boolean(
        True, doc="Allow max_f above the Nyquist frequency (the band is then cut at Nyquist); False raises.")

    def go(self, sample, **kwargs):
        if self.max_f <= self.min_f:
            raise ValueError(f"bandpass needs max_f > min_f, got min_f={self.min_f}, max_f={self.max_f}")
        sample.data = sample.data.bandpass(self.min_f, self.max_f, out_of_bounds_ok=self.out_of_bounds_ok)
        return sample


@_builtin
class SpectrogramToTensor(BaseAction):
    """Spectrogram -> float32 tensor ``[channels, height, width]`` in [0, 1].

    By default loud is 1 and silence 0 (at the spectrogram's decibel limits),
    as in OpenSoundscape 0.7 and later; ``invert=True`` flips that, for models
    trained with OpenSoundscape 0.4-0.6. Low frequencies are at the bottom row.
    """

    height = param.Integer(None, allow_None=True, bounds=(1, None), doc="Output rows (pixels); None keeps the frequency bins.")
    width = param.Integer(None, allow_None=True, bounds=(1, None), doc="Output columns (pixels); None keeps the time windows.")
    channels = param.Integer(1, bounds=(1, 4), doc="Channels (copies of the image, or RGB with a colormap).")
    colormap = param.String(None, allow_None=True, doc="Matplotlib colormap (needs channels=3).")
    invert = param.Boolean(False, doc="False: loud = 1 (default); True: loud = 0 (OpenSoundscape 0.4-0.6 models).")

    def go(self, sample, **kwargs):
        spec = sample.data
        h = self.height or spec.spectrogram.shape[0]
        w = self.width or spec.spectrogram.shape[1]
        shape = None if (h, w) == tuple(spec.spectrogram.shape) else (h, w)
        # Spectrogram.to_image draws loud as dark (0) unless told to invert: the tensor is the other way round
        t = spec.to_image(shape=shape, channels=self.channels, colormap=self.colormap, invert=not self.invert,
                          return_type="torch")
        sample.data = t.to(torch.float32).contiguous()
        return sample


# ------------------------------------------------------------------ tensor steps
@_builtin
def image_to_tensor(img, greyscale=False):
    """PIL image (0-255) -> float32 tensor ``[channels, height, width]`` in [0, 1].

    Parameters
    ----------
    img : PIL.Image.Image
    greyscale : bool
        One channel (True) or three RGB channels (False).
    """
    array = np.asarray(img.convert("L" if greyscale else "RGB"), dtype=np.float32) / 255.0
    array = array[None] if greyscale else np.moveaxis(array, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(array))


def _bars(tensor, max_masks, max_width, dim):
    """Zero up to ``max_masks`` bars along ``dim``, each up to ``max_width`` x that size wide."""
    tensor = tensor.clone()
    size = tensor.shape[dim]
    index = [slice(None)] * tensor.dim()
    for _ in range(int(torch.randint(0, max_masks + 1, (1,)).item())):
        w = int(_rand() * max_width * size)
        if w <= 0:
            continue
        start = int(torch.randint(0, max(1, size - w + 1), (1,)).item())
        index[dim] = slice(start, start + w)
        tensor[tuple(index)] = 0
    return tensor


@_builtin
def time_mask(tensor, max_masks=3, max_width=0.2):
    """Zero up to ``max_masks`` vertical bars, each up to ``max_width`` x width columns wide."""
    return _bars(tensor, max_masks, max_width, dim=tensor.dim() - 1)


@_builtin
def frequency_mask(tensor, max_masks=3, max_width=0.2):
    """Zero up to ``max_masks`` horizontal bars, each up to ``max_width`` x height rows tall."""
    return _bars(tensor, max_masks, max_width, dim=tensor.dim() - 2)


@_builtin
def tensor_add_noise(tensor, std=1):
    """Add Gaussian noise with standard deviation ``std`` (tensor units)."""
    return tensor + torch.randn_like(tensor) * std


@_builtin
def scale_tensor(tensor, input_mean=0.5, input_std=0.5):
    """``(tensor - input_mean) / input_std``: fixed, dataset-wide normalisation (not per image)."""
    if input_std == 0:
        raise ValueError("input_std must not be 0")
    return (tensor - input_mean) / input_std


@_builtin
def torch_random_affine(tensor, degrees=0, translate=(0.3, 0.1), fill=0):
    """Random rotation (+-``degrees``) and shift (fraction of width, height); empty pixels get ``fill``."""
    # torchvision takes seconds to import: only when an affine step really runs
    import torchvision.transforms.functional as F

    h, w = tensor.shape[-2:]
    angle = (2 * _rand() - 1) * degrees
    tx = int(round((2 * _rand() - 1) * translate[0] * w))
    ty = int(round((2 * _rand() - 1) * translate[1] * h))
    return F.affine(tensor, angle=angle, translate=[tx, ty], scale=1.0, shear=[0.0, 0.0], fill=[float(fill)] * tensor.shape[0])


@_builtin
def torch_color_jitter(tensor, brightness=0.3, contrast=0.3, saturation=0.3, hue=0):
    """torchvision ColorJitter on a [C, H, W] tensor (or a PIL image)."""
    import torchvision.transforms as T  # slow import, as in torch_random_affine

    return T.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)(tensor)


@_builtin
class TimeMask(_Augmentation):
    """SpecAugment-style time masks (augmentation): zeroed vertical bars."""

    max_masks = param.Integer(3, bounds=(0, None), doc="Most bars per sample.")
    max_width = param.Number(0.2, bounds=(0, 1), doc="Widest bar as a fraction of the width.")

    def go(self, sample, **kwargs):
        sample.data = time_mask(sample.data, self.max_masks, self.max_width)
        return sample


@_builtin
class FrequencyMask(_Augmentation):
    """SpecAugment-style frequency masks (augmentation): zeroed horizontal bars."""

    max_masks = param.Integer(3, bounds=(0, None), doc="Most bars per sample.")
    max_width = param.Number(0.2, bounds=(0, 1), doc="Tallest bar as a fraction of the height.")

    def go(self, sample, **kwargs):
        sample.data = frequency_mask(sample.data, self.max_masks, self.max_width)
        return sample


@_builtin
class TensorAddNoise(_Augmentation):
    """Gaussian noise on the tensor (augmentation)."""

    std = param.Number(0.005, bounds=(0, None), doc="Standard deviation of the noise (tensor units).")

    def go(self, sample, **kwargs):
        sample.data = tensor_add_noise(sample.data, self.std)
        return sample


@_builtin
class ScaleTensor(BaseAction):
    """Normalise: ``(x - input_mean) / input_std`` (0..1 becomes -1..1 with the defaults)."""

    input_mean = param.Number(0.5, doc="Subtracted.")
    input_std = param.Number(0.5, doc="Divided by (not 0).")

    def go(self, sample, **kwargs):
        sample.data = scale_tensor(sample.data, self.input_mean, self.input_std)
        return sample


@_builtin
class RandomAffine(_Augmentation):
    """Random rotation and shift of the image (augmentation); apply after normalisation so fill=0 is mid-grey."""

    degrees = param.Number(0.0, bounds=(0, 180), doc="Largest rotation (degrees).")
    translate = param.NumericTuple((0.3, 0.1), length=2, doc="Largest shift as fraction of (width, height).")
    fill = param.Number(0.0, doc="Value of pixels shifted in.")

    def go(self, sample, **kwargs):
        sample.data = torch_random_affine(sample.data, self.degrees, tuple(self.translate), self.fill)
        return sample


# ------------------------------------------------------------------------ overlay
def _overlay_candidates(overlay_df, labels, overlay_class):
    if overlay_class is None:
        return overlay_df
    if overlay_class == "different":
        if labels is None:
            raise ValueError("overlay_class='different' needs labelled samples")
        positive = [c for c in labels.index if float(labels[c]) == 1 and c in overlay_df.columns]
        if not positive:
            return overlay_df
        return overlay_df[(overlay_df[positive] != 1).all(axis=1)]
    if overlay_class not in overlay_df.columns:
        raise ValueError(f"overlay_class {overlay_class!r} is not a column of overlay_df {list(overlay_df.columns)}")
    return overlay_df[overlay_df[overlay_class] == 1]


def overlay(sample, overlay_df, update_labels, overlay_class=None, overlay_prob=1, max_overlay_num=1,
            overlay_weight=0.5, preprocessor=None, break_on_key="overlay", bypass_augmentations=False):
    """Blend background clips from ``overlay_df`` into a preprocessed sample.

    Each round happens with probability ``overlay_prob``, up to
    ``max_overlay_num`` rounds (0.5 and 2: half the samples get one overlay, a
    quarter two). A background clip is drawn from ``overlay_df``, run through
    ``preprocessor`` up to the step ``break_on_key``, and mixed as
    ``(1 - w) * sample + w * background``.

    Parameters
    ----------
    sample : AudioSample
        ``data`` is the tensor so far; ``labels`` are used by
        ``overlay_class="different"`` and ``update_labels``.
    overlay_df : pd.DataFrame
        Background clips: index of file paths or (file, start_time, end_time);
        optional 0/1 class columns.
    update_labels : bool
        Set the sample's labels to the union with the background's.
    overlay_class : None, "different" or str
        None draws from any row, "different" only from rows sharing no
        positive label with the sample, a class name only from rows positive
        for that class.
    overlay_prob : float
        Probability of each round.
    max_overlay_num : int
        Most rounds.
    overlay_weight : float or [min, max]
        Weight ``w`` of the background in [0, 1], or a range it is drawn from
        uniformly; below 0.5 favours the original.
    preprocessor : BasePreprocessor, optional
        Pipeline that makes the background comparable; default
        ``sample.preprocessor``.
    break_on_key : str
        The background stops before this step (the overlay's own name).
    bypass_augmentations : bool
        Preprocess the backgrounds without augmentations.

    Returns
    -------
    AudioSample
        The same sample, ``data`` (and possibly ``labels``) updated.
    """
    preprocessor = preprocessor if preprocessor is not None else getattr(sample, "preprocessor", None)
    if overlay_df is None or len(overlay_df) == 0:
        raise ValueError("overlay needs a non-empty overlay_df")
    if preprocessor is None:
        raise ValueError("overlay must run inside a preprocessor (it preprocesses the background clips)")
    for w in (overlay_weight if isinstance(overlay_weight, (list, tuple)) else [overlay_weight]):
        if not 0 <= float(w) <= 1:
            raise ValueError(f"overlay_weight must be in [0, 1], got {overlay_weight}")
    candidates = _overlay_candidates(overlay_df, sample.labels, overlay_class)
    if len(candidates) == 0:
        raise ValueError(f"no overlay_df rows match overlay_class={overlay_class!r} for {sample.source}")
    for _ in range(max_overlay_num):
        if _rand() >= overlay_prob:
            break
        row = candidates.iloc[int(torch.randint(0, len(candidates), (1,)).item())]
        background = preprocessor.forward(AudioSample.from_series(row), break_on_key=break_on_key,
                                          bypass_augmentations=bypass_augmentations)
        if background.data.shape != sample.data.shape:
            raise PreprocessingError(f"overlay {background.source} gives shape {tuple(background.data.shape)}, "
                                     f"sample has {tuple(sample.data.shape)}")
        w = _uniform(overlay_weight)
        sample.data = sample.data * (1 - w) + background.data * w
        if update_labels and sample.labels is not None:
            cols = [c for c in sample.labels.index if c in row.index]
            union = sample.labels.astype(float).copy()
            union[cols] = np.maximum(union[cols].to_numpy(), row[cols].astype(float).to_numpy())
            sample.labels = union
    return sample


@_builtin
class Overlay(_Augmentation):
    """Mix background clips from ``overlay_df`` into the sample (augmentation; see :func:`overlay`)."""

    overlay_df = param.DataFrame(None, allow_None=True, doc="Background clips (index: file or file/start_time/end_time).")
    update_labels = param.Boolean(False, doc="Add the background's positive labels to the sample.")
    overlay_class = param.String(None, allow_None=True, doc="None, 'different' or a class name.")
    overlay_prob = param.Number(1.0, bounds=(0, 1), doc="Probability of each overlay round.")
    max_overlay_num = param.Integer(1, bounds=(0, None), doc="Most overlays per sample.")
    overlay_weight = param.Parameter(0.5, doc="Weight of the background in (0, 1), or [min, max] for a random weight.")
    requires_labels = True

    def go(self, sample, preprocessor=None, key="overlay", **kwargs):
        return overlay(sample, self.overlay_df, self.update_labels, self.overlay_class, self.overlay_prob,
                       self.max_overlay_num, self.overlay_weight, preprocessor=preprocessor, break_on_key=key,
                       bypass_augmentations=kwargs.get("bypass_augmentations", False))


# Pure transformations a configuration may wrap in Action (OpenSoundscape's pipelines do).
# Nothing here reads or writes files beyond the sample, or runs other code.
for _fn in (tensor_augment.freq_mask, tensor_augment.time_mask, img_augment.time_split,
            Audio.trim, Audio.extend_to, Audio.loop, Audio.resample, Audio.bandpass, Audio.lowpass,
            Audio.highpass, Audio.normalize, Audio.apply_gain,
            Spectrogram.from_audio, MelSpectrogram.from_audio, Spectrogram.bandpass, Spectrogram.trim,
            Spectrogram.limit_range, Spectrogram.limit_db_range, Spectrogram.linear_scale,
            Spectrogram.min_max_scale, Spectrogram.to_image):
    _builtin(_fn)
del _fn
