#!/usr/bin/env bash
# Create .venv and install the package with its test dependencies.
# torch is installed first and pinned (the CPU build here; set LDM_TORCH_SPEC to choose another),
# so that pip never pulls a different torch build; torchvision is never installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${LDM_TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
if .venv/bin/python -c "import torchvision" 2>/dev/null; then
  echo "error: torchvision is importable in .venv; this project must not depend on it" >&2
  exit 1
fi
