#!/bin/bash
# One SLURM allocation, no dask-jobqueue: a Dask scheduler and one worker process per core on every
# node, then the command line of opso_nb.batch against them. For clusters where jobs may not submit
# jobs. Resubmit the same script to resume.
#
#   sbatch docs/slurm/submit_allocation.sh
#
#SBATCH --job-name=opso-batch
#SBATCH --partition=cpu
#SBATCH --account=my_lab
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --mem-per-cpu=2G
#SBATCH --time=12:00:00
#SBATCH --output=/shared/scores/logs/batch-%j.out
#SBATCH --signal=B:TERM@120

set -euo pipefail
module load python
source /shared/envs/opso/bin/activate

RECORDINGS=/shared/aru2024
MODEL=/shared/models/best.model
OUT=/shared/scores/aru2024
SCHEDULER_FILE=$OUT/.scheduler-$SLURM_JOB_ID.json
mkdir -p "$OUT"

# opso_nb's defaults for workers (local_client does the same): no sampling profiler, glibc's own malloc tuning
export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False
export DASK_CONFIG=$OUT/.dask-$SLURM_JOB_ID
mkdir -p "$DASK_CONFIG"
printf 'distributed:\n  nanny:\n    pre-spawn-environ:\n      MALLOC_TRIM_THRESHOLD_: null\n' > "$DASK_CONFIG/opso.yaml"

# the scheduler on the first node, in the background
dask scheduler --scheduler-file "$SCHEDULER_FILE" --dashboard-address :8787 &
while [ ! -f "$SCHEDULER_FILE" ]; do sleep 1; done

# workers: one process per core, one thread each, 2 GB each, on every node
srun --ntasks="$SLURM_NNODES" --ntasks-per-node=1 \
    dask worker --scheduler-file "$SCHEDULER_FILE" --nworkers "$SLURM_CPUS_PER_TASK" --nthreads 1 \
    --memory-limit 2GB --local-directory "${TMPDIR:-/tmp}" &

ADDRESS=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['address'])" "$SCHEDULER_FILE")
python -m opso_nb.batch predict --model "$MODEL" --files "$RECORDINGS" --out "$OUT" --scheduler "$ADDRESS" &
BATCH=$!
# near the time limit SLURM sends SIGTERM to this script: pass it on, so the batch stops cleanly
trap 'kill -TERM $BATCH' TERM
wait $BATCH || wait $BATCH
