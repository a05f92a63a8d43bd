#!/usr/bin/env bash
# Dependency audit: checks Cargo.lock against the RustSec advisory database
# with cargo-audit. Advisories that were reviewed and accepted are listed in
# .cargo/audit.toml ([advisories] ignore), each with its reason on its line;
# any other advisory fails, and so do `unmaintained` and `unsound` notices
# ([output] deny). docs/security.md has the last review.
#
# Usage: scripts/audit.sh
#
# Environment:
#   AUDIT_DB        a local copy of the advisory database: a checkout of
#                   rustsec/advisory-db, or any directory holding its
#                   crates/<name>/RUSTSEC-*.md tree. Used as it is
#                   (--db AUDIT_DB --no-fetch): keep it current.
#                   Without it, cargo-audit fetches the database into
#                   ~/.cargo/advisory-db, which needs github.com; when that
#                   host cannot be reached, an earlier copy there (at most
#                   90 days old) is used instead.
#   AUDIT_REQUIRED  1: a skip (no cargo-audit, no database) fails instead.
#
# Exit status: 0 when clean, or skipped (the reason is printed: no
# cargo-audit, or no database to be had); 1 on advisories not in the
# allow-list, an allow-list entry without a reason, an AUDIT_DB that cannot be
# read, or any other cargo-audit failure.
set -euo pipefail
cd "$(dirname "$0")/.."

config=.cargo/audit.toml
stale_days=90

skip() {
  echo "[audit] skipped: $1"
  if [[ "${AUDIT_REQUIRED:-0}" == 1 ]]; then
    echo "[audit] FAILED: AUDIT_REQUIRED=1 and the audit was skipped" >&2
    exit 1
  fi
  exit 0
}
fail() {
  echo "[audit] FAILED: $1" >&2
  exit 1
}

# The allow-list: one id per line inside `ignore = [ ... ]`, each followed by a
# `#` comment giving the reason. Checked before anything else, so a bad entry
# fails even where the audit itself has to be skipped.
[[ -f "$config" ]] || fail "$config is missing"
allow_list=$(awk '
  /^[[:space:]]*ignore[[:space:]]*=/ { inside = 1; sub(/^[^=]*=[[:space:]]*\[/, ""); }
  inside {
    line = $0
    done = (line ~ /^[^#]*\]/)
    if (done) sub(/\].*/, "", line)
    if (line !~ /^[[:space:]]*(#.*)?$/) print line
    if (done) exit
  }' "$config")
ignored=()
while IFS= read -r entry; do
  [[ -z "$entry" ]] && continue
  if [[ "$entry" =~ ^[[:space:]]*\"(RUSTSEC-[0-9]{4}-[0-9]{4})\"[[:space:]]*,?[[:space:]]*#[[:space:]]*[^[:space:]] ]]; then
    ignored+=("${BASH_REMATCH[1]}")
  else
    fail "$config: every ignored advisory needs its own line with a '# reason' comment; not: ${entry#"${entry%%[![:space:]]*}"}"
  fi
done <<<"$allow_list"
if ((${#ignored[@]})); then
  echo "[audit] allow-list ($config): ${ignored[*]}"
else
  echo "[audit] allow-list ($config): empty"
fi

if ! cargo audit --version >/dev/null 2>&1; then
  skip "cargo-audit is not installed (cargo install cargo-audit --locked)"
fi
echo "[audit] cargo-audit $(cargo audit --version | awk '{print $NF}')"

# When a database copy was last updated, as seconds since the epoch (empty when
# it is not a git checkout).
db_date() {
  git -C "$1" log -1 --format=%ct 2>/dev/null || true
}
describe_db() {
  local when
  when=$(db_date "$1")
  if [[ -n "$when" ]]; then
    echo "[audit] database: $1 (last commit $(date -u -d "@$when" +%Y-%m-%d))"
  else
    echo "[audit] database: $1 (not a git checkout: its date is unknown)"
  fi
}

args=(--file Cargo.lock)
if [[ -n "${AUDIT_DB:-}" ]]; then
  [[ -d "$AUDIT_DB/crates" ]] ||
    fail "AUDIT_DB=$AUDIT_DB is not an advisory database (it has no crates/ directory)"
  describe_db "$AUDIT_DB"
  args+=(--db "$AUDIT_DB" --no-fetch)
elif timeout 30 git ls-remote --exit-code https://github.com/rustsec/advisory-db.git HEAD >/dev/null 2>&1; then
  echo "[audit] database: fetched from github.com/rustsec/advisory-db into ~/.cargo/advisory-db"
else
  cached="${CARGO_HOME:-$HOME/.cargo}/advisory-db"
  when=$(db_date "$cached")
  if [[ -z "$when" ]]; then
    skip "the RustSec advisory database cannot be fetched (github.com is unreachable from here), AUDIT_DB is not set and there is no earlier copy in $cached"
  fi
  age_days=$((($(date +%s) - when) / 86400))
  if ((age_days > stale_days)); then
    skip "the RustSec advisory database cannot be fetched (github.com is unreachable from here) and the copy in $cached is $age_days days old"
  fi
  echo "[audit] github.com is unreachable: using the copy in $cached, $age_days days old"
  describe_db "$cached"
  args+=(--db "$cached" --no-fetch)
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
timeout 900 cargo audit "${args[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

if ((status == 0)); then
  echo "[audit] ok: no advisory outside the allow-list (${#ignored[@]} ignored)"
  exit 0
fi
if grep -q -e "couldn't fetch advisory database" -e "error loading advisory database" "$log"; then
  reason=$(grep -m1 -e "couldn't fetch advisory database" -e "error loading advisory database" "$log")
  # A copy named by AUDIT_DB must work; one fetched or found is best effort.
  [[ -n "${AUDIT_DB:-}" ]] && fail "cannot read AUDIT_DB=$AUDIT_DB: $reason"
  skip "cargo-audit could not load the advisory database: $reason"
fi
if ((status == 124)); then
  fail "cargo audit did not finish within 900 s"
fi
fail "cargo audit exited with $status: advisories above that are not in $config, or an error (see above)"
