"""Preprocessing tuner: see samples exactly as the model sees them while tuning every Action.

A grid shows the first clips of a clip table after the whole pipeline
(:func:`opso_nb.preprocess.preprocessors.preview_samples`), with a colour bar of
the tensor values the network gets (:func:`input_scale_label`). The clips come from
a folder of the workspace: recordings with Raven tables (labelled), one
sub-folder per class, a clip-label CSV, or plain recordings
(:func:`opso_nb.workspace.load_clips`). Each pipeline step has its own widgets
(from ``pn.Param``) and a bypass toggle; any change redraws the grid.
"Re-draw augmentations" draws new random augmentations; "Export config" writes
the preprocessor as JSON under the output folder for the training notebook
(:func:`~opso_nb.preprocess.preprocessors.load_preprocessor`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import panel as pn
import param

from opso_nb import sample_data
from opso_nb.dashboards._widgets import FolderBox, SaveBox, failure_text
from opso_nb.failures import failure_record, failures_frame
from opso_nb.preprocess.preprocessors import SpectrogramPreprocessor, load_preprocessor, preview_samples
from opso_nb.preprocess.utils import show_tensor_grid
from opso_nb.utils import make_clip_df
from opso_nb.workspace import Workspace, clip_sources, load_clips

#: Recordings read for a preview from a folder (the grid shows at most 24 clips).
PREVIEW_FILES = 24


def default_background(clip_duration=2.0) -> pd.DataFrame:
    """Background clips for the overlay step: the bundled one-minute AudioMoth soundscape."""
    return make_clip_df([sample_data.audiomoth_1min()], clip_duration)


def _png_data_url(fig, dpi=72) -> str:
    """A matplotlib Figure as a base64 PNG data URL (one small image, no extra server requests)."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def input_scale_label(preprocessor) -> str:
    """Label of the grid's colour bar: the tensor values the network gets for quiet and for loud sound.

    ``to_tensor`` makes quiet 0 and loud 1 (the other way round when inverted), at the
    spectrogram's decibel limits; an active ``rescale`` step then maps v to
    ``(v - input_mean) / input_std`` (-1 and 1 with its defaults).
    """
    steps = preprocessor.pipeline
    to_tensor, rescale = steps.get("to_tensor"), steps.get("rescale")
    if to_tensor is None or getattr(to_tensor, "invert", None) is None:
        return "network input (tensor value)"
    quiet, loud = (1.0, 0.0) if to_tensor.invert else (0.0, 1.0)
    if rescale is not None and not rescale.bypass and getattr(rescale, "input_std", 0):
        quiet, loud = ((v - rescale.input_mean) / rescale.input_std for v in (quiet, loud))
    return f"network input ({quiet:g} = quiet, {loud:g} = loud)"


def _input_widgets(action, names) -> dict:
    """Number boxes for optional numbers (None = automatic): a slider cannot show 'no value'."""
    out = {}
    for n in names:
        p = action.param[n]
        if isinstance(p, param.Number) and p.allow_None:
            out[n] = pn.widgets.IntInput if isinstance(p, param.Integer) else pn.widgets.FloatInput
    return out


