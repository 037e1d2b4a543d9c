"""Score a season of recordings on a SLURM cluster with dask-jobqueue (the coordinator of the run).

Run it as a small, long SLURM job of its own (submit_coordinator.sh): it asks SLURM
for worker jobs, hands them the recordings, and writes nothing itself but the run's
bookkeeping. Workers read the recordings and write their results straight to the
output folder, so recordings, model and output must be on the shared file system,
at the same path on every node.

Needs, in the environment on the cluster: opso_nb[dask] and dask-jobqueue
(`pip install "opso_nb[dask]" dask-jobqueue`). Resuming is the same command: files
finished by an earlier run (or by CNN.predict with the same settings) are skipped.
"""
import signal
import sys

from dask_jobqueue import SLURMCluster
from distributed import Client

from opso_nb.batch import CNNPredictJob, run_batch

RECORDINGS = "/shared/aru2024"            # a folder tree of recordings
MODEL = "/shared/models/best.model"        # written by CNN.save
OUT = "/shared/scores/aru2024"             # the run folder goes inside

if __name__ == "__main__":
    # SLURM's SIGTERM near the time limit (see submit_coordinator.sh) stops the run cleanly, like Ctrl-C
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cluster = SLURMCluster(
        queue="cpu",                       # your partition
        account="my_lab",                  # your account (or drop it)
        cores=16,                          # cores per worker job
        processes=16,                      # one worker process per core ...
        memory="32GB",                     # ... with 2 GB each (resnet18 or BirdNET peak ~1.3 GB)
        walltime="04:00:00",               # worker jobs may be short: lost tasks are retried elsewhere
        worker_extra_args=["--nthreads", "1"],
        job_script_prologue=["module load python", "source /shared/envs/opso/bin/activate"],
        log_directory="/shared/scores/logs",
    )
    cluster.adapt(minimum_jobs=1, maximum_jobs=8)   # up to 128 workers while there is work
    client = Client(cluster)
    print("dashboard:", client.dashboard_link, file=sys.stderr)

    job = CNNPredictJob(model=MODEL, activation_layer="sigmoid", batch_size=32)
    result = run_batch(job, RECORDINGS, OUT, scheduler=client, progress=False)
    print(result.summary)
    client.close()
    cluster.close()
