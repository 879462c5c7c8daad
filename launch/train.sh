#!/usr/bin/env bash
# Fine-tune on one node with the deepspeed launcher.
#   bash launch/train.sh RECIPE NUM_GPUS [section.key=value ...]
#   bash launch/train.sh launch/recipes/macbert_large_hw7.yaml 8 run.seed=7 run.output_dir=runs/macbert_s7
# On a machine without GPUs the same command starts NUM_GPUS CPU ranks (gloo).
set -euo pipefail
recipe=${1:?usage: launch/train.sh RECIPE NUM_GPUS [overrides...]}
gpus=${2:?usage: launch/train.sh RECIPE NUM_GPUS [overrides...]}
shift 2
exec deepspeed --num_gpus "$gpus" "$(command -v qa-scale)" train "$recipe" "$@"
