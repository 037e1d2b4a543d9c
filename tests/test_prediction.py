"""predict(): clip times for overlap/final-clip modes, batching, activations, failures, streaming."""
from __future__ import annotations

import contextlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from opso_nb.ml.prediction import (
    NetworkOutput,
    PredictionInterrupted,
    PredictionSettings,
    apply_activation,
    load_prediction_output,
    predict,
)
from opso_nb.store import RunSettingsChanged, RunStore
from tests._prediction_stub import direct_scores, tiny_model, tiny_preprocessor, write_test_wav

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wavs")
    a = write_test_wav(folder / "a.wav", 11.0, seed=1)
    b = write_test_wav(folder / "b.wav", 5.0, seed=2, freq=600)
    return [a, b]


@pytest.fixture(scope="module")
def model():
    return tiny_model(sample_duration=2.0)


def starts(df, file):
    return df.xs(str(file), level="file").index.get_level_values("start_time").tolist()


def test_plain_split_index_and_scores_match_clip_by_clip(model, wavs):
    scores = predict(model, wavs, batch_size=3, progress=False)
    assert list(scores.index.names) == ["file", "start_time", "end_time"]
    assert list(scores.columns) == ["frog", "bird"]
    # 11 s -> 5 full 2 s clips (remainder dropped), 5 s -> 2 clips
    assert starts(scores, wavs[0]) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert starts(scores, wavs[1]) == [0.0, 2.0]
    assert scores.index.get_level_values("file").unique().tolist() == [str(w) for w in wavs]
    for (f, s, e), row in scores.iterrows():
        np.testing.assert_allclose(row.to_numpy(), direct_scores(model, f, s, e), rtol=1e-5, atol=1e-5)
    assert scores.notna().all().all()


