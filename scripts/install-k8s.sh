#!/usr/bin/env bash
# Builds a small, real Kubernetes control plane into .tools/k8s/ (git-ignored) for
# scripts/k8s-cluster-test.sh, using only the Go module proxy (no GitHub release downloads):
#   .tools/k8s/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#       k8s.io/kubernetes at the staging cluster's minor, built through a wrapper module
#   .tools/k8s/bin/etcd        go.etcd.io/etcd/server/v3 through a wrapper main
#   .tools/k8s/bin/kwok        sigs.k8s.io/kwok: fake nodes whose pods go Ready by rule
#   .tools/k8s/kwok/stages.yaml  kwok's own stage YAMLs (node, pod, volume) + a helm-test stage
#   .tools/k8s/crds/*.yaml     the Prometheus Operator, cert-manager and Traefik CRDs, from the
#                              operators' own modules
# Same pattern as scripts/install-tools.sh: idempotent, one stamp per component in
# .tools/stamps/k8s-*, FORCE=1 rebuilds. Cold it takes about 8 min on 2 cores (peak RSS ~1.9 GB,
# ~5 GB of Go caches); warm, a few seconds. `source scripts/k8s-env.sh` puts .tools/k8s/bin on PATH.
set -euo pipefail

# Kubernetes of the staging k3s cluster (environments/staging.helmfile.yaml kubeVersion v1.35):
# the newest v1.35 patch the module proxy serves. Its staging modules (k8s.io/api, ...) are
# published as v0.35.x.
K8S_VERSION=v1.35.4
# Kubernetes 1.31+ documents etcd >= 3.5.11; Debian's etcd-server (3.4.23) is too old.
ETCD_VERSION=v3.6.8
KWOK_VERSION=v0.8.0
# CRD sources (each a module zip on the proxy; the CRDs are plain YAML inside).
PROMETHEUS_OPERATOR_VERSION=v0.85.0
CERT_MANAGER_VERSION=v1.21.2
TRAEFIK_VERSION=v3.7.13

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/k8s-env.sh
source "${ROOT}/scripts/k8s-env.sh"
K8S_DIR="${TOOLS_DIR}/k8s"
KBIN="${K8S_DIR}/bin"
mkdir -p "${KBIN}" "${K8S_DIR}/src" "${K8S_DIR}/kwok" "${K8S_DIR}/crds"
# k8s.io/kubernetes v1.35 declares go 1.25.
LOG_TAG=install-k8s GO_MIN_MINOR=25 GO_WHY="Kubernetes ${K8S_VERSION} needs >= 1.25"
# shellcheck source=scripts/install-lib.sh
source "${ROOT}/scripts/install-lib.sh"

t0=$(date +%s)

# ------------------------------------------------------------------ kube control plane + kubectl
# k8s.io/kubernetes replaces each staging module (k8s.io/api, ...) with ./staging/src/..., which
# the module zip leaves out, so `go install k8s.io/kubernetes/cmd/...@v` cannot work. A wrapper
# module requires it and points every one of those replaces at the published v0.MINOR.PATCH.
# The version ldflags are what `kube-apiserver --version` and discovery report; without them the
# server says v0.0.0-master and helm refuses the chart's kubeVersion constraint.
kube_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
if current k8s-kube "${K8S_VERSION}" "${kube_bins[@]/#/${KBIN}/}"; then
  log "kube-apiserver, kube-controller-manager, kube-scheduler, kubectl ${K8S_VERSION}: present"
