#!/usr/bin/env bash
# `make compose-test`: the images and docker-compose.yml on a real Docker
# engine (docs/docker.md says what this proves and where its time goes).
#
#  1. installs docker.io, debootstrap and Compose v2 (scripts/ensure-docker.sh)
#     and starts dockerd unless an engine answers; fails loudly if none starts
#  2. builds the base-image stand-ins from Debian's packages
#     (scripts/docker-base-images.sh) and the six release binaries on the host
#  3. `docker compose build` of the Dockerfile's final stages with
#     BINARIES=prebuilt and the stand-ins as build arguments
#  4. image facts: uid 10001, entrypoint, healthcheck and its port, size
#  5. `docker compose up -d --wait`, then: every container healthy, read-only
#     root filesystem with a writable /tmp, processes as uid 10001;
#     `docker run --rm ecommerce/<svc>:dev migrate` into a fresh database
#  6. the curl user story of docs/api.md against http://127.0.0.1:$GATEWAY_PORT
#  7. a burst of 50 orders with one service container restarted in the middle:
#     every order terminal, stock conserved
#  8. `docker compose down -v`: no container, network or volume left; stops
#     the dockerd it started
#
# Environment: GATEWAY_PORT (8080), RESTART_SERVICE (consumer), BURST_STOCK (30).
set -euo pipefail
cd "$(dirname "$0")/.."

export GATEWAY_PORT=${GATEWAY_PORT:-8080}
RESTART_SERVICE=${RESTART_SERVICE:-consumer}
BURST_ORDERS=50
BURST_STOCK=${BURST_STOCK:-30}
PROJECT=ecommerce-compose-test
SERVICES=(gateway inventory order user producer consumer)
DB_SERVICES=(inventory order user)
TAG=dev
GW=http://127.0.0.1:$GATEWAY_PORT
# docker-compose.yml's dev-only database password and first admin.
PG_PASSWORD=dev-only-postgres-password
ADMIN_PASSWORD=admin-password-dev-only

started_at=$(date +%s)
step_at=$started_at
timings=()
passed=0
step() {
  local now
  now=$(date +%s)
  [ -z "${step_name:-}" ] || timings+=("$(printf '%5d s  %s' $((now - step_at)) "$step_name")")
  step_name=$1
  step_at=$now
  echo "=== compose-test: $1"
}
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() {
  echo "FAIL $*" >&2
  echo "compose-test: $passed passed, 1 failed" >&2
  exit 1
}
compose() { docker compose -p "$PROJECT" -f docker-compose.yml "$@"; }
# Compose's own BuildKit client (builds only the stages a target needs), not
# Bake, which needs the buildx plugin that no registry here packages.
export COMPOSE_BAKE=false

engine=""
stack_up=""
cleanup() {
  local status=$?
  if [ -n "$stack_up" ]; then
    if [ "$status" != 0 ]; then
      echo "--- compose ps and the last log lines, for the failure above" >&2
      compose ps -a >&2 || true
      compose logs --no-color --tail 30 >&2 || true
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  if [ "$engine" = started ]; then bash scripts/ensure-docker.sh stop || true; fi
  exit "$status"
}
trap cleanup EXIT

# --- 1. engine --------------------------------------------------------------
step "Docker engine and Compose v2"
bash scripts/ensure-docker.sh install
if ! engine=$(bash scripts/ensure-docker.sh start); then
  fail "no Docker engine could be started on this machine: the compose test cannot run (not skipped)"
fi
echo "engine: $engine; $(docker version --format 'dockerd {{.Server.Version}}, client {{.Client.Version}}'); $(docker compose version)"

# --- 2. base images and binaries ---------------------------------------------
step "base-image stand-ins from Debian packages"
bash scripts/docker-base-images.sh
while IFS= read -r kv; do export "${kv?}"; done < <(bash scripts/docker-base-images.sh --env)

step "release binaries on the host (scripts/release-build.sh)"
if [ "$(ldd --version | head -1 | grep -o '[0-9.]*$')" != "2.36" ]; then
  fail "BINARIES=prebuilt needs a glibc 2.36 (Debian 12) host like the runtime image; this one has $(ldd --version | head -1)"
fi
bash scripts/release-build.sh
step "the binaries' code laid out by use (tools/link-order)"
if python3 scripts/link-order.py --check target/release; then
  ok "each service's functions that run first, in its list's order"
else
  fail "the release binaries are not laid out by tools/link-order (see above; \`make link-order\` regenerates the lists)"
fi

