#!/bin/bash
# Submit the coordinator of a season run (season.py): one core, long enough for the whole season.
# The worker jobs it asks for come and go; if this job ends early, submit it again: the run resumes.
#
#   sbatch docs/slurm/submit_coordinator.sh
#
#SBATCH --job-name=opso-season
#SBATCH --partition=cpu
#SBATCH --account=my_lab
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=2-00:00:00
#SBATCH --output=/shared/scores/logs/coordinator-%j.out
# SIGTERM two minutes before the time limit: the run stops cleanly (files in progress are not held
# against the recordings), and the next submission resumes it
#SBATCH --signal=B:TERM@120

set -euo pipefail
module load python
source /shared/envs/opso/bin/activate

# exec: the SIGTERM reaches Python, which stops the run cleanly
exec python docs/slurm/season.py
