"""Building blocks shared by the dashboards: spectrogram plot, audio player, folder box, save box, messages.

Nothing here does science; it only draws what :mod:`opso_nb` computes and checks
paths against the :class:`opso_nb.workspace.Workspace`.
"""
from __future__ import annotations

import threading

import contextlib
import functools
import io
import math
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    ImportedStyleSheet,
    InlineStyleSheet,
    LinearColorMapper,
    UIElement,
)
from bokeh.palettes import Greys256
from bokeh.plotting import figure
from panel.io.resources import CDN_DIST, DIST_DIR, LOCAL_DIST
from panel.reactive import Reactive

from opso_nb.audio import Audio
from opso_nb.failures import summarize_failures
from opso_nb.files import AUDIO_EXTENSIONS, is_audio_file
from opso_nb.store import utf8_name
from opso_nb.workspace import PathRefused, Workspace, check_recordings

#: Most image columns sent to the browser for one spectrogram (time is max-pooled above this).
MAX_IMAGE_COLUMNS = 1600


# ----------------------------------------------------------------------------- offline stylesheets

_SHEETS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # document -> {(url, in kernel): sheet}


def _inline_css(url: str, in_kernel: bool):
    """Text of one of Panel's own stylesheets linked from its CDN (or, in a kernel, its server path); else None.

    Panel's server path (``static/extensions/panel/...``) is served by ``panel serve``
    itself, but in a kernel Panel turns it into a CDN link later.
    """
    url = url.split("?")[0]
    for prefix in (CDN_DIST, LOCAL_DIST) if in_kernel else (CDN_DIST,):
        if url.startswith(prefix):
            path = DIST_DIR / url[len(prefix):]
            return path.read_text(encoding="utf-8") if path.is_file() else None
    return None


def _inline_sheets(sheets, doc) -> tuple[list, bool]:
    """``sheets`` with Panel's CDN stylesheets replaced by inline copies (one object per URL and document).

    The CSS files ship with Panel, so a page never needs the CDN: not in a kernel
    (Voila, Jupyter), nor under ``panel serve`` with ``BOKEH_RESOURCES=inline``/``cdn``.
    """
    in_kernel = getattr(doc, "session_context", None) is None
    cache = _SHEETS.setdefault(doc, {}) if doc is not None else {}
    out, replaced = [], False
    for sheet in sheets:
        if isinstance(sheet, ImportedStyleSheet):
            key = (sheet.url, in_kernel)
            if key not in cache:
                css = _inline_css(sheet.url, in_kernel)
                cache[key] = InlineStyleSheet(css=css) if css is not None else None
            if cache[key] is not None:
                sheet, replaced = cache[key], True
        out.append(sheet)
    return out, replaced


def _inline_stylesheets_hook(viewable, root, changed=None, old_models=None):
    """Replace Panel's CDN stylesheets of newly rendered models by inline copies.

    ``pn.extension(inline=True)`` inlines Panel's JavaScript, but with
    ``comms="ipywidgets"`` (what Voila needs) the component stylesheets still
    point at cdn.holoviz.org, so an offline page would lose its styles.
    """
    scope = root
    if changed is not None:
        models = getattr(changed, "_models", {}).get(root.ref["id"])
        scope = models[0] if models else root
    for model in scope.select({"type": UIElement}):
        sheets, replaced = _inline_sheets(model.stylesheets, root.document)
        if replaced:
            model.stylesheets = sheets


def _inline_in_update(update_model):
    """Wrap ``Reactive._update_model``: stylesheets sent with a parameter change are inlined too."""
    @functools.wraps(update_model)
    def wrapper(self, events, msg, root, model, doc, comm):
        if "stylesheets" in msg:
            msg["stylesheets"] = _inline_sheets(msg["stylesheets"], doc)[0]
        return update_model(self, events, msg, root, model, doc, comm)

    wrapper.opso_nb_inline = True
    return wrapper


def _inline_in_properties(get_properties):
    """Wrap ``Reactive._get_properties``: what panes re-send on every update (their full properties)."""
    @functools.wraps(get_properties)
    def wrapper(self, doc, *args, **kwargs):
        properties = get_properties(self, doc, *args, **kwargs)
        if "stylesheets" in properties:
            properties["stylesheets"] = _inline_sheets(properties["stylesheets"], doc)[0]
        return properties

    wrapper.opso_nb_inline = True
    return wrapper


