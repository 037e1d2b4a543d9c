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


# ---------------------------------------------------------------- wave 2: safe loading, parity
import io  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402

import scipy.signal  # noqa: E402

from opso_nb import audio as audio_module  # noqa: E402
from opso_nb.audio import (  # noqa: E402
    LIMITS,
    AudioEmptyError,
    AudioFileNotFoundError,
    AudioFormatError,
    AudioHeaderError,
    AudioIsADirectoryError,
    AudioNonFiniteError,
    AudioNonFiniteWarning,
    AudioNotAFileError,
    AudioPermissionError,
    AudioReader,
    AudioTooLargeError,
    clipping_detector,
    estimate_delay,
    load_channels_as_audio,
)


def wav_bytes(sample_rate=32000, channels=1, bits=16, tag=1, n_frames=8000, data_size=None, block_align=None):
    """A WAV file built field by field, so any header field can lie."""
    data = (np.random.default_rng(0).standard_normal(n_frames * channels) * 1000).astype("<i2").tobytes()
    align = (channels * bits // 8) % 65536 if block_align is None else block_align
    fmt = struct.pack("<HHIIHH", tag, channels, sample_rate, (sample_rate * align) % 2**32, align, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_lying_sample_rate_is_refused_before_any_large_allocation(tmp_path):
    path = tmp_path / "liar.wav"
    path.write_bytes(wav_bytes(sample_rate=2_147_483_647))
    assert 15_000 < path.stat().st_size < 17_000  # the 16 KB file of the issue
    tracemalloc.start()
    try:
        with pytest.raises(AudioHeaderError) as info:
            Audio.from_file(path, duration=1).extend_to(1)  # what a clip loader padding to full length does
        with pytest.raises(AudioHeaderError):
            audio_info(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # not 8 GiB
    err = info.value
    assert str(path) in str(err) and err.path == str(path)
    assert err.field == "sample rate" and err.value == 2_147_483_647
    assert "2,147,483,647 Hz" in str(err) and "LIMITS.max_sample_rate" in str(err)
    assert isinstance(err, AudioLoadError) and isinstance(err, ValueError)


def test_lying_header_cannot_exhaust_memory_in_a_capped_process(tmp_path):
    """Same regression with the address space capped at 2 GiB: an 8 GiB padding would die, the check does not."""
    path = tmp_path / "liar.wav"
    path.write_bytes(wav_bytes(sample_rate=2_147_483_647))
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
        from opso_nb.audio import Audio, AudioHeaderError
        try:
            Audio.from_file({str(path)!r}, duration=1).extend_to(1)
        except AudioHeaderError as err:
            print("refused:", err.field)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "refused: sample rate"


@pytest.mark.parametrize(
    "fields, field",
    [
        (dict(channels=0), "channels"),
        (dict(channels=300), "channels"),
        (dict(bits=0), "bits per sample"),
        (dict(bits=128), "bytes per sample"),
        (dict(block_align=0), "block align"),
        (dict(sample_rate=0), "sample rate"),
    ],
)
def test_impossible_header_fields_are_named(tmp_path, fields, field):
    path = tmp_path / "bad.wav"
    path.write_bytes(wav_bytes(**fields))
    with pytest.raises(AudioHeaderError, match=field) as info:
        Audio.from_file(path)
    assert info.value.field == field and str(path) in str(info.value)


def test_limits_are_adjustable_and_checked_for_every_format(tmp_path):
    path = tmp_path / "ultra.flac"
    soundfile.write(path, np.zeros(1000, np.float32), 384000)
    assert Audio.from_file(path).sample_rate == 384000
    with LIMITS.param.update(max_sample_rate=200_000):
        with pytest.raises(AudioHeaderError, match="sample rate"):
            Audio.from_file(path)
    with LIMITS.param.update(max_duration=0.001):
        with pytest.raises(AudioHeaderError, match="frames") as info:
            audio_info(path)
        assert info.value.field == "frames"
    assert Audio.from_file(path).n_samples == 1000  # limits restored


def test_memory_estimate_refuses_oversized_loads_and_edits(ramp_wav):
    path, samples, sr = ramp_wav  # 20 s at 8 kHz: 640 KB as float32
    with LIMITS.param.update(max_memory_bytes=100_000):
        with pytest.raises(AudioTooLargeError, match="max_memory_bytes") as info:
            Audio.from_file(path)
        assert info.value.n_bytes == 20 * sr * 4 and isinstance(info.value, MemoryError)
        clip = Audio.from_file(path, offset=3, duration=2)  # 64 KB: fine
        np.testing.assert_array_equal(clip.samples, samples[3 * sr: 5 * sr] / 32768)
        tracemalloc.start()
        try:
            for attempt in (lambda: clip.extend_to(3600), lambda: clip.loop(3600), lambda: clip.resample(10**6),
                            lambda: mix([clip], duration=3600), lambda: Audio.silence(3600, 8000)):
                with pytest.raises(AudioTooLargeError):
                    attempt()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 200_000


def test_reads_in_blocks_equal_a_plain_soundfile_read(tmp_path, monkeypatch):
    """Slow reference: soundfile.read of the whole file (float32); block boundaries must not show."""
    monkeypatch.setattr(AudioReader, "block_frames", 1000)
    rng = np.random.default_rng(3)
    stereo = (rng.standard_normal((20_011, 2)) * 0.2).astype(np.float32)
    cases = [("m16.wav", stereo[:, 0], "PCM_16"), ("s16.wav", stereo, "PCM_16"), ("s24.wav", stereo, "PCM_24"),
             ("sf.wav", stereo, "FLOAT"), ("m.flac", stereo[:, 0], "PCM_16"), ("s.flac", stereo, "PCM_24")]
    for name, data, subtype in cases:
        path = tmp_path / name
        soundfile.write(path, data, 8000, subtype=subtype)
        reference, _ = soundfile.read(path, dtype="float32", always_2d=True)
        np.testing.assert_array_equal(Audio.from_file(path, mono=False).samples, reference.T)
        np.testing.assert_allclose(Audio.from_file(path).samples, reference.mean(axis=1), atol=1e-7)
        part = Audio.from_file(path, offset=0.7, duration=1.3, mono=False).samples
        np.testing.assert_array_equal(part, reference[5600:5600 + 10400].T)
    mp3 = sample_data.path("toads/gpt1.mp3")
    reference, _ = soundfile.read(mp3, dtype="float32", frames=48000)
    np.testing.assert_allclose(Audio.from_file(mp3, duration=1).samples, reference, atol=1e-6)


def test_nan_and_inf_samples_are_reported_with_file_and_time(tmp_path):
    samples = np.zeros(16000, np.float32)
    samples[8000] = np.nan
    samples[12000] = np.inf
    path = tmp_path / "nan.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioNonFiniteError) as info:
        Audio.from_file(path)
    err = info.value
    assert err.time == pytest.approx(0.5) and str(path) in str(err) and "0.500 s" in str(err)
    assert isinstance(err, AudioLoadError)
    with pytest.raises(AudioNonFiniteError, match="0.750 s"):
        Audio.from_file(path, offset=0.6)
    assert Audio.from_file(path, duration=0.4).duration == 0.4  # the clean part loads
    with pytest.warns(AudioNonFiniteWarning, match="replaced 2"):
        repaired = Audio.from_file(path, non_finite="zero")
    assert np.isfinite(repaired.samples).all() and repaired.samples[8000] == 0
    with pytest.raises(AudioNonFiniteError):
        Audio.from_bytesio(path.read_bytes())
    with pytest.raises(ValueError, match="non_finite"):
        Audio.from_file(path, non_finite="ignore")


def test_clear_messages_for_paths_that_are_not_readable_audio(tmp_path):
    with pytest.raises(AudioFileNotFoundError, match="does not exist") as info:
        Audio.from_file(tmp_path / "nope.wav")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(AudioIsADirectoryError, match="folder") as info:
        Audio.from_file(tmp_path)
    assert isinstance(info.value, IsADirectoryError)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioEmptyError, match=r"empty \(0 bytes\)") as info:
        Audio.from_file(tmp_path / "empty.wav")
    assert isinstance(info.value, EOFError)
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioNotAFileError, match="named pipe") as info:  # and no hang waiting for a writer
        Audio.from_file(fifo)
    assert "empty" not in str(info.value)
    with pytest.raises(AudioNotAFileError, match="is a device"):
        Audio.from_file("/dev/null")
    notes = tmp_path / "notes.mp3"
    notes.write_text("field notes: three wood thrushes at dawn\n" * 30)
    with pytest.raises(AudioFormatError, match="not an audio file") as info:
        Audio.from_file(notes)
    assert "text" in str(info.value) and "field notes" in str(info.value)
    assert "does not exist" not in str(info.value) and "pipe" not in str(info.value)
    (tmp_path / "image.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(AudioFormatError, match="PNG image"):
        audio_info(tmp_path / "image.wav")


def test_permission_denied_is_named(tmp_path):
    path = tmp_path / "locked.wav"
    soundfile.write(path, np.zeros(100, np.float32), 8000)
    path.chmod(0)
    code = textwrap.dedent(f"""
        import os
        from opso_nb.audio import Audio, AudioPermissionError
        if os.geteuid() == 0:  # root reads anything: test as an unprivileged user
            os.setgid(65534); os.setuid(65534)
        try:
            Audio.from_file({str(path)!r})
        except AudioPermissionError as err:
            print(type(err).__mro__[2].__name__, "|", err.reason)
    """)
    tmp_path.chmod(0o755)
    tmp_path.parent.chmod(0o755)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    kind, reason = out.stdout.strip().split(" | ")
    assert kind == "PermissionError"
    assert reason.startswith("permission denied") and "System error" not in reason


def test_errors_survive_pickling_for_worker_processes(tmp_path):
    path = tmp_path / "liar.wav"
    path.write_bytes(wav_bytes(channels=0))
    with pytest.raises(AudioHeaderError) as info:
        Audio.from_file(path)
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is AudioHeaderError and str(back) == str(info.value) and back.field == "channels"


def test_file_names_that_are_not_utf8_load(tmp_path):
    name = os.fsencode(tmp_path) + b"/caf\xe9_dawn.wav"  # Latin-1 name from an old SD card
    soundfile.write(io.BytesIO(), np.zeros(10), 8000, format="WAV")
    with open(name, "wb") as handle:
        handle.write(wav_bytes(n_frames=800, sample_rate=8000))
    audio = Audio.from_file(name)
    assert audio.duration == 0.1
    assert audio_info(os.fsdecode(name)).frames == 800  # the surrogate-escaped str form works too
    with open(os.fsencode(tmp_path) + b"/bad\xff.wav", "wb") as handle:
        handle.write(b"RIFF")
    with pytest.raises(AudioLoadError) as info:
        Audio.from_file(os.fsencode(tmp_path) + b"/bad\xff.wav")
    assert os.fsencode(info.value.path).endswith(b"/bad\xff.wav")  # lossless round trip


def test_metadata_follows_opensoundscape(tmp_path):
    t = np.arange(32000) / 16000
    path = tmp_path / "tone.wav"
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 1000 * t), 16000, subtype="PCM_16")
    audio = Audio.from_file(path)
    meta = audio.metadata
    assert {k: meta[k] for k in ("samplerate", "format", "frames", "subtype", "duration", "channels")} == dict(
        samplerate=16000, format="WAV", frames=32000, subtype="PCM_16", duration=2.0, channels=1)
    assert audio.trim(0.5, 1.0).metadata["duration"] == 0.5
    assert audio.extend_to(3).metadata["duration"] == 3.0
    assert audio.extend_by(1).metadata["duration"] == 3.0
    assert audio.loop(n=2).metadata["duration"] == 4.0
    resampled = audio.resample(8000).metadata
    assert resampled["samplerate"] == 8000 and resampled["duration"] == 2.0
    assert Audio.from_file(path, offset=0.5, duration=0.5).metadata["duration"] == 0.5
    assert Audio.from_file(path, load_metadata=False).metadata is None
    assert Audio(np.zeros(10), 10).metadata is None
    assert audio.metadata["duration"] == 2.0  # edits never change the original