else
  need_go
  log "kubernetes ${K8S_VERSION}: go build of ${kube_bins[*]} (about 6 min cold, 1.9 GB RSS)"
  staging="v0.${K8S_VERSION#v1.}"
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  gomod="$(modfield "k8s.io/kubernetes@${K8S_VERSION}" GoMod)"
  [ -n "${gomod}" ] || die "could not download k8s.io/kubernetes@${K8S_VERSION} from the Go module proxy"
  work="${K8S_DIR}/src/kube"
  rm -rf "${work}"; mkdir -p "${work}"
  {
    printf 'module example.local/kubebin\n\ngo 1.25.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "${K8S_VERSION}"
    sed -n '/^replace (/,/^)/p' "${gomod}" | grep '=>' | awk -v v="${staging}" '{print "\t"$1" => "$1" "v}'
    printf ')\n'
  } > "${work}/go.mod"
  grep -q "k8s.io/api => k8s.io/api ${staging}" "${work}/go.mod" \
    || die "k8s.io/kubernetes@${K8S_VERSION}'s go.mod has no staging replaces in the expected form"
  ld="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} \
    -X k8s.io/component-base/version.gitTreeState=clean"
  pkgs=(); for b in "${kube_bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${b}"); done
  (cd "${work}" && go build -mod=mod -trimpath -ldflags "${ld}" -o "${KBIN}/" "${pkgs[@]}")
  "${KBIN}/kube-apiserver" --version | grep -qx "Kubernetes ${K8S_VERSION}" \
    || die "kube-apiserver reports $("${KBIN}/kube-apiserver" --version), expected ${K8S_VERSION}"
  stamp k8s-kube "${K8S_VERSION}"
fi

# ----------------------------------------------------------------------------------------- etcd
# go.etcd.io/etcd/server/v3 has relative `replace ../api` directives; those are ignored in a
# dependency, so a one-line wrapper main that calls etcdmain.Main builds cleanly.
if current k8s-etcd "${ETCD_VERSION}" "${KBIN}/etcd"; then
  log "etcd ${ETCD_VERSION}: present"
else
  need_go
  log "etcd ${ETCD_VERSION}: go build through a wrapper main"
  work="${K8S_DIR}/src/etcd"
  rm -rf "${work}"; mkdir -p "${work}"
  cat > "${work}/main.go" <<'EOF'
// Wrapper main: etcd's own main module cannot be `go install`ed (relative replaces).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  {
    printf 'module example.local/etcdbin\n\ngo 1.25.0\n\nrequire (\n'
    for m in server api client/pkg client pkg; do printf '\tgo.etcd.io/etcd/%s/v3 %s\n' "${m}" "${ETCD_VERSION}"; done
    printf ')\n'
  } > "${work}/go.mod"
  (cd "${work}" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "${KBIN}/etcd" .)
  "${KBIN}/etcd" --version | grep -q "etcd Version: ${ETCD_VERSION#v}" \
    || die "etcd reports $("${KBIN}/etcd" --version | head -1), expected ${ETCD_VERSION}"
  stamp k8s-etcd "${ETCD_VERSION}"
fi

# ----------------------------------------------------------------------------------------- kwok
if current k8s-kwok "${KWOK_VERSION}" "${KBIN}/kwok"; then
  log "kwok ${KWOK_VERSION}: present"
