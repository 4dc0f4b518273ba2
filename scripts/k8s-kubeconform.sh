# shellcheck shell=bash
# Offline kubeconform setup shared by scripts/validate-manifests.sh (source me after k8s-env.sh).
#
# Core schemas: PyPI kubernetes-validate ships standalone-strict JSON schemas per Kubernetes
# release, but they carry `$id: https://kubernetes.io/api/...` and `$ref: /api/_definitions.json#...`,
# which kubeconform would resolve over HTTPS (and fail offline with "could not find schema" /
# download errors). k8s_prepare_schemas writes a rewritten copy (no `$id`, `$ref` relative to the
# sibling _definitions.json) under .tools/kubeconform-schemas/, once per kubernetes-validate version.
#
# CRD schemas (ServiceMonitor, PrometheusRule, ...): ../shared/crd-schemas next to the repository
# (never copied in); on GitHub Actions the public datreeio CRDs-catalog, which has the same layout.

K8S_SCHEMA_DIR="${TOOLS_DIR}/kubeconform-schemas"
K8S_VENV_PY="${TOOLS_DIR}/venv/bin/python"
CRD_CATALOG_URL="https://raw.githubusercontent.com/datreeio/CRDs-catalog/main/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json"

# k8s_crd_location: prints the kubeconform -schema-location template for CRDs.
k8s_crd_location() {
  if [ "${GITHUB_ACTIONS:-}" = "true" ]; then
    printf '%s\n' "${CRD_CATALOG_URL}"
    return
  fi
  local top
  top="$(git -C "${TOOLS_DIR}/.." rev-parse --show-toplevel 2>/dev/null || (cd "${TOOLS_DIR}/.." && pwd))"
  local shared="${top}/../shared/crd-schemas"
  if [ ! -d "${shared}" ]; then
    echo "k8s-kubeconform: CRD schemas not found at ${shared} (expected ../shared/crd-schemas beside the repository)" >&2
    return 1
  fi
  printf '%s\n' "$(cd "${shared}" && pwd)/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json"
}

# k8s_prepare_schemas VERSION...: rewritten standalone-strict schemas for each Kubernetes version.
k8s_prepare_schemas() {
  [ -x "${K8S_VENV_PY}" ] || { echo "k8s-kubeconform: ${K8S_VENV_PY} missing: run bash scripts/install-tools.sh" >&2; return 1; }
  "${K8S_VENV_PY}" - "${K8S_SCHEMA_DIR}" "$@" <<'PY'
import json, os, sys
from importlib.metadata import version
import kubernetes_validate

out_root, versions = sys.argv[1], sys.argv[2:]
src_root = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
kv = version("kubernetes-validate")
for v in versions:
    name = f"v{v}-local-strict"
    src, dst = os.path.join(src_root, name), os.path.join(out_root, name)
    stamp = os.path.join(dst, ".kubernetes-validate-version")
    if os.path.exists(stamp) and open(stamp).read().strip() == kv:
        continue
    if not os.path.isdir(src):
        have = sorted(d for d in os.listdir(src_root) if d.endswith("-local-strict"))
        sys.exit(f"kubernetes-validate {kv} has no schemas for Kubernetes {v}; available: {', '.join(have)}")
    os.makedirs(dst, exist_ok=True)

    def fix(node):
        if isinstance(node, dict):
            node.pop("$id", None)
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("/api/_definitions.json#"):
                node["$ref"] = "_definitions.json#" + ref.split("#", 1)[1]
            for value in node.values():
                fix(value)
        elif isinstance(node, list):
            for value in node:
                fix(value)

    n = 0
    for fname in os.listdir(src):
        if not fname.endswith(".json"):
            continue
        with open(os.path.join(src, fname)) as f:
            doc = json.load(f)
        fix(doc)
        with open(os.path.join(dst, fname), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
        n += 1
    with open(stamp, "w") as f:
        f.write(kv + "\n")
    print(f"[schemas] Kubernetes {v}: {n} schemas from kubernetes-validate {kv} rewritten for offline use")
PY
}

# k8s_kubeconform VERSION [kubeconform args/files...]: strict validation against one version.
k8s_kubeconform() {
  local v="$1"; shift
  local crd; crd="$(k8s_crd_location)" || return 1
  mkdir -p "${TOOLS_DIR}/kubeconform-cache"
  kubeconform -strict -summary -output text \
    -kubernetes-version "${v}" \
    -schema-location "${K8S_SCHEMA_DIR}/{{.NormalizedKubernetesVersion}}-local{{.StrictSuffix}}/{{.ResourceKind}}{{.KindSuffix}}.json" \
    -schema-location "${crd}" \
    -cache "${TOOLS_DIR}/kubeconform-cache" \
    "$@"
}
