"""Batch jobs on the prediction loop: a saved CNN's scores, BirdNET's confidences and embeddings.

Separate from :mod:`opso_nb.batch.jobs` because it imports torch (seconds per
worker), which RIBBIT and summary workers never need. Each job is the serial
call (``CNN.predict``, ``BirdNET.predict``, ``BirdNET.embed``) on one file, so a
run folder is shared with the serial call of the same settings.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import param
import torch

from opso_nb.batch.jobs import JobSetupError, SerialCallJob, file_sha256
from opso_nb.ml.cnn import load_model
# _FileJob.key is the identity predict() records for the clips of a file; using it (not a copy of its
# formula) keeps batch and serial records interchangeable
from opso_nb.ml.prediction import PredictionSettings, _FileJob

__all__ = ["PredictionLoopJob", "CNNPredictJob", "BirdNETPredictJob", "BirdNETEmbedJob", "birdnet_available"]


class PredictionLoopJob(SerialCallJob):
    """A serial call on :func:`opso_nb.ml.prediction.predict`'s loop: records carry the clip times' key."""

    def record_key(self, file, table) -> str:
        index = table.index
        times = np.stack([index.get_level_values(1).to_numpy(dtype=float),
                          index.get_level_values(2).to_numpy(dtype=float)], axis=1)
        return _FileJob(str(file), times).key


class CNNPredictJob(PredictionLoopJob, PredictionSettings):
    """Scores of a saved :class:`~opso_nb.ml.cnn.CNN` (a model file), as ``CNN.predict`` gives them.

    The prediction settings are those of
    :class:`~opso_nb.ml.prediction.PredictionSettings` (``batch_size``,
    ``activation_layer``, ``overlap_fraction``, ``final_clip``,
    ``output_format``). The model file is hashed on the coordinator; each
    worker loads it once, with ``torch_threads`` threads, and refuses a file
    that changed since. Only models of registered architectures (those
    :func:`opso_nb.ml.cnn.load_model` rebuilds by name) can be used.

    Examples
    --------
    >>> job = CNNPredictJob(model="best.model", activation_layer="sigmoid", batch_size=16)  # doctest: +SKIP
    >>> result = run_batch(job, "recordings/", "scores/")  # doctest: +SKIP
    """

    model = param.String(default="", doc="Model file written by CNN.save (a path every worker can read)")
    device = param.String(default="cpu", doc="torch device on the workers ('cpu', 'cuda', 'cuda:1' ...)")
    torch_threads = param.Integer(default=1, bounds=(1, None),
                                  doc="torch threads per worker process (1: one process per core scales best)")
    num_workers = param.Integer(default=0, bounds=(0, 0), precedence=-1,
                                doc="Always 0: a Dask worker is one process (daemonic; it cannot start loaders)")
    model_sha256 = param.String(default="", precedence=-1,
                                doc="SHA-256 of the model file, set on the coordinator; workers check it")

    def prepare(self):
        if not self.model:
            raise ValueError("CNNPredictJob needs model= (a model file written by CNN.save)")
        if not Path(self.model).is_file():
            raise FileNotFoundError(f"{self.model}: no such model file")
        self.model_sha256 = file_sha256(self.model)

    def cache_key(self) -> str:
        text = json.dumps([self.model, self.model_sha256, self.device, self.torch_threads])
        return "cnn-" + hashlib.sha1(text.encode()).hexdigest()

    def setup(self):
        torch.set_num_threads(int(self.torch_threads))
        if self.model_sha256 and file_sha256(self.model) != self.model_sha256:
            raise JobSetupError(f"{self.model}: the model file changed after the run started (SHA-256 differs); "
                                "start the run again")
        model = load_model(self.model, device=self.device)
        model.verbose = 0
        return model

    def run_serial(self, samples, output_path=None):
        return self.predict(self.loaded, samples, output_path=output_path, num_workers=0, progress=False,
                            return_invalid_samples=True)


def birdnet_available() -> bool:
    """True when :class:`opso_nb.ml.birdnet.BirdNET` can be imported (module present, runtime installed)."""
    try:
        from opso_nb.ml.birdnet import BirdNET  # noqa: F401  (optional module and runtime)
    except ImportError:
        return False
    return True


class _BirdNETJob(PredictionLoopJob):
    method = "predict"

    birdnet_options = param.Dict(default={}, doc="Parameters of BirdNET(...), e.g. overlap, sensitivity or the "
                                                 "latitude/longitude/week species filter")
    call_options = param.Dict(default={}, doc="Extra keyword arguments of BirdNET.predict / BirdNET.embed")
    torch_threads = param.Integer(default=1, bounds=(1, None), doc="torch threads per worker process")

    def setup(self):
        torch.set_num_threads(int(self.torch_threads))
        try:  # optional: the BirdNET module and its runtime (the birdnet extra)
            from opso_nb.ml.birdnet import BirdNET
        except ImportError as err:
            raise JobSetupError("BirdNET jobs need opso_nb.ml.birdnet and its runtime: pip install "
                                f"'opso_nb[birdnet]' ({err})") from err
        return BirdNET(**self.birdnet_options)

    def run_serial(self, samples, output_path=None):
        call = getattr(self.loaded, self.method)
        return call(samples, output_path=output_path, return_invalid_samples=True, progress=False,
                    **self.call_options)


class BirdNETPredictJob(_BirdNETJob):
    """BirdNET species confidences per 3 s clip, as ``BirdNET(**birdnet_options).predict`` gives them."""

    method = "predict"


class BirdNETEmbedJob(_BirdNETJob):
    """BirdNET embeddings (1,024 values per 3 s clip), as ``BirdNET(**birdnet_options).embed`` gives them."""

    method = "embed"
