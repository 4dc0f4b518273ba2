#!/usr/bin/env bash
# Installs the pinned chart/manifest toolchain into .tools/ (git-ignored), using only the Go module
# proxy and PyPI (no GitHub release downloads):
#   .tools/bin/{helm,helmfile,ct,kubeconform}          built with the machine's Go (>= 1.24)
#   .tools/helm/plugins/helm-diff/{plugin.yaml,bin/diff} helm-diff as a helm plugin (helmfile diff/apply)
#   .tools/venv                                         yamllint, yamale, kubernetes-validate
#   .tools/ct/{chart_schema.yaml,lintconf.yaml}         chart-testing's own files, from its module
#   .tools/bin/just                                     the justfile's runner (npm package rust-just)
# Idempotent: a tool is skipped when .tools/stamps/<tool> records the pinned version and the
# binary is present. Force a rebuild with FORCE=1. Use the tools with `source scripts/k8s-env.sh`.
set -euo pipefail

HELM_VERSION=v3.21.4
# Kubernetes minor of helm's k8s.io modules (v0.36.x): helm's default .Capabilities.KubeVersion
# and the lint deprecation check. Without it a `go install`ed helm claims Kubernetes v1.20.
HELM_K8S_MINOR=36
HELMFILE_VERSION=v1.7.4
# helm-diff: the newest release the Go module proxy serves here. v3.10+ (and v3.9.12-v3.9.13,
# v3.9.0-v3.9.4) are refused with 403 and v3.9.5/v3.9.14 fail go.mod checksum verification, so
# v3.9.11 is pinned; docs/relay-deploy.md ("helm-diff pin") says what the older version lacks.
HELM_DIFF_VERSION=v3.9.11
CT_VERSION=v3.14.0
KUBECONFORM_VERSION=v0.7.0
YAMLLINT_VERSION=1.38.0
YAMALE_VERSION=6.1.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# just, for the staging recipes of the justfile: npm's rust-just ships it as one optional package
# per platform. It is installed here, for this platform only, not as a devDependency: a lock file
# must name every platform's package, and a filtered registry that serves only some of them
# leaves `npm ci` refusing the lock.
RUST_JUST_VERSION=1.57.0

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/k8s-env.sh
source "${ROOT}/scripts/k8s-env.sh"
BIN="${TOOLS_DIR}/bin"
mkdir -p "${BIN}" "${HELM_PLUGINS}" "${TOOLS_DIR}/src"
LOG_TAG=install-tools GO_MIN_MINOR=24 GO_WHY="need >= 1.24 (Debian's golang-go is 1.19; use /usr/local/go)"
# shellcheck source=scripts/install-lib.sh
source "${ROOT}/scripts/install-lib.sh"

# build_in_module MODULE VERSION PACKAGE OUTPUT LDFLAGS: go build inside a writable copy of the
# module (the module cache is read-only), honouring its go.mod (including `replace` directives).
build_in_module() {
  local mod="$1" ver="$2" pkg="$3" out="$4" ldflags="$5" src work
  src="$(moddir "${mod}@${ver}")"
  [ -n "${src}" ] || die "could not download ${mod}@${ver} from the Go module proxy"
  work="${TOOLS_DIR}/src/$(basename "${mod}")-${ver}"
  rm -rf "${work}"; cp -r "${src}" "${work}"; chmod -R u+w "${work}"
  (cd "${work}" && go build -trimpath -ldflags "${ldflags}" -o "${out}" "${pkg}")
  rm -rf "${work}"
}

t0=$(date +%s)

# ---------------------------------------------------------------------------------------- helm
if current helm "${HELM_VERSION}+k8s1.${HELM_K8S_MINOR}" "${BIN}/helm"; then
  log "helm ${HELM_VERSION}: present"
else
  need_go
  log "helm ${HELM_VERSION}: go install helm.sh/helm/v3/cmd/helm (takes a few minutes on 2 cores)"
  GOBIN="${BIN}" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${HELM_K8S_MINOR} \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${HELM_K8S_MINOR}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  stamp helm "${HELM_VERSION}+k8s1.${HELM_K8S_MINOR}"
