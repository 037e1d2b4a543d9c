"""Every fast path gives what the slow, obvious implementation gives (tolerance stated per test).

* prediction's runs of clips (:class:`opso_nb.ml.clip_runs.ClipRunPipeline`) against the preprocessor run
  clip by clip: bit-identical tensors, and scores equal to scoring each clip alone;
* RIBBIT's clips scored together (one Welch call per clip length) against a clip-by-clip loop kept here:
  bit-identical scores;
* training that keeps preprocessed samples between epochs against training that makes them again:
  bit-identical losses and weights.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.signal
import soundfile
import torch

from opso_nb.ml import datasets
from opso_nb.ml.clip_runs import ClipRunPipeline
from opso_nb.ml.cnn import CNN
from opso_nb.ml.prediction import predict
from opso_nb.ml.utils import make_tone_dataset
from opso_nb.preprocess.actions import Action, AudioClipLoader, tensor_add_noise
from opso_nb.preprocess.preprocessors import SpectrogramPreprocessor
from opso_nb.ribbit import RibbitParams, _clip_scores, ribbit, run_ribbit
from opso_nb.sample import AudioSample
from opso_nb.spectrogram import Spectrogram
from tests._prediction_stub import direct_scores, tiny_model, write_bad_file, write_test_wav

torch.set_num_threads(1)


def clip_by_clip(preprocessor, path, times):
    """The reference: each clip through the whole pipeline on its own."""
    return torch.stack([preprocessor.forward(AudioSample(str(path), start_time=s, duration=e - s),
                                             bypass_augmentations=True).data for s, e in times])


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rec")
    rng = np.random.default_rng(0)
    out = {}
    for rate, seconds in [(8000, 21.3), (22050, 12.0), (32000, 9.1)]:
        t = np.arange(int(seconds * rate)) / rate
        x = 0.3 * np.sin(2 * np.pi * 900 * t * (1 + t / 20)) * (1 + np.sin(t)) / 2 + 0.05 * rng.standard_normal(len(t))
        out[rate] = folder / f"mono_{rate}.wav"
        soundfile.write(out[rate], x.astype(np.float32), rate, subtype="PCM_16")
    stereo = rng.standard_normal((int(7.3 * 16000), 2)) * [0.1, 0.3]
    out["stereo"] = folder / "stereo.wav"
    soundfile.write(out["stereo"], stereo.astype(np.float32), 16000, subtype="FLOAT")
    return out


# ------------------------------------------------------------------------------------------ runs of clips
@pytest.mark.parametrize("rate", [8000, 22050, 32000, "stereo"])
@pytest.mark.parametrize("settings", [
    dict(sample_duration=2.0),  # OpenSoundscape's default tensor: 224 x 224 x 3
    dict(sample_duration=1.5, height=64, width=80, channels=1),
    dict(sample_duration=3.0, out_shape=None),  # the spectrogram's own size, no resize
])
def test_runs_of_clips_equal_the_pipeline_clip_by_clip(recordings, rate, settings):
    """Clips of a split (with overlap, hop-aligned or not), a clip past the end and a clip that needs
    padding in the middle of the file: identical tensors (tolerance 0)."""
    path = recordings[rate]
    duration = soundfile.info(str(path)).duration
    pre = SpectrogramPreprocessor(**settings)
    d = pre.sample_duration
    starts = np.arange(0, duration - d / 2, d * 0.6)
    times = np.stack([starts, starts + d], axis=1)
    times = np.vstack([times, [[0.25, 0.25 + d / 2], [duration - 0.4, duration + d]]])  # padded in the middle; past the end
    rows, fast = ClipRunPipeline.plan(pre)(path, times)
    # every clip but the one padded in the middle of the file is batched
    assert rows.tolist() == [k for k in range(len(times)) if k != len(times) - 2]
    assert fast.is_contiguous() and fast.dtype == torch.float32
    assert torch.equal(fast, clip_by_clip(pre, path, times[rows]))


def test_mel_invert_and_bandpass_settings(recordings):
    pre = SpectrogramPreprocessor(sample_duration=2.0, height=48, width=48, channels=3)
    pre.pipeline["to_spec"].set(mel=True, n_mels=40, window_samples=256)
    pre.pipeline["bandpass"].set(min_f=300, max_f=3000)
    pre.pipeline["to_tensor"].invert = True
    pre.pipeline["rescale"].set(input_mean=0.2, input_std=0.7)
    times = np.array([[0.0, 2.0], [2.0, 4.0], [3.3, 5.3]])
    rows, fast = ClipRunPipeline.plan(pre)(recordings[22050], times)
    assert rows.tolist() == [0, 1, 2]
    assert torch.equal(fast, clip_by_clip(pre, recordings[22050], times))
    _, nhwc = ClipRunPipeline.plan(pre)(recordings[22050], times, torch.channels_last)  # the network's layout
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and torch.equal(nhwc, fast)


def test_pipelines_without_a_batched_form_are_left_to_the_clip_by_clip_path(recordings):
    pre = SpectrogramPreprocessor(sample_duration=2.0)
    assert ClipRunPipeline.plan(pre, bypass_augmentations=False) is None  # augmentations are random
    assert ClipRunPipeline.plan(pre, bypass_augmentations=True) is not None
    pre.insert_action("noise", Action(tensor_add_noise, std=0.1), after_key="rescale")
    assert ClipRunPipeline.plan(pre) is None  # an unknown step
    pre.remove_action("noise")
    pre.pipeline["trim_audio"].extend = False
    assert ClipRunPipeline.plan(pre) is None  # short clips are refused clip by clip, not padded
    resampling = SpectrogramPreprocessor(sample_duration=2.0)
    resampling.pipeline["load_audio"] = AudioClipLoader(sample_rate=16000)
    plan = ClipRunPipeline.plan(resampling)
    rows, data = plan(recordings[8000], np.array([[0.0, 2.0]]))  # another rate: resampled clip by clip
    assert len(rows) == 0 and data is None
    rows, _ = plan(recordings["stereo"], np.array([[0.0, 2.0]]))  # already at 16 kHz: batched
    assert rows.tolist() == [0]


def test_clips_spread_over_a_file_are_read_in_groups(recordings, monkeypatch):
    """Clips far apart are read separately: a read never spans more than twice the clips it serves."""
    from opso_nb.audio_io import AudioReader

    reads = []
    original = AudioReader.read
    monkeypatch.setattr(AudioReader, "read", lambda self, a, b, **kw: reads.append(b - a) or original(self, a, b, **kw))
    pre = SpectrogramPreprocessor(sample_duration=1.0, height=32, width=32, channels=1)
    times = np.array([[0.0, 1.0], [1.0, 2.0], [10.0, 11.0], [19.0, 20.0], [19.5, 20.5]])
    rows, fast = ClipRunPipeline.plan(pre)(recordings[8000], times)
    assert sorted(reads) == [8000, 12000, 16000]  # three groups: 0-2 s, 10-11 s, 19-20.5 s
    assert torch.equal(fast, clip_by_clip(pre, recordings[8000], times))


def count_clip_by_clip(model, monkeypatch):
    calls = []
    forward = model.preprocessor.forward
    monkeypatch.setattr(model.preprocessor, "forward", lambda *a, **k: calls.append(a[0].start_time) or forward(*a, **k))
    return calls


def test_predict_scores_equal_each_clip_scored_alone(recordings, tmp_path, monkeypatch):
    """predict (runs of clips, prefetch thread) against the obvious loop: preprocess, forward, one clip at a time.
    Tolerance 1e-5: batched and single-clip forward passes may round differently."""
    model = tiny_model(sample_duration=2.0)
    files = [recordings[8000], write_test_wav(tmp_path / "b.wav", 9.0, seed=5)]
    calls = count_clip_by_clip(model, monkeypatch)
    scores = predict(model, files, batch_size=4, chunk_clips=3, overlap_fraction=0.25, final_clip="extend",
                     progress=False)
    assert calls == []  # every clip went through runs of clips
    monkeypatch.undo()
    assert len(scores) == 15 + 6  # starts every 1.5 s; "extend" keeps the last, padded clips
    for (f, s, e), row in scores.iterrows():
        np.testing.assert_allclose(row.to_numpy(), direct_scores(model, f, s, e), rtol=1e-5, atol=1e-5)


def test_a_run_with_bad_samples_still_scores_its_good_clips(tmp_path, monkeypatch):
    """NaN samples make the run's read fail: the clips are then done one by one, and only those with NaN fail."""
    model = tiny_model(sample_duration=2.0)
    path = write_bad_file(tmp_path / "nan.wav", "nan", duration=8.0)  # NaN from 4 s on
    calls = count_clip_by_clip(model, monkeypatch)
    with pytest.warns(UserWarning, match="could not be scored"):
        scores, failures = predict(model, [path], batch_size=4, progress=False, return_invalid_samples=True)
    assert calls == [0.0, 2.0, 4.0, 6.0]
    monkeypatch.undo()
    assert scores.notna().all(axis=1).tolist() == [True, True, False, False]
    assert failures["start_time"].tolist() == [4.0, 6.0]
    for (f, s, e), row in scores.iloc[:2].iterrows():
        np.testing.assert_allclose(row.to_numpy(), direct_scores(model, f, s, e), rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------------------- RIBBIT
def clip_scores_one_by_one(net, times, amp_rate, clips, pulse_rate_range, nfft, offset=0.0):
    """The reference: one Welch PSD per clip (scipy's default segments, as OpenSoundscape)."""
    scores = np.full(len(clips), np.nan)
    for i, (start, end) in enumerate(clips):
        a, b = np.searchsorted(times, [start - offset - 5e-7, end - offset - 5e-7], side="left")
        seg = net[a:b]
        if len(seg) >= 4:
            freqs, psd = scipy.signal.welch(seg, fs=amp_rate, nperseg=min(256, len(seg)),
                                            nfft=max(nfft, min(256, len(seg))), detrend="constant")
            in_range = (freqs >= pulse_rate_range[0]) & (freqs <= pulse_rate_range[1])
            scores[i] = psd[in_range].max() if in_range.any() else np.nan
    return scores


def test_ribbit_clips_scored_together_equal_one_by_one():
    rng = np.random.default_rng(3)
    amp_rate = 93.75
    times = (np.arange(30000) + 0.5) / amp_rate
    net = np.abs(np.sin(2 * np.pi * 12 * times)) + rng.random(len(times))
    # clips of 1-4 s, overlapping and not, some too short to score, one past the end, one with an offset
    starts = np.concatenate([np.arange(0, 300, 1.7), [310.0, 319.98]])
    clips = np.stack([starts, starts + rng.choice([1.0, 2.0, 4.0, 0.02], len(starts))], axis=1)
    for offset in (0.0, 12.5):
        fast = _clip_scores(net, times, amp_rate, clips, (8, 20), 1024, offset=offset)
        slow = clip_scores_one_by_one(net, times, amp_rate, clips, (8, 20), 1024, offset=offset)
        np.testing.assert_array_equal(fast, slow)
        assert np.isnan(fast).sum() >= 1 and np.isfinite(fast).sum() > 100


def test_run_ribbit_on_a_long_file_equals_ribbit_on_its_whole_spectrogram(tmp_path):
    """Chunks streamed from the file (300 s each, here 20 s) against one spectrogram of the whole file."""
    rate = 8000
    t = np.arange(int(61 * rate)) / rate
    x = 0.1 * np.sin(2 * np.pi * 1500 * t) * (((t * 10) % 1) < 0.5) + 0.02 * np.random.default_rng(4).standard_normal(len(t))
    path = tmp_path / "pulses.wav"
    soundfile.write(path, x.astype(np.float32), rate, subtype="FLOAT")
    params = RibbitParams(signal_band=(1300, 1700), noise_bands=[(100, 900)], pulse_rate_range=(5, 15),
                          clip_duration=2.0)
    scores, failures = run_ribbit([path], [params], chunk_duration=20.0, progress=False)
    assert failures.empty
    whole = Spectrogram.from_audio_file(path, window_samples=params.window_samples,
                                        overlap_samples=params.overlap_samples, decibel_limits=(-200, 0))
    ref = ribbit(whole, **params.ribbit_kwargs())
    np.testing.assert_allclose(scores[params.species].to_numpy(), ref["score"].to_numpy(), rtol=1e-5)
    assert scores[params.species].idxmax()[1] >= 0 and (ref["score"] > 0).all()


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    return make_tone_dataset(folder, n_per_class=6, duration=1.0, sample_rate=8000)


def train_twice(labels, tmp_path, max_bytes, monkeypatch):
    monkeypatch.setattr(datasets.CACHE, "max_bytes", max_bytes)
    torch.manual_seed(0)
    model = CNN("resnet18", list(labels.columns), 1.0, sample_shape=(32, 32, 1), weights=None, device="cpu",
                verbose=0, use_amp=False)
    for key, action in model.preprocessor.pipeline.items():
        if action.is_augmentation:
            action.bypass = True
    calls = []
    forward = model.preprocessor.forward
    monkeypatch.setattr(model.preprocessor, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    model.train(labels, labels, epochs=3, batch_size=4, save_path=tmp_path, save_interval=0,
                invalid_samples_log=None)
    return model, len(calls)


def test_training_with_kept_samples_equals_training_that_remakes_them(tones, tmp_path, monkeypatch):
    """Augmentation off: samples kept from the first epoch give the same losses and weights (tolerance 0),
    and the second and third epochs make no sample at all."""
    cached, n_cached = train_twice(tones, tmp_path / "a", 2**30, monkeypatch)
    fresh, n_fresh = train_twice(tones, tmp_path / "b", 0, monkeypatch)
    n = len(tones)
    assert n_fresh == 3 * 2 * n  # 3 epochs of training and validation
    assert n_cached == 2 * n  # the first epoch's training and validation only
    assert cached.loss_hist == fresh.loss_hist
    for (k, a), b in zip(cached.network.state_dict().items(), fresh.network.state_dict().values()):
        assert torch.equal(a, b), k
    pd.testing.assert_frame_equal(cached.valid_metrics, fresh.valid_metrics)


def test_kept_samples_are_dropped_when_settings_change_and_never_kept_with_augmentation(tones):
    pre = SpectrogramPreprocessor(sample_duration=1.0, height=16, width=16, channels=1)
    ds = datasets.AudioFileDataset(tones, pre, bypass_augmentations=True, cache_bytes=2**20)
    assert ds.begin_epoch() == 0
    first = ds[0].data
    assert ds.begin_epoch() == 1 and ds[0].data is first  # kept
    pre.pipeline["bandpass"].max_f = 2000
    assert ds.begin_epoch() == 0 and not torch.equal(ds[0].data, first)  # settings changed: made again
    small = datasets.AudioFileDataset(tones, pre, bypass_augmentations=True, cache_bytes=first.nbytes * 2)
    small.begin_epoch()
    [small[i] for i in range(len(tones))]
    assert small.begin_epoch() == 2  # the budget holds two samples
    augmenting = datasets.AudioFileDataset(tones, pre, bypass_augmentations=False, cache_bytes=2**20)
    augmenting.begin_epoch()
    augmenting[0]
    assert augmenting.begin_epoch() == 0


# ---------------------------------------------------------------------------------------------- threading
def test_openmp_waiters_sleep_unless_told_otherwise():
    code = "import os, opso_nb; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = lambda e: subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True).stdout.strip()
    assert run(env) == "PASSIVE"
    assert run({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
