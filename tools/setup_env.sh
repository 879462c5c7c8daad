#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with everything installed.
#   bash tools/setup_env.sh            # runtime + test dependencies
# torch is pinned to the CPU build that this workplace serves from disk; on a GPU server,
# install your CUDA build of torch first and this script leaves it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
echo "qa-scale installed in $(pwd)/.venv"
