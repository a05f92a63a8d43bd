#!/usr/bin/env bash
# Makes PostgreSQL and RabbitMQ reachable on this machine: starts them if they
# are installed but stopped, installs them with apt-get if they are missing
# (Debian packages postgresql and rabbitmq-server), then creates the database
# named by DATABASE_URL if it does not exist.
#
# Usage: scripts/ensure-services.sh   (honours DATABASE_URL, RABBITMQ_URL)
set -euo pipefail

DATABASE_URL=${DATABASE_URL:-postgresql://postgres:postgres@127.0.0.1:5432/notification_scheduler}
RABBITMQ_URL=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}

log() { printf '[ensure-services] %s\n' "$*" >&2; }
die() { printf '[ensure-services] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

# host and port of a URL: scheme://[user[:pass]@]host[:port][/...]
url_host() { local rest=${1#*://}; rest=${rest%%/*}; rest=${rest%%\?*}; rest=${rest##*@}; printf '%s' "${rest%%:*}"; }
url_port() {
  local rest=${1#*://}; rest=${rest%%/*}; rest=${rest%%\?*}; rest=${rest##*@}
  if [[ $rest == *:* ]]; then printf '%s' "${rest##*:}"; else printf '%s' "$2"; fi
}
url_path() { local rest=${1#*://}; rest=${rest#*/}; [[ $1 == *://*/* ]] || rest=""; printf '%s' "${rest%%\?*}"; }

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_for_port() {
  local name=$1 host=$2 port=$3 deadline=$((SECONDS + ${4:-90}))
  until port_open "$host" "$port"; do
    [ $SECONDS -lt $deadline ] || die "$name did not come up on $host:$port"
    sleep 1
  done
}

is_local() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]; }

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "$* is not installed and apt-get is not available"
  log "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  local host port
  host=$(url_host "$DATABASE_URL"); port=$(url_port "$DATABASE_URL" 5432)
  if port_open "$host" "$port"; then return; fi
  is_local "$host" || die "PostgreSQL at $host:$port is unreachable and not on this machine"
  local installed_now=false
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql
    installed_now=true
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  [ -n "$version" ] || die "no PostgreSQL cluster found under /etc/postgresql"
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for_port PostgreSQL "$host" "$port"
  if $installed_now; then
    # A fresh Debian cluster requires a password over TCP; give the postgres
    # role the one the default DATABASE_URL uses.
    as_root su postgres -c "psql -q -c \"ALTER ROLE postgres PASSWORD 'postgres'\""
  fi
}

ensure_rabbitmq() {
  local host port
  host=$(url_host "$RABBITMQ_URL"); port=$(url_port "$RABBITMQ_URL" 5672)
  if port_open "$host" "$port"; then return; fi
  is_local "$host" || die "RabbitMQ at $host:$port is unreachable and not on this machine"
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  log "starting RabbitMQ"
  as_root rabbitmq-server -detached || true
  wait_for_port RabbitMQ "$host" "$port" 120
}

ensure_database() {
  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
  local database admin_url
  database=$(url_path "$DATABASE_URL")
  [ -n "$database" ] || return 0
  admin_url=${DATABASE_URL%/*}/postgres
  local deadline=$((SECONDS + 30))
  until psql "$admin_url" -Atqc 'SELECT 1' >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "PostgreSQL accepts connections but not logins with DATABASE_URL's credentials"
    sleep 1
  done
  if [ "$(psql "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$database'")" != 1 ]; then
    log "creating database $database"
    psql "$admin_url" -qc "CREATE DATABASE \"$database\""
  fi
}

ensure_postgres
ensure_rabbitmq
ensure_database
log "PostgreSQL and RabbitMQ are up"
