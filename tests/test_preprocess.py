"""Preprocessing pipeline and actions on known synthetic input (2 s at 16 kHz)."""
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from opso_nb.preprocess import actions
from opso_nb.preprocess.preprocessors import (SpectrogramPreprocessor, load_preprocessor,
                                              preprocessor_from_dict)
from opso_nb.preprocess.utils import PreprocessingError
from opso_nb.sample import AudioSample

torch.set_num_threads(1)
SR = 16000


def _tone(path, f, dur=2.0, amp=0.5, sr=SR):
    t = np.arange(int(dur * sr)) / sr
    sf.write(path, (amp * np.sin(2 * np.pi * f * t)).astype("float32"), sr)
    return str(path)


@pytest.fixture
def tone(tmp_path):
    return _tone(tmp_path / "tone3k.wav", 3000)


@pytest.fixture
def low_tone(tmp_path):
    return _tone(tmp_path / "tone500.wav", 500)


def test_default_pipeline_order_and_output(tone):
    pre = SpectrogramPreprocessor(2.0, height=64, width=80)
    assert list(pre.pipeline.index) == ["load_audio", "random_trim_audio", "trim_audio", "to_spec", "bandpass",
                                        "to_tensor", "time_mask", "frequency_mask", "add_noise", "rescale",
                                        "random_affine"]
    aug = [k for k, a in pre.pipeline.items() if a.is_augmentation]
    assert aug == ["random_trim_audio", "time_mask", "frequency_mask", "add_noise", "random_affine"]
    s = pre.forward((tone, 0.0, 2.0), bypass_augmentations=True)
    assert s.data.dtype == torch.float32 and tuple(s.data.shape) == (1, 64, 80)
    assert s.data.min() >= -1 and s.data.max() <= 1
    # deterministic with augmentation off
    s2 = pre.forward((tone, 0.0, 2.0), bypass_augmentations=True)
    assert torch.equal(s.data, s2.data)
    # cnn's spelling
    assert SpectrogramPreprocessor(2.0, out_shape=(32, 40, 3)).out_shape == (32, 40, 3)


def test_tone_lands_on_expected_row(tone):
    pre = SpectrogramPreprocessor(2.0, out_shape=None)  # no resize: one row per frequency bin
    s = pre.forward((tone, 0, 2), bypass_augmentations=True, trace=True)
    spec = s.trace["bandpass"]
    row_from_bottom = int(np.argmax(s.data[0].mean(axis=1).numpy()[::-1]))
    assert abs(spec.frequencies[row_from_bottom] - 3000) <= 32


def test_bandpass_removes_energy_outside_band(tone, low_tone, tmp_path):
    pre = SpectrogramPreprocessor(2.0, out_shape=None)
    pre.pipeline["bandpass"].set(min_f=2000, max_f=4000)
    s_in = pre.forward((tone, 0, 2), bypass_augmentations=True, trace=True)
    s_out = pre.forward((low_tone, 0, 2), bypass_augmentations=True, trace=True)
    assert s_in.trace["bandpass"].frequencies.min() >= 2000
    assert s_in.trace["bandpass"].frequencies.max() <= 4000
    # 3 kHz tone inside the band: loud; 500 Hz tone outside: nothing left (all at the floor, -1 after rescale)
    assert s_in.data.max() > 0.5
    assert torch.allclose(s_out.data, torch.full_like(s_out.data, -1.0), atol=1e-3)
    with pytest.raises(PreprocessingError, match="bandpass"):
        pre.pipeline["bandpass"].set(min_f=5000, max_f=4000)
        pre.forward((tone, 0, 2), bypass_augmentations=True)


def test_time_mask_zeroes_columns():
    torch.manual_seed(3)
    x = torch.ones(1, 20, 50)
    y = actions.time_mask(x, max_masks=5, max_width=0.2)
    cols = (y[0] == 0).all(axis=0)
    assert cols.any()
    # masked columns are entirely zero, the others untouched
    assert torch.equal(y[0][:, ~cols], x[0][:, ~cols])
    assert ((y[0] == 0).any(axis=0) == cols).all()
    assert torch.equal(x, torch.ones(1, 20, 50))  # input not modified
    y = actions.frequency_mask(x, max_masks=5, max_width=0.2)
    rows = (y[0] == 0).all(axis=1)
    assert rows.any() and ((y[0] == 0).any(axis=1) == rows).all()


