#!/usr/bin/env bash
# System packages the container-contract tests need (test/container/):
#   bwrap            bubblewrap: run the x64 binary as uid 65532 on a read-only, near-empty root
#   qemu-aarch64     qemu-user: run the arm64 binary (4 KB and 16 KB page sizes)
#   /usr/aarch64-linux-gnu   libc6-arm64-cross: the arm64 glibc for `qemu-aarch64 -L`
#   ldd, setpriv     libc-bin, util-linux (always present on Debian)
#   (shellcheck)     lints the workflows' run: scripts through actionlint (scripts/lint-workflows.sh)
#   redis-server     the shared-state tests run a private one on a loopback port (Debian 12: 7.0)
#   nginx            a round-robin front for the two-replica interop test
#   wrk              the load generator of npm run bench (broker cycles; its smoke test)
#   python3-venv     the token.place peers' interop tests build a venv from PyPI
#   chromium         the chat page's browser test drives Debian's Chromium headless (playwright-core;
#                    nothing downloads a browser), with fonts-dejavu-core for its screenshot
# Idempotent: does nothing (and touches no network) when everything is already installed.
# Runs as root on a fresh Debian machine (CI); elsewhere it uses sudo if available.
set -euo pipefail

need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || need+=(libc6-arm64-cross)
command -v ldd >/dev/null 2>&1 || need+=(libc-bin)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
# Debian's chromium is a real package; where apt has none (Ubuntu ships it as a snap) the browser
# test looks for google-chrome or CHROMIUM_PATH instead, and under CI=true fails if it finds none.
if [ ! -x /usr/bin/chromium ] && grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then need+=(chromium fonts-dejavu-core); fi

if [ ${#need[@]} -eq 0 ]; then
  echo "install-system-deps: bubblewrap, qemu-user, libc6-arm64-cross, shellcheck, redis-server, nginx, wrk, python3-venv, chromium already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-system-deps: need root (or sudo) to install: ${need[*]}" >&2
    exit 1
  fi
fi

echo "install-system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
command -v bwrap qemu-aarch64 redis-server >/dev/null
ls /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 >/dev/null
echo "install-system-deps: done"
