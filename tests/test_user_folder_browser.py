"""Every dashboard opened on a user's folder: it shows the files and names the bad one with its reason.

One ``panel serve`` process serves all seven app notebooks (imports shared), started the way
``python -m opso_nb.apps --data FOLDER`` starts it; the folder is a temporary copy of bundled
files plus one corrupt recording (``corrupt.wav``, with an annotation table and a recorder
position so every dashboard meets it).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from browser import assert_healthy, page_text, poll, serve_app

from opso_nb import sample_data

APPS = Path(__file__).resolve().parents[1] / "notebooks" / "apps"
REASON = "not a readable audio file"

_SPECTROGRAM_CLEARED = """() => {
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


@pytest.fixture(scope="module")
def served(user_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    with serve_app(APPS, "panel", data=[user_folder], output=out, env={"OMP_NUM_THREADS": "1"}) as url:
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
    page.goto(f"{served}{app}", timeout=120_000)
    page.get_by_text(ready).first.wait_for(timeout=120_000)


def _reports_corrupt(page):
    text = page_text(page)
    return "corrupt.wav" in text and REASON in text


@pytest.mark.browser
def test_spectrogram_explorer_on_a_user_folder(served, user_folder, page):
    _open(page, served, "spectrogram_explorer", "Showing 0.00")
    assert "birds_10s.wav" in page_text(page) and str(user_folder) in page.get_by_label("Folder").input_value()
    assert poll(page, lambda: _reports_corrupt(page))
    assert not page.evaluate(_SPECTROGRAM_CLEARED)
    # the keyboard walks the controls top-down: where to look first, then how
    assert focus_order(page, 4) == ["Folder", "Browse", "File", "Start time"]
    # a bad file replaces the old spectrogram with an error
    page.get_by_label("File", exact=True).select_option("corrupt.wav")
    assert poll(page, lambda: "cannot be read; choose another file" in page_text(page))
    assert poll(page, lambda: page.evaluate(_SPECTROGRAM_CLEARED))
    assert "Showing 0.00" not in page_text(page)
    assert_healthy(page)


@pytest.mark.browser
def test_annotation_viewer_on_a_user_folder(served, page):
    _open(page, served, "annotation_viewer", "box(es) in the recording")
    assert poll(page, lambda: _reports_corrupt(page))
    options = page.get_by_label("Recording", exact=True).locator("option").all_inner_texts()
    assert options == ["Recording_1_Segment_07-snippet", "corrupt"]
    # a folder outside the workspace is refused, and the old recording does not stay on screen
    folder = page.get_by_label("Folder", exact=True)
    folder.fill("/etc")
    folder.press("Enter")
    assert poll(page, lambda: "outside the data folders" in page_text(page))
    assert poll(page, lambda: page.evaluate(_SPECTROGRAM_CLEARED)) and "box(es) in the recording" not in page_text(page)
    folder.fill("/" + "x" * 4999)
    folder.press("Enter")
    assert poll(page, lambda: "5000 characters long" in page_text(page))
    assert_healthy(page)


@pytest.mark.browser
def test_ribbit_explorer_on_a_user_folder(served, page):
    _open(page, served, "ribbit_explorer", "highest score")
    assert "gpt3.mp3" in page_text(page)
    assert poll(page, lambda: _reports_corrupt(page))
    assert_healthy(page)


@pytest.mark.browser
def test_preprocessing_tuner_on_a_user_folder(served, page):
    _open(page, served, "preprocessing_tuner", "Render 1:")
    assert "recordings with Raven tables" in page_text(page) and "samples, tensor [1, 128, 256]" in page_text(page)
    assert poll(page, lambda: _reports_corrupt(page))
    assert_healthy(page)


@pytest.mark.browser
def test_training_monitor_on_a_user_folder(served, page):
    _open(page, served, "training_monitor", "Run name")
    assert poll(page, lambda: "10 clips of" in page_text(page))  # the 10 s annotated recording in 1 s clips
    assert poll(page, lambda: _reports_corrupt(page))
    assert_healthy(page)


@pytest.mark.browser
def test_prediction_explorer_on_a_user_folder(served, page):
    _open(page, served, "prediction_explorer", "No model yet")
    text = page_text(page)
    assert "No model yet" in text and "training monitor or notebook 04" in text  # what to do next
    assert poll(page, lambda: _reports_corrupt(page))
    assert_healthy(page)


@pytest.mark.browser
def test_localization_map_on_a_user_folder(served, page):
    _open(page, served, "localization_map", "events shown")
    assert poll(page, lambda: "of 6 events shown" in page_text(page))  # one event per reference recorder
    assert "LOCA_2021_aru_coords.csv" in page_text(page)
    assert poll(page, lambda: _reports_corrupt(page))
    assert_healthy(page)
