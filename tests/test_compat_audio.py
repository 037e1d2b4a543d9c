"""OpenSoundscape 0.9 compatibility of audio, spectrogram, utils and aru: names, signatures, numbers.

``CLAIMED`` lists every documented name this area provides, with the
parameters (in order) and defaults of the 0.9 manual and API; each is checked
to exist with that signature (opso_nb may add parameters after them). Names
left out on purpose are in ``docs/differences/audio.md``. Then the manual's
own audio/spectrogram tutorial (chapter 5) runs with the import swapped, and
known answers check the numbers: a pure tone's frequency and power, clip times
at the ends of files for every ``final_clip`` mode.
"""
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

import opso_nb
from opso_nb import aru, audio, sample_data, spectrogram, utils
from opso_nb.audio import Audio
from opso_nb.spectrogram import MelSpectrogram, Spectrogram

REQUIRED = inspect.Parameter.empty
F32 = np.float32

#: (object, [(parameter, default or REQUIRED), ...]) as documented for OpenSoundscape 0.9.
CLAIMED = {
    # audio
    "audio.Audio": (audio.Audio, [("samples", REQUIRED), ("sample_rate", REQUIRED), ("resample_type", "soxr_hq"),
                                  ("metadata", None)]),
    "audio.Audio.from_file": (audio.Audio.from_file, [
        ("path", REQUIRED), ("sample_rate", None), ("resample_type", "soxr_hq"), ("dtype", F32),
        ("load_metadata", True), ("offset", 0), ("duration", None), ("start_timestamp", None),
        ("out_of_bounds_mode", "warn")]),
    "audio.Audio.from_bytesio": (audio.Audio.from_bytesio, [("bytesio", REQUIRED), ("sample_rate", None),
                                                            ("resample_type", "soxr_hq")]),
    "audio.Audio.silence": (audio.Audio.silence, [("duration", REQUIRED), ("sample_rate", REQUIRED)]),
    "audio.Audio.noise": (audio.Audio.noise, [("duration", REQUIRED), ("sample_rate", REQUIRED), ("color", "white"),
                                              ("dBFS", -10)]),
    "audio.Audio.spawn": (audio.Audio.spawn, []),
    "audio.Audio._spawn": (audio.Audio._spawn, []),
    "audio.Audio.trim": (audio.Audio.trim, [("start_time", REQUIRED), ("end_time", REQUIRED)]),
    "audio.Audio.extend": (audio.Audio.extend, [("duration", REQUIRED)]),
    "audio.Audio.extend_to": (audio.Audio.extend_to, [("duration", REQUIRED)]),
    "audio.Audio.extend_by": (audio.Audio.extend_by, [("duration", REQUIRED)]),
    "audio.Audio.loop": (audio.Audio.loop, [("length", None), ("n", None)]),
    "audio.Audio.resample": (audio.Audio.resample, [("sample_rate", REQUIRED), ("resample_type", None)]),
    "audio.Audio.apply_gain": (audio.Audio.apply_gain, [("dB", REQUIRED), ("clip_range", (-1, 1))]),
    "audio.Audio.normalize": (audio.Audio.normalize, [("peak_level", None), ("peak_dBFS", None)]),
    "audio.Audio.bandpass": (audio.Audio.bandpass, [("low_f", REQUIRED), ("high_f", REQUIRED), ("order", REQUIRED)]),
    "audio.Audio.lowpass": (audio.Audio.lowpass, [("cutoff_f", REQUIRED), ("order", REQUIRED)]),
    "audio.Audio.highpass": (audio.Audio.highpass, [("cutoff_f", REQUIRED), ("order", REQUIRED)]),
    "audio.Audio.spectrum": (audio.Audio.spectrum, []),
    "audio.Audio.split": (audio.Audio.split, [("clip_duration", REQUIRED), ("clip_overlap", 0), ("final_clip", None)]),
    "audio.Audio.split_and_save": (audio.Audio.split_and_save, [
        ("destination", REQUIRED), ("prefix", REQUIRED), ("clip_duration", REQUIRED), ("clip_overlap", 0),
        ("final_clip", None), ("dry_run", False)]),
    "audio.Audio.save": (audio.Audio.save, [("path", REQUIRED), ("metadata_format", "opso"),
                                            ("soundfile_subtype", None), ("soundfile_format", None),
                                            ("suppress_warnings", False)]),
    "audio.Audio.show_widget": (audio.Audio.show_widget, [("normalize", False), ("autoplay", False)]),
    "audio.Audio.time_to_sample": (audio.Audio.time_to_sample, [("time", REQUIRED)]),
    "audio.load_channels_as_audio": (audio.load_channels_as_audio, [
        ("path", REQUIRED), ("sample_rate", None), ("resample_type", "soxr_hq"), ("dtype", F32), ("offset", 0),
        ("duration", None), ("metadata", True)]),
    "audio.concat": (audio.concat, [("audio_objects", REQUIRED), ("sample_rate", None)]),
    "audio.mix": (audio.mix, [("audio_objects", REQUIRED), ("duration", None), ("gain", -3), ("offsets", None),
                              ("sample_rate", None), ("clip_range", (-1, 1))]),
    "audio.bandpass_filter": (audio.bandpass_filter, [("signal", REQUIRED), ("low_f", REQUIRED), ("high_f", REQUIRED),
                                                      ("sample_rate", REQUIRED), ("order", 9)]),
    "audio.butter_bandpass": (audio.butter_bandpass, [("low_f", REQUIRED), ("high_f", REQUIRED),
                                                      ("sample_rate", REQUIRED), ("order", 9)]),
    "audio.clipping_detector": (audio.clipping_detector, [("samples", REQUIRED), ("threshold", 0.6)]),
    "audio.estimate_delay": (audio.estimate_delay, [
        ("primary_audio", REQUIRED), ("reference_audio", REQUIRED), ("max_delay", REQUIRED),
        ("bandpass_range", None), ("bandpass_order", 9), ("cc_filter", "phat"), ("return_cc_max", False),
        ("skip_ref_bandpass", False)]),
    "audio.parse_opso_metadata": (audio.parse_opso_metadata, [("comment_string", REQUIRED)]),
    "audio.generate_opso_metadata_str": (audio.generate_opso_metadata_str, [("metadata_dictionary", REQUIRED),
                                                                            ("version", "v0.1")]),
    # spectrogram
    "spectrogram.Spectrogram": (spectrogram.Spectrogram, [
        ("spectrogram", REQUIRED), ("frequencies", REQUIRED), ("times", REQUIRED), ("decibel_limits", REQUIRED),
        ("window_samples", None), ("overlap_samples", None), ("window_type", None), ("audio_sample_rate", None),
        ("scaling", None)]),
    "spectrogram.Spectrogram.from_audio": (spectrogram.Spectrogram.from_audio, [
        ("audio", REQUIRED), ("window_type", "hann"), ("window_samples", None), ("window_length_sec", None),
        ("overlap_samples", None), ("overlap_fraction", None), ("fft_size", None), ("decibel_limits", (-100, -20)),
        ("dB_scale", True), ("scaling", "spectrum")]),
    "spectrogram.Spectrogram.amplitude": (spectrogram.Spectrogram.amplitude, [("freq_range", None)]),
    "spectrogram.Spectrogram.bandpass": (spectrogram.Spectrogram.bandpass, [
        ("min_f", REQUIRED), ("max_f", REQUIRED), ("out_of_bounds_ok", True)]),
    "spectrogram.Spectrogram.limit_db_range": (spectrogram.Spectrogram.limit_db_range, [("min_db", -100),
                                                                                        ("max_db", -20)]),
    "spectrogram.Spectrogram.linear_scale": (spectrogram.Spectrogram.linear_scale, [("feature_range", (0, 1))]),
    "spectrogram.Spectrogram.min_max_scale": (spectrogram.Spectrogram.min_max_scale, [("feature_range", (0, 1))]),
    "spectrogram.Spectrogram.net_amplitude": (spectrogram.Spectrogram.net_amplitude, [("signal_band", REQUIRED),
                                                                                      ("reject_bands", None)]),
    "spectrogram.Spectrogram.plot": (spectrogram.Spectrogram.plot, [("inline", True), ("fname", None),
                                                                    ("show_colorbar", False)]),
    "spectrogram.Spectrogram.to_image": (spectrogram.Spectrogram.to_image, [
        ("shape", None), ("channels", 1), ("colormap", None), ("invert", False), ("return_type", "pil")]),
    "spectrogram.Spectrogram.trim": (spectrogram.Spectrogram.trim, [("start_time", REQUIRED), ("end_time", REQUIRED)]),
    "spectrogram.MelSpectrogram.from_audio": (spectrogram.MelSpectrogram.from_audio, [
        ("audio", REQUIRED), ("window_type", "hann"), ("window_samples", None), ("window_length_sec", None),
        ("overlap_samples", None), ("overlap_fraction", None), ("fft_size", None), ("decibel_limits", (-100, -20)),
        ("dB_scale", True), ("scaling", "spectrum"), ("n_mels", 64), ("norm", "slaney"), ("htk", False)]),
    "spectrogram.MelSpectrogram.plot": (spectrogram.MelSpectrogram.plot, [("inline", True), ("fname", None),
                                                                          ("show_colorbar", False)]),
    # utils
    "utils.binarize": (utils.binarize, [("x", REQUIRED), ("threshold", REQUIRED)]),
    "utils.generate_clip_times_df": (utils.generate_clip_times_df, [
        ("full_duration", REQUIRED), ("clip_duration", REQUIRED), ("clip_overlap", 0), ("final_clip", None),
        ("rounding_precision", 10)]),
    "utils.hex_to_time": (utils.hex_to_time, [("s", REQUIRED)]),
    "utils.identity": (utils.identity, [("x", REQUIRED)]),
    "utils.inrange": (utils.inrange, [("x", REQUIRED), ("r", REQUIRED)]),
    "utils.isNan": (utils.isNan, [("x", REQUIRED)]),
    "utils.jitter": (utils.jitter, [("x", REQUIRED), ("width", REQUIRED), ("distribution", "gaussian")]),
    "utils.linear_scale": (utils.linear_scale, [("array", REQUIRED), ("in_range", (0, 1)), ("out_range", (0, 255))]),
    "utils.load_metadata": (utils.load_metadata, [("path", REQUIRED), ("raise_exceptions", False)]),
    "utils.make_clip_df": (utils.make_clip_df, [
        ("files", REQUIRED), ("clip_duration", REQUIRED), ("clip_overlap", 0), ("final_clip", None),
        ("return_invalid_samples", False), ("raise_exceptions", False)]),
    "utils.min_max_scale": (utils.min_max_scale, [("array", REQUIRED), ("feature_range", (0, 1))]),
    "utils.overlap": (utils.overlap, [("r1", REQUIRED), ("r2", REQUIRED)]),
    "utils.overlap_fraction": (utils.overlap_fraction, [("r1", REQUIRED), ("r2", REQUIRED)]),
    "utils.rescale_features": (utils.rescale_features, [("X", REQUIRED), ("rescaling_vector", None)]),
    "utils.sigmoid": (utils.sigmoid, [("x", REQUIRED)]),
    # aru
    "aru.audiomoth_start_time": (aru.audiomoth_start_time, [("file", REQUIRED), ("filename_timezone", "UTC"),
                                                            ("to_utc", False)]),
    "aru.parse_audiomoth_metadata": (aru.parse_audiomoth_metadata, [("metadata", REQUIRED)]),
    "aru.parse_audiomoth_metadata_from_path": (aru.parse_audiomoth_metadata_from_path, [("file_path", REQUIRED)]),
}

