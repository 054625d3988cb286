#!/usr/bin/env sh
# Every stage of train/train_mnist.py in order, each as its own process (so a stage can be
# rerun alone); the same as `python train/train_mnist.py --seed SEED`. Extra flags pass through.
set -eu
PY=${PYTHON:-python3}
for stage in classifier denoiser cm export; do
    "$PY" "$(dirname "$0")/train_mnist.py" --stage "$stage" "$@"
done
