"""Panel dashboards: one :class:`panel.viewable.Viewer` per app in ``notebooks/apps/``.

Imported lazily so that ``import opso_nb`` never needs Panel.
"""
import importlib

_DASHBOARDS = {
    "SpectrogramExplorer": "spectrogram_explorer",
    "AnnotationViewer": "annotation_viewer",
    "PreprocessingTuner": "preprocessing_tuner",
    "TrainingMonitor": "training_monitor",
    "PredictionExplorer": "prediction_explorer",
    "AgileModeling": "agile_modeling",
    "RibbitExplorer": "ribbit_explorer",
    "LocalizationMap": "localization_map",
    "ClipReview": "clip_review",
}

__all__ = list(_DASHBOARDS)


def __getattr__(name):
    if name in _DASHBOARDS:
        module = importlib.import_module(f"{__name__}.{_DASHBOARDS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
