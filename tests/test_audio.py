"""Audio: loading, segments, editing, errors. Known answers throughout."""
import datetime as dt

import numpy as np
import pytest
import soundfile

from opso_nb import sample_data
from opso_nb.audio import (
    Audio,
    AudioLoadError,
    AudioOutOfBoundsError,
    AudioTruncatedWarning,
    audio_info,
    concat,
    load_envelope,
    mix,
)

SR = 32000


def tone(freq=1000.0, duration=1.0, sr=SR, amplitude=0.5):
    t = np.arange(int(duration * sr)) / sr
    return Audio(amplitude * np.sin(2 * np.pi * freq * t), sr)


@pytest.fixture
def ramp_wav(tmp_path):
    """A 20 s file whose sample values encode their own index (exact segment checks)."""
    sr = 8000
    samples = (np.arange(20 * sr) % 30000).astype(np.int16)
    path = tmp_path / "ramp.wav"
    soundfile.write(path, samples, sr, subtype="PCM_16")
    return path, samples, sr


def test_bundled_soundscape_matches_documented_numbers():
    audio = Audio.from_file(sample_data.audiomoth_1min())
    assert audio.samples.shape == (1_920_000,)
    assert audio.sample_rate == 32000
    assert audio.duration == 60.0
    assert round(audio.rms, 3) == 0.013
    assert round(audio.dBFS, 1) == -34.5
    assert repr(audio) == "<Audio(samples=(1920000,), sample_rate=32000)>"


def test_offset_duration_read_equals_slicing_the_full_file(ramp_wav):
    path, samples, sr = ramp_wav
    full = Audio.from_file(path)
    part = Audio.from_file(path, offset=12.5, duration=3.25)
    assert part.duration == 3.25
    np.testing.assert_array_equal(part.samples, full.samples[int(12.5 * sr): int(15.75 * sr)])
    np.testing.assert_array_equal(part.samples, full.trim(12.5, 15.75).samples)


def test_offset_past_end_raises_and_overrun_warns(ramp_wav):
    path, _, _ = ramp_wav
    with pytest.raises(AudioOutOfBoundsError, match="past the end"):
        Audio.from_file(path, offset=25)
    with pytest.warns(UserWarning, match="runs past the end"):
        tail = Audio.from_file(path, offset=18, duration=5)
    assert tail.duration == pytest.approx(2.0)
    with pytest.raises(AudioOutOfBoundsError):
        Audio.from_file(path, offset=18, duration=5, out_of_bounds_mode="raise")


def test_resample_on_load_and_out_of_place(ramp_wav):
    path, _, _ = ramp_wav
    audio = Audio.from_file(path, duration=2)
    resampled = audio.resample(22050)
    assert resampled.sample_rate == 22050 and audio.sample_rate == 8000
    assert len(resampled.samples) == 2 * 22050
    assert Audio.from_file(path, sample_rate=16000, duration=1).samples.shape == (16000,)


def test_resampled_tone_keeps_its_frequency():
    audio = tone(1000, 1.0, sr=48000).resample(16000)
    power, freqs = audio.spectrum()
    assert freqs[np.argmax(power)] == pytest.approx(1000, abs=1)


@pytest.mark.parametrize(
    "final_clip, expected",
    [
        (None, [(0, 5), (5, 10)]),
        ("remainder", [(0, 5), (5, 10), (10, 12)]),
        ("full", [(0, 5), (5, 10), (7, 12)]),
        ("extend", [(0, 5), (5, 10), (10, 15)]),
    ],
)
def test_split_final_clip_modes(final_clip, expected):
    audio = tone(duration=12.0, sr=1000)
    clips, clip_df = audio.split(5, final_clip=final_clip)
    assert list(map(tuple, clip_df[["start_time", "end_time"]].values)) == [tuple(map(float, e)) for e in expected]
    durations = [c.duration for c in clips]
    last = {None: 5, "remainder": 2, "full": 5, "extend": 5}[final_clip]
    assert durations[-1] == pytest.approx(last)
    if final_clip == "extend":  # padded with silence
        assert np.all(clips[-1].samples[2000:] == 0)


def test_split_overlap_and_gaps():
    audio = tone(duration=60.0, sr=1000)
    _, df = audio.split(5, clip_overlap=2.5)
    assert df.start_time.tolist()[:5] == [0, 2.5, 5.0, 7.5, 10.0]
    clips, df = audio.split(5, clip_overlap=0)
    assert len(clips) == 12 and clips[0].duration == 5.0
    _, gaps = audio.split(5, clip_overlap=-5)
    assert gaps.start_time.tolist() == [0, 10, 20, 30, 40, 50]


