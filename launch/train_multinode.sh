#!/usr/bin/env bash
# Fine-tune across servers with a DeepSpeed hostfile ("host slots=N" per line; "#" comments and blank
# lines are skipped, as DeepSpeed does); run on the first host listed, which must reach the others by
# passwordless ssh, with the project installed at the same path and output_dir/cache on shared storage.
#   bash launch/train_multinode.sh HOSTFILE RECIPE [section.key=value ...]
#   bash launch/train_multinode.sh hostfile launch/recipes/roberta_wwm_large_cmrc.yaml run.output_dir=/shared/runs/r1
# DeepSpeed starts the remote ranks with pdsh (its default multi-node runner: install pdsh on this host;
# DEEPSPEED_LAUNCHER=openmpi|mvapich|... passes --launcher instead). Remote ranks get only the variables
# DeepSpeed forwards (PYTHON*, NCCL_* on CUDA) and those of a .deepspeed_env file (~/ and ./, KEY=VALUE a
# line). This script adds this shell's HF_* and NCCL_* variables (HF_HOME, HF_HUB_OFFLINE, NCCL_SOCKET_IFNAME,
# ...) to those files' lines in a temporary env file (DS_ENV_FILE). Tokens (HF_TOKEN) are left out: pdsh
# puts exports on the remote command line, visible to `ps`; give them to the nodes some other way.
# MASTER_ADDR overrides the first host as the rendezvous address, MASTER_PORT the port (29500).
set -euo pipefail
hostfile=${1:?usage: launch/train_multinode.sh HOSTFILE RECIPE [overrides...]}
recipe=${2:?usage: launch/train_multinode.sh HOSTFILE RECIPE [overrides...]}
shift 2
[[ -f $hostfile ]] || { echo "no hostfile $hostfile" >&2; exit 2; }
first=$(awk '{ sub(/^[ \t]+/, "") } /^#/ || NF == 0 { next } { print $1; exit }' "$hostfile")
master=${MASTER_ADDR:-${first:?"$hostfile lists no host"}}

env_file=$(mktemp "${TMPDIR:-/tmp}/qa-scale-deepspeed-env.XXXXXX")
trap 'rm -f "$env_file"' EXIT
name=${DS_ENV_FILE:-.deepspeed_env}
[[ $name == /* ]] && sources=("$name") || sources=("$HOME/$name" "./$name")
for existing in "${sources[@]}"; do
    # DeepSpeed splits every line at "="; comments and blank lines would stop it
    [[ -f $existing ]] && grep -E '^[^#=[:space:]][^=]*=' "$existing" >> "$env_file" || true
done
for name in $(compgen -e | grep -E '^(HF|NCCL)_' | grep -vE '^HF_(HUB_)?TOKEN$' || true); do
    value=${!name}
    [[ $value == *$'\n'* ]] || printf '%s=%s\n' "$name" "$value" >> "$env_file"
done
# An absolute DS_ENV_FILE: DeepSpeed joins it to ~ and . and so reads this one file (both times).
DS_ENV_FILE=$env_file deepspeed --hostfile "$hostfile" --master_addr "$master" \
    --master_port "${MASTER_PORT:-29500}" ${DEEPSPEED_LAUNCHER:+--launcher "$DEEPSPEED_LAUNCHER"} \
    "$(command -v qa-scale)" train "$recipe" "$@"
