#!/usr/bin/env bash
# The image test: builds the container image from the unchanged
# docker/Dockerfile with podman and runs it against this machine's PostgreSQL
# and RabbitMQ (host network) the way production does:
#
#   1. `migrate`, then the daemon, as the image's own non-root user, with a
#      read-only root filesystem and no capabilities;
#   2. the image's HEALTHCHECK reports healthy, and a reminder written to the
#      table is delivered (the image's own `watch` command consumes);
#   3. `podman stop` (SIGTERM) while batches are in flight: exit 0 within
#      SHUTDOWN_GRACE, and what was published is exactly what is marked sent;
#   4. a daemon under a restart policy is killed with SIGKILL while batches are
#      in flight: the container comes back, and everything, including what
#      fell due while it was dead, is delivered;
#   5. the `api` command answers /healthz and creates a game whose reminder the
#      daemon delivers, and its console logs in and renders the overview.
# It prints the image size, the time from `podman run` to healthy and the
# daemon's resident memory (docs/deployment.md, "The image test").
#
# Usage: scripts/image-test.sh      (honours DATABASE_URL, RABBITMQ_URL)
#
# No image registry is needed. The Dockerfile's base images are looked up in
# podman's storage; missing ones are made once and kept there (the cache):
#   debian:bookworm-slim        debootstrap --variant=minbase bookworm, imported
#   rust:<v>-slim-bookworm      that image plus gcc, libc6-dev, ca-certificates,
#                               this machine's Rust <v> toolchain and its local
#                               certificate authorities (so cargo reaches the
#                               package registry as this machine does)
# These stand-ins are larger than the official images, so the image size
# printed is an upper bound. With IMAGE_TEST_PULL=1 the official images are
# pulled instead. `podman rmi` them to make them again.
#
# Settings (environment):
#   IMAGE_TEST_PULL=1          pull the official base images instead of making stand-ins
#   IMAGE_TEST_NO_APT=1        do not install missing tools with apt-get
#   IMAGE_TEST_DEBIAN_MIRROR   mirror for debootstrap (http://deb.debian.org/debian)
#   IMAGE_TEST_STATE_DIR       where podman's configuration for this test is kept
#                              (/var/lib/notification-scheduler-image-test)
#   IMAGE_TEST_KEEP=1          leave this run's containers, database, vhost and
#                              files in place, for a look after a failure
#
# Exit status: 0 when every check passed, or when this machine cannot run
# containers with podman (said clearly, so CI elsewhere is not broken);
# 1 on any other failure.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[image-test] %s\n' "$*" >&2; }
die() { printf '[image-test] FAIL: %s\n' "$*" >&2; exit 1; }
# This machine cannot run containers: not a failure of the project.
cannot() {
  printf '[image-test] SKIP: %s\n' "$*" >&2
  printf '[image-test] the image was not built or run on this machine; nothing was checked\n' >&2
  exit 0
}

# --------------------------------------------------------------- root ---
# Rootful podman: debootstrap needs root anyway, and rootless podman needs
# subordinate ids and user namespaces that build machines often lack.
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    log "re-running as root with sudo"
    exec sudo -n --preserve-env=DATABASE_URL,RABBITMQ_URL,IMAGE_TEST_PULL,IMAGE_TEST_NO_APT,IMAGE_TEST_DEBIAN_MIRROR,IMAGE_TEST_STATE_DIR,IMAGE_TEST_TOOLCHAIN \
      env IMAGE_TEST_TOOLCHAIN="${IMAGE_TEST_TOOLCHAIN:-$(rustc --print sysroot 2>/dev/null || true)}" \
      PATH="$PATH" "$0" "$@"
  fi
  cannot "podman needs root here (or passwordless sudo), and this user has neither"
fi

