"""The clip-review dashboard: driven from Python, then served (Voila and ``panel serve``) and used in Chromium."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opso_nb.dashboards import ClipReview
from opso_nb.review import LabelStore, ReviewSettings, example_score_table, select_clips
from opso_nb.sample_data import toads_folder
from opso_nb.workspace import Workspace, load_clips

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "notebooks" / "apps" / "clip_review.ipynb"
CLASS = "great_plains_toad"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example score table (RIBBIT on the bundled toads), made once for the module."""
    return example_score_table(tmp_path_factory.mktemp("example"))


def workspace_with_example(tmp_path, example) -> Workspace:
    """An output folder that already holds the example table, where the dashboard looks for it."""
    out = tmp_path / "out"
    (out / "review" / "example_scores").mkdir(parents=True)
    (out / "review" / "example_scores" / example.name).write_bytes(example.read_bytes())
    return Workspace(data_dirs=[], output_dir=out)


# ----------------------------------------------------------------------------- from Python

def test_first_open_reviews_the_example_and_resumes_after_reopening(tmp_path, example):
    ws = workspace_with_example(tmp_path, example)
    app = ClipReview(workspace=ws)
    app.__panel__()
    assert not app.error.visible, app.error.object
    assert app.settings.class_name == CLASS and app.table == example.name
    assert "17 of 17 recording(s)" in app.audio_note.object
    total = len(app.session)
    assert app.progress_text.object == f"**0 of {total} reviewed**"
    assert not app.spectrogram.cleared and app.player.object  # a clip is drawn and playable
    # the spectrogram spans the clip plus 1 s of context on each side (cut at the recording's ends)
    start, end = app.session.current[1:]
    assert app._clip_edges[0].location == start and app._clip_edges[1].location == end
    x_range = app.spectrogram.figure.x_range
    assert x_range.start == pytest.approx(max(0.0, start - 1), abs=0.02)
    assert x_range.end == pytest.approx(min(10.0, end + 1), abs=0.02)
    shown = []
    for key in ("y", "n", "u"):
        shown.append(app.session.current)
        app.keys.event = f"{key}:{len(shown)}"
    app.note.value = "distant"
    app.act("present")
    shown.append(("fourth",))
    next_clip = app.session.current
    assert app.progress_text.object == f"**4 of {total} reviewed**"
    labels = LabelStore(app.session.store.path).labels(CLASS)
    assert [labels.loc[c, "label"] for c in shown[:3]] == ["present", "absent", "unsure"]
    assert list(app.recent.object["label"])[:1] == ["present"] and list(app.recent.object["note"])[:1] == ["distant"]
    assert "only 3 clip(s) reviewed" in app.calibration_warning.object  # unsure clips do not count

    reopened = ClipReview(workspace=ws)
    assert reopened.session.progress() == (4, total)
    assert reopened.session.current == next_clip and reopened.session.sample.index.equals(app.session.sample.index)
    assert "Not labelled yet" in reopened.label_text.object
    reopened.act("back")  # the previous clip of the sample, with its saved answer and note
    assert "**present** (distant)" in reopened.label_text.object and reopened.note.value == "distant"


def test_export_writes_under_the_output_folder_and_reads_back(tmp_path, example):
    from opso_nb.annotations import BoxedAnnotations

    ws = workspace_with_example(tmp_path, example)
    app = ClipReview(workspace=ws)
    truth = {}
    while app.session.current is not None:  # label every clip from the known truth: gpt* hold toads
        clip = app.session.current
        truth[clip] = "present" if clip[0].startswith("gpt") else "absent"
        app.session.label(truth[clip])  # the session directly: no redraw per clip
    app.refresh()
    assert app.session.finished and "all done" in app.progress_text.object
    assert app.spectrogram.cleared and app.buttons["present"].disabled
    written = app.export()
    for path in [written["labels"], written["training_labels"], written["threshold"], *written["raven"]]:
        assert ws.output_dir in path.parents and path.is_absolute() and path.is_file()
    assert str(written["labels"]) in app.export_status.object and str(written["threshold"]) in \
        app.export_status.object
    # the training table: shown with how to retrain, and read by the training monitor's loader as it is
    assert str(written["training_labels"]) in app.export_status.object
    assert f"{len(truth)} clip(s)" in app.export_status.object and "training monitor" in app.export_status.object
    clips, failures = load_clips(written["training_labels"].parent, written["training_labels"].name, 2.0)
    assert failures.empty and list(clips.columns) == [CLASS]
    assert dict(zip(((Path(f).name, s, e) for f, s, e in clips.index), clips[CLASS])) == {
        c: int(v == "present") for c, v in truth.items()}
    assert all(Path(f).parent == toads_folder() for f in clips.index.get_level_values("file"))
    labels = pd.read_csv(written["labels"])
    assert len(labels) == len(truth) == len(app.session)
    assert dict(zip(zip(labels.file, labels.start_time, labels.end_time), labels.label)) == truth
    threshold = json.loads(written["threshold"].read_text())
    assert threshold["class"] == CLASS and threshold["n_reviewed"] == len(truth)
    assert threshold["score_table"].endswith(example.name)
    # Raven tables name the real recordings, one per toad recording with a confirmed clip
    confirmed = sorted({c[0] for c, v in truth.items() if v == "present"})
    assert sorted(p.name for p in written["raven"]) == [f"{Path(f).stem}.Table.1.selections.txt" for f in confirmed]
    boxes = BoxedAnnotations.from_raven_files(written["raven"],
                                              audio_files=[str(toads_folder() / f) for f in confirmed])
    assert len(boxes.df) == sum(v == "present" for v in truth.values())


