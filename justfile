# Staging recipes for the token.place relay, named as the sugarkube runbook names them
# (docs/sugarkube-staging.md). Each is a thin wrapper over helmfile or kubectl: the cluster is the
# one KUBECONFIG / the current kube context points at. Run with the pinned runner (rust-just,
# installed into .tools/bin by scripts/install-tools.sh; `source scripts/k8s-env.sh` puts it on PATH):
#   just --list
#   just tokenplace-oci-redeploy tag=sha-1a2b3c4
#
# Settings come from the environment (defaults in brackets):
#   TOKENPLACE_ENV        helmfile environment                 [staging]
#   TOKENPLACE_NAMESPACE  namespace of the release             [tokenplace]
#   TOKENPLACE_RELEASE    helm release name                    [tokenplace-relay]
#   TOKENPLACE_KUBE_CONTEXT  kube context (empty: the current one)
#   TRAEFIK_NAMESPACE     namespace of the ingress controller  [kube-system] (k3s' bundled Traefik)
#   TRAEFIK_SELECTOR      label selector of its pods           [app.kubernetes.io/name=traefik]
#   KUBECTL, HELMFILE     the commands to run                  [kubectl, helmfile]; e.g. KUBECTL="k3s kubectl" on a k3s node
# The pinned helmfile/helm/kubectl of .tools/ (scripts/install-tools.sh) come first on PATH.

set shell := ["bash", "-euo", "pipefail", "-c"]

environment := env("TOKENPLACE_ENV", "staging")
namespace := env("TOKENPLACE_NAMESPACE", "tokenplace")
release := env("TOKENPLACE_RELEASE", "tokenplace-relay")
kube_context := env("TOKENPLACE_KUBE_CONTEXT", "")
traefik_namespace := env("TRAEFIK_NAMESPACE", "kube-system")
traefik_selector := env("TRAEFIK_SELECTOR", "app.kubernetes.io/name=traefik")
kubectl := env("KUBECTL", "kubectl")
helmfile := env("HELMFILE", "helmfile")

# Same as the chart's selector labels (charts/tokenplace-relay/templates/_helpers.tpl).
relay_selector := "app.kubernetes.io/name=tokenplace-relay,app.kubernetes.io/instance=" + release
# Prefixes every recipe: pinned tools on PATH, kube context flags for kubectl and helmfile.
prelude := "source " + quote(justfile_directory() / "scripts/k8s-env.sh") + "; ctx=(); hctx=(); if [ -n " + quote(kube_context) + " ]; then ctx=(--context " + quote(kube_context) + "); hctx=(--kube-context " + quote(kube_context) + "); fi"

[doc("List the recipes.")]
default:
    @{{ just_executable() }} --justfile {{ quote(justfile()) }} --list

# `helmfile -e $TOKENPLACE_ENV apply` of the relay release with image.tag set (atomic: a failed
# rollout rolls back). The tag must be an immutable sha-<7-40 hex digits>; `tag=sha-1a2b3c4` and
# `sha-1a2b3c4` both work. Until the tag is committed to environments/<env>.yaml.gotmpl, the next
# plain `helmfile apply` goes back to the pinned one.
[doc("Roll out the relay image sha-<shortsha> with helmfile apply (tag=sha-1a2b3c4)")]
tokenplace-oci-redeploy tag:
    #!/usr/bin/env bash
    set -euo pipefail
    tag={{ quote(tag) }}
    tag="${tag#tag=}"
    # Checked before any cluster call: only immutable build tags (never latest, never a branch).
    if ! [[ "$tag" =~ ^sha-[0-9a-f]{7,40}$ ]]; then
      echo "tokenplace-oci-redeploy: tag must look like sha-<7 to 40 lower-case hex digits> (e.g. tag=sha-1a2b3c4), got '${tag}'" >&2
      exit 2
    fi
    {{ prelude }}
    echo "Deploying image tag ${tag} to release {{ release }} (helmfile environment {{ environment }}, namespace {{ namespace }})"
    {{ helmfile }} "${hctx[@]}" -e {{ quote(environment) }} --selector name={{ quote(release) }} apply --set "image.tag=${tag}"
    {{ kubectl }} "${ctx[@]}" -n {{ quote(namespace) }} get deploy -l {{ quote(relay_selector) }} \
      -o jsonpath='{range .items[*]}{.metadata.name}: {.spec.template.spec.containers[0].image} ready {.status.readyReplicas}/{.spec.replicas}{"\n"}{end}'

