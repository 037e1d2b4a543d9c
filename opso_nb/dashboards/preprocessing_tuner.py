"""Preprocessing tuner: see samples exactly as the model sees them while tuning every Action.

A grid shows the first clips of a labelled table after the whole pipeline
(:func:`opso_nb.preprocess.preprocessors.preview_samples`). Each pipeline step
has its own widgets (from ``pn.Param``) and a bypass toggle; any change redraws
the grid. "Re-draw augmentations" draws new random augmentations; "Export
config" writes the preprocessor as JSON for the training notebook
(:func:`~opso_nb.preprocess.preprocessors.load_preprocessor`).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import panel as pn
import param

from opso_nb.preprocess.preprocessors import SpectrogramPreprocessor, load_preprocessor, preview_samples
from opso_nb.preprocess.utils import PreprocessingError, show_tensor_grid


def default_clips(clip_duration=2.0) -> pd.DataFrame:
    """Labelled 2 s clips (1 s apart) of the bundled annotated dawn-chorus recording."""
    from opso_nb import sample_data

    wav, table = sample_data.annotated_recording()
    try:
        from opso_nb.annotations import BoxedAnnotations

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # boxes past the snippet's end label no clip: expected here
            boxes = BoxedAnnotations.from_raven_files([table], audio_files=[wav], annotation_column="Species")
            return boxes.one_hot_clip_labels(clip_duration=clip_duration, clip_overlap=clip_duration / 2,
                                             min_label_overlap=0.25)
    except Exception:  # annotations module unavailable: unlabelled clips still show the pipeline
        from opso_nb.utils import make_clip_df

        return make_clip_df([wav], clip_duration, clip_overlap=clip_duration / 2)


def default_background(clip_duration=2.0) -> pd.DataFrame:
    """Background clips for the overlay step: the bundled one-minute AudioMoth soundscape."""
    from opso_nb import sample_data
    from opso_nb.utils import make_clip_df

    return make_clip_df([sample_data.audiomoth_1min()], clip_duration)


def _png_data_url(fig, dpi=72) -> str:
    """A matplotlib Figure as a base64 PNG data URL (one small image, no extra server requests)."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


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
        Clip table indexed (file, start_time, end_time) with 0/1 label columns;
        default: :func:`default_clips`.
    preprocessor : BasePreprocessor, optional
        Default: 2 s clips, 128 x 256 tensors, overlay of a soundscape (bypassed).
    config_path : str
        Where "Export config" writes the JSON config.
    """

    n_samples = param.Integer(6, bounds=(1, 24), doc="Clips in the grid.")
    columns = param.Integer(3, bounds=(1, 8), doc="Grid columns.")
    seed = param.Integer(0, bounds=(0, None), doc="Random seed of the augmentations shown.")
    bypass_augmentations = param.Boolean(False, doc="Show the samples without any augmentation.")
    sample_duration = param.Number(2.0, bounds=(0.05, 60), doc="Clip length given to the model (s).")
    config_path = param.String("preprocessor_config.json", doc="File written by Export config.")

    def __init__(self, clips=None, preprocessor=None, **params):
        super().__init__(**params)
        self.clips = default_clips() if clips is None else clips
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
        self._redraw_button = pn.widgets.Button(name="Re-draw augmentations", button_type="primary")
        self._redraw_button.on_click(lambda event: self._new_seed())
        self._export_button = pn.widgets.Button(name="Export config", button_type="success")
        self._export_button.on_click(self._on_export)
        self._export_status = pn.pane.Markdown("")
        self._step_panels = self._build_step_panels()
        self.param.watch(lambda *events: self.render(), ["n_samples", "columns", "seed", "bypass_augmentations"])
        self.param.watch(self._on_duration, ["sample_duration"])
        self.render()

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

    def _on_export(self, event):
        try:
            self.export()
        except (OSError, ValueError, PreprocessingError):
            pass  # already shown next to the button; a bad path must not break the app

    def _new_seed(self):
        self.seed = self.seed + 1  # watcher renders

    def _on_duration(self, event):
        self.preprocessor.sample_duration = float(event.new)
        self.render()

    # ------------------------------------------------------------ actions
    def render(self):
        """Preprocess the clips and redraw the grid; errors go to the status line."""
        samples = preview_samples(self.preprocessor, self.clips, n=self.n_samples, seed=self.seed,
                                  bypass_augmentations=self.bypass_augmentations)
        good = [s for s in samples if not isinstance(s, Exception)]
        errors = [s for s in samples if isinstance(s, Exception)]
        self.renders += 1
        if good:
            titles = [f"{Path(s.source).name} {s.start_time:g}-{s.end_time:g} s\n"
                      + (", ".join(map(str, s.categorical_labels)) or "no label") for s in good]
            fig = show_tensor_grid([s.data for s in good], columns=self.columns, labels=titles)
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
        self._status.object = text

    def export(self, path=None) -> Path:
        """Write the preprocessor config (JSON) to ``path`` (default ``config_path``)."""
        path = Path(path or self.config_path).expanduser()
        try:
            self.preprocessor.save(path)
            load_preprocessor(path)  # prove it loads back
        except (OSError, ValueError, PreprocessingError) as err:
            self._export_status.object = f"Export failed: {err}"
            raise
        self._export_status.object = f"Saved config to `{path}`"
        return path

    def __panel__(self):
        controls = pn.Param(self.param, parameters=["n_samples", "columns", "bypass_augmentations", "sample_duration",
                                                    "config_path"], show_name=False, sizing_mode="stretch_width")
        sidebar = pn.Column(
            pn.pane.Markdown("### Preprocessing tuner"), controls, self._redraw_button, self._export_button,
            self._export_status, pn.pane.Markdown("### Pipeline steps"),
            *self._step_panels, width=340,
        )
        main = pn.Column(self._status, self._grid, sizing_mode="stretch_width")
        return pn.Row(sidebar, main, sizing_mode="stretch_width")