def install_offline_stylesheets() -> None:
    """Never link Panel's stylesheets from its CDN (idempotent; done when :mod:`opso_nb.dashboards` loads).

    Panel builds stylesheet links in several places; three cover them all: a
    preprocessing hook for models as they are first rendered (with their design),
    and wrappers of ``Reactive._get_properties`` (panes re-send all their
    properties on every update) and ``Reactive._update_model`` (parameter changes,
    the loading spinner). The browser tests fail on any request to another
    machine, so a Panel release that moves these places is noticed.
    """
    hooks = pn.viewable.Viewable._preprocessing_hooks
    if _inline_stylesheets_hook not in hooks:
        hooks.append(_inline_stylesheets_hook)
    if not getattr(Reactive._update_model, "opso_nb_inline", False):
        Reactive._update_model = _inline_in_update(Reactive._update_model)
    if not getattr(Reactive._get_properties, "opso_nb_inline", False):
        Reactive._get_properties = _inline_in_properties(Reactive._get_properties)


def bokeh_callback(method):
    """Let ``method`` change Bokeh models (data sources, ranges, titles) directly, whatever event called it.

    In ``panel serve``, Panel handles some widget events (Enter in a text box, some
    button clicks) outside the document lock, and Bokeh then refuses direct model
    changes. Inside :func:`panel.io.unlocked` the changes are collected and sent
    together. In a kernel (Voila, Jupyter) this changes nothing.
    """
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with pn.io.unlocked():
            return method(*args, **kwargs)

    return wrapper


# ----------------------------------------------------------------------------- formatting

class DrawOnce:
    """A redraw callback for watchers that a ``with hold():`` block silences.

    A dashboard that resets several values at once (a new file: start time,
    bands, choices) sets them with events on, so the page's widgets show the
    new values, but inside :meth:`hold`, so its own redraw runs once, after
    them, rather than once per value. (``param``'s ``discard_events`` would
    hide the new values from the widgets too.)
    """

    def __init__(self, draw):
        self._draw = draw
        self._held = 0

    def __call__(self, *events):
        if not self._held:
            self._draw()

    @contextlib.contextmanager
    def hold(self):
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1


def time_decimals(resolution: float) -> int:
    """Decimals that show a time whose resolution is ``resolution`` seconds (0 to 3).

    >>> time_decimals(0.016), time_decimals(1.0), time_decimals(0.25)
    (2, 0, 1)
    """
    if not resolution or not math.isfinite(resolution) or resolution <= 0:
        return 2
    return int(min(3, max(0, math.ceil(-math.log10(resolution) - 1e-9))))


def format_seconds(value: float, resolution: float = 0.01) -> str:
    """``value`` seconds rounded to what ``resolution`` (s) resolves, e.g. ``2.30`` for 2.298 at 0.016 s."""
    return f"{float(value):.{time_decimals(resolution)}f}"


def failure_text(failures: pd.DataFrame, what: str = "file", limit: int = 5) -> str:
    """Markdown naming each failed file (base name) with its reason; "" when there are none.

    Built on :func:`opso_nb.failures.summarize_failures`, so every dashboard words it the same way.
    """
    if failures is None or len(failures) == 0:
        return ""
    # plain lists, shown as UTF-8 text (\xNN): pandas' strings cannot hold names that are not valid UTF-8
    files = [str(f) for f in failures["file"]]
    names = [display_name(f) for f in files]
    # the reason usually repeats the full path: the base name is enough next to it
    errors = [utf8_name(str(e).replace(f, n)) for f, n, e in zip(files, names, failures["error"])]
    short = pd.DataFrame({"file": names, "error": errors})
    return f"**{len(set(files))} {what}(s) could not be read.** " + summarize_failures(short, limit=limit)


def display_name(file) -> str:
    """Base name of ``file`` for a page: a name that is not valid UTF-8 shows its bytes as ``\\xNN``.

    The browser gets UTF-8 text, which cannot carry such a name (see :func:`opso_nb.store.utf8_name`);
    tables keep the exact name.
    """
    return utf8_name(Path(str(file)).name)