class PreprocessingTuner(pn.viewable.Viewer):
    """Tune a :class:`SpectrogramPreprocessor` live on a grid of clips.

    Parameters
    ----------
    clips : pd.DataFrame, optional
        Clip table indexed (file, start_time, end_time) with 0/1 label columns.
        Default: the clips of ``folder``, else of the workspace's first data
        folder, else :func:`default_clips` (bundled annotated recording).
    preprocessor : BasePreprocessor, optional
        Default: 2 s clips, 128 x 256 tensors, overlay of a soundscape (bypassed).
    folder : str or Path, optional
        Folder to take clips from (see :func:`opso_nb.workspace.clip_sources`).
    config_path : str
        Where "Export config" writes the JSON config, relative to the output folder.
    workspace : Workspace, optional
        Default :meth:`Workspace.from_env` plus ``folder``.
    """

    n_samples = param.Integer(6, bounds=(1, 24), doc="Clips in the grid.")
    columns = param.Integer(3, bounds=(1, 8), doc="Grid columns.")
    seed = param.Integer(0, bounds=(0, None), doc="Random seed of the augmentations shown.")
    bypass_augmentations = param.Boolean(False, doc="Show the samples without any augmentation.")
    sample_duration = param.Number(2.0, bounds=(0.05, 60), doc="Clip length given to the model (s).")
    source = param.Selector(default=None, objects=[], allow_None=True, label="Clips from",
                            doc="What the folder provides: recordings with Raven tables, one sub-folder per class, "
                                "a clip-label CSV (file, start_time, end_time, one 0/1 column per class), "
                                "or plain recordings")

    def __init__(self, clips=None, preprocessor=None, folder=None, config_path="preprocessor_config.json",
                 workspace: Workspace | None = None, **params):
        super().__init__(**params)
        self.workspace = workspace or Workspace.from_env([folder])
        self._given_clips = clips
        self._source_failures = failures_frame()
        self._source_note = ""
        start = folder or self.workspace.start_folder(sample_data.annotated_recording()[0].parent)
        self.folder_box = FolderBox(folder=str(start), workspace=self.workspace)
        self.clips = clips
        if clips is None:
            self._read_folder(render=False)
        if preprocessor is None:
            preprocessor = SpectrogramPreprocessor(self.sample_duration, overlay_df=default_background(),
                                                   height=128, width=256, channels=1)
            preprocessor.pipeline["overlay"].set(overlay_weight=[0.2, 0.5])
            preprocessor.pipeline["overlay"].bypass = True
        else:
            self.sample_duration = preprocessor.sample_duration or self.sample_duration
        self.preprocessor = preprocessor
        self.renders = 0
        self._grid = pn.pane.HTML("", name="Samples", sizing_mode="stretch_width")
        self._status = pn.pane.Markdown("", name="Status")
        self._redraw_button = pn.widgets.Button(label="Re-draw augmentations", color="primary")
        self._redraw_button.on_click(lambda event: self._new_seed())
        self.save_box = SaveBox(self.workspace, self._write_config, default=str(config_path), label="Export config")
        self._export_button = self.save_box.button
        self._export_status = self.save_box.status
        self._step_panels = self._build_step_panels()
        self.param.watch(lambda *events: self.render(), ["n_samples", "columns", "seed", "bypass_augmentations"])
        self.param.watch(self._on_duration, ["sample_duration"])
        self.param.watch(lambda *_: self._read_folder(scan=False), ["source"])
        self.folder_box.param.watch(lambda *_: self._read_folder(), ["folder"])
        self.render()

    @property
    def config_path(self) -> str:
        """Name of the exported config, relative to the output folder."""
        return self.save_box.path

    @config_path.setter
    def config_path(self, value) -> None:
        self.save_box.path = str(value)

    # ------------------------------------------------------------ widgets
    def _build_step_panels(self):
        panels = []
        for key, action in self.preprocessor.pipeline.items():
            names = [p for p in action.param if p not in ("name", "is_augmentation", "overlay_df")]
            if not names:
                continue
            title = f"**{key}**" + (" *(augmentation)*" if action.is_augmentation else "")
            widgets = pn.Param(action, parameters=names, show_name=False, sizing_mode="stretch_width",
                               widgets=_input_widgets(action, names))
            panels.append(pn.Column(pn.pane.Markdown(title, margin=(4, 5, 0, 5)), widgets, sizing_mode="stretch_width"))
            action.param.watch(lambda *events: self.render(), names)
        return panels

    def _read_folder(self, scan: bool = True, render: bool = True):
        """Clips from the folder box's folder and the chosen source; errors leave no stale grid behind."""
        root = self.folder_box.root
        self._source_failures = failures_frame()
        if scan:
            sources = clip_sources(root) if root is not None else []
            self.param.source.objects = sources  # with events: the page's select must see them
            with param.parameterized.discard_events(self):
                self.source = sources[0] if sources else None
        if root is None:
            self.clips, self._source_note = None, f"Nothing to show: {self.folder_box.problem}."
        elif self.source is None:
            self.clips = None
            self._source_note = (f"Nothing to show: {root} holds no recordings, clip tables or class sub-folders. "
                                 "Choose a folder of recordings under *Browse*.")
        else:
            try:
                clips, self._source_failures = load_clips(root, self.source, self.sample_duration,
                                                          max_files=PREVIEW_FILES)
                # one clip of each recording first, so the grid shows several recordings
                order = clips.groupby(level="file", sort=False).cumcount().to_numpy().argsort(kind="stable")
                self.clips, self._source_note = clips.iloc[order], ""
            except (ValueError, OSError) as err:
                self.clips, self._source_note = None, f"Nothing to show: {err}"
        if render:
            self.render()

    def _on_export(self, event):
        self.export(raise_errors=False)

    def _new_seed(self):
        self.seed = self.seed + 1  # watcher renders

    def _on_duration(self, event):
        self.preprocessor.sample_duration = float(event.new)
        if self._given_clips is None and self.source is not None:
            self._read_folder(scan=False)  # clips of the new length
        else:
            self.render()

    # ------------------------------------------------------------ actions
    def render(self):
        """Preprocess the clips and redraw the grid; errors go to the status line."""
        self.renders += 1
        if self.clips is None or not len(self.clips):
            self._grid.object = ""
            self._status.object = (f"Render {self.renders}: " + (self._source_note or "the clip table is empty")
                                   + self._failure_note(failures_frame()))
            return
        samples = preview_samples(self.preprocessor, self.clips, n=self.n_samples, seed=self.seed,
                                  bypass_augmentations=self.bypass_augmentations)
        good = [s for s in samples if not isinstance(s, Exception)]
        errors = [s for s in samples if isinstance(s, Exception)]
        failed = failures_frame([failure_record(file, err, start, end, stage="preprocess")
                                 for (file, start, end), err in zip(self.clips.index, samples)
                                 if isinstance(err, Exception)])
        if good:
            titles = [f"{Path(s.source).name} {s.start_time:g}-{s.end_time:g} s\n"
                      + (", ".join(map(str, s.categorical_labels)) or "no label") for s in good]
            fig = show_tensor_grid([s.data for s in good], columns=self.columns, labels=titles,
                                   colorbar=input_scale_label(self.preprocessor))
            self._grid.object = f'<img alt="preprocessed samples" style="max-width:100%" src="{_png_data_url(fig)}">'
            shape = list(good[0].data.shape)
            lo = min(float(s.data.min()) for s in good)
            hi = max(float(s.data.max()) for s in good)
            text = (f"Render {self.renders}: {len(good)} samples, tensor {shape}, values {lo:.2f} to {hi:.2f}, "
                    f"seed {self.seed}" + (", augmentations off" if self.bypass_augmentations else ""))
        else:
            self._grid.object = ""
            text = f"Render {self.renders}: no sample could be preprocessed"
        if errors:
            text += f"\n\n**{len(errors)} failed:** {errors[0]}"
        self._status.object = text + self._failure_note(failed)

    def _failure_note(self, failed) -> str:
        both = pd.concat([f for f in (self._source_failures, failed) if len(f)] or [failures_frame()],
                         ignore_index=True)
        note = failure_text(both, "recording")
        return f"\n\n{note}" if note else ""

    def _write_config(self, path: Path) -> Path:
        self.preprocessor.save(path)
        load_preprocessor(path)  # prove it loads back
        return path

    def export(self, path=None, raise_errors: bool = True) -> Path | None:
        """Write the preprocessor config (JSON) under the output folder; returns its absolute path.

        ``path`` (default ``config_path``) is relative to the workspace's output folder;
        one that escapes it is refused and nothing is written. Errors are shown next to
        the button and raised (``raise_errors``) or give None.
        """
        if path is not None:
            self.save_box.path = str(path)
        return self.save_box.save(raise_errors=raise_errors)

    def __panel__(self):
        controls = pn.Param(self.param, parameters=["n_samples", "columns", "bypass_augmentations", "sample_duration"],
                            show_name=False, sizing_mode="stretch_width")
        source = [] if self._given_clips is not None else [
            self.folder_box.widgets(), pn.Param(self.param, parameters=["source"], show_name=False)]
        sidebar = pn.Column(
            pn.pane.Markdown("### Preprocessing tuner"), *source, controls, self._redraw_button,
            self.save_box.panel(), pn.pane.Markdown("### Pipeline steps"),
            *self._step_panels, width=340,
        )
        main = pn.Column(self._status, self._grid, sizing_mode="stretch_width")
        return pn.Row(sidebar, main, sizing_mode="stretch_width")
