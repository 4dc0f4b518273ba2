# shellcheck shell=bash
# Shared by scripts/install-tools.sh and scripts/install-k8s.sh (sourced, not run): logging, the
# per-tool stamps that make both idempotent, the Go version check and module lookups.
# The caller sets TOOLS_DIR (scripts/k8s-env.sh does), LOG_TAG, GO_MIN_MINOR and GO_WHY first.

STAMPS="${TOOLS_DIR}/stamps"
mkdir -p "${STAMPS}"

log() { printf '[%s] %s\n' "${LOG_TAG}" "$*"; }
die() { printf '[%s] ERROR: %s\n' "${LOG_TAG}" "$*" >&2; exit 1; }

# current TOOL VERSION [FILE...]: true when the stamp matches and every file exists (FORCE=1: never).
current() {
  local tool="$1" version="$2"; shift 2
  [ "${FORCE:-0}" = 1 ] && return 1
  [ "$(cat "${STAMPS}/${tool}" 2>/dev/null)" = "${version}" ] || return 1
  local f; for f in "$@"; do [ -e "$f" ] || return 1; done
}
stamp() { printf '%s\n' "$2" > "${STAMPS}/$1"; }

# need_go: the machine's Go (>= 1.GO_MIN_MINOR) for every module; never download a toolchain.
need_go() {
  command -v go >/dev/null 2>&1 || die "go not found (looked on PATH and /usr/local/go/bin); install Go >= 1.${GO_MIN_MINOR}"
  local v; v="$(go env GOVERSION)"; v="${v#go}"
  local major="${v%%.*}" rest="${v#*.}"; local minor="${rest%%.*}"
  if [ "${major}" -lt 1 ] || { [ "${major}" -eq 1 ] && [ "${minor}" -lt "${GO_MIN_MINOR}" ]; }; then
    die "Go ${v} is too old: ${GO_WHY}"
  fi
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false"
}

# modfield MODULE@VERSION FIELD: a field (Dir, GoMod) of `go mod download -json`; Dir is the
# module's read-only copy in the module cache.
modfield() { go mod download -json "$1" | sed -n "s/^[[:space:]]*\"$2\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p"; }
moddir() { modfield "$1" Dir; }
