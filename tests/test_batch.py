"""opso_nb.batch on a real Dask LocalCluster (two worker processes, shared by the module): no mocks.

Every batch result is checked against the serial call on the same files: same
rows, same values. Faults are real: a worker process is killed with SIGKILL
while it works, a job kills its own worker on one file, a run is stopped
part-way and resumed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
import soundfile
import torch

from opso_nb import sample_data
from opso_nb.audio import Audio
from opso_nb.batch import (
    BatchInterrupted,
    CNNPredictJob,
    RibbitJob,
    SummaryJob,
    input_files,
    local_client,
    read_results,
    run_batch,
    summarize_clips,
    summarize_file,
)
from opso_nb.batch.summary import summary_columns
from opso_nb.ml.cnn import CNN, load_model
from opso_nb.ribbit import RibbitParams, run_ribbit
from opso_nb.store import RunSettingsChanged, RunStore
from tests._batch_jobs import KillOnFile

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def tone(seconds, freq, amplitude, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return amplitude * np.sin(2 * np.pi * freq * t)


def write_wav(path, samples, sr=SR, subtype="FLOAT"):
    soundfile.write(str(path), np.asarray(samples, dtype=np.float32), sr, subtype=subtype)
    return str(path)


# ----------------------------------------------------------------------------- the summary job's numbers
def test_summary_of_a_pure_tone_gives_its_level_frequency_and_band():
    audio = Audio(tone(4.0, 1234.5, 0.5), SR)
    values = summarize_clips(audio, [[0.0, 2.0], [2.0, 4.0]], bands=[(0, 1000), (1000, 2000), (2000, 8000)])
    expected_db = 20 * np.log10(0.5)  # -6.02 dB: a sine of amplitude 0.5, referred to a full-scale sine
    np.testing.assert_allclose(values[:, 0], expected_db, atol=0.01)
    np.testing.assert_allclose(values[:, 1], 1234.5, atol=1.0)  # bins are 15.6 Hz apart: the parabola refines
    np.testing.assert_allclose(values[:, 3], expected_db, atol=0.05)  # all the power in the 1-2 kHz band
    assert (values[:, [2, 4]] < expected_db - 40).all()


def test_band_levels_add_up_to_the_rms_level_and_follow_each_tone():
    samples = tone(3.0, 300, 0.3) + tone(3.0, 3000, 0.1)
    values = summarize_clips(Audio(samples, SR), [[0.0, 3.0]], bands=[(0, 1000), (1000, 8000)])[0]
    np.testing.assert_allclose(values[2], 20 * np.log10(0.3), atol=0.05)
    np.testing.assert_allclose(values[3], 20 * np.log10(0.1), atol=0.05)
    total = 10 * np.log10(10 ** (values[2] / 10) + 10 ** (values[3] / 10))
    np.testing.assert_allclose(total, values[0], atol=0.05)
    np.testing.assert_allclose(values[1], 300, atol=1.0)  # the louder tone


def test_silence_nyquist_and_nan_samples(tmp_path):
    silent = summarize_clips(Audio(np.zeros(SR), SR), [[0, 1]], bands=[(0, 1000), (9000, 12000)])[0]
    assert silent[0] == -np.inf and np.isnan(silent[1]) and silent[2] == -np.inf
    assert np.isnan(silent[3])  # the band starts above the Nyquist frequency (8 kHz): no level
    samples = tone(4.0, 500, 0.2)
    samples[SR * 3:] = np.nan
    table, failures = summarize_file(write_wav(tmp_path / "nan.wav", samples), clip_duration=1.0)
    assert table["rms_dBFS"].notna().tolist() == [True, True, True, False]
    assert [(f["start_time"], f["stage"]) for f in failures] == [(3.0, "score")]


def test_a_long_file_is_read_in_blocks_with_the_same_result(tmp_path):
    rng = np.random.default_rng(0)
    samples = tone(25.0, 440, 0.3) * (0.5 + 0.5 * np.sin(np.arange(25 * SR) / SR)) + 0.01 * rng.standard_normal(
        25 * SR)
    path = write_wav(tmp_path / "long.wav", samples)
    whole, _ = summarize_file(path, clip_duration=4.0, block_duration=1000)
    blocks, _ = summarize_file(path, clip_duration=4.0, block_duration=5)  # one clip per read
    pd.testing.assert_frame_equal(whole, blocks, rtol=1e-4)
    assert whole.index.get_level_values("end_time").tolist() == [4, 8, 12, 16, 20, 24, 25]  # final_clip remainder
    assert list(whole.columns) == summary_columns()


def test_input_files_walks_folder_trees_and_keeps_listed_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.wav", "a/b/y.flac", "a/notes.txt", "z.wav"):
        (tmp_path / name).write_bytes(b"")
    assert input_files(tmp_path / "a") == [str(tmp_path / "a/b/y.flac"), str(tmp_path / "a/x.wav")]
    assert input_files(tmp_path / "a", recursive=False) == [str(tmp_path / "a/x.wav")]
    listed = input_files([tmp_path / "z.wav", tmp_path / "a/notes.txt", tmp_path / "z.wav"])
    assert listed == [str(tmp_path / "z.wav"), str(tmp_path / "a/notes.txt")]
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        input_files(tmp_path / "missing")


# ----------------------------------------------------------------------------- on a cluster
@pytest.fixture(scope="module")
def client():
    # allowed_failures=1: a task is given up after two worker deaths (Dask's default is four), which keeps
    # the poisoned-file test short
    client = local_client(n_workers=2, allowed_failures=1)
    yield client
    client.close()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small real model file: resnet18 (random weights) on 32 x 32 one-channel spectrograms of 2 s clips."""
    model = CNN("resnet18", ["toad", "other"], sample_duration=2.0, sample_shape=(32, 32, 1), weights=None,
                device="cpu", use_amp=False)
    path = tmp_path_factory.mktemp("model") / "tiny.model"
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def files():
    """21 short bundled recordings: 17 toad-survey MP3s (16 of 10 s, one of 7 s) and 4 soundscapes (10 s WAV)."""
    return input_files(sample_data.toads_folder()) + [
        str(sample_data.path(f"soundscapes/S4A03895_20190522_{h}0000.wav")) for h in ("00", "05", "12", "18")]


