#!/usr/bin/env bash
# Headless Chromium and chromedriver (Debian's packages; the studio test drives it with Selenium) for the browser tests, where apt can install it without a password:
# as root, or with passwordless sudo. Anywhere else it says why and the browser tests skip with that reason.
# Never fails the caller: the browser is for tests only.
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: no apt-get here; browser tests will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-chromium: not root and no passwordless sudo; browser tests will be skipped" >&2
    exit 0
  fi
fi
$SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
  || echo "install-chromium: apt-get install chromium failed; browser tests will be skipped" >&2
exit 0
