#!/usr/bin/env bash
# One command, fresh machine to finished pyramids: makes .venv, installs igneous-like,
# generates a sample EM image + segmentation, downsamples and transfers them through a
# FileQueue with two worker processes, and prints what it made.
#   usage: scripts/demo.sh [OUTPUT_DIR]     (default: ./demo-output)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="$(mkdir -p "${1:-demo-output}" && cd "${1:-demo-output}" && pwd)"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e . 
exec .venv/bin/python scripts/demo.py "$OUT"
