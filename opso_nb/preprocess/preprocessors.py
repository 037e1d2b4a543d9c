"""Preprocessors: an ordered, editable pipeline of Actions that turns a clip into a tensor.

>>> pre = SpectrogramPreprocessor(sample_duration=2.0, height=128, width=128)   # doctest: +SKIP
>>> pre.pipeline["bandpass"].set(min_f=1000, max_f=8000)                          # doctest: +SKIP
>>> sample = pre.forward(("song.wav", 0.0, 2.0), bypass_augmentations=True)       # doctest: +SKIP
>>> sample.data.shape                                                             # doctest: +SKIP
torch.Size([1, 128, 128])

Configurations are saved as versioned JSON (:meth:`BasePreprocessor.save`,
:func:`load_preprocessor`), never as pickles. Loading one runs no code: it may
name only registered preprocessor classes, action classes and functions
(opso_nb's own and those registered by the user's code; see
:func:`~opso_nb.preprocess.actions.register_action` and
:func:`register_preprocessor`).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import param
import torch

from opso_nb.preprocess import actions
from opso_nb.preprocess.actions import ACTION_REGISTRY, BaseAction
from opso_nb.preprocess.utils import PreprocessingError, Registry, UnregisteredActionError
from opso_nb.sample import AudioSample
from opso_nb.utils import atomic_write

__all__ = ["BasePreprocessor", "Preprocessor", "SpectrogramPreprocessor", "AudioPreprocessor", "PreprocessingError",
           "UnregisteredActionError", "preprocessor_from_dict", "load_preprocessor", "register_preprocessor",
           "preview_samples", "CONFIG_VERSION"]

#: Identifies saved preprocessor configs and their layout version. Version 2: ``SpectrogramToTensor.invert``
#: follows OpenSoundscape (False = loud is 1); version-1 files stored the opposite and are translated on load.
CONFIG_FORMAT = "opso_nb.preprocessor"
CONFIG_VERSION = 2

#: Preprocessor classes a saved configuration may name, by class name.
PREPROCESSOR_REGISTRY = Registry("preprocessor class")


def register_preprocessor(cls):
    """Allow saved configurations to name the preprocessor class ``cls`` (a decorator).

    A saved configuration records the pipeline itself, so a subclass is
    rebuilt without calling its ``__init__``: its pipeline, parameters and
    ``sample_duration`` come from the configuration.
    """
    if not (isinstance(cls, type) and issubclass(cls, BasePreprocessor)):
        raise TypeError(f"register_preprocessor takes a BasePreprocessor subclass, got {cls!r}")
    return PREPROCESSOR_REGISTRY.add(cls.__name__, cls)


def _builtin(cls):
    return PREPROCESSOR_REGISTRY.add(cls.__name__, cls, builtin=True)


def _as_sample(sample) -> AudioSample:
    if isinstance(sample, AudioSample):
        return sample
    if isinstance(sample, pd.Series):
        return AudioSample.from_series(sample)
    if isinstance(sample, tuple):
        if len(sample) != 3:
            raise ValueError(f"a clip tuple must be (file, start_time, end_time), got {sample!r}")
        return AudioSample(sample[0], float(sample[1]), float(sample[2]) - float(sample[1]))
    if isinstance(sample, (str, Path)):
        return AudioSample(sample)
    raise TypeError(f"cannot preprocess a {type(sample).__name__}; give an AudioSample, clip-table row, "
                    "(file, start_time, end_time) tuple or a path")


@_builtin
class BasePreprocessor(param.Parameterized):
    """A pipeline (``pd.Series`` name -> Action) run in order by :meth:`forward`.

    Parameters
    ----------
    sample_duration : float, optional
        Length of the clips produced (s); None keeps each clip's own length.

    Attributes
    ----------
    pipeline : pd.Series
        Ordered Actions; edit with :meth:`insert_action`, :meth:`remove_action`,
        :meth:`reorder`, or ``pipeline[name].bypass = True``.
    bypass_augmentations : bool
        Skip every augmentation Action in :meth:`forward` (e.g. for prediction).
    """

    sample_duration = param.Number(None, allow_None=True, bounds=(0, None), inclusive_bounds=(False, True),
                                   doc="Clip length produced (s).")
    bypass_augmentations = param.Boolean(False, doc="Skip all augmentation steps.")

    def __init__(self, sample_duration=None, **params):
        super().__init__(sample_duration=None if sample_duration is None else float(sample_duration), **params)
        self.pipeline = pd.Series(dtype=object)

    # ------------------------------------------------------------- editing
    def insert_action(self, action_index, action, after_key=None, before_key=None):
        """Add ``action`` named ``action_index``; at the end, or after/before an existing step."""
        if not isinstance(action, BaseAction):
            raise TypeError(f"action must be an Action, got {type(action).__name__}")
        if action_index in self.pipeline.index:
            raise AssertionError(f"the pipeline already has a step named {action_index!r}")
        if after_key is not None and before_key is not None:
            raise ValueError("give after_key or before_key, not both")
        names = list(self.pipeline.index)
        if after_key is None and before_key is None:
            pos = len(names)
        else:
            key = after_key if after_key is not None else before_key
            if key not in names:
                raise KeyError(f"no step named {key!r} in the pipeline {names}")
            pos = names.index(key) + (1 if after_key is not None else 0)
        items = list(self.pipeline.items())
        items.insert(pos, (action_index, action))
        self.pipeline = pd.Series(dict(items), dtype=object)

    def remove_action(self, action_index):
        """Delete the step named ``action_index``."""
        if action_index not in self.pipeline.index:
            raise KeyError(f"no step named {action_index!r} in the pipeline {list(self.pipeline.index)}")
        self.pipeline = self.pipeline.drop(action_index)

    def reorder(self, names):
        """Put the steps in the order of ``names`` (which must list each step once)."""
        if sorted(names) != sorted(self.pipeline.index):
            raise ValueError(f"reorder needs every step exactly once: {list(self.pipeline.index)}")
        self.pipeline = self.pipeline[list(names)]

    # ------------------------------------------------------------- running
    def forward(self, sample, break_on_type=None, break_on_key=None, bypass_augmentations=False, trace=False):
        """Run the pipeline on one sample.

        Parameters
        ----------
        sample : AudioSample, pd.Series (clip-table row), (file, start_time, end_time) or path
        break_on_type : type, optional
            Stop before the first Action of this class.
        break_on_key : str, optional
            Stop before the step with this name.
        bypass_augmentations : bool
            Skip augmentation steps (also skipped when ``self.bypass_augmentations``).
        trace : bool
            Keep each step's output in ``sample.trace`` (pd.Series name -> output;
            bypassed steps hold None).

        Returns
        -------
        AudioSample
            With ``data`` the last step's output (a float32 tensor [C, H, W] for
            the full spectrogram pipeline).

        Raises
        ------
        PreprocessingError
            Naming the file, clip times, the failing step and the cause.
        """
        sample = _as_sample(sample)
        if sample.target_duration is None:
            sample.target_duration = self.sample_duration
        skip_aug = bypass_augmentations or self.bypass_augmentations
        if trace:
            sample.trace = pd.Series([None] * len(self.pipeline), index=self.pipeline.index, dtype=object)
        for key, action in self.pipeline.items():
            if break_on_key is not None and key == break_on_key:
                break
            if break_on_type is not None and isinstance(action, break_on_type):
                break
            if action.bypass or (action.is_augmentation and skip_aug):
                continue
            try:
                action.go(sample, preprocessor=self, key=key, bypass_augmentations=skip_aug)
            except Exception as err:
                where = f"{sample.source}"
                if sample.start_time is not None:
                    where += f" [{sample.start_time:g}-{sample.end_time if sample.end_time is not None else 'end'} s]"
                raise PreprocessingError(f"{where}: step {key!r} failed: {type(err).__name__}: {err}") from err
            if trace:
                data = sample.data
                sample.trace[key] = data.clone() if hasattr(data, "clone") else data
        return sample

    __call__ = forward

    # ------------------------------------------------------------- saving
    def _init_kwargs(self) -> dict:
        return {"sample_duration": self.sample_duration}

    def to_dict(self) -> dict:
        """Versioned, JSON-friendly description of this preprocessor and its whole pipeline.

        The class recorded is this one if registered, else its nearest
        registered parent (with a warning): the pipeline is saved either way.

        Raises
        ------
        ValueError
            A step wraps an action class or function that is not registered
            (a configuration could not name it).
        """
        steps = [{"name": str(k), **a.to_dict()} for k, a in self.pipeline.items()]
        saved_as = next(c for c in type(self).__mro__ if PREPROCESSOR_REGISTRY.get(c.__name__) is c)
        if saved_as is not type(self):
            warnings.warn(f"{type(self).__name__} is not registered: saved as {saved_as.__name__} with its pipeline; "
                          f"call register_preprocessor({type(self).__name__}) to keep the class", UserWarning,
                          stacklevel=2)
        return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, "class": saved_as.__name__,
                "init": self._init_kwargs(), "bypass_augmentations": bool(self.bypass_augmentations),
                "pipeline": steps}

    @classmethod
    def from_dict(cls, d: dict) -> "BasePreprocessor":
        """Rebuild a preprocessor saved by :meth:`to_dict` (any registered class)."""
        return preprocessor_from_dict(d)

    def save(self, path):
        """Write the config as JSON (atomically)."""
        text = json.dumps(self.to_dict(), indent=2)
        with atomic_write(path) as f:
            f.write(text)

    def __repr__(self):
        lines = [f"{type(self).__name__}(sample_duration={self.sample_duration})"]
        for k, a in self.pipeline.items():
            lines.append(f"  {k}: {a!r}")
        return "\n".join(lines)

    __str__ = __repr__

    def _repr_html_(self):
        return "<pre>" + repr(self).replace("<", "&lt;") + "</pre>"


Preprocessor = BasePreprocessor


@_builtin
class SpectrogramPreprocessor(BasePreprocessor):
    """Clip -> spectrogram -> tensor, with augmentations; the default for CNNs.

    Pipeline: ``load_audio`` -> ``random_trim_audio`` (aug) -> ``trim_audio`` ->
    ``to_spec`` -> ``bandpass`` (0-11025 Hz) -> ``to_tensor`` -> [``overlay``
    (aug, only with ``overlay_df``)] -> ``time_mask`` (aug) -> ``frequency_mask``
    (aug) -> ``add_noise`` (aug) -> ``rescale`` -> ``random_affine`` (aug).

    Parameters
    ----------
    sample_duration : float
        Clip length (s); longer clips are cut, shorter ones padded with silence.
    overlay_df : pd.DataFrame, optional
        Background clips for the ``overlay`` step (see :class:`~opso_nb.preprocess.actions.Overlay`).
    out_shape : (height, width, channels) or None
        Tensor shape, (224, 224, 3) by default as in OpenSoundscape; None keeps
        the spectrogram's own size with one channel.
    height, width, channels : int, optional
        Instead of ``out_shape``: when any of them is given, ``out_shape`` is
        not used; a missing height or width keeps the spectrogram's size and
        channels default to 1.
    sample_rate : int, optional
        Resample every clip to this rate (Hz); None keeps each file's.
    """

    def __init__(self, sample_duration=None, overlay_df=None, out_shape=(224, 224, 3), height=None, width=None,
                 channels=None, sample_rate=None, **params):
        super().__init__(sample_duration=sample_duration, **params)
        if height is None and width is None and channels is None:
            height, width, channels = (None, None, 1) if out_shape is None else out_shape
        height, width = (None if v is None else int(v) for v in (height, width))
        channels = 1 if channels is None else int(channels)
        a = actions
        steps = [
            ("load_audio", a.AudioClipLoader(sample_rate=sample_rate)),
            ("random_trim_audio", a.AudioTrim(random_trim=True, is_augmentation=True)),
            ("trim_audio", a.AudioTrim()),
            ("to_spec", a.SpectrogramAction()),
            ("bandpass", a.SpectrogramBandpass(min_f=0, max_f=11025)),
            ("to_tensor", a.SpectrogramToTensor(height=height, width=width, channels=channels)),
        ]
        if overlay_df is not None:
            steps.append(("overlay", a.Overlay(overlay_df=overlay_df)))
        steps += [
            ("time_mask", a.TimeMask()),
            ("frequency_mask", a.FrequencyMask()),
            ("add_noise", a.TensorAddNoise()),
            ("rescale", a.ScaleTensor()),
            ("random_affine", a.RandomAffine()),
        ]
        self.pipeline = pd.Series(dict(steps), dtype=object)

    @property
    def out_shape(self):
        """(height, width, channels) of the tensor (read from the ``to_tensor`` step)."""
        t = self.pipeline["to_tensor"]
        return (t.height, t.width, t.channels)

    @out_shape.setter
    def out_shape(self, shape):
        h, w, c = shape
        self.pipeline["to_tensor"].set(height=None if h is None else int(h), width=None if w is None else int(w),
                                       channels=int(c))

    @property
    def height(self):
        return self.pipeline["to_tensor"].height

    @property
    def width(self):
        return self.pipeline["to_tensor"].width

    @property
    def channels(self):
        return self.pipeline["to_tensor"].channels

    @property
    def sample_rate(self):
        return self.pipeline["load_audio"].sample_rate


@_builtin
class AudioPreprocessor(BasePreprocessor):
    """Clip -> waveform tensor ``[n_samples]``: for models that read samples (e.g. BirdNET).

    Pipeline: ``load_audio`` (only the clip's segment, mixed to mono,
    resampled to ``sample_rate``) -> ``trim_audio`` (cut to, or padded with
    silence at the end to, ``sample_duration``) -> ``to_tensor``.

    Parameters
    ----------
    sample_duration : float
        Clip length (s).
    sample_rate : int, optional
        Resample every clip to this rate (Hz); None keeps each file's.
    extend_short_clips : bool
        Pad clips shorter than ``sample_duration`` with silence (else they are an error).
    """

    def __init__(self, sample_duration=None, sample_rate=None, extend_short_clips=True, **params):
        super().__init__(sample_duration=sample_duration, **params)
        self.pipeline = pd.Series({"load_audio": actions.AudioClipLoader(sample_rate=sample_rate),
                                   "trim_audio": actions.AudioTrim(extend=bool(extend_short_clips)),
                                   "to_tensor": actions.AudioToTensor()}, dtype=object)

    @property
    def sample_rate(self):
        return self.pipeline["load_audio"].sample_rate


# aliases used loosely in the OpenSoundscape tutorials
SpecPreprocessor = SpectrogramPreprocessor
AudioToSpectrogramPreprocessor = SpectrogramPreprocessor


def preprocessor_from_dict(d: dict) -> BasePreprocessor:
    """Rebuild a preprocessor from :meth:`BasePreprocessor.to_dict` output.

    Only registered classes and functions are used (see the module notes):
    the whole configuration is checked before any of it is built, and nothing
    is imported or run on its behalf.

    Raises
    ------
    UnregisteredActionError
        A step names an action class or function that is not registered
        (the message names the step).
    ValueError
        Configs of another format or a newer version, unknown preprocessor
        classes, malformed steps.
    """
    if not isinstance(d, dict) or d.get("format") != CONFIG_FORMAT:
        raise ValueError(f"not an opso_nb preprocessor config (expected format {CONFIG_FORMAT!r})")
    version = d.get("version")
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ValueError(f"preprocessor config version {version!r} is not supported (this opso_nb reads <= {CONFIG_VERSION})")
    cls = PREPROCESSOR_REGISTRY.lookup(d.get("class"))
    init = d.get("init") or {}
    if not isinstance(init, dict) or set(init) - {"sample_duration"}:
        raise ValueError(f"preprocessor config 'init' may only hold sample_duration, got {init!r}")
    pipeline = d.get("pipeline")
    if not isinstance(pipeline, list):
        raise ValueError("preprocessor config has no 'pipeline' list of steps")
    # resolve every name first: a refused step must stop the load before any step is built
    resolved = []
    for i, step in enumerate(pipeline):
        where = f"pipeline step {i}"
        if not isinstance(step, dict) or not isinstance(step.get("name"), str):
            raise ValueError(f"{where}: expected an object with a 'name', got {step!r}")
        where += f" ({step['name']!r})"
        try:
            action_cls = ACTION_REGISTRY.lookup(step.get("class"))
            if action_cls is actions.Action:
                actions.FUNCTION_REGISTRY.lookup(step.get("fn"))
        except UnregisteredActionError as err:
            raise UnregisteredActionError(f"{where}: {err}") from None
        if version < 2 and action_cls is actions.SpectrogramToTensor:
            params = dict(step.get("params") or {})
            params["invert"] = not params.get("invert", True)
            step = {**step, "params": params}
        resolved.append((where, step, action_cls))
    pre = BasePreprocessor.__new__(cls)
    BasePreprocessor.__init__(pre, **init)
    pre.bypass_augmentations = bool(d.get("bypass_augmentations", False))
    steps = {}
    for where, step, action_cls in resolved:
        if step["name"] in steps:
            raise ValueError(f"{where}: a step of that name comes earlier in the pipeline")
        try:
            steps[step["name"]] = action_cls.from_dict(step)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from err
    pre.pipeline = pd.Series(steps, dtype=object)
    return pre


def load_preprocessor(path) -> BasePreprocessor:
    """Read a preprocessor saved with :meth:`BasePreprocessor.save` (JSON), or the one inside a model config.

    Raises
    ------
    UnregisteredActionError
        The file names an action class or function that is not registered.
    ValueError
        Not JSON, or not a preprocessor configuration (the message names the file).
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a JSON preprocessor config ({err})") from err
    if isinstance(d, dict) and d.get("format") != CONFIG_FORMAT and isinstance(d.get("preprocessor"), dict):
        d = d["preprocessor"]  # a model config embedding a preprocessor
    try:
        return preprocessor_from_dict(d)
    except ValueError as err:  # name the file; keep the refusal's type
        kind = UnregisteredActionError if isinstance(err, UnregisteredActionError) else ValueError
        raise kind(f"{path}: {err}") from err


def preview_samples(preprocessor, clips, n=6, seed=0, bypass_augmentations=False):
    """Preprocess the first ``n`` clips of a table with a fixed random seed (for grids and dashboards).

    Parameters
    ----------
    preprocessor : BasePreprocessor
    clips : pd.DataFrame
        Clip table indexed (file, start_time, end_time), label columns optional.
    n : int
        Number of clips (the first ``n`` rows).
    seed : int
        Seed of torch's generator for the augmentations; the same seed redraws
        the same augmentations, a new one draws new ones.
    bypass_augmentations : bool

    Returns
    -------
    list of AudioSample or PreprocessingError
        One per clip; a clip that fails gives its error instead of a sample.
    """
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    out = []
    try:
        for i in range(min(n, len(clips))):
            row = clips.iloc[i]
            try:
                out.append(preprocessor.forward(AudioSample.from_series(row),
                                                bypass_augmentations=bypass_augmentations))
            except PreprocessingError as err:
                out.append(err)
            except ValueError as err:
                out.append(PreprocessingError(str(err)))
    finally:
        torch.random.set_rng_state(state)  # previews must not disturb the caller's random stream
    return out