def test_rescale_and_noise_and_affine():
    x = torch.full((1, 4, 4), 0.75)
    assert torch.allclose(actions.scale_tensor(x, 0.5, 0.5), torch.full_like(x, 0.5))
    torch.manual_seed(0)
    noisy = actions.tensor_add_noise(torch.zeros(1, 100, 100), std=0.1)
    assert abs(float(noisy.std()) - 0.1) < 0.005
    img = torch.zeros(1, 10, 10)
    img[0, :, 5] = 1
    torch.manual_seed(1)
    moved = actions.torch_random_affine(img, degrees=0, translate=(0.3, 0.0), fill=0)
    assert float(moved.sum()) == 10.0  # a shifted column, nothing lost
    with pytest.raises(ValueError):
        actions.scale_tensor(x, 0, 0)


def test_trim_extend_and_random_trim(tmp_path):
    short = _tone(tmp_path / "short.wav", 1000, dur=1.0)
    pre = SpectrogramPreprocessor(2.0, out_shape=None)
    s = pre.forward(AudioSample(short, 0, 1.0), bypass_augmentations=True, trace=True)
    assert s.trace["trim_audio"].n_samples == 2 * SR
    assert np.all(s.trace["trim_audio"].samples[SR + 10:] == 0)  # padded with silence
    pre.pipeline["trim_audio"].set(extend=False)
    with pytest.raises(PreprocessingError, match="shorter than sample_duration"):
        pre.forward(AudioSample(short, 0, 1.0), bypass_augmentations=True)
    # a 4 s clip, random 2 s window: start_time moves within [0, 2]
    long = _tone(tmp_path / "long.wav", 1000, dur=4.0)
    pre = SpectrogramPreprocessor(2.0, out_shape=None)
    torch.manual_seed(0)
    starts = {round(pre.forward(AudioSample(long, 0, 4.0), break_on_key="to_spec").start_time, 3) for _ in range(5)}
    assert len(starts) > 1 and all(0 <= s <= 2 for s in starts)
    s = pre.forward(AudioSample(long, 0, 4.0), break_on_key="to_spec", bypass_augmentations=True)
    assert s.start_time == 0 and s.data.duration == pytest.approx(2.0)


def test_clip_near_file_end_is_padded(tone):
    pre = SpectrogramPreprocessor(2.0, out_shape=None)
    s = pre.forward(AudioSample(tone, 1.5, 2.0), break_on_key="to_spec", bypass_augmentations=True)
    assert s.data.duration == pytest.approx(2.0)
    assert np.all(s.data.samples[int(0.6 * SR):] == 0)


def test_overlay_weight_gives_expected_mixture(tone, low_tone):
    bg = pd.DataFrame(index=pd.Index([low_tone], name="file"))
    pre = SpectrogramPreprocessor(2.0, overlay_df=bg, height=32, width=32)
    for k in ("random_trim_audio", "time_mask", "frequency_mask", "add_noise", "random_affine"):
        pre.pipeline[k].bypass = True
    pre.pipeline["overlay"].set(overlay_weight=0.3, overlay_prob=1.0, max_overlay_num=1)
    assert list(pre.pipeline.index).index("overlay") == list(pre.pipeline.index).index("to_tensor") + 1
    fg = pre.forward((tone, 0, 2), break_on_key="overlay").data
    back = pre.forward((low_tone, 0, 2), break_on_key="overlay").data
    mixed = pre.forward((tone, 0, 2), break_on_key="rescale").data
    assert torch.allclose(mixed, 0.7 * fg + 0.3 * back, atol=1e-6)
    # bypassing augmentations removes the overlay
    plain = pre.forward((tone, 0, 2), break_on_key="rescale", bypass_augmentations=True).data
    assert torch.equal(plain, fg)


