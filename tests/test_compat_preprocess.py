"""OpenSoundscape 0.9 parity of opso_nb.preprocess and opso_nb.sample.

The names and signatures the 0.9 manual documents (chapter "Preprocessors", "Actions", "Sample" and the
preprocessing tutorial, chapter 9) exist at the same paths with the documented defaults, and the
tutorial's recipes behave as it describes. Deliberate differences: docs/differences/preprocess.md.
"""
import inspect

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from PIL import Image

from opso_nb.audio import Audio
from opso_nb.preprocess import actions, img_augment, preprocessors, tensor_augment, utils
from opso_nb.preprocess.actions import Action, BaseAction
from opso_nb.preprocess.preprocessors import BasePreprocessor, SpectrogramPreprocessor
from opso_nb.sample import AudioSample, Sample, collate_samples
from opso_nb.spectrogram import Spectrogram

torch.set_num_threads(1)
E = inspect.Parameter.empty
SR = 22050

#: (module, qualified name) -> documented leading parameters (name, default); E = required in the manual
CLAIMED_SIGNATURES = {
    (actions, "Action"): [("fn", E), ("is_augmentation", False)],
    (actions, "audio_add_noise"): [("audio", E), ("noise_dB", -30), ("signal_dB", 0), ("color", "white")],
    (actions, "audio_random_gain"): [("audio", E), ("dB_range", (-30, 0)), ("clip_range", (-1, 1))],
    (actions, "frequency_mask"): [("tensor", E), ("max_masks", 3), ("max_width", 0.2)],
    (actions, "image_to_tensor"): [("img", E), ("greyscale", False)],
    (actions, "overlay"): [("sample", E), ("overlay_df", E), ("update_labels", E), ("overlay_class", None),
                           ("overlay_prob", 1), ("max_overlay_num", 1), ("overlay_weight", 0.5)],
    (actions, "scale_tensor"): [("tensor", E), ("input_mean", 0.5), ("input_std", 0.5)],
    (actions, "tensor_add_noise"): [("tensor", E), ("std", 1)],
    (actions, "time_mask"): [("tensor", E), ("max_masks", 3), ("max_width", 0.2)],
    (actions, "torch_color_jitter"): [("tensor", E), ("brightness", 0.3), ("contrast", 0.3), ("saturation", 0.3),
                                      ("hue", 0)],
    (actions, "torch_random_affine"): [("tensor", E), ("degrees", 0), ("translate", (0.3, 0.1)), ("fill", 0)],
    (actions, "trim_audio"): [("sample", E), ("extend", True), ("random_trim", False), ("tol", 1e-05)],
    (actions, "BaseAction.set"): [("self", E)],
    (actions, "BaseAction.get"): [("self", E), ("key", E)],
    (actions, "BaseAction.go"): [("self", E), ("sample", E)],
    (preprocessors, "BasePreprocessor"): [("sample_duration", None)],
    (preprocessors, "BasePreprocessor.forward"): [("self", E), ("sample", E), ("break_on_type", None),
                                                  ("break_on_key", None), ("bypass_augmentations", False),
                                                  ("trace", False)],
    (preprocessors, "BasePreprocessor.insert_action"): [("self", E), ("action_index", E), ("action", E),
                                                        ("after_key", None), ("before_key", None)],
    (preprocessors, "BasePreprocessor.remove_action"): [("self", E), ("action_index", E)],
    (preprocessors, "SpectrogramPreprocessor"): [("sample_duration", E), ("overlay_df", None),
                                                 ("out_shape", (224, 224, 3))],
    (utils, "get_args"): [("func", E)],
    (utils, "get_reqd_args"): [("func", E)],
    (utils, "show_tensor"): [("tensor", E), ("channel", None), ("transform_from_zero_centered", True),
                             ("invert", True)],
    (utils, "show_tensor_grid"): [("tensors", E), ("columns", E), ("channel", None),
                                  ("transform_from_zero_centered", True), ("invert", True), ("labels", None)],
    (tensor_augment, "freq_mask"): [("spec", E), ("F", 30), ("max_masks", 3), ("replace_with_zero", False)],
    (tensor_augment, "time_mask"): [("spec", E), ("T", 40), ("max_masks", 3), ("replace_with_zero", False)],
    (img_augment, "time_split"): [("img", E), ("seed", None)],
}
SAMPLE_SIGNATURES = {
    "Sample": [("data", None)],
    "AudioSample": [("source", E), ("start_time", None), ("duration", None), ("labels", None), ("trace", None)],
    "AudioSample.from_series": [("labels_series", E)],
    "collate_samples": [("samples", E)],
}
#: documented classes whose parameters are keyword settings: name -> (documented defaults, is_augmentation)
CLAIMED_ACTION_CLASSES = {
    "AudioClipLoader": ({"sample_rate": None}, False),
    "AudioTrim": ({"extend": True, "random_trim": False, "tol": 1e-05}, False),
    "SpectrogramToTensor": ({"colormap": None, "invert": False}, False),
    "Overlay": ({"overlay_class": None, "overlay_prob": 1, "max_overlay_num": 1, "overlay_weight": 0.5}, True),
}


