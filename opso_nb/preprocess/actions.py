"""Actions: the named, tunable steps of a preprocessing pipeline.

Each Action is a :class:`param.Parameterized`, so ``pn.Param(action)`` renders a
widget per parameter. Every Action has ``bypass`` (skip it) and
``is_augmentation`` (skipped when augmentations are switched off, e.g. for
validation and prediction). ``go(sample)`` replaces ``sample.data`` with the
step's output.

Randomness comes only from torch's global generator, so ``torch.manual_seed``
makes a whole pipeline (overlay included) reproducible, and DataLoader workers
get distinct streams automatically.
"""
from __future__ import annotations

import importlib
import inspect

import numpy as np
import pandas as pd
import param
import torch

from opso_nb.preprocess.utils import PreprocessingError

#: Action classes by name, used to rebuild pipelines from saved configs (no pickles).
ACTION_REGISTRY: dict[str, type] = {}


def register_action(cls):
    """Class decorator: make ``cls`` rebuildable by name from a saved config."""
    ACTION_REGISTRY[cls.__name__] = cls
    return cls


def _rand():
    return float(torch.rand(1).item())


def _uniform(value):
    """A number, or a uniform draw from a (min, max) pair."""
    if isinstance(value, (tuple, list)):
        lo, hi = float(value[0]), float(value[1])
        return lo + (hi - lo) * _rand()
    return float(value)


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
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


