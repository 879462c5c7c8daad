#!/usr/bin/env bash
# The one-GPU check (about 5 minutes on one H100/H200, no hub):
#   bash bench/gpu_check.sh                 # MacBERT-large shape on the GPU → bench/results/gpu_<device>.json
#   bash bench/gpu_check.sh --dry-run --out /tmp/dry   # the same path on the CPU, tiny shape (CI runs this)
# The lent GPU machine has torch, transformers, peft and accelerate but no deepspeed or datasets and no
# registry: their wheels (../shared/gpu-wheels, copied into the carried folder .gpu/ with the
# vocabulary as .gpu/vocab.txt) are installed into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
wheels=${GPU_WHEELS:-.gpu}
[ -d "$wheels" ] || wheels=../shared/gpu-wheels
if ! "$python" -c "import deepspeed, datasets" 2>/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
vocab=../shared/data/bert-base-chinese-vocab.txt
[ -f .gpu/vocab.txt ] && vocab=.gpu/vocab.txt
exec "$python" bench/gpu_check.py --vocab "$vocab" "$@"