@pytest.mark.parametrize(
    "kwargs, expected_a",
    [
        (dict(overlap_fraction=0.5), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (dict(clip_overlap=1.0), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (dict(clip_overlap_fraction=0.25), [0, 1.5, 3, 4.5, 6, 7.5, 9]),
        (dict(final_clip="remainder"), [0, 2, 4, 6, 8, 10]),
        (dict(final_clip="full"), [0, 2, 4, 6, 8, 9]),
        (dict(final_clip="extend"), [0, 2, 4, 6, 8, 10]),
    ],
)
def test_overlap_and_final_clip_modes(model, wavs, kwargs, expected_a):
    scores = predict(model, wavs[:1], batch_size=4, progress=False, **kwargs)
    assert starts(scores, wavs[0]) == [float(x) for x in expected_a]
    ends = scores.index.get_level_values("end_time").to_numpy()
    if kwargs.get("final_clip") == "remainder":
        assert ends[-1] == 11.0
    elif kwargs.get("final_clip") == "extend":
        assert ends[-1] == 12.0
    else:
        assert ends[-1] == pytest.approx(starts(scores, wavs[0])[-1] + 2.0)
    assert scores.notna().all().all()


def test_conflicting_overlaps_rejected(model, wavs):
    with pytest.raises(ValueError, match="conflicting"):
        predict(model, wavs, clip_overlap=1.0, overlap_fraction=0.25, progress=False)
    with pytest.raises(ValueError, match="shorter than the sample duration"):
        predict(model, wavs, clip_overlap=2.0, progress=False)
    with pytest.raises(ValueError, match="activation_layer"):
        predict(model, wavs, activation_layer="relu", progress=False)


def test_batch_size_and_chunking_do_not_change_scores(model, wavs):
    ref = predict(model, wavs, batch_size=1, progress=False)
    other = predict(model, wavs, batch_size=5, chunk_clips=3, progress=False)
    pd.testing.assert_frame_equal(ref, other, atol=1e-5, rtol=1e-5)


def test_workers_give_same_table(model, wavs):
    ref = predict(model, wavs, batch_size=2, progress=False)
    par = predict(model, wavs, batch_size=2, num_workers=2, chunk_clips=2, progress=False)
    pd.testing.assert_frame_equal(ref, par, atol=1e-5, rtol=1e-5)


def test_activation_layers(model, wavs):
    raw = predict(model, wavs, progress=False)
    sig = predict(model, wavs, activation_layer="sigmoid", progress=False)
    soft = predict(model, wavs, activation_layer="softmax", progress=False)
    sl = predict(model, wavs, activation_layer="softmax_and_logit", progress=False)
    np.testing.assert_allclose(sig.to_numpy(), 1 / (1 + np.exp(-raw.to_numpy())), rtol=1e-5)
    np.testing.assert_allclose(soft.sum(axis=1).to_numpy(), 1.0, rtol=1e-5)
    p = soft.to_numpy()
    np.testing.assert_allclose(sl.to_numpy(), np.log(p / (1 - p)), rtol=1e-4, atol=1e-5)


def test_documented_softmax_values():
    # OpenSoundscape's tutorial: raw (-0.007259, 0.189202) -> softmax (0.451042, 0.548958)
    out = apply_activation(torch.tensor([[-0.007259, 0.189202], [-0.573235, 0.185848]]), "softmax")
    np.testing.assert_allclose(out.numpy(), [[0.451042, 0.548958], [0.318845, 0.681155]], atol=2e-6)
    extreme = apply_activation(torch.tensor([[0.0, 200.0]]), "softmax_and_logit")
    assert torch.isfinite(extreme).all()


def test_clip_table_input_and_unsplit_files(model, wavs):
    idx = pd.MultiIndex.from_tuples(
        [(str(wavs[1]), 1.0, 3.0), (str(wavs[0]), 0.5, 2.5), (str(wavs[1]), 3.0, 5.0)],
        names=["file", "start_time", "end_time"],
    )
    scores = predict(model, pd.DataFrame(index=idx), batch_size=2, progress=False)
    # grouped by file in first-appearance order, clip order kept within a file
    assert scores.index.tolist() == [idx[0], idx[2], idx[1]]
    for (f, s, e), row in scores.iterrows():
        np.testing.assert_allclose(row.to_numpy(), direct_scores(model, f, s, e), rtol=1e-5, atol=1e-5)
    whole = predict(model, wavs, split_files_into_clips=False, progress=False)
    assert whole.index.tolist() == [(str(wavs[0]), 0.0, 11.0), (str(wavs[1]), 0.0, 5.0)]
    columns = pd.DataFrame({"file": [str(wavs[0])], "start_time": [2.0], "end_time": [4.0]})
    by_columns = predict(model, columns, progress=False)
    assert by_columns.index.tolist() == [(str(wavs[0]), 2.0, 4.0)]


def test_corrupt_and_missing_files_reported_others_scored(model, wavs, tmp_path):
    from opso_nb import sample_data

    bad = [sample_data.corrupt_folder() / "empty_2c.wav", tmp_path / "missing.wav", tmp_path / "text.wav"]
    bad[2].write_text("not audio at all")
    log = tmp_path / "invalid.csv"
    with pytest.warns(UserWarning, match="could not be scored"):
        scores, invalid = predict(model, [bad[0], wavs[0], bad[1], bad[2], wavs[1]], return_invalid_samples=True,
                                  invalid_samples_log=log, progress=False)
    assert scores.index.get_level_values("file").unique().tolist() == [str(w) for w in wavs]
    assert scores.notna().all().all() and len(scores) == 7
    assert invalid["file"].tolist() == [str(b) for b in bad]
    assert "empty" in invalid["error"].iloc[0] and "does not exist" in invalid["error"].iloc[1]
    assert pd.read_csv(log)["file"].tolist() == [str(b) for b in bad]
    with pytest.raises(OSError, match="missing.wav"):
        predict(model, [wavs[0], bad[1]], raise_errors=True, progress=False)


def test_clip_past_end_gets_nan_row(model, wavs):
    idx = pd.MultiIndex.from_tuples([(str(wavs[1]), 0.0, 2.0), (str(wavs[1]), 30.0, 32.0)],
                                    names=["file", "start_time", "end_time"])
    with pytest.warns(UserWarning):
        scores, invalid = predict(model, pd.DataFrame(index=idx), return_invalid_samples=True, progress=False)
    assert scores.iloc[0].notna().all() and scores.iloc[1].isna().all()
    assert invalid[["start_time", "end_time"]].values.tolist() == [[30.0, 32.0]]
    assert "past the end" in invalid["error"].iloc[0]


def test_streaming_parts_manifest_and_resume(model, wavs, tmp_path):
    out = tmp_path / "run"
    ref = predict(model, wavs, batch_size=2, progress=False)
    first = predict(model, wavs, batch_size=2, progress=False, output_path=out)
    pd.testing.assert_frame_equal(first, ref)
    run = RunStore.existing(out)
    assert sorted(p.suffix for p in run.parts_folder.iterdir()) == [".parquet", ".parquet"]
    assert (run.folder / "manifest.json").exists() and (run.folder / "failures.csv").exists()
    # the parts folder reads directly as one dataset with the clip-table columns
    dataset = pd.read_parquet(run.parts_folder).set_index(["file", "start_time", "end_time"]).sort_index()
    pd.testing.assert_frame_equal(dataset, ref.sort_index())
    stored, invalid = load_prediction_output(out)
    pd.testing.assert_frame_equal(stored, ref)
    assert len(invalid) == 0
    # rerun: nothing to do, nothing recomputed
    calls = []
    again = predict(model, wavs, progress=False, output_path=out,
                    progress_callback=lambda d, t, f: calls.append(f))
    pd.testing.assert_frame_equal(again, ref)
    assert calls == []
    # a changed input file is redone, the other skipped
    changed = tmp_path / "b_copy.wav"
    shutil.copy(wavs[1], changed)
    files = [wavs[0], changed]
    predict(model, files, progress=False, output_path=out)
    write_test_wav(changed, 7.0, seed=5)
    calls.clear()
    redone = predict(model, files, progress=False, output_path=out, progress_callback=lambda d, t, f: calls.append(f))
    assert set(calls) == {str(changed)}
    assert starts(redone, changed) == [0.0, 2.0, 4.0]
    # different settings or a different model start a new run (named in a warning), never reuse old parts
    calls.clear()
    with pytest.warns(RunSettingsChanged, match=r"overlap: 0\.0 -> 1\.0"):
        predict(model, files, progress=False, output_path=out, overlap_fraction=0.5,
                progress_callback=lambda d, t, f: calls.append(f))
    assert set(calls) == {str(f) for f in files}
    calls.clear()
    with pytest.warns(RunSettingsChanged, match="output.network"):
        predict(tiny_model(sample_duration=2.0, seed=3), files, progress=False, output_path=out,
                overlap_fraction=0.5, progress_callback=lambda d, t, f: calls.append(f))
    assert set(calls) == {str(f) for f in files}
    assert len([p for p in out.iterdir() if p.is_dir()]) == 3
    # back to the first settings: that run is still there and resumes with nothing to do
    calls.clear()
    with pytest.warns(RunSettingsChanged):
        back = predict(model, files, progress=False, output_path=out, progress_callback=lambda d, t, f: calls.append(f))
    assert calls == []
    pd.testing.assert_frame_equal(back.loc[[str(wavs[0])]], ref.loc[[str(wavs[0])]])


def test_csv_parts_and_interrupt(model, wavs, tmp_path):
    out = tmp_path / "csvrun"
    with pytest.raises(PredictionInterrupted, match="resume"):
        predict(model, wavs, output_path=out, output_format="csv", progress=False, chunk_clips=1,
                progress_callback=lambda d, t, f: d < 5)
    stored, _ = load_prediction_output(out)
    assert stored.index.get_level_values("file").unique().tolist() == [str(wavs[0])]
    full = predict(model, wavs, output_path=out, output_format="csv", progress=False)
    ref = predict(model, wavs, progress=False)
    pd.testing.assert_frame_equal(full, ref, atol=1e-6, rtol=1e-6)


def test_settings_object(model, wavs):
    settings = PredictionSettings(overlap_fraction=0.5, activation_layer="sigmoid", batch_size=4)
    scores = settings.predict(model, wavs[1:], progress=False)
    assert starts(scores, wavs[1]) == [0.0, 1.0, 2.0, 3.0]
    assert ((scores >= 0) & (scores <= 1)).all().all()


# ----------------------------------------------------------------------------- with the real CNN
def test_real_cnn_predict_delegates_and_batches(wavs):
    from opso_nb.ml import cnn
    torch.manual_seed(0)
    model = cnn.CNN("resnet18", ["frog", "bird"], 2.0, preprocessor=tiny_preprocessor(2.0),
                    sample_shape=(32, 32, 1), weights=None, device="cpu", use_amp=False)  # exact float32
    model.network.train()  # predict must switch to eval (batch-norm running stats) and back
    scores = model.predict(wavs, batch_size=4, activation_layer="softmax", progress=False)
    assert model.network.training
    assert scores.shape == (7, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    model.network.eval()
    for (f, s, e), row in scores.iterrows():
        logits = direct_scores(model, f, s, e)
        np.testing.assert_allclose(row.to_numpy(), np.exp(logits) / np.exp(logits).sum(), rtol=1e-4, atol=1e-5)


def test_mixed_precision_scores_close_to_float32(wavs, tmp_path):
    from opso_nb.ml import cnn
    from opso_nb.ml.utils import autocast_dtype
    assert autocast_dtype("cpu", False) is None and autocast_dtype("cpu", True) == torch.bfloat16
    assert autocast_dtype("meta", True) is None
    torch.manual_seed(0)
    model = cnn.CNN("resnet18", ["frog", "bird"], 2.0, preprocessor=tiny_preprocessor(2.0),
                    sample_shape=(32, 32, 1), weights=None, device="cpu", use_amp=False)
    exact = model.predict(wavs, batch_size=4, activation_layer="softmax", progress=False)
    model.use_amp = True
    mixed = model.predict(wavs, batch_size=4, activation_layer="softmax", progress=False)
    assert not np.array_equal(exact.to_numpy(), mixed.to_numpy())  # bfloat16 maths really ran
    np.testing.assert_allclose(mixed.to_numpy(), exact.to_numpy(), atol=0.03)
    # precision is part of a streamed run's identity: switching it redoes the files instead of mixing them
    model.predict(wavs, batch_size=4, output_path=tmp_path / "out", progress=False)
    model.use_amp = False
    with pytest.warns(RunSettingsChanged, match="precision"):
        again = model.predict(wavs, batch_size=4, output_path=tmp_path / "out", progress=False)
    np.testing.assert_array_equal(again.to_numpy(), model.predict(wavs, batch_size=4, progress=False).to_numpy())


def test_save_load_round_trip_identical_scores(wavs, tmp_path):
    from opso_nb.ml import cnn
    torch.manual_seed(1)
    model = cnn.CNN("resnet18", ["frog", "bird"], 2.0, sample_shape=(32, 32, 1), weights=None, device="cpu")
    before = model.predict(wavs, batch_size=4, overlap_fraction=0.5, progress=False)
    model.save(tmp_path / "m.model")
    loaded = cnn.load_model(tmp_path / "m.model", device="cpu")
    after = loaded.predict(wavs, batch_size=4, overlap_fraction=0.5, progress=False)
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    assert before.notna().all().all() and before.to_numpy().std() > 0


def test_memory_flat_in_recording_length(model, tmp_path):
    """Streaming a 20-minute file needs no more memory than a 2-minute one (clips are read on demand)."""
    import tracemalloc

    short = write_test_wav(tmp_path / "short.wav", 120.0, seed=3)
    long = write_test_wav(tmp_path / "long.wav", 1200.0, seed=4)  # 9.6 M samples: 38 MB as float32
    peaks = {}
    for name, f in [("short", short), ("long", long)]:
        tracemalloc.start()
        predict(model, [f], batch_size=8, output_path=tmp_path / f"out_{name}", progress=False,
                return_scores=False)
        peaks[name] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    assert peaks["long"] < peaks["short"] + 5, peaks
    stored, _ = load_prediction_output(tmp_path / "out_long")
    assert len(stored) == 600


def test_streaming_clip_table_with_missing_file_and_changed_preprocessor(model, wavs, tmp_path):
    idx = pd.MultiIndex.from_tuples([(str(wavs[0]), 0.0, 2.0), (str(tmp_path / "gone.wav"), 0.0, 2.0)],
                                    names=["file", "start_time", "end_time"])
    out = tmp_path / "run"
    with pytest.warns(UserWarning):
        scores, invalid = predict(model, pd.DataFrame(index=idx), output_path=out, return_invalid_samples=True,
                                  progress=False)
    assert scores.iloc[0].notna().all() and scores.iloc[1].isna().all()
    assert invalid["file"].tolist() == [str(tmp_path / "gone.wav")]
    # a preprocessor with other settings must not reuse the stored scores
    other = tiny_model(sample_duration=2.0)
    other.preprocessor.pipeline["bandpass"].max_f = 3000
    calls = []
    with pytest.warns(UserWarning):
        predict(other, pd.DataFrame(index=idx), output_path=out, progress=False,
                progress_callback=lambda d, t, f: calls.append(f))
    assert str(wavs[0]) in calls


def test_empty_input_gives_empty_table_with_class_columns(model, tmp_path):
    for samples in ([], pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["file", "start_time", "end_time"]))):
        scores, failures = predict(model, samples, return_invalid_samples=True, progress=False)
        assert scores.shape == (0, 2) and list(scores.columns) == ["frog", "bird"]
        assert list(scores.index.names) == ["file", "start_time", "end_time"] and len(failures) == 0
    stored = predict(model, [], output_path=tmp_path / "out", progress=False)
    assert stored.shape == (0, 2) and list(stored.columns) == ["frog", "bird"]


def test_file_shorter_than_a_clip_follows_final_clip(model, tmp_path):
    """As the manual documents for generate_clip_times_df: a file shorter than one clip is one clip."""
    short = write_test_wav(tmp_path / "short.wav", 1.2, seed=4)
    by_mode = {mode: predict(model, [short], final_clip=mode, progress=False)
               for mode in (None, "remainder", "full", "extend")}
    for mode in (None, "remainder", "full"):
        assert by_mode[mode].index.tolist() == [(str(short), 0.0, 1.2)]
    assert by_mode["extend"].index.tolist() == [(str(short), 0.0, 2.0)]
    # the preprocessor pads the 1.2 s clip with silence to the model's 2 s: every mode scores the same audio
    expected = direct_scores(model, short, 0.0, 1.2)
    for mode, scores in by_mode.items():
        np.testing.assert_allclose(scores.to_numpy()[0], expected, rtol=1e-5, atol=1e-6, err_msg=str(mode))


def test_network_output_hook_reuses_the_loop_and_the_store(model, wavs, tmp_path):
    """A second kind of output (here: the pooled features before the last layer) runs on the same loop and store."""
    class PooledFeatures(NetworkOutput):
        columns = [f"feature_{i}" for i in range(4)]
        job = "embed"

        def settings(self):
            return {"output": "pooled_features"}

        @contextlib.contextmanager
        def running(self):
            with torch.inference_mode():
                yield

        def __call__(self, batch):
            net = model.network
            return torch.relu(net.bn(net.conv(batch))).mean(dim=(2, 3)).numpy()

    features = predict(model, wavs, network_output=PooledFeatures(), output_path=tmp_path / "out", progress=False)
    scores = predict(model, wavs, output_path=tmp_path / "out", progress=False)
    assert list(features.columns) == PooledFeatures.columns and features.index.equals(scores.index)
    # the last layer applied to the stored features gives the class scores
    fc = model.network.fc
    np.testing.assert_allclose(fc(torch.tensor(features.to_numpy())).detach().numpy(), scores.to_numpy(),
                               rtol=1e-5, atol=1e-6)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["embed", "predict"]
    stored = RunStore.existing(tmp_path / "out", job="embed").read()[0]
    pd.testing.assert_frame_equal(stored, features)