# --- 3. images ---------------------------------------------------------------
step "docker compose build (the Dockerfile's final stages, BINARIES=prebuilt)"
compose build --build-arg BINARIES=prebuilt \
  --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" --build-arg BUSYBOX_IMAGE="$BUSYBOX_IMAGE"

# --- 4. image facts ----------------------------------------------------------
step "image facts"
sizes=()
for s in "${SERVICES[@]}"; do
  image=ecommerce/$s:$TAG
  user=$(docker image inspect -f '{{.Config.User}}' "$image")
  [ "$user" = "10001:10001" ] || fail "$image: USER is '$user', expected 10001:10001"
  entry=$(docker image inspect -f '{{json .Config.Entrypoint}}' "$image")
  [ "$entry" = "[\"/usr/local/bin/$s\"]" ] || fail "$image: ENTRYPOINT $entry"
  hc=$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$image")
  case $hc in *"/usr/local/bin/busybox"*"/healthz"*) ;; *) fail "$image: HEALTHCHECK $hc" ;; esac
  # The shared HEALTHCHECK probes $HEALTHCHECK_PORT: each target's ENV, which
  # must be the one port it EXPOSEs.
  port=$(docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed -n 's/^HEALTHCHECK_PORT=//p')
  exposed=$(docker image inspect -f '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' "$image")
  [ -n "$port" ] && [ "$exposed" = "$port/tcp " ] || fail "$image: EXPOSE $exposed, but HEALTHCHECK_PORT is '$port'"
  bytes=$(docker image inspect -f '{{.Size}}' "$image")
  mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1000000 }')
  note=""
  [ "$bytes" -lt 40000000 ] || note="  (over the 40 MB aim)"
  sizes+=("$(printf '%-28s %6s MB%s' "$image" "$mb" "$note")")
  ok "$image: uid 10001, entrypoint /usr/local/bin/$s, busybox healthcheck of its EXPOSEd port $port, $mb MB"
done

# --- 5. the stack ------------------------------------------------------------
step "docker compose up -d --wait"
stack_up=1
compose up -d --wait --no-build
ok "every service healthy (up --wait)"

step "running containers: health, read-only root, uid, migrate"
for s in "${SERVICES[@]}"; do
  c=$(compose ps -q "$s")
  health=$(docker inspect -f '{{.State.Health.Status}}' "$c")
  [ "$health" = healthy ] || fail "$s: health $health"
  [ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$c")" = true ] || fail "$s: root filesystem is writable"
  uid=$(docker exec "$c" /usr/local/bin/busybox id -u)
  [ "$uid" = 10001 ] || fail "$s: runs as uid $uid"
  if docker exec "$c" /usr/local/bin/busybox touch /usr/local/bin/probe 2>/dev/null; then
    fail "$s: wrote to its root filesystem"
  fi
  docker exec "$c" /usr/local/bin/busybox touch /tmp/probe || fail "$s: the /tmp tmpfs is not writable"
  ok "$s: healthy, read-only root with writable /tmp, uid 10001"
done

