#!/usr/bin/env bash
# The chart and the Helmfile environments against a real Kubernetes API server (CI step of .ci/run;
# an operator runs the same with `bash scripts/k8s-cluster-test.sh`).
#
# Prerequisites (everything lands in .tools/, nothing global; no Docker, no root needed):
#   bash scripts/install-tools.sh   helm, helmfile, helm-diff (helm plugin), ct
#   bash scripts/install-k8s.sh     etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#                                   kubectl, kwok, kwok's stages, the CRDs
#   openssl, curl, git (ct), python3; free TCP ports on 127.0.0.1 (defaults below, the next free
#   one is taken when a default is busy; an explicitly set port must be free).
#
# What it does: starts etcd, the control plane and kwok bound to 127.0.0.1 only (state in a temp
# dir, every process stopped by its recorded PID on every exit path), registers fake arm64 nodes
# (kwok: pods become Ready by rule, no container ever runs), installs the Prometheus Operator,
# cert-manager and Traefik CRDs, then runs counted checks (PASS/FAIL each, a final
# `N passed, N failed` line, exit 1 on any failure): fixtures and every ci/*-values.yaml through the
# server's validation, `helmfile -e staging apply` into a Pod Security `restricted` namespace with
# the runbook's Secret, rollout, helm test, no-op re-apply, a rolling change, the bundled Valkey,
# the failure paths (unschedulable rollout -> atomic rollback; no Prometheus Operator CRDs -> the
# chart's own message), `helmfile -e dev apply`, `ct install --all`, `helmfile destroy` leaving
# nothing behind, and the justfile's staging recipes when there is a justfile.
#
# KUBECONFIG points at the temporary cluster for the whole run: the operator's own clusters and
# ~/.kube are never touched.
#
# Environment knobs:
#   K8S_TEST_ETCD_PORT (2379) K8S_TEST_ETCD_PEER_PORT (2380) K8S_TEST_APISERVER_PORT (6443)
#   K8S_TEST_KCM_PORT (10257) K8S_TEST_SCHEDULER_PORT (10259)
#   K8S_TEST_WAIT=120         seconds any single wait may take (rollouts, deletions)
#   K8S_TEST_FAIL_TIMEOUT=20  helm timeout (s) of the deliberately failing rollout (TOKENPLACE_HELM_TIMEOUT)
#   K8S_TEST_KEEP=1           keep the state dir (logs, kubeconfig) even on success
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "${ROOT}"
# shellcheck source=scripts/k8s-env.sh
source scripts/k8s-env.sh
KBIN="${TOOLS_DIR}/k8s/bin"
K8S_DIR="${TOOLS_DIR}/k8s"

RELEASE=tokenplace-relay
NS=tokenplace
# The Secret the staging runbook (docs/sugarkube-staging.md §1) creates before the first apply.
SECRET=tokenplace-relay-secrets
WAIT="${K8S_TEST_WAIT:-120}"
FAIL_TIMEOUT="${K8S_TEST_FAIL_TIMEOUT:-20}"
# Fake nodes: two Raspberry Pi 5-like arm64 nodes on a 4 KB-page kernel (labelled as the runbook
# says) and one arm64 node without the label (a Pi still on the 16 KB kernel): the chart's
# affinity must keep every pod off it.
NODES_4K=(kwok-pi-4k-0 kwok-pi-4k-1)
NODE_16K=kwok-pi-16k
PAGE_LABEL=tokenplace.io/page-size

t0=$(date +%s)
PASSED=0
FAILED=0
ST=""

log() { printf '[k8s-test] %s\n' "$*"; }
elapsed() { echo "$(( $(date +%s) - t0 ))"; }

summary() {
  printf '\n%d passed, %d failed\n' "${PASSED}" "${FAILED}"
}