fi

# -------------------------------------------------------------------------------- kubeconform
if current kubeconform "${KUBECONFORM_VERSION}" "${BIN}/kubeconform"; then
  log "kubeconform ${KUBECONFORM_VERSION}: present"
else
  need_go
  log "kubeconform ${KUBECONFORM_VERSION}: go install github.com/yannh/kubeconform/cmd/kubeconform"
  GOBIN="${BIN}" go install -trimpath -ldflags "-s -w -X main.version=${KUBECONFORM_VERSION}" \
    "github.com/yannh/kubeconform/cmd/kubeconform@${KUBECONFORM_VERSION}"
  stamp kubeconform "${KUBECONFORM_VERSION}"
fi

# ------------------------------------------------------------------------------ chart-testing
if current ct "${CT_VERSION}" "${BIN}/ct" "${TOOLS_DIR}/ct/chart_schema.yaml" "${TOOLS_DIR}/ct/lintconf.yaml"; then
  log "chart-testing (ct) ${CT_VERSION}: present"
else
  need_go
  log "chart-testing (ct) ${CT_VERSION}: go build github.com/helm/chart-testing/v3/ct (inside the module)"
  # `go install ct@version` reads the module's version list for deprecations, which the proxy may
  # refuse (403); building inside a copy of the module needs only the pinned version.
  build_in_module "github.com/helm/chart-testing/v3" "${CT_VERSION}" ./ct "${BIN}/ct" \
    "-s -w -X github.com/helm/chart-testing/v3/ct/cmd.Version=${CT_VERSION}"
  ctdir="$(moddir "github.com/helm/chart-testing/v3@${CT_VERSION}")"
  mkdir -p "${TOOLS_DIR}/ct"
  install -m 0644 "${ctdir}/etc/chart_schema.yaml" "${ctdir}/etc/lintconf.yaml" "${TOOLS_DIR}/ct/"
  stamp ct "${CT_VERSION}"
fi

# ------------------------------------------------------------------------------------ helmfile
# helmfile >= v1.4.5 has `replace` directives in go.mod, which `go install mod@version` refuses:
# build inside a writable copy of the module instead.
if current helmfile "${HELMFILE_VERSION}" "${BIN}/helmfile"; then
  log "helmfile ${HELMFILE_VERSION}: present"
else
  need_go
  log "helmfile ${HELMFILE_VERSION}: go build inside a copy of github.com/helmfile/helmfile (the slowest build)"
  build_in_module "github.com/helmfile/helmfile" "${HELMFILE_VERSION}" . "${BIN}/helmfile" \
    "-s -w -X go.szostok.io/version.version=${HELMFILE_VERSION}"
  stamp helmfile "${HELMFILE_VERSION}"
fi

# ----------------------------------------------------------------------------------- helm-diff
# Installed as a helm plugin by hand: `helm plugin install` would run the plugin's install hook,
# which downloads a release binary from GitHub.
diffdir="${HELM_PLUGINS}/helm-diff"
if current helm-diff "${HELM_DIFF_VERSION}" "${diffdir}/bin/diff" "${diffdir}/plugin.yaml"; then
  log "helm-diff ${HELM_DIFF_VERSION}: present (plugin at ${diffdir})"
