#!/usr/bin/env bash
# Create (or refresh) a separate virtual environment with transformers 4.x, for the Hugging Face
# question-answering pipeline side of bench/bench_long_paragraph.py (transformers 5 removed it).
#   bash tools/bench_tf4_env.sh                 # -> /tmp/tf4venv
#   bash tools/bench_tf4_env.sh /some/dir       # elsewhere
#   TF4_VERSION=4.57.6 bash tools/bench_tf4_env.sh   # pin the 4.x release (default: latest <5)
# torch: the same version as the project's .venv (CPU build). First as tools/setup_env.sh does it
# (the exact version through pip's configured indexes / find-links, where this workplace serves the
# CPU wheel from disk), then from the PyTorch CPU index, then whatever PyPI resolves for that version.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/tf4venv}
PYTHON=${PYTHON:-python3}
TF4=${TF4_VERSION:+==$TF4_VERSION}
TF4=${TF4:-<5}
[ -x .venv/bin/python ] || { echo "no .venv here: run tools/setup_env.sh first" >&2; exit 1; }
TORCH=$(.venv/bin/python -c "import torch; print(torch.__version__)")   # e.g. 2.13.0+cpu
BASE=${TORCH%%+*}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
if "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__ != '$TORCH')" 2>/dev/null; then
    echo "torch $TORCH already in $VENV"
elif "${PIP[@]}" install -q "torch==$TORCH" 2>/dev/null || "${PIP[@]}" install -q "torch==$BASE" --no-index 2>/dev/null; then
    echo "torch from pip's configured indexes / find-links"
elif "${PIP[@]}" install -q --timeout 20 --retries 1 "torch==$BASE" --index-url https://download.pytorch.org/whl/cpu; then
    echo "torch from the PyTorch CPU index"
else
    echo "PyTorch CPU index not reachable: torch==$BASE as PyPI resolves it" >&2
    "${PIP[@]}" install -q "torch==$BASE"
fi
# numpy is a dependency of transformers; the pipeline needs nothing beyond transformers + torch.
"${PIP[@]}" install -q "transformers$TF4"
"$VENV/bin/python" - <<'EOF'
import torch, transformers, tokenizers
assert transformers.__version__.startswith("4."), transformers.__version__
from transformers import pipeline  # noqa: F401  the question-answering pipeline exists in 4.x
print(f"{__import__('sys').prefix}: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"tokenizers {tokenizers.__version__}")
EOF
