#!/usr/bin/env bash
# LoRA vs full fine-tuning of MacBERT-large on HW7: same backbone, data, seed and global batch;
# each run under the deepspeed launcher; a Markdown + JSON table and a PNG chart in OUT.
#   bash launch/compare_lora_hw7.sh NUM_GPUS [OUT] [section.key=value ...]   (overrides apply to both runs)
# Finished runs in OUT are reused and unfinished ones resumed, so an interrupted comparison continues.
set -euo pipefail
gpus=${1:?usage: launch/compare_lora_hw7.sh NUM_GPUS [OUT] [overrides...]}
out=${2:-runs/compare_lora_hw7}
shift $(( $# >= 2 ? 2 : 1 ))
exec qa-scale compare launch/recipes/macbert_large_hw7.yaml "$@" --out "$out" \
  --launcher "deepspeed --num_gpus $gpus" --lora-set optim.lr=3e-4
