#!/usr/bin/env bash
# Install, then run the whole test suite (fast tests + slow end-to-end tests with the real SmolLM2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec python3 -m pytest -q "$@"
