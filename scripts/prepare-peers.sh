#!/usr/bin/env bash
# Builds the Python venv the interop tests run upstream's unmodified peers in (upstream's runtime
# requirements from PyPI, about 30 s once, kept in TP_VENV, default /tmp/tp-e2e-venv), with the
# peers' own bootstrap (peers-lib.sh's tp_prepare, beside the pinned upstream tree). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
lib=${TP_PEERS_DIR:-../shared/peers}/peers-lib.sh
if [ ! -f "$lib" ]; then
  echo "prepare-peers: no upstream peers at $lib (set TP_PEERS_DIR)" >&2
  [ "${CI:-}" = true ] && exit 1
  exit 0
fi
# shellcheck source=/dev/null
source "$lib"
tp_prepare
echo "prepare-peers: $TP_PY ready (upstream $TP_SHA)"