else
  need_go
  log "kwok ${KWOK_VERSION}: go build inside the module"
  src="$(modfield "sigs.k8s.io/kwok@${KWOK_VERSION}" Dir)"
  [ -n "${src}" ] || die "could not download sigs.k8s.io/kwok@${KWOK_VERSION}"
  work="${K8S_DIR}/src/kwok"
  # Built inside a writable copy: `go install mod@v` reads the version list, which the proxy may
  # refuse (403), and the module cache is read-only.
  rm -rf "${work}"; cp -r "${src}" "${work}"; chmod -R u+w "${work}"
  (cd "${work}" && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" \
    -o "${KBIN}/kwok" ./cmd/kwok)
  rm -rf "${work}"
  stamp k8s-kwok "${KWOK_VERSION}"
fi

# kwok run on its own (without kwokctl) has no stages and exits "no stages found": concatenate
# the module's own stage YAMLs. Volume stages fake a provisioner (the Valkey StatefulSet's PVC);
# their StorageClass is renamed from `kwok-volume` to k3s' default `local-path`, so values that
# name k3s' class bind as they would on the staging cluster. One extra stage completes helm test hook pods:
# kwok only completes pods owned by a Job, and `helm test` runs a bare Pod.
STAGES="${K8S_DIR}/kwok/stages.yaml"
SC="${K8S_DIR}/kwok/storage-class.yaml"
if current k8s-kwok-stages "${KWOK_VERSION}+helm-test+local-path" "${STAGES}" "${SC}"; then
  log "kwok stages: present"
else
  need_go
  kdir="$(modfield "sigs.k8s.io/kwok@${KWOK_VERSION}" Dir)/kustomize/stage"
  {
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
      volume/fast/pvc-provision.yaml volume/fast/pv-bind.yaml volume/fast/pvc-delete.yaml volume/fast/pv-delete.yaml; do
      [ -f "${kdir}/${f}" ] || die "kwok ${KWOK_VERSION} has no stage ${f}"
      printf -- '---\n'; sed "s/'kwok-volume'/'local-path'/g" "${kdir}/${f}"
    done
    printf -- '---\n'
    sed -e 's/^  name: pod-complete$/  name: pod-complete-helm-test/' \
      -e "s/'\\.metadata\\.ownerReferences\\.\\[\\]\\.kind'/'.metadata.annotations[\"helm.sh\\/hook\"]'/" \
      -e "s/- 'Job'$/- 'test'/" "${kdir}/pod/fast/pod-complete.yaml"
  } > "${STAGES}.tmp"
  if ! grep -q 'name: pod-complete-helm-test' "${STAGES}.tmp" || ! grep -q 'helm.sh/hook' "${STAGES}.tmp"; then
    die "could not derive the helm-test stage from kwok's pod-complete.yaml"
  fi
  mv "${STAGES}.tmp" "${STAGES}"
  sed 's/^  name: kwok-volume$/  name: local-path/' "${kdir}/volume/fast/storage-class.yaml" >"${SC}"
  if ! grep -q "^  name: local-path$" "${SC}" || [ "$(grep -c "'local-path'" "${STAGES}")" -lt 4 ]; then
    die "could not rename kwok's volume StorageClass to local-path"
  fi
  stamp k8s-kwok-stages "${KWOK_VERSION}+helm-test+local-path"
fi

# ----------------------------------------------------------------------------------------- CRDs
crdspec="prometheus-operator ${PROMETHEUS_OPERATOR_VERSION}, cert-manager ${CERT_MANAGER_VERSION}, traefik ${TRAEFIK_VERSION}"
CRDS="${K8S_DIR}/crds"
if current k8s-crds "${crdspec}" "${CRDS}/prometheus-operator.yaml" "${CRDS}/cert-manager.yaml" "${CRDS}/traefik.yaml"; then
  log "CRDs (${crdspec}): present"
else
  need_go
  log "CRDs: ${crdspec} from their module zips"
  rm -f "${CRDS}"/*.yaml
  d="$(modfield "github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}" Dir)"
  [ -n "${d}" ] || die "could not download prometheus-operator ${PROMETHEUS_OPERATOR_VERSION}"
  # Only the two kinds the chart renders: the other Prometheus Operator CRDs are large and unused.
  for k in servicemonitors prometheusrules; do
    printf -- '---\n'; cat "${d}/example/prometheus-operator-crd/monitoring.coreos.com_${k}.yaml"
  done > "${CRDS}/prometheus-operator.yaml"
  d="$(modfield "github.com/cert-manager/cert-manager@${CERT_MANAGER_VERSION}" Dir)"
  [ -n "${d}" ] || die "could not download cert-manager ${CERT_MANAGER_VERSION}"
  for f in "${d}"/deploy/crds/*.yaml; do printf -- '---\n'; cat "${f}"; done > "${CRDS}/cert-manager.yaml"
  d="$(modfield "github.com/traefik/traefik/v3@${TRAEFIK_VERSION}" Dir)"
  [ -n "${d}" ] || die "could not download traefik ${TRAEFIK_VERSION}"
  cp "${d}/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml" "${CRDS}/traefik.yaml"
  chmod u+w "${CRDS}"/*.yaml
  for f in "${CRDS}"/*.yaml; do grep -q 'kind: CustomResourceDefinition' "${f}" || die "${f} holds no CRD"; done
  stamp k8s-crds "${crdspec}"
fi

log "versions:"
log "  $("${KBIN}/kube-apiserver" --version)"
log "  kubectl $("${KBIN}/kubectl" version --client -o json | sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p' | head -1)"
log "  etcd $("${KBIN}/etcd" --version | sed -n 's/^etcd Version: //p')"
log "  kwok $("${KBIN}/kwok" --version 2>/dev/null | head -1)"
log "  CRDs: $(cat "${CRDS}"/*.yaml | grep -c '^kind: CustomResourceDefinition') (${crdspec})"
log "done in $(( $(date +%s) - t0 ))s; run: bash scripts/k8s-cluster-test.sh"
