#!/usr/bin/env bash
# The performance harness of issue 9 (see BENCHMARKS.md).
#   bench.sh          make bench: release binaries, 3 repeats of 10 s per figure
#   bench.sh quick    make bench-quick: debug binaries, 1 repeat of 3 s (CI:
#                     proves the harness works; asserts nothing about speed)
#   bench.sh capture  print the SQL one order causes (log_statement = 'all' on
#                     throw-away databases), the source of bench/order-*.sql
# Overrides: BENCH_REPEATS, BENCH_SECONDS, BENCH_CONNECTIONS, BENCH_BURST_USERS,
# BENCH_SUSTAINED_RATE, BENCH_SUSTAINED_SECONDS,
# BENCH_PORT_BASE, BENCH_BUILD=0 (use the binaries already in target/, e.g. to
# re-run quickly),
# BENCH_BIN_DIR (binaries from elsewhere, e.g. another commit's for an A/B).
# The stack runs on its own ports, databases, stream and run directory
# (bench/stack.env), so it never meets a `make up` on 8080.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE="${1:-full}"
log() { echo "[bench] $*" >&2; }

# pgbench and wrk come from Debian's packages.
need() {
  command -v "$1" >/dev/null && return
  log "installing $2 (for $1)"
  apt-get install -y -q "$2" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null; }
}
need pgbench postgresql-client
need wrk wrk
need psql postgresql-client

case "$MODE" in
  full)
    export BENCH_REPEATS="${BENCH_REPEATS:-3}" BENCH_SECONDS="${BENCH_SECONDS:-10}"
    # The order figure again with this many orders already in the tables.
    export BENCH_PREFILL_ORDERS="${BENCH_PREFILL_ORDERS:-1000000}"
    [ "${BENCH_BUILD:-1}" = 0 ] || bash scripts/release-build.sh
    export SERVICE_BIN_DIR="${BENCH_BIN_DIR:-$ROOT/target/release}" ;;
  quick | capture)
    export BENCH_REPEATS="${BENCH_REPEATS:-1}" BENCH_SECONDS="${BENCH_SECONDS:-3}"
    export BENCH_PREFILL_ORDERS="${BENCH_PREFILL_ORDERS:-1000}"
    # Debug binaries confirm far slower: a smaller burst drains in seconds.
    export BENCH_BURST_USERS="${BENCH_BURST_USERS:-64}"
    export BENCH_SUSTAINED_RATE="${BENCH_SUSTAINED_RATE:-50}" BENCH_SUSTAINED_SECONDS="${BENCH_SUSTAINED_SECONDS:-3}"
    [ "${BENCH_BUILD:-1}" = 0 ] || cargo build --workspace --bins
    export SERVICE_BIN_DIR="${BENCH_BIN_DIR:-$ROOT/target/debug}" ;;
  *) echo "usage: $0 [full|quick|capture]" >&2; exit 2 ;;
esac

. bench/stack.env
[ "$MODE" = capture ] && export DB_NAME="${DB_NAME}_capture"
psql_() { psql -h 127.0.0.1 -U postgres -qAt -v ON_ERROR_STOP=1 "$@"; }
drop_databases() {
  for db in inventory order user; do psql_ -c "DROP DATABASE IF EXISTS ${DB_NAME}_$db WITH (FORCE)"; done
}

baseline_pid=""
cleanup() {
  [ -n "$baseline_pid" ] && kill "$baseline_pid" 2>/dev/null || true
  bash scripts/stack.sh down || true
}
trap cleanup EXIT

# Empty tables for every run.
drop_databases

if [ "$MODE" = capture ]; then
  for svc in user inventory order; do "$SERVICE_BIN_DIR/$svc" migrate >/dev/null; done
  for db in inventory order; do psql_ -c "ALTER DATABASE ${DB_NAME}_$db SET log_statement = 'all'"; done
  bash scripts/stack.sh up
  pglog=$(ls /var/log/postgresql/postgresql-*-main.log | head -1)
  token=$(curl -fsS -X POST "$GATEWAY_URL/users/login" -H 'Content-Type: application/json' \
    -d "{\"username\":\"$ADMIN_USERNAME\",\"password\":\"$ADMIN_PASSWORD\"}" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
  product=$(curl -fsS -X POST "$GATEWAY_URL/products" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"name":"Capture","category":"Capture","stock":1000,"price":1.5}' | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
  sleep 1
  from=$(($(wc -l <"$pglog") + 1))
  curl -fsS -o /dev/null -X POST "$GATEWAY_URL/orders" -H "Authorization: Bearer $token" \
    -H 'Idempotency-Key: capture-1' -H 'Content-Type: application/json' \
    -d "{\"items\":[{\"product_id\":\"$product\",\"quantity\":2}]}"
  sleep 3
  # The relay's idle polls (its claim returning no row) repeat every interval.
  tail -n +"$from" "$pglog" | grep -F "@${DB_NAME}_" | grep -A1 -E 'LOG: ' | grep -v '^--$'
  drop_databases
  exit 0
fi

bash scripts/stack.sh up
"$SERVICE_BIN_DIR/loadgen-baseline" "$BENCH_BASELINE_ADDR" 2>/dev/null &
baseline_pid=$!
export BASELINE_PID=$baseline_pid
python3 bench/harness.py
drop_databases
