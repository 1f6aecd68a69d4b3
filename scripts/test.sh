#!/usr/bin/env bash
# Install (with the test and bench extras), then run the whole test suite: fast tests + slow end-to-end
# tests with the real SmolLM2. Quick loop while developing: python -m pytest -q -m "not slow and not cli and not integration"
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=dev,bench bash scripts/install.sh
bash scripts/install-chromium.sh
exec python3 -m pytest -q "$@"
