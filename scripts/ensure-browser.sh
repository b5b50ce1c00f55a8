#!/usr/bin/env bash
# Makes sure the storefront's browser tests can run: Debian's Chromium at
# /usr/bin/chromium (playwright-core drives it; it never downloads a browser
# of its own) and e2e/browser/node_modules matching its package-lock.json.
# Safe to run again and again; does nothing when both are in place.
set -euo pipefail

log() { echo "[browser] $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

root=$(cd "$(dirname "$0")/.." && pwd)
browser_dir="$root/e2e/browser"

if [ ! -x /usr/bin/chromium ]; then
  log "installing Debian's chromium"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
fi

command -v npm >/dev/null || { log "npm is missing: install Node.js 20 or newer"; exit 1; }

# node_modules is stale when it was installed from another lock file; the
# stamp records the hash of the one it was installed from.
stamp="$browser_dir/node_modules/.installed-from-lock"
want=$(sha256sum "$browser_dir/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "npm ci in e2e/browser"
  (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
