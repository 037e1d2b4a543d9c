"""The annotation viewer: driven from Python, and served by ``panel serve`` and clicked in headless Chromium."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from browser import assert_healthy, open_page, poll, serve_app
from opso_nb.dashboards import AnnotationViewer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "notebooks" / "apps" / "annotation_viewer.ipynb"
HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSpecies\n"


@pytest.fixture
def field_folder(tmp_path):
    """Two 6 s recordings with tables (one with a bad row), one recording without a table."""
    rng = np.random.default_rng(1)
    for name in ["site1", "site2", "lonely"]:
        sf.write(tmp_path / f"{name}.wav", (rng.standard_normal(6 * 8000) * 0.01).astype("float32"), 8000)
    (tmp_path / "site1.Table.1.selections.txt").write_text(
        HEADER + "1\tSpectrogram 1\t1\t0.5\t1.5\t500\t2000\tWOTH\n"
        "2\tSpectrogram 1\t1\t2.8\t3.6\t1000\t3000\tEATO\n"
        "3\tSpectrogram 1\t1\t4.0\t4.1\t1000\t3000\tWOTH\n"
    )
    (tmp_path / "site2.Table.1.selections.txt").write_text(
        HEADER + "1\tSpectrogram 1\t1\t1.0\t2.0\t500\t2000\tWOTH\n2\tSpectrogram 1\t1\tsoon\t3.0\t500\t2000\tWOTH\n"
    )
    return tmp_path


def test_viewer_shows_boxes_filters_and_clip_labels(field_folder):
    app = AnnotationViewer(folder=field_folder, recording="site1")
    assert app.param.recording.objects == ["site1", "site2"]
    assert "1 recording(s) without a table: lonely.wav" in app.status.object
    assert app.param.box.objects == ["1: WOTH 0.50-1.50 s", "2: EATO 2.80-3.60 s", "3: WOTH 4.00-4.10 s"]
    assert app._box_source.data["left"] == [0.5, 2.8, 4.0]
    assert app._box_source.data["top"] == [2000.0, 3000.0, 3000.0]
    # 3 s clips over 6 s: WOTH 0.5-1.5 in clip 0-3; EATO 0.2 s in 0-3 (< 0.25), 0.6 s in 3-6;
    # the 0.1 s WOTH box at 4 s is too short
    table = app.labels_table.object
    assert table.index.tolist() == [(0.0, 3.0), (3.0, 6.0)]
    assert table["WOTH"].tolist() == [1, 0] and table["EATO"].tolist() == [0, 1]
    app.min_label_overlap = 0.1  # now the 0.1 s WOTH box and EATO's 0.2 s in clip 0-3 count
    assert app.labels_table.object["WOTH"].tolist() == [1, 1]
    assert app.labels_table.object["EATO"].tolist() == [1, 1]
    app.classes = ["EATO"]
    assert app.param.box.objects == ["1: EATO 2.80-3.60 s"]
    assert list(app.labels_table.object.columns) == ["EATO"]
    assert app._grid_source.data["value"] == [1, 1] and app._grid_source.data["x"] == [1.5, 4.5]


def test_viewer_reports_bad_rows_and_plays_box(field_folder):
    app = AnnotationViewer(folder=field_folder, recording="site2")
    assert app.warning.visible and "line 3" in app.warning.object and "'soon'" in app.warning.object
    assert app.param.box.objects == ["1: WOTH 1.00-2.00 s"]
    # the player holds just the box: 1 s at 8 kHz, 16-bit mono WAV
    data = app.player.object
    raw = data if isinstance(data, bytes) else __import__("base64").b64decode(data.split(",", 1)[1])
    assert len(raw) == 44 + 2 * 8000
    # scrolling stays inside the recording (6 s long, 4 s window)
    app.window_duration = 4
    app.move_window(+1)
    assert app.start_time == 2.0 and "2.0-6.0 s" in app.status.object
    app.move_window(-1)
    assert app.start_time == 0.0
    # clicking inside the box on the spectrogram picks it; clicking outside changes nothing
    app.box = None
    app._on_tap(type("Tap", (), {"x": 1.5, "y": 1000.0})())
    assert app.box == "1: WOTH 1.00-2.00 s"
    app.folder = str(field_folder / "missing")
    assert app.error.visible and "not a folder" in app.error.object


def test_viewer_refuses_folders_outside_and_clears_the_old_recording(field_folder):
    app = AnnotationViewer(folder=field_folder, recording="site1")
    assert not app.spectrogram_plot.cleared and len(app._box_source.data["left"]) == 3
    for bad, reason in (("/etc", "outside the data folders"), ("/" + "x" * 5000, "5001 characters long")):
        app.folder = bad
        assert app.error.visible and reason in app.error.object
        assert app.spectrogram_plot.cleared and app._box_source.data["left"] == []
        assert app.param.recording.objects == [] and app.labels_table.object.empty
        assert "Type a folder" in app.status.object
    app.folder = str(field_folder)
    assert not app.error.visible and app.param.recording.objects == ["site1", "site2"]
    assert not app.spectrogram_plot.cleared


def test_viewer_gives_reasons_and_counts_everything_unpaired(field_folder):
    rng = np.random.default_rng(2)
    for i in range(7):
        sf.write(field_folder / f"extra{i}.wav", (rng.standard_normal(800) * 0.01).astype("float32"), 8000)
    (field_folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVE")
    (field_folder / "broken.Table.1.selections.txt").write_text(HEADER + "1\tSpectrogram 1\t1\t0.5\t1.5\t500\t2000\tWOTH\n")
    app = AnnotationViewer(folder=field_folder, recording="site1")
    # 8 recordings without a table: five named, the rest counted
    assert "8 recording(s) without a table: extra0.wav, extra1.wav, extra2.wav, extra3.wav, extra4.wav and 3 more" \
        in app.status.object
    assert "broken.wav" in app.warning.object and "not a readable audio file" in app.warning.object
    app.recording = "broken"
    assert app.error.visible and "broken.wav" in app.error.object and app.spectrogram_plot.cleared
    assert app.param.recording.objects == ["broken", "site1", "site2"]  # the list stays to pick another
    app.recording = "site2"
    assert not app.error.visible and not app.spectrogram_plot.cleared


# ----------------------------------------------------------------------------- browser


@pytest.mark.browser
@pytest.mark.parametrize("server", ["panel", "voila"])
def test_annotation_viewer_in_chromium(server):
    with serve_app(APP, server, env={"BOKEH_RESOURCES": "inline"}) as url, open_page(url) as page:
        status = page.get_by_text("box(es) in the recording")
        status.first.wait_for(timeout=90_000)
        assert "9 box(es) in the recording, 9 shown in 0.0-10.0 s" in status.first.inner_text()
        # the spectrogram and clip grid are drawn on canvases
        assert page.locator("canvas").count() >= 2

        # class filter: untick WOTH -> 3 WOTH boxes and the WOTH column go away
        page.get_by_label("WOTH", exact=True).uncheck()
        page.get_by_text("6 shown in").first.wait_for(timeout=15_000)
        # the status and the table are separate panes: wait for the table too
        headers = page.locator("table th")
        assert poll(page, lambda: "WOTH" not in headers.all_inner_texts()), headers.all_inner_texts()
        assert "EATO" in headers.all_inner_texts()

        # clip overlap 1 s -> 4 clips of 3 s in the window (0-3, 2-5, 4-7, 6-9)
        overlap = page.get_by_label("Clip overlap")
        overlap.fill("1")
        overlap.press("Enter")
        rows = page.locator("table tbody tr")
        assert poll(page, lambda: rows.count() == 4), rows.count()
        starts = [rows.nth(i).locator("th").first.inner_text() for i in range(4)]
        assert starts == ["0.0", "2.0", "4.0", "6.0"]

        # pick a box to listen to: the player gets just that box (EATO 3.13-5.08 s)
        page.get_by_label("Box", exact=True).select_option(label="2: EATO 3.13-5.08 s")
        player = page.locator("audio").first
        assert poll(page, lambda: abs((player.evaluate("a => a.duration") or 0) - 1.946) < 0.05), \
            player.evaluate("a => a.duration")
        assert_healthy(page)
