#!/usr/bin/env bash
# Runs the whole platform locally without Docker.
#   stack.sh run   start everything in the foreground; Ctrl-C stops it all
#   stack.sh up    start everything in the background, return once every service is ready
#   stack.sh down  stop everything `up` started; no process is left behind
# Settings come from the environment or .env (docs/configuration.md); the defaults below
# are for a developer machine only.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
# STACK_RUN_DIR: pid and log files; a second stack (make bench) uses its own.
RUN_DIR="${STACK_RUN_DIR:-$ROOT/.run}"
BIN_DIR="${SERVICE_BIN_DIR:-$ROOT/target/debug}"
SERVICES=(user inventory producer order consumer gateway)

log() { echo "[stack] $*" >&2; }

# Development defaults; anything already set (or in .env) wins.
if [ -f .env ]; then set -a; . ./.env; set +a; fi
export APP_ENV="${APP_ENV:-development}"
export JWT_SECRET="${JWT_SECRET:-local-development-secret-change-me-0123456789}"
export ADMIN_USERNAME="${ADMIN_USERNAME:-admin}"
export ADMIN_EMAIL="${ADMIN_EMAIL:-admin@example.com}"
export ADMIN_PASSWORD="${ADMIN_PASSWORD:-admin-password}"
export RUST_LOG="${RUST_LOG:-info}"
# Six services share this machine's cores: one runtime thread each spares
# the wake-ups between a service's own threads (BENCHMARKS.md).
export TOKIO_WORKER_THREADS="${TOKIO_WORKER_THREADS:-1}"
# The local PostgreSQL is on the loopback: TLS there only costs CPU.
export DB_SSLMODE="${DB_SSLMODE:-disable}"
GATEWAY_ADDR="${API_GATEWAY_ADDR:-:8080}"
GATEWAY_PORT="${GATEWAY_ADDR##*:}"
GATEWAY_HOST="${GATEWAY_ADDR%:*}"
[ -z "$GATEWAY_HOST" ] || [ "$GATEWAY_HOST" = "0.0.0.0" ] && GATEWAY_HOST=127.0.0.1
GATEWAY_URL="http://$GATEWAY_HOST:$GATEWAY_PORT"

# host:port to dial for a seed-style address (empty host: loopback).
dial_addr() {
  local host="${1%:*}" port="${1##*:}"
  [ -z "$host" ] || [ "$host" = "0.0.0.0" ] && host=127.0.0.1
  echo "$host:$port"
}

is_running() { [ -f "$RUN_DIR/$1.pid" ] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

down() {
  local any=""
  for svc in "${SERVICES[@]}"; do
    local pidfile="$RUN_DIR/$svc.pid"
    [ -f "$pidfile" ] || continue
    local pid; pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      any=1
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  # Give every service its graceful shutdown, then make sure.
  for svc in "${SERVICES[@]}"; do
    local pidfile="$RUN_DIR/$svc.pid"
    [ -f "$pidfile" ] || continue
    local pid; pid=$(cat "$pidfile")
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$svc did not stop in 10 s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  [ -n "$any" ] && log "stopped" || log "nothing was running"
}

start_all() {
  mkdir -p "$RUN_DIR"
  for svc in "${SERVICES[@]}"; do
    if is_running "$svc"; then
      log "$svc is already running (pid $(cat "$RUN_DIR/$svc.pid")); run 'make down' first"
      exit 1
    fi
    [ -x "$BIN_DIR/$svc" ] || { log "$BIN_DIR/$svc is missing; run 'make build'"; exit 1; }
  done
  if (exec 3<>"/dev/tcp/$GATEWAY_HOST/$GATEWAY_PORT") 2>/dev/null; then
    log "port $GATEWAY_PORT is taken by another program; stop it or set API_GATEWAY_ADDR"
    exit 1
  fi
  # Migrations first, one service at a time, so start-up output stays readable.
  for svc in user inventory order; do
    "$BIN_DIR/$svc" migrate >"$RUN_DIR/$svc-migrate.log" 2>&1 || {
      log "$svc migrate failed:"; tail -20 "$RUN_DIR/$svc-migrate.log" >&2; exit 1; }
  done
  for svc in "${SERVICES[@]}"; do
    # METRICS_PORT_BASE (e.g. a second stack beside this one): each service's
    # metrics on base + its offset; unset, each takes its own default port.
    metrics=()
    if [ -n "${METRICS_PORT_BASE:-}" ]; then
      case $svc in
        gateway) offset=80 ;; inventory) offset=51 ;; order) offset=52 ;;
        user) offset=53 ;; producer) offset=54 ;; consumer) offset=55 ;;
      esac
      metrics=(env METRICS_PORT=$((METRICS_PORT_BASE + offset)))
    fi
    # setsid: each service leads its own process group, so `down` stops it whole.
    setsid "${metrics[@]}" "$BIN_DIR/$svc" >"$RUN_DIR/$svc.log" 2>&1 < /dev/null &
    echo $! >"$RUN_DIR/$svc.pid"
  done
}

