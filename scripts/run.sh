#!/usr/bin/env bash
# The run command: makes sure PostgreSQL and RabbitMQ are up (starting or
# installing them if needed), creates the database, builds, migrates and runs
# the service in the foreground. Ctrl-C stops it cleanly.
#
# Usage: scripts/run.sh   (honours DATABASE_URL, RABBITMQ_URL and every other setting)
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL=${DATABASE_URL:-postgresql://postgres:postgres@127.0.0.1:5432/notification_scheduler}
export RABBITMQ_URL=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export HEALTH_ADDR=${HEALTH_ADDR:-127.0.0.1:8080}

scripts/ensure-services.sh
cargo build --release --locked --bin notification-scheduler
binary=target/release/notification-scheduler

"$binary" migrate
cat >&2 <<INFO
[run] daemon:   health on http://$HEALTH_ADDR/healthz and /readyz
[run] database: ${DATABASE_URL/:*@/:****@}
[run] broker:   ${RABBITMQ_URL/:*@/:****@}
INFO
exec "$binary" daemon
