#!/usr/bin/env bash
# The one-GPU rehearsal (≤ 9 minutes on one H200, no hub; stages and JSON: bench/gpu_check.py):
#   bash bench/gpu_check.sh --out "$OUT"               # on the GPU machine → OUT/gpu_<device>.json
#   bash bench/gpu_check.sh --dry-run --out /tmp/dry   # the same stages on the CPU, tiny shape (CI runs this)
# The lent GPU machine has torch, transformers, peft and accelerate but no deepspeed, datasets or nltk
# and no registry. Their wheels (../shared/gpu-wheels) and the vocabulary travel in the ignored folder
# .whl/ (name it in the device tool's carry):
#   mkdir -p .whl && cp ../shared/gpu-wheels/*.whl .whl/ && cp ../shared/data/bert-base-chinese-vocab.txt .whl/vocab.txt
# and are installed into /tmp/site here when python cannot import them.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
wheels=${GPU_WHEELS:-.whl}
[ -d "$wheels" ] || wheels=.gpu                   # the folder's earlier name
[ -d "$wheels" ] || wheels=../shared/gpu-wheels
if ! "$python" -c "import deepspeed, datasets, nltk" 2>/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
vocab=../shared/data/bert-base-chinese-vocab.txt
for v in .whl/vocab.txt .gpu/vocab.txt; do [ -f "$v" ] && vocab=$v && break; done
exec "$python" bench/gpu_check.py --vocab "$vocab" "$@"