class BaseAction(param.Parameterized):
    """Parent of all Actions: a pipeline step with tunable parameters.

    Subclasses declare their parameters as ``param`` attributes and implement
    :meth:`go`.
    """

    bypass = param.Boolean(False, doc="Skip this step.")
    is_augmentation = param.Boolean(False, doc="Random augmentation: skipped when augmentations are bypassed.")

    #: parameters that are bookkeeping, not the step's own settings
    _meta = ("name", "bypass", "is_augmentation")

    def go(self, sample, **kwargs):
        """Replace ``sample.data`` by this step's output (in place)."""
        raise NotImplementedError

    def __call__(self, sample, **kwargs):
        return self.go(sample, **kwargs)

    def on(self):
        """Stop bypassing this step."""
        self.bypass = False

    def off(self):
        """Bypass this step."""
        self.bypass = True

    def set(self, **kwargs):
        """Change parameters; unknown names raise ``ValueError`` (catches typos)."""
        unknown = [k for k in kwargs if k not in self.param]
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter(s) {unknown}; it has {list(self.params.index)}")
        self.param.update(**kwargs)

    @property
    def params(self) -> pd.Series:
        """The step's own parameters (name -> value)."""
        return pd.Series({k: v for k, v in self.param.values().items() if k not in self._meta}, dtype=object)

    def to_dict(self) -> dict:
        """JSON-friendly description: class name, parameters, bypass, is_augmentation."""
        return {"class": type(self).__name__, "bypass": bool(self.bypass),
                "is_augmentation": bool(self.is_augmentation),
                "params": {k: _jsonable(v) for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "BaseAction":
        params = {k: _unjson(v) for k, v in d.get("params", {}).items()}
        for k, v in list(params.items()):
            p = cls.param[k] if k in cls.param else None
            if isinstance(p, (param.NumericTuple, param.Tuple)) and isinstance(v, list):
                params[k] = tuple(v)
        return cls(bypass=d.get("bypass", False), is_augmentation=d.get("is_augmentation", False), **params)

    def __repr__(self):
        kind = "Augmentation Action" if self.is_augmentation else "Action"
        bypassed = " ## Bypassed ##" if self.bypass else ""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if not isinstance(v, pd.DataFrame))
        return f"{kind} {type(self).__name__}({args}){bypassed}"

    __str__ = __repr__


@register_action
class Action(BaseAction):
    """Wrap any function ``fn(data, **kwargs)`` (or unbound method) as a pipeline step.

    Parameters
    ----------
    fn : callable
        Called as ``fn(sample.data, **kwargs)``; its result becomes ``sample.data``.
    is_augmentation : bool
    **kwargs
        Parameters passed to ``fn``; editable via :meth:`set` or ``.kwargs``.

    Saved configs store ``fn`` as ``"module:qualname"``, so only importable
    functions survive a save/load round trip (lambdas do not).
    """

    def __init__(self, fn, is_augmentation=False, bypass=False, **kwargs):
        super().__init__(is_augmentation=is_augmentation, bypass=bypass)
        if isinstance(fn, str):
            module, _, qualname = fn.partition(":")
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            fn = obj
        self.fn = fn
        self.kwargs = dict(kwargs)

    def go(self, sample, **kwargs):
        sample.data = self.fn(sample.data, **self.kwargs)
        return sample

    def set(self, **kwargs):
        self.kwargs.update(kwargs)

    @property
    def params(self):
        return pd.Series(self.kwargs, dtype=object)

    def to_dict(self):
        name = f"{self.fn.__module__}:{self.fn.__qualname__}"
        if "<lambda>" in name or "<locals>" in name:
            raise ValueError(f"Action wraps {name}, which cannot be saved; use a module-level function")
        return {"class": "Action", "fn": name, "bypass": bool(self.bypass),
                "is_augmentation": bool(self.is_augmentation),
                "params": {k: _jsonable(v) for k, v in self.kwargs.items()}}

    @classmethod
    def from_dict(cls, d):
        return cls(d["fn"], is_augmentation=d.get("is_augmentation", False), bypass=d.get("bypass", False),
                   **{k: _unjson(v) for k, v in d.get("params", {}).items()})

    def __repr__(self):
        kind = "Augmentation Action" if self.is_augmentation else "Action"
        return f"{kind} calling {getattr(self.fn, '__qualname__', self.fn)}" + (" ## Bypassed ##" if self.bypass else "")

    __str__ = __repr__


# ------------------------------------------------------------------- audio steps
@register_action
class AudioClipLoader(BaseAction):
    """Load the sample's clip (only that segment of the file) as :class:`~opso_nb.audio.Audio`.

    A clip running past the end of the file returns the part that exists (the
    trim step pads it); a clip starting past the end is an error.
    """

    sample_rate = param.Integer(None, allow_None=True, bounds=(1, None), doc="Resample to this rate (Hz); None keeps the file's.")
    resample_type = param.String("soxr_hq", doc="Resampler name (see Audio).")

    def go(self, sample, **kwargs):
        from opso_nb.audio import Audio

        sample.data = Audio.from_file(sample.source, sample_rate=self.sample_rate, resample_type=self.resample_type,
                                      offset=sample.start_time or 0.0, duration=sample.duration,
                                      out_of_bounds_mode="ignore", load_metadata=False)
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


@register_action
class AudioTrim(BaseAction):
    """Trim/pad the audio to the preprocessor's ``sample_duration`` (see :func:`trim_audio`)."""

    extend = param.Boolean(True, doc="Pad short clips with silence to sample_duration.")
    random_trim = param.Boolean(False, doc="Random window position in longer clips (augmentation).")
    tol = param.Number(1e-5, bounds=(0, None), doc="Ignore length differences below this (s).")

    def go(self, sample, **kwargs):
        return trim_audio(sample, extend=self.extend, random_trim=self.random_trim, tol=self.tol)


def audio_add_noise(audio, noise_dB=-30, signal_dB=0, color="white"):
    """Scale the signal to ``signal_dB`` and add noise at ``noise_dB`` (dBFS; numbers or (min, max))."""
    from opso_nb.audio import Audio, mix

    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    noise = Audio.noise(audio.duration, audio.sample_rate, color=color, dBFS=_uniform(noise_dB), seed=seed)
    noise = noise._new(noise.samples[: audio.n_samples])
    return mix([audio.apply_gain(_uniform(signal_dB)), noise], duration=audio.duration, gain=0)


@register_action
class AudioAddNoise(BaseAction):
    """Add coloured noise to the audio (augmentation)."""

    noise_dB = param.Parameter(-30, doc="Noise level (dBFS), or (min, max) for a random level.")
    signal_dB = param.Parameter(0, doc="Gain applied to the signal (dB), or (min, max).")
    color = param.Selector(default="white", objects=["white", "pink", "brown", "blue", "violet"])

    def __init__(self, **params):
        params.setdefault("is_augmentation", True)
        super().__init__(**params)

    def go(self, sample, **kwargs):
        sample.data = audio_add_noise(sample.data, self.noise_dB, self.signal_dB, self.color)
        return sample


def audio_random_gain(audio, dB_range=(-30, 0), clip_range=(-1, 1)):
    """Apply a gain drawn uniformly from ``dB_range`` (dB)."""
    return audio.apply_gain(_uniform(dB_range), clip_range=clip_range)


@register_action
class AudioRandomGain(BaseAction):
    """Random gain (augmentation)."""

    dB_range = param.NumericTuple((-30, 0), length=2, doc="(min, max) gain in dB.")

    def __init__(self, **params):
        params.setdefault("is_augmentation", True)
        super().__init__(**params)

    def go(self, sample, **kwargs):
        sample.data = audio_random_gain(sample.data, self.dB_range)
        return sample


# ------------------------------------------------------------- spectrogram steps
@register_action
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

    def go(self, sample, **kwargs):
        from opso_nb.spectrogram import MelSpectrogram, Spectrogram

        kw = dict(window_type=self.window_type, window_samples=self.window_samples,
                  window_length_sec=self.window_length_sec, overlap_samples=self.overlap_samples,
                  overlap_fraction=self.overlap_fraction, fft_size=self.fft_size,
                  decibel_limits=tuple(self.decibel_limits), dB_scale=self.dB_scale, scaling=self.scaling)
        if self.window_samples is not None and self.overlap_samples is None and self.overlap_fraction is None:
            kw["overlap_fraction"] = 0.5
        if self.mel:
            sample.data = MelSpectrogram.from_audio(sample.data, n_mels=self.n_mels, **kw)
        else:
            sample.data = Spectrogram.from_audio(sample.data, **kw)
        return sample


@register_action
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


@register_action
class SpectrogramToTensor(BaseAction):
    """Spectrogram -> float32 tensor ``[channels, height, width]`` in [0, 1].

    ``invert=True`` (default) maps loud to 1 and silence to 0, the convention the
    networks learn with; low frequencies are at the bottom row.
    """

    height = param.Integer(None, allow_None=True, bounds=(1, None), doc="Output rows (pixels); None keeps the frequency bins.")
    width = param.Integer(None, allow_None=True, bounds=(1, None), doc="Output columns (pixels); None keeps the time windows.")
    channels = param.Integer(1, bounds=(1, 4), doc="Channels (copies of the image, or RGB with a colormap).")
    colormap = param.String(None, allow_None=True, doc="Matplotlib colormap (needs channels=3).")
    invert = param.Boolean(True, doc="Loud = 1 (True) or loud = 0 (False).")

    def go(self, sample, **kwargs):
        spec = sample.data
        h = self.height or spec.spectrogram.shape[0]
        w = self.width or spec.spectrogram.shape[1]
        shape = None if (h, w) == tuple(spec.spectrogram.shape) else (h, w)
        t = spec.to_image(shape=shape, channels=self.channels, colormap=self.colormap, invert=self.invert,
                          return_type="torch")
        sample.data = t.to(torch.float32).contiguous()
        return sample


# ------------------------------------------------------------------ tensor steps
def time_mask(tensor, max_masks=3, max_width=0.2):
    """Zero up to ``max_masks`` vertical bars, each up to ``max_width`` x width columns wide."""
    tensor = tensor.clone()
    width = tensor.shape[-1]
    n = int(torch.randint(0, max_masks + 1, (1,)).item())
    for _ in range(n):
        w = int(_rand() * max_width * width)
        if w <= 0:
            continue
        start = int(torch.randint(0, max(1, width - w + 1), (1,)).item())
        tensor[..., start:start + w] = 0
    return tensor


def frequency_mask(tensor, max_masks=3, max_width=0.2):
    """Zero up to ``max_masks`` horizontal bars, each up to ``max_width`` x height rows tall."""
    tensor = tensor.clone()
    height = tensor.shape[-2]
    n = int(torch.randint(0, max_masks + 1, (1,)).item())
    for _ in range(n):
        w = int(_rand() * max_width * height)
        if w <= 0:
            continue
        start = int(torch.randint(0, max(1, height - w + 1), (1,)).item())
        tensor[..., start:start + w, :] = 0
    return tensor


def tensor_add_noise(tensor, std=1.0):
    """Add Gaussian noise with standard deviation ``std``."""
    return tensor + torch.randn_like(tensor) * std


def scale_tensor(tensor, input_mean=0.5, input_std=0.5):
    """``(tensor - input_mean) / input_std``: fixed, dataset-wide normalisation (not per image)."""
    if input_std == 0:
        raise ValueError("input_std must not be 0")
    return (tensor - input_mean) / input_std


def torch_random_affine(tensor, degrees=0, translate=(0.3, 0.1), fill=0):
    """Random rotation (+-``degrees``) and shift (fraction of width, height); empty pixels get ``fill``."""
    import torchvision.transforms.functional as F

    h, w = tensor.shape[-2:]
    angle = (2 * _rand() - 1) * degrees
    tx = int(round((2 * _rand() - 1) * translate[0] * w))
    ty = int(round((2 * _rand() - 1) * translate[1] * h))
    return F.affine(tensor, angle=angle, translate=[tx, ty], scale=1.0, shear=[0.0, 0.0], fill=[float(fill)] * tensor.shape[0])


def torch_color_jitter(tensor, brightness=0.3, contrast=0.3, saturation=0.3, hue=0):
    """torchvision ColorJitter on a [C, H, W] tensor."""
    import torchvision.transforms as T

    return T.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)(tensor)


