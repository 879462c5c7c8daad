#!/usr/bin/env bash
# Fine-tune across servers with a DeepSpeed hostfile ("host slots=N" per line); run on the first host,
# which must reach the others by passwordless ssh, with the project installed at the same path.
#   bash launch/train_multinode.sh HOSTFILE RECIPE [section.key=value ...]
#   bash launch/train_multinode.sh hostfile launch/recipes/roberta_wwm_large_cmrc.yaml run.output_dir=/shared/runs/r1
set -euo pipefail
hostfile=${1:?usage: launch/train_multinode.sh HOSTFILE RECIPE [overrides...]}
recipe=${2:?usage: launch/train_multinode.sh HOSTFILE RECIPE [overrides...]}
shift 2
master=${MASTER_ADDR:-$(head -n1 "$hostfile" | awk '{print $1}')}
exec deepspeed --hostfile "$hostfile" --master_addr "$master" --master_port "${MASTER_PORT:-29500}" \
    "$(command -v qa-scale)" train "$recipe" "$@"
