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
