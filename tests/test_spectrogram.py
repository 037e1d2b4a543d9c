"""Spectrogram and MelSpectrogram: known answers for tones and documented shapes."""
import numpy as np
import pytest
import scipy.signal

from opso_nb import sample_data
from opso_nb.audio import Audio
from opso_nb.spectrogram import MelSpectrogram, Spectrogram, SpectrogramParams


def tone(freq, duration=1.0, sr=32000, amplitude=0.5):
    t = np.arange(int(duration * sr)) / sr
    return Audio(amplitude * np.sin(2 * np.pi * freq * t), sr)


def test_default_times_and_frequencies_at_32k():
    spec = Spectrogram.from_audio(Audio.from_file(sample_data.audiomoth_1min(), duration=2))
    np.testing.assert_allclose(spec.times[:5], [0.008, 0.016, 0.024, 0.032, 0.040])
    np.testing.assert_allclose(spec.frequencies[:5], [0, 62.5, 125, 187.5, 250])
    assert spec.window_samples == 512 and spec.overlap_samples == 256


def test_pure_tone_peak_bin():
    spec = Spectrogram.from_audio(tone(4000), dB_scale=False)
    peak_row = np.argmax(spec.spectrogram.mean(axis=1))
    assert spec.frequencies[peak_row] == 4000.0
    assert peak_row == 64  # 4000 Hz / 62.5 Hz per bin


def test_spectrum_scaling_gives_tone_power():
    # a sine of amplitude A carries power A**2/2; 'spectrum' scaling puts it in the peak bin
    spec = Spectrogram.from_audio(tone(4000, amplitude=0.5), dB_scale=False, scaling="spectrum")
    assert spec.spectrogram[64].mean() == pytest.approx(0.5**2 / 2, rel=0.01)


def test_matches_scipy_spectrogram():
    audio = Audio.from_file(sample_data.birds(), duration=3)
    ours = Spectrogram.from_audio(audio, window_samples=1024, overlap_samples=512, decibel_limits=(-150, 0))
    _, _, ref = scipy.signal.spectrogram(audio.samples, fs=audio.sample_rate, window="hann", nperseg=1024,
                                         noverlap=512, scaling="spectrum")
    np.testing.assert_allclose(ours.spectrogram, np.clip(10 * np.log10(ref), -150, 0), atol=1e-3)


def test_documented_shape_and_bandpass():
    audio = Audio(np.random.default_rng(0).standard_normal(88200) * 0.1, 44100)
    spec = Spectrogram.from_audio(audio)
    assert spec.shape == (257, 343)
    assert spec.bandpass(0, 11025).shape == (129, 343)
    with pytest.raises(ValueError):
        spec.bandpass(0, 30000, out_of_bounds_ok=False)


def test_resolution_arithmetic():
    audio = Audio(np.zeros(22000), 22000)
    fine_time = Spectrogram.from_audio(audio, window_samples=55, overlap_samples=0)
    assert fine_time.window_step == pytest.approx(0.0025)
    assert fine_time.frequencies[1] == pytest.approx(400)
    fine_freq = Spectrogram.from_audio(audio, window_samples=1100, overlap_samples=0)
    assert fine_freq.window_step == pytest.approx(0.05)
    assert fine_freq.frequencies[1] == pytest.approx(20)


def test_window_parameter_spellings_and_conflicts():
    audio = tone(1000)
    a = Spectrogram.from_audio(audio, window_samples=512, hop_samples=128)
    b = Spectrogram.from_audio(audio, window_samples=512, overlap_samples=384)
    c = Spectrogram.from_audio(audio, window_length_sec=0.016, overlap_fraction=0.75)
    np.testing.assert_array_equal(a.spectrogram, b.spectrogram)
    np.testing.assert_array_equal(a.spectrogram, c.spectrogram)
    with pytest.raises(ValueError):
        Spectrogram.from_audio(audio, window_samples=512, window_length_sec=0.1)
    with pytest.raises(ValueError):
        Spectrogram.from_audio(audio, overlap_samples=10, overlap_fraction=0.5)
    with pytest.raises(ValueError):
        Spectrogram.from_audio(audio, window_samples=256, overlap_samples=256)


def test_decibel_limits_and_linear_values():
    spec = Spectrogram.from_audio(tone(1000), decibel_limits=(-80, -30))
    assert spec.spectrogram.min() >= -80 and spec.spectrogram.max() <= -30
    linear = Spectrogram.from_audio(tone(1000), dB_scale=False, decibel_limits=(-80, -30))
    assert linear.spectrogram.max() > 0.01  # not in dB, limits ignored
    limited = spec.limit_range(-60, -40)
    assert limited.spectrogram.min() >= -60 and limited.spectrogram.max() <= -40


def test_trim_amplitude_and_net_amplitude():
    audio = Audio(np.concatenate([np.zeros(32000), tone(3000).samples]), 32000)
    spec = Spectrogram.from_audio(audio)
    trimmed = spec.trim(1.0, 2.0)
    assert trimmed.times.min() >= 1.0 and trimmed.times.max() < 2.0
    amplitude = spec.amplitude(freq_range=(2900, 3100))
    assert len(amplitude) == len(spec.times)
    assert amplitude[spec.times > 1.1].mean() > amplitude[spec.times < 0.9].mean()
    net = spec.net_amplitude((2900, 3100), reject_bands=[(5000, 6000)])
    assert net[spec.times > 1.1].mean() > 0


def test_to_image_shapes_and_polarity():
    spec = Spectrogram.from_audio(tone(3000))
    image = spec.to_image(shape=(64, 100), return_type="np")
    assert image.shape == (1, 64, 100) and image.min() >= 0 and image.max() <= 1
    # loud tone row is dark; low frequencies at the bottom of the image
    row_means = image[0].mean(axis=1)
    darkest = int(np.argmin(row_means))
    assert abs((63 - darkest) / 64 * 16000 - 3000) < 16000 / 64 * 1.5
    assert row_means[darkest] < 0.7 and np.median(row_means) > 0.95
    inverted = spec.to_image(shape=(64, 100), return_type="np", invert=True)
    np.testing.assert_allclose(inverted, 1 - image, atol=1e-6)
    assert spec.to_image(channels=3, colormap="viridis", return_type="torch").shape[0] == 3
    assert spec.to_image(shape=(32, 32)).size == (32, 32)


def test_mel_spectrogram_tone_lands_in_right_band():
    mel = MelSpectrogram.from_audio(tone(2000), n_mels=64, window_samples=1024)
    assert mel.shape[0] == 64
    peak_band = np.argmax(mel.spectrogram.mean(axis=1))
    assert mel.frequencies[peak_band] == pytest.approx(2000, rel=0.1)
    htk = MelSpectrogram.from_audio(tone(2000), n_mels=32, htk=True, norm=None)
    assert htk.shape[0] == 32


def test_spectrogram_params_make():
    settings = SpectrogramParams(window_samples=1024, frequency_range=(1000, 8000))
    spec = settings.make(tone(3000))
    assert spec.frequencies.min() >= 1000 and spec.frequencies.max() <= 8000
    settings.scale = "mel"
    assert isinstance(settings.make(tone(3000)), MelSpectrogram)


def test_too_short_audio_raises():
    with pytest.raises(ValueError, match="fewer than one window"):
        Spectrogram.from_audio(Audio(np.zeros(100), 32000))
