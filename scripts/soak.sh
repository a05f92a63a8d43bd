#!/usr/bin/env bash
# The soak (issue 8): about ten minutes of a steady 200 reminders per second
# through the daemon (release build, a separate process), with every
# connection cut once a minute (PostgreSQL, RabbitMQ, both, in turn). Fails on
# any lost or early reminder, duplicates beyond the documented window, growing
# resident memory or an unclean exit. Not part of scripts/test.sh.
#
# Usage: scripts/soak.sh
#   SOAK_SECONDS      length of the load (default 600)
#   SOAK_RATE         reminders per second (default 200)
#   SOAK_CUT_SECONDS  period of the connection cuts (default 60; 0: none)
#   SOAK_DIRECT=1     control run: the daemon connects directly, no cuts
#
# Prints a summary table; writes target/soak/soak.json and the daemon's log
# to target/soak/daemon.log.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-services.sh

# A release build of the test, so that the daemon it starts
# (CARGO_BIN_EXE_notification-scheduler) is the release binary.
exec cargo test --release --test soak -- --ignored --nocapture --test-threads 1