wait_ready() {
  for _ in $(seq 1 600); do
    # The gateway checks the services it calls; the Producer and the Consumer
    # answer HTTP /healthz on their own ports.
    if curl -fsS "$GATEWAY_URL/readyz/downstreams" >/dev/null 2>&1 &&
      curl -fsS "http://$(dial_addr "${PRODUCER_ADDR:-:50054}")/healthz" >/dev/null 2>&1 &&
      curl -fsS "http://$(dial_addr "${CONSUMER_ADDR:-:50055}")/healthz" >/dev/null 2>&1; then
      return 0
    fi
    for svc in "${SERVICES[@]}"; do
      if ! is_running "$svc"; then
        log "$svc exited during start-up:"; tail -20 "$RUN_DIR/$svc.log" >&2
        down; exit 1
      fi
    done
    sleep 0.2
  done
  log "the gateway did not become ready in 120 s; logs are in $RUN_DIR"
  down; exit 1
}

# Demo data: a few products, created once through the public API as the admin.
seed_demo_data() {
  local token
  token=$(curl -fsS -X POST "$GATEWAY_URL/users/login" -H 'Content-Type: application/json' \
    -d "{\"username\":\"$ADMIN_USERNAME\",\"password\":\"$ADMIN_PASSWORD\"}" |
    sed -n 's/.*"token":"\([^"]*\)".*/\1/p') || true
  if [ -z "$token" ]; then log "could not log in as $ADMIN_USERNAME; skipping demo data"; return; fi
  local count
  count=$(curl -fsS "$GATEWAY_URL/products?page_size=1" | sed -n 's/.*"total":\([0-9]*\).*/\1/p')
  if [ "${count:-0}" != "0" ]; then return; fi
  while IFS='|' read -r name category stock price; do
    curl -fsS -o /dev/null -X POST "$GATEWAY_URL/products" \
      -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      -d "{\"name\":\"$name\",\"category\":\"$category\",\"stock\":$stock,\"price\":$price}" ||
      log "could not create demo product $name"
  done <<'DATA'
Laptop|Electronics|100|999.99
Headphones|Electronics|250|79.90
Coffee Mug|Kitchen|500|12.50
Desk Lamp|Home|120|34.00
Notebook|Office|1000|3.25
DATA
  log "demo products created"
}

banner() {
  log "all six services are up; logs in $RUN_DIR/<service>.log"
  echo "Gateway: $GATEWAY_URL   (admin: $ADMIN_USERNAME / $ADMIN_PASSWORD, development only)"
}

case "${1:-}" in
  run)
    start_all
    trap 'echo; down; exit 0' INT TERM
    wait_ready
    seed_demo_data
    banner
    log "press Ctrl-C to stop"
    while true; do
      for svc in "${SERVICES[@]}"; do
        if ! is_running "$svc"; then
          log "$svc stopped unexpectedly:"; tail -20 "$RUN_DIR/$svc.log" >&2; down; exit 1
        fi
      done
      sleep 1
    done
    ;;
  up)
    start_all
    wait_ready
    seed_demo_data
    banner
    ;;
  down) down ;;
  *) echo "usage: $0 run|up|down" >&2; exit 2 ;;
esac
