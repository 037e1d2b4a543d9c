"""Scale out: run any per-file job over thousands of recordings on Dask, resumably, losing nothing.

One call scores a folder on a laptop or a million files on a cluster::

    from opso_nb.batch import run_batch, CNNPredictJob

    result = run_batch(CNNPredictJob(model="best.model"), "recordings/", "scores/")
    result.table                    # indexed by (file, start_time, end_time): CNN.predict's table
    result.failures                 # what could not be scored, and why
    pd.read_parquet(result.parts_folder)  # or dask.dataframe.read_parquet: one dataset

* **Jobs** (:mod:`opso_nb.batch.jobs`, :mod:`opso_nb.batch.ml_jobs`): a saved CNN's
  scores (:class:`CNNPredictJob`), BirdNET's confidences and embeddings
  (:class:`BirdNETPredictJob`, :class:`BirdNETEmbedJob`, when
  :mod:`opso_nb.ml.birdnet` is installed), RIBBIT (:class:`RibbitJob`) and a
  level/spectrum summary for checking a deployment (:class:`SummaryJob`). A
  new job is a small :class:`BatchJob` subclass.
* **Where it runs** (:func:`run_batch`'s ``scheduler``): a ``LocalCluster``
  sized to the machine (default), a running scheduler's address, a ``Client``
  or a cluster object (``dask_jobqueue.SLURMCluster``; see the "Scale out"
  page of the documentation for the SLURM recipe).
* **Resume and faults**: results go to a :class:`opso_nb.store.RunStore`, the
  same run folder the serial calls write (``CNN.predict(..., output_path=)``,
  ``run_ribbit(..., out_path=)``), so a run started on a laptop finishes on a
  cluster and the other way round. Finished files are skipped; a worker that
  dies has its task retried elsewhere; a file that kills every worker is
  quarantined; a stopped run resumes.
* **Command line**: ``python -m opso_nb.batch --help``.

Dask is an optional dependency (``pip install 'opso_nb[dask]'``); this package
imports without it, and so do the jobs and :func:`read_results`.
"""
from opso_nb.batch.jobs import (
    BatchJob,
    JobSetupError,
    NoOpJob,
    RibbitJob,
    RunDescription,
    SerialCallJob,
    SummaryJob,
    describe_serial_run,
)
from opso_nb.batch.results import BatchResult, read_results
from opso_nb.batch.runner import BatchInterrupted, input_files, local_client, run_batch
from opso_nb.batch.summary import summarize_clips, summarize_file

__all__ = [
    "run_batch",
    "local_client",
    "input_files",
    "BatchResult",
    "BatchInterrupted",
    "read_results",
    "BatchJob",
    "SerialCallJob",
    "RunDescription",
    "JobSetupError",
    "describe_serial_run",
    "CNNPredictJob",
    "BirdNETPredictJob",
    "BirdNETEmbedJob",
    "RibbitJob",
    "SummaryJob",
    "NoOpJob",
    "summarize_clips",
    "summarize_file",
    "birdnet_available",
]

_ML_JOBS = ("PredictionLoopJob", "CNNPredictJob", "BirdNETPredictJob", "BirdNETEmbedJob", "birdnet_available")


def __getattr__(name):
    # the prediction jobs import torch (seconds): only when asked for
    if name in _ML_JOBS:
        from opso_nb.batch import ml_jobs

        return getattr(ml_jobs, name)
    raise AttributeError(f"module 'opso_nb.batch' has no attribute {name!r}")
