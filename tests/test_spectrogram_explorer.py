"""The spectrogram explorer component, driven from Python (its browser test is separate)."""
import tracemalloc

import numpy as np
import pytest
import soundfile


from opso_nb.dashboards import SpectrogramExplorer  # noqa: E402
from opso_nb.dashboards._widgets import FolderFilePicker, audio_player  # noqa: E402
from opso_nb.audio import Audio  # noqa: E402


@pytest.fixture
def long_folder(tmp_path):
    """A folder with a 10-minute recording (written in blocks) and a corrupt file."""
    sr = 16000
    with soundfile.SoundFile(tmp_path / "long.wav", "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        rng = np.random.default_rng(0)
        for _ in range(10):
            f.write((rng.standard_normal(60 * sr) * 0.05).astype(np.float32))
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    return tmp_path


def test_explorer_overview_streams_a_long_file(long_folder):
    tracemalloc.start()
    app = SpectrogramExplorer(folder=long_folder, file="long.wav")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the whole file as float32 would be 38 MB; the overview and one 10 s window need far less
    assert peak < 15 * 2**20
    assert len(app._overview_source.data["t"]) == 1500
    assert "600.0 s" in app.status.object
    assert app.spectrogram_plot.n_updates == 1


def test_explorer_window_and_settings_update_view(long_folder):
    app = SpectrogramExplorer(folder=long_folder, file="long.wav")
    before = app.spectrogram_plot.n_updates
    app.start_time = 300
    assert "Showing 300.00-310.00 s" in app.status.object
    image = app.spectrogram_plot.source.data["image"][0]
    app.settings.window_samples = 2048
    assert app.spectrogram_plot.source.data["image"][0].shape[0] == 1025 != image.shape[0]
    assert app.spectrogram_plot.n_updates == before + 2
    assert app._selection.left == 300


def test_explorer_reports_corrupt_file(long_folder):
    app = SpectrogramExplorer(folder=long_folder, file="broken.wav")
    assert app.error.visible and "broken.wav" in app.error.object


def test_picker_never_leaves_its_folder(long_folder):
    picker = FolderFilePicker(folder=long_folder)
    assert picker.param.file.objects == ["broken.wav", "long.wav"]
    with pytest.raises(ValueError):
        picker.file = "../../etc/passwd"


def test_audio_player_refuses_whole_long_recordings():
    with pytest.raises(ValueError, match="refusing"):
        audio_player(Audio.silence(600, 8000))


def test_bad_file_replaces_the_old_spectrogram_with_an_error(long_folder):
    app = SpectrogramExplorer(folder=long_folder, file="long.wav")
    assert not app.spectrogram_plot.cleared and len(app._overview_source.data["t"]) == 1500
    # the folder check names the bad file and the reason before it is even opened
    assert app.warning.visible and "broken.wav" in app.warning.object
    assert "not a readable audio file" in app.warning.object
    app.picker.file = "broken.wav"
    assert app.error.visible and "broken.wav" in app.error.object
    assert app.spectrogram_plot.cleared and np.isnan(app.spectrogram_plot.source.data["image"][0]).all()
    assert "No spectrogram" in app.spectrogram_plot.figure.title.text
    assert len(app._overview_source.data["t"]) == 0
    assert len(app.player.object) < 2000  # 0.1 s of silence, not the long file's window
    assert "cannot be read" in app.status.object
    app.picker.file = "long.wav"  # a good file again: the error goes, the picture comes back
    assert not app.error.visible and not app.spectrogram_plot.cleared


def test_folder_outside_the_workspace_is_refused(long_folder):
    app = SpectrogramExplorer(folder=long_folder, file="long.wav")
    app.picker.folder = "/etc"
    assert app.error.visible and "outside the data folders" in app.error.object
    assert app.picker.param.file.objects == [] and app.spectrogram_plot.cleared
    app.picker.folder = "/" + "x" * 5000
    assert "5001 characters long" in app.error.object
    app.picker.browse = str(long_folder)  # Browse brings it back
    assert app.picker.file == "broken.wav" and app.error.visible  # first file is the broken one
    app.picker.file = "long.wav"
    assert not app.error.visible


def test_status_times_are_rounded_to_the_display(long_folder):
    app = SpectrogramExplorer(folder=long_folder, file="long.wav")
    app.start_time = 2.298055429359244
    assert "Showing 2.30-12.30 s" in app.status.object
    app.window_duration = 120
    assert "Showing 2.3-122.3 s" in app.status.object


def test_widgets_show_the_values_a_new_file_resets(long_folder, monkeypatch):
    import panel as pn

    soundfile.write(long_folder / "short.wav", np.zeros(8000 * 20, np.float32), 8000)
    app = SpectrogramExplorer(folder=long_folder, file="long.wav")
    layout = app.__panel__()
    start_box = next(w for w in layout.select(pn.widgets.FloatInput) if w.name == "Start time")
    band = next(w for w in layout.select(pn.widgets.RangeSlider) if "requency" in w.name)
    app.start_time = 300.0
    assert start_box.value == 300.0
    draws = []
    monkeypatch.setattr(app, "_draw_window", lambda: draws.append(app.start_time))
    app.picker.file = "short.wav"
    assert start_box.value == 0.0 and app.start_time == 0.0  # the box shows the reset, not the old 300 s
    assert tuple(band.value) == app.settings.frequency_range == (0, 4000.0) and band.end == 4000.0
    assert draws == [0.0]  # drawn once, after every value was reset