# The public URL comes from the Ingress the chart rendered from ingress.hosts and ingress.tls.
[doc("Pods, Services, Ingress and the public URL of the relay release")]
tokenplace-status:
    #!/usr/bin/env bash
    set -euo pipefail
    {{ prelude }}
    k() { {{ kubectl }} "${ctx[@]}" -n {{ quote(namespace) }} "$@"; }
    echo "== release {{ release }} in namespace {{ namespace }}"
    k get deploy,statefulset,pod,service,ingress,pdb -l app.kubernetes.io/instance={{ quote(release) }} -o wide
    echo "== public URL (from the Ingress the chart rendered from ingress.hosts / ingress.tls)"
    hosts="$(k get ingress -l {{ quote(relay_selector) }} -o jsonpath='{range .items[*].spec.rules[*]}{.host}{"\n"}{end}')"
    tls="$(k get ingress -l {{ quote(relay_selector) }} -o jsonpath='{range .items[*].spec.tls[*].hosts[*]}{@}{"\n"}{end}')"
    if [ -z "$hosts" ]; then
      echo "(no Ingress: ingress.enabled is false; use just tokenplace-port-forward)"
    fi
    while read -r host; do
      [ -n "$host" ] || continue
      if grep -qxF "$host" <<<"$tls"; then echo "https://${host}/"; else echo "http://${host}/"; fi
    done <<<"$hosts"

# Both parts run even when one fails; the exit status says whether either did.
[doc("Recent logs of the relay pods (JSON lines) and of Traefik (lines=200 per pod)")]
tokenplace-logs lines="200":
    #!/usr/bin/env bash
    set -uo pipefail
    lines={{ quote(lines) }}
    lines="${lines#lines=}"
    if ! [[ "$lines" =~ ^[0-9]+$ ]]; then
      echo "tokenplace-logs: lines must be a number, got '${lines}'" >&2
      exit 2
    fi
    {{ prelude }}
    failed=0
    echo "== relay ({{ namespace }}, {{ relay_selector }})"
    {{ kubectl }} "${ctx[@]}" -n {{ quote(namespace) }} logs -l {{ quote(relay_selector) }} --all-containers --prefix --timestamps --tail="$lines" --max-log-requests=10 || failed=1
    echo "== Traefik ({{ traefik_namespace }}, {{ traefik_selector }})"
    {{ kubectl }} "${ctx[@]}" -n {{ quote(traefik_namespace) }} logs -l {{ quote(traefik_selector) }} --prefix --timestamps --tail="$lines" --max-log-requests=10 || failed=1
    exit "$failed"

# For /metrics and /relay/diagnostics, which are not on the Ingress. `local_port=8500` and `8500`
# both work. Stops with Ctrl-C.
[doc("Forward 127.0.0.1:<local_port> (default 8500) to the relay Service")]
tokenplace-port-forward local_port="8500":
    #!/usr/bin/env bash
    set -euo pipefail
    port={{ quote(local_port) }}
    port="${port#local_port=}"
    if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
      echo "tokenplace-port-forward: local_port must be a port number (1-65535), got '${port}'" >&2
      exit 2
    fi
    {{ prelude }}
    svc="$({{ kubectl }} "${ctx[@]}" -n {{ quote(namespace) }} get service -l {{ quote(relay_selector) }},app.kubernetes.io/component=relay -o jsonpath='{.items[*].metadata.name}')"
    svc="${svc%% *}"
    if [ -z "$svc" ]; then
      echo "tokenplace-port-forward: no relay Service of release {{ release }} in namespace {{ namespace }} (just tokenplace-status)" >&2
      exit 1
    fi
    echo "Forwarding http://127.0.0.1:${port} -> service/${svc}:http in {{ namespace }}. Try:"
    echo "  curl -fsS http://127.0.0.1:${port}/healthz"
    echo "  curl -fsS -H \"Authorization: Bearer \$METRICS_TOKEN\" http://127.0.0.1:${port}/metrics"
    exec {{ kubectl }} "${ctx[@]}" -n {{ quote(namespace) }} port-forward "service/${svc}" "${port}:http"
