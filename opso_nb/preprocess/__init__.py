"""Preprocessing: tunable pipelines of Actions that turn clips into model inputs.

See :mod:`opso_nb.preprocess.preprocessors` (``SpectrogramPreprocessor``) and
:mod:`opso_nb.preprocess.actions` (the steps).
"""
from opso_nb.preprocess.utils import PreprocessingError  # noqa: F401
