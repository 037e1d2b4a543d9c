"""Preprocessing: tunable pipelines of Actions that turn clips into model inputs.

See :mod:`opso_nb.preprocess.preprocessors` (``SpectrogramPreprocessor``) and
:mod:`opso_nb.preprocess.actions` (the steps, and ``register_action`` for the
functions and classes a saved configuration may name).
"""
from opso_nb.preprocess.utils import PreprocessingError, UnregisteredActionError  # noqa: F401
