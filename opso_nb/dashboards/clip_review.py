"""Clip review: listen to a sample of clips, label them, and pick a threshold you can defend.

Open a score table (CSV, Parquet, or a prediction output folder) and the folder
of its recordings, choose a class and how to sample its clips (optionally only
some recordings, a time span or a score range), then review clip
by clip: spectrogram with a little context, play, and present / absent / unsure
/ skip / back with buttons or keys. Every answer is saved at once under the
output folder, so closing the page loses nothing and reopening it resumes at the
next clip without a label. A calibration panel turns the answers into a
threshold for a target precision, with its interval, and exports labels, the
threshold and Raven tables of the confirmed detections.

All science is in :mod:`opso_nb.review`; this module only wires widgets to it.
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import BoxAnnotation, Span
from matplotlib.figure import Figure
from panel.reactive import ReactiveHTML

from opso_nb.audio import Audio, AudioLoadError
from opso_nb.dashboards._widgets import (
    FolderBox,
    bokeh_callback,
    SpectrogramPlot,
    audio_player,
    clear_player,
    display_name,
    failure_text,
    message_alert,
    name_list,
    set_player_audio,
    show_message,
)
from opso_nb.failures import failure_record, failures_frame
from opso_nb.review import (
    LABEL_VALUES,
    Calibration,
    ReviewSession,
    ReviewSettings,
    ScoreTableError,
    clip_start_times,
    example_score_table,
    file_start_times,
    limits_text,
    plot_calibration,
    plot_precision_recall,
    read_score_table,
    review_folder_name,
    score_table_choices,
)
from opso_nb.sample_data import toads_folder
from opso_nb.store import reset_clip_index, utf8_name
from opso_nb.spectrogram import Spectrogram
from opso_nb.workspace import PathRefused, Workspace, _match_files, check_recordings, user_data_dirs

#: Keys and what they do (lower case, as the browser names them).
SHORTCUTS = {"y": "present", "1": "present", "n": "absent", "2": "absent", "u": "unsure", "3": "unsure",
             "s": "skip", "b": "back", "p": "play"}
#: Bootstrap resamples for the threshold's interval while reviewing (a click must stay quick).
LIVE_BOOTSTRAP = 200
#: Rows of the "reviewed so far" table.
RECENT_ROWS = 8


class KeyboardShortcuts(ReactiveHTML):
    """Keys pressed anywhere on the page (outside text boxes) arrive in :attr:`event` as ``"<key>:<count>"``.

    In Voila and ``panel serve`` every key press on the page counts. Inside
    JupyterLab, whose own shortcuts use the same keys, only presses while the
    shortcut bar has the focus (click it first) count.
    """

    keys = param.List(default=list(SHORTCUTS), doc="Keys listened to (lower case)")
    event = param.String(default="", doc="Last key and a press counter, e.g. 'y:3'")

    _template = ('<div id="bar" tabindex="0" style="font-size: 0.9em; color: #555; padding: 4px 6px; '
                 'border: 1px dashed #bbb; border-radius: 4px; cursor: default;">'
                 'Keys: <b>y</b> present · <b>n</b> absent · <b>u</b> unsure · <b>s</b> skip · '
                 '<b>b</b> back · <b>p</b> play (not while typing a note)</div>')
    _scripts = {
        "render": """
            if (state.scope) { state.scope.removeEventListener('keydown', state.fire); }
            state.count = state.count || 0;
            state.fire = (event) => {
              const path = event.composedPath ? event.composedPath() : [event.target];
              const target = path[0] || event.target;
              const tag = ((target && target.tagName) || '').toLowerCase();
              if (tag === 'input' || tag === 'textarea' || tag === 'select') { return; }
              if (target && (target.isContentEditable || (target.getAttribute && target.getAttribute('role') === 'slider'))) { return; }
              if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
              const key = (event.key || '').toLowerCase();
              if (!data.keys.includes(key)) { return; }
              event.preventDefault();
              event.stopPropagation();
              state.count += 1;
              data.event = key + ':' + state.count;
            };
            // JupyterLab owns the page's keys: listen on the bar only; elsewhere, on the whole page
            const inLab = document.querySelector('.jp-mod-commandMode, .jp-mod-editMode') !== null;
            state.scope = inLab ? bar : document;
            state.scope.addEventListener('keydown', state.fire);
        """,
        "remove": "if (state.scope) { state.scope.removeEventListener('keydown', state.fire); }",
    }


class ClipReview(pn.viewable.Viewer):
    """Review a sample of one class's clips, calibrate its scores and export what was confirmed.

    Parameters
    ----------
    scores : DataFrame, optional
        A score table given in Python (a notebook); else one is opened from a folder.
    scores_folder : str or Path, optional
        Folder with score tables (default: the workspace's first data folder, else an
        example table of the bundled toad recordings scored with RIBBIT, made in the
        output folder on first use).
    table : str, optional
        Table in ``scores_folder`` to open (a file name, a prediction output
        sub-folder, or ``"."`` for the folder itself).
    audio_folder : str or Path, optional
        Folder of the recordings (default: the first data folder, else the bundled toads).
        File names of the table are matched as written (relative to the table), then by
        base name in this folder.
    class_name, reviewer : str, optional
    settings : ReviewSettings, optional
        Sampling and calibration settings (class, reviewer, strategy, n, bins, seed,
        limits of the sample, target precision); a saved sample of the same class and
        reviewer is resumed instead of drawing a new one, and its own settings and
        limits are shown.
    output_folder : str or Path, optional
        The output folder (default: the workspace's); labels go to
        ``review/<table>/<class>__<reviewer>.jsonl`` inside it.
    workspace : Workspace, optional
        Default :meth:`Workspace.from_env` plus the folders given.
    table_name : str
        Name of the review folder of a table given as ``scores``.
    """

    table = param.Selector(default=None, objects=[], allow_None=True, label="Score table",
                           doc="CSV or Parquet table, or prediction output folder, in the scores folder")
    context = param.Number(default=1.0, bounds=(0.0, 5.0), step=0.5, label="Context (s)",
                           doc="Seconds shown and played on each side of the clip")
    frequency_limit = param.Number(default=0.0, bounds=(0.0, None), softbounds=(0.0, 24000.0), step=500.0,
                                   label="Top frequency (Hz, 0: all)", doc="Highest frequency drawn")

    def __init__(self, scores: pd.DataFrame | None = None, scores_folder=None, table=None, audio_folder=None,
                 class_name=None, reviewer=None, output_folder=None, workspace: Workspace | None = None,
                 table_name: str = "scores", settings: ReviewSettings | None = None, **params):
        super().__init__(**params)
        if workspace is None:
            trusted = [Path(d) for d in (scores_folder, audio_folder) if d]
            workspace = Workspace(data_dirs=user_data_dirs() + trusted, output_dir=output_folder)
        self.workspace = workspace
        self.settings = settings if settings is not None else ReviewSettings()
        if reviewer:
            self.settings.reviewer = str(reviewer)
        self._requested_class = class_name if class_name is not None else self.settings.class_name
        self._given_scores = scores
        self._table_name = table_name
        self.scores: pd.DataFrame | None = None
        self.session: ReviewSession | None = None
        self.calibration: Calibration | None = None
        self.audio_paths: dict = {}
        self.available_files: list[str] = []
        #: Recordings of the table that cannot be reviewed (failures table: missing, refused, unreadable).
        self.audio_failures = failures_frame()
        self.last_export: dict | None = None
        self._busy = False  # set while the code itself changes watched values

        # ------------------------------------------------------------ widgets
        self.error = message_alert("danger")
        self.sample_problem = message_alert("danger")  # the sample is empty: redrawing may mend it, so its own alert
        self.notes = message_alert("warning")
        self.table_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.audio_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.sample_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.limits_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._score_for = None  # class the score slider was made for; None: not yet (keep a range given in Python)
        self._score_span = (0.0, 1.0)
        # made here, not by pn.Param, as their ends follow the table and class (the settings keep no bounds, so
        # code may set any range); pn.Param links them to the settings
        limits = self.settings.param
        self.score_slider = pn.widgets.EditableRangeSlider(
            label=limits.score_range.label, start=0.0, end=1.0, step=0.01,
            value=self.settings.score_range or (0.0, 1.0), fixed_start=None, fixed_end=None)
        self.date_picker = pn.widgets.DatetimeRangePicker(
            label=limits.date_range.label, description=limits.date_range.doc, value=self.settings.date_range,
            enable_seconds=False)
        self.progress = pn.indicators.Progress(value=0, max=1, sizing_mode="stretch_width", bar_color="success")
        self.progress_text = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.clip_title = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.clip_problem = message_alert("warning")
        self.spectrogram = SpectrogramPlot(height=280)
        self._context_boxes = [BoxAnnotation(fill_color="#4a6fa5", fill_alpha=0.15, line_alpha=0) for _ in range(2)]
        self._clip_edges = [Span(location=0, dimension="height", line_color="#d62728", line_dash="dashed",
                                 line_width=2) for _ in range(2)]
        for item in self._context_boxes + self._clip_edges:
            self.spectrogram.figure.add_layout(item)
        self.player = audio_player(Audio.silence(0.1, 8000), name="clip", sizing_mode="stretch_width")
        self.buttons = {
            "present": pn.widgets.Button(label="Present (y)", color="success"),
            "absent": pn.widgets.Button(label="Absent (n)", color="danger"),
            "unsure": pn.widgets.Button(label="Unsure (u)", color="warning"),
            "skip": pn.widgets.Button(label="Skip (s)", color="light"),
            "back": pn.widgets.Button(label="Back (b)", color="light"),
            "play": pn.widgets.Button(label="Play (p)", color="primary"),
        }
        for action, button in self.buttons.items():
            button.on_click(lambda _, a=action: self.act(a))
        self.note = pn.widgets.TextInput(label="Note", placeholder="optional: saved with the next answer",
                                         sizing_mode="stretch_width")
        self.label_text = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.keys = KeyboardShortcuts(sizing_mode="stretch_width")
        self.keys.param.watch(self._on_key, "event")
        self.new_sample_button = pn.widgets.Button(label="Draw a new sample", color="default",
                                                   description="Draw clips again with the settings above "
                                                               "(labels already given are kept)")
        self.new_sample_button.on_click(lambda _: self.open_session(new_sample=True))
        self.calibration_warning = message_alert("warning")
        self.calibration_text = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.precision_plot = pn.pane.Matplotlib(None, tight=True, format="png", dpi=90, width=430, height=260)
        self.calibration_plot = pn.pane.Matplotlib(None, tight=True, format="png", dpi=90, width=430, height=260)
        self.export_button = pn.widgets.Button(label="Export labels, threshold and Raven tables",
                                               color="primary", disabled=True)
        self.export_button.on_click(lambda _: self.export())
        self.export_status = pn.pane.Markdown(f"Exports go under the output folder `{self.workspace.output_dir}`.",
                                              sizing_mode="stretch_width")
        self.recent = pn.pane.DataFrame(pd.DataFrame(), index=False, sizing_mode="stretch_width")

        # ------------------------------------------------------------ folders
        if scores is None:
            if scores_folder is None and not any(d.is_dir() for d in self.workspace.user_dirs):
                scores_folder = self._example_folder()
            start = scores_folder or self.workspace.start_folder(self.workspace.output_dir)
            self.scores_box = FolderBox(folder=str(start), workspace=self.workspace)
            self.scores_box.param.watch(lambda *_: self._list_tables(), ["folder"])
        else:
            self.scores_box = None
        self.audio_box = FolderBox(folder=str(audio_folder or self.workspace.start_folder(toads_folder())),
                                   workspace=self.workspace)
        self.audio_box.param.watch(lambda *_: self.load(), ["folder"])
        self.param.watch(lambda *_: self._unless_busy(self.load), ["table"])
        self.settings.param.watch(lambda *_: self._unless_busy(self.open_session), ["class_name", "reviewer"])
        self.settings.param.watch(lambda *_: self._update_calibration(), ["target_precision"])
        self.param.watch(lambda *_: self._show_clip(), ["context", "frequency_limit"])
        if self.scores_box is not None:
            self._list_tables(prefer=table)
        else:
            self.load()

    # ------------------------------------------------------------------ opening
    def _example_folder(self) -> Path | None:
        """The output folder's example table (made on first use); None if it cannot be written."""
        try:
            folder = self.workspace.prepare_output("review/example_scores", folder=True)
            example_score_table(folder)
        except (OSError, PathRefused, ValueError) as err:
            show_message(self.notes, f"The example score table could not be made: {err}")
            return None
        return folder

    def _unless_busy(self, action):
        if not self._busy:
            action()

    def _list_tables(self, prefer=None):
        root = self.scores_box.root
        choices = score_table_choices(root) if root is not None else []
        self._busy = True
        try:
            self.param.table.objects = choices
            if prefer in choices:
                self.table = prefer
            elif self.table not in choices:
                self.table = choices[0] if choices else None
        finally:
            self._busy = False
        if root is None:
            self.table_note.object = f"**No score tables:** {self.scores_box.problem}."
        elif not choices:
            self.table_note.object = (f"No score table in `{root}`: put a CSV or Parquet table (columns file, "
                                      "start_time, end_time and one score column per class) or a prediction output "
                                      "folder there, or choose another folder under *Browse*.")
        self.load()

    @property
    def table_path(self) -> Path | None:
        """Absolute path of the chosen score table (None for a table given in Python, or none chosen)."""
        if self.scores_box is None or self.scores_box.root is None or self.table is None:
            return None
        return (self.scores_box.root / self.table).resolve()

    def _read_table(self) -> pd.DataFrame:
        if self.scores_box is None:
            return read_score_table(self._given_scores)
        path = self.table_path
        if path is None:
            raise ScoreTableError(self.table_note.object or "no score table chosen")
        self.workspace.readable(path)  # a table reached through a link out of the workspace is refused
        return read_score_table(path)

    @bokeh_callback
    def load(self):
        """Read the score table, find its recordings and open the review (errors are shown, never raised)."""
        show_message(self.error, None)
        show_message(self.notes, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                scores = self._read_table()
            except (ScoreTableError, PathRefused, ValueError, TypeError) as err:
                self.scores = None
                self._clear(f"{err}")
                show_message(self.error, f"**This score table cannot be used.** {err}")
                return
        self.scores = scores
        self._note_warnings(caught)
        n_files = scores.index.get_level_values("file").nunique()
        where = f"`{self.table_path}`" if self.table_path is not None else f"given in Python ({self._table_name})"
        self.table_note.object = (f"Score table {where}: {len(scores)} clips of {n_files} recording(s), "
                                  f"{len(scores.columns)} class(es).")
        self._locate_audio()
        classes = list(scores.columns)
        wanted = self._requested_class if self._requested_class is not None else self.settings.class_name
        self._busy = True
        try:
            self.settings.param.class_name.objects = classes
            self.settings.class_name = wanted if wanted in classes else classes[0]
        finally:
            self._busy = False
        if wanted is not None and wanted not in classes:
            show_message(self.error, f"Class {wanted!r} is not a column of this score table; showing "
                                     f"{classes[0]!r} instead. Classes: {', '.join(map(str, classes))}.")
        self._requested_class = None
        self._offer_limits()
        self.open_session()

    # ------------------------------------------------------------------ limits of the sample
    def _offer_limits(self):
        """Offer this table's recordings, its time span and the class's scores as limits of the sample.

        Chosen recordings not in the table are dropped, and a time span when the
        table's file names hold no dates; a score range is kept only on the first
        table (one given in Python), as scores differ between tables.
        """
        files = list(dict.fromkeys(self.scores.index.get_level_values("file")))
        settings = self.settings
        settings.param.files.objects = recording_choices(files)
        in_table = set(files)
        settings.files = [f for f in settings.files if f in in_table]
        times = clip_start_times(self.scores)
        known = times[~times.isna()]
        picker = self.date_picker
        if len(known):
            undated = int(file_start_times(files).isna().sum())
            first, last = known.min().floor("D"), known.max().floor("D") + pd.Timedelta(days=1)
            picker.param.update(start=first.to_pydatetime(), end=last.to_pydatetime(), disabled=False)
            self._set_date_range(settings.date_range)
            self.limits_note.object = (
                f"Clips start from {known.min():%Y-%m-%d %H:%M} to {known.max():%Y-%m-%d %H:%M} (date and time "
                "in the file names plus the clip's start)."
                + (f" {undated} recording(s) have no date in their name: a time span leaves them out."
                   if undated else ""))
        else:
            settings.date_range = None
            picker.disabled = True
            self.limits_note.object = ("The recordings' names hold no date and time (such as `20200522_050000`), "
                                       "so the sample cannot be limited to a time span.")
        self._fit_score_range(reset=self._score_for is not None)

    def _fit_score_range(self, reset: bool):
        """Ends of the score slider from the class's scores; ``reset``: the whole range (no limit)."""
        values = self.scores[self.settings.class_name].to_numpy(dtype=float)
        self._score_span, step = slider_span(values)
        self.score_slider.step = step
        current = self.settings.score_range
        self._set_score_range(None if reset else current)
        self._score_for = self.settings.class_name

    def _set_score_range(self, value):
        """Show ``value`` (None: the whole slider), widening the slider's ends when it reaches beyond them."""
        lo, hi = self._score_span if value is None else (float(value[0]), float(value[1]))
        self.score_slider.param.update(start=min(self._score_span[0], lo), end=max(self._score_span[1], hi))
        self.settings.score_range = (lo, hi)

    def _set_date_range(self, value):
        """Show ``value`` (None: any time), widening the picker's span when it reaches beyond it."""
        picker = self.date_picker
        if value is not None and picker.start is not None and picker.end is not None:
            picker.param.update(start=min(picker.start, value[0]), end=max(picker.end, value[1]))
        self.settings.date_range = value

    def _locate_audio(self):
        """Match the table's file names to recordings in the audio folder; unreadable ones are reported."""
        files = list(dict.fromkeys(self.scores.index.get_level_values("file")))
        root = self.audio_box.root
        failures = []
        if root is None:
            mapping, missing = {}, files
            reason = f"audio folder not usable: {self.audio_box.problem}"
        else:
            table = self.table_path if self.table_path is not None else root / "scores"
            mapping, missing = _match_files(files, root, table)
            reason = f"not found as written nor by name in {root}"
        for name, path in list(mapping.items()):
            try:
                self.workspace.readable(path, kind="file")
            except PathRefused as err:
                failures.append(failure_record(name, err, stage="load"))
                del mapping[name]
        failures += [failure_record(name, reason, stage="load") for name in missing]
        readable, unreadable = check_recordings(list(mapping.values()))
        back = {path: name for name, path in mapping.items()}
        for row in unreadable.itertuples(index=False):
            failures.append(failure_record(back.get(row.file, row.file), row.error, stage="load"))
        self.audio_paths = {name: path for name, path in mapping.items() if path in set(readable)}
        self.available_files = [f for f in files if f in self.audio_paths]
        self.audio_failures = failures_frame(failures)
        text = f"{len(self.available_files)} of {len(files)} recording(s) of the table found"
        text += f" in `{root}`." if root is not None else "."
        # names as the page can show them (valid UTF-8); audio_failures keeps the exact names
        problems = failure_text(self.audio_failures, "recording")
        if problems:
            text += f"  \n{problems} Their clips are skipped."
        self.audio_note.object = text

    def open_session(self, new_sample: bool = False):
        """Open (resume) the review of the chosen class by the reviewer; ``new_sample`` draws clips again."""
        if self.scores is None or self.settings.class_name is None:
            return
        if self.settings.class_name != self._score_for and self.settings.class_name in self.scores.columns:
            # another class: its own scores, no score limit yet (an unknown class is reported below)
            self._fit_score_range(reset=True)
        try:
            folder = self._review_folder()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                session = ReviewSession.open(self.scores, self.settings, folder, files=self.available_files,
                                             new_sample=new_sample, audio_paths=self.audio_paths)
        except (KeyError, ValueError, OSError, PathRefused) as err:
            self._clear(str(err))
            show_message(self.error, f"**The review cannot be opened.** {err}")
            return
        self._note_warnings(caught)
        self.session = session
        # the widgets show the settings the sample was drawn with, limits included (nothing else watches them)
        values = ReviewSettings.sampling_values(session.sampling)
        scores, dates = values.pop("score_range"), values.pop("date_range")
        self.settings.param.update(**values)
        self._set_score_range(scores)
        self._set_date_range(dates)
        done, total = session.progress()
        limits = limits_text(session.sampling, self.scores[session.class_name])
        self.sample_note.object = (
            f"Sample: {total} clips ({session.sampling.get('strategy')}, {session.sampling.get('n_bins')} bins, "
            f"seed {session.sampling.get('seed')}), drawn {session.sampling.get('drawn', '')}. "
            + (f"Limited to: {limits}. The clips' weights, and so the precision behind the threshold, describe "
               "the clips within these limits only. " if limits else "From all clips of the table. ")
            + f"Labels are saved in `{session.store.path}`.")
        empty = None
        if total == 0 and limits:
            empty = (f"**No clip to review within the limits** ({limits}): no clip of a recording that could be "
                     "found has a score there. Widen or clear the limits under *Limit the sample* and press "
                     "*Draw a new sample*.")
        elif total == 0:
            empty = ("**No clip to review:** this class has no finite score on a recording that could be found "
                     "(see the audio notes).")
        show_message(self.sample_problem, empty)
        self.export_button.disabled = False
        self.refresh()

    def _review_folder(self) -> Path:
        name = review_folder_name(self.table_path) if self.table_path is not None else self._table_name
        return self.workspace.prepare_output(Path("review") / name, folder=True)

    def _note_warnings(self, caught):
        messages = list(dict.fromkeys(str(w.message) for w in caught))
        if messages:
            show_message(self.notes, "  \n".join(messages))

    # ------------------------------------------------------------------ reviewing
    def _on_key(self, event):
        key = str(event.new).split(":")[0]
        if key in SHORTCUTS:
            self.act(SHORTCUTS[key])

    @bokeh_callback
    def act(self, action: str):
        """Do what a button or key asks: one of present, absent, unsure, skip, back, play."""
        session = self.session
        if session is None:
            return
        if action in LABEL_VALUES:
            if session.current is None:
                return
            try:
                session.label(action, self.note.value)
            except OSError as err:  # disk full, folder removed: the reviewer must know the label is not saved
                show_message(self.error, f"**Label not saved:** {err}")
                return
            self._update_calibration()
            self._update_recent()
        elif action == "skip":
            session.skip()
        elif action == "back":
            session.back()
        elif action == "play":
            self.play()
            return
        else:
            raise ValueError(f"unknown action {action!r}; one of {LABEL_VALUES + ('skip', 'back', 'play')}")
        self._show_clip()

    def label(self, value: str, note: str = ""):
        """Label the clip shown (what the buttons do), with ``note``."""
        self.note.value = note
        self.act(value)

    def refresh(self):
        """Redraw everything from :attr:`session` (after labelling through ``app.session`` directly)."""
        self._update_calibration()
        self._update_recent()
        self._show_clip()

    def play(self):
        """Play the clip shown (with its context) from the start."""
        self.player.time = 0
        self.player.paused = False

    @bokeh_callback
    def _show_clip(self):
        session = self.session
        for button in self.buttons.values():
            button.disabled = session is None
        if session is None:
            return
        done, total = session.progress()
        self.progress.max, self.progress.value = max(total, 1), done
        self.progress_text.object = f"**{done} of {total} reviewed**" + (" · all done" if total and done == total
                                                                           else "")
        show_message(self.clip_problem, None)
        clip = session.current
        if clip is None:
            left = total - done
            message = ("every clip of the sample is reviewed" if left == 0 else
                       f"end of the sample; {left} skipped clip(s) have no label yet (press Back)")
            self.clip_title.object = (f"**End of the sample:** {message}." if total else
                                      "**The sample holds no clip** (see the message above).")
            message = message if total else "no clip in the sample"
            self.label_text.object = ""
            self.spectrogram.clear(message)
            clear_player(self.player)
            for action in LABEL_VALUES:
                self.buttons[action].disabled = True
            return
        file, start, end = clip
        row = session.sample.iloc[session.position]
        self.clip_title.object = (f"**Clip {session.position + 1} of {total}:** `{display_name(file)}` "
                                  f"{start:g}–{end:g} s · score {row['score']:.4g}"
                                  + (f" · score bin {int(row['bin']) + 1}" if row["bin"] >= 0 else ""))
        saved = session.current_label()
        self.note.value = saved["note"] if saved else ""
        if saved is None:
            self.label_text.object = "Not labelled yet."
        else:
            self.label_text.object = f"Your answer: **{saved['label']}**" + (f" ({saved['note']})" if saved["note"]
                                                                             else "")
        try:
            audio, offset = session.clip_audio(self.context)
            spectrogram = Spectrogram.from_audio(audio)
            if 0 < self.frequency_limit < audio.sample_rate / 2:
                spectrogram = spectrogram.bandpass(0, self.frequency_limit)
        except (AudioLoadError, ValueError, OSError) as err:
            self.spectrogram.clear(f"{display_name(file)} cannot be read")
            clear_player(self.player)
            show_message(self.clip_problem, f"**This clip cannot be played:** {err}. Press Skip.")
            return
        self.spectrogram.update(spectrogram, time_offset=offset)
        self.spectrogram.figure.title.text = f"{display_name(file)}: clip {start:g}–{end:g} s (dashed lines)"
        shown_end = offset + audio.duration
        (left, right), (first, last) = self._context_boxes, self._clip_edges
        left.left, left.right = offset, float(start)
        right.left, right.right = float(end), shown_end
        first.location, last.location = float(start), float(end)
        set_player_audio(self.player, audio)

    def _update_recent(self):
        if self.session is None:
            self.recent.object = pd.DataFrame()
            return
        done = reset_clip_index(self.session.reviewed())
        if done.empty:
            self.recent.object = pd.DataFrame(columns=["file", "start_time", "end_time", "score", "label", "note"])
            return
        done = done.sort_values("time", kind="stable").tail(RECENT_ROWS).iloc[::-1]
        done["file"] = [display_name(f) for f in done["file"]]
        self.recent.object = done[["file", "start_time", "end_time", "score", "label", "note"]]

    # ------------------------------------------------------------------ calibration
    def _update_calibration(self):
        if self.session is None:
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cal = self.session.calibrate(self.settings.target_precision, n_bootstrap=LIVE_BOOTSTRAP)
        self.calibration = cal
        show_message(self.calibration_warning, "  \n".join(dict.fromkeys(str(w.message) for w in caught)))
        self.calibration_text.object = calibration_summary(cal, self.scores[self.session.class_name])
        for pane, draw in ((self.precision_plot, plot_precision_recall), (self.calibration_plot, plot_calibration)):
            figure = Figure(figsize=(5.2, 3.1))
            draw(cal, ax=figure.subplots())
            pane.object = figure

    # ------------------------------------------------------------------ export
    def export(self) -> dict | None:
        """Write labels, training table, threshold and Raven tables under the output folder; returns their paths."""
        if self.session is None:
            self.export_status.object = "**Nothing to export:** open a score table first."
            return None
        stem = self.session.store.path.stem
        try:
            folder = self.workspace.prepare_output(self._review_folder() / f"{stem}_export", folder=True)
            written = self.session.export(folder, self.calibration, score_table=str(self.table_path or
                                                                                      self._table_name))
        except (OSError, PathRefused, ValueError) as err:
            self.export_status.object = f"**Not exported:** {err}"
            return None
        raven = written["raven"]
        self.export_status.object = (
            f"Wrote  \n- labels: `{written['labels']}`  \n"
            f"- training table: `{written['training_labels']}` "
            f"({training_note(written['training_labels'], len(self.session.training_labels()))})  \n"
            f"- threshold: `{written['threshold']}`  \n"
            + (f"- {len(raven)} Raven table(s) in `{folder / 'raven'}`: {name_list(raven)}" if raven
               else "- no Raven table: no clip confirmed present yet"))
        self.last_export = written
        return written

    # ------------------------------------------------------------------ clearing
    def _clear(self, reason: str):
        """Forget the table and review: nothing stale stays on the page under an error."""
        self.session = None
        self.calibration = None
        self.spectrogram.clear(reason[:80])
        clear_player(self.player)
        for pane in (self.clip_title, self.label_text, self.progress_text, self.calibration_text,
                     self.sample_note):
            pane.object = ""
        self.audio_note.object = ""
        self.progress.value = 0
        self.precision_plot.object = None
        self.calibration_plot.object = None
        self.recent.object = pd.DataFrame()
        show_message(self.calibration_warning, None)
        show_message(self.clip_problem, None)
        show_message(self.sample_problem, None)
        self.export_button.disabled = True
        for button in self.buttons.values():
            button.disabled = True

    # ------------------------------------------------------------------ layout
    def __panel__(self):
        # pn.Param links the limit widgets made in __init__ from now on; until now they may show stale values
        self.score_slider.value = self.settings.score_range or self._score_span
        self.date_picker.value = self.settings.date_range
        source = [pn.pane.Markdown("### Score table")]
        if self.scores_box is not None:
            source += [self.scores_box.widgets(folder={"type": pn.widgets.TextInput, "name": "Scores folder"}),
                       pn.Param(self, parameters=["table"], show_name=False)]
        source += [self.table_note, pn.pane.Markdown("### Recordings"),
                   self.audio_box.widgets(folder={"type": pn.widgets.TextInput, "name": "Audio folder"}),
                   self.audio_note]
        controls = pn.Column(
            *source,
            pn.pane.Markdown("### What to review"),
            pn.Param(self.settings, parameters=["class_name", "reviewer", "strategy", "n", "n_bins", "seed"],
                     show_name=False, widgets={"class_name": {"type": pn.widgets.Select, "name": "Class"},
                                               "reviewer": pn.widgets.TextInput}),
            pn.pane.Markdown("### Limit the sample"),
            pn.pane.Markdown("Draw clips only from some recordings, a time span or a score range (type the ends or "
                             "drag them; the whole slider: any score). Then press *Draw a new sample*.",
                             sizing_mode="stretch_width"),
            pn.Param(self.settings, parameters=["files", "date_range", "score_range"], show_name=False,
                     widgets={"files": {"type": pn.widgets.MultiChoice, "placeholder": "All recordings (type to find)",
                                        "search_option_limit": 50},
                              "date_range": self.date_picker, "score_range": self.score_slider}),
            self.limits_note,
            self.new_sample_button, self.sample_note,
            pn.Param(self, parameters=["context", "frequency_limit"], show_name=False),
            width=330,
        )
        buttons = self.buttons
        review = pn.Column(
            self.error, self.sample_problem, self.notes, self.progress_text, self.progress, self.clip_title,
            pn.pane.Bokeh(self.spectrogram.figure, sizing_mode="stretch_width"),
            self.player, self.clip_problem,
            pn.Row(buttons["present"], buttons["absent"], buttons["unsure"], buttons["skip"], buttons["back"],
                   buttons["play"]),
            self.note, self.label_text, self.keys,
            sizing_mode="stretch_width",
        )
        calibration = pn.Column(
            pn.pane.Markdown("### Calibration"),
            pn.Param(self.settings, parameters=["target_precision"], show_name=False,
                     widgets={"target_precision": {"type": pn.widgets.FloatSlider, "step": 0.01}}),
            self.calibration_warning, self.calibration_text,
            pn.Row(self.precision_plot, self.calibration_plot),
            self.export_button, self.export_status,
            pn.pane.Markdown("### Reviewed clips (latest first)"), self.recent,
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, pn.Column(review, calibration, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")




def recording_choices(files) -> dict:
    """Label shown for each recording (the shortest end of its path that tells it apart) -> its name in the table.

    Recorders often write the same names (``20200522_050000.WAV``) in different
    folders: those keep enough of their folders to differ. Labels are valid
    UTF-8 for the page (see :func:`opso_nb.store.utf8_name`).
    """
    files = list(dict.fromkeys(str(f) for f in files))
    parts = {f: Path(f).parts or (f,) for f in files}
    depth = dict.fromkeys(files, 1)
    while True:
        labels = {f: "/".join(parts[f][-depth[f]:]) for f in files}
        counts = Counter(labels.values())
        clash = [f for f in files if counts[labels[f]] > 1 and depth[f] < len(parts[f])]
        if not clash:
            break
        for f in clash:
            depth[f] += 1
    out = {}
    for f in files:
        label = utf8_name(labels[f])
        while label in out:  # the same path written twice ("a.wav", "./a.wav")
            label += " (again)"
        out[label] = f
    return out


def slider_span(values) -> tuple[tuple[float, float], float]:
    """Ends and step of a score slider: round numbers at or just beyond the finite scores.

    The ends never fall inside the scores, so the whole slider keeps every clip
    (the lowest and highest included) whatever rounding the slider does.

    Returns
    -------
    ((start, end), step)
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return (0.0, 1.0), 0.01
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    step = float(10.0 ** np.floor(np.log10(span / 100)))
    digits = max(0, int(-np.floor(np.log10(step))))
    start = min(round(np.floor(lo / step) * step, digits), lo)
    end = max(round(np.ceil(hi / step) * step, digits), hi)
    return (float(start), float(end)), step


def training_note(path: Path, clips: int) -> str:
    """How to retrain on an exported training table of ``clips`` rows, or why it cannot be used yet."""
    if not clips:
        return "empty: no clip labelled present or absent yet"
    return (f"{clips} clip(s), unsure ones left out; to retrain, open this folder in the training monitor "
            f"and choose *{path.name}*")


def calibration_summary(cal: Calibration, class_scores: pd.Series) -> str:
    """Plain-words summary of a calibration: threshold, interval, counts, and clips of the table above it."""
    if cal.n_reviewed == 0:
        return "Label clips as present or absent: the threshold for the target precision appears here."
    counts = (f"{cal.n_reviewed} reviewed clip(s): {cal.n_present} present, {cal.n_absent} absent "
              "(unsure ones are left out; each clip weighted by how many clips of its score bin it stands for)")
    if not np.isfinite(cal.threshold):
        text = f"No threshold reaches a precision of {cal.target_precision:.0%} in the reviewed clips yet. {counts}."
    else:
        lo, hi = cal.threshold_ci
        above = int((class_scores.to_numpy(dtype=float) >= cal.threshold).sum())
        # the estimate is the lowest threshold that reaches the target in this sample: with few labels it often
        # sits below the true one, so the cautious choice (the interval's upper end) is named too
        interval = (f" ({cal.confidence:.0%} interval {lo:.4g} – {hi:.4g}; to be cautious, use {hi:.4g})"
                    if np.isfinite(lo) and np.isfinite(hi) else "")
        text = (f"Threshold for a precision of {cal.target_precision:.0%}: **{cal.threshold:.4g}**{interval}; "
                f"{above} of {len(class_scores)} clips of the table score at or above it. {counts}.")
    middle = cal.score_for_probability(0.5)
    if np.isfinite(middle):
        text += f"  \nCalibrated: a clip scoring {middle:.4g} has a 50 % chance of holding the class."
    return text