def test_short_audio_is_one_clip():
    _, df = tone(duration=3.0, sr=1000).split(5)
    assert df.values.tolist() == [[0.0, 3.0]]


def test_split_and_save_names_and_dry_run(tmp_path):
    audio = tone(duration=12.0, sr=8000)
    df = audio.split_and_save(tmp_path / "clips", "audio_clip_", 5, dry_run=True)
    assert not (tmp_path / "clips").exists()
    assert df.index.name == "file" and len(df) == 2
    df = audio.split_and_save(tmp_path / "clips", "audio_clip_", 5)
    assert df.index[0].endswith("audio_clip__0.0s_5.0s.wav")
    assert Audio.from_file(df.index[1]).duration == 5.0


def test_extend_and_loop():
    audio = tone(duration=5.0, sr=1000)
    extended = audio.extend_to(10)
    assert extended.duration == 10 and np.all(extended.samples[5000:] == 0)
    assert audio.loop(7.5).duration == 7.5
    assert audio.loop(n=5).duration == 25.0
    np.testing.assert_array_equal(audio.loop(n=2).samples[5000:], audio.samples)


def test_bandpass_removes_out_of_band_energy():
    sr = 32000
    audio = Audio(tone(300, 2, sr).samples + tone(3000, 2, sr).samples + tone(12000, 2, sr).samples, sr)
    filtered = audio.bandpass(1000, 5000, order=9)
    power, freqs = filtered.spectrum()
    near = lambda f: power[np.argmin(np.abs(freqs - f))]  # noqa: E731
    assert near(3000) > 1e4 * near(300)
    assert near(3000) > 1e4 * near(12000)
    with pytest.raises(ValueError, match="Nyquist"):
        audio.bandpass(1000, 20000, order=4)


def test_pure_tone_spectrum_peak():
    power, freqs = tone(2500, 1.0).spectrum()
    assert freqs[np.argmax(power)] == pytest.approx(2500, abs=1)


def test_normalize_and_gain():
    audio = tone(amplitude=0.25)
    assert np.max(np.abs(audio.normalize().samples)) == pytest.approx(1.0)
    assert np.max(np.abs(audio.normalize(peak_dBFS=-6).samples)) == pytest.approx(10 ** (-6 / 20), rel=1e-4)
    assert audio.apply_gain(6.0206).rms == pytest.approx(2 * audio.rms, rel=1e-3)
    assert np.max(audio.apply_gain(40).samples) <= 1.0  # clipped


def test_save_roundtrip_wav_and_flac(tmp_path):
    audio = tone(440, 0.5, sr=16000)
    for suffix in (".wav", ".flac"):
        path = tmp_path / f"t{suffix}"
        audio.save(path)
        back = Audio.from_file(path)
        assert back.sample_rate == 16000
        np.testing.assert_allclose(back.samples, audio.samples, atol=1 / 2**14)


@pytest.mark.parametrize("name", ["toads/gpt1.mp3", "formats/glacier-bay-humpback.ogg"])
def test_compressed_formats_load_segments(name):
    path = sample_data.path(name)
    info = audio_info(path)
    part = Audio.from_file(path, offset=2, duration=1.5)
    assert part.sample_rate == info.sample_rate
    assert part.duration == pytest.approx(1.5, abs=1e-3)
    assert np.abs(part.samples).max() > 0


def test_flac_written_at_run_time_reads_like_wav(tmp_path):
    audio = Audio.from_file(sample_data.birds(), duration=2)
    audio.save(tmp_path / "birds.flac")
    back = Audio.from_file(tmp_path / "birds.flac", offset=0.5, duration=1)
    np.testing.assert_allclose(back.samples, audio.trim(0.5, 1.5).samples, atol=1 / 2**14)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("corrupt/empty_2c.wav", "no audio samples"),
        ("corrupt/test-44100Hz-le-1ch-4bytes-incomplete-chunk.wav", "not a readable audio file"),
    ],
)
def test_corrupt_files_raise_named_errors(name, reason):
    path = sample_data.path(name)
    with pytest.raises(AudioLoadError, match=reason) as info:
        Audio.from_file(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)


def test_truncated_file_warns_and_loads_what_is_there():
    path = sample_data.path("corrupt/test-44100Hz-le-1ch-4bytes-early-eof.wav")
    with pytest.warns(AudioTruncatedWarning, match="truncated"):
        audio = Audio.from_file(path)
    assert audio.samples.shape == (236,)