def serial(model_file, files, **kwargs):
    model = load_model(model_file, device="cpu")
    return model.predict(files, batch_size=16, activation_layer="sigmoid", progress=False, **kwargs)


@pytest.fixture(scope="module")
def reference(model_file, files):
    return serial(model_file, files)


def parts_mtimes(run_folder) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (Path(run_folder) / "parts").iterdir()}


def executing(dask_worker) -> int:
    return dask_worker.state.executing_count


def wait_until_idle(client, n_workers=2, timeout=120):
    """All workers up and none running a task (a cancelled task runs on until it ends, unseen by the scheduler)."""
    client.wait_for_workers(n_workers, timeout=timeout)
    deadline = time.time() + timeout
    while (any(client.processing().values()) or any(client.run(executing).values())) and time.time() < deadline:
        time.sleep(0.1)


def test_cluster_run_equals_serial_predict_and_reads_as_one_dataset(client, model_file, files, reference, tmp_path):
    result = run_batch(CNNPredictJob(model=model_file), files, tmp_path / "out", scheduler=client, progress=False)
    pd.testing.assert_frame_equal(result.table, reference, rtol=1e-5, atol=1e-6)
    assert len(result.failures) == 0
    assert result.summary["done"] == len(files) and result.summary["skipped"] == 0
    assert result.summary["audio_hours"] == pytest.approx(207 / 3600)  # 16 x 10 s + 7 s + 4 x 10 s
    # the same run folder as the serial call with these settings
    serial(model_file, files[:1], output_path=tmp_path / "serial")
    assert RunStore.existing(tmp_path / "serial").folder.name == result.folder.name

    ordered = reference.reset_index().sort_values(["file", "start_time"]).reset_index(drop=True)
    for frame in (pd.read_parquet(result.parts_folder), pads.dataset(result.parts_folder).to_table().to_pandas(),
                  result.to_dask().compute()):
        assert list(frame.columns) == ["file", "start_time", "end_time", "toad", "other"]
        frame = frame.sort_values(["file", "start_time"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(frame, ordered, check_dtype=False, rtol=1e-5, atol=1e-6)


def test_a_worker_killed_mid_task_loses_and_duplicates_nothing(client, model_file, files, reference, tmp_path):
    killed = []

    def kill_a_busy_worker(done, total, file):
        if not killed:
            busy = [address for address, keys in client.processing().items() if keys]
            pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    result = run_batch(CNNPredictJob(model=model_file), files, tmp_path / "out", scheduler=client, progress=False,
                       group_megabytes=0, progress_callback=kill_a_busy_worker)
    assert killed and killed[0] not in client.run(os.getpid).values()  # that process is gone for good
    table = result.table
    assert not table.index.duplicated().any()
    assert table.index.get_level_values("file").unique().tolist() == files  # each file once, none missing
    pd.testing.assert_frame_equal(table, reference, rtol=1e-5, atol=1e-6)
    assert result.summary["done"] == len(files) and result.summary["failed"] == result.summary["quarantined"] == 0
    records = RunStore.existing(result.folder).records()
    assert sorted(records) == sorted(files) and {r["status"] for r in records.values()} == {"done"}
    wait_until_idle(client)


def test_stop_part_way_then_resume_recomputes_nothing_finished(client, model_file, files, reference, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BatchInterrupted, match="run again to resume"):
        run_batch(CNNPredictJob(model=model_file), files, out, scheduler=client, progress=False, group_megabytes=0,
                  progress_callback=lambda done, total, file: done < 6)
    wait_until_idle(client)  # tasks already running when it stopped may still finish: they count as done
    run_folder = RunStore.existing(out).folder
    before = parts_mtimes(run_folder)
    assert 6 <= len(before) < len(files)
    resumed = run_batch(CNNPredictJob(model=model_file), files, out, scheduler=client, progress=False)
    after = parts_mtimes(run_folder)
    assert {name: after[name] for name in before} == before  # finished parts were not written again
    assert resumed.summary["skipped"] == len(before) and resumed.summary["done"] == len(files) - len(before)
    pd.testing.assert_frame_equal(resumed.table, reference, rtol=1e-5, atol=1e-6)
    # nothing left to do: no cluster is needed and nothing is touched
    again = run_batch(CNNPredictJob(model=model_file), files, out, scheduler=None, progress=False)
    assert again.summary["skipped"] == len(files) and parts_mtimes(run_folder) == after


def test_serial_and_cluster_runs_finish_each_others_folders(client, model_file, files, reference, tmp_path):
    started_serially = tmp_path / "a"
    serial(model_file, files[:8], output_path=started_serially)
    first = parts_mtimes(RunStore.existing(started_serially).folder)
    finished = run_batch(CNNPredictJob(model=model_file), files, started_serially, scheduler=client, progress=False)
    assert finished.summary["skipped"] == 8
    assert {n: t for n, t in parts_mtimes(finished.folder).items() if n in first} == first
    pd.testing.assert_frame_equal(finished.table, reference, rtol=1e-5, atol=1e-6)

    started_on_cluster = tmp_path / "b"
    run_batch(CNNPredictJob(model=model_file), files[:8], started_on_cluster, scheduler=client, progress=False)
    scored = []
    table = serial(model_file, files, output_path=started_on_cluster,
                   progress_callback=lambda done, total, file: scored.append(file))
    assert not set(scored) & set(files[:8]) and set(scored) == set(files[8:])
    pd.testing.assert_frame_equal(table, reference, rtol=1e-5, atol=1e-6)


def test_changing_a_setting_starts_a_new_run_beside_the_old_one(client, model_file, files, tmp_path):
    out = tmp_path / "out"
    first = run_batch(CNNPredictJob(model=model_file), files[:2], out, scheduler=client, progress=False)
    kept = parts_mtimes(first.folder)
    with pytest.warns(RunSettingsChanged, match="overlap"):
        second = run_batch(CNNPredictJob(model=model_file, overlap_fraction=0.5), files[:2], out, scheduler=client,
                           progress=False)
    assert second.folder != first.folder and parts_mtimes(first.folder) == kept
    assert second.summary["skipped"] == 0
    # 10 s files, 2 s clips: 5 clips each without overlap, 9 with clips starting every second
    assert len(first.table) == 10 and len(second.table) == 18
    pd.testing.assert_frame_equal(first.read()[0], first.table)  # the earlier run reads as before


def test_bad_files_are_reported_with_reasons_and_the_run_finishes(client, model_file, tmp_path):
    folder = tmp_path / "field"
    folder.mkdir()
    good = [shutil.copy(sample_data.path(f"soundscapes/S4A03895_20190522_{h}0000.wav"), folder) for h in ("00", "05")]
    (folder / "corrupt.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("field notes, not audio\n" * 50)
    (folder / "readme.txt").write_text("not audio either")
    bad = [str(folder / n) for n in ("corrupt.wav", "empty.wav", "notes.wav", "readme.txt")]
    for job in (CNNPredictJob(model=model_file), SummaryJob()):
        result = run_batch(job, [folder, folder / "readme.txt"], tmp_path / "out", scheduler=client, progress=False)
        failures = result.failures
        assert sorted(failures["file"]) == sorted(bad), failures
        assert set(failures["stage"]) == {"load"} and failures["start_time"].isna().all()
        reasons = dict(zip(failures["file"], failures["error"]))
        assert "empty" in reasons[str(folder / "empty.wav")]
        assert all("readable audio" in reasons[f] or "decode" in reasons[f] for f in bad if "empty" not in f)
        assert result.table.index.get_level_values("file").unique().tolist() == [str(f) for f in good]
        assert result.summary["failed"] == 4 and result.summary["done"] == 2


def test_a_file_that_kills_every_worker_is_quarantined_and_the_run_finishes(client, tmp_path):
    files = [str(sample_data.path(f"soundscapes/S4A03895_20190522_{h}0000.wav")) for h in ("00", "05", "12", "18")]
    poison = files[1]
    job = KillOnFile(poison=Path(poison).name)
    result = run_batch(job, files, tmp_path / "out", scheduler=client, progress=False, group_megabytes=0)
    failures = result.failures
    assert result.summary["quarantined"] == 1 and result.summary["done"] == 3, failures.to_dict("records")
    assert failures[["file", "stage"]].values.tolist() == [[poison, "quarantine"]]
    assert "died" in failures["error"].iloc[0]
    clean, _ = run_batch(SummaryJob(), files, tmp_path / "clean", scheduler=client, progress=False).read()
    pd.testing.assert_frame_equal(result.table, clean.drop(index=poison, level="file"))
    wait_until_idle(client)
    again = run_batch(job, files, tmp_path / "out", scheduler=client, progress=False)  # skipped until it changes
    assert again.summary["skipped"] == 4 and len(again.failures) == 1


def test_a_death_counts_against_the_file_that_was_running_in_that_worker_only(tmp_path):
    """Dask counts a worker's death against every task queued on it; the start mark says which file ran there."""
    from types import SimpleNamespace

    from opso_nb.batch.runner import _Coordinator

    files = [str(sample_data.path(f"soundscapes/S4A03895_20190522_{h}0000.wav")) for h in ("00", "05")]
    description = SummaryJob().describe()
    run = RunStore.open(tmp_path / "run", description.settings, job=description.job, columns=description.columns)
    coordinator = _Coordinator(None, SummaryJob(), run, [], {}, 2, False, None, 0)
    run.begin(files[0])  # marked by this process, as a worker marks the file it starts
    this_worker, other_worker = SimpleNamespace(pid=os.getpid()), SimpleNamespace(pid=os.getpid() + 1)
    assert coordinator._was_running_on(files[0], this_worker)
    assert not coordinator._was_running_on(files[0], other_worker)  # queued there, begun elsewhere
    assert not coordinator._was_running_on(files[1], this_worker)  # never begun
    coordinator.started_ns = time.time_ns() + 10**9  # a mark older than this run: a dead earlier run's
    assert not coordinator._was_running_on(files[0], this_worker)


DIE_WHILE_PROCESSING = """
import os, signal, sys
from opso_nb.batch import SummaryJob
from opso_nb.store import RunStore
description = SummaryJob().describe()
run = RunStore.open(sys.argv[1], description.settings, job=description.job, columns=description.columns)
run.begin(sys.argv[2])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_file_in_progress_when_a_run_died_is_retried_with_its_strike(client, tmp_path):
    files = [str(sample_data.path(f"soundscapes/S4A03895_20190522_{h}0000.wav")) for h in ("00", "05", "12")]
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(DIE_WHILE_PROCESSING), str(out), files[1]],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert RunStore.existing(out).summary()["files_in_progress"] == 1
    result = run_batch(SummaryJob(), files, out, scheduler=client, progress=False)
    records = RunStore.existing(out).records()
    assert [records[f]["attempts"] for f in files] == [1, 2, 1]  # the suspect carries its strike
    assert result.summary["done"] == 3 and RunStore.existing(out).summary()["files_in_progress"] == 0


def test_ribbit_job_gives_run_ribbit_scores_in_its_folder(client, tmp_path):
    params = RibbitParams()  # the Great Plains toad settings of the tutorial
    folder = sample_data.toads_folder()
    batch = run_batch(RibbitJob(species=params), folder, tmp_path / "out", scheduler=client, progress=False)
    scores, _ = run_ribbit(folder, params, out_path=tmp_path / "serial", progress=False)
    pd.testing.assert_frame_equal(batch.table, scores)
    assert RunStore.existing(tmp_path / "serial").folder.name == batch.folder.name
    gpt = batch.table["great_plains_toad"].groupby(level="file").max()
    assert gpt[str(folder / "gpt3.mp3")] > gpt[str(folder / "negative1.mp3")]  # a toad trill scores higher


def test_birdnet_jobs_give_the_serial_calls_tables(client, tmp_path):
    """Runs once opso_nb.ml.birdnet (built in parallel) and its runtime are installed; skipped before."""
    birdnet = pytest.importorskip("opso_nb.ml.birdnet")
    from opso_nb.batch import BirdNETEmbedJob, BirdNETPredictJob

    files = [str(sample_data.path("formats/456440__inspectorj__bird-whistling-robin-single-13.ogg")),
             str(sample_data.path("soundscapes/birds_10s.wav"))]
    for job, method in ((BirdNETPredictJob(), "predict"), (BirdNETEmbedJob(), "embed")):
        batch = run_batch(job, files, tmp_path / method, scheduler=client, progress=False)
        serial_out = tmp_path / f"serial-{method}"
        expected = getattr(birdnet.BirdNET(), method)(files, output_path=serial_out, progress=False)
        pd.testing.assert_frame_equal(batch.table, expected, rtol=1e-5, atol=1e-6)
        assert RunStore.existing(serial_out).folder.name == batch.folder.name


# ----------------------------------------------------------------------------- score tables from a batch
def test_score_tables_open_from_run_folders_parts_and_plain_datasets(client, model_file, files, tmp_path):
    result = run_batch(CNNPredictJob(model=model_file), files[:3], tmp_path / "out", scheduler=client,
                       progress=False)
    for where in (tmp_path / "out", result.folder, result.parts_folder):
        table, failures = read_results(where, files=result.files)
        pd.testing.assert_frame_equal(table, result.table)
    result.to_dask().to_parquet(tmp_path / "exported")  # e.g. a dataset written by dask
    table, failures = read_results(tmp_path / "exported")
    pd.testing.assert_frame_equal(table.sort_index(), result.table.sort_index(), check_index_type=False)
    result.table.to_csv(tmp_path / "scores.csv")
    assert read_results(tmp_path / "scores.csv")[0].shape == result.table.shape
    with pytest.raises(ValueError, match="not a score table"):
        pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "other.parquet")
        read_results(tmp_path / "other.parquet")

    from opso_nb.dashboards.prediction_explorer import PredictionExplorer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = PredictionExplorer(models_folder=tmp_path, folder=tmp_path, output_folder=tmp_path / "out")
    app.output_folder = str(result.parts_folder)  # a run's parts: exports go next to the runs, not into one
    app.open_scores()
    assert app.resolved_output_folder() == tmp_path / "out" and not app.export_csv_button.disabled
    pd.testing.assert_frame_equal(app.scores, result.table.loc[app.scores.index])
    assert sorted(app.scores.index.get_level_values("file").unique()) == sorted(files[:3])
    assert app.param.selected_class.objects == ["toad", "other"]
