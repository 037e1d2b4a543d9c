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


# ---------------------------------------------------------------- wave 2: slow references, librosa, validation
import tracemalloc  # noqa: E402

import librosa  # noqa: E402
import soundfile  # noqa: E402

from opso_nb.spectrogram import COMPUTE, SpectrogramInputError  # noqa: E402

#: dB tolerance of the float32 block computation against float64 scipy (the dB image is stored in float32).
DB_TOLERANCE = 2e-3


def scipy_reference_db(samples, sr, window_samples=512, overlap_samples=256, window="hann", nfft=None,
                       scaling="spectrum", limits=(-100, -20)):
    """The slow reference: scipy.signal.spectrogram in float64, 10*log10, clipped (OpenSoundscape 0.9's definition)."""
    _, _, power = scipy.signal.spectrogram(np.asarray(samples, dtype=np.float64), fs=sr, window=window,
                                           nperseg=window_samples, noverlap=overlap_samples, nfft=nfft,
                                           scaling=scaling)
    with np.errstate(divide="ignore"):
        db = 10 * np.log10(power)
    return np.clip(db, *limits) if limits else db


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(window_samples=1024, overlap_samples=512, window_type="hamming"),
        dict(window_samples=300, overlap_samples=100, fft_size=512),
        dict(window_samples=255, overlap_samples=0, fft_size=257),  # odd FFT: no Nyquist bin
        dict(window_samples=512, overlap_samples=384, scaling="density"),
    ],
)
def test_float32_blocks_equal_the_float64_scipy_reference(kwargs, monkeypatch):
    monkeypatch.setattr(COMPUTE, "block_bytes", 20_000)  # many blocks: boundaries must not show
    audio = Audio.from_file(sample_data.birds(), duration=3)
    spec = Spectrogram.from_audio(audio, **kwargs)
    reference = scipy_reference_db(audio.samples, audio.sample_rate, kwargs.get("window_samples", 512),
                                   kwargs.get("overlap_samples", 256), kwargs.get("window_type", "hann"),
                                   kwargs.get("fft_size"), kwargs.get("scaling", "spectrum"))
    assert spec.spectrogram.dtype == np.float32
    np.testing.assert_allclose(spec.spectrogram, reference, atol=DB_TOLERANCE)
    _, ref_times, _ = scipy.signal.spectrogram(audio.samples, fs=audio.sample_rate, nperseg=spec.window_samples,
                                               noverlap=spec.overlap_samples)
    np.testing.assert_allclose(spec.times, ref_times)


def test_whole_file_spectrogram_streams_with_identical_values(tmp_path, monkeypatch):
    monkeypatch.setattr(COMPUTE, "file_block_duration", 1.3)  # blocks that cut windows in two
    rng = np.random.default_rng(1)
    stereo = (rng.standard_normal((32000 * 9 + 77, 2)) * 0.1).astype(np.float32)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, stereo, 32000, subtype="PCM_24")
    for kwargs in [dict(), dict(window_samples=1000, overlap_samples=300)]:
        expected = Spectrogram.from_audio(Audio.from_file(path, offset=1.5, duration=6), **kwargs)
        streamed = Spectrogram.from_audio_file(path, offset=1.5, duration=6, **kwargs)
        np.testing.assert_array_equal(streamed.spectrogram, expected.spectrogram)
        np.testing.assert_array_equal(streamed.times, expected.times)
    mel = MelSpectrogram.from_audio_file(path, n_mels=40, window_samples=1024)
    np.testing.assert_array_equal(mel.spectrogram, MelSpectrogram.from_audio(
        Audio.from_file(path), n_mels=40, window_samples=1024).spectrogram)


