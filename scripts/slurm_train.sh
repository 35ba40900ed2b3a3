#!/bin/bash
# Data-parallel MemSeg training (or the MVTec AD reproduction) on a SLURM cluster with torchrun.
#
#   sbatch scripts/slurm_train.sh                          # one category, 2 nodes x 4 GPUs
#   sbatch --export=ALL,JOB=reproduce scripts/slurm_train.sh   # all categories, a share per GPU
#
# One torchrun per node (srun --ntasks-per-node=1); torchrun starts one worker per GPU and the
# workers meet at the rendezvous on the first node (c10d, port 29500). The run folder and the
# data must be on a file system every node sees: rank 0 writes the run folder, and a resumed
# run reads its checkpoint on every rank. Resubmitting the same script resumes (--resume is
# added when a checkpoint exists); SLURM's SIGTERM before a time limit saves a checkpoint first
# (--signal asks SLURM to send it 120 s early).
#
#SBATCH --job-name=memseg
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=04:00:00
#SBATCH --signal=TERM@120
#SBATCH --output=slurm-%x-%j.out

set -euo pipefail

JOB=${JOB:-train}                       # train | reproduce
DATA_ROOT=${DATA_ROOT:-data/mvtec}
CATEGORY=${CATEGORY:-bottle}
OUT=${OUT:-runs/${CATEGORY}}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
PYTHON=${PYTHON:-.venv/bin/python}

HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=$(( ${SLURM_CPUS_PER_TASK:-$GPUS_PER_NODE} / GPUS_PER_NODE ))

LAUNCH=(-m torch.distributed.run
        --nnodes="$SLURM_JOB_NUM_NODES" --nproc_per_node="$GPUS_PER_NODE"
        --rdzv-backend=c10d --rdzv-endpoint="${HEAD_NODE}:29500" --rdzv-id="$SLURM_JOB_ID")

if [ "$JOB" = "reproduce" ]; then
    # Each rank trains and evaluates categories rank, rank + W, ...; rank 0 writes the table.
    srun "$PYTHON" "${LAUNCH[@]}" -m memseg_lite.cli reproduce \
        --data-root "$DATA_ROOT" --out "${OUT_REPRODUCE:-runs/reproduce}" --device cuda
else
    RESUME=()
    if [ -f "$OUT/checkpoint.pt" ]; then RESUME=(--resume); fi
    # --batch-size is the global batch (8 = 1 per GPU here); it must divide by the number of GPUs.
    srun "$PYTHON" "${LAUNCH[@]}" -m memseg_lite.cli train \
        --data-root "$DATA_ROOT" --category "$CATEGORY" --out "$OUT" \
        --device cuda --batch-size "${BATCH_SIZE:-8}" --steps "${STEPS:-5000}" --sync-batchnorm \
        --no-progress "${RESUME[@]}"
fi