def test_overlay_class_and_update_labels(tone, low_tone, tmp_path):
    other = _tone(tmp_path / "other.wav", 6000)
    bg = pd.DataFrame({"a": [1, 0], "b": [0, 1]}, index=pd.Index([low_tone, other], name="file"))
    pre = SpectrogramPreprocessor(2.0, overlay_df=bg, height=16, width=16)
    pre.pipeline["overlay"].set(overlay_class="different", update_labels=True, overlay_weight=[0.2, 0.4])
    torch.manual_seed(0)
    for _ in range(4):
        s = pre.forward(AudioSample(tone, 0, 2, labels=pd.Series({"a": 1, "b": 0})))
        # only the 'b' clip may be mixed in, so labels become a=1, b=1
        assert s.labels.to_dict() == {"a": 1.0, "b": 1.0}
    pre.pipeline["overlay"].set(overlay_class="c")
    with pytest.raises(PreprocessingError, match="overlay_class"):
        pre.forward(AudioSample(tone, 0, 2, labels=pd.Series({"a": 1, "b": 0})))


def test_pipeline_edits(tone):
    pre = SpectrogramPreprocessor(2.0, height=16, width=16)
    pre.insert_action("gain", actions.AudioRandomGain(dB_range=(-6, -6)), after_key="trim_audio")
    assert list(pre.pipeline.index)[3] == "gain"
    with pytest.raises(AssertionError):
        pre.insert_action("gain", actions.AudioRandomGain())
    pre.insert_action("times2", actions.Action(actions.scale_tensor, input_mean=0, input_std=0.5),
                      before_key="rescale")
    assert list(pre.pipeline.index).index("times2") == list(pre.pipeline.index).index("rescale") - 1
    pre.remove_action("gain")
    assert "gain" not in pre.pipeline.index
    with pytest.raises(KeyError):
        pre.remove_action("nope")
    names = list(pre.pipeline.index)
    pre.reorder(names[:-2] + [names[-1], names[-2]])
    assert list(pre.pipeline.index)[-1] == names[-2]
    # stop early: a Spectrogram instead of a tensor
    from opso_nb.spectrogram import Spectrogram
    assert isinstance(pre.forward((tone, 0, 2), break_on_key="to_tensor").data, Spectrogram)
    assert isinstance(pre.forward((tone, 0, 2), break_on_type=actions.SpectrogramToTensor).data, Spectrogram)
    # bypass a single step
    pre.pipeline["to_spec"].set(window_samples=256)
    pre.pipeline["to_tensor"].set(height=None, width=None)
    s = pre.forward((tone, 0, 2), bypass_augmentations=True)
    assert s.data.shape[1] == 129
    with pytest.raises(ValueError, match="no parameter"):
        pre.pipeline["to_spec"].set(window_size=3)


def test_config_round_trip_identical_tensors(tone, low_tone, tmp_path):
    bg = pd.DataFrame(index=pd.Index([low_tone], name="file"))
    pre = SpectrogramPreprocessor(2.0, overlay_df=bg, height=40, width=50, channels=3, sample_rate=8000)
    pre.pipeline["to_spec"].set(window_samples=128, overlap_fraction=0.75)
    pre.pipeline["bandpass"].set(min_f=200, max_f=3900)
    pre.pipeline["time_mask"].bypass = True
    pre.pipeline["overlay"].set(overlay_weight=[0.1, 0.5])
    pre.insert_action("scale2", actions.Action(actions.scale_tensor, input_mean=0.0, input_std=2.0))
    path = tmp_path / "pre.json"
    pre.save(path)
    cfg = json.loads(path.read_text())
    assert cfg["format"] == "opso_nb.preprocessor" and cfg["version"] == 2
    loaded = load_preprocessor(path)
    assert list(loaded.pipeline.index) == list(pre.pipeline.index)
    assert loaded.pipeline["time_mask"].bypass and loaded.out_shape == (40, 50, 3)
    for seed in (0, 1):
        torch.manual_seed(seed)
        a = pre.forward((tone, 0, 2)).data
        torch.manual_seed(seed)
        b = loaded.forward((tone, 0, 2)).data
        assert torch.equal(a, b)
    assert tuple(a.shape) == (3, 40, 50)
    with pytest.raises(ValueError, match="version"):
        preprocessor_from_dict({**cfg, "version": 99})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_preprocessor(bad)