def _resolve(module, qualname):
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _check(obj, claimed):
    params = [p for p in inspect.signature(obj).parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    names = [p.name for p in params[:len(claimed)]]
    assert names == [n for n, _ in claimed]
    for p, (name, default) in zip(params, claimed):
        if default is not E:  # a documented default is kept; a required parameter may gain a default
            assert p.default == default, name


@pytest.mark.parametrize("key", list(CLAIMED_SIGNATURES), ids=lambda k: f"{k[0].__name__}.{k[1]}")
def test_documented_signatures(key):
    _check(_resolve(*key), CLAIMED_SIGNATURES[key])


@pytest.mark.parametrize("name", list(SAMPLE_SIGNATURES))
def test_sample_signatures(name):
    from opso_nb import sample

    _check(_resolve(sample, name), SAMPLE_SIGNATURES[name])


@pytest.mark.parametrize("name", list(CLAIMED_ACTION_CLASSES))
def test_documented_action_classes(name):
    defaults, augmentation = CLAIMED_ACTION_CLASSES[name]
    action = getattr(actions, name)()
    assert isinstance(action, BaseAction) and action.is_augmentation is augmentation
    for key, value in defaults.items():
        assert action.get(key) == value, key


def test_documented_error_and_tutorial_aliases():
    assert issubclass(utils.PreprocessingError, Exception)
    # names the tutorials use loosely for the spectrogram preprocessor
    assert preprocessors.SpecPreprocessor is preprocessors.AudioToSpectrogramPreprocessor is SpectrogramPreprocessor


# ------------------------------------------------------------------ the tutorial's recipes
@pytest.fixture(scope="module")
def chirps(tmp_path_factory):
    """3 s at 22.05 kHz: a 3 kHz tone pulsed 4 times per second in faint noise."""
    t = np.arange(3 * SR) / SR
    x = 0.3 * np.sin(2 * np.pi * 3000 * t) * (((t * 4) % 1) < 0.5)
    x += 0.001 * np.random.default_rng(0).standard_normal(len(t))
    path = tmp_path_factory.mktemp("audio") / "chirps.wav"
    sf.write(path, x.astype("float32"), SR)
    return str(path)


def test_default_pipeline_as_documented(chirps):
    pre = SpectrogramPreprocessor(sample_duration=2.0)
    p = pre.pipeline
    assert list(p.index) == ["load_audio", "random_trim_audio", "trim_audio", "to_spec", "bandpass", "to_tensor",
                             "time_mask", "frequency_mask", "add_noise", "rescale", "random_affine"]
    assert [k for k, a in p.items() if a.is_augmentation] == ["random_trim_audio", "time_mask", "frequency_mask",
                                                              "add_noise", "random_affine"]
    documented = dict(window_type="hann", window_samples=None, window_length_sec=None, overlap_samples=None,
                      overlap_fraction=None, fft_size=None, decibel_limits=(-100, -20), dB_scale=True,
                      scaling="spectrum")
    assert {k: p.to_spec.params[k] for k in documented} == documented
    assert (p.bandpass.get("min_f"), p.bandpass.get("max_f")) == (0, 11025)
    assert dict(p.time_mask.params) == dict(p.frequency_mask.params) == {"max_masks": 3, "max_width": 0.2}
    assert p.add_noise.get("std") == 0.005
    assert dict(p.rescale.params) == {"input_mean": 0.5, "input_std": 0.5}
    assert dict(p.random_affine.params) == {"degrees": 0, "translate": (0.3, 0.1), "fill": 0}
    assert pre.out_shape == (224, 224, 3)
    sample = pre.forward(pd.Series({"a": 1}, name=chirps), bypass_augmentations=True)
    assert tuple(sample.data.shape) == (3, 224, 224) and sample.data.dtype == torch.float32
    assert -1 <= float(sample.data.min()) and float(sample.data.max()) <= 1
    pre.out_shape = [100, 500, 3]
    assert tuple(pre.forward(chirps, bypass_augmentations=True).data.shape) == (3, 100, 500)
    assert "overlay" in SpectrogramPreprocessor(2.0, overlay_df=pd.DataFrame(index=[chirps])).pipeline.index


def test_params_are_a_live_series():
    pre = SpectrogramPreprocessor(sample_duration=2.0)
    pre.pipeline.to_spec.set(dB_scale=False)
    pre.pipeline.to_spec.params.window_samples = 512
    pre.pipeline.to_spec.params["overlap_fraction"] = 0.75
    params = pre.pipeline.to_spec.params
    assert isinstance(params, pd.Series)
    assert (params.dB_scale, params.window_samples, params.overlap_fraction) == (False, 512, 0.75)
    assert pre.pipeline.to_spec.get("window_samples") == 512
    with pytest.raises(ValueError):
        pre.pipeline.to_spec.set(window_size=3)  # only existing keys
    with pytest.raises(ValueError):
        pre.pipeline.to_spec.params["window_samples"] = "wide"  # validated like set()
    pre.pipeline.bandpass.set(min_f=2000, max_f=4000)
    pre.pipeline.frequency_mask.set(max_width=0.03, max_masks=20)
    pre.pipeline.add_noise.set(std=0.2)
    assert pre.pipeline.bandpass.params.to_dict()["max_f"] == 4000 and pre.pipeline.add_noise.get("std") == 0.2


def multiply(x, n):
    return x * n


def test_action_from_a_function_and_bypass(chirps):
    action = Action(fn=multiply, n=3)
    assert dict(action.params) == {"n": 3}
    sample = AudioSample(chirps)
    sample.data = torch.ones(2)
    assert torch.equal(action.go(sample).data, torch.full((2,), 3.0))
    action.set(n=2)
    assert torch.equal(action.go(sample).data, torch.full((2,), 6.0))
    # a method of a class: Spectrogram.bandpass(self, min_f, max_f, ...)
    band = Action(Spectrogram.bandpass, min_f=1000, max_f=4000)
    assert "out_of_bounds_ok" in band.params.index
    assert repr(action).startswith("Action calling multiply")
    pre = SpectrogramPreprocessor(sample_duration=2.0)
    pre.pipeline.add_noise.bypass = True
    assert "## Bypassed ##" in repr(pre.pipeline.add_noise) and pre.pipeline.load_audio.bypass is False
    pre.pipeline.add_noise.on()
    assert not pre.pipeline.add_noise.bypass
    pre.pipeline.add_noise.off()
    assert pre.pipeline.add_noise.bypass


def test_pipeline_slice_returns_a_spectrogram_and_trace(chirps):
    pre = SpectrogramPreprocessor(sample_duration=2.0)
    pre.pipeline = pre.pipeline[0:4]
    assert isinstance(pre.forward(chirps).data, Spectrogram)
    pre = SpectrogramPreprocessor(sample_duration=2.0)
    sample = pre.forward(chirps, trace=True, bypass_augmentations=True)
    assert list(sample.trace.index) == list(pre.pipeline.index)
    assert isinstance(sample.trace["load_audio"], Audio) and isinstance(sample.trace["to_spec"], Spectrogram)
    assert sample.trace["time_mask"] is None  # skipped augmentation
    assert isinstance(pre.forward(chirps, break_on_type=actions.SpectrogramToTensor).data, Spectrogram)


class AudioGate(BaseAction):
    """Zero samples quieter than ``threshold``, only for samples labelled with class 0 (the manual's example)."""

    def __init__(self, threshold):
        super().__init__()
        self.params["threshold"] = threshold

    def go(self, sample, **kwargs):
        if sample.labels[0] == 1:
            samples = sample.data.samples.copy()
            samples[np.abs(samples) < self.params["threshold"]] = 0
            sample.data = Audio(samples, sample.data.sample_rate)
        return sample


def test_custom_action_with_labels_and_insert_before(chirps):
    gate = AudioGate(threshold=0.2)
    audio = Audio.from_file(chirps)
    sample = AudioSample(source=audio, labels={0: 1, 1: 0})
    sample.data = audio
    gated = gate.go(sample).data.samples
    assert np.all((gated == 0) | (np.abs(gated) >= 0.2)) and (gated == 0).mean() > 0.5
    untouched = AudioSample(source=audio, labels={0: 0, 1: 1})
    untouched.data = audio
    assert np.array_equal(gate.go(untouched).data.samples, audio.samples)

    pre = SpectrogramPreprocessor(sample_duration=2.0)
    pre.insert_action(action_index="custom_audio_gate", action=gate, before_key="to_spec")
    names = list(pre.pipeline.index)
    assert names[names.index("to_spec") - 1] == "custom_audio_gate"
    with pytest.raises(AssertionError):
        pre.insert_action("custom_audio_gate", AudioGate(0.1))
    with pytest.raises(ValueError):
        pre.insert_action("other", AudioGate(0.1), after_key="to_spec", before_key="bandpass")
    pre.insert_action("last", AudioGate(0.1))
    assert list(pre.pipeline.index)[-1] == "last"
    pre.remove_action("last")
    assert "last" not in pre.pipeline.index
    # the sample's source may be an Audio object: the loader cuts the clip from it
    s = pre.forward(AudioSample(source=audio, start_time=0.5, duration=2.0, labels={0: 1, 1: 0}), trace=True,
                    bypass_augmentations=True)
    assert s.trace["trim_audio"].duration == pytest.approx(2.0)
    assert s.trace["custom_audio_gate"].samples[np.abs(s.trace["custom_audio_gate"].samples) < 0.2].max() == 0


class MyPreprocessor(SpectrogramPreprocessor):
    """The manual's subclass: a pipeline that depends on ``magic_parameter``."""

    def __init__(self, magic_parameter, sample_duration, out_shape=(224, 224, 1)):
        super().__init__(sample_duration=sample_duration, out_shape=out_shape)
        for i in range(magic_parameter):
            self.insert_action(f"noise_{i}", Action(actions.tensor_add_noise, std=0.1 * magic_parameter))


def test_custom_preprocessor_subclass(chirps):
    pre = MyPreprocessor(magic_parameter=4, sample_duration=2.0, out_shape=[64, 64, 1])
    assert [n for n in pre.pipeline.index if n.startswith("noise_")] == ["noise_0", "noise_1", "noise_2", "noise_3"]
    torch.manual_seed(0)
    noisy = pre.forward(chirps, bypass_augmentations=True).data
    for i in range(4):
        pre.pipeline[f"noise_{i}"].bypass = True
    clean = pre.forward(chirps, bypass_augmentations=True).data
    # four independent draws of std 0.4 add noise of std 0.8
    assert float((noisy - clean).std()) == pytest.approx(0.8, rel=0.05)


def test_overlay_function_and_trim_audio(chirps, tmp_path):
    quiet = tmp_path / "silence.wav"
    sf.write(quiet, np.zeros(3 * SR, dtype="float32"), SR)
    pre = SpectrogramPreprocessor(sample_duration=2.0, out_shape=(32, 32, 1))
    sample = pre.forward(AudioSample(chirps, 0, 2.0, labels={"a": 1}), break_on_key="time_mask",
                         bypass_augmentations=True)
    before = sample.data.clone()
    sample.preprocessor = pre
    df = pd.DataFrame({"b": [1]}, index=pd.Index([str(quiet)], name="file"))
    out = actions.overlay(sample, df, update_labels=True, overlay_weight=0.25, break_on_key="time_mask")
    # silence is 0 before rescaling: the mix is 75% of the original
    assert torch.allclose(out.data, 0.75 * before, atol=1e-6)
    assert out.labels.to_dict() == {"a": 1.0}  # background classes the sample has no column for are ignored
    # trim_audio: random window of the target length; pads short clips with silence
    s = AudioSample(chirps, 0.0, 3.0)
    s.data, s.target_duration = Audio.from_file(chirps), 2.0
    torch.manual_seed(1)
    s = actions.trim_audio(s, random_trim=True)
    assert s.data.duration == pytest.approx(2.0) and 0 <= s.start_time <= 1.0
    short = AudioSample(chirps)
    short.data, short.target_duration = Audio.from_file(chirps).trim(0, 1.0), 2.0
    assert np.all(actions.trim_audio(short).data.samples[SR + 1:] == 0)


def test_tensor_functions_known_answers():
    x = torch.full((1, 4, 4), 0.75)
    assert torch.allclose(actions.scale_tensor(x), torch.full_like(x, 0.5))
    torch.manual_seed(0)
    assert float(actions.tensor_add_noise(torch.zeros(1, 200, 200)).std()) == pytest.approx(1.0, rel=0.02)
    rgb = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8))
    t = actions.image_to_tensor(rgb)
    assert t.shape == (3, 1, 2) and torch.equal(t[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    grey = actions.image_to_tensor(rgb, greyscale=True)
    assert grey.shape == (1, 1, 2) and 0 < float(grey[0, 0, 0]) < 1
    jittered = actions.torch_color_jitter(torch.rand(3, 8, 8))
    assert jittered.shape == (3, 8, 8)
    img = torch.zeros(1, 10, 10)
    img[0, 5, :] = 1
    torch.manual_seed(2)
    assert float(actions.torch_random_affine(img, translate=(0.0, 0.3)).sum()) == 10.0  # a shifted row
    spec = torch.arange(40.0).repeat(30, 1)[None]
    torch.manual_seed(0)
    masked = tensor_augment.freq_mask(spec, F=5, max_masks=2)
    changed = (masked != spec).any(dim=-1)[0]
    assert 0 < int(changed.sum()) <= 10  # at most two bars of at most five rows
    assert torch.allclose(masked[0][changed], torch.full_like(masked[0][changed], float(spec.mean())))


def test_sample_classes_and_collate():
    s = Sample(data=torch.ones(2))
    assert torch.equal(s.data, torch.ones(2)) and s.labels is None
    row = pd.Series({"present": 1, "absent": 0}, name=("f.wav", 0.0, 2.0))
    a = AudioSample.from_series(row)
    assert isinstance(a, Sample) and (a.source, a.start_time, a.duration, a.end_time) == ("f.wav", 0.0, 2.0, 2.0)
    assert a.categorical_labels == ["present"] and a.preprocessing_exception is None
    assert AudioSample.from_series(pd.Series({"x": 0}, name="whole.wav")).start_time is None
    assert "start_time=0.0" in repr(a) and "present 1" in repr(a)
    samples = []
    for i in range(3):
        x = AudioSample(f"{i}.wav", labels=[i % 2, 1])
        x.data = torch.full((1, 2, 2), float(i))
        samples.append(x)
    batch = collate_samples(samples)
    assert set(batch) == {"samples", "labels"}
    assert batch["samples"].shape == (3, 1, 2, 2) and torch.equal(batch["samples"][2], torch.full((1, 2, 2), 2.0))
    assert torch.equal(batch["labels"], torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0]]))
    samples[0].labels = None
    assert collate_samples(samples)["labels"] is None


def test_preprocessor_attribute_bypass_augmentations(chirps):
    pre = SpectrogramPreprocessor(sample_duration=2.0, out_shape=(16, 16, 1))
    pre.bypass_augmentations = True
    assert torch.equal(pre.forward(chirps).data, pre.forward(chirps).data)
    assert isinstance(pre, BasePreprocessor)