def test_whole_file_spectrogram_memory_is_about_its_output(tmp_path, monkeypatch):
    monkeypatch.setattr(COMPUTE, "file_block_duration", 10.0)
    path = tmp_path / "long.wav"
    soundfile.write(path, (np.random.default_rng(0).standard_normal(32000 * 120) * 0.1).astype(np.float32), 32000,
                    subtype="PCM_16")
    tracemalloc.start()
    try:
        spec = Spectrogram.from_audio_file(path)
        _, streamed_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()  # spec is still alive: count from here
        audio = Audio.from_file(path)
        spec2 = Spectrogram.from_audio(audio)
        _, loaded_peak = tracemalloc.get_traced_memory()
        loaded_peak -= before
    finally:
        tracemalloc.stop()
    output = spec.spectrogram.nbytes  # 257 x 14999 float32 = 15.4 MB; the audio is 15.4 MB too
    work = 12 * 2**20  # a few 10 s blocks of audio and FFT work arrays, whatever the recording's length
    assert streamed_peak < output + work < output + audio.samples.nbytes  # the audio is never all in memory
    assert loaded_peak < audio.samples.nbytes + output + work  # no float64 or second full-size copy
    np.testing.assert_array_equal(spec.spectrogram, spec2.spectrogram)


@pytest.mark.parametrize("clip_duration, overlap, final_clip, window",
                         [(5, 2.5, "extend", 512), (2, 0, "full", 512), (3.3, 0, "remainder", 300), (1.25, 0.5, None, 64)])
def test_clip_spectrograms_from_one_transform_equal_per_clip_spectrograms(clip_duration, overlap, final_clip, window):
    audio = Audio.from_file(sample_data.audiomoth_1min(), duration=21.7)
    clips, clip_df = audio.split(clip_duration, clip_overlap=overlap, final_clip=final_clip)
    slow = [Spectrogram.from_audio(clip, window_samples=window) for clip in clips]
    fast = Spectrogram.from_audio_clips(audio, clip_df, window_samples=window)
    assert len(fast) == len(slow)
    for s, f in zip(slow, fast):
        assert f.shape == s.shape
        np.testing.assert_array_equal(f.spectrogram, s.spectrogram)
        np.testing.assert_array_equal(f.times, s.times)
    pairs = list(zip(clip_df.start_time, clip_df.end_time))
    np.testing.assert_array_equal(Spectrogram.from_audio_clips(audio, pairs[::-1], window_samples=window)[0]
                                  .spectrogram, slow[-1].spectrogram)


def test_clip_spectrograms_straight_from_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(COMPUTE, "block_bytes", 50_000)  # runs of 0.4 M samples: several runs per file
    path = tmp_path / "stereo.wav"
    soundfile.write(path, (np.random.default_rng(2).standard_normal((32000 * 40 + 11, 2)) * 0.1).astype(np.float32),
                    32000, subtype="PCM_16")
    clips, clip_df = Audio.from_file(path).split(5, clip_overlap=1, final_clip="extend")
    slow = [MelSpectrogram.from_audio(clip, n_mels=32) for clip in clips]
    fast = MelSpectrogram.from_audio_clips(path, clip_df, n_mels=32)
    for s, f in zip(slow, fast, strict=True):
        np.testing.assert_array_equal(f.spectrogram, s.spectrogram)


def test_mel_spectrogram_equals_librosa_reference():
    audio = Audio.from_file(sample_data.birds(), duration=2)
    for kwargs in [dict(n_mels=64), dict(n_mels=40, htk=True, norm=None), dict(n_mels=32, fmin=500, fmax=8000)]:
        mel = MelSpectrogram.from_audio(audio, window_samples=1024, dB_scale=False, **kwargs)
        _, _, power = scipy.signal.spectrogram(audio.samples.astype(np.float64), fs=audio.sample_rate,
                                               window="hann", nperseg=1024, noverlap=512, scaling="spectrum")
        fmin, fmax = kwargs.get("fmin", 0.0), kwargs.get("fmax", audio.sample_rate / 2)
        reference = librosa.feature.melspectrogram(S=power, sr=audio.sample_rate, n_fft=1024,
                                                   n_mels=kwargs["n_mels"], fmin=fmin, fmax=fmax,
                                                   htk=kwargs.get("htk", False), norm=kwargs.get("norm", "slaney"))
        np.testing.assert_allclose(mel.spectrogram, reference, rtol=2e-3, atol=1e-12)
        np.testing.assert_allclose(mel.frequencies, librosa.mel_frequencies(
            kwargs["n_mels"] + 2, fmin=fmin, fmax=fmax, htk=kwargs.get("htk", False))[1:-1])
    # known Slaney mel scale: 200/3 Hz per mel below 1 kHz (15 mel), 27 mels per factor 6.4 above
    centres = MelSpectrogram.from_audio(audio, n_mels=40, fmax=8000).frequencies
    top = 15 + 27 * np.log(8) / np.log(6.4)  # 8 kHz in mels
    step = top / 41  # 40 bands: 42 evenly spaced edges from 0 to 8 kHz
    np.testing.assert_allclose(centres[:3], [step * 200 / 3, 2 * step * 200 / 3, 3 * step * 200 / 3], rtol=1e-9)
    newer = MelSpectrogram.from_audio(audio, n_mels=40, f_min=0, f_max=8000, mel_scale="slaney")
    np.testing.assert_array_equal(newer.frequencies, centres)