@register_action
class TimeMask(BaseAction):
    """SpecAugment-style time masks (augmentation): zeroed vertical bars."""

    max_masks = param.Integer(3, bounds=(0, None), doc="Most bars per sample.")
    max_width = param.Number(0.2, bounds=(0, 1), doc="Widest bar as a fraction of the width.")

    def __init__(self, **params):
        params.setdefault("is_augmentation", True)
        super().__init__(**params)

    def go(self, sample, **kwargs):
        sample.data = time_mask(sample.data, self.max_masks, self.max_width)
        return sample


@register_action
class FrequencyMask(BaseAction):
    """SpecAugment-style frequency masks (augmentation): zeroed horizontal bars."""

    max_masks = param.Integer(3, bounds=(0, None), doc="Most bars per sample.")
    max_width = param.Number(0.2, bounds=(0, 1), doc="Tallest bar as a fraction of the height.")

    def __init__(self, **params):
        params.setdefault("is_augmentation", True)
        super().__init__(**params)

    def go(self, sample, **kwargs):
        sample.data = frequency_mask(sample.data, self.max_masks, self.max_width)
        return sample


@register_action
class TensorAddNoise(BaseAction):
    """Gaussian noise on the tensor (augmentation)."""

    std = param.Number(0.005, bounds=(0, None), doc="Standard deviation of the noise (tensor units).")

    def __init__(self, **params):
        params.setdefault("is_augmentation", True)
        super().__init__(**params)

    def go(self, sample, **kwargs):
        sample.data = tensor_add_noise(sample.data, self.std)
        return sample


