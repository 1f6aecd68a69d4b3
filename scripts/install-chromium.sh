#!/usr/bin/env bash
# Install headless Chromium (Debian's package) for the report screenshot test; does nothing if present.
# Idempotent: CI calls it on every run; only apt is used, nothing else is downloaded.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
