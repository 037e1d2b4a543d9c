"""Datasets over clip tables, on-the-fly splitting, and the bad-sample policies."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from opso_nb import sample_data
from opso_nb.ml.datasets import AudioFileDataset, AudioSplittingDataset, collate_audio_samples
from opso_nb.ml.safe_dataset import SafeDataset
from opso_nb.preprocess.preprocessors import SpectrogramPreprocessor
from opso_nb.preprocess.utils import PreprocessingError

torch.set_num_threads(1)
SR = 16000


def _tone(path, f, dur=2.0, sr=SR):
    t = np.arange(int(dur * sr)) / sr
    sf.write(path, (0.5 * np.sin(2 * np.pi * f * t)).astype("float32"), sr)
    return str(path)


@pytest.fixture
def files(tmp_path):
    a = _tone(tmp_path / "a.wav", 1000, dur=5.0)
    b = _tone(tmp_path / "b.wav", 3000, dur=3.0)
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    return a, b, str(bad)


@pytest.fixture
def pre():
    return SpectrogramPreprocessor(1.0, height=16, width=20)


def _table(a, b, bad):
    idx = pd.MultiIndex.from_tuples([(a, 0.0, 1.0), (a, 1.0, 2.0), (bad, 0.0, 1.0), (b, 0.0, 1.0)],
                                    names=["file", "start_time", "end_time"])
    return pd.DataFrame({"low": [1, 1, 0, 0], "high": [0, 0, 1, 1]}, index=idx)


def test_file_dataset_items_and_collate(files, pre):
    a, b, bad = files
    ds = AudioFileDataset(_table(a, b, bad), pre, bypass_augmentations=True)
    assert len(ds) == 4 and ds.classes == ["low", "high"]
    s = ds[1]
    assert (s.source, s.start_time, s.end_time) == (a, 1.0, 2.0)
    assert s.labels.to_dict() == {"low": 1, "high": 0}
    assert tuple(s.data.shape) == (1, 16, 20)
    data, labels = collate_audio_samples([ds[0], ds[3]])
    assert tuple(data.shape) == (2, 1, 16, 20)
    assert labels.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(PreprocessingError, match="corrupt.wav"):
        ds[2]
    # whole files from a list; no labels
    ds2 = AudioFileDataset([a, b], pre, bypass_augmentations=True)
    assert ds2[1].labels is None and ds2[1].start_time is None
    x, y = collate_audio_samples([ds2[0], ds2[1]])
    assert y is None and x.shape[0] == 2


def test_subsets(files, pre):
    a, b, bad = files
    ds = AudioFileDataset(_table(a, b, bad), pre)
    assert len(ds.head(2)) == 2
    assert len(ds.sample(n=3, random_state=0)) == 3
    assert ds.class_subset("high").classes == ["high"]
    per = ds.sample_per_class(1, random_state=0)
    assert len(per) == 2 and per.label_df.sum().tolist() == [1, 1]
    with pytest.raises(KeyError):
        ds.class_subset(["nope"])


def test_bad_times_in_table_named(files, pre):
    a, _, _ = files
    idx = pd.MultiIndex.from_tuples([(a, 2.0, 1.0)], names=["file", "start_time", "end_time"])
    with pytest.raises(ValueError, match="a.wav"):
        AudioFileDataset(pd.DataFrame({"x": [1]}, index=idx), pre)


def test_splitting_dataset(files, pre, tmp_path):
    a, b, bad = files
    labels = pd.DataFrame({"low": [1, 0, 0]}, index=pd.Index([a, b, bad], name="file"))
    ds = AudioSplittingDataset(labels, pre, clip_overlap_fraction=0.5)
    # 5 s file -> starts 0,0.5,...,4.0 (9 clips); 3 s file -> 5 clips; corrupt file listed as invalid
    assert len(ds.clip_df.loc[a]) == 9 and len(ds.clip_df.loc[b]) == 5
    assert list(ds.invalid_files.file) == [bad]
    assert ds.clip_df.loc[a]["low"].eq(1).all()
    s = ds[3]
    assert (s.start_time, s.end_time) == (1.5, 2.5)
    assert tuple(s.data.shape) == (1, 16, 20)


def test_splitting_reads_only_the_clip(pre):
    long = sample_data.audiomoth_1min()
    ds = AudioSplittingDataset([long], pre)
    s = pre.forward(ds._sample(30), break_on_key="trim_audio", bypass_augmentations=True)
    assert s.data.duration == pytest.approx(1.0, abs=1e-3)  # the loader read 1 s, not the whole minute
    assert s.start_time == 30.0


@pytest.mark.parametrize("behavior", ["substitute", "none", "raise"])
def test_safe_dataset_policies(files, pre, behavior):
    a, b, bad = files
    safe = SafeDataset(AudioFileDataset(_table(a, b, bad), pre, bypass_augmentations=True),
                       invalid_sample_behavior=behavior)
    if behavior == "raise":
        with pytest.raises(PreprocessingError, match="corrupt.wav"):
            safe[2]
    else:
        item = safe[2]
        if behavior == "substitute":
            assert item.source == b  # the next good sample
        else:
            assert item is None
    f = safe.failed_samples
    assert list(f.columns) == ["file", "start_time", "end_time", "stage", "error"]  # the one failure schema
    assert list(f.file) == [bad] and f.start_time.tolist() == [0.0] and f.stage.tolist() == ["load"]
    assert "corrupt.wav" in f.error[0] and "load_audio" in f.error[0]
    # report(log) as documented: warns, writes the log, returns the failed index values
    log = Path(bad).with_name(f"invalid_{behavior}.log")
    with pytest.warns(UserWarning, match="corrupt.wav"):
        assert safe.report(log) == {(bad, 0.0, 1.0)}
    assert pd.read_csv(log, sep="\t").file.tolist() == [bad]
    assert safe._invalid_indices == {2} and safe.num_samples_examined == (1 if behavior != "substitute" else 2)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_safe_loader_collects_failures_from_workers(files, pre, num_workers):
    a, b, bad = files
    safe = SafeDataset(AudioFileDataset(_table(a, b, bad), pre), invalid_sample_behavior="none")
    n = 0
    for batch in safe.loader(batch_size=2, num_workers=num_workers):
        data, labels = batch
        assert data.shape[0] == labels.shape[0] == len(batch.clips)
        n += data.shape[0]
    assert n == 3  # the corrupt clip is skipped, the run finishes
    assert list(safe.failed_samples.file) == [bad]


def test_safe_substitute_keeps_batch_size(files, pre):
    a, b, bad = files
    safe = SafeDataset(AudioFileDataset(_table(a, b, bad), pre), invalid_sample_behavior="substitute")
    sizes = [batch[0].shape[0] for batch in safe.loader(batch_size=2)]
    assert sizes == [2, 2]
    assert len(safe.failed_samples) == 1


def test_all_bad_substitute_raises(files, pre):
    _, _, bad = files
    safe = SafeDataset(AudioFileDataset([bad], pre), invalid_sample_behavior="substitute")
    with pytest.raises(RuntimeError, match="all 1 samples failed"):
        safe[0]


def test_bundled_corrupt_files_are_reported(pre):
    folder = sample_data.corrupt_folder()
    files = sorted(str(p) for p in folder.glob("*.wav"))
    safe = SafeDataset(AudioFileDataset(files, pre, bypass_augmentations=True), invalid_sample_behavior="none")
    results = [safe[i] for i in range(len(safe))]
    ok = [r for r in results if r is not None]
    assert len(ok) + len(safe.failed_samples) == len(files)
    assert all(tuple(r.data.shape) == (1, 16, 20) for r in ok)
    assert any("empty_2c.wav" in f for f in safe.failed_samples.file)
