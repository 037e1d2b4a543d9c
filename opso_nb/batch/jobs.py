"""Jobs for :func:`opso_nb.batch.run_batch`: what to compute for one input file, and what identifies a run.

A job is a small :class:`param.Parameterized` (its parameters are its settings,
so ``pn.Param(job)`` shows them as widgets). :func:`~opso_nb.batch.run_batch`
sends it to every Dask worker, where it is used like this::

    job.loaded                  # job.setup() once per worker process (loads the model), then cached
    table, failures = job.compute(file)

and the results of each file go to the run's :class:`~opso_nb.store.RunStore`.
A new job is a few lines::

    class PeakAmplitude(BatchJob):
        job = "peak"                         # names the run folder: peak-<fingerprint>/
        columns = ["peak"]                   # value columns of the table (dtype: float32)

        def compute(self, file):
            audio = Audio.from_file(file)
            table = pd.DataFrame({"peak": [abs(audio.samples).max()]},
                                 index=make_clip_index([file], [0.0], [audio.duration]))
            return table, []                 # failures of parts of the file (failure records)

Its settings (the fingerprint of its run) are its parameter values; override
:meth:`BatchJob.settings` to add what else changes the results (a model file's
hash, say). A model is loaded in :meth:`BatchJob.setup`, which each worker
calls once: the model never travels with the tasks.

Jobs whose serial call already writes a run store (:class:`RibbitJob` here;
``CNNPredictJob``, ``BirdNETPredictJob`` and ``BirdNETEmbedJob`` in
:mod:`opso_nb.batch.ml_jobs`) derive from :class:`SerialCallJob`: the run's identity is whatever that serial
call records, so a folder started with ``CNN.predict(..., output_path=out)``
can be finished by ``run_batch`` on a cluster, and the other way round.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import warnings
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import param

from opso_nb import __version__
from opso_nb.audio import audio_info
from opso_nb.batch.summary import DEFAULT_BANDS, check_bands, summarize_file, summary_columns
from opso_nb.ribbit import RibbitParams, run_ribbit
from opso_nb.store import RunStore

__all__ = [
    "RunDescription",
    "BatchJob",
    "SerialCallJob",
    "RibbitJob",
    "SummaryJob",
    "NoOpJob",
    "JobSetupError",
    "describe_serial_run",
    "file_sha256",
]


class RunDescription(NamedTuple):
    """What a run store needs to open a job's run: its name, settings, value columns, dtype and part format."""

    job: str
    settings: dict
    columns: list
    dtype: str
    format: str


class JobSetupError(RuntimeError):
    """A job could not be set up on a worker (model missing or changed ...): the whole run stops."""