def name_list(paths, limit: int = 5) -> str:
    """``"a.wav, b.wav, c.wav and 4 more"``: base names, the count of the rest said out loud."""
    names = [Path(str(p)).name for p in paths]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ----------------------------------------------------------------------------- spectrogram

def _pool_columns(values: np.ndarray, max_columns: int) -> np.ndarray:
    """Max-pool along time so at most ``max_columns`` columns remain (keeps short loud calls visible)."""
    n = values.shape[1]
    if n <= max_columns:
        return values
    factor = int(np.ceil(n / max_columns))
    pad = (-n) % factor
    if pad:
        values = np.pad(values, ((0, 0), (0, pad)), mode="edge")
    return values.reshape(values.shape[0], -1, factor).max(axis=2)


class SpectrogramPlot:
    """A bokeh figure showing one spectrogram with a colour bar in dB, updated in place with :meth:`update`.

    Parameters
    ----------
    height, width : int
        Pixels (width None: stretch to the container).
    palette : str
        Bokeh palette name; "Greys256" draws loud as black.
    title : str, optional
    """

    def __init__(self, height: int = 300, width: int | None = None, palette: str = "Greys256", title=None):
        kwargs = dict(height=height, title=title or "", x_axis_label="time (s)", y_axis_label="frequency (Hz)",
                      tools="pan,xwheel_zoom,box_zoom,reset,save", toolbar_location="right")
        if width is None:
            kwargs["sizing_mode"] = "stretch_width"
        else:
            kwargs["width"] = width
        self.figure = figure(**kwargs)
        self._title = title or ""
        if palette == "Greys256":
            # Greys256 runs black -> white; reversed, loud (high dB) is drawn black as in field guides
            palette = list(reversed(Greys256))
        self.color_mapper = LinearColorMapper(palette=palette, low=-100, high=-20)
        self.source = ColumnDataSource(data=dict(image=[np.zeros((2, 2), dtype=np.float32)], x=[0], y=[0], dw=[1], dh=[1]))
        self.figure.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.source,
                          color_mapper=self.color_mapper)
        self.color_bar = ColorBar(color_mapper=self.color_mapper, title="dB", width=10, label_standoff=6,
                                  title_standoff=6)
        self.figure.add_layout(self.color_bar, "right")
        self.figure.x_range.range_padding = 0
        self.figure.y_range.range_padding = 0
        #: number of times :meth:`update` drew a spectrogram (tests and apps read it)
        self.n_updates = 0
        #: True while the plot shows nothing valid (after :meth:`clear`)
        self.cleared = True

    def update(self, spectrogram, time_offset: float = 0.0) -> None:
        """Show ``spectrogram``; its times are shifted by ``time_offset`` seconds (segment start in the file)."""
        values = _pool_columns(np.asarray(spectrogram.spectrogram, dtype=np.float32), MAX_IMAGE_COLUMNS)
        times, freqs = spectrogram.times, spectrogram.frequencies
        if len(times) == 0 or len(freqs) == 0:
            self.clear("the window holds no complete spectrogram column")
            return
        step_t = spectrogram.window_step if len(times) > 1 else 1.0
        x0 = float(times[0] - step_t / 2 + time_offset)
        dw = float(times[-1] - times[0] + step_t)
        if type(spectrogram).__name__ == "MelSpectrogram":
            # mel rows are not evenly spaced in Hz: draw rows evenly and label axis in band index
            y0, dh = 0.0, float(len(freqs))
            self.figure.yaxis.axis_label = "mel band"
        else:
            step_f = float(freqs[1] - freqs[0]) if len(freqs) > 1 else 1.0
            y0, dh = float(freqs[0] - step_f / 2), float(freqs[-1] - freqs[0] + step_f)
            self.figure.yaxis.axis_label = "frequency (Hz)"
        limits = spectrogram.decibel_limits or (float(values.min()), float(values.max()))
        self.color_mapper.low, self.color_mapper.high = float(limits[0]), float(limits[1])
        self.source.data = dict(image=[values], x=[x0], y=[y0], dw=[dw], dh=[dh])
        self.figure.x_range.start, self.figure.x_range.end = x0, x0 + dw
        self.figure.y_range.start, self.figure.y_range.end = y0, y0 + dh
        self.figure.title.text = self._title
        self.figure.title.text_color = "black"
        self.n_updates += 1
        self.cleared = False

    def clear(self, reason: str = "") -> None:
        """Remove the image (no stale picture under an error) and say why in the title."""
        self.source.data = dict(image=[np.full((2, 2), np.nan, dtype=np.float32)], x=[0], y=[0], dw=[1], dh=[1])
        self.figure.title.text = f"No spectrogram: {reason}" if reason else "No spectrogram"
        self.figure.title.text_color = "#b00020"
        self.cleared = True


