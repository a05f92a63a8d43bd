#!/usr/bin/env bash
# Installs Debian's Chromium and chromedriver (packages chromium and
# chromium-driver) for the console's browser test (tests/console.rs) where they
# are missing. Never fails the run: where they cannot be installed it says why,
# and the browser test skips saying so.
#
# Usage: scripts/ensure-chromium.sh   (honours CHROMIUM, CHROMEDRIVER)
set -uo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}

log() { printf '[ensure-chromium] %s\n' "$*" >&2; }

if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  log "no apt-get here: install Chromium and chromedriver, or set CHROMIUM and CHROMEDRIVER; the browser test will be skipped"
  exit 0
fi
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else return 1
  fi
}
log "installing chromium and chromium-driver for the console's browser test"
export DEBIAN_FRONTEND=noninteractive
if as_root apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
  || { as_root apt-get update -q >/dev/null 2>&1 && as_root apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }; then
  log "installed: $("$CHROMIUM" --version 2>/dev/null)"
else
  log "could not install chromium and chromium-driver (no root, or no package registry); the browser test will be skipped"
fi
exit 0
