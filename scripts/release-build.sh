#!/usr/bin/env bash
# The release binaries of the six services and loadgen, with the package set
# the Dockerfile's builder uses: features unify over the packages built, so
# another set gives the dependencies other features and their functions other
# symbol names than those tools/link-order/<service>.txt list.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo build --release --locked -p gateway -p inventory -p order -p user -p producer -p consumer -p loadgen "$@"