else
  need_go
  log "helm-diff ${HELM_DIFF_VERSION}: go build inside a copy of github.com/databus23/helm-diff/v3 -> ${diffdir}"
  dsrc=""
  if djson="$(go mod download -json "github.com/databus23/helm-diff/v3@${HELM_DIFF_VERSION}" 2>&1)"; then
    dsrc="$(printf '%s\n' "${djson}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  fi
  if [ -n "${dsrc}" ]; then
    mkdir -p "${diffdir}/bin"
    # Inside a copy of the module, like ct: `go install mod@version` reads the module's version
    # list, which the proxy refuses (403) for helm-diff.
    build_in_module "github.com/databus23/helm-diff/v3" "${HELM_DIFF_VERSION}" . "${diffdir}/bin/diff" \
      "-s -w -X github.com/databus23/helm-diff/v3/cmd.Version=${HELM_DIFF_VERSION#v}"
    # The plugin's install/update hooks download from GitHub: drop them, keep the rest.
    sed '/^hooks:/,/^[^[:space:]]/{/^hooks:/d;/^[[:space:]]/d}' "${dsrc}/plugin.yaml" > "${diffdir}/plugin.yaml"
    stamp helm-diff "${HELM_DIFF_VERSION}"
  else
    derr="$(printf '%s\n' "${djson}" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p')"
    [ "${REQUIRE_HELM_DIFF:-0}" = 1 ] && die "helm-diff ${HELM_DIFF_VERSION} could not be downloaded: ${derr:-${djson}}"
    log "WARNING: helm-diff ${HELM_DIFF_VERSION} could not be downloaded from the Go module proxy:"
    log "WARNING:   ${derr:-${djson}}"
    log "WARNING: helmfile template/lint (and validation) work without it; helmfile diff/apply need it."
    log "WARNING: set REQUIRE_HELM_DIFF=1 to make this fatal."
  fi
fi

# ---------------------------------------------------------------------------- Python (PyPI)
VENV="${TOOLS_DIR}/venv"
pyspec="yamllint==${YAMLLINT_VERSION} yamale==${YAMALE_VERSION} kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
if current python "${pyspec}" "${VENV}/bin/yamllint" "${VENV}/bin/yamale" "${VENV}/bin/kubernetes-validate"; then
  log "PyPI tools (${pyspec}): present in ${VENV}"
else
  command -v python3 >/dev/null 2>&1 || die "python3 not found"
  log "PyPI tools: python3 -m venv ${VENV}; pip install ${pyspec}"
  if ! python3 -m venv "${VENV}" 2>/dev/null; then
    log "python3 -m venv failed: installing Debian's python3-venv"
    apt-get install -y -qq python3-venv >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
    python3 -m venv "${VENV}"
  fi
  # shellcheck disable=SC2086
  "${VENV}/bin/pip" install --quiet --disable-pip-version-check ${pyspec}
  stamp python "${pyspec}"
fi
for t in yamllint yamale kubernetes-validate; do ln -sf "../venv/bin/${t}" "${BIN}/${t}"; done

# ------------------------------------------------------------------------------- just (npm)
JUSTDIR="${TOOLS_DIR}/just"
if current just "${RUST_JUST_VERSION}" "${JUSTDIR}/node_modules/.bin/just"; then
  log "just (rust-just ${RUST_JUST_VERSION}): present in ${JUSTDIR}"
else
  command -v npm >/dev/null 2>&1 || die "npm not found"
  log "just: npm install rust-just@${RUST_JUST_VERSION} into ${JUSTDIR}"
  rm -rf "${JUSTDIR}"; mkdir -p "${JUSTDIR}"
  printf '{"name":"tokenplace-relay-tools-just","private":true}\n' > "${JUSTDIR}/package.json"
  npm install --prefix "${JUSTDIR}" --no-audit --no-fund --no-save --loglevel=error "rust-just@${RUST_JUST_VERSION}" >/dev/null
  stamp just "${RUST_JUST_VERSION}"
fi
ln -sf "../just/node_modules/.bin/just" "${BIN}/just"

log "versions:"
log "  helm        $("${BIN}/helm" version --template '{{.Version}}')"
log "  helmfile    $("${BIN}/helmfile" --version 2>/dev/null | head -1)"
log "  ct          $("${BIN}/ct" version 2>/dev/null | sed -n 's/^Version:[[:space:]]*//p')"
log "  kubeconform $("${BIN}/kubeconform" -v)"
log "  just        $("${BIN}/just" --version)"
if [ -x "${diffdir}/bin/diff" ]; then log "  helm-diff   $("${BIN}/helm" diff version 2>/dev/null)"; else log "  helm-diff   MISSING"; fi
log "  yamllint    $("${BIN}/yamllint" --version)"
log "  python      ${pyspec}"
log "done in $(( $(date +%s) - t0 ))s; use: source scripts/k8s-env.sh"