network=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$(compose ps -q postgres)")
psql() { compose exec -T postgres psql -U postgres -tA "$@"; }
for s in "${DB_SERVICES[@]}"; do
  # A fresh database, so the migrations really run: the service creates
  # <DB_NAME>_<service> when it is missing.
  db="migrate_check_$s"
  psql -c "DROP DATABASE IF EXISTS $db" >/dev/null
  if ! docker run --rm --network "$network" --read-only --tmpfs /tmp \
      -e APP_ENV=development -e LOG_FORMAT=text -e DB_HOST=postgres -e DB_PORT=5432 \
      -e DB_USER=postgres -e DB_PASSWORD="$PG_PASSWORD" -e DB_NAME=migrate_check \
      "ecommerce/$s:$TAG" migrate; then
    fail "docker run --rm ecommerce/$s:$TAG migrate exited non-zero"
  fi
  applied=$(psql -d "$db" -c "SELECT count(*) FROM seaql_migrations")
  [ "$applied" -ge 1 ] || fail "$s migrate: no migration recorded in $db"
  tables=$(psql -d "$db" -c "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
  psql -c "DROP DATABASE $db" >/dev/null
  ok "docker run --rm ecommerce/$s:$TAG migrate: exit 0, $applied migrations, $tables tables in a fresh database"
done

# --- 6. docs/api.md's user story --------------------------------------------
step "the curl user story of docs/api.md on $GW"
# json EXPR: EXPR over the JSON document d on stdin (decimals stay exact).
json() { python3 -c 'import decimal, json, sys; d = json.load(sys.stdin, parse_float=decimal.Decimal); print(eval(sys.argv[1]))' "$1"; }
token() { curl -fsS -X POST "$GW/users/login" -H 'Content-Type: application/json' \
  -d "{\"username\":\"$1\",\"password\":\"$2\"}" | json 'd["token"]'; }
register() { curl -fsS -o /dev/null -X POST "$GW/users/register" -H 'Content-Type: application/json' \
  -d "{\"username\":\"$1\",\"email\":\"$1@example.com\",\"password\":\"$2\"}"; }
stock() { curl -fsS "$GW/products/$1" | json 'd["stock"]'; }
order_status() { curl -fsS "$GW/orders/$1" -H "Authorization: Bearer $2" | json 'd["status"]'; }
# wait_status ORDER TOKEN STATUS: polls for up to 30 s.
wait_status() {
  local s=""
  for _ in $(seq 1 60); do
    s=$(order_status "$1" "$2")
    [ "$s" = "$3" ] && return 0
    sleep 0.5
  done
  fail "order $1 is $s after 30 s, expected $3"
}

register alice alice-password
ALICE=$(token alice alice-password)
[ "$(curl -fsS "$GW/users/me" -H "Authorization: Bearer $ALICE" | json 'd["role"]')" = customer ] ||
  fail "alice is not a customer"
ADMIN=$(token admin "$ADMIN_PASSWORD")
LAPTOP=$(curl -fsS -X POST "$GW/products" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d '{"name":"Laptop","category":"Electronics","stock":100,"price":999.99}' | json 'd["id"]')
ok "alice registered, the admin created the Laptop $LAPTOP"

curl -fsS "$GW/products?category=Electronics&page=1&page_size=10" | json '[p["id"] for p in d["products"]]' | grep -q "$LAPTOP" ||
  fail "the Laptop is not listed under Electronics"
body="{\"items\":[{\"product_id\":\"$LAPTOP\",\"quantity\":2}]}"
ORDER=$(curl -fsS -X POST "$GW/orders" -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: alice-checkout-1' -d "$body" | json 'd["id"]')
retry=$(curl -sS -o /tmp/compose-test-retry.json -w '%{http_code}' -X POST "$GW/orders" -H "Authorization: Bearer $ALICE" \
  -H 'Content-Type: application/json' -H 'Idempotency-Key: alice-checkout-1' -d "$body")
[ "$retry" = 200 ] && [ "$(json 'd["id"]' </tmp/compose-test-retry.json)" = "$ORDER" ] ||
  fail "the retry with the same Idempotency-Key answered $retry, not 200 with order $ORDER"
rm -f /tmp/compose-test-retry.json
wait_status "$ORDER" "$ALICE" CONFIRMED
total=$(curl -fsS "$GW/orders/$ORDER" -H "Authorization: Bearer $ALICE" | json 'd["total"]')
[ "$total" = 1999.98 ] || fail "order total $total, expected 1999.98"
[ "$(stock "$LAPTOP")" = 98 ] || fail "stock $(stock "$LAPTOP") after the order, expected 98"
ok "order two: CONFIRMED, total 1999.98, stock 98 (the idempotent retry gave the same order)"

curl -fsS -o /dev/null -X POST "$GW/orders/$ORDER/cancel" -H "Authorization: Bearer $ALICE"
wait_status "$ORDER" "$ALICE" CANCELLED
for _ in $(seq 1 60); do [ "$(stock "$LAPTOP")" = 100 ] && break; sleep 0.5; done
[ "$(stock "$LAPTOP")" = 100 ] || fail "stock $(stock "$LAPTOP") after the cancel, expected 100"
ok "cancel: CANCELLED, stock back to 100"

code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[ "$(code "$GW/orders")" = 401 ] || fail "GET /orders without a token is not 401"
[ "$(code -X POST "$GW/products" -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
  -d '{"name":"Laptop","category":"Electronics","stock":100,"price":999.99}')" = 403 ] || fail "a customer writing products is not 403"
[ "$(code -X POST "$GW/orders" -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
  -d "{\"items\":[{\"product_id\":\"$LAPTOP\",\"quantity\":0}]}")" = 400 ] || fail "a zero quantity is not 400"
ok "errors: 401 without a token, 403 for a customer writing products, 400 for a zero quantity"

# --- 7. burst with a restart -------------------------------------------------
step "burst of $BURST_ORDERS orders, $RESTART_SERVICE restarted in the middle"
register bob bob-password
BOB=$(token bob bob-password)
ITEM=$(curl -fsS -X POST "$GW/products" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d "{\"name\":\"Burst item\",\"category\":\"ComposeTest\",\"stock\":$BURST_STOCK,\"price\":1.50}" | json 'd["id"]')
codes=$(mktemp)
export GW BOB ITEM
# Two clients, each pausing 0.5 s before an order, so the burst lasts longer
# than a restart; each order's HTTP status goes to $codes as it comes.
seq 1 "$BURST_ORDERS" | xargs -P 2 -I{} sh -c \
  'sleep 0.5; code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 20 -X POST "$GW/orders" -H "Authorization: Bearer $BOB" \
     -H "Content-Type: application/json" -H "Idempotency-Key: burst-{}" \
     -d "{\"items\":[{\"product_id\":\"$ITEM\",\"quantity\":1}]}"); echo "$code" >>"$0"' "$codes" &
burst=$!
# The restart starts once 10 orders are answered; orders must still come in
# after the container is back.
for _ in $(seq 1 200); do [ "$(wc -l <"$codes")" -ge 10 ] && break; sleep 0.05; done
answered_before=$(wc -l <"$codes")
restart_at=$(date +%s.%N)
docker restart "$(compose ps -q "$RESTART_SERVICE")" >/dev/null
answered_during=$(wc -l <"$codes")
wait "$burst"
[ "$answered_during" -lt "$BURST_ORDERS" ] ||
  fail "the burst was over before $RESTART_SERVICE was back (restart began after $answered_before answers)"
echo "$RESTART_SERVICE restart began after $answered_before answers and ended after $answered_during"
echo "HTTP statuses of the $BURST_ORDERS POSTs: $(sort "$codes" | uniq -c | awk '{printf "%s x%s  ", $2, $1}')"
[ "$(wc -l <"$codes")" = "$BURST_ORDERS" ] || fail "only $(wc -l <"$codes") of $BURST_ORDERS POSTs answered"
if grep -qvE '^(201|409|503)$' "$codes"; then fail "a POST answered other than 201, 409 or 503"; fi
for _ in $(seq 1 120); do
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q "$RESTART_SERVICE")")" = healthy ] && break
  sleep 0.5