def spectrogram_figure(spectrogram, height: int = 300, title=None, time_offset: float = 0.0):
    """A bokeh figure of one spectrogram (x: time in s, y: frequency in Hz, colour bar in dB)."""
    plot = SpectrogramPlot(height=height, title=title)
    plot.update(spectrogram, time_offset=time_offset)
    return plot.figure


# ----------------------------------------------------------------------------- widgets with help

def help_widget(obj: param.Parameterized, name: str, widget_type, label: str | None = None,
                help_text: str | None = None, **kwargs):
    """A widget for parameter ``name`` of ``obj`` with a plain-language label and a hover help text.

    Text boxes and selects show the help behind their own "?" icon; sliders have none
    in Panel, so a :class:`panel.widgets.TooltipIcon` is put next to them.
    ``help_text`` defaults to the parameter's doc.
    """
    text = help_text or obj.param[name].doc or ""
    widget = widget_type.from_param(obj.param[name], name=label or obj.param[name].label, **kwargs)
    if "description" in widget.param:
        widget.description = text
        return widget
    return pn.Row(widget, pn.widgets.TooltipIcon(value=text, margin=(22, 0, 0, -8)), sizing_mode="stretch_width")


# ----------------------------------------------------------------------------- messages

def message_alert(alert_type: str = "danger") -> pn.pane.Alert:
    """A hidden, full-width Alert for errors or warnings; see :func:`show_message`."""
    return pn.pane.Alert("", alert_type=alert_type, visible=False, sizing_mode="stretch_width")


def show_message(alert: pn.pane.Alert, message: str | None) -> None:
    """Show ``message`` in ``alert``; an empty message hides the alert."""
    alert.object = message or ""
    alert.visible = bool(message)


# ----------------------------------------------------------------------------- audio

def audio_to_wav_bytes(audio) -> bytes:
    """16-bit WAV bytes of an Audio object (peak-normalized so quiet field audio is audible)."""
    import soundfile

    samples = audio.samples if audio.samples.ndim == 1 else audio.samples.mean(axis=0)
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > 0:
        samples = samples / peak * 0.9
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, audio.sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def audio_player(audio, name: str | None = None, max_seconds: float = 120.0, **kwargs) -> pn.pane.Audio:
    """A Panel audio player for one (short) Audio object.

    Refuses more than ``max_seconds`` (default 2 minutes): dashboards send only
    the part being looked at, never a whole recording.
    """
    if audio.duration > max_seconds:
        raise ValueError(f"refusing to send {audio.duration:.0f} s of audio to the browser (max {max_seconds} s)")
    pane = pn.pane.Audio(name=name, **kwargs)
    set_player_audio(pane, audio)
    return pane


def set_player_audio(pane: pn.pane.Audio, audio) -> None:
    """Replace the audio in a player created by :func:`audio_player`."""
    pane.object = audio_to_wav_bytes(audio)  # Panel base64-encodes bytes as a WAV data URL


def clear_player(pane: pn.pane.Audio) -> None:
    """Empty a player (0.1 s of silence), so it never plays audio of a file no longer shown."""
    set_player_audio(pane, Audio.silence(0.1, 8000))


# ----------------------------------------------------------------------------- folders and files

_BROWSE_PROMPT = "(pick a folder to open)"


