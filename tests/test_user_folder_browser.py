"""Every dashboard opened on a user's folder: it shows the files and names the bad one with its reason.

Each test runs on both servers: one Voila and one ``panel serve`` process (per module) serve
all seven app notebooks, started the way ``python -m opso_nb.apps --data FOLDER`` starts
them; the folder is a temporary copy of bundled files plus one corrupt recording
(``corrupt.wav``, with an annotation table and a recorder position so every dashboard meets it).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from browser import assert_healthy, page_text, poll, serve_app

from opso_nb import sample_data

APPS = Path(__file__).resolve().parents[1] / "notebooks" / "apps"
REASON = "not a readable audio file"

#: Whether the spectrogram shows the "No spectrogram" state; null until Bokeh has loaded (Voila loads it late).
_SPECTROGRAM_CLEARED = """() => {
  if (!window.Bokeh) return null;
  for (const doc of window.Bokeh.documents)
    for (const model of doc.all_models)
      if (model.type === 'Title' || (model.text !== undefined && model.constructor.name === 'Title'))
        if (String(model.text).startsWith('No spectrogram')) return true;
  return false;
}"""


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("my_recordings")
    wav, table = sample_data.annotated_recording()
    for f in (sample_data.birds(), sample_data.toads_folder() / "gpt3.mp3", wav, table,
              *sample_data.localization_folder().iterdir()):
        shutil.copy(f, folder)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    shutil.copy(table, folder / "corrupt.Table.1.selections.txt")
    with open(folder / "LOCA_2021_aru_coords.csv", "a") as fh:
        fh.write("corrupt.wav,5,5,2\n")
    return folder


#: Every test on both servers; module scope: one server of each kind for the whole module.
pytestmark = [pytest.mark.browser, pytest.mark.parametrize("server", ["voila", "panel"], scope="module")]


@pytest.fixture(scope="module")
def served(server, user_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"runs_{server}")
    # Voila starts a kernel per page: cull those of closed pages soon, so seven visits do not pile up
    with serve_app(APPS, server, data=[user_folder], output=out, env={"OMP_NUM_THREADS": "1"},
                   cull_idle_timeout=20, cull_interval=10) as url:
        yield url


_FOCUSED = """() => {
  let el = document.activeElement;
  while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
  if (!el || !['INPUT', 'SELECT', 'TEXTAREA', 'BUTTON'].includes(el.tagName)) return null;
  const root = el.getRootNode();
  const label = root.querySelector ? root.querySelector('label') : null;
  return label ? label.textContent.trim() : el.tagName;
}"""


def focus_order(page, n: int, max_tabs: int = 40) -> list[str]:
    """Labels of the first ``n`` form controls reached with the Tab key from the top of the page."""
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); }")
    labels = []
    for _ in range(max_tabs):
        page.keyboard.press("Tab")
        label = page.evaluate(_FOCUSED)
        if label is not None and (not labels or labels[-1] != label):
            labels.append(label)
        if len(labels) == n:
            break
    return labels


def _open(page, served, app, ready):
    """Open ``app`` (a notebook name) on the served folder; wait for the text ``ready``."""
    url = f"{served}voila/render/{app}.ipynb" if served.server == "voila" else f"{served}{app}"
    page.goto(url, timeout=120_000)
    page.get_by_text(ready).first.wait_for(timeout=120_000)


def _wait_text(page, *texts, timeout_s: float = 30.0) -> None:
    """Wait until the page shows every one of ``texts`` (updates may come in separate messages)."""
    if not poll(page, lambda: all(t in page_text(page) for t in texts), timeout_s):
        text = page_text(page)
        raise AssertionError(f"missing {[t for t in texts if t not in text]}; page text: {text[:1500]}")


def _reports_corrupt(page) -> None:
    _wait_text(page, "corrupt.wav", REASON)


def test_spectrogram_explorer_on_a_user_folder(served, user_folder, page):
    _open(page, served, "spectrogram_explorer", "Showing 0.00")
    _wait_text(page, "birds_10s.wav")
    assert poll(page, lambda: str(user_folder) in page.get_by_label("Folder").input_value())
    _reports_corrupt(page)
    assert poll(page, lambda: page.evaluate(_SPECTROGRAM_CLEARED) is not None)
    assert page.evaluate(_SPECTROGRAM_CLEARED) is False
    # the keyboard walks the controls top-down: where to look first, then how
    assert focus_order(page, 4) == ["Folder", "Browse", "File", "Start time"]
    # a bad file replaces the old spectrogram with an error
    page.get_by_label("File", exact=True).select_option("corrupt.wav")
    _wait_text(page, "cannot be read; choose another file")
    assert poll(page, lambda: page.evaluate(_SPECTROGRAM_CLEARED))
    assert poll(page, lambda: "Showing 0.00" not in page_text(page))
    assert_healthy(page)


def test_annotation_viewer_on_a_user_folder(served, page):
    _open(page, served, "annotation_viewer", "box(es) in the recording")
    _reports_corrupt(page)
    options = page.get_by_label("Recording", exact=True).locator("option")
    assert poll(page, lambda: options.all_inner_texts() == ["Recording_1_Segment_07-snippet", "corrupt"]), \
        options.all_inner_texts()
    # a folder outside the workspace is refused, and the old recording does not stay on screen
    folder = page.get_by_label("Folder", exact=True)
    folder.fill("/etc")
    folder.press("Enter")
    _wait_text(page, "outside the data folders")
    assert poll(page, lambda: page.evaluate(_SPECTROGRAM_CLEARED))
    assert poll(page, lambda: "box(es) in the recording" not in page_text(page))
    folder.fill("/" + "x" * 4999)
    folder.press("Enter")
    _wait_text(page, "5000 characters long")
    assert_healthy(page)


def test_ribbit_explorer_on_a_user_folder(served, page):
    _open(page, served, "ribbit_explorer", "highest score")
    _wait_text(page, "gpt3.mp3")
    _reports_corrupt(page)
    assert_healthy(page)


def test_preprocessing_tuner_on_a_user_folder(served, page):
    _open(page, served, "preprocessing_tuner", "Render 1:")
    _wait_text(page, "recordings with Raven tables", "samples, tensor [1, 128, 256]")
    _reports_corrupt(page)
    assert_healthy(page)


def test_training_monitor_on_a_user_folder(served, page):
    _open(page, served, "training_monitor", "Run name")
    _wait_text(page, "10 clips of")  # the 10 s annotated recording in 1 s clips
    _reports_corrupt(page)
    assert_healthy(page)


def test_prediction_explorer_on_a_user_folder(served, page):
    _open(page, served, "prediction_explorer", "No model yet")
    _wait_text(page, "No model yet", "training monitor or notebook 04")  # what to do next
    _reports_corrupt(page)
    assert_healthy(page)


def test_localization_map_on_a_user_folder(served, page):
    _open(page, served, "localization_map", "events shown")
    _wait_text(page, "of 6 events shown")  # one event per reference recorder
    _wait_text(page, "LOCA_2021_aru_coords.csv")
    _reports_corrupt(page)
    assert_healthy(page)
