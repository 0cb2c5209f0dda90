#!/usr/bin/env bash
# One command runs the test suite on a fresh machine: makes .venv, installs igneous-like with
# its test extras (pytest, tensorstore, trimesh, moto), runs pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
exec .venv/bin/python -m pytest "$@"
