#!/usr/bin/env bash
# Offline checks of the Dockerfile, docker-compose.yml, the Helm charts,
# k8s/ and the Tiltfile (scripts/check-packaging.py). Creates .venv/ with the
# pinned tools of scripts/packaging-requirements.txt on first use, and
# reinstalls only when that file changes. No Docker, no cluster, no helm CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
REQS=scripts/packaging-requirements.txt
STAMP="$VENV/.packaging-requirements.sha256"

find_python() {
  for py in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  py=$(find_python) || { echo "check-packaging: needs Python 3.9 or newer (python3)" >&2; exit 1; }
  if ! "$py" -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 ships venv separately.
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      apt-get install -y -q python3-venv >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null; }
      rm -rf "$VENV"
      "$py" -m venv "$VENV"
    else
      echo "check-packaging: '$py -m venv' failed; install python3-venv" >&2
      exit 1
    fi
  fi
fi

want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "check-packaging: installing $(grep -cv '^\s*\(#\|$\)' "$REQS") pinned packages into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
  echo "$want" > "$STAMP"
fi

exec "$VENV/bin/python" scripts/check-packaging.py "$@"
