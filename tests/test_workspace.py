"""The workspace of the dashboards: readable folders, one output folder, refused paths, sources of clips."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from opso_nb import sample_data
from opso_nb.workspace import (
    CLASS_FOLDERS,
    OUTPUT_DIR_NAME,
    PACKAGE_DIR,
    RAVEN_TABLES,
    RECORDINGS,
    PathRefused,
    Workspace,
    array_tables,
    check_recordings,
    clip_sources,
    default_output_dir,
    load_clips,
    read_array_folder,
    source_checkout,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    return Workspace(data_dirs=[data], output_dir=out)


def _tone(path, seconds=1.0, sr=8000, freq=1000.0):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype("float32"), sr)
    return path


# ----------------------------------------------------------------------------- writing

@pytest.mark.parametrize("name", ["../escape.json", "sub/../../escape.json", "/nonexistent_opso_nb_dir/x.json",
                                  "/etc/passwd", "~/opso_nb_escape.json"])
def test_output_paths_that_escape_are_refused_and_nothing_is_created(ws, tmp_path, name):
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(PathRefused, match="outside the output folder"):
        ws.output_path(name)
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not Path("/nonexistent_opso_nb_dir").exists()
    assert not ws.output_dir.exists()  # not even the output folder is created by a refused save


def test_output_path_inside_is_absolute_and_created_only_when_prepared(ws):
    path = ws.output_path("ribbit/toad.json")
    assert path == ws.output_dir / "ribbit" / "toad.json" and path.is_absolute()
    assert not (ws.output_dir / "ribbit").exists()
    assert ws.prepare_output("ribbit/toad.json") == path and path.parent.is_dir()
    assert ws.output_path(str(path)) == path  # absolute inside: fine
    with pytest.raises(PathRefused, match="not the output folder itself"):
        ws.output_path(".")


def test_symbolic_link_pointing_out_is_refused(ws, tmp_path):
    ws.output_dir.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.output_dir / "link").symlink_to(outside)
    with pytest.raises(PathRefused, match="outside the output folder"):
        ws.output_path("link/x.json")
    (ws.data_dirs[0] / "etc_link").symlink_to("/etc")
    with pytest.raises(PathRefused, match="outside the data folders"):
        ws.readable(ws.data_dirs[0] / "etc_link", kind="dir")


def test_long_and_malformed_paths_are_refused_with_the_reason(ws):
    with pytest.raises(PathRefused, match="5000 characters long"):
        ws.output_path("x" * 5000)
    with pytest.raises(PathRefused, match="longer than 255 bytes"):
        ws.output_path("a/" + "y" * 300 + "/b.json")
    with pytest.raises(PathRefused, match="NUL"):
        ws.readable("a\x00b")
    with pytest.raises(PathRefused, match="no path"):
        ws.readable("  ")


def test_output_folder_inside_the_package_is_refused(tmp_path):
    with pytest.raises(PathRefused, match="installed opso_nb package"):
        Workspace(data_dirs=[], output_dir=PACKAGE_DIR / "runs")
    ws = Workspace(data_dirs=[], output_dir=tmp_path)
    with pytest.raises(PathRefused):
        ws.output_path(PACKAGE_DIR / "sample_data" / "x.json")


# ----------------------------------------------------------------------------- reading

def test_readable_folders_are_the_data_folders_bundled_data_and_output(ws, tmp_path):
    assert ws.readable(ws.data_dirs[0], kind="dir") == ws.data_dirs[0]
    assert ws.readable(sample_data.birds(), kind="file") == sample_data.birds()
    ws.output_dir.mkdir(parents=True)
    assert ws.readable(ws.output_dir, kind="dir") == ws.output_dir
    for outside in ("/etc", str(tmp_path), "../../.."):
        with pytest.raises(PathRefused, match="outside the data folders"):
            ws.readable(outside)
    with pytest.raises(PathRefused, match="is not a folder \\(nothing exists there\\)"):
        ws.readable(ws.data_dirs[0] / "missing", kind="dir")
    with pytest.raises(PathRefused, match="is not a folder \\(it is a file\\)"):
        ws.readable(sample_data.birds(), kind="dir")
    # relative paths are relative to the first data folder
    (ws.data_dirs[0] / "site1").mkdir()
    assert ws.readable("site1", kind="dir") == ws.data_dirs[0] / "site1"


def test_browse_choices_stay_inside(ws):
    (ws.data_dirs[0] / "site1" / "deep").mkdir(parents=True)
    (ws.data_dirs[0] / ".hidden").mkdir()
    choices = ws.browse_choices(ws.data_dirs[0] / "site1")
    assert str(ws.data_dirs[0] / "site1" / "deep") in choices and str(ws.data_dirs[0]) in choices
    assert str(sample_data.DATA_DIR) in choices
    assert not any(".hidden" in c for c in choices)
    assert str(ws.data_dirs[0].parent) not in choices  # the folder above a data folder is not offered
    assert ws.browse_choices("/etc") == [str(d) for d in ws.readable_roots if d.is_dir()]


def test_environment_names_folders_and_start_folder(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    monkeypatch.setenv("OPSO_NB_DATA", f"{a}{os.pathsep}{b}")
    monkeypatch.setenv("OPSO_NB_OUTPUT", str(tmp_path / "runs"))
    ws = Workspace.from_env()
    assert ws.user_dirs == (a, b) and ws.output_dir == tmp_path / "runs"
    assert ws.start_folder("default") == a
    monkeypatch.setenv("OPSO_NB_DATA", "")
    assert Workspace.from_env().start_folder("default") == Path("default")


def test_default_output_dir_is_the_same_for_notebooks_and_apps(monkeypatch, tmp_path):
    monkeypatch.delenv("OPSO_NB_OUTPUT", raising=False)
    assert source_checkout() == ROOT
    monkeypatch.chdir(ROOT / "notebooks")  # where notebooks run
    in_notebooks = default_output_dir()
    monkeypatch.chdir(ROOT / "notebooks" / "apps")  # where Voila starts kernels
    assert default_output_dir() == in_notebooks == ROOT / OUTPUT_DIR_NAME
    monkeypatch.setenv("OPSO_NB_OUTPUT", "~/elsewhere")
    assert default_output_dir() == Path.home() / "elsewhere"


# ----------------------------------------------------------------------------- recordings and clips

def test_check_recordings_reports_each_bad_file_with_its_reason(tmp_path):
    good = _tone(tmp_path / "good.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    ok, failures = check_recordings([good, tmp_path / "empty.wav", tmp_path / "junk.wav", tmp_path / "gone.wav"])
    assert ok == [str(good)]
    reasons = dict(zip(failures["file"].map(lambda f: Path(f).name), failures["error"]))
    assert "file is empty (0 bytes)" in reasons["empty.wav"]
    assert "not a readable audio file" in reasons["junk.wav"]
    assert "does not exist" in reasons["gone.wav"]
    assert list(failures.columns) == ["file", "start_time", "end_time", "stage", "error"]


def test_class_folders_give_one_hot_clips(tmp_path):
    (tmp_path / "frog").mkdir()
    (tmp_path / "wind").mkdir()
    _tone(tmp_path / "frog" / "f1.wav", 3.0)
    _tone(tmp_path / "frog" / "f2.wav", 2.0)
    _tone(tmp_path / "wind" / "w1.wav", 1.0)
    (tmp_path / "wind" / "bad.wav").write_bytes(b"junk")
    assert clip_sources(tmp_path)[0] == CLASS_FOLDERS
    clips, failures = load_clips(tmp_path, CLASS_FOLDERS, clip_duration=1.0)
    assert list(clips.columns) == ["frog", "wind"]
    assert clips["frog"].sum() == 5 and clips["wind"].sum() == 1  # 3 + 2 one-second clips of frog
    assert (clips.sum(axis=1) == 1).all()
    assert failures["file"].map(lambda f: Path(f).name).tolist() == ["bad.wav"]


def test_raven_folder_gives_labelled_clips_like_the_annotations(tmp_path):
    wav, table = sample_data.annotated_recording()
    shutil.copy(wav, tmp_path)
    shutil.copy(table, tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVE")
    shutil.copy(table, tmp_path / "broken.Table.1.selections.txt")
    assert clip_sources(tmp_path) == [RAVEN_TABLES, RECORDINGS]
    clips, failures = load_clips(tmp_path, RAVEN_TABLES, clip_duration=2.0)
    from opso_nb.annotations import BoxedAnnotations

    boxes = BoxedAnnotations.from_raven_files([tmp_path / table.name], audio_files=[tmp_path / wav.name])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = boxes.one_hot_clip_labels(clip_duration=2.0, clip_overlap=0)
    assert len(clips) == 5  # 10 s in 2 s clips
    pd.testing.assert_frame_equal(clips.sort_index(axis=1), expected.astype(int).sort_index(axis=1))
    assert failures["file"].map(lambda f: Path(f).name).tolist() == ["broken.wav"]


def test_clip_table_csv_and_its_errors(tmp_path):
    _tone(tmp_path / "a.wav", 2.0)
    (tmp_path / "labels.csv").write_text("file,start_time,end_time,frog\na.wav,0,1,1\na.wav,1,2,0\n")
    (tmp_path / "bad.csv").write_text("file,start_time,end_time,frog\na.wav,0,1,maybe\n")
    assert clip_sources(tmp_path) == ["bad.csv", "labels.csv", RECORDINGS]
    (tmp_path / "training_labels.csv").write_text("file,start_time,end_time,frog\na.wav,0,1,1\n")
    assert clip_sources(tmp_path)[0] == "training_labels.csv"  # a clip review's export is offered first
    clips, failures = load_clips(tmp_path, "labels.csv", clip_duration=1.0)
    assert clips["frog"].tolist() == [1, 0] and not len(failures)
    with pytest.raises(ValueError, match="bad.csv.*0/1"):
        load_clips(tmp_path, "bad.csv", clip_duration=1.0)
    with pytest.raises(ValueError, match="not a clip source"):
        load_clips(tmp_path, "../elsewhere.csv", clip_duration=1.0)


def test_array_folder_matches_tables_to_recordings_by_name(tmp_path):
    for f in sample_data.localization_folder().iterdir():
        shutil.copy(f, tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"junk")
    coords = pd.read_csv(tmp_path / "LOCA_2021_aru_coords.csv")
    coords.loc[len(coords)] = ["broken.wav", 5, 5, 2]
    coords.to_csv(tmp_path / "LOCA_2021_aru_coords.csv", index=False)
    positions, detections = array_tables(tmp_path)
    assert positions == ["LOCA_2021_aru_coords.csv"]
    assert detections == ["LOCA_2021_detections.csv", "LOCA_2021_detections_different_starts.csv"]
    data = read_array_folder(tmp_path, positions[0], detections[0])
    # the tables say tests/audio/...: matched by name; veryshort.wav is not in the folder; broken.wav unreadable
    assert len(data["file_coords"]) == 7 and data["missing"] == ["tests/audio/veryshort.wav"]
    assert data["failures"]["file"].map(lambda f: Path(f).name).tolist() == ["broken.wav"]
    assert len(data["detections"]) == 6 and list(data["detections"].columns) == ["zeep"]
    every = read_array_folder(tmp_path, positions[0], None, clip_duration=0.5)
    from opso_nb.audio import audio_info

    whole_clips = sum(int(audio_info(f).duration // 0.5) for f in data["file_coords"].index)
    assert every["detections"]["sound"].sum() == whole_clips >= 12  # six 1 s files and one shorter one
    with pytest.raises(ValueError, match="at most 3"):
        read_array_folder(tmp_path, positions[0], None, clip_duration=0.5, max_clips=3)


def test_array_folder_converts_positions_in_degrees_to_metres(tmp_path):
    from opso_nb.localization import xy_to_latlon

    for f in sample_data.localization_folder().glob("*.wav"):
        shutil.copy(f, tmp_path)
    metres = pd.read_csv(sample_data.localization_folder() / "LOCA_2021_aru_coords.csv", skipinitialspace=True)
    lat, lon = xy_to_latlon(metres["x"], metres["y"], 40.44, -79.95)
    degrees = pd.DataFrame({"file": metres["file"], "lat": lat, "lon": lon, "z": metres["z"]})
    degrees.to_csv(tmp_path / "gps.csv", index=False)
    assert array_tables(tmp_path)[0] == ["gps.csv"]
    data = read_array_folder(tmp_path, "gps.csv", None, clip_duration=0.5)
    coords = data["file_coords"]
    kept = metres.set_index(metres["file"].map(lambda f: str(tmp_path / Path(f).name))).loc[coords.index]
    # metres east/north of the recorders' mean position: the metric layout, centred
    assert np.allclose(coords["x"], kept["x"] - kept["x"].mean(), atol=1e-3)
    assert np.allclose(coords["y"], kept["y"] - kept["y"].mean(), atol=1e-3)
    assert np.allclose(coords["z"], kept["z"]) and data["geo_reference"] == pytest.approx(
        (coords["lat"].mean(), coords["lon"].mean()))
    metres.to_csv(tmp_path / "metres.csv", index=False)
    assert read_array_folder(tmp_path, "metres.csv", None)["geo_reference"] is None
    degrees["lat"] = degrees["lat"] * 1000  # metres in a column named lat
    degrees.to_csv(tmp_path / "gps.csv", index=False)
    with pytest.raises(ValueError, match="gps.csv: lat must lie within -90..90"):
        read_array_folder(tmp_path, "gps.csv", None)


# ----------------------------------------------------------------------------- serving

def test_serve_environment_and_template_are_offline(tmp_path):
    from opso_nb.apps import serve_command, serve_environment, voila_template_root

    env = serve_environment([tmp_path / "rec"], tmp_path / "runs", base={"OPSO_NB_DATA": "/other"})
    assert env["OPSO_NB_DATA"].split(os.pathsep) == [str(tmp_path / "rec"), "/other"]
    assert env["OPSO_NB_OUTPUT"] == str(tmp_path / "runs")
    template = voila_template_root() / "voila" / "templates" / "opso_nb"
    assert env["JUPYTER_PATH"].split(os.pathsep)[0] == str(voila_template_root())
    assert all("https://" not in p.read_text() for p in template.iterdir() if p.name != "index.html.j2")
    with pytest.raises(PathRefused):
        serve_environment([], PACKAGE_DIR / "runs", base={})
    cmd = serve_command("voila", 9999)
    assert "--template=opso_nb" in cmd and "--MappingKernelManager.cull_idle_timeout=120" in cmd
    assert "--MappingKernelManager.cull_connected=False" in cmd
    assert "--unused-session-lifetime" in serve_command("panel", 9999)


def test_panel_stylesheets_are_inlined_outside_a_server():
    """In a kernel (Voila), Panel would link its CSS from cdn.holoviz.org; the dashboards inline it."""
    import panel as pn
    from bokeh.document import Document
    from bokeh.models import ImportedStyleSheet, UIElement
    from panel.io.resources import CDN_DIST

    from opso_nb.dashboards import _widgets

    def cdn_links(root):
        return [s.url for m in root.select({"type": UIElement}) for s in m.stylesheets
                if isinstance(s, ImportedStyleSheet) and s.url.startswith(CDN_DIST)]

    from panel.reactive import Reactive

    old_inline = pn.config.inline
    hooks = pn.viewable.Viewable._preprocessing_hooks
    wrapped = (Reactive._update_model, Reactive._get_properties)
    try:
        pn.config.inline = True
        # Panel alone links its CSS from the CDN
        hooks.remove(_widgets._inline_stylesheets_hook)
        Reactive._update_model, Reactive._get_properties = (f.__wrapped__ for f in wrapped)
        assert cdn_links(pn.Column(pn.pane.Alert("x"), pn.widgets.Select(options=["a"])).get_root(Document()))
        Reactive._update_model, Reactive._get_properties = wrapped
        _widgets.install_offline_stylesheets()
        root = pn.Column(pn.pane.Alert("x"), pn.widgets.Select(options=["a"])).get_root(Document())
        assert cdn_links(root) == []
        # one shared stylesheet object per CSS file and document
        sheets = [s for m in root.select({"type": UIElement}) for s in m.stylesheets]
        assert len({id(s) for s in sheets if "alert" in getattr(s, "css", "")}) == 1
        # stylesheets sent again with later updates (a pane's new text, the loading spinner) are inlined too
        layout = pn.Column(pn.pane.Markdown("x"), pn.widgets.TextInput(value="a"))
        root = layout.get_root(Document())
        layout[0].object = "y"
        layout[0].loading = True
        layout[1].stylesheets = [".x {color: red}"]
        assert cdn_links(root) == []
    finally:
        pn.config.inline = old_inline
        Reactive._update_model, Reactive._get_properties = wrapped
        _widgets.install_offline_stylesheets()


def test_failure_text_names_files_that_are_not_valid_utf8():
    from opso_nb.dashboards._widgets import failure_text
    from opso_nb.failures import failure_record, failures_frame

    odd = os.fsdecode(b"/cards/caf\xe9.wav")
    text = failure_text(failures_frame([failure_record(odd, f"AudioLoadError: {odd}: empty"),
                                        failure_record("/cards/b.wav", "AudioLoadError: truncated")]))
    assert text.startswith("**2 file(s) could not be read.**")
    assert "caf\\xe9.wav: AudioLoadError: caf\\xe9.wav: empty" in text and "b.wav: AudioLoadError: truncated" in text