class FolderBox(param.Parameterized):
    """A folder box that cannot leave the workspace, with a *Browse* list of nearby folders.

    The box accepts a path typed by the user (absolute, or relative to the first
    data folder); one outside the :class:`~opso_nb.workspace.Workspace` (or
    missing, too long, malformed) is refused: :attr:`root` is then None and
    :attr:`problem` says why. *Browse* offers the data folders, and the folder
    above and the sub-folders of the current one.

    Parameters
    ----------
    folder : str or Path
        Folder to open first (trusted: added to the workspace's data folders when
        no workspace is given).
    workspace : Workspace, optional
        Default :meth:`Workspace.from_env` plus ``folder``.
    """

    folder = param.String(default="", label="Folder",
                          doc="Folder to open: type a path inside the data folders, or pick one under Browse")
    browse = param.Selector(default="", objects={_BROWSE_PROMPT: ""}, label="Browse",
                            doc="The data folders, and the folder above and the sub-folders of the current one")

    def __init__(self, folder=None, workspace: Workspace | None = None, **params):
        self.workspace = workspace if workspace is not None else Workspace.from_env([folder])
        #: Why the folder cannot be opened ("" when it can).
        self.problem = ""
        self._root: Path | None = None
        super().__init__(**params)
        if folder is not None:
            self.folder = str(folder)
        self._check_folder()

    @param.depends("browse", watch=True)
    def _on_browse(self):
        if self.browse and self.browse != self.folder:
            self.folder = self.browse

    @param.depends("folder", watch=True, on_init=False)
    def _check_folder(self):
        self.problem, self._root = "", None
        if not self.folder:
            self.problem = "type a folder in the folder box"
        else:
            try:
                self._root = self.workspace.readable(self.folder, kind="dir")
            except PathRefused as err:
                self.problem = str(err)
        # new choices with events on (the page's select must see them); the prompt value quietly
        self.param.browse.objects = {_BROWSE_PROMPT: "", **{p: p for p in self.workspace.browse_choices(self._root)}}
        with param.parameterized.discard_events(self):
            self.browse = ""
        self._folder_checked()

    def _folder_checked(self):
        """Called after every folder change, once :attr:`root` and :attr:`problem` are set (for subclasses)."""

    @property
    def root(self) -> Path | None:
        """The resolved folder, or None when it was refused or is missing."""
        return self._root

    def widgets(self, names=("folder", "browse"), **overrides) -> pn.Param:
        """The box's widgets (folder as a text box)."""
        widgets = {"folder": pn.widgets.TextInput, "browse": pn.widgets.Select, **overrides}
        return pn.Param(self, parameters=list(names), show_name=False, widgets=widgets)


def _get_folder(self) -> str:
    return self.folder_box.folder


def _set_folder(self, value) -> None:
    self.folder_box.folder = str(value)


#: ``folder = folder_property`` in a dashboard whose ``folder_box`` is a :class:`FolderBox`:
#: reading gives the box's text, setting it opens another folder (as typing it would).
folder_property = property(_get_folder, _set_folder, doc="The folder box's text (set it to open another folder)")