def test_save_writes_and_rereads_opso_metadata(tmp_path):
    original = Audio.from_file(sample_data.audiomoth_metadata())
    clip = original.trim(2, 3)
    meta = dict(clip.metadata, artist="AudioMoth 24526B065D325963", note="checked by ear", score=0.75)
    clip = clip.spawn(metadata=meta)
    clip.save(tmp_path / "opso.wav")
    back = Audio.from_file(tmp_path / "opso.wav").metadata
    assert back["recording_start_time"] == dt.datetime(2020, 4, 4, 10, 25, 2, tzinfo=dt.timezone.utc)
    assert back["note"] == "checked by ear" and back["score"] == 0.75 and back["device_id"] == meta["device_id"]
    assert back["comment"] == original.metadata["comment"]  # the AudioMoth sentence, not the JSON
    assert back["duration"] == 1.0 and back["gain_setting"] == 2
    raw = soundfile.SoundFile(tmp_path / "opso.wav").copy_metadata()
    assert raw["comment"].startswith("opso_metadata{") and raw["artist"] == meta["artist"]
    clip.save(tmp_path / "plain.wav", metadata_format="soundfile")
    raw = soundfile.SoundFile(tmp_path / "plain.wav").copy_metadata()
    assert raw == {"artist": meta["artist"], "comment": original.metadata["comment"]}
    clip.save(tmp_path / "none.wav", metadata_format=None)
    assert soundfile.SoundFile(tmp_path / "none.wav").copy_metadata() == {}
    with pytest.raises(ValueError, match="metadata_format"):
        clip.save(tmp_path / "x.wav", metadata_format="id3")