def test_constructor_validation_errors():
    z = np.zeros((3, 4))
    good = (np.arange(3.0), np.arange(4.0))
    for args, message in [
        ((np.array([["a", "b"]]), np.arange(1.0), np.arange(2.0)), "numeric"),
        ((np.zeros(3), *good), "2-D"),
        ((z, np.zeros((3, 1)), good[1]), "1-D"),
        ((z, np.arange(2.0), good[1]), "does not match"),
        ((z, good[0], np.arange(5.0)), "does not match"),
    ]:
        with pytest.raises(TypeError, match=message):
            Spectrogram(*args)
        with pytest.raises(ValueError, match=message):
            Spectrogram(*args)
    for limits in [(-20, -100), (-100,), "loud", (-100, np.nan)]:
        with pytest.raises(SpectrogramInputError, match="decibel_limits"):
            Spectrogram(z, *good, limits)
    spec = Spectrogram(z, *good, (-90, -10))  # decibel_limits is the 4th argument, as in OpenSoundscape 0.9
    assert spec.decibel_limits == (-90, -10) and spec.window_samples is None
    assert Spectrogram([[1, 2]], [0.0], [0.0, 1.0]).shape == (1, 2)  # array-likes are accepted


def test_plots_accept_the_documented_arguments(tmp_path):
    import matplotlib.pyplot as plt

    spec = Spectrogram.from_audio(tone(3000))
    ax = spec.plot(inline=False, fname=tmp_path / "spec.png", show_colorbar=True)
    assert (tmp_path / "spec.png").stat().st_size > 1000 and len(ax.figure.axes) == 2
    ax = MelSpectrogram.from_audio(tone(3000)).plot(True, tmp_path / "mel.pdf", False)
    assert (tmp_path / "mel.pdf").exists() and ax.get_ylabel().startswith("frequency")
    plt.close("all")


def test_image_path_in_float32_equals_the_float64_reference():
    spec = Spectrogram.from_audio(Audio.from_file(sample_data.birds(), duration=2))
    fast = spec.to_image(return_type="np")
    slow = 1 - np.clip((spec.spectrogram[::-1].astype(np.float64) + 100) / 80, 0, 1)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast[0], slow, atol=1e-6)
    pixels = np.asarray(spec.to_image())
    assert np.abs(pixels.astype(int) - np.round(slow * 255)).max() <= 1


def test_fft_threads_do_not_change_values(monkeypatch):
    audio = Audio.from_file(sample_data.birds(), duration=2)
    single = Spectrogram.from_audio(audio).spectrogram
    monkeypatch.setattr(COMPUTE, "fft_workers", 2)
    np.testing.assert_array_equal(Spectrogram.from_audio(audio).spectrogram, single)


def test_clip_spectrograms_past_where_a_decoder_stopped_are_silence():
    """A decoder that stops before the length its header gave: the clips after that point are silence."""
    sr = 8000
    samples = np.random.default_rng(3).normal(0, 0.1, 4 * sr).astype(np.float32)
    heard = samples.copy()
    heard[2 * sr:] = 0  # what is left once the decoder gave up at 2 s

    def stops_at_2_s(first, stop, size):
        stop = min(stop, 2 * sr)
        return (samples[i: min(stop, i + size)] for i in range(first, stop, size))

    bounds = [(0, 1), (1, 2), (2, 3), (3, 4)]
    got = Spectrogram._clips(lambda a, b: samples[a:b], stops_at_2_s, len(samples), sr, bounds, {})
    expected = Spectrogram.from_audio_clips(Audio(heard, sr), bounds)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g.spectrogram, e.spectrogram)
    assert got[0].spectrogram.std() > 1 and np.ptp(got[3].spectrogram) == 0  # sound, then the silence floor
