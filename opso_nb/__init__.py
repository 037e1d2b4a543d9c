"""opso_nb: a notebook-first bioacoustics toolkit.

Module paths and names follow OpenSoundscape 0.9's documented API, so code
written for it ports by changing the import root (``opensoundscape`` ->
``opso_nb``).
"""
__version__ = "0.1.0"

from opso_nb.audio import Audio  # noqa: E402
from opso_nb.spectrogram import MelSpectrogram, Spectrogram  # noqa: E402


def __getattr__(name):
    # CNN pulls in torch: import it only when asked for
    if name == "CNN":
        from opso_nb.ml.cnn import CNN

        return CNN
    raise AttributeError(f"module 'opso_nb' has no attribute {name!r}")
