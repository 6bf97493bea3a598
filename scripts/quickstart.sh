#!/usr/bin/env bash
# The README's first command: set up .venv from nothing, then run the quickstart
# (train an autoencoder and a text-to-image LDM on the built-in scenes, sample, measure, report).
# Usage: bash scripts/quickstart.sh [--tiny] [--outdir DIR] [--minutes M]   (arguments go to scripts/quickstart.py)
# Uses the GPU when CUDA is there (set LDM_TORCH_SPEC for the torch build of your machine).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
echo "==> installing into .venv (scripts/setup_env.sh)"
bash scripts/setup_env.sh
installed=$(date +%s)
echo "    installation took $((installed - start)) s"
.venv/bin/python scripts/quickstart.py "$@"
echo "installation: $((installed - start)) s, quickstart: $(( $(date +%s) - installed )) s"