@register_action
class ScaleTensor(BaseAction):
    """Normalise: ``(x - input_mean) / input_std`` (0..1 becomes -1..1 with the defaults)."""

    input_mean = param.Number(0.5, doc="Subtracted.")
    input_std = param.Number(0.5, doc="Divided by (not 0).")

    def go(self, sample, **kwargs):
        sample.data = scale_tensor(sample.data, self.input_mean, self.input_std)
        return sample


@register_action
class RandomAffine(BaseAction):
    """Random rotation and shift of the image (augmentation); apply after normalisation so fill=0 is mid-grey."""

    degrees = param.Number(0.0, bounds=(0, 180), doc="Largest rotation (degrees).")
    translate = param.NumericTuple((0.3, 0.1), length=2, doc="Largest shift as fraction of (width, height).")
    fill = param.Number(0.0, doc="Value of pixels shifted in.")

    def __init__(self, **params):
        params.setdefault("is_augmentation", True)
        super().__init__(**params)

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


@register_action
class Overlay(BaseAction):
    """Mix background clips from ``overlay_df`` into the sample (augmentation).

    Each round happens with probability ``overlay_prob``, up to
    ``max_overlay_num`` rounds (0.5 and 2: half the samples get one overlay, a
    quarter two). A background clip is drawn from ``overlay_df`` (index: file
    paths, or (file, start_time, end_time) clips; optional 0/1 class columns),
    preprocessed by the same pipeline up to this step, and mixed as
    ``(1 - w) * sample + w * background``; ``w`` is ``overlay_weight`` or a
    uniform draw from a [min, max] pair (w < 0.5 favours the original).

    ``overlay_class``: None draws from any row, ``"different"`` only from rows
    sharing no positive label with the sample, a class name only from rows
    positive for that class. ``update_labels`` sets the sample's labels to the
    union with the background's.
    """

    overlay_df = param.DataFrame(None, allow_None=True, doc="Background clips (index: file or file/start_time/end_time).")
    update_labels = param.Boolean(False, doc="Add the background's positive labels to the sample.")
    overlay_class = param.String(None, allow_None=True, doc="None, 'different' or a class name.")
    overlay_prob = param.Number(1.0, bounds=(0, 1), doc="Probability of each overlay round.")
    max_overlay_num = param.Integer(1, bounds=(0, None), doc="Most overlays per sample.")
    overlay_weight = param.Parameter(0.5, doc="Weight of the background in (0, 1), or [min, max] for a random weight.")

    def __init__(self, **params):
        params.setdefault("is_augmentation", True)
        super().__init__(**params)

    def go(self, sample, preprocessor=None, key="overlay", **kwargs):
        from opso_nb.sample import AudioSample

        if self.overlay_df is None or len(self.overlay_df) == 0:
            raise ValueError("Overlay needs a non-empty overlay_df")
        if preprocessor is None:
            raise ValueError("Overlay must run inside a preprocessor (it preprocesses the background clips)")
        w_spec = self.overlay_weight
        for w in (w_spec if isinstance(w_spec, (list, tuple)) else [w_spec]):
            if not 0 <= float(w) <= 1:
                raise ValueError(f"overlay_weight must be in [0, 1], got {w_spec}")
        candidates = _overlay_candidates(self.overlay_df, sample.labels, self.overlay_class)
        if len(candidates) == 0:
            raise ValueError(f"no overlay_df rows match overlay_class={self.overlay_class!r} for {sample.source}")
        for _ in range(self.max_overlay_num):
            if _rand() >= self.overlay_prob:
                break
            i = int(torch.randint(0, len(candidates), (1,)).item())
            row = candidates.iloc[i]
            bg = AudioSample.from_series(row)
            bg = preprocessor.forward(bg, break_on_key=key, bypass_augmentations=kwargs.get("bypass_augmentations", False))
            if bg.data.shape != sample.data.shape:
                raise PreprocessingError(
                    f"overlay {bg.source} gives shape {tuple(bg.data.shape)}, sample has {tuple(sample.data.shape)}")
            w = _uniform(w_spec)
            sample.data = sample.data * (1 - w) + bg.data * w
            if self.update_labels and sample.labels is not None:
                cols = [c for c in sample.labels.index if c in row.index]
                union = sample.labels.astype(float).copy()
                union[cols] = np.maximum(union[cols].to_numpy(), row[cols].astype(float).to_numpy())
                sample.labels = union
        return sample


def get_args(func):
    """Names and defaults of ``func``'s keyword parameters (first parameter excluded)."""
    sig = inspect.signature(func)
    return {k: v.default for k, v in list(sig.parameters.items())[1:]}
