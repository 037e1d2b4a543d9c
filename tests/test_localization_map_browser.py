"""The localization map: Python-level behaviour, then served (Voila and ``panel serve``) in headless Chromium."""
import re
from pathlib import Path

import pytest


from browser import assert_healthy, open_page, page_text, poll, serve_app, wait_for_canvases  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "notebooks" / "apps" / "localization_map.ipynb"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The map on the simulated demo array (no data folder), written to a temporary output folder."""
    from opso_nb.dashboards import LocalizationMap
    from opso_nb.workspace import Workspace

    return LocalizationMap(workspace=Workspace(data_dirs=[], output_dir=tmp_path_factory.mktemp("out")))


def shown(app):
    return int(re.search(r"\*\*(\d+) of", app.count.object).group(1))


def test_filters_change_points(app):
    total = len(app.table)
    assert total == 8 * 6  # 8 calls heard by 6 recorders; each detection is the reference of one event
    # the six events of the first clip carry the intruder's wrong delays: hidden at the default 2 m
    assert shown(app) == total - 6
    app.residual_threshold = 20
    # each call is localized once per reference recorder: those events share a point whose count says how many
    assert shown(app) == total == sum(app._points.data["count"])
    assert len(app._points.data["x"]) < total
    app.residual_threshold = 0.0
    assert shown(app) == 0
    app.residual_threshold = 2.0
    app.classes = ["wren"]
    assert set(app._points.data["cls"]) == {"wren"} and shown(app) == 6 * 4 - 6
    app.classes = list(app.param.classes.objects)
    app.time_range = (2.5, 5.5)  # clips starting at 3, 4, 5 s
    assert sorted(set(app._points.data["start"])) == [3.0, 4.0, 5.0]
    app.time_range = app.param.time_range.bounds
    app.cc_threshold = float(app.table["min_cc"].median())
    assert 0 < shown(app) < total - 6
    app.cc_threshold = 0.0


def test_widgets_show_the_filters_a_new_localization_resets(tmp_path_factory, monkeypatch):
    import panel as pn

    from opso_nb.dashboards import LocalizationMap
    from opso_nb.workspace import Workspace

    app = LocalizationMap(workspace=Workspace(data_dirs=[], output_dir=tmp_path_factory.mktemp("out2")))
    layout = app.__panel__()
    classes = next(w for w in layout.select(pn.widgets.CheckBoxGroup) if w.name == app.param.classes.label)
    times = next(w for w in layout.select(pn.widgets.RangeSlider) if w.name == app.param.time_range.label)
    app.classes, app.time_range = ["wren"], (2.0, 3.0)
    assert classes.value == ["wren"] and tuple(times.value) == (2.0, 3.0)
    draws = []
    monkeypatch.setattr(app, "_update_points", lambda: draws.append(tuple(app.time_range)))
    app.set_events(app.events, app.file_coords, app.truth)  # a new localization: every filter reset
    assert classes.value == app.classes == list(app.param.classes.objects)  # the page shows every class again
    assert tuple(times.value) == app.time_range == app.param.time_range.bounds
    assert draws == [app.param.time_range.bounds]  # points drawn once, after the resets


def test_the_demo_array_is_written_under_the_output_folder(app, tmp_path, monkeypatch):
    import tempfile

    from opso_nb.dashboards import LocalizationMap
    from opso_nb.workspace import Workspace

    demo = app.workspace.output_dir / "localization_demo"
    files = set(app.file_coords.index) | {f for e in app.events for f in e.receiver_files}
    assert len(files) == 6 and all(Path(f).parent == demo and Path(f).is_file() for f in files)
    assert f"`{demo}`" in app.source_note.object and not app.error.visible
    # another output folder gets its own copy, and nothing goes to the system's temporary folder
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    other = LocalizationMap(workspace=Workspace(data_dirs=[], output_dir=tmp_path / "out"))
    assert {Path(f).parent for f in other.file_coords.index} == {tmp_path / "out" / "localization_demo"}
    assert len(other.table) == len(app.table) and list(system_tmp.iterdir()) == []
    # recordings deleted while the server runs are simulated again when the demo is opened again
    Path(other.file_coords.index[0]).unlink()
    other.load_demo()
    assert Path(other.file_coords.index[0]).is_file() and len(other.table) == len(app.table)
    # an output folder that cannot be written: the page says so and shows no stale demo
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    other.workspace = Workspace(data_dirs=[], output_dir=blocked)
    other.load_demo()
    assert other.error.visible and "Cannot write the simulated demo array" in other.error.object
    assert len(other.table) == 0 and other._points.data["x"] == [] and other.source_note.object == ""


def test_events_of_one_call_are_drawn_as_one_point(app):
    app.residual_threshold = 2.0
    data = app._points.data
    # 42 well-fitting events of 7 calls: one point per call, counts add up, bigger for more events
    assert sum(data["count"]) == shown(app) == 42
    assert len(data["x"]) == len(set(zip(data["cls"], data["start"]))) == 7
    assert all(size > 9 for size in data["size"]) and "as 7 point(s)" in app.count.object
    app.merge_distance = 0.01  # a finer grid splits the nearly identical positions again
    assert len(app._points.data["x"]) > 7 and sum(app._points.data["count"]) == 42
    app.merge_distance = 1.0


def test_a_folder_of_synchronized_recordings_is_localized(tmp_path):
    import shutil

    from opso_nb import sample_data
    from opso_nb.dashboards import LocalizationMap
    from opso_nb.workspace import Workspace

    for f in sample_data.localization_folder().iterdir():
        shutil.copy(f, tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"junk")
    with open(tmp_path / "LOCA_2021_aru_coords.csv", "a") as fh:
        fh.write("broken.wav,5,5,2\n")
    app = LocalizationMap(folder=tmp_path, workspace=Workspace(data_dirs=[tmp_path], output_dir=tmp_path / "o"))
    assert app.positions_csv == "LOCA_2021_aru_coords.csv" and app.detections_csv == "LOCA_2021_detections.csv"
    assert len(app.table) == 6 and app.table["class"].tolist() == ["zeep"] * 6  # one per reference recorder
    assert len(app._recorders.data["x"]) == 7 and app._truth.data["x"] == []
    assert "broken.wav" in app.warning.object and "not a readable audio file" in app.warning.object
    assert "veryshort.wav" in app.warning.object  # named in the tables, not in the folder
    app.folder_box.folder = "/etc"
    app.localize_folder()
    assert app.error.visible and "outside the data folders" in app.error.object
    assert len(app.table) == 0 and app._points.data["x"] == [] and app._recorders.data["x"] == []


def _array_folder(folder, degrees: bool):
    """The bundled synchronized recordings in ``folder``, their positions in metres or in degrees."""
    import shutil

    import pandas as pd

    from opso_nb import sample_data
    from opso_nb.localization import xy_to_latlon

    for f in sample_data.localization_folder().iterdir():
        if f.suffix == ".wav" or f.name == "LOCA_2021_detections.csv":
            shutil.copy(f, folder)
    coords = pd.read_csv(sample_data.localization_folder() / "LOCA_2021_aru_coords.csv", skipinitialspace=True)
    coords = coords[coords["file"].map(lambda f: (folder / Path(f).name).is_file())]
    if degrees:  # the same recorders, placed near Pittsburgh, as a GPS would give them
        coords["lat"], coords["lon"] = xy_to_latlon(coords["x"], coords["y"], 40.44, -79.95)
        coords = coords.drop(columns=["x", "y"])
    coords.to_csv(folder / "positions.csv", index=False)
    return coords


def test_recorder_positions_in_degrees_are_localized_in_metres(tmp_path):
    import numpy as np

    from opso_nb.dashboards import LocalizationMap
    from opso_nb.workspace import Workspace

    maps = {}
    for degrees in (False, True):
        folder = tmp_path / ("degrees" if degrees else "metres")
        folder.mkdir()
        _array_folder(folder, degrees)
        maps[degrees] = LocalizationMap(folder=folder,
                                        workspace=Workspace(data_dirs=[folder], output_dir=tmp_path / "out"))
    metres, degrees = maps[False], maps[True]
    assert degrees.positions_csv == "positions.csv" and not degrees.error.visible, degrees.error.object
    assert len(degrees.table) == len(metres.table) == 6 and degrees.table["x"].notna().all()
    assert "degrees" in degrees.source_note.object
    # x, y in degrees' map are metres east/north of the recorders' mean position: the metric layout, shifted
    shift = np.array([metres._recorders.data["x"], metres._recorders.data["y"]]).mean(axis=1)
    recorders = degrees._recorders.data
    drawn = dict(zip(recorders["name"], zip(recorders["x"], recorders["y"])))
    assert sorted(drawn) == sorted(metres._recorders.data["name"]) and len(drawn) == 7
    for name, (x, y) in drawn.items():
        original = metres._recorders.data["name"].index(name)
        assert x == pytest.approx(metres._recorders.data["x"][original] - shift[0], abs=1e-3)
        assert y == pytest.approx(metres._recorders.data["y"][original] - shift[1], abs=1e-3)
    # the calls land at the same places relative to the recorders
    assert np.allclose(degrees.table["x"], metres.table["x"] - shift[0], atol=0.05)
    assert np.allclose(degrees.table["y"], metres.table["y"] - shift[1], atol=0.05)
    assert np.allclose(degrees.table["residual_rms"], metres.table["residual_rms"], atol=0.01)
    assert shown(degrees) == shown(metres)


def test_a_bad_positions_table_is_reported_in_the_page(tmp_path):
    from opso_nb.dashboards import LocalizationMap
    from opso_nb.workspace import Workspace

    coords = _array_folder(tmp_path, degrees=True)
    app = LocalizationMap(folder=tmp_path, workspace=Workspace(data_dirs=[tmp_path], output_dir=tmp_path / "out"))
    assert len(app.table) == 6 and len(app._recorders.data["x"]) == 7
    coords["lat"] = coords["lat"].astype(object)
    coords.loc[coords.index[0], "lat"] = "north"  # a typo: no position for that recorder
    coords.to_csv(tmp_path / "positions.csv", index=False)
    app.localize_folder()  # shown, not raised
    assert app.error.visible and "non-numeric" in app.error.object and "LOCA_2021_09_24_652_3.wav" in app.error.object
    assert len(app.table) == 0 and app._points.data["x"] == [] and app._recorders.data["x"] == []
    coords["lat"] = 4000.0  # metres in a column named lat
    coords.to_csv(tmp_path / "positions.csv", index=False)
    app.localize_folder()
    assert "within -90..90" in app.error.object and "x and y" in app.error.object
    # a Python caller's lat/lon table is drawn in metres too; a table without positions changes nothing
    import pandas as pd

    table = pd.DataFrame({"lat": [40.0, 40.0001], "lon": [-80.0, -80.0]}, index=["a.wav", "b.wav"])
    app.set_events([], table)
    assert app._recorders.data["y"][1] - app._recorders.data["y"][0] == pytest.approx(11.12, abs=0.01)
    with pytest.raises(ValueError, match="x and y"):
        app.set_events([], pd.DataFrame({"height": [1.0]}, index=["a.wav"]))
    assert app._recorders.data["name"] == ["a.wav", "b.wav"]


def test_empty_filters_name_the_filter_to_relax(app):
    total = len(app.table)
    app.residual_threshold = 0.0
    assert shown(app) == 0 and f"0 of {total} events shown" in app.count.object
    assert "raise *Largest position error (m)* to 0.25 or more" in app.count.object
    app.residual_threshold = 2.0
    app.cc_threshold = app.param.cc_threshold.bounds[1]  # above every event's call match
    assert shown(app) == 0 and "lower *Smallest call match (0-1)* to" in app.count.object
    needed = float(re.search(r"to ([\d.]+) or less", app.count.object).group(1))
    app.cc_threshold = needed
    assert shown(app) > 0 and "No event passes" not in app.count.object
    app.cc_threshold = 0.0
    app.classes = []
    assert "tick at least one class under *Classes*" in app.count.object
    app.classes = ["wren"]
    app.time_range = (7.5, 7.6)  # no wren calls there
    assert shown(app) == 0 and "widen *Call start times (s)*" in app.count.object
    app.residual_threshold = 0.0  # two filters hide everything: no single one is enough
    assert "relax several" in app.count.object
    app.residual_threshold = 2.0
    app.classes = list(app.param.classes.objects)
    app.time_range = app.param.time_range.bounds
    assert shown(app) == total - 6 and "No event passes" not in app.count.object


def test_folder_box_comes_before_the_filters(app):
    import panel as pn

    controls = app.__panel__()[0][0]  # the column left of the map, in keyboard focus order
    names = [w.name for w in controls.select(pn.widgets.Widget)]
    assert names.index("Folder") < names.index("Localize") < names.index("Largest position error (m)")
    assert names.index("Largest position error (m)") < names.index("Merge points closer than (m)")


def test_selecting_a_point_shows_aligned_receivers(app):
    app._points.selected.indices = [0]
    assert "Event" in app.detail_title.object
    grid = app.detail[0]
    assert len(grid.objects) == len(app.events[app._points.data["row"][0]].receiver_files)


@pytest.mark.browser
@pytest.mark.parametrize("server", ["voila", "panel"])
def test_localization_map_in_chromium(server):
    with serve_app(APP, server) as url, open_page(url) as page:
        page.get_by_text("events shown").first.wait_for(timeout=150_000)
        wait_for_canvases(page, 2)
        text = page_text(page)
        first = int(re.search(r"(\d+) of (\d+) events shown", text).group(1))
        assert first == 42, text[:300]  # 48 events, the intruder's 6 hidden at the default residual threshold
        # the simulated recordings went to the server's output folder, which the page names
        demo = url.output / "localization_demo"
        assert len(list(demo.glob("rec_*.wav"))) == 6
        assert poll(page, lambda: str(demo) in page_text(page)), page_text(page)[:800]
        # click a position: select the first point in the browser's copy of the points' data source, as the
        # tap tool does; the server must answer with that event's aligned receivers (6 spectrograms + players)
        canvases_before = page.locator("canvas").count()
        selected = page.evaluate("""() => {
            for (const doc of window.Bokeh.documents) {
                for (const model of doc.all_models) {
                    if (model.data !== undefined && model.data.residual !== undefined && model.selected) {
                        model.selected.indices = [0];
                        return true;
                    }
                }
            }
            return false;
        }""")
        assert selected
        assert poll(page, lambda: "Event " in page_text(page), timeout_s=60), page_text(page)[:500]
        assert poll(page, lambda: page.locator("audio").count() >= 6, timeout_s=60)
        assert poll(page, lambda: page.locator("canvas").count() >= canvases_before + 2 * 6, timeout_s=60)
        assert poll(page, lambda: "residual RMS" in page_text(page))
        # drag the residual slider to its minimum: fewer points (the recordings' sliders come first on the page)
        handle = page.locator(".bk-input-group", has_text="Largest position error").locator(".noUi-handle").first
        handle.focus()
        for _ in range(25):
            handle.press("ArrowLeft")
        assert poll(page, lambda: int(re.search(r"(\d+) of \d+ events shown", page_text(page)).group(1)) < first,
                    timeout_s=30), page_text(page)[:500]
        # at 0 m nothing passes: the page says which filter to relax
        assert poll(page, lambda: "No event passes the filters" in page_text(page), timeout_s=30)
        assert poll(page, lambda: "raise Largest position error (m) to" in page_text(page)), page_text(page)[:800]
        assert_healthy(page)
