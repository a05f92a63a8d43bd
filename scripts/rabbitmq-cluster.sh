#!/usr/bin/env bash
# A throwaway RabbitMQ cluster on this machine, for the benchmark and for
# trying the daemon against a cluster by hand (the test suite starts its own,
# tests/common/private_rabbit.rs, the same way).
#
#   scripts/rabbitmq-cluster.sh start [NODES]   # default 3; prints RABBITMQ_URL
#   scripts/rabbitmq-cluster.sh stop            # kills the nodes, removes the data
#
# Nodes are bench-<n>@localhost on AMQP ports 5701.. and distribution ports
# 25701.., with their data, logs and a shared Erlang cookie under
# $CLUSTER_DIR (default /tmp/ns-rabbitmq-cluster), none of the machine's
# RabbitMQ configuration, and no plugins. The machine's own node is untouched.
set -euo pipefail

CLUSTER_DIR=${CLUSTER_DIR:-/tmp/ns-rabbitmq-cluster}
BIN=/usr/lib/rabbitmq/bin
[ -x "$BIN/rabbitmq-server" ] || BIN=$(dirname "$(command -v rabbitmq-server)")

node_env() {
  local n=$1 dir=$CLUSTER_DIR/node-$1
  shift
  # The Debian wrappers in /usr/sbin switch to the rabbitmq user and its
  # cookie, hence the scripts of /usr/lib/rabbitmq/bin and a HOME of our own.
  env -i PATH="$PATH" LANG=C.UTF-8 HOME="$CLUSTER_DIR/home" \
    RABBITMQ_NODENAME="bench-$n@localhost" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=$((5700 + n)) \
    RABBITMQ_DIST_PORT=$((25700 + n)) \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$CLUSTER_DIR/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
    RABBITMQ_CONF_ENV_FILE="$CLUSTER_DIR/rabbitmq-env.conf" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    "$@"
}

ctl() {
  local n=$1
  shift
  node_env "$n" "$BIN/rabbitmqctl" -n "bench-$n@localhost" "$@"
}

start() {
  local nodes=${1:-3}
  if [ -e "$CLUSTER_DIR" ]; then
    echo "$CLUSTER_DIR exists: stop the running cluster first ($0 stop)" >&2
    exit 1
  fi
  mkdir -p "$CLUSTER_DIR/home"
  echo '[].' >"$CLUSTER_DIR/enabled_plugins"
  : >"$CLUSTER_DIR/rabbitmq-env.conf"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F >"$CLUSTER_DIR/home/.erlang.cookie"
  chmod 400 "$CLUSTER_DIR/home/.erlang.cookie"
  for n in $(seq 1 "$nodes"); do
    local dir=$CLUSTER_DIR/node-$n
    mkdir -p "$dir/mnesia" "$dir/log"
    printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users.guest = true\ndisk_free_limit.absolute = 1MB\n' \
      $((5700 + n)) >"$dir/rabbitmq.conf"
    node_env "$n" setsid "$BIN/rabbitmq-server" >"$dir/server.out" 2>&1 &
    echo $! >"$dir/pid"
  done
  for n in $(seq 1 "$nodes"); do
    ctl "$n" await_startup --timeout 60 >/dev/null
  done
  for n in $(seq 2 "$nodes"); do
    ctl "$n" stop_app >/dev/null
    ctl "$n" join_cluster bench-1@localhost >/dev/null
    ctl "$n" start_app >/dev/null
  done
  local urls=()
  for n in $(seq 1 "$nodes"); do
    urls+=("amqp://guest:guest@127.0.0.1:$((5700 + n))/%2f")
  done
  echo "cluster of $nodes nodes running; stop it with: $0 stop" >&2
  (
    IFS=,
    echo "RABBITMQ_URL=${urls[*]}"
  )
}

stop() {
  [ -d "$CLUSTER_DIR" ] || return 0
  for pidfile in "$CLUSTER_DIR"/node-*/pid; do
    [ -f "$pidfile" ] || continue
    # setsid made each node the leader of its own process group.
    kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$CLUSTER_DIR"
}

case ${1:-} in
  start) start "${2:-3}" ;;
  stop) stop ;;
  *)
    echo "usage: $0 start [NODES] | stop" >&2
    exit 2
    ;;
esac
