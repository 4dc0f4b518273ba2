#!/usr/bin/env bash
# Offline validation of the Helm chart and the Helmfile environments (npm run validate:manifests).
#   1. self-test: a deliberately broken Deployment and ServiceMonitor must be reported INVALID
#      (not "could not find schema"), and valid ones must pass;
#   2. helm lint --strict for every charts/*/ci/*-values.yaml, for each Kubernetes version;
#   3. helm template of every ci scenario (with the monitoring.coreos.com APIs) through
#      kubeconform -strict, for each Kubernetes version;
#   4. helmfile -e dev / -e staging: lint, template, kubeconform for each Kubernetes version;
#   5. ct lint --all with chart-testing's chart schema and lint config (.ct/).
# Usage: scripts/validate-manifests.sh [--files FILE...]   (--files: only kubeconform the files)
# Env: K8S_VERSIONS (default "1.28.0 1.35.0 1.37.0": the oldest supported (Chart kubeVersion),
# the k3s minor the Helmfile environments target, the newest kubernetes-validate ships).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "${ROOT}"
# shellcheck source=scripts/k8s-env.sh
source scripts/k8s-env.sh
# shellcheck source=scripts/k8s-kubeconform.sh
source scripts/k8s-kubeconform.sh

K8S_VERSIONS="${K8S_VERSIONS:-1.28.0 1.35.0 1.37.0}"
MONITORING_APIS=(--api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions monitoring.coreos.com/v1/PrometheusRule)
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT
t0=$(date +%s)
SUMMARY=()

