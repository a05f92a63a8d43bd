#!/usr/bin/env bash
# The run command: makes sure PostgreSQL and RabbitMQ are up (starting or
# installing them if needed), creates the database, builds, migrates, then
# runs the delivery daemon and the games API together in the foreground.
# Ctrl-C (or SIGTERM) stops both cleanly; if either exits, the other is
# stopped too and the script exits with the first one's status.
#
# Usage: scripts/run.sh   (honours DATABASE_URL, RABBITMQ_URL, API_TOKEN,
#                          API_ADDR, HEALTH_ADDR and every other setting)
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL=${DATABASE_URL:-postgresql://postgres:postgres@127.0.0.1:5432/notification_scheduler}
default_rabbitmq_url=amqp://guest:guest@127.0.0.1:5672/%2f
export RABBITMQ_URL=${RABBITMQ_URL:-$default_rabbitmq_url}
export HEALTH_ADDR=${HEALTH_ADDR:-127.0.0.1:8080}
export API_ADDR=${API_ADDR:-127.0.0.1:8000}
if [ -z "${API_TOKEN:-}" ]; then
  # A fresh development token per run; set API_TOKEN to keep one.
  API_TOKEN="dev-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  export API_TOKEN
fi

log() { printf '[run] %s\n' "$*" >&2; }
# user:password@ → user:****@
masked() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:****@#' <<<"$1"; }

scripts/ensure-services.sh
cargo build --release --locked --bin notification-scheduler
binary=target/release/notification-scheduler
"$binary" migrate

"$binary" daemon &
daemon=$!
"$binary" api &
api=$!

stop() {
  trap - INT TERM
  kill -TERM "$daemon" "$api" 2>/dev/null || true
  wait "$daemon" "$api" 2>/dev/null || true
}
# Ctrl-C reaches both children through the terminal's process group; this
# covers SIGTERM to the script and makes sure both are gone before it exits.
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM

for _ in $(seq 1 150); do
  if "$binary" healthcheck --health-addr "$HEALTH_ADDR" --path /readyz 2>/dev/null &&
     "$binary" healthcheck --health-addr "$API_ADDR" --path /readyz 2>/dev/null; then
    break
  fi
  kill -0 "$daemon" 2>/dev/null && kill -0 "$api" 2>/dev/null || break
  sleep 0.2
done

api_url="http://${API_ADDR/0.0.0.0/127.0.0.1}"
if [ "$RABBITMQ_URL" = "$default_rabbitmq_url" ]; then
  watch_command="RABBITMQ_URL='$RABBITMQ_URL' $binary watch"
else
  # Never print a password the user chose; their shell has the URL.
  watch_command="$binary watch   # with your RABBITMQ_URL exported"
fi
cat >&2 <<INFO

[run] daemon:   health on http://$HEALTH_ADDR/healthz and /readyz
[run] API:      $api_url   (OpenAPI document: $api_url/openapi.json)
[run] token:    $API_TOKEN
[run] database: $(masked "$DATABASE_URL")
[run] broker:   $(masked "$RABBITMQ_URL")

Schedule a game starting in 90 seconds whose 1-minute reminder fires about 30
seconds after you paste this:

  curl -sS -X POST $api_url/games \\
    -H 'Authorization: Bearer $API_TOKEN' -H 'Content-Type: application/json' \\
    -d '{"title": "Demo session", "reminder_minutes": [1], "scheduled_at": "'"\$(date -u -d '+90 seconds' +%Y-%m-%dT%H:%M:%SZ)"'"}'

Watch the events arrive (in another terminal, from this directory):

  $watch_command

Ctrl-C stops the daemon and the API.
INFO

status=0
wait -n "$daemon" "$api" || status=$?
log "a process exited (status $status); stopping the other"
stop
exit "$status"
