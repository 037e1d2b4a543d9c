"""opso_nb: a notebook-first bioacoustics toolkit.

Module paths and names follow OpenSoundscape 0.9's documented API, so code
written for it ports by changing the import root (``opensoundscape`` ->
``opso_nb``).
"""
__version__ = "0.1.0"

import os as _os

# OpenMP threads (torch's, scikit-learn's) that spin while they wait hold on to cores that other threads
# need: on a busy or shared machine torch runs 2-5x slower (benchmarks/RESULTS.md); sleeping waiters cost
# next to nothing on an idle one. The OpenMP runtime reads this once, when torch first loads it, so it
# applies when opso_nb is imported first; set OMP_WAIT_POLICY yourself to choose otherwise.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from opso_nb.audio import Audio  # noqa: E402
from opso_nb.spectrogram import MelSpectrogram, Spectrogram  # noqa: E402


#: Names imported on first use: they pull in torch, scikit-learn or LiteRT, which
#: ``import opso_nb`` should not pay for. name -> module that defines it.
_LAZY = {
    "CNN": "opso_nb.ml.cnn",
    "load_model": "opso_nb.ml.cnn",
    "BirdNET": "opso_nb.ml.birdnet",
    "select_clips": "opso_nb.review",
    "LabelStore": "opso_nb.review",
    "ReviewSession": "opso_nb.review",
    "calibrate": "opso_nb.review",
    "labels_to_one_hot": "opso_nb.review",
    "export_raven": "opso_nb.review",
    "Calibration": "opso_nb.review",
    "plot_precision_recall": "opso_nb.review",
    "plot_calibration": "opso_nb.review",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'opso_nb' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