log() { printf '[validate] %s\n' "$*"; }
fail() { printf '[validate] FAILED: %s\n' "$*" >&2; exit 1; }
section() { printf '\n[validate] == %s (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }

for tool in helm helmfile kubeconform ct yamllint yamale; do
  command -v "${tool}" >/dev/null 2>&1 || fail "${tool} not found: run bash scripts/install-tools.sh"
done
# shellcheck disable=SC2086
k8s_prepare_schemas ${K8S_VERSIONS}

# kc LABEL FILE: kubeconform FILE against every version; fail unless all resources are valid.
kc() {
  local label="$1" file="$2" v out
  [ -s "${file}" ] || fail "${label}: nothing rendered"
  for v in ${K8S_VERSIONS}; do
    if ! out="$(k8s_kubeconform "${v}" "${file}" 2>&1)"; then
      printf '%s\n' "${out}" >&2
      fail "${label}: kubeconform (Kubernetes ${v})"
    fi
    printf '%s\n' "${out}" | grep -v '^Summary:' || true
    local s; s="$(printf '%s\n' "${out}" | grep '^Summary:' | sed 's/^Summary: //')"
    log "kubeconform ${label} @${v}: ${s}"
    SUMMARY+=("${label} @${v}: ${s}")
  done
}

# ------------------------------------------------------------------------------- --files mode
if [ "${1:-}" = "--files" ]; then
  shift
  [ "$#" -gt 0 ] || fail "--files needs at least one file"
  status=0
  for v in ${K8S_VERSIONS}; do
    k8s_kubeconform "${v}" "$@" || status=1
  done
  exit "${status}"
fi

# ---------------------------------------------------------------------------------- self-test
section "self-test: the validation must reject broken manifests"
for v in ${K8S_VERSIONS}; do
  if out="$(k8s_kubeconform "${v}" scripts/k8s-fixtures/broken.yaml 2>&1)"; then
    printf '%s\n' "${out}" >&2; fail "self-test: kubeconform accepted a broken manifest (Kubernetes ${v})"
  fi
  if printf '%s\n' "${out}" | grep -Eqi 'could not find schema|failed downloading|no such host|error while'; then
    printf '%s\n' "${out}" >&2; fail "self-test: schemas could not be loaded offline (Kubernetes ${v})"
  fi
  printf '%s\n' "${out}" | grep -q 'Summary: 2 resources found .* Valid: 0, Invalid: 2, Errors: 0' \
    || { printf '%s\n' "${out}" >&2; fail "self-test: expected both broken resources to be INVALID (Kubernetes ${v})"; }
  k8s_kubeconform "${v}" scripts/k8s-fixtures/good.yaml >/dev/null || fail "self-test: a valid manifest was rejected (Kubernetes ${v})"
  log "self-test @${v}: broken Deployment + ServiceMonitor -> INVALID (2/2), valid ones pass"
done

# ------------------------------------------------------------------------- chart: lint/render
for chart in charts/*/; do
  chart="${chart%/}"
  name="$(basename "${chart}")"
  scenarios=("${chart}"/ci/*-values.yaml)
  [ -e "${scenarios[0]}" ] || fail "${chart}: no ci/*-values.yaml scenarios"
  section "helm lint --strict ${name}"
  for v in ${K8S_VERSIONS}; do
    for f in "${scenarios[@]}"; do
      helm lint --strict --quiet "${chart}" --values "${f}" --kube-version "${v}" >"${WORK}/lint.out" 2>&1 \
        || { cat "${WORK}/lint.out" >&2; fail "helm lint ${f} (Kubernetes ${v})"; }
      log "helm lint --strict $(basename "${f}") @${v}: ok"
    done
  done
  section "helm template ${name} | kubeconform"
  for f in "${scenarios[@]}"; do
    s="$(basename "${f}" -values.yaml)"
    for v in ${K8S_VERSIONS}; do
      out="${WORK}/${name}-${s}-${v}.yaml"
      helm template "${name}" "${chart}" --namespace tokenplace --values "${f}" \
        --kube-version "${v}" "${MONITORING_APIS[@]}" >"${out}" 2>"${WORK}/tpl.err" \
        || { cat "${WORK}/tpl.err" >&2; fail "helm template ${f} (Kubernetes ${v})"; }
      # Validate the render made for this version against this version only.
      K8S_VERSIONS="${v}" kc "${name}/${s}" "${out}"
    done
  done
done

# ---------------------------------------------------------------------------------- helmfile
for env in dev staging; do
  section "helmfile -e ${env}: lint, template, kubeconform"
  helmfile -e "${env}" lint --skip-deps >"${WORK}/hf-lint.out" 2>&1 \
    || { cat "${WORK}/hf-lint.out" >&2; fail "helmfile -e ${env} lint"; }
  grep -E 'linted|failed' "${WORK}/hf-lint.out" | sed 's/^/[validate]   /' || true
  log "helmfile -e ${env} lint: ok"
  helmfile -e "${env}" template --skip-deps >"${WORK}/hf-${env}.yaml" 2>"${WORK}/hf-tpl.err" \
    || { cat "${WORK}/hf-tpl.err" >&2; fail "helmfile -e ${env} template"; }
  kinds="$(grep -E '^kind: ' "${WORK}/hf-${env}.yaml" | sed 's/^kind: //' | sort | uniq -c | awk '{printf "%s%s=%s", (NR>1?", ":""), $2, $1}')"
  log "helmfile -e ${env} template: ${kinds}"
  kc "helmfile/${env}" "${WORK}/hf-${env}.yaml"
done

# ---------------------------------------------------------------------------------------- ct
section "ct lint --all"
ct lint --config .ct/ct.yaml --all \
  --lint-conf .ct/lintconf.yaml --chart-yaml-schema .ct/chart_schema.yaml \
  >"${WORK}/ct.out" 2>&1 || { cat "${WORK}/ct.out" >&2; fail "ct lint"; }
grep -E 'Linting chart|✔︎|All charts linted|Error' "${WORK}/ct.out" | sed 's/^/[validate]   /' || true
log "ct lint --all: ok"

section "summary"
for line in "${SUMMARY[@]}"; do log "  ${line}"; done
log "manifests valid for Kubernetes ${K8S_VERSIONS// /, } in $(( $(date +%s) - t0 ))s"