#: Documented names that are classes, exceptions or attributes (no signature to compare).
CLAIMED_NAMES = {
    audio: ["Audio", "AudioOutOfBoundsError", "OpsoLoadAudioInputError"],
    utils: ["GetDurationError"],
    opso_nb: ["Audio", "Spectrogram"],
}
SPECTROGRAM_ATTRIBUTES = ["spectrogram", "frequencies", "times", "decibel_limits", "window_samples",
                          "overlap_samples", "window_type", "audio_sample_rate", "scaling", "duration",
                          "window_length", "window_start_times", "window_step"]
AUDIO_ATTRIBUTES = ["samples", "sample_rate", "metadata", "duration", "rms", "dBFS", "resample_type"]


def _documented_parameters(obj):
    params = list(inspect.signature(obj).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return params


@pytest.mark.parametrize("name", sorted(CLAIMED))
def test_claimed_name_has_the_documented_signature(name):
    obj, expected = CLAIMED[name]
    params = _documented_parameters(obj)
    got = [(p.name, p.default) for p in params[: len(expected)]]
    for (want_name, want_default), (got_name, got_default) in zip(expected, got):
        assert got_name == want_name, f"{name}: parameter {got_name!r} where the manual has {want_name!r}"
        if want_default is not REQUIRED:
            assert got_default == want_default, f"{name}({want_name}=...): default {got_default!r}, " \
                                                f"manual {want_default!r}"
        elif name != "spectrogram.Spectrogram":  # opso_nb gives decibel_limits a default (-100, -20)
            assert got_default is REQUIRED, f"{name}: {want_name} should be required"
    assert len(got) == len(expected), f"{name}: missing parameters {expected[len(got):]}"
    for extra in params[len(expected):]:  # opso_nb additions must not break positional calls
        assert extra.default is not REQUIRED or extra.kind in (extra.VAR_POSITIONAL, extra.VAR_KEYWORD), \
            f"{name}: added parameter {extra.name} has no default"


def test_other_claimed_names_and_attributes_exist():
    for module, names in CLAIMED_NAMES.items():
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name} is missing"
    assert issubclass(audio.AudioOutOfBoundsError, audio.OpsoLoadAudioInputError)
    spec = Spectrogram.from_audio(Audio.from_file(sample_data.birds(), duration=1))
    for attribute in SPECTROGRAM_ATTRIBUTES:
        getattr(spec, attribute)
    loaded = Audio.from_file(sample_data.birds(), duration=1)
    for attribute in AUDIO_ATTRIBUTES:
        getattr(loaded, attribute)


