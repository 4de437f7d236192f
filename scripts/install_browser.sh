#!/usr/bin/env bash
# Install Debian's chromium for the playground's browser tests (driven by Playwright's Python
# client with this system browser; `playwright install` is never used: it downloads browsers).
# Exits 0 when chromium is on PATH afterwards, non-zero (saying why) when it cannot be installed.
set -uo pipefail
have_chromium() { command -v chromium >/dev/null 2>&1; }
have_font() { fc-list 2>/dev/null | grep -q .; }  # without one, screenshots show no text
if have_chromium && have_font; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  if have_chromium; then
    echo "install_browser: no fonts installed and no way to add them (needs root and apt-get)" >&2
    exit 0
  fi
  echo "install_browser: chromium is missing and cannot be installed here (needs root and apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
if ! have_chromium; then
  echo "install_browser: apt-get could not install chromium" >&2
  exit 1
fi
echo "install_browser: $(chromium --version 2>/dev/null)"
