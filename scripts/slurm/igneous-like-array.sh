#!/bin/bash
# SLURM array job: each array task is one igneous-like worker draining a FileQueue that lives on
# a filesystem every node mounts. Workers exit when the queue is empty (-x); a task of a worker
# that is cancelled or preempted is leased again by another once its lease expires.
#
#   igneous-like image downsample file:///shared/em --queue fq:///shared/queues/em
#   QUEUE=fq:///shared/queues/em sbatch scripts/slurm/igneous-like-array.sh
#
# Settings (override on the sbatch command line, e.g. sbatch --array=0-63 ...):
#   --array            how many workers (array size); each leases tasks one at a time
#   --cpus-per-task    processes per worker (passed to -p)
#   --mem              memory per worker: at least one task's --memory plus ~0.3 GB
#   QUEUE              the FileQueue URL (required), e.g. fq:///shared/queues/em
#   LEASE_SECONDS      task lease (default 600; renewed while a task runs)
#   IGNEOUS_LIKE       path of the igneous-like command (default: igneous-like on PATH)
#SBATCH --job-name=igneous-like
#SBATCH --array=0-15
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=24:00:00
#SBATCH --output=igneous-like-%A_%a.log
set -euo pipefail
: "${QUEUE:?set QUEUE to the FileQueue on the shared filesystem, e.g. fq:///shared/queues/em}"
exec "${IGNEOUS_LIKE:-igneous-like}" execute "$QUEUE" -p "${SLURM_CPUS_PER_TASK:-1}" -x \
  --lease-sec "${LEASE_SECONDS:-600}" -q