class FolderFilePicker(FolderBox):
    """Pick a file inside a folder of the workspace (see :class:`FolderBox`); the file cannot leave the folder.

    Audio files whose header cannot be read are listed in :attr:`failures` with the
    reason (``check_audio=True``).

    Parameters
    ----------
    folder : str or Path
        Folder to list first.
    extensions : tuple of str
        Lower-case extensions of the files offered (default: audio).
    workspace : Workspace, optional
    check_audio : bool
        Read each audio file's header when the folder changes and report unreadable ones.
    """

    file = param.Selector(default=None, objects=[], check_on_set=True, allow_None=True, label="File",
                          doc="File in the folder (name relative to the folder)")
    recursive = param.Boolean(default=False, doc="Also list files in sub-folders")

    def __init__(self, folder=None, extensions=AUDIO_EXTENSIONS, workspace: Workspace | None = None,
                 check_audio: bool = False, **params):
        self._extensions = tuple(e.lower() for e in extensions)
        self._check_audio = check_audio
        #: Files of the folder whose header could not be read (failures table; ``check_audio`` only).
        self.failures = pd.DataFrame(columns=["file", "start_time", "end_time", "stage", "error"])
        super().__init__(folder=folder, workspace=workspace, **params)

    def _folder_checked(self):
        self._refresh()

    @param.depends("recursive", watch=True)
    def _refresh(self):
        names = []
        self.failures = self.failures.iloc[0:0]
        if self._root is not None:
            pattern = "**/*" if self.recursive else "*"
            try:
                found = [p for p in self._root.glob(pattern) if p.is_file() and is_audio_file(p, self._extensions)]
            except OSError as err:
                found, self.problem = [], f"{self.folder}: cannot list the folder ({err})"
            names = sorted(str(p.relative_to(self._root)) for p in found)
            if self._check_audio and names:
                _, self.failures = check_recordings([self._root / n for n in names])
            if not names and not self.problem:
                self.problem = f"no files ({', '.join(self._extensions)}) in {self._root}"
        self.param.file.objects = names
        if self.file not in names:
            self.file = names[0] if names else None

    @property
    def path(self) -> Path | None:
        """Absolute path of the chosen file (checked to lie inside the folder)."""
        if self.file is None or self._root is None:
            return None
        full = (self._root / self.file).resolve()
        if self._root not in full.parents:
            raise ValueError(f"{self.file!r} is outside the folder {self._root}")
        return full

    def failure_of(self, path) -> str | None:
        """The recorded reason ``path`` cannot be read, if :attr:`failures` has one."""
        if path is None or not len(self.failures):
            return None
        match = self.failures[self.failures["file"] == str(path)]
        return None if match.empty else str(match["error"].iloc[0])

    def widgets(self, names=("folder", "browse", "file"), **overrides) -> pn.Param:
        return super().widgets(names, **overrides)


class SaveBox(param.Parameterized):
    """A file name inside the output folder, a save button, and the absolute path of what was written.

    :meth:`save` checks the name with :meth:`Workspace.output_path` first: a path that
    escapes the output folder is refused with a message and nothing is created.

    Parameters
    ----------
    workspace : Workspace
    writer : callable
        ``writer(path) -> Path or list`` writes the file(s) at the checked absolute path.
    default : str
        Default name, relative to the output folder.
    label : str
        Button label.
    folder : bool
        The name is a folder that ``writer`` fills (created first).
    """

    path = param.String(default="", label="Save as",
                        doc="File name inside the output folder (sub-folders allowed, e.g. 'ribbit/toad.json')")

    def __init__(self, workspace: Workspace, writer, default: str, label: str = "Save", folder: bool = False,
                 **params):
        super().__init__(**params)
        self.workspace = workspace
        self._writer = writer
        self._folder = folder
        self.path = default
        self.button = pn.widgets.Button(label=label, color="primary")
        self.button.on_click(lambda *_: self.save())
        self.status = pn.pane.Markdown(f"Saves under the output folder `{workspace.output_dir}`.",
                                       sizing_mode="stretch_width")
        #: Absolute path of the last successful save (None before, or after a refused one).
        self.saved: Path | None = None

    def save(self, raise_errors: bool = False):
        """Check the name, write, and show the absolute path; returns the writer's result.

        A refused name or a failed write is shown next to the button; it returns None,
        or raises (``raise_errors``: :class:`~opso_nb.workspace.PathRefused`, OSError, ...).
        """
        self.saved = None
        try:
            target = self.workspace.output_path(self.path)
            (target if self._folder else target.parent).mkdir(parents=True, exist_ok=True)
            result = self._writer(target)
        except Exception as err:  # any writer error is shown, never a traceback in the page
            self.status.object = f"**Not saved:** {err}" if isinstance(err, PathRefused) else \
                f"**Not saved:** {type(err).__name__}: {err}"
            if raise_errors:
                raise
            return None
        self.saved = target
        self.status.object = f"Saved to `{target}`"
        return result

    def panel(self) -> pn.Column:
        return pn.Column(pn.Param(self, parameters=["path"], show_name=False,
                                  widgets={"path": pn.widgets.TextInput}),
                         self.button, self.status, sizing_mode="stretch_width")


# every dashboard imports this module: from then on its pages need nothing from a CDN
install_offline_stylesheets()


def run_on_page(doc, fn):
    """Run ``fn`` on the page's event loop when called from another thread of a served page; directly otherwise."""
    if doc is not None and getattr(doc, "session_context", None) is not None and \
            threading.current_thread() is not threading.main_thread():
        doc.add_next_tick_callback(fn)
    else:
        fn()