def test_load_channels_as_audio(tmp_path):
    data = np.stack([np.full(80, 0.1), np.full(80, 0.2)], axis=1).astype(np.float32)
    soundfile.write(tmp_path / "st.wav", data, 8, subtype="FLOAT")
    left, right = load_channels_as_audio(tmp_path / "st.wav")
    np.testing.assert_array_equal(left.samples, data[:, 0])
    np.testing.assert_array_equal(right.samples, data[:, 1])
    assert right.metadata["channel"] == "2 of 2" and right.metadata["channels"] == 1
    assert load_channels_as_audio(tmp_path / "st.wav", metadata=False)[0].metadata is None
    assert load_channels_as_audio(tmp_path / "st.wav", offset=5, duration=2)[0].n_samples == 16


def test_spawn_and_extend_by():
    audio = tone(1000, 0.5, sr=8000)
    copy = audio.spawn(sample_rate=4000)
    assert copy.sample_rate == 4000 and copy.samples is audio.samples and audio.sample_rate == 8000
    assert audio._spawn(metadata={"a": 1}).metadata == {"a": 1}
    with pytest.raises(TypeError, match="unexpected"):
        audio.spawn(rate=3)
    longer = audio.extend_by(0.25)
    assert longer.duration == 0.75 and np.all(longer.samples[4000:] == 0)
    with pytest.raises(ValueError):
        audio.extend_by(-1)
    assert audio.loop(length=1.2).duration == audio.loop(duration=1.2).duration == 1.2