done
echo "$RESTART_SERVICE restarted $(awk -v a="$restart_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s ago, now healthy"
rm -f "$codes"

# Every order bob has (a lost answer still counts) must end CONFIRMED or
# REJECTED, and the stock must be what it was less the confirmed quantity.
orders_json=""
for _ in $(seq 1 120); do
  orders_json=$(curl -fsS "$GW/orders?page=1&page_size=100" -H "Authorization: Bearer $BOB")
  pending=$(json 'sum(o["status"] == "PENDING" for o in d["orders"])' <<<"$orders_json")
  [ "$pending" = 0 ] && break
  sleep 1
done
summary=$(json '" ".join(f"{s}={n}" for s, n in sorted(__import__("collections").Counter(o["status"] for o in d["orders"]).items()))' <<<"$orders_json")
echo "bob's orders: $summary"
[ "$pending" = 0 ] || fail "$pending orders still PENDING 120 s after the burst"
json 'all(o["status"] in ("CONFIRMED", "REJECTED") for o in d["orders"])' <<<"$orders_json" | grep -qx True ||
  fail "an order ended neither CONFIRMED nor REJECTED: $summary"
confirmed=$(json 'sum(i["quantity"] for o in d["orders"] if o["status"] == "CONFIRMED" for i in o["items"])' <<<"$orders_json")
left=$(stock "$ITEM")
[ "$left" -ge 0 ] && [ $((BURST_STOCK - confirmed)) = "$left" ] ||
  fail "stock $left, but $BURST_STOCK less $confirmed confirmed is $((BURST_STOCK - confirmed))"
ok "burst: every order terminal ($summary), stock $left = $BURST_STOCK - $confirmed confirmed"

# --- 8. down -----------------------------------------------------------------
step "docker compose down -v"
compose down -v --remove-orphans
stack_up=""
filter="label=com.docker.compose.project=$PROJECT"
left_over="$(docker ps -aq --filter "$filter") $(docker network ls -q --filter "$filter") $(docker volume ls -q --filter "$filter")"
[ -z "${left_over// /}" ] || fail "left after down -v: $left_over"
ok "down -v: no container, network or volume of $PROJECT left"
step done

echo
echo "image sizes:"
printf '  %s\n' "${sizes[@]}"
echo "timings:"
printf '  %s\n' "${timings[@]}"
echo "compose-test finished in $(( $(date +%s) - started_at )) s"
echo "compose-test: $passed passed, 0 failed"