def test_missing_empty_and_non_audio_files(tmp_path):
    with pytest.raises(AudioLoadError, match="does not exist"):
        Audio.from_file(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioLoadError, match="empty"):
        Audio.from_file(tmp_path / "empty.wav")
    (tmp_path / "notes.wav").write_text("these are field notes, not audio\n" * 20)
    with pytest.raises(AudioLoadError, match="not a readable audio file"):
        Audio.from_file(tmp_path / "notes.wav")


def test_stereo_is_mixed_to_mono_unless_asked():
    path = sample_data.path("corrupt/stereo.wav")
    assert Audio.from_file(path).samples.ndim == 1
    stereo = Audio.from_file(path, mono=False)
    assert stereo.samples.shape == (2, 5)
    np.testing.assert_allclose(Audio.from_file(path).samples, stereo.samples.mean(axis=0))


def test_audiomoth_metadata_and_start_timestamp():
    audio = Audio.from_file(sample_data.audiomoth_metadata(), duration=1)
    meta = audio.metadata
    assert meta["device_id"] == "AudioMoth 24526B065D325963"
    assert meta["gain_setting"] == 2
    assert meta["battery_state"] == 4.7
    start = meta["recording_start_time"]
    assert start == dt.datetime(2020, 4, 4, 10, 25, tzinfo=dt.timezone.utc)
    segment = Audio.from_file(sample_data.audiomoth_metadata(), start_timestamp=start + dt.timedelta(seconds=5),
                              duration=2)
    full = Audio.from_file(sample_data.audiomoth_metadata())
    np.testing.assert_array_equal(segment.samples, full.trim(5, 7).samples)
    with pytest.raises(AudioOutOfBoundsError):
        Audio.from_file(sample_data.audiomoth_metadata(), start_timestamp=start - dt.timedelta(seconds=1))
    with pytest.raises(AudioLoadError, match="recording_start_time"):
        Audio.from_file(sample_data.birds(), start_timestamp=start)


def test_unknown_metadata_is_empty_not_an_error():
    assert "recording_start_time" not in Audio.from_file(sample_data.birds()).metadata


def test_audiomoth_gps_comment_with_temperature():
    meta = Audio.from_file(sample_data.path("formats/audiomoth_gps.wav")).metadata
    assert meta["temperature_C"] == 12.8
    assert meta["gain_setting"] == "medium"
    assert meta["recording_start_time"] == dt.datetime(2024, 5, 28, 10, 0, tzinfo=dt.timezone.utc)


def test_envelope_streams_and_matches_direct_min_max(tmp_path):
    sr = 8000
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(sr * 30) * 0.1).astype(np.float32)
    soundfile.write(tmp_path / "n.wav", samples, sr, subtype="FLOAT")
    times, lower, upper = load_envelope(tmp_path / "n.wav", n_points=30, block_seconds=0.7)
    assert len(times) == 30 and times[1] == pytest.approx(1.0)
    np.testing.assert_allclose(upper, samples.reshape(30, -1).max(axis=1))
    np.testing.assert_allclose(lower, samples.reshape(30, -1).min(axis=1))


def test_mix_and_concat():
    a, b = tone(1000, 1.0), tone(2000, 0.5)
    assert concat([a, b]).duration == 1.5
    mixed = mix([a, b], gain=[0, -6])
    assert mixed.duration == 1.0
    np.testing.assert_allclose(mixed.samples[:16000], np.clip(a.samples[:16000] + b.samples * 10 ** (-6 / 20), -1, 1),
                               atol=1e-6)


def test_noise_level_and_colour():
    white = Audio.noise(2, 16000, dBFS=-20, seed=1)
    assert white.dBFS == pytest.approx(-20, abs=0.01)
    pink = Audio.noise(2, 16000, color="pink", seed=1)
    power, freqs = pink.spectrum()
    low = power[(freqs > 100) & (freqs < 200)].mean()
    high = power[(freqs > 4000) & (freqs < 8000)].mean()
    assert low > 10 * high


def test_from_bytesio_roundtrip():
    import io

    audio = tone(500, 0.25, sr=8000)
    buffer = io.BytesIO()
    soundfile.write(buffer, audio.samples, 8000, format="WAV", subtype="FLOAT")
    back = Audio.from_bytesio(buffer.getvalue())
    np.testing.assert_array_equal(back.samples, audio.samples)