def test_bad_file_error_names_file(tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    pre = SpectrogramPreprocessor(2.0, out_shape=None)
    with pytest.raises(PreprocessingError, match="corrupt.wav.*load_audio"):
        pre.forward((str(bad), 0, 2))


def test_sample_from_series_and_labels():
    row = pd.Series({"a": 1, "b": 0}, name=("f.wav", 2.0, 5.0))
    s = AudioSample.from_series(row)
    assert (s.source, s.start_time, s.duration, s.end_time) == ("f.wav", 2.0, 3.0, 5.0)
    assert s.categorical_labels == ["a"]
    with pytest.raises(ValueError, match="bad times"):
        AudioSample.from_series(pd.Series({"a": 1}, name=("f.wav", 5.0, float("nan"))))


def test_params_render_as_widgets():
    import panel as pn

    pre = SpectrogramPreprocessor(2.0, out_shape=None)
    for name, action in pre.pipeline.items():
        widgets = pn.Param(action, show_name=False)
        assert len(widgets.layout.objects) >= 2, name
        assert "bypass" in widgets._widgets, name


def test_audio_augmentations_and_legacy_masks(tone):
    from opso_nb.audio import Audio
    from opso_nb.preprocess import img_augment, tensor_augment

    a = Audio.from_file(tone)
    quieter = actions.audio_random_gain(a, dB_range=(-20, -20))
    assert quieter.rms == pytest.approx(a.rms * 10 ** (-20 / 20), rel=1e-3)
    torch.manual_seed(0)
    noisy = actions.audio_add_noise(Audio.silence(1.0, SR), noise_dB=-20, signal_dB=0)
    assert noisy.dBFS == pytest.approx(-20, abs=1.5)
    torch.manual_seed(0)
    x = torch.ones(1, 30, 60)
    y = tensor_augment.time_mask(x, T=10, max_masks=3, replace_with_zero=True)
    cols = (y[0] == 0).all(axis=0)
    assert 0 < int(cols.sum()) <= 30 and torch.equal(y[0][:, ~cols], x[0][:, ~cols])
    y = tensor_augment.freq_mask(x * torch.arange(60.0), F=5, max_masks=2)  # mean fill
    assert y.shape == x.shape
    from PIL import Image
    img = Image.fromarray(np.arange(20, dtype=np.uint8).reshape(1, 20).repeat(4, axis=0))
    split = np.asarray(img_augment.time_split(img, seed=1))
    assert sorted(split[0].tolist()) == list(range(20)) and split[0, 0] != 0


def test_mel_option_and_preview(tone):
    pre = SpectrogramPreprocessor(2.0, out_shape=None)
    pre.pipeline["to_spec"].set(mel=True, n_mels=40)
    pre.pipeline["bandpass"].bypass = True
    s = pre.forward((tone, 0, 2), bypass_augmentations=True)
    assert s.data.shape[1] == 40
    from opso_nb.preprocess.preprocessors import preview_samples

    idx = pd.MultiIndex.from_tuples([(tone, 0.0, 2.0), ("/nonexistent.wav", 0.0, 2.0)],
                                    names=["file", "start_time", "end_time"])
    clips = pd.DataFrame({"x": [1, 0]}, index=idx)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    out = preview_samples(SpectrogramPreprocessor(2.0, height=8, width=8), clips, n=2, seed=7)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's random stream is untouched
    assert out[0].data.shape == (1, 8, 8)
    assert isinstance(out[1], PreprocessingError) and "nonexistent.wav" in str(out[1])
    again = preview_samples(SpectrogramPreprocessor(2.0, height=8, width=8), clips, n=1, seed=7)
    assert torch.equal(again[0].data, out[0].data)


def test_version_1_configs_keep_their_tensors(tone, tmp_path):
    # version 1 stored SpectrogramToTensor.invert=True for "loud = 1"; version 2 follows OpenSoundscape (False)
    pre = SpectrogramPreprocessor(2.0, out_shape=None)
    assert pre.pipeline["to_tensor"].invert is False
    cfg = pre.to_dict()
    cfg["version"] = 1
    next(s for s in cfg["pipeline"] if s["name"] == "to_tensor")["params"]["invert"] = True
    old = preprocessor_from_dict(cfg)
    assert old.pipeline["to_tensor"].invert is False
    a = pre.forward((tone, 0, 2), bypass_augmentations=True).data
    assert torch.equal(old.forward((tone, 0, 2), bypass_augmentations=True).data, a)
    assert a.max() > 0.5  # the tone is loud: bright
    pre.pipeline["to_tensor"].set(invert=True)  # OpenSoundscape 0.4-0.6 models: loud = dark
    assert torch.allclose(pre.forward((tone, 0, 2), bypass_augmentations=True).data, -a, atol=1e-6)