DATABASE_URL=${DATABASE_URL:-postgresql://postgres:postgres@127.0.0.1:5432/notification_scheduler}
RABBITMQ_URL=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
state_dir=${IMAGE_TEST_STATE_DIR:-/var/lib/notification-scheduler-image-test}
mirror=${IMAGE_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
image=localhost/notification-scheduler:image-test
builder_image=localhost/notification-scheduler:image-test-builder
run_id=$(date +%s)-$$
label=org.notification-scheduler.image-test

tmp=$(mktemp -d /var/tmp/image-test.XXXXXX)

# ------------------------------------------------------------- tools ---
apt_install() { # packages...
  [ "${IMAGE_TEST_NO_APT:-0}" != 1 ] || return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  log "installing $* with apt-get (one time)"
  if ! timeout 300 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >"$tmp/apt.log" 2>&1; then
    timeout 120 env DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$tmp/apt.log" 2>&1 || return 1
    timeout 300 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$tmp/apt.log" 2>&1 || return 1
  fi
}

missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
# runc: crun (podman's default where installed) refuses cgroup layouts such
# as this machine's (cgroup v1 with a named systemd hierarchy).
command -v runc >/dev/null 2>&1 || missing+=(runc)
if [ "${IMAGE_TEST_PULL:-0}" != 1 ]; then
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
fi
if [ "${#missing[@]}" -gt 0 ] && ! apt_install "${missing[@]}"; then
  cannot "${missing[*]} missing and could not be installed with apt-get"
fi

# ------------------------------------------------------ podman config ---
# A containers.conf of our own (CONTAINERS_CONF), so the machine's podman
# configuration is not touched. default_ulimits = []: podman's default raises
# the open-files limit, which a container may not do on machines that cap it
# (runc then fails with "error setting rlimits"). The limits are inherited.
mkdir -p "$state_dir"
cat >"$state_dir/containers.conf" <<'EOF'
# Written by scripts/image-test.sh (notification-scheduler); used only through
# CONTAINERS_CONF by that script.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$state_dir/containers.conf

# ------------------------------------------------------------ cleanup ---
# Everything this run makes is removed on exit, however it ends: its
# containers (found by label), its database, its RabbitMQ vhost (which takes
# the exchange and the queues with it) and its temporary files. The base
# images and the build cache are kept on purpose.
db_name=""
vhost=""
admin_url=${DATABASE_URL%/*}/postgres
cleanup() {
  local status=$?
  set +e
  if [ "${IMAGE_TEST_KEEP:-0}" = 1 ]; then
    log "IMAGE_TEST_KEEP=1: keeping containers (label $label=$run_id), database $db_name, vhost $vhost, $tmp"
    exit "$status"
  fi
  local ids
  ids=$(podman ps -a -q --filter "label=$label=$run_id" 2>/dev/null)
  if [ -n "$ids" ]; then
    if [ "$status" -ne 0 ]; then
      for id in $ids; do
        log "last log lines of $(podman inspect --format '{{.Name}}' "$id" 2>/dev/null):"
        podman logs --tail 25 "$id" 2>&1 | sed 's/^/    /' >&2
      done
    fi
    # shellcheck disable=SC2086 # one id per word
    timeout 60 podman rm -f -t 0 $ids >/dev/null 2>&1
  fi
  if [ -n "$db_name" ]; then
    timeout 30 psql "$admin_url" -qc "DROP DATABASE IF EXISTS \"$db_name\" WITH (FORCE)" >/dev/null 2>&1 \
      || log "could not drop database $db_name"
  fi
  if [ -n "$vhost" ]; then
    timeout 30 rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || log "could not delete vhost $vhost"
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------- base images ---
# The images the Dockerfile builds FROM, with its ARG defaults substituted and
# short names qualified the way podman resolves them.
rust_version=$(sed -nE 's/^ARG RUST_VERSION=([0-9.]+).*/\1/p' docker/Dockerfile)
[ -n "$rust_version" ] || die "docker/Dockerfile has no ARG RUST_VERSION default"
bases=()
while read -r ref; do
  # shellcheck disable=SC2016 # the Dockerfile's literal ${RUST_VERSION}
  ref=${ref//'${RUST_VERSION}'/$rust_version}
  case $ref in
    */*) ;;
    *) ref=docker.io/library/$ref ;;
  esac
  bases+=("$ref")
done < <(sed -nE 's/^FROM ([^ ]+).*/\1/p' docker/Dockerfile | grep -v '^builder$')
debian_ref=docker.io/library/debian:bookworm-slim

# debian:bookworm-slim: a minimal bookworm from debootstrap, trimmed the way
# the official slim image is (no documentation, locales, apt lists or caches).
make_debian() {
  log "making the stand-in for $debian_ref with debootstrap (one time, about a minute)"
  local root=$tmp/rootfs
  timeout 900 debootstrap --variant=minbase bookworm "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -n 20 "$tmp/debootstrap.log" >&2; die "debootstrap failed (mirror $mirror)"; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  # Like the official image: packages installed later leave out documentation,
  # and apt knows the updates and security suites too.
  cat >"$root/etc/dpkg/dpkg.cfg.d/excludes" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG
  # The official image's apt settings (debuerreotype): no package caches or
  # downloaded packages left in a layer, compressed indexes, no translations.
  # Without them a layer that runs apt-get is tens of MB larger.
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  tar --numeric-owner -C "$root" -c . \
    | timeout 300 podman import --quiet \
        --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL $label.stand-in=debootstrap-minbase-bookworm" \
        --change "LABEL $label.stand-in-recipe=$recipe" \
        - "$debian_ref" >/dev/null
  rm -rf "$root"
}

# rust:<v>-slim-bookworm: the Debian stand-in plus what the official image
# has that a build needs (gcc, libc6-dev, ca-certificates, Rust <v> on the
# PATH). The toolchain is this machine's own, copied in through a build
# volume; its documentation is left out.
make_rust() { # image reference, version
  local ref=$1 version=$2 sysroot="" candidate
  for candidate in "${IMAGE_TEST_TOOLCHAIN:-}" "$(rustc --print sysroot 2>/dev/null || true)" \
    "${RUSTUP_HOME:-$HOME/.rustup}"/toolchains/*; do
    if [ -z "$candidate" ] || [ ! -x "$candidate/bin/rustc" ] || [ ! -x "$candidate/bin/cargo" ]; then
      continue
    fi
    case $("$candidate/bin/rustc" --version 2>/dev/null) in
      "rustc $version."* | "rustc $version "*) sysroot=$(readlink -f "$candidate"); break ;;
    esac
  done
  [ -n "$sysroot" ] || die "$ref is not in podman's storage and this machine has no Rust $version toolchain to make a stand-in from (rustup toolchain install $version, or IMAGE_TEST_PULL=1 with registry access)"
  log "making the stand-in for $ref from $debian_ref and $sysroot (one time, about a minute)"
  local context=$tmp/rust-context
  mkdir -p "$context/local-ca"
  # The certificate authorities this machine trusts beyond Debian's bundle
  # (e.g. a proxy's), so cargo in the build reaches the registry as cargo here.
  if [ -d /usr/local/share/ca-certificates ]; then
    cp -rL /usr/local/share/ca-certificates/. "$context/local-ca/"
  fi
  cat >"$context/Containerfile" <<CONTAINERFILE
FROM $debian_ref
RUN apt-get update \\
 && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
COPY local-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
RUN mkdir -p /usr/local/rust \\
 && tar -C /host-toolchain --exclude=./share/doc -cf - . | tar -C /usr/local/rust -xf -
ENV CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    RUST_VERSION=$version
LABEL $label.stand-in="debian stand-in + gcc + $("$sysroot/bin/rustc" --version)" \\
      $label.stand-in-recipe=$recipe
RUN cargo --version && rustc --version && cc --version | head -n 1
CONTAINERFILE
  timeout 900 podman build --quiet --pull=never --network host --layers=false \
    --volume "$sysroot:/host-toolchain:ro" -t "$ref" -f "$context/Containerfile" "$context" \
    >"$tmp/rust-standin.log" 2>&1 \
    || { tail -n 30 "$tmp/rust-standin.log" >&2; die "could not make the $ref stand-in"; }
  rm -rf "$context"
}

# Bumped whenever make_debian or make_rust changes, so that cached stand-ins
# made by an older recipe are made again.
recipe=2
ensure_base() { # image reference
  local ref=$1 made_by
  if podman image exists "$ref"; then
    made_by=$(podman image inspect --format '{{index .Labels "'"$label.stand-in-recipe"'"}}' "$ref" | sed 's/^<no value>$//')
    if [ -n "$made_by" ] && [ "$made_by" != "$recipe" ]; then
      log "base image $ref: a stand-in of an older recipe ($made_by), making it again"
      podman untag "$ref" "$ref"
    fi
  fi
  if podman image exists "$ref"; then
    log "base image $ref: in podman's storage ($(podman image inspect --format '{{index .Labels "'"$label.stand-in"'"}}' "$ref" | sed 's/^<no value>$/pulled/; s/^$/pulled/'))"
    return
  fi
  if [ "${IMAGE_TEST_PULL:-0}" = 1 ]; then
    log "pulling $ref"
    timeout 600 podman pull -q "$ref" >/dev/null || die "could not pull $ref"
    return
  fi
  case $ref in
    "$debian_ref") make_debian ;;
    docker.io/library/rust:*-slim-bookworm)
      local version=${ref#docker.io/library/rust:}
      make_rust "$ref" "${version%-slim-bookworm}" ;;
    *) die "docker/Dockerfile builds FROM $ref, for which there is no stand-in: pull it (IMAGE_TEST_PULL=1)" ;;
  esac
}

# The Debian image first: the Rust stand-in is made from it, and it is what
# shows whether this machine can run a container at all.
ensure_base "$debian_ref"
if ! smoke=$(timeout 120 podman run --rm --network host "$debian_ref" true 2>&1); then
  cannot "podman cannot run a container on this machine: ${smoke:-timed out}"
fi
for ref in "${bases[@]}"; do
  [ "$ref" = "$debian_ref" ] || ensure_base "$ref"
done

# -------------------------------------------------------------- build ---
# The unchanged Dockerfile. --format docker keeps HEALTHCHECK (the OCI image
# format has no such field and podman would drop it); --network host lets
# cargo and apt reach the network; --pull=never uses the images above. The
# builder stage gets its own tag so that its layers (the dependency build)
# are not dangling and survive the prune of superseded images below: podman's
# layer cache makes a run with unchanged manifests skip the dependency build.
build_args=(--format docker --network host --pull=never --layers
  --build-arg "VERSION=$(git describe --tags --always 2>/dev/null || echo dev)"
  --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  -f docker/Dockerfile)
log "building $image from docker/Dockerfile (7 to 12 minutes on 2 cores without cache, seconds with it)"
build_started=$SECONDS
timeout 2400 podman build "${build_args[@]}" --target builder -t "$builder_image" . >"$tmp/build.log" 2>&1 \
  || { tail -n 40 "$tmp/build.log" >&2; die "the builder stage of docker/Dockerfile does not build"; }
timeout 1200 podman build "${build_args[@]}" -t "$image" . >>"$tmp/build.log" 2>&1 \
  || { tail -n 40 "$tmp/build.log" >&2; die "docker/Dockerfile does not build"; }
build_seconds=$((SECONDS - build_started))
podman image prune -f >/dev/null 2>&1 || true
image_bytes=$(podman image inspect --format '{{.Size}}' "$image")
base_bytes=$(podman image inspect --format '{{.Size}}' "$debian_ref")
log "built in ${build_seconds} s; image $(numfmt --to=iec "$image_bytes"), of which $(numfmt --to=iec "$base_bytes") is the base"

# ----------------------------------------------------------- fixtures ---
scripts/ensure-services.sh
command -v psql >/dev/null 2>&1 || die "psql is needed (scripts/ensure-services.sh installs it)"
command -v rabbitmqctl >/dev/null 2>&1 || die "rabbitmqctl is needed to make this run's vhost (the broker must be this machine's)"
command -v curl >/dev/null 2>&1 || apt_install curl || die "curl is needed"
command -v ss >/dev/null 2>&1 || apt_install iproute2 || die "ss (iproute2) is needed to find free ports"

# A database, a vhost and an exchange of this run's own, so nothing it does
# meets the test suite's or anyone's data; the vhost goes with its exchanges
# and queues at the end.
db_name=ns_image_test_${run_id//-/_}
timeout 30 psql "$admin_url" -qc "CREATE DATABASE \"$db_name\"" || die "cannot create database $db_name"
db_url=${DATABASE_URL%/*}/$db_name
mq_rest=${RABBITMQ_URL#*://}
mq_user=${mq_rest%%@*}
mq_user=${mq_user%%:*}
vhost=ns-image-test-$run_id
timeout 30 rabbitmqctl -q add_vhost "$vhost" >/dev/null || die "cannot add RabbitMQ vhost $vhost"
timeout 30 rabbitmqctl -q set_permissions -p "$vhost" "$mq_user" '.*' '.*' '.*' >/dev/null \
  || die "cannot give $mq_user access to vhost $vhost"
mq_url=${RABBITMQ_URL%/*}/$vhost
exchange=ns_image_test_$run_id
prefix=ns-image-test-$run_id

sql() { timeout 60 psql "$db_url" -v ON_ERROR_STOP=1 -Atqc "$1"; }

# A port below the kernel's ephemeral range that no socket uses now. Inside
# that range an outgoing connection (to PostgreSQL, RabbitMQ) can hold the
# port without listening on it, and a listener then cannot bind it: a CI run
# failed that way with a port that refused connections.
free_port() {
  local ephemeral_low port
  read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range || ephemeral_low=32768
  [ "$ephemeral_low" -gt 11024 ] || ephemeral_low=11024
  for _ in $(seq 100); do
    port=$((10000 + RANDOM % (ephemeral_low - 10000)))
    [ -z "$(ss -Htan "( sport = :$port )")" ] && { printf '%s' "$port"; return; }
  done
  die "no free port found below $ephemeral_low"
}

now_ms() { date +%s%3N; }
seconds_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.2f", (b - a) / 1000 }'; }

# Polls a command until it succeeds; fails the test after the bound.
wait_for() { # seconds, description, command...
  local bound=$1 deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || die "timed out after $bound s waiting for $what"
    sleep 0.1
  done
}

# Every container: the machine's servers over the host network; the image's
# own user (not overridden); a read-only root filesystem without the tmpfs
# mounts podman adds by default (Docker's --read-only and Kubernetes'
# readOnlyRootFilesystem add none); no capabilities.
run_flags=(--network host --read-only --read-only-tmpfs=false --cap-drop=ALL
  --security-opt=no-new-privileges --label "$label=$run_id")

# podman runs HEALTHCHECKs from systemd timers; where there is no systemd it
# logs an error about that when such a container starts, stops or goes. Only
# those lines are dropped; the command is bounded.
podman_bounded() { # seconds, podman arguments...
  local seconds=$1
  shift
  timeout "$seconds" podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2 || true)
}

container_pid() { podman inspect --format '{{.State.Pid}}' "$1"; }
container_running() { [ "$(podman inspect --format '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
rss_mib() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# podman runs HEALTHCHECKs from systemd timers; without systemd (as on build
# machines) nothing runs them, so this runs the image's check the way the
# timer would, more often, and reads the status podman derives from it
# (start period, retries) until it is healthy.
wait_healthy() { # container, seconds
  local container=$1 deadline=$((SECONDS + $2)) status
  while :; do
    container_running "$container" || die "$container stopped before it was healthy"
    podman healthcheck run "$container" >/dev/null 2>&1 || true
    status=$(podman inspect --format '{{.State.Health.Status}}' "$container")
    case $status in
      healthy) return 0 ;;
      unhealthy) die "$container is unhealthy (its HEALTHCHECK failed past its start period and retries)" ;;
    esac
    [ $SECONDS -lt $deadline ] || die "$container not healthy within $2 s (status '$status')"
    sleep 0.2
  done
}

# The watch container's output, from its log file. conmon writes what it
# reads from the pipe as it comes, so one line of output may be split over
# several records (P for partial, F for the final piece): join them.
watch_output() {
  awk '{
    stream = $2; kind = $3
    sub(/^[^ ]+ [^ ]+ [^ ]+ ?/, "")
    line[stream] = line[stream] $0
    if (kind == "F") { print line[stream]; line[stream] = "" }
  }' "$tmp/watch.log"
}
# What the watch container received: one message id per delivery, of
# messages whose body names the given game.
delivered() { # game id
  watch_output | grep -F "\"game_id\":\"$1\"" | grep -o 'message_id=[0-9a-f-]*' | cut -d= -f2 | sort
}
delivered_count() { delivered "$1" | sort -u | wc -l; }
published_count() { sql "SELECT count(*) FROM notification_schedule WHERE game_id = '$1' AND outcome = 'published'"; }
at_least() { [ "$("$1" "$2")" -ge "$3" ]; } # function, game, count

new_game() { sql "INSERT INTO game_sessions (title, scheduled_at) VALUES ('image test', now() + interval '1 day') RETURNING id"; }
add_reminders() { # game, count, due in (SQL interval)
  sql "INSERT INTO notification_schedule (game_id, reminder_minutes, notification_time)
       SELECT '$1', n, now() + interval '$3' FROM generate_series(1, $2) n"
}

# ---------------------------------------------------------- 1. migrate ---
log "migrate: as the image's user, read-only root filesystem"
[ "$(podman image inspect --format '{{.Config.User}}' "$image")" = 10001:10001 ] \
  || die "the image's user is '$(podman image inspect --format '{{.Config.User}}' "$image")', not 10001:10001"
timeout 120 podman run --rm "${run_flags[@]}" --no-healthcheck --name "$prefix-migrate" \
  -e DATABASE_URL="$db_url" "$image" migrate >"$tmp/migrate.log" 2>&1 \
  || { cat "$tmp/migrate.log" >&2; die "migrate failed"; }
migrations=$(sql "SELECT count(*) FROM notification_scheduler_migrations")
[ "$migrations" -eq "$(find migrations -name '*.sql' | wc -l)" ] \
  || die "migrate applied $migrations migrations, migrations/ has $(find migrations -name '*.sql' | wc -l)"
log "migrate: exit 0, $migrations migrations applied"

# The image's own consumer, on a temporary queue bound to the exchange, for
# the whole test: its output is the record of what was delivered.
podman_bounded 120 run -d "${run_flags[@]}" --no-healthcheck --name "$prefix-watch" \
  --log-driver k8s-file --log-opt "path=$tmp/watch.log" \
  -e RABBITMQ_URL="$mq_url" -e RABBITMQ_EXCHANGE="$exchange" "$image" watch >/dev/null
wait_for 60 "the watch container to bind its queue" grep -q 'watching exchange' "$tmp/watch.log"

# HEALTH_ADDR on the wildcard address, as in docker-compose.yml, so the
# HEALTHCHECK's probe of loopback for a wildcard is what is tested; on its own
# port, as the host network is shared.
daemon_env=(-e DATABASE_URL="$db_url" -e RABBITMQ_URL="$mq_url" -e RABBITMQ_EXCHANGE="$exchange"
  -e SHUTDOWN_GRACE=10s)
grace_seconds=10

# ----------------------------------------------- 2. daemon, healthy ---
log "daemon: start, HEALTHCHECK, one reminder"
started=$(now_ms)
podman_bounded 120 run -d "${run_flags[@]}" --name "$prefix-daemon" --stop-timeout 30 "${daemon_env[@]}" \
  -e HEALTH_ADDR="0.0.0.0:$(free_port)" "$image" >/dev/null
wait_healthy "$prefix-daemon" 120
healthy_seconds=$(seconds_since "$started")
pid=$(container_pid "$prefix-daemon")
uid=$(awk '$1 == "Uid:" { print $2 }' "/proc/$pid/status")
[ "$uid" = 10001 ] || die "the daemon runs as uid $uid, not 10001"
[ "$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$prefix-daemon")" = true ] || die "root filesystem not read-only"
idle_rss=$(rss_mib "$pid" VmRSS)
log "daemon: healthy ${healthy_seconds} s after podman run; uid $uid; resident ${idle_rss} MiB"

game=$(new_game)
add_reminders "$game" 1 '1 second'
wait_for 30 "the first reminder to be delivered" at_least delivered_count "$game" 1
watch_output | grep -F "\"game_id\":\"$game\"" | grep -q '"event_type":"game.reminder_due"' \
  || die "the delivered message is not a game.reminder_due envelope: $(watch_output | grep -F "$game")"
log "daemon: reminder delivered"

# ------------------------------------------------ 3. SIGTERM mid-batch ---
# Enough reminders, all due at once, that the stop lands while batches are
# claimed and awaiting confirms.
stop_rows=50000
log "SIGTERM: podman stop while $stop_rows due reminders are being delivered"
stop_game=$(new_game)
add_reminders "$stop_game" "$stop_rows" '2 seconds'
wait_for 30 "the first batch to be published" at_least published_count "$stop_game" 1
busy_rss=$(rss_mib "$pid" VmHWM)
stop_started=$(now_ms)
podman_bounded 60 stop -t 30 "$prefix-daemon" >/dev/null
stop_seconds=$(seconds_since "$stop_started")
stop_exit=$(podman inspect --format '{{.State.ExitCode}}' "$prefix-daemon")
published_at_stop=$(published_count "$stop_game")
[ "$stop_exit" = 0 ] || die "the daemon exited with $stop_exit on SIGTERM, not 0"
awk -v s="$stop_seconds" -v g="$grace_seconds" 'BEGIN { exit !(s < g) }' \
  || die "the daemon took ${stop_seconds} s to stop, not within SHUTDOWN_GRACE (${grace_seconds} s)"
# Settled: every published row reached the queue exactly once, and nothing
# reached it that is not marked published (which a restart would send again).
wait_for 30 "the watch container to receive what was published" at_least delivered_count "$stop_game" "$published_at_stop"
delivered "$stop_game" >"$tmp/stop.delivered"
sql "SELECT id FROM notification_schedule WHERE game_id = '$stop_game' AND outcome = 'published' ORDER BY 1" | sort >"$tmp/stop.published"
[ -z "$(uniq -d "$tmp/stop.delivered")" ] || die "messages delivered twice before the stop: $(uniq -d "$tmp/stop.delivered" | head -n 3)"
cmp -s "$tmp/stop.delivered" "$tmp/stop.published" \
  || die "after the stop, delivered ($(wc -l <"$tmp/stop.delivered")) and marked published ($(wc -l <"$tmp/stop.published")) differ"
untouched=$(sql "SELECT count(*) FROM notification_schedule WHERE game_id = '$stop_game' AND NOT sent AND outcome IS NULL AND attempts = 0")
[ $((published_at_stop + untouched)) -eq "$stop_rows" ] \
  || die "after the stop, $published_at_stop published + $untouched untouched != $stop_rows"
log "SIGTERM: exit 0 in ${stop_seconds} s; $published_at_stop of $stop_rows published and delivered once, the rest untouched"

# --------------------------------------------- 4. kill -9, restart policy ---
# The policy compose gives the daemon. podman restarts the container from its
# exit hook (conmon runs `podman container cleanup`), with no daemon or
# systemd; this checks that it really does.
log "kill -9: a daemon under --restart=unless-stopped is killed while delivering"
started=$(now_ms)
podman_bounded 120 run -d "${run_flags[@]}" --name "$prefix-daemon-restart" --restart=unless-stopped --stop-timeout 30 \
  "${daemon_env[@]}" -e HEALTH_ADDR="0.0.0.0:$(free_port)" "$image" >/dev/null
wait_healthy "$prefix-daemon-restart" 120
healthy2_seconds=$(seconds_since "$started")
# It first delivers what the stopped daemon left.
wait_for 120 "the rest of the SIGTERM test's reminders to be delivered" at_least delivered_count "$stop_game" "$stop_rows"
[ "$(published_count "$stop_game")" -eq "$stop_rows" ] || die "not every reminder of the SIGTERM test is marked published"
pid=$(container_pid "$prefix-daemon-restart")
drain_rss=$(rss_mib "$pid" VmHWM)

kill_rows=50000
late_rows=100
kill_game=$(new_game)
late_game=$(new_game)
add_reminders "$kill_game" "$kill_rows" '2 seconds'
wait_for 30 "the first batch to be published" at_least published_count "$kill_game" 1
restarts=$(podman inspect --format '{{.RestartCount}}' "$prefix-daemon-restart")
# From the host, as the OOM killer or a crash would: SIGKILL sent from inside
# the container to its PID 1 would be ignored.
kill -KILL "$pid"
killed=$(now_ms)
published_at_kill=$(published_count "$kill_game")
# Due at once, while the daemon is dead.
add_reminders "$late_game" "$late_rows" '0 seconds'
restarted() {
  [ "$(podman inspect --format '{{.RestartCount}}' "$prefix-daemon-restart")" -gt "$restarts" ] \
    && container_running "$prefix-daemon-restart"
}
wait_for 60 "podman to restart the killed container (restart policy)" restarted
wait_healthy "$prefix-daemon-restart" 120
back_seconds=$(seconds_since "$killed")
[ "$(container_pid "$prefix-daemon-restart")" != "$pid" ] || die "the daemon's process did not change after kill -9"
wait_for 120 "every reminder of the kill test to be published" at_least published_count "$kill_game" "$kill_rows"
wait_for 60 "every reminder that fell due while the daemon was dead to be published" at_least published_count "$late_game" "$late_rows"
wait_for 60 "every reminder of the kill test to be delivered" at_least delivered_count "$kill_game" "$kill_rows"
wait_for 60 "every late reminder to be delivered" at_least delivered_count "$late_game" "$late_rows"
for g in "$kill_game" "$late_game"; do
  delivered "$g" | sort -u >"$tmp/kill.delivered"
  sql "SELECT id FROM notification_schedule WHERE game_id = '$g' ORDER BY 1" | sort >"$tmp/kill.rows"
  cmp -s "$tmp/kill.delivered" "$tmp/kill.rows" || die "rows and delivered messages differ after kill -9 (game $g)"
done
duplicates=$(delivered "$kill_game" | uniq -d | wc -l)
log "kill -9: killed with $published_at_kill of $kill_rows published; restarted and healthy ${back_seconds} s after the kill; all $kill_rows + $late_rows delivered ($duplicates twice: the batches in flight at the kill)"

# ---------------------------------------------------------------- 5. api ---
log "api: /healthz and a create call"
api_port=$(free_port)
api_token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
started=$(now_ms)
# The image's HEALTHCHECK probes the daemon's port; the API's own, as in
# docker-compose.yml.
podman_bounded 120 run -d "${run_flags[@]}" --name "$prefix-api" --stop-timeout 30 \
  --health-cmd "[\"notification-scheduler\", \"healthcheck\", \"--health-addr\", \"127.0.0.1:$api_port\"]" \
  --health-interval 15s --health-timeout 5s --health-retries 3 --health-start-period 30s \
  -e DATABASE_URL="$db_url" -e RABBITMQ_EXCHANGE="$exchange" -e API_TOKEN="$api_token" \
  -e API_ADDR="127.0.0.1:$api_port" "$image" api >/dev/null
wait_healthy "$prefix-api" 120
api_healthy_seconds=$(seconds_since "$started")
api_rss=$(rss_mib "$(container_pid "$prefix-api")" VmRSS)
api=http://127.0.0.1:$api_port
[ "$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "$api/healthz")" = 200 ] || die "api /healthz did not answer 200"
game_body='{"title": "image test", "reminder_minutes": [1], "scheduled_at": "'"$(date -u -d '+62 seconds' +%Y-%m-%dT%H:%M:%SZ)"'"}'
code=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -X POST "$api/games" -H 'Content-Type: application/json' -d "$game_body")
[ "$code" = 401 ] || die "POST /games without a token answered $code, not 401"
code=$(curl -sS -m 10 -o "$tmp/created.json" -w '%{http_code}' -X POST "$api/games" \
  -H "Authorization: Bearer $api_token" -H 'Content-Type: application/json' -d "$game_body")
[ "$code" = 201 ] || die "POST /games answered $code, not 201: $(cat "$tmp/created.json")"
api_game=$(grep -o '"id" *: *"[0-9a-f-]*"' "$tmp/created.json" | head -n 1 | grep -o '[0-9a-f-]\{36\}')
[ -n "$api_game" ] || die "POST /games answered without an id: $(cat "$tmp/created.json")"
# Its one-minute reminder is due about two seconds from now.
wait_for 30 "the created game's reminder to be delivered" at_least delivered_count "$api_game" 1
# The console, with its templates and assets from the binary: the login form,
# a login with the token, the overview with the session cookie.
[ "$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "$api/console/assets/console.css")" = 200 ] || die "the console's stylesheet did not answer 200"
cookie=$(curl -sS -m 10 -o /dev/null -D - -X POST "$api/console/login" --data-urlencode "token=$api_token" --data-urlencode "next=/console" \
  | sed -nE 's/^[Ss]et-[Cc]ookie: (console_session=[^;]*).*/\1/p')
[ -n "$cookie" ] || die "logging in to the console set no session cookie"
curl -sS -m 10 -H "Cookie: $cookie" "$api/console" | grep -q '<h1>Overview</h1>' || die "the console's overview did not render"
podman_bounded 60 stop -t 30 "$prefix-api" >/dev/null
[ "$(podman inspect --format '{{.State.ExitCode}}' "$prefix-api")" = 0 ] || die "the api did not exit 0 on SIGTERM"
log "api: healthy ${api_healthy_seconds} s after podman run; /healthz 200; POST /games 401 without the token, 201 with it; its reminder delivered; the console logs in and renders; exit 0 on SIGTERM"

# ------------------------------------------------- 6. final stop ---
# A stop is not a failure: the restart policy must not bring it back.
podman_bounded 60 stop -t 30 "$prefix-daemon-restart" >/dev/null
[ "$(podman inspect --format '{{.State.ExitCode}}' "$prefix-daemon-restart")" = 0 ] \
  || die "the restarted daemon did not exit 0 on SIGTERM"
restarts=$(podman inspect --format '{{.RestartCount}}' "$prefix-daemon-restart")
sleep 2
if [ "$(podman inspect --format '{{.RestartCount}}' "$prefix-daemon-restart")" != "$restarts" ] \
  || container_running "$prefix-daemon-restart"; then
  die "podman restarted a daemon that was stopped"
fi

# ------------------------------------------------------------- summary ---
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
cat <<SUMMARY
[image-test] passed
  image          $image: $(mib "$image_bytes") ($(mib "$base_bytes") of it the base image$(
                 [ -n "$(podman image inspect --format '{{index .Labels "'"$label.stand-in"'"}}' "$debian_ref" 2>/dev/null | sed 's/<no value>//')" ] && printf ', a stand-in'))
  build          ${build_seconds} s
  daemon         podman run to healthy: ${healthy_seconds} s (second container ${healthy2_seconds} s)
                 resident: ${idle_rss} MiB started, peak ${busy_rss} MiB delivering, peak ${drain_rss} MiB after draining the $((stop_rows - published_at_stop)) left by the stop
  SIGTERM        exit 0 in ${stop_seconds} s (SHUTDOWN_GRACE ${grace_seconds} s), ${published_at_stop}/${stop_rows} published at the stop, settled
  kill -9        at ${published_at_kill}/${kill_rows} published; back and healthy in ${back_seconds} s; ${kill_rows} + ${late_rows} delivered, ${duplicates} twice
  api            podman run to healthy: ${api_healthy_seconds} s, resident ${api_rss} MiB
SUMMARY