# --------------------------------------------------------------------------- process handling
# The components are started inside a check's subshell, so their PIDs live in $ST/pids (not in
# a shell variable). A PID is only signalled while its command line still names $ST: never a
# process that merely reused the number.
ours() {
  [ -r "/proc/$1/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "${ST}" || return 1
  # A zombie is already gone: it only waits to be reaped.
  ! grep -q '^[0-9]* (.*) Z ' "/proc/$1/stat" 2>/dev/null
}
stop_all() {
  [ -n "${ST}" ] && [ -f "${ST}/pids" ] || return 0
  local pid name
  while read -r pid name; do
    ours "${pid}" || continue
    kill -TERM "${pid}" 2>/dev/null
    for _ in $(seq 1 75); do ours "${pid}" || break; sleep 0.2; done
    if ours "${pid}"; then
      log "${name} (pid ${pid}) still running 15 s after SIGTERM: SIGKILL"
      kill -KILL "${pid}" 2>/dev/null
    fi
  done < <(tac "${ST}/pids")
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  if [ -n "${ST}" ] && [ -d "${ST}" ]; then
    if [ "${K8S_TEST_KEEP:-0}" = 1 ] || [ "${rc}" -ne 0 ]; then
      log "state, component logs and kubeconfig kept in ${ST}"
    else
      rm -rf "${ST}"
    fi
  fi
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: run in the background, output to $ST/logs/NAME.log, PID recorded.
start() {
  local name="$1"; shift
  "$@" >"${ST}/logs/${name}.log" 2>&1 &
  printf '%s %s\n' "$!" "${name}" >>"${ST}/pids"
}

alive_all() {
  local pid name
  while read -r pid name; do
    if ! ours "${pid}"; then
      log "${name} exited; last lines of its log:"
      tail -n 20 "${ST}/logs/${name}.log" | sed 's/^/    /'
      return 1
    fi
  done <"${ST}/pids"
}

# ----------------------------------------------------------------------------------- checks
# check NAME FUNCTION [ARGS...]: runs FUNCTION in a subshell with errexit (any failing command
# fails the check), output to a log printed on failure. A function may `note` a one-line detail.
# The result is in CHECK_RC. Never call check in a condition (`if check`, `check &&`): bash turns
# errexit off for everything run there, and a failing command would no longer fail the check.
CHECK_N=0
check() {
  local name="$1"; shift
  CHECK_N=$(( CHECK_N + 1 ))
  local logf="${ST}/checks/${CHECK_N}.log" t rc
  t=$(date +%s)
  : >"${ST}/note"
  ( set -e; "$@" ) >"${logf}" 2>&1
  rc=$?
  local detail; detail="$(cat "${ST}/note")"
  if [ "${rc}" -eq 0 ]; then
    PASSED=$(( PASSED + 1 ))
    printf 'PASS  %s (%ss)%s\n' "${name}" "$(( $(date +%s) - t ))" "${detail:+: ${detail}}"
  else
    FAILED=$(( FAILED + 1 ))
    printf 'FAIL  %s (%ss)%s\n' "${name}" "$(( $(date +%s) - t ))" "${detail:+: ${detail}}"
    tail -n 60 "${logf}" | sed 's/^/      | /'
  fi
  CHECK_RC="${rc}"
}
note() { printf '%s' "$*" >"${ST}/note"; }
run() { printf '+ %s\n' "$*" >&2; "$@"; }
fail() { printf 'ASSERTION FAILED: %s\n' "$*"; return 1; }

# until_ok SECONDS CMD...: retry CMD every second until it succeeds.
until_ok() {
  local secs="$1"; shift
  local end=$(( $(date +%s) + secs ))
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    [ "$(date +%s)" -ge "${end}" ] && { printf 'timed out after %ss: %s\n' "${secs}" "$*"; "$@"; return 1; }
    sleep 1
  done
}

k() { kubectl "$@"; }
server_version() { kubectl get --raw /version | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p'; }
revision() { k -n "${NS}" get secret -l "owner=helm,name=${RELEASE},status=deployed" -o jsonpath='{.items[*].metadata.labels.version}'; }
last_description() {
  helm -n "${NS}" history "${RELEASE}" --max 1 -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["description"])'
}
deploy_rev() { k -n "${NS}" get deploy "${RELEASE}" -o jsonpath='{.metadata.annotations.deployment\.kubernetes\.io/revision}'; }
relay_pods() {
  k -n "${NS}" get pods -l "app.kubernetes.io/name=${RELEASE},app.kubernetes.io/instance=${RELEASE}" \
    --field-selector=status.phase!=Failed -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort
}
ready_relay_pods() {
  k -n "${NS}" get pods -l "app.kubernetes.io/name=${RELEASE},app.kubernetes.io/instance=${RELEASE}" \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
    | awk '$2 == "True" {print $1}' | sort
}
ready_count_is() { [ "$(ready_relay_pods | wc -l)" -eq "$1" ]; }
relay_count_is() { [ "$(relay_pods | wc -l)" -eq "$1" ]; }
relay_pods_are() { [ "$(relay_pods)" = "$1" ]; }
no_pv() { [ -z "$(kubectl get pv -o name)" ]; }
# release_gone_except LINE: no object of the release is left but LINE (kind/name; "" for none).
release_gone_except() {
  local objs; objs="$(release_objects)" || return 1
  ! grep -vxF -e "$1" <<<"${objs}" | grep -q .
}
# Every object of the release still in the namespace (every namespaced, listable kind).
release_objects() {
  local kinds
  kinds="$(k api-resources --verbs=list --namespaced -o name | grep -v '^events' | paste -sd, -)"
  k -n "${NS}" get "${kinds}" -l "app.kubernetes.io/instance=${RELEASE}" -o name 2>/dev/null | sort
}

# ------------------------------------------------------------------------------ prerequisites
missing=()
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
  [ -x "${KBIN}/${b}" ] || missing+=("${KBIN}/${b} (bash scripts/install-k8s.sh)")
done
[ -f "${K8S_DIR}/kwok/stages.yaml" ] || missing+=("${K8S_DIR}/kwok/stages.yaml (bash scripts/install-k8s.sh)")
for b in helm helmfile ct; do
  command -v "${b}" >/dev/null 2>&1 || missing+=("${b} (bash scripts/install-tools.sh)")
done
[ -x "${HELM_PLUGINS}/helm-diff/bin/diff" ] || missing+=("helm-diff plugin (bash scripts/install-tools.sh)")
for b in openssl curl git python3; do
  command -v "${b}" >/dev/null 2>&1 || missing+=("${b} (system package)")
done
if [ "${#missing[@]}" -gt 0 ]; then
  printf 'FAIL  prerequisites: missing\n'; printf '      - %s\n' "${missing[@]}"
  FAILED=1; summary; exit 1
fi
[ "$(command -v kubectl)" = "${KBIN}/kubectl" ] || { log "kubectl on PATH is not ${KBIN}/kubectl"; exit 1; }

# Ports: a default that is busy moves to the next free one; an explicit one must be free.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
TAKEN=" "
pick_port() {
  local var="$1" def="$2" p
  if [ -n "${!var:-}" ]; then
    p="${!var}"
    if port_busy "${p}"; then log "${var}=${p}: the port is in use on 127.0.0.1"; exit 1; fi
  else
    p="${def}"
    while port_busy "${p}" || [[ "${TAKEN}" == *" ${p} "* ]]; do
      p=$(( p + 1 ))
      [ "${p}" -gt $(( def + 100 )) ] && { log "no free port near ${def}"; exit 1; }
    done
  fi
  TAKEN+="${p} "
  printf -v "${var}" '%s' "${p}"
}
pick_port K8S_TEST_ETCD_PORT 2379
pick_port K8S_TEST_ETCD_PEER_PORT 2380
pick_port K8S_TEST_APISERVER_PORT 6443
pick_port K8S_TEST_KCM_PORT 10257
pick_port K8S_TEST_SCHEDULER_PORT 10259

ST="$(mktemp -d "${TMPDIR:-/tmp}/tokenplace-k8s.XXXXXX")"
mkdir -p "${ST}/logs" "${ST}/checks" "${ST}/pki" "${ST}/kube-cache"
export KUBECONFIG="${ST}/kubeconfig"
# Discovery cache per run: a cache from an earlier cluster on the same port must never answer.
export KUBECACHEDIR="${ST}/kube-cache"
log "state in ${ST}; ports etcd ${K8S_TEST_ETCD_PORT}/${K8S_TEST_ETCD_PEER_PORT}, apiserver ${K8S_TEST_APISERVER_PORT}, kcm ${K8S_TEST_KCM_PORT}, scheduler ${K8S_TEST_SCHEDULER_PORT}"

# ------------------------------------------------------------------------------------ cluster
cluster_up() {
  local token api="https://127.0.0.1:${K8S_TEST_APISERVER_PORT}"
  openssl genrsa -out "${ST}/sa.key" 2048 2>/dev/null
  openssl rsa -in "${ST}/sa.key" -pubout -out "${ST}/sa.pub" 2>/dev/null
  token="$(openssl rand -hex 24)"
  printf '%s,admin,admin,system:masters\n' "${token}" >"${ST}/tokens.csv"

  start etcd "${KBIN}/etcd" --name default --data-dir "${ST}/etcd" \
    --listen-client-urls "http://127.0.0.1:${K8S_TEST_ETCD_PORT}" \
    --advertise-client-urls "http://127.0.0.1:${K8S_TEST_ETCD_PORT}" \
    --listen-peer-urls "http://127.0.0.1:${K8S_TEST_ETCD_PEER_PORT}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${K8S_TEST_ETCD_PEER_PORT}" \
    --initial-cluster "default=http://127.0.0.1:${K8S_TEST_ETCD_PEER_PORT}" \
    --unsafe-no-fsync
  until_ok 30 curl -fsS "http://127.0.0.1:${K8S_TEST_ETCD_PORT}/health"

  # --endpoint-reconciler-type=none: the `kubernetes` Endpoints would get 127.0.0.1, which
  # validation refuses. Default admission plugins stay on (PodSecurity, ServiceAccount, ...).
  start kube-apiserver "${KBIN}/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:${K8S_TEST_ETCD_PORT}" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="${K8S_TEST_APISERVER_PORT}" \
    --cert-dir="${ST}/pki" --token-auth-file="${ST}/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="${ST}/sa.pub" --service-account-signing-key-file="${ST}/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none
  until_ok 120 curl -fsSk "${api}/readyz"

  # The apiserver's self-signed certificate (its cert-dir file carries the issuing CA as well).
  cat >"${KUBECONFIG}" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: local
    cluster:
      server: ${api}
      certificate-authority: ${ST}/pki/apiserver.crt
users:
  - name: admin
    user:
      token: ${token}
contexts:
  - name: local
    context: {cluster: local, user: admin}
current-context: local
EOF
  chmod 600 "${KUBECONFIG}"
  run kubectl version
  # The staging cluster's minor (environments/staging.helmfile.yaml kubeVersion).
  kubectl get --raw /version | grep -q '"gitVersion": "v1\.35\.' || fail "server is not Kubernetes v1.35.x"

  start kube-controller-manager "${KBIN}/kube-controller-manager" --kubeconfig="${KUBECONFIG}" \
    --bind-address=127.0.0.1 --secure-port="${K8S_TEST_KCM_PORT}" --leader-elect=false \
    --service-account-private-key-file="${ST}/sa.key" --root-ca-file="${ST}/pki/apiserver.crt" \
    --use-service-account-credentials=false --controllers='*,-nodeipam'
  start kube-scheduler "${KBIN}/kube-scheduler" --kubeconfig="${KUBECONFIG}" \
    --bind-address=127.0.0.1 --secure-port="${K8S_TEST_SCHEDULER_PORT}" --leader-elect=false
  # kwok opens no port (no --server-address): pod and node IPs are only values in API objects.
  start kwok "${KBIN}/kwok" --kubeconfig="${KUBECONFIG}" --config="${K8S_DIR}/kwok/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --manage-nodes-with-label-selector= --manage-single-node= \
    --cidr=10.0.0.0/24 --node-ip=10.0.0.1 --node-lease-duration-seconds=40

  local n nodes="" label
  for n in "${NODES_4K[@]}" "${NODE_16K}"; do
    label=""; [ "${n}" != "${NODE_16K}" ] && label="    ${PAGE_LABEL}: 4k"
    nodes+="---
apiVersion: v1
kind: Node
metadata:
  name: ${n}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    kubernetes.io/arch: arm64
    kubernetes.io/os: linux
    kubernetes.io/hostname: ${n}
    type: kwok
${label}
status:
  allocatable: {cpu: \"4\", memory: 8Gi, pods: \"110\"}
  capacity: {cpu: \"4\", memory: 8Gi, pods: \"110\"}
  nodeInfo: {architecture: arm64, operatingSystem: linux}
"
  done
  printf '%s' "${nodes}" >"${ST}/nodes.yaml"
  run kubectl apply -f "${ST}/nodes.yaml"
  run kubectl wait --for=condition=Ready node --all --timeout="${WAIT}s"
  # kwok's volume stages bind PVCs of this (default) class: the Valkey StatefulSet's volume.
  run kubectl apply -f "${K8S_DIR}/kwok/storage-class.yaml"
  run kubectl apply --server-side -f "${K8S_DIR}/crds/"
  run kubectl wait --for=condition=Established crd --all --timeout="${WAIT}s"
  until_ok 60 kubectl -n default get serviceaccount default
  alive_all
  note "Kubernetes $(server_version), $(kubectl get nodes --no-headers | wc -l) kwok nodes, $(kubectl get crd --no-headers | wc -l) CRDs, up in $(( $(date +%s) - t0 ))s"
}

check "cluster up: etcd, kube-apiserver, controller-manager, scheduler, kwok, nodes, CRDs" cluster_up
if [ "${CHECK_RC}" -ne 0 ]; then
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    [ -f "${ST}/logs/${c}.log" ] && { log "${c} log (tail):"; tail -n 15 "${ST}/logs/${c}.log" | sed 's/^/    /'; }
  done
  summary; exit 1
fi

# ---------------------------------------------------------------------------------- fixtures
fixtures_broken() {
  local out
  out="$(kubectl apply --dry-run=server -f scripts/k8s-fixtures/broken.yaml 2>&1)" && fail "broken.yaml accepted: ${out}"
  printf '%s\n' "${out}"
  grep -q 'created\|configured' <<<"${out}" && fail "an object of broken.yaml was accepted"
  grep -q 'Deployment.*replicas\|replicas.*int32' <<<"${out}" || fail "the Deployment's string replicas not rejected"
  grep -q 'spec.endpoints' <<<"${out}" || fail "the ServiceMonitor's endpoints not rejected by the CRD schema"
  note "Deployment (replicas: \"two\") and ServiceMonitor (endpoints not a list) both rejected"
}
fixtures_good() {
  local out
  out="$(kubectl apply --dry-run=server --validate=strict -f scripts/k8s-fixtures/good.yaml 2>&1)" || fail "${out}"
  printf '%s\n' "${out}"
  [ "$(grep -c 'created (server dry run)' <<<"${out}")" -eq 2 ] || fail "expected 2 objects created (server dry run)"
  note "Deployment and ServiceMonitor accepted"
}
check "fixtures: broken.yaml rejected by the server (--dry-run=server)" fixtures_broken
check "fixtures: good.yaml accepted (--dry-run=server --validate=strict)" fixtures_good

# ------------------------------------------------------------------ ci scenarios, server side
DRYNS=tokenplace-ci-dryrun
kubectl create namespace "${DRYNS}" >/dev/null
# enforce rejects non-compliant Pods (the helm test pod); warn makes the server report what a
# Deployment/StatefulSet pod template would violate, which the check turns into a failure.
kubectl label namespace "${DRYNS}" pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/warn=restricted >/dev/null
ci_scenario() {
  local f="$1" out n
  run helm template "${RELEASE}" charts/tokenplace-relay --namespace "${DRYNS}" --values "${f}" \
    --kube-version "$(server_version)" \
    --api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions monitoring.coreos.com/v1/PrometheusRule \
    >"${ST}/render.yaml"
  out="$(kubectl apply --dry-run=server --validate=strict -n "${DRYNS}" -f "${ST}/render.yaml" 2>&1)" || fail "${out}"
  printf '%s\n' "${out}"
  grep -qi 'would violate PodSecurity' <<<"${out}" && fail "Pod Security restricted violated"
  n="$(grep -c '(server dry run)' <<<"${out}")"
  [ "${n}" -eq "$(grep -c '^kind: ' "${ST}/render.yaml")" ] || fail "only ${n} objects accepted"
  note "${n} objects accepted$(grep -q '^Warning' <<<"${out}" && printf ' (server warnings: %s)' "$(grep '^Warning' <<<"${out}" | sort -u | sed 's/^Warning: //' | paste -sd';' -)")"
}
for f in charts/tokenplace-relay/ci/*-values.yaml; do
  check "ci/$(basename "${f}"): render accepted by the server (--validate=strict, PSS restricted)" ci_scenario "${f}"
done
kubectl delete namespace "${DRYNS}" --wait=false >/dev/null

# ------------------------------------------------------------- Prometheus Operator CRDs absent
no_prometheus_crds() {
  local out
  run kubectl delete crd servicemonitors.monitoring.coreos.com prometheusrules.monitoring.coreos.com --wait=true
  out="$(helmfile -e staging apply 2>&1)" && fail "apply succeeded without the Prometheus Operator CRDs"
  printf '%s\n' "${out}"
  grep -q 'the cluster has no monitoring.coreos.com/v1 \(ServiceMonitor\|PrometheusRule\) API (install the Prometheus Operator CRDs' <<<"${out}" \
    || fail "the chart's own message about the missing Prometheus Operator CRDs is not in the output"
  [ -z "$(revision)" ] || fail "a release was left deployed"
  note "$(grep -o 'the cluster has no monitoring.coreos.com/v1 [A-Za-z]* API' <<<"${out}" | head -1)"
}
restore_prometheus_crds() {
  run kubectl apply --server-side -f "${K8S_DIR}/crds/prometheus-operator.yaml"
  run kubectl wait --for=condition=Established crd --all --timeout="${WAIT}s"
}

# ------------------------------------------------------------------------------------ staging
staging_prepare() {
  # The runbook's first step (docs/sugarkube-staging.md §1), plus Pod Security `restricted`.
  kubectl create namespace "${NS}" --dry-run=client -o yaml | kubectl apply -f -
  run kubectl label namespace "${NS}" pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/warn=restricted pod-security.kubernetes.io/audit=restricted
  kubectl -n "${NS}" create secret generic "${SECRET}" --from-literal=token="$(openssl rand -hex 32)" \
    --from-literal=metrics-token="$(openssl rand -hex 32)" --from-literal=operator-token="$(openssl rand -hex 32)"
  note "namespace ${NS} (enforce=restricted), Secret ${SECRET} (token, metrics-token, operator-token)"
}
staging_apply() {
  local out
  out="$(helmfile -e staging apply 2>&1)" || fail "${out}"
  printf '%s\n' "${out}"
  grep -qi 'would violate PodSecurity' <<<"${out}" && fail "Pod Security restricted violated"
  [ "$(revision)" = 1 ] || fail "expected revision 1 deployed, got '$(revision)'"
  note "revision 1 deployed"
}
staging_rollout() {
  run kubectl -n "${NS}" rollout status "deploy/${RELEASE}" --timeout="${WAIT}s"
  run kubectl -n "${NS}" rollout status "statefulset/${RELEASE}-valkey" --timeout="${WAIT}s"
  note "deploy/${RELEASE} and statefulset/${RELEASE}-valkey rolled out"
}
staging_shared_state() {
  local pods nodes
  [ "$(kubectl -n "${NS}" get deploy "${RELEASE}" -o jsonpath='{.spec.replicas}')" = 2 ] || fail "Deployment replicas != 2"
  [ "$(kubectl -n "${NS}" get deploy "${RELEASE}" -o jsonpath='{.spec.strategy.type}')" = RollingUpdate ] || fail "strategy is not RollingUpdate"
  pods="$(ready_relay_pods | wc -l)"
  [ "${pods}" -eq 2 ] || fail "${pods} Ready relay pods, expected 2"
  [ "$(kubectl -n "${NS}" get statefulset "${RELEASE}-valkey" -o jsonpath='{.status.readyReplicas}')" = 1 ] || fail "Valkey StatefulSet not Ready"
  run kubectl -n "${NS}" get pvc "data-${RELEASE}-valkey-0"
  [ "$(kubectl -n "${NS}" get pvc "data-${RELEASE}-valkey-0" -o jsonpath='{.status.phase}')" = Bound ] || fail "Valkey PVC not Bound"
  run kubectl -n "${NS}" get secret "${RELEASE}-valkey"
  for key in password url; do
    [ -n "$(kubectl -n "${NS}" get secret "${RELEASE}-valkey" -o jsonpath="{.data.${key}}")" ] || fail "Valkey Secret has no ${key}"
  done
  run kubectl -n "${NS}" get pdb "${RELEASE}"
  run kubectl -n "${NS}" get pods -o wide
  nodes="$(kubectl -n "${NS}" get pods -l "app.kubernetes.io/instance=${RELEASE}" -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | paste -sd, -)"
  kubectl -n "${NS}" get pods -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -qx "${NODE_16K}" \
    && fail "a pod was scheduled on the arm64 node without ${PAGE_LABEL}=4k"
  note "2/2 relay pods Ready, Valkey 1/1 Ready, PVC Bound, Secret ${RELEASE}-valkey (password, url), PDB; pods on ${nodes}, none on ${NODE_16K}"
}
staging_helm_test() {
  run helm -n "${NS}" test "${RELEASE}" --timeout "${WAIT}s"
  note "test pod Succeeded (kwok: by rule)"
}
staging_noop_apply() {
  local before pods_before out
  before="$(revision)"; pods_before="$(relay_pods)"
  out="$(helmfile -e staging apply 2>&1)" || fail "${out}"
  printf '%s\n' "${out}"
  [ "$(revision)" = "${before}" ] || fail "revision moved from ${before} to $(revision)"
  [ "$(relay_pods)" = "${pods_before}" ] || fail "relay pods changed"
  note "revision stays ${before}, same pods"
}
valkey_uid() { kubectl -n "${NS}" get pod "${RELEASE}-valkey-0" -o jsonpath='{.metadata.uid}'; }
staging_change() {
  local before rs_before pods_before out vk
  before="$(revision)"; rs_before="$(deploy_rev)"; pods_before="$(relay_pods)"; vk="$(valkey_uid)"
  # A new relay image and a pod annotation: the relays roll, the shared Valkey must stay up.
  out="$(helmfile -e staging apply --set image.tag=sha-5ca1ed0 \
    --set "podAnnotations.tokenplace\.io/ci-rollout=change-$$" 2>&1)" || fail "${out}"
  printf '%s\n' "${out}"
  [ "$(revision)" = "$(( before + 1 ))" ] || fail "revision $(revision), expected $(( before + 1 ))"
  run kubectl -n "${NS}" rollout status "deploy/${RELEASE}" --timeout="${WAIT}s"
  [ "$(deploy_rev)" = "$(( rs_before + 1 ))" ] || fail "Deployment revision $(deploy_rev), expected a new ReplicaSet ($(( rs_before + 1 )))"
  until_ok "${WAIT}" ready_count_is 2
  until_ok "${WAIT}" relay_count_is 2
  [ -z "$(comm -12 <(relay_pods) <(printf '%s\n' "${pods_before}"))" ] || fail "old pods still there"
  [ "$(valkey_uid)" = "${vk}" ] || fail "the relay rollout restarted the Valkey pod"
  run kubectl -n "${NS}" get rs -l "app.kubernetes.io/instance=${RELEASE}"
  note "revision ${before} -> $(revision), ReplicaSet revision ${rs_before} -> $(deploy_rev), 2 new pods Ready, Valkey pod untouched"
}
# A rollout that cannot schedule (no node carries the page-size label) must fail and roll back,
# keeping the serving pods.
staging_unschedulable() {
  local before pods_before out n
  before="$(revision)"; pods_before="$(relay_pods)"
  for n in "${NODES_4K[@]}"; do run kubectl label node "${n}" "${PAGE_LABEL}-"; done
  local rc=0
  out="$(TOKENPLACE_HELM_TIMEOUT="${FAIL_TIMEOUT}" helmfile -e staging apply \
    --set "podAnnotations.tokenplace\.io/ci-rollout=unschedulable-$$" 2>&1)" || rc=$?
  for n in "${NODES_4K[@]}"; do run kubectl label node "${n}" "${PAGE_LABEL}=4k" --overwrite; done
  printf '%s\n' "${out}"
  [ "${rc}" -ne 0 ] || fail "the apply succeeded although no node carries ${PAGE_LABEL}=4k"
  grep -q 'rolled back\|Rollback was a success\|rolling back' <<<"${out}" || fail "no atomic rollback in the output"
  run helm -n "${NS}" history "${RELEASE}"
  [ "$(last_description)" = "Rollback to ${before}" ] || fail "last revision is '$(last_description)', not 'Rollback to ${before}'"
  kubectl -n "${NS}" get events --field-selector reason=FailedScheduling -o jsonpath='{.items[*].message}' \
    | grep -q "node affinity/selector" || fail "no FailedScheduling event naming the node affinity"
  # The rollback scales the new ReplicaSet down; its Pending pod goes within moments.
  until_ok "${WAIT}" relay_pods_are "${pods_before}" || fail "serving pods changed: $(relay_pods | paste -sd' ' -)"
  until_ok "${WAIT}" ready_count_is 2
  kubectl -n "${NS}" get deploy "${RELEASE}" -o jsonpath='{.spec.template.metadata.annotations}' | grep -q unschedulable \
    && fail "the Deployment still carries the failed change"
  note "FailedScheduling (node affinity), helm '$(last_description)', the 2 old pods kept Ready"
}
staging_destroy() {
  local left
  run helmfile -e staging destroy
  until_ok "${WAIT}" release_gone_except "persistentvolumeclaim/data-${RELEASE}-valkey-0"
  left="$(release_objects)"
  printf 'left: %s\n' "${left}"
  [ "${left}" = "persistentvolumeclaim/data-${RELEASE}-valkey-0" ] || fail "expected only the Valkey PVC to remain, found: ${left}"
  [ -z "$(kubectl -n "${NS}" get secret -l "owner=helm,name=${RELEASE}" -o name)" ] || fail "helm release records remain"
  # Only the runbook's own Secret, the namespace defaults and the retained PVC are left.
  run kubectl -n "${NS}" get all,cm,secret,sa,pvc,ing,netpol,pdb,servicemonitor,prometheusrule,endpointslice
  # The retained volume is removed by hand, as the runbook would (its PV goes with it: Delete).
  run kubectl -n "${NS}" delete pvc "data-${RELEASE}-valkey-0" --wait=true --timeout="${WAIT}s"
  until_ok "${WAIT}" no_pv
  note "no object of the release left but the Valkey PVC (persistentVolumeClaimRetentionPolicy Retain, on purpose)"
}

# ------------------------------------------------------------------------- justfile recipes
# The recipes the staging runbook names, run as an operator would (`just`, the npm package
# rust-just that install-tools.sh puts in .tools/bin), against this cluster through KUBECONFIG.
just_cmd() {
  command -v just >/dev/null 2>&1 || fail "just missing: run bash scripts/install-tools.sh"
  just "$@"
}
just_status() {
  local out
  out="$(just_cmd tokenplace-status 2>&1)" || fail "${out}"
  printf '%s\n' "${out}"
  local p; for p in $(relay_pods); do grep -q "${p}" <<<"${out}" || fail "pod ${p} not in the status"; done
  grep -q 'staging.token.place' <<<"${out}" || fail "the public URL (staging.token.place) is not in the status"
  note "pods, ingress and https://staging.token.place listed"
}
just_redeploy() {
  local tag before out
  tag="sha-$(git rev-parse --short=7 HEAD 2>/dev/null || echo 0a1b2c3)"
  before="$(revision)"
  out="$(just_cmd tokenplace-oci-redeploy "tag=${tag}" 2>&1)" || fail "${out}"
  printf '%s\n' "${out}"
  run kubectl -n "${NS}" rollout status "deploy/${RELEASE}" --timeout="${WAIT}s"
  kubectl -n "${NS}" get deploy "${RELEASE}" -o jsonpath='{.spec.template.spec.containers[0].image}' | grep -q ":${tag}\$" \
    || fail "Deployment image is $(kubectl -n "${NS}" get deploy "${RELEASE}" -o jsonpath='{.spec.template.spec.containers[0].image}'), expected tag ${tag}"
  [ "$(revision)" -gt "${before}" ] || fail "no new helm revision"
  note "image tag ${tag}, revision ${before} -> $(revision)"
}
skip() { printf 'SKIP  %s: %s\n' "$1" "$2"; }

check "staging: Prometheus Operator CRDs absent -> the chart's own message, nothing deployed" no_prometheus_crds
check "staging: Prometheus Operator CRDs restored" restore_prometheus_crds
check "staging: namespace (Pod Security enforce=restricted) and the runbook's Secret" staging_prepare
check "staging: helmfile -e staging apply" staging_apply
if [ "${CHECK_RC}" -eq 0 ]; then
  check "staging: rollout status (Deployment, Valkey StatefulSet)" staging_rollout
  check "staging: 2 relay replicas and the bundled Valkey Ready, PVC and Secret present" staging_shared_state
  check "staging: helm test" staging_helm_test
  check "staging: second apply without a change upgrades nothing" staging_noop_apply
  check "staging: a changed value rolls out (revision +1, new ReplicaSet, Valkey not restarted)" staging_change
  if [ -f justfile ]; then
    check "just tokenplace-status (staging)" just_status
    check "just tokenplace-oci-redeploy tag=sha-<fake> rolls the Deployment to that tag" just_redeploy
    skip "just tokenplace-logs" "kwok runs no containers and no kubelet serves logs"
    skip "just tokenplace-port-forward" "kwok pods have no kubelet or network behind them: nothing to forward to"
  else
    skip "justfile recipes" "no justfile at the repository root"
  fi
  check "staging: unschedulable rollout fails and atomic rolls back, old pods kept" staging_unschedulable
  check "staging: helmfile destroy leaves nothing behind" staging_destroy
fi

# ---------------------------------------------------------------------------------------- dev
dev_apply() {
  local out
  out="$(helmfile -e dev apply 2>&1)" || fail "${out}"
  printf '%s\n' "${out}"
  grep -qi 'would violate PodSecurity' <<<"${out}" && fail "Pod Security restricted violated"
  run kubectl -n "${NS}" rollout status "deploy/${RELEASE}" --timeout="${WAIT}s"
  [ "$(ready_relay_pods | wc -l)" -eq 1 ] || fail "expected 1 Ready relay pod"
  [ "$(kubectl -n "${NS}" get deploy "${RELEASE}" -o jsonpath='{.spec.strategy.type}')" = Recreate ] || fail "dev (memory state) must use Recreate"
  run helm -n "${NS}" test "${RELEASE}" --timeout "${WAIT}s"
  note "revision $(revision), 1 pod Ready (Recreate, memory state), helm test passed"
}
dev_noop_and_change() {
  local before rs_before out
  before="$(revision)"
  out="$(helmfile -e dev apply 2>&1)" || fail "${out}"
  [ "$(revision)" = "${before}" ] || fail "no-change apply moved the revision to $(revision)"
  rs_before="$(deploy_rev)"
  out="$(TOKENPLACE_IMAGE_TAG=sha-0c1d2e3 helmfile -e dev apply 2>&1)" || fail "${out}"
  printf '%s\n' "${out}"
  [ "$(revision)" = "$(( before + 1 ))" ] || fail "revision $(revision), expected $(( before + 1 ))"
  run kubectl -n "${NS}" rollout status "deploy/${RELEASE}" --timeout="${WAIT}s"
  [ "$(deploy_rev)" = "$(( rs_before + 1 ))" ] || fail "no new ReplicaSet"
  kubectl -n "${NS}" get deploy "${RELEASE}" -o jsonpath='{.spec.template.spec.containers[0].image}' | grep -q ':sha-0c1d2e3$' \
    || fail "image tag not sha-0c1d2e3"
  note "no-change apply kept revision ${before}; TOKENPLACE_IMAGE_TAG=sha-0c1d2e3 -> revision $(revision), new ReplicaSet"
}
dev_destroy() {
  local left
  run helmfile -e dev destroy
  until_ok "${WAIT}" release_gone_except ""
  left="$(release_objects)"
  [ -z "${left}" ] || fail "left behind: ${left}"
  note "nothing of the release left"
}
check "dev: helmfile -e dev apply, rollout, helm test" dev_apply
if [ "${CHECK_RC}" -eq 0 ]; then
  check "dev: no-change apply upgrades nothing; TOKENPLACE_IMAGE_TAG rolls out" dev_noop_and_change
  check "dev: helmfile destroy leaves nothing behind" dev_destroy
fi

# ----------------------------------------------------------------------------------------- ct
ct_install() {
  local out
  out="$(ct install --config .ct/ct.yaml --all --helm-extra-args "--timeout ${WAIT}s" 2>&1)" || fail "${out}"
  printf '%s\n' "${out}"
  local scenarios=(charts/tokenplace-relay/ci/*-values.yaml) n; n="${#scenarios[@]}"
  # ct exits non-zero when an install or its `helm test` fails; check that it ran every scenario.
  [ "$(grep -c 'Installing chart with values file' <<<"${out}")" -eq "${n}" ] || fail "ct did not install all ${n} scenarios"
  grep -q '✔︎ tokenplace-relay' <<<"${out}" || fail "ct did not report the chart as installed"
  note "${n} ci scenarios installed and helm-tested"
}
check "ct install --all (every ci/*-values.yaml installed, helm test)" ct_install

log "cluster test done in $(elapsed)s"
summary
[ "${FAILED}" -eq 0 ]
