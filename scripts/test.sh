#!/usr/bin/env bash
# The test command: makes sure PostgreSQL and RabbitMQ are up (starting or
# installing them if needed) and that the console's browser test has Chromium
# (installing it where it can), then runs the whole test suite.
#
# Usage: scripts/test.sh [extra cargo-nextest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-services.sh
scripts/ensure-chromium.sh

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "[test] cargo-nextest is missing; installing it" >&2
  cargo install --locked cargo-nextest
fi

cargo nextest run --workspace --all-targets --profile ci "$@"