def test_the_manuals_audio_tutorial_runs_after_the_import_swap(tmp_path):
    """OpenSoundscape 0.9 manual, chapter 5, on its own 60 s 32 kHz file (bundled), with the printed results."""
    from opso_nb import Audio, Spectrogram  # "from opensoundscape import Audio, Spectrogram"

    audio_filename = str(sample_data.audiomoth_1min())
    image_save_path = tmp_path / "saved_spectrogram.png"
    Spectrogram.from_audio(Audio.from_file(audio_filename)).to_image(shape=(224, 224), invert=True).save(
        image_save_path)
    assert image_save_path.stat().st_size > 0
    audio_object = Audio.from_file(audio_filename)
    assert repr(audio_object) == "<Audio(samples=(1920000,), sample_rate=32000)>"
    assert Audio.from_file(audio_filename, offset=2.0, duration=1.0).duration == 1.0
    assert len(audio_object.samples) == 1920000 and audio_object.sample_rate == 32000
    assert Audio.from_file(audio_filename, sample_rate=22050).sample_rate == 22050
    audio_object.save(tmp_path / "my_audio.wav")
    assert f"{audio_object.rms:0.3f}" == "0.013" and f"{audio_object.dBFS:0.1f}" == "-34.5"
    trimmed = audio_object.trim(0, 5)
    assert trimmed.duration == 5.0
    clips, clip_df = audio_object.split(clip_duration=5, clip_overlap=0, final_clip=None)
    assert clips[0].duration == 5.0 and clip_df.head(3).values.tolist() == [[0, 5], [5, 10], [10, 15]]
    _, clip_df = audio_object.split(clip_duration=5, clip_overlap=2.5, final_clip=None)
    assert clip_df.start_time.head().tolist() == [0.0, 2.5, 5.0, 7.5, 10.0]
    clip_df = audio_object.split_and_save(destination=str(tmp_path / "temp_audio"), prefix="audio_clip_",
                                          clip_duration=5, clip_overlap=0, final_clip=None)
    assert Path(clip_df.index[0]).name == "audio_clip__0.0s_5.0s.wav" and len(clip_df) == 12
    assert len(list((tmp_path / "temp_audio").glob("*.wav"))) == 12
    clip_df = audio_object.split_and_save(destination="./temp_audio", prefix="audio_clip_", clip_duration=5,
                                          clip_overlap=-5, final_clip=None, dry_run=True)
    assert clip_df.index.tolist()[1] == "temp_audio/audio_clip__10.0s_15.0s.wav" and len(clip_df) == 6
    assert not Path("./temp_audio").exists()
    assert trimmed.extend(trimmed.duration * 2).duration == 10.0
    assert trimmed.loop(trimmed.duration * 1.5).duration == 7.5 and trimmed.loop(n=5).duration == 25.0
    assert trimmed.resample(sample_rate=48000).sample_rate == 48000
    fft_spectrum, frequencies = trimmed.spectrum()
    bandpassed = trimmed.bandpass(low_f=1000, high_f=5000, order=9)
    band_spectrum, _ = bandpassed.spectrum()
    outside = (frequencies < 300) | (frequencies > 9000)
    assert band_spectrum[outside].sum() < 1e-3 * fft_spectrum[outside].sum()
    spec = Spectrogram.from_audio(Audio.from_file(audio_filename))
    np.testing.assert_allclose(spec.times[0:5], [0.008, 0.016, 0.024, 0.032, 0.04])
    np.testing.assert_allclose(spec.frequencies[0:5], [0.0, 62.5, 125.0, 187.5, 250.0])
    low_rate = Audio.from_file(audio_filename, sample_rate=22000).trim(0, 5)
    assert Spectrogram.from_audio(low_rate, window_samples=55, overlap_samples=0).window_step == pytest.approx(0.0025)
    assert Spectrogram.from_audio(low_rate, window_samples=1100, overlap_samples=0).frequencies[1] == 20
    image = spec.to_image()
    assert type(image).__name__ == "Image" and image.size == (spec.shape[1], spec.shape[0])
    assert spec.to_image(shape=(512, 512)).size == (512, 512)
    spec_trimmed = Spectrogram.from_audio(trimmed).trim(1.7, 3.9)
    spec_bandpassed = spec_trimmed.bandpass(5500, 9500)
    assert spec_bandpassed.frequencies.min() >= 5500 and spec_bandpassed.frequencies.max() <= 9500
    high_freq_amplitude = spec_trimmed.amplitude(freq_range=[8000, 8500])
    assert high_freq_amplitude.shape == spec_trimmed.times.shape