def test_mix_offsets_gain_and_clipping_known_values():
    a, b = Audio(np.full(10, 0.5), 10), Audio(np.full(5, 0.4), 10)
    # OpenSoundscape's default gain is -3 dB for every input
    np.testing.assert_allclose(mix([a, b]).samples[:5], 0.9 * 10 ** (-3 / 20), rtol=1e-6)
    np.testing.assert_allclose(mix([a, b], gain=0, offsets=[0, 0.8]).samples,
                               [0.5] * 8 + [0.9, 0.9] + [0.4] * 3, rtol=1e-6)
    np.testing.assert_allclose(mix([a, b], gain=0, offsets=[0.2, 0.8], duration=1.5).samples,
                               [0, 0] + [0.5] * 6 + [0.9] * 4 + [0.4, 0, 0], rtol=1e-6)
    loud = mix([a, a, a], gain=0)
    assert loud.samples.max() == 1.0  # clipped
    assert mix([a, a, a], gain=0, clip_range=None).samples.max() == pytest.approx(1.5)
    faster = Audio(np.ones(10), 20)  # resampled to the first input's rate
    assert mix([a, faster], gain=0).sample_rate == 10
    assert concat([a, faster]).sample_rate == 10 and concat([a, faster]).duration == pytest.approx(1.5)
    with pytest.raises(ValueError, match="one gain and one offset"):
        mix([a, b], offsets=[0])