def test_bad_tables_missing_recordings_and_unknown_classes_are_shown_not_raised(tmp_path, example):
    ws = workspace_with_example(tmp_path, example)
    folder = ws.output_dir / "review" / "example_scores"
    (folder / "no_index.csv").write_text("clip,score\n1,0.5\n")
    (folder / "empty.csv").write_text("file,start_time,end_time,great_plains_toad\n")
    app = ClipReview(workspace=ws, table=example.name)
    assert app.param.table.objects == ["empty.csv", "no_index.csv", example.name]
    for name, problem in [("no_index.csv", "needs the columns"), ("empty.csv", "holds no clips")]:
        app.table = name
        assert app.error.visible and "cannot be used" in app.error.object and problem in app.error.object
        # nothing stale: no clip, no sound, no calibration, buttons off
        assert app.session is None and app.spectrogram.cleared and app.buttons["present"].disabled
        assert app.calibration_text.object == "" and app.export_button.disabled
        app.act("present")  # a key pressed now does nothing
    app.table = example.name
    assert not app.error.visible and app.session is not None

    # a table naming a missing recording and a broken one: both reported with the reason, their clips skipped
    table = pd.read_csv(example)
    extra = pd.DataFrame({"file": ["lost.wav", "broken.wav"], "start_time": [0.0, 0.0], "end_time": [2.0, 2.0],
                          CLASS: [0.9, 0.95]})
    audio = tmp_path / "audio"
    audio.mkdir()
    for f in toads_folder().glob("*.mp3"):
        (audio / f.name).write_bytes(f.read_bytes())  # copies: one is deleted below
    (audio / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVE")
    pd.concat([table, extra]).to_csv(folder / "with_missing.csv", index=False)
    ws2 = Workspace(data_dirs=[audio], output_dir=ws.output_dir)
    app2 = ClipReview(scores_folder=folder, table="with_missing.csv", audio_folder=audio, workspace=ws2,
                      class_name="no_such_class")
    assert app2.error.visible and "'no_such_class' is not a column" in app2.error.object
    assert app2.settings.class_name == CLASS and app2.session is not None
    assert "17 of 19 recording(s)" in app2.audio_note.object
    assert "lost.wav" in app2.audio_note.object and "not found" in app2.audio_note.object
    assert "broken.wav" in app2.audio_note.object
    files = set(app2.session.sample.index.get_level_values("file"))
    assert not files & {"lost.wav", "broken.wav"}

    # a recording that disappears during the review: the clip says why and can be skipped
    gone = Path(app2.session.audio_path(app2.session.current[0]))
    assert audio in gone.parents  # a copy in this test's folder
    gone.unlink()
    app2.act("skip")
    app2.act("back")  # shown again: now unreadable
    assert app2.clip_problem.visible and "cannot be played" in app2.clip_problem.object
    assert gone.name in app2.clip_problem.object and app2.spectrogram.cleared
    app2.act("skip")
    assert not app2.clip_problem.visible


def test_a_table_given_in_python_and_a_refused_scores_folder(tmp_path):
    rng = np.random.default_rng(0)
    files = sorted(str(p) for p in toads_folder().glob("gpt*.mp3"))
    index = pd.MultiIndex.from_tuples([(f, s, s + 2.0) for f in files for s in (0.0, 2.0, 4.0)],
                                      names=["file", "start_time", "end_time"])
    scores = pd.DataFrame({"toad": rng.uniform(size=len(index))}, index=index)
    ws = Workspace(data_dirs=[], output_dir=tmp_path / "out")
    app = ClipReview(scores=scores, workspace=ws, table_name="notebook")
    assert app.session is not None and len(app.session) == 12 and not app.error.visible
    assert app.session.store.path.parent == ws.output_dir / "review" / "notebook"
    app.label("present")
    assert app.session.progress()[0] == 1
    with pytest.raises(ValueError, match="unknown action"):
        app.act("maybe")
    refused = ClipReview(scores_folder="/", workspace=ws)
    assert refused.table is None and "outside the data folders" in refused.table_note.object
    assert refused.session is None and refused.error.visible


def _limit_widgets(view):
    """The recordings, time-span and score-range widgets of a rendered dashboard."""
    import panel as pn

    files, = view.select(pn.widgets.MultiChoice)
    dates, = view.select(pn.widgets.DatetimeRangePicker)
    scores, = view.select(pn.widgets.EditableRangeSlider)
    return files, dates, scores


def test_limits_by_recordings_and_scores_draw_what_select_clips_draws_and_are_restored(tmp_path, example):
    ws = workspace_with_example(tmp_path, example)
    app = ClipReview(workspace=ws)
    files, dates, score_slider = _limit_widgets(app.__panel__())
    # the example's names hold no dates: no time span, and the page says why
    assert dates.disabled and "cannot be limited to a time span" in app.limits_note.object
    # no limits yet: the score slider spans every score, the recordings box offers the table's recordings
    class_scores = app.scores[CLASS]
    lo, hi = score_slider.value
    assert lo <= class_scores.min() and hi >= class_scores.max() and files.value == []
    assert sorted(files.options.values()) == sorted(set(app.scores.index.get_level_values("file")))
    assert "From all clips of the table" in app.sample_note.object
    unlimited = app.session.sample

    # an ecologist picks three recordings and a score range, then draws a new sample
    chosen = ["gpt0.mp3", "gpt3.mp3", "negative1.mp3"]
    files.value = chosen
    score_slider.value = (0.00001, 0.002)
    assert app.settings.files == chosen and app.settings.score_range == (0.00001, 0.002)
    app.new_sample_button.clicks += 1
    expected = select_clips(app.scores, CLASS, strategy="stratified", n=40, n_bins=4, seed=0, files=chosen,
                            score_range=(0.00001, 0.002))
    assert 0 < len(expected) < len(unlimited)
    pd.testing.assert_frame_equal(app.session.sample.sort_index(), expected.sort_index())
    assert not app.sample_problem.visible and not app.error.visible
    assert "Limited to: 3 recording(s)" in app.sample_note.object and "scores from 1e-05 to 0.002" in \
        app.sample_note.object
    app.act("present")
    sample = app.session.sample

    # reopened, with other limits given in Python: the saved sample is resumed and its limits shown
    other = ReviewSettings(score_range=(0.0, 1.0), files=["gpt1.mp3"])
    reopened = ClipReview(workspace=ws, settings=other)
    files2, _, score_slider2 = _limit_widgets(reopened.__panel__())
    assert reopened.session.sample.index.equals(sample.index) and reopened.session.progress() == (1, len(sample))
    assert other.files == chosen and other.score_range == (0.00001, 0.002)
    assert files2.value == chosen and score_slider2.value == (0.00001, 0.002)
    # clearing the limits and drawing again: the whole table, as before
    files2.value = []
    score_slider2.value = (score_slider2.start, score_slider2.end)
    reopened.new_sample_button.clicks += 1
    assert reopened.session.sample.index.equals(unlimited.index)
    assert "From all clips of the table" in reopened.sample_note.object


def test_a_time_span_is_offered_when_the_names_hold_dates(tmp_path):
    import datetime as dt
    import shutil

    import panel as pn

    audio = tmp_path / "audio"
    names = []
    for day, source in enumerate(sorted(toads_folder().glob("gpt*.mp3"))[:3], start=1):
        for site in ("north", "south"):  # two recorders writing the same names
            (audio / site).mkdir(parents=True, exist_ok=True)
            names.append(str(shutil.copy(source, audio / site / f"2020050{day}_050000.mp3")))
    index = pd.MultiIndex.from_tuples([(f, s, s + 2.0) for f in names for s in (0.0, 2.0, 4.0)],
                                      names=["file", "start_time", "end_time"])
    scores = pd.DataFrame({"toad": np.random.default_rng(1).uniform(size=len(index))}, index=index)
    ws = Workspace(data_dirs=[audio], output_dir=tmp_path / "out")
    app = ClipReview(scores=scores, audio_folder=audio, workspace=ws, table_name="dated")
    view = app.__panel__()
    files, dates, _ = _limit_widgets(view)
    assert sorted(files.options) == [f"{site}/2020050{d}_050000.mp3" for site in ("north", "south")
                                     for d in (1, 2, 3)]
    assert not dates.disabled and dates.start == dt.datetime(2020, 5, 1) and dates.end == dt.datetime(2020, 5, 4)
    assert "2020-05-01 05:00 to 2020-05-03 05:00" in app.limits_note.object
    span = (dt.datetime(2020, 5, 2), dt.datetime(2020, 5, 3, 5, 0, 2))
    dates.value = span
    app.new_sample_button.clicks += 1
    expected = select_clips(scores, "toad", n=40, n_bins=4, seed=0, date_range=span)
    pd.testing.assert_frame_equal(app.session.sample.sort_index(), expected.sort_index())
    assert {Path(f).name for f in app.session.sample.index.get_level_values("file")} == {
        "20200502_050000.mp3", "20200503_050000.mp3"}
    assert len(app.session) == 10  # at both recorders: the three clips of May 2, the first two of May 3
    assert "clips recorded from 2020-05-02 00:00:00 to 2020-05-03 05:00:02" in app.sample_note.object
    reopened = ClipReview(scores=scores, audio_folder=audio, workspace=ws, table_name="dated")
    assert reopened.settings.date_range == span and reopened.session.sample.index.equals(app.session.sample.index)
    assert isinstance(reopened.__panel__(), pn.Row) and _limit_widgets(reopened.__panel__())[1].value == span


def test_limits_that_leave_no_clip_show_a_message_not_an_exception(tmp_path, example):
    ws = workspace_with_example(tmp_path, example)
    app = ClipReview(workspace=ws)
    files, _, score_slider = _limit_widgets(app.__panel__())
    files.value = ["negative1.mp3"]
    score_slider.value = (0.002, 0.003)  # only toad recordings score this high
    app.new_sample_button.clicks += 1
    assert len(app.session) == 0 and len(select_clips(app.scores, CLASS, files=["negative1.mp3"],
                                                      score_range=(0.002, 0.003))) == 0
    assert app.sample_problem.visible and "No clip to review within the limits" in app.sample_problem.object
    assert "negative1.mp3" in app.sample_problem.object and "Draw a new sample" in app.sample_problem.object
    assert not app.error.visible  # nothing is broken: the limits only need widening
    assert app.progress_text.object == "**0 of 0 reviewed**" and "holds no clip" in app.clip_title.object
    assert app.buttons["present"].disabled and app.spectrogram.cleared
    for key in ("y", "s", "b"):
        app.keys.event = f"{key}:1"  # keys do nothing
    app.export()  # an empty export is written, not raised
    # reopening shows the same message; widening the limits mends it
    reopened = ClipReview(workspace=ws)
    assert reopened.sample_problem.visible and len(reopened.session) == 0
    _, _, score_slider2 = _limit_widgets(reopened.__panel__())
    score_slider2.value = (score_slider2.start, score_slider2.end)
    reopened.new_sample_button.clicks += 1
    assert len(reopened.session) > 0 and not reopened.sample_problem.visible
    assert set(reopened.session.sample.index.get_level_values("file")) == {"negative1.mp3"}


def test_pane_updates_in_a_kernel_send_no_cdn_stylesheets():
    """Panel re-sends a Markdown or Alert pane's stylesheets when its text changes; offline they must stay local."""
    import panel as pn
    from bokeh.document import Document
    from bokeh.models import ImportedStyleSheet, InlineStyleSheet, UIElement
    from panel.io.resources import CDN_DIST

    def cdn_links(root):
        return [s.url for m in root.select({"type": UIElement}) for s in m.stylesheets
                if isinstance(s, ImportedStyleSheet) and s.url.startswith(CDN_DIST)]

    old_inline = pn.config.inline
    try:
        pn.config.inline = True
        note, alert = pn.pane.Markdown("first"), pn.pane.Alert("first", alert_type="warning")
        root = pn.Column(note, alert).get_root(Document())
        assert cdn_links(root) == []
        note.object, alert.object = "second", "second"  # what every label does to the calibration panel
        assert cdn_links(root) == []
        inline = [s for m in root.select({"type": UIElement}) for s in m.stylesheets
                  if isinstance(s, InlineStyleSheet)]
        assert inline and all(s.css for s in inline)  # Panel's CSS travels with the page
    finally:
        pn.config.inline = old_inline


# ----------------------------------------------------------------------------- browser


def _progress(page) -> str:
    from browser import page_text

    found = re.search(r"(\d+) of (\d+) reviewed", page_text(page))
    return found.group(0) if found else ""


def _clip_title(page) -> str:
    from browser import page_text

    found = re.search(r"Clip \d+ of \d+: \S+ [\d.]+–[\d.]+ s", page_text(page))
    return found.group(0) if found else ""


def _forgive_voila_kernel_shutdown(page, refused: list) -> None:
    """Drop the console errors of Voila's own kernel shutdown on reload (one per refused request).

    While a Voila page unloads it asks the server to shut its kernel down; the
    server refuses (403) and Chromium logs "Failed to load resource". That is
    Voila's doing, not the dashboard's: only those entries are removed.
    """
    for _ in refused:
        for i, error in enumerate(page.opso_errors):
            if "status of 403" in error:
                del page.opso_errors[i]
                break


@pytest.mark.browser
@pytest.mark.parametrize("server", ["voila", "panel"])
def test_clip_review_in_chromium(server, example, tmp_path, page):
    from browser import assert_healthy, page_text, poll, serve_app, set_widget_value

    out = tmp_path / "served_out"
    (out / "review" / "example_scores").mkdir(parents=True)
    (out / "review" / "example_scores" / example.name).write_bytes(example.read_bytes())
    (out / "review" / "example_scores" / "zz_broken.csv").write_text("clip;score\n1;0.5\n")
    with serve_app(APP, server, output=out, env={"OMP_NUM_THREADS": "1"}) as url:
        page.goto(url, timeout=120_000)
        page.get_by_text("0 of").first.wait_for(timeout=120_000)
        total = int(_progress(page).split(" of ")[1].split()[0])
        assert poll(page, lambda: _clip_title(page).startswith("Clip 1 of"), 30), _clip_title(page)
        # three answers with the keyboard; each one moves on and is counted
        for k, key in enumerate(("y", "n", "u"), start=1):
            page.keyboard.press(key)
            assert poll(page, lambda: _progress(page) == f"{k} of {total} reviewed", 30), _progress(page)
        # the title is a separate message from the counter, and may arrive a moment later
        assert poll(page, lambda: _clip_title(page).startswith("Clip 4 of"), 30), _clip_title(page)
        fourth = _clip_title(page)
        store = next((out / "review").glob("toad_ribbit_scores-*/great_plains_toad__reviewer.jsonl"))
        assert [json.loads(line)["label"] for line in store.read_text().splitlines()] == ["present", "absent",
                                                                                           "unsure"]
        # reload: the three labels are kept and the next clip without a label is shown
        refused = []
        page.on("response", lambda r: refused.append(r.url) if r.status == 403 and "/voila/api/shutdown/" in r.url
                else None)
        before_reload = len(page.opso_errors)
        page.reload(timeout=120_000)
        page.get_by_text(f"3 of {total} reviewed").first.wait_for(timeout=120_000)
        # the unloading page's widget manager may still try to talk to its closing kernel (seen on a busy
        # machine): Voila's doing, and only forgiven in the reload's window
        page.opso_errors[before_reload:] = [e for e in page.opso_errors[before_reload:]
                                            if e != "page error: Cannot send"]
        assert poll(page, lambda: _clip_title(page) == fourth, 30), (_clip_title(page), fourth)
        assert poll(page, lambda: page.locator("audio").count() >= 1 and page.locator("canvas").count() >= 2, 30)

        page.get_by_role("button", name=re.compile("^Export")).click()
        page.get_by_text("labels:").first.wait_for(timeout=30_000)
        export = store.parent / "great_plains_toad__reviewer_export"
        assert str(export / "labels.csv") in page_text(page)
        labels = pd.read_csv(export / "labels.csv")
        assert sorted(labels.label) == ["absent", "present", "unsure"]
        assert json.loads((export / "threshold.json").read_text())["n_reviewed"] == 2

        set_widget_value(page, "Score table", "zz_broken.csv")
        page.get_by_text("This score table cannot be used").first.wait_for(timeout=30_000)
        assert "needs the columns" in page_text(page)
        _forgive_voila_kernel_shutdown(page, refused)
        assert_healthy(page)
