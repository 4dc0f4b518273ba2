# shellcheck shell=bash
# Source me: puts the project's pinned chart toolchain (.tools/, see scripts/install-tools.sh) first
# on PATH and keeps helm's plugins/cache/config inside .tools so nothing global is needed.
#   source scripts/k8s-env.sh && helmfile -e staging diff
_k8s_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TOOLS_DIR="${_k8s_root}/.tools"
# .tools/k8s/bin: kubectl (and the local control plane) at the staging cluster's Kubernetes minor,
# from scripts/install-k8s.sh; ahead of any older system kubectl (kubectl supports +/-1 minor).
export PATH="${TOOLS_DIR}/bin:${TOOLS_DIR}/k8s/bin:${PATH}"
if [ -x /usr/local/go/bin/go ]; then
  case ":${PATH}:" in *":/usr/local/go/bin:"*) ;; *) export PATH="${PATH}:/usr/local/go/bin" ;; esac
fi
# helm finds helm-diff (built by install-tools.sh, not `helm plugin install`) here.
export HELM_PLUGINS="${TOOLS_DIR}/helm/plugins"
export HELM_CACHE_HOME="${TOOLS_DIR}/helm/cache"
export HELM_CONFIG_HOME="${TOOLS_DIR}/helm/config"
export HELM_DATA_HOME="${TOOLS_DIR}/helm/data"
# helmfile v1 otherwise checks GitHub for a newer release on every run.
export HELMFILE_UPGRADE_NOTICE_DISABLED=1
unset _k8s_root
