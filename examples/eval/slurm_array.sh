#!/usr/bin/env bash
# Spread one `mapga eval` over a SLURM job array: 8 tasks, each running 1/8 of the suite's cells
# into its own folder, then one merge step that combines them into the tables of the whole grid.
#
#   sbatch examples/eval/slurm_array.sh                       # the 8 shards
#   sbatch --dependency=afterany:<array job id> \
#          --wrap 'mapga eval --merge runs/eval/all runs/eval/shard-*'   # then the merge
#
# Shard K of N takes the cells whose index i (in the suite's order) has i % N == K - 1, so the
# 8 tasks cover every cell exactly once. Each task is resumable on its own: if SLURM preempts or
# requeues it, the rerun reuses the cells it finished (their cell.json) and runs the rest. A
# task exits 1 when one of its cells failed (a diverging solver); the failure is recorded in
# the tables and retried by the next run. `--merge` can also run while shards are still going:
# it combines what is finished so far. On a shared file system the tasks may instead all use
# one `--out` folder: each cell has its own subfolder, and every task rewrites the tables
# (atomically) from all the cells finished there, whichever task made them.
#
# Kubernetes: an Indexed Job (`completionMode: Indexed`, `completions: 8`) gives each pod its
# index in JOB_COMPLETION_INDEX, counted from 0:
#   mapga eval SUITE --shard $((JOB_COMPLETION_INDEX + 1))/8 --out /data/eval/shard-$JOB_COMPLETION_INDEX

#SBATCH --job-name=mapga-eval
#SBATCH --array=1-8
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --output=runs/eval/logs/shard-%a.out
# On a GPU partition, also: #SBATCH --gres=gpu:1 and `--device cuda` below (a CUDA build).

set -euo pipefail

SUITE=${SUITE:-examples/07_evaluate.mapga}   # the suite file: a pipeline with `grid` items
SHARDS=8                                      # keep equal to the size of --array
ID=${SLURM_ARRAY_TASK_ID:?run this script with sbatch --array}

mkdir -p runs/eval/logs
# Every task checks every cell first (cheap), so a mistake in any cell stops all of them
# before they spend compute. The same --seed everywhere gives the same results as one run.
mapga eval "$SUITE" --shard "$ID/$SHARDS" --out "runs/eval/shard-$ID" --seed 0 \
    --threads "${SLURM_CPUS_PER_TASK:-4}"

# Then, once all tasks have finished (the sbatch --dependency line above):
#   mapga eval --merge runs/eval/all runs/eval/shard-*
# writes runs/eval/all/{results.csv,summary.md,figure.png} from every shard's finished cells.