# one process-wide cache of what jobs loaded, so a worker loads a model once for all its tasks
_LOADED: OrderedDict = OrderedDict()
_LOADED_LOCK = threading.Lock()
_LOADED_MAX = 2  # a long-lived worker serving run after run keeps the last two models only


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def file_sha256(path, block_bytes: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes (read in blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(block_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the interface
class BatchJob(param.Parameterized):
    """What :func:`~opso_nb.batch.run_batch` computes for each input file (subclass it).

    Attributes
    ----------
    job : str
        Kind of job (a class attribute); the run folder is ``<job>-<fingerprint>``.
    columns : list of str
        Value columns of its tables (a property when they depend on the parameters).
    dtype : str
        numpy dtype of the value columns (default float32).
    format : str
        Part format, "parquet" (default) or "csv".

    Notes
    -----
    A subclass sets the attributes above and overrides :meth:`compute`
    (required: ``(table, failures)`` for one file) and, when needed,
    :meth:`setup` (what to load once per worker process, e.g. a model;
    :attr:`loaded` returns it), :meth:`settings` (what identifies the results
    besides the parameters) and :meth:`prepare` (work done once on the
    coordinator before any task, e.g. hashing a model file).
    """

    job = "job"
    columns: list = []
    dtype = "float32"
    format = "parquet"

    # ------------------------------------------------------------------ identity
    def parameter_values(self) -> dict:
        """The parameters (JSON-able), without ``name``."""
        return _jsonable({k: v for k, v in self.param.values().items() if k != "name"})

    def settings(self) -> dict:
        """Everything that changes the results: the run's fingerprint is computed from it."""
        return {"job_class": f"{type(self).__module__}.{type(self).__qualname__}",
                "parameters": self.parameter_values(), "opso_nb": __version__}

    def describe(self) -> RunDescription:
        """Job name, settings, columns, dtype and format of this job's run (called on the coordinator)."""
        return RunDescription(self.job, self.settings(), [str(c) for c in self.columns], np.dtype(self.dtype).name,
                              self.format)

    # ------------------------------------------------------------------ life cycle
    def prepare(self):
        """Called once on the coordinator before the run starts (default: nothing)."""

    def cache_key(self) -> str:
        """Identifies what :meth:`setup` loads (default: the class and every parameter value)."""
        text = json.dumps([type(self).__module__, type(self).__qualname__, self.parameter_values()], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()

    def setup(self):
        """Load what :meth:`compute` needs (a model); called once per process. Default: nothing (None)."""
        return None

    @property
    def loaded(self):
        """What :meth:`setup` returned, loaded once per process (cached by :meth:`cache_key`).

        Raises
        ------
        JobSetupError
            :meth:`setup` failed: not the fault of any input file.
        """
        key = self.cache_key()
        with _LOADED_LOCK:
            if key in _LOADED:
                _LOADED.move_to_end(key)
                return _LOADED[key]
            try:
                value = self.setup()
            except JobSetupError:
                raise
            except Exception as err:
                raise JobSetupError(f"{type(self).__name__} could not be set up: {type(err).__name__}: {err}") from err
            _LOADED[key] = value
            while len(_LOADED) > _LOADED_MAX:
                _LOADED.popitem(last=False)
            return value

    def compute(self, file):
        """Results for one file: ``(table, failures)``.

        Returns
        -------
        table : DataFrame or None
            Indexed by ``(file, start_time, end_time)``, with :attr:`columns`.
        failures : list of dict
            Failure records (:func:`opso_nb.failures.failure_record`) of parts
            of the file that could not be computed. Raise (or return no rows
            and a failure with NaN times) when the whole file fails.
        """
        raise NotImplementedError

    def record_key(self, file, table) -> str:
        """Extra identity of the work done on ``file`` kept in its record (see :meth:`RunStore.is_done`)."""
        return ""

    def audio_seconds(self, file) -> float:
        """Seconds of audio in ``file`` (for the run's summary); 0 when unreadable."""
        try:
            return float(audio_info(file).duration)
        except Exception:  # a file that failed is reported by compute, not here
            return 0.0


# --------------------------------------------------------------------------- jobs on serial calls
def describe_serial_run(run_serial) -> RunDescription:
    """The run a serial opso_nb call opens in a store, learned by calling it on no files in a scratch folder.

    The serial call is the one definition of its run's identity, so batch and
    serial runs of the same settings share one run folder.
    """
    with tempfile.TemporaryDirectory(prefix="opso_nb-describe-") as scratch:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_serial([], output_path=scratch)
        run = RunStore.existing(scratch)
        return RunDescription(run.job, run.settings, list(run.columns), run.dtype.name, run.format)


class SerialCallJob(BatchJob):
    """A job whose serial opso_nb call already writes a run store; the batch run shares its folders.

    Subclasses implement :meth:`run_serial` (``samples`` -> ``(table, failures)``,
    writing to a store when ``output_path`` is given). :meth:`compute` is
    that call on one file, and the run's job name, settings and columns are
    those the call records (:func:`describe_serial_run`).
    """

    def __init__(self, **params):
        super().__init__(**params)
        self._description = None

    def run_serial(self, samples, output_path=None):
        """The serial call: ``(table, failures)`` for ``samples`` (a list of files)."""
        raise NotImplementedError

    def describe(self) -> RunDescription:
        values = json.dumps(self.parameter_values(), sort_keys=True)
        if self._description is None or self._description[0] != values:  # described again after a change
            self._description = (values, describe_serial_run(self.run_serial))
        return self._description[1]

    def __getstate__(self):
        state = super().__getstate__()
        state["_description"] = None  # the coordinator's; tasks travel without it
        return state

    @property
    def job(self):
        return self.describe().job

    @property
    def columns(self):
        return self.describe().columns

    @property
    def dtype(self):
        return self.describe().dtype

    @property
    def format(self):
        return self.describe().format

    def settings(self) -> dict:
        return self.describe().settings

    def compute(self, file):
        with warnings.catch_warnings():  # failures are recorded in the run, not warned about per file
            warnings.simplefilter("ignore")
            return self.run_serial([file])


class RibbitJob(SerialCallJob):
    """RIBBIT pulse-rate scores per species, as :func:`opso_nb.ribbit.run_ribbit` gives them.

    Parameters
    ----------
    species : RibbitParams, list of them, or dict ``{species: RibbitParams or dict}``
        One parameter set per species (kept as plain dicts, see :meth:`RibbitParams.to_dict`).
    """

    species = param.Dict(default={}, doc="RIBBIT parameters per species: {species: RibbitParams.to_dict()}")
    chunk_duration = param.Number(default=300.0, bounds=(1, None),
                                  doc="Seconds of audio read at a time (bounds memory on long files)")

    def __init__(self, species=None, **params):
        super().__init__(species=self._species_dicts(species), **params)

    @staticmethod
    def _species_dicts(species) -> dict:
        if species is None:
            return {}
        if isinstance(species, RibbitParams):
            species = [species]
        if isinstance(species, (list, tuple)):
            return {p.species: p.validate().to_dict() for p in species}
        return {str(name): (p if isinstance(p, RibbitParams) else RibbitParams.from_dict({"species": name, **p}))
                .validate().to_dict() for name, p in dict(species).items()}

    @classmethod
    def from_files(cls, paths, **params) -> "RibbitJob":
        """A job from JSON files written by :meth:`RibbitParams.save` (one species each)."""
        return cls(species=RibbitParams.load_many(paths), **params)

    def run_serial(self, samples, output_path=None):
        if not self.species:
            raise ValueError("RibbitJob needs species= (RIBBIT parameters for at least one species)")
        return run_ribbit(samples, self.species, out_path=output_path, chunk_duration=self.chunk_duration,
                          progress=False)


# --------------------------------------------------------------------------- jobs of their own
class SummaryJob(BatchJob):
    """Level, peak frequency and band levels of every clip: a quick check of a deployment.

    See :mod:`opso_nb.batch.summary` for what each column means.
    """

    job = "summary"

    clip_duration = param.Number(default=10.0, bounds=(0, None), inclusive_bounds=(False, True),
                                 doc="Length of each summarized clip (s)")
    clip_overlap = param.Number(default=0.0, bounds=(0, None), doc="Overlap of consecutive clips (s)")
    final_clip = param.Selector(default="remainder", objects=[None, "remainder", "full"],
                                doc="What to do with the end of a file shorter than a clip")
    bands = param.List(default=[list(b) for b in DEFAULT_BANDS], doc="Frequency bands [low, high] in Hz")
    sample_rate = param.Integer(default=None, allow_None=True, bounds=(1, None),
                                doc="Resample to this rate (Hz) first; None keeps each file's rate")
    window_samples = param.Integer(default=1024, bounds=(16, None),
                                   doc="Spectrum window (samples): frequency resolution sample_rate/window Hz")
    block_duration = param.Number(default=300.0, bounds=(1, None), doc="Seconds of audio read at a time")

    def __init__(self, **params):
        if "bands" in params:
            params["bands"] = [list(b) for b in check_bands(params["bands"])]
        super().__init__(**params)

    @property
    def columns(self):
        return summary_columns(self.bands)

    def compute(self, file):
        return summarize_file(file, clip_duration=self.clip_duration, clip_overlap=self.clip_overlap,
                              final_clip=self.final_clip, bands=self.bands, sample_rate=self.sample_rate,
                              window_samples=self.window_samples, block_duration=self.block_duration)


class NoOpJob(BatchJob):
    """Reads nothing and writes no rows: measures the batch machinery's own cost per file."""

    job = "noop"

    def compute(self, file):
        return None, []

    def audio_seconds(self, file) -> float:
        return 0.0