def test_clipping_detector_counts_values_above_threshold():
    assert clipping_detector(np.array([0.1, 0.7, -0.8, 0.6]), 0.6) == 1
    assert clipping_detector(Audio(np.array([0.99, 1.0, 0.5]), 3), threshold=0.95) == 2


@pytest.mark.parametrize("cc_filter", ["phat", "cc", "roth", "scot"])
def test_estimate_delay_recovers_a_known_delay(cc_filter):
    sr = 16000
    rng = np.random.default_rng(7)
    pulse = np.zeros(sr)
    pulse[4000:4400] = rng.standard_normal(400) * np.hanning(400)  # a broadband click: one clear peak
    reference = Audio(pulse + 0.05 * rng.standard_normal(sr), sr)
    delayed = Audio(np.roll(pulse, 200) + 0.05 * rng.standard_normal(sr), sr)
    delay = estimate_delay(delayed, reference, max_delay=0.05, bandpass_range=(2000, 4000), cc_filter=cc_filter)
    assert delay == pytest.approx(200 / sr, abs=1 / sr)
    delay, peak = estimate_delay(reference, delayed, max_delay=0.05, frequency_range=(2000, 4000),
                                 return_cc_max=True)
    assert delay == pytest.approx(-200 / sr, abs=1 / sr) and peak > 0
    assert audio_module.bandpass_filter is not None and audio_module.butter_bandpass is not None


def test_integer_samples_scale_like_libsndfile(tmp_path):
    pcm = np.array([-32768, 0, 16384, 32767], dtype=np.int16)
    soundfile.write(tmp_path / "i.wav", pcm, 8000, subtype="PCM_16")
    np.testing.assert_array_equal(Audio(pcm, 8000).samples, Audio.from_file(tmp_path / "i.wav").samples)
    np.testing.assert_array_equal(Audio(np.array([0, 128, 255], np.uint8), 8).samples, [-1.0, 0.0, 127 / 128])
    with pytest.raises(TypeError):
        Audio(np.array(["a"]), 8)
    assert Audio.from_file(tmp_path / "i.wav", dtype=np.float64).samples.dtype == np.float64


def test_trim_out_of_bounds_modes():
    audio = tone(duration=1.0, sr=1000)
    assert audio.trim(0.5, 2).duration == 0.5
    with pytest.warns(UserWarning, match="outside the audio"):
        audio.trim(0.5, 2, out_of_bounds_mode="warn")
    with pytest.raises(AudioOutOfBoundsError):
        audio.trim(-1, 0.5, out_of_bounds_mode="raise")
