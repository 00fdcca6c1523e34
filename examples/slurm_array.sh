#!/bin/bash
# Run bids-iron on a SLURM cluster with Singularity/Apptainer: one participant per array task,
# then the group level once every task has finished.
#
#   1. Build the image once:   singularity build bids-iron.sif docker://bids-iron/bids-iron:latest
#   2. Submit:                 bash examples/slurm_array.sh /data/bids /data/bids-iron bids-iron.sif
#
# Reruns are safe: finished sessions are skipped, interrupted ones are redone.
set -euo pipefail
if [ -z "${SLURM_JOB_ID:-}" ]; then  # on the login node: submit the array and the group job
  BIDS_DIR=$(readlink -f "${1:?BIDS_DIR}"); OUT_DIR=$(readlink -f "${2:?OUTPUT_DIR}")
  SIF=$(readlink -f "${3:?path to bids-iron.sif}")
  mkdir -p "$OUT_DIR/logs/slurm"
  N=$(tail -n +2 "$BIDS_DIR/participants.tsv" | grep -c .)
  ARRAY=$(sbatch --parsable --array="1-${N}%20" --job-name=bids-iron \
          --cpus-per-task=2 --mem=8G --time=02:00:00 \
          --output="$OUT_DIR/logs/slurm/%x_%A_%a.out" \
          --export=ALL,BIDS_DIR="$BIDS_DIR",OUT_DIR="$OUT_DIR",SIF="$SIF",LEVEL=participant "$0")
  sbatch --dependency="afterany:${ARRAY}" --job-name=bids-iron-group --cpus-per-task=2 \
         --mem=8G --time=01:00:00 --output="$OUT_DIR/logs/slurm/%x_%j.out" \
         --export=ALL,BIDS_DIR="$BIDS_DIR",OUT_DIR="$OUT_DIR",SIF="$SIF",LEVEL=group "$0"
  echo "submitted array job $ARRAY ($N participants) and the group level after it"
  exit 0
fi

# inside a job
if [ "$LEVEL" = "participant" ]; then
  LABEL=$(tail -n +2 "$BIDS_DIR/participants.tsv" | sed -n "${SLURM_ARRAY_TASK_ID}p" | cut -f1)
  ARGS=(participant --participant-label "${LABEL#sub-}" --n-procs 1)
else
  ARGS=(group)
fi
singularity run --cleanenv --containall \
  -B "$BIDS_DIR:/data:ro" -B "$OUT_DIR:/out" -B "${TMPDIR:-/tmp}:/tmp" \
  "$SIF" /data /out "${ARGS[@]}"
