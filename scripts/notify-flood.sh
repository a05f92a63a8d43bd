#!/usr/bin/env bash
# Memory of the daemon under a flood of change notifications: starts a release
# daemon on a database of its own, sends N single-statement NOTIFYs from 4
# pgbench clients, and prints the daemon's RSS before, at its peak and after
# (docs/BENCHMARKS.md, "Notification flood").
#
# Usage: scripts/notify-flood.sh [N=1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-1000000}"
scripts/ensure-services.sh
cargo build --release -q -p notification-scheduler
binary=target/release/notification-scheduler
server="${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
database="flood_$$"
psql -q "$server" -c "CREATE DATABASE $database"
url="${server%/*}/$database"
work="$(mktemp -d)"
cleanup() {
  [[ -n "${daemon:-}" ]] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  psql -q "$server" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT
DATABASE_URL="$url" "$binary" --log-level warn migrate
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DATABASE_URL="$url" RABBITMQ_URL="${TEST_RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}" \
  RABBITMQ_EXCHANGE="flood.$$" HEALTH_ADDR="127.0.0.1:$port" LOG_LEVEL=warn \
  "$binary" daemon &
daemon=$!
until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.2; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$daemon/status"; }
before=$(rss)
# Distinct payloads (PostgreSQL folds identical ones within a transaction),
# all later than anything pending: no hint by itself calls for a round.
cat > "$work/notify.sql" <<'SQL'
SELECT pg_notify('notification_schedule_changed',
  json_build_object('operation', 'INSERT',
                    'earliest_notification_time', now() + interval '1 day' + random() * interval '1 day')::text);
SQL
peak=$before
( while kill -0 "$daemon" 2>/dev/null; do r=$(rss); echo "$r"; sleep 0.2; done ) > "$work/rss" &
sampler=$!
start=$(date +%s.%N)
pgbench -n -c 4 -j 2 -t $((count / 4)) -f "$work/notify.sql" "$url" > "$work/pgbench" 2>&1
end=$(date +%s.%N)
sleep 2
after=$(rss)
kill "$sampler" 2>/dev/null || true
peak=$(sort -n "$work/rss" | tail -1)
echo "notifications: $count in $(python3 -c "print(round($end - $start, 1))") s"
echo "daemon RSS KiB: before $before, peak $peak, after $after"
curl -fs "http://127.0.0.1:$port/healthz"; echo