def test_pure_tone_known_answers():
    sr, amplitude = 32000, 0.5
    t = np.arange(sr * 2) / sr
    tone = Audio(amplitude * np.sin(2 * np.pi * 2500 * t), sr)
    power, freqs = tone.spectrum()
    assert freqs[np.argmax(power)] == 2500.0
    spec = Spectrogram.from_audio(tone, decibel_limits=(-200, 0))
    row = int(np.argmax(spec.spectrogram.mean(axis=1)))
    assert spec.frequencies[row] == 2500.0  # bin 40 of 62.5 Hz
    # "spectrum" scaling: a sine of amplitude A carries A**2/2 of power in its bin; the Hann window's leakage puts
    # a quarter of that in each neighbouring bin
    np.testing.assert_allclose(10 ** (spec.spectrogram[row - 1: row + 2].mean(axis=1) / 10),
                               np.array([0.25, 1, 0.25]) * amplitude**2 / 2, rtol=0.01)
    mel = MelSpectrogram.from_audio(tone, n_mels=128, window_samples=2048)
    assert mel.frequencies[np.argmax(mel.spectrogram.mean(axis=1))] == pytest.approx(2500, rel=0.03)


@pytest.mark.parametrize(
    "final_clip, expected",
    [
        (None, [(0, 5), (5, 10)]),
        ("remainder", [(0, 5), (5, 10), (10, 10.5)]),
        ("full", [(0, 5), (5, 10), (5.5, 10.5)]),
        ("extend", [(0, 5), (5, 10), (10, 15)]),
    ],
)
def test_clip_times_at_the_end_of_a_10_5_s_file(tmp_path, final_clip, expected):
    path = tmp_path / "ten_and_a_half.wav"
    soundfile.write(path, np.linspace(-0.5, 0.5, int(10.5 * 8000), dtype=np.float32), 8000, subtype="FLOAT")
    table = utils.make_clip_df([path], 5, final_clip=final_clip)
    assert [(s, e) for _, s, e in table.index] == expected
    clips, clip_df = Audio.from_file(path).split(5, final_clip=final_clip)
    assert list(zip(clip_df.start_time, clip_df.end_time)) == expected
    assert [c.duration for c in clips] == [e - s for s, e in expected]
    if final_clip == "extend":
        assert np.all(clips[-1].samples[4000:] == 0)  # padded with silence after 10.5 s
    if final_clip == "full":
        np.testing.assert_array_equal(clips[-1].samples, Audio.from_file(path, offset=5.5).samples)


@pytest.mark.parametrize("final_clip, expected", [(None, [(0, 3)]), ("remainder", [(0, 3)]), ("full", [(0, 3)]),
                                                  ("extend", [(0, 5)])])
def test_audio_shorter_than_one_clip(tmp_path, final_clip, expected):
    path = tmp_path / "three.wav"
    soundfile.write(path, np.zeros(3 * 8000, np.float32), 8000)
    assert [(s, e) for _, s, e in utils.make_clip_df([path], 5, final_clip=final_clip).index] == expected
    clips, _ = Audio.from_file(path).split(5, final_clip=final_clip)
    assert [c.duration for c in clips] == [e - s for s, e in expected]


def test_label_table_input_of_make_clip_df(tmp_path):
    soundfile.write(tmp_path / "a.wav", np.zeros(8000 * 12), 8000)
    labels = pd.DataFrame({"present": [1]}, index=[str(tmp_path / "a.wav")])
    table = utils.make_clip_df(labels, 5, final_clip="remainder")
    assert table["present"].tolist() == [1, 1, 1] and table.index.get_level_values("end_time").tolist() == [5, 10, 12]
