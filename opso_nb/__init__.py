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


def __getattr__(name):
    # CNN pulls in torch: import it only when asked for
    if name == "CNN":
        from opso_nb.ml.cnn import CNN

        return CNN
    raise AttributeError(f"module 'opso_nb' has no attribute {name!r}")
