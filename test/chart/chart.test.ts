// Chart behaviour: render charts/tokenplace-relay with helm, parse the YAML, assert on the objects.
import { beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { CHART, find, get, render, renderOk, skipWithoutHelm, withMinimal, type K8sObject } from "./helm.ts";

const skip = skipWithoutHelm("test/chart/chart.test.ts");

const SCENARIOS = readdirSync(join(CHART, "ci")).filter((f) => f.endsWith("-values.yaml")).sort();
const rendered: Record<string, K8sObject[]> = {};

function pods(docs: K8sObject[]): { kind: string; spec: K8sObject }[] {
  const out: { kind: string; spec: K8sObject }[] = [];
  for (const d of docs) {
    if (d.kind === "Deployment") out.push({ kind: "Deployment", spec: d.spec.template.spec });
    if (d.kind === "Pod") out.push({ kind: "Pod(test)", spec: d.spec });
  }
  return out;
}

describe.skipIf(skip)("chart renders every ci scenario", () => {
  beforeAll(() => {
    for (const f of SCENARIOS) rendered[f] = renderOk({ valuesFiles: [`ci/${f}`] });
  });

  test("there are scenarios for defaults, everything, headless, legacy routes, exposed operator routes, staging, bundled Valkey and an external datastore", () => {
    expect(SCENARIOS).toEqual([
      "default-values.yaml",
      "full-values.yaml",
      "headless-values.yaml",
      "legacy-values.yaml",
      "operator-routes-values.yaml",
      "redis-external-values.yaml",
      "staging-values.yaml",
      "valkey-values.yaml",
    ]);
  });

  test("standard labels everywhere; selectors use name + instance only", () => {
    for (const f of SCENARIOS) {
      for (const d of rendered[f]!) {
        const l = d.metadata.labels ?? {};
        expect(l["app.kubernetes.io/instance"]).toBe("tokenplace-relay");
        expect(l["helm.sh/chart"]).toMatch(/^tokenplace-relay-\d+\.\d+\.\d+/);
        expect(l["app.kubernetes.io/managed-by"]).toBe("Helm");
        if (d.kind !== "Pod") {
          expect(l["app.kubernetes.io/name"]).toBe("tokenplace-relay");
          expect(l["app.kubernetes.io/version"]).toBeTruthy();
        }
      }
      const dep = get(rendered[f]!, "Deployment");
      const sel = { "app.kubernetes.io/name": "tokenplace-relay", "app.kubernetes.io/instance": "tokenplace-relay" };
      expect(dep.spec.selector.matchLabels).toEqual(sel);
      expect(get(rendered[f]!, "Service", "tokenplace-relay").spec.selector).toEqual(sel);
    }
  });

  test("pod and container security defaults (relay and helm test pod)", () => {
    for (const f of SCENARIOS) {
      const ps = pods(rendered[f]!);
      expect(ps.length).toBe(2);
      for (const { spec } of ps) {
        expect(spec.automountServiceAccountToken).toBe(false);
        expect(spec.enableServiceLinks).toBe(false);
        expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: "RuntimeDefault" } });
        for (const c of spec.containers) {
          expect(c.securityContext).toMatchObject({
            runAsNonRoot: true,
            runAsUser: 65532,
            allowPrivilegeEscalation: false,
            readOnlyRootFilesystem: true,
            privileged: false,
            capabilities: { drop: ["ALL"] },
            seccompProfile: { type: "RuntimeDefault" },
          });
          expect(c.securityContext.capabilities.add).toBeUndefined();
        }
      }
      const sa = get(rendered[f]!, "ServiceAccount");
      expect(sa.automountServiceAccountToken).toBe(false);
    }
  });

  test("probes: readiness /healthz, liveness /livez, startup; grace period longer than the drain", () => {
    for (const f of SCENARIOS) {
      const dep = get(rendered[f]!, "Deployment");
      const c = dep.spec.template.spec.containers[0];
      expect(c.ports).toEqual([{ name: "http", containerPort: 5010, protocol: "TCP" }]);
      expect(c.readinessProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
      expect(c.livenessProbe.httpGet).toEqual({ path: "/livez", port: "http" });
      expect(c.startupProbe.httpGet).toEqual({ path: "/livez", port: "http" });
      expect(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold).toBeGreaterThanOrEqual(30);
      expect(c.resources.requests.cpu).toBeTruthy();
      expect(c.resources.limits.memory).toBeTruthy();
      const cm = get(rendered[f]!, "ConfigMap");
      const drainMs = Number(cm.data.RELAY_SHUTDOWN_DELAY_MS) + Number(cm.data.RELAY_SHUTDOWN_GRACE_MS);
      expect(Number(cm.data.RELAY_SHUTDOWN_DELAY_MS)).toBeGreaterThanOrEqual(5000);
      expect(dep.spec.template.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(drainMs);
    }
  });

  test("checksum/config annotation matches the ConfigMap and changes with it", () => {
    const a = get(rendered["default-values.yaml"]!, "Deployment").spec.template.metadata.annotations["checksum/config"];
    const b = get(rendered["full-values.yaml"]!, "Deployment").spec.template.metadata.annotations["checksum/config"];
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(b).toMatch(/^[0-9a-f]{64}$/);
    expect(a).not.toBe(b);
    const headless = get(rendered["headless-values.yaml"]!, "Deployment").spec.template.metadata.annotations;
    expect(headless["checksum/secret"]).toMatch(/^[0-9a-f]{64}$/);
  });

  test("Service: ClusterIP, port 80 -> named port http", () => {
    const svc = get(rendered["default-values.yaml"]!, "Service", "tokenplace-relay");
    expect(svc.spec.type).toBe("ClusterIP");
    expect(svc.spec.ports).toEqual([{ name: "http", port: 80, targetPort: "http", protocol: "TCP", appProtocol: "http" }]);
  });

  test("helm test hook runs the relay image's own healthcheck against /healthz", () => {
    for (const f of SCENARIOS) {
      const pod = get(rendered[f]!, "Pod");
      const dep = get(rendered[f]!, "Deployment");
      expect(pod.metadata.annotations?.["helm.sh/hook"]).toBe("test");
      const c = pod.spec.containers[0];
      expect(c.image).toBe(dep.spec.template.spec.containers[0].image);
      expect(c.command).toBeUndefined();
      expect(c.args).toEqual(["healthcheck", "--url", "http://tokenplace-relay.tokenplace.svc:80/healthz"]);
      expect(pod.spec.restartPolicy).toBe("Never");
      // Never selected by the relay Service.
      expect(pod.metadata.labels?.["app.kubernetes.io/name"]).not.toBe("tokenplace-relay");
    }
  });

  test("ServiceMonitor and PrometheusRule with the four alert families", () => {
    const docs = rendered["full-values.yaml"]!;
    const sm = get(docs, "ServiceMonitor");
    expect(sm.spec.endpoints[0]).toMatchObject({ port: "http", path: "/metrics" });
    expect(sm.spec.selector.matchLabels["app.kubernetes.io/component"]).toBe("relay");
    const rules = get(docs, "PrometheusRule").spec.groups[0].rules as { alert: string; expr: string }[];
    const byName = Object.fromEntries(rules.map((r) => [r.alert, r.expr]));
    expect(byName.TokenplaceRelayDown).toContain("up{");
    expect(byName.TokenplaceRelayHigh5xxRatio).toContain('tokenplace_relay_http_requests_total{job="tokenplace-relay", namespace="tokenplace", status=~"5.."}');
    // API v1 nodes live in their own store: the alert counts both kinds.
    expect(byName.TokenplaceRelayNoComputeNodes).toContain('max(tokenplace_relay_registered_nodes{job="tokenplace-relay", namespace="tokenplace"})');
    expect(byName.TokenplaceRelayNoComputeNodes).toContain('max(tokenplace_compute_nodes_healthy{job="tokenplace-relay", namespace="tokenplace"})');
    expect(byName.TokenplaceRelayUpstreamErrors).toContain("tokenplace_relay_upstream_errors_total");
    expect(byName.TokenplaceRelayUpstreamDown).toContain("tokenplace_relay_upstream_up");
    expect(byName.TokenplaceRelayRejections).toBeDefined();
    // Not rendered unless enabled.
    expect(find(rendered["default-values.yaml"]!, "ServiceMonitor")).toBeUndefined();
    expect(find(rendered["default-values.yaml"]!, "PrometheusRule")).toBeUndefined();
  });

  test("HPA only in the everything-enabled scenario; PDB wherever several replicas share state", () => {
    const full = rendered["full-values.yaml"]!;
    const hpa = get(full, "HorizontalPodAutoscaler");
    expect(hpa.spec).toMatchObject({ minReplicas: 2, maxReplicas: 4, scaleTargetRef: { kind: "Deployment", name: "tokenplace-relay" } });
    expect(get(full, "Deployment").spec.replicas).toBeUndefined();
    expect(get(full, "PodDisruptionBudget").spec.minAvailable).toBe(1);
    expect(find(rendered["default-values.yaml"]!, "HorizontalPodAutoscaler")).toBeUndefined();
    expect(get(rendered["default-values.yaml"]!, "Deployment").spec.replicas).toBe(1);
    for (const f of SCENARIOS) {
      const cm = get(rendered[f]!, "ConfigMap", "tokenplace-relay").data;
      const dep = get(rendered[f]!, "Deployment");
      const replicas = dep.spec.replicas ?? get(rendered[f]!, "HorizontalPodAutoscaler").spec.minReplicas;
      if (replicas > 1) expect(cm.TOKENPLACE_RELAY_STATE_BACKEND).toBe("redis");
      expect(find(rendered[f]!, "PodDisruptionBudget") !== undefined).toBe(replicas > 1);
      // memory: Recreate, never two pods on private state; redis: rolling without downtime.
      expect(dep.spec.strategy.type).toBe(cm.TOKENPLACE_RELAY_STATE_BACKEND === "redis" ? "RollingUpdate" : "Recreate");
    }
  });

  test("image: tag, digest, never latest", () => {
    expect(get(rendered["default-values.yaml"]!, "Deployment").spec.template.spec.containers[0].image).toMatch(
      /^ghcr\.io\/tokenplace\/tokenplace-relay:\d+\.\d+\.\d+$/,
    );
    expect(get(rendered["full-values.yaml"]!, "Deployment").spec.template.spec.containers[0].image).toBe(
      "ghcr.io/tokenplace/tokenplace-relay@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    );
  });
});

describe.skipIf(skip)("GPU indirection", () => {
  test("ExternalName Service gpu-server -> gpuExternalName.host; upstream env points at it", () => {
    const docs = renderOk(withMinimal({}));
    const gpu = get(docs, "Service", "gpu-server");
    expect(gpu.spec).toMatchObject({ type: "ExternalName", externalName: "gpu-workstation.lan.example.org" });
    expect(gpu.spec.clusterIP).toBeUndefined();
    expect(find(docs, "EndpointSlice")).toBeUndefined();
    expect(find(docs, "Endpoints")).toBeUndefined();
    const cm = get(docs, "ConfigMap").data;
    expect(cm.TOKENPLACE_RELAY_UPSTREAM_URL).toBe("http://gpu-server:3000");
    expect(cm.TOKENPLACE_GPU_HOST).toBe("gpu-server");
    expect(cm.TOKENPLACE_GPU_PORT).toBe("3000");
  });

  test("name, port and upstream url are configurable", () => {
    const docs = renderOk(withMinimal({ set: { "gpuExternalName.name": "gpu-box", "gpuExternalName.port": 8000, "upstream.scheme": "https" } }));
    expect(get(docs, "Service", "gpu-box").spec.ports[0].port).toBe(8000);
    expect(get(docs, "ConfigMap").data.TOKENPLACE_RELAY_UPSTREAM_URL).toBe("https://gpu-box:8000");
    const url = renderOk(withMinimal({ set: { "upstream.url": "http://10.1.2.3:9000" } }));
    const cm = get(url, "ConfigMap").data;
    expect(cm.TOKENPLACE_RELAY_UPSTREAM_URL).toBe("http://10.1.2.3:9000");
    expect(cm.TOKENPLACE_GPU_HOST).toBeUndefined();
  });

  test("headless: Service with clusterIP None plus a manual EndpointSlice", () => {
    const docs = renderOk({ valuesFiles: ["ci/headless-values.yaml"] });
    const gpu = get(docs, "Service", "gpu-server");
    expect(gpu.spec.clusterIP).toBe("None");
    expect(gpu.spec.type).toBeUndefined();
    expect(gpu.spec.selector).toBeUndefined();
    const slice = get(docs, "EndpointSlice");
    expect(slice.metadata.labels?.["kubernetes.io/service-name"]).toBe("gpu-server");
    expect(slice.metadata.labels?.["endpointslice.kubernetes.io/managed-by"]).not.toBe("endpointslice-controller.k8s.io");
    expect(slice.addressType).toBe("IPv4");
    expect(slice.ports).toEqual([{ name: "http", port: 3000, protocol: "TCP", appProtocol: "http" }]);
    expect(slice.endpoints.map((e: { addresses: string[] }) => e.addresses[0])).toEqual(["192.168.1.50", "192.168.1.51"]);
  });

  test("headless with legacy Endpoints", () => {
    const docs = renderOk({ valuesFiles: ["ci/headless-values.yaml"], set: { "gpuExternalName.headless.endpointsKind": "Endpoints" } });
    expect(find(docs, "EndpointSlice")).toBeUndefined();
    const ep = get(docs, "Endpoints", "gpu-server");
    expect(ep.subsets[0].addresses).toEqual([{ ip: "192.168.1.50" }, { ip: "192.168.1.51" }]);
    expect(ep.subsets[0].ports[0].port).toBe(3000);
  });

  test("relayOnly: no GPU Service, no upstream env, no GPU egress needed", () => {
    const docs = renderOk({ set: { "relay.relayOnly": true, "relay.serverToken.existingSecret": "s" } });
    expect(find(docs, "Service", "gpu-server")).toBeUndefined();
    const cm = get(docs, "ConfigMap").data;
    expect(cm.TOKENPLACE_RELAY_ONLY).toBe("true");
    expect(cm.TOKENPLACE_RELAY_UPSTREAM_URL).toBeUndefined();
    const np = get(docs, "NetworkPolicy");
    expect(np.spec.egress.length).toBe(1);
  });
});

describe.skipIf(skip)("NetworkPolicy", () => {
  const peers = (rule: { from?: unknown[]; to?: unknown[] }) => (rule.from ?? rule.to ?? []) as Record<string, any>[];

  test("ingress only from Traefik (kube-system) and the helm test pod; egress DNS + GPU CIDRs on the GPU port", () => {
    const docs = renderOk(withMinimal({}));
    const np = get(docs, "NetworkPolicy");
    expect(np.spec.podSelector.matchLabels).toEqual({ "app.kubernetes.io/name": "tokenplace-relay", "app.kubernetes.io/instance": "tokenplace-relay" });
    expect(np.spec.policyTypes).toEqual(["Ingress", "Egress"]);
    expect(np.spec.ingress.length).toBe(2);
    expect(peers(np.spec.ingress[0])[0]).toEqual({
      namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "kube-system" } },
      podSelector: { matchLabels: { "app.kubernetes.io/name": "traefik" } },
    });
    expect(np.spec.ingress[0].ports).toEqual([{ port: "http", protocol: "TCP" }]);
    expect(peers(np.spec.ingress[1])[0]!.podSelector.matchLabels["app.kubernetes.io/name"]).toBe("tokenplace-relay-test");
    expect(np.spec.egress.length).toBe(2);
    expect(np.spec.egress[0].ports).toEqual([{ port: 53, protocol: "UDP" }, { port: 53, protocol: "TCP" }]);
    expect(peers(np.spec.egress[0])[0]!.podSelector.matchLabels).toEqual({ "k8s-app": "kube-dns" });
    expect(np.spec.egress[1]).toEqual({ to: [{ ipBlock: { cidr: "192.168.1.50/32" } }], ports: [{ port: 3000, protocol: "TCP" }] });
  });

  test("Traefik namespace is configurable; Prometheus allowed when scraping is on", () => {
    const docs = renderOk({ valuesFiles: ["ci/full-values.yaml"], set: { "networkPolicy.ingressFrom.traefik.namespace": "traefik" } });
    const np = get(docs, "NetworkPolicy");
    const namespaces = np.spec.ingress.flatMap((r: any) => peers(r)).map((p: any) => p.namespaceSelector?.matchLabels["kubernetes.io/metadata.name"]);
    expect(namespaces).toContain("traefik");
    expect(namespaces).toContain("monitoring");
    expect(namespaces).not.toContain("kube-system");
  });

  test("headless addresses become /32 egress rules", () => {
    const np = get(renderOk({ valuesFiles: ["ci/headless-values.yaml"] }), "NetworkPolicy");
    const cidrs = np.spec.egress.flatMap((r: any) => peers(r)).filter((p: any) => p.ipBlock).map((p: any) => p.ipBlock.cidr);
    expect(cidrs).toEqual(["192.168.1.50/32", "192.168.1.51/32"]);
  });

  test("never 0.0.0.0/0: not in any scenario, refused by schema and by the template", () => {
    for (const f of SCENARIOS) {
      const np = get(renderOk({ valuesFiles: [`ci/${f}`] }), "NetworkPolicy");
      expect(JSON.stringify(np)).not.toMatch(/\/0"/);
    }
    const schema = render(withMinimal({ setJson: { "networkPolicy.gpuServerCIDRs": ["0.0.0.0/0"] } }));
    expect(schema.ok).toBe(false);
    expect(schema.stderr).toContain("gpuServerCIDRs");
    const extra = render(withMinimal({ setJson: { "networkPolicy.extraEgress": [{ to: [{ ipBlock: { cidr: "0.0.0.0/0" } }] }] } }));
    expect(extra.ok).toBe(false);
    expect(extra.stderr).toContain("/0");
  });

  test("disabled: no NetworkPolicy and no CIDR requirement", () => {
    const docs = renderOk({ set: { "networkPolicy.enabled": false, "gpuExternalName.host": "gpu.lan", "relay.serverToken.existingSecret": "s" } });
    expect(find(docs, "NetworkPolicy")).toBeUndefined();
  });
});

describe.skipIf(skip)("Ingress", () => {
  test("hosts, TLS and cert-manager issuer come from values; class traefik", () => {
    const docs = renderOk({ valuesFiles: ["ci/staging-values.yaml"] });
    const ing = get(docs, "Ingress");
    expect(ing.spec.ingressClassName).toBe("traefik");
    expect(ing.metadata.annotations?.["cert-manager.io/cluster-issuer"]).toBe("letsencrypt-production");
    expect(ing.spec.tls).toEqual([{ hosts: ["staging.token.place"], secretName: "staging-token-place-tls" }]);
    // The relay's public paths only (test/chart/operator-endpoints.test.ts has the details).
    expect(ing.spec.rules).toHaveLength(1);
    expect(ing.spec.rules[0].host).toBe("staging.token.place");
    expect(ing.spec.rules[0].http.paths[0]).toEqual({ path: "/api", pathType: "Prefix", backend: { service: { name: "tokenplace-relay", port: { name: "http" } } } });
    // `/` only as Exact (the chat page), never as a catch-all Prefix.
    expect(ing.spec.rules[0].http.paths.filter((p: { path: string; pathType: string }) => p.path === "/").map((p: { pathType: string }) => p.pathType)).toEqual(["Exact"]);
  });

  test("other hosts and no TLS; no buffering/compress middleware by default", () => {
    const docs = renderOk(withMinimal({ set: { "ingress.enabled": true, "ingress.className": "nginx" }, setJson: { "ingress.hosts": [{ host: "relay.example.net" }] } }));
    const ing = get(docs, "Ingress");
    expect(ing.spec.ingressClassName).toBe("nginx");
    expect(ing.spec.rules[0].host).toBe("relay.example.net");
    expect(ing.spec.tls).toBeUndefined();
    expect(JSON.stringify(ing.metadata.annotations ?? {})).not.toMatch(/middleware/);
  });

  test("no Ingress by default and no hard-coded domain in the chart's defaults", () => {
    expect(find(renderOk(withMinimal({})), "Ingress")).toBeUndefined();
  });
});

describe.skipIf(skip)("arm64 page size (Raspberry Pi 5)", () => {
  test("required node affinity: not arm64, or labelled tokenplace.io/page-size=4k", () => {
    const spec = get(renderOk(withMinimal({})), "Deployment").spec.template.spec;
    expect(spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms).toEqual([
      { matchExpressions: [{ key: "kubernetes.io/arch", operator: "NotIn", values: ["arm64"] }] },
      { matchExpressions: [{ key: "tokenplace.io/page-size", operator: "In", values: ["4k"] }] },
    ]);
  });

  test("combined with a user's required terms (AND), label configurable, can be turned off", () => {
    const full = get(renderOk({ valuesFiles: ["ci/full-values.yaml"] }), "Deployment").spec.template.spec;
    const terms = full.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms;
    expect(terms.length).toBe(2);
    for (const t of terms) expect(t.matchExpressions[0]).toEqual({ key: "node-role.kubernetes.io/control-plane", operator: "DoesNotExist" });
    const custom = get(renderOk(withMinimal({ set: { "arm64PageSize.nodeLabel": "example.org/pagesize", "arm64PageSize.nodeLabelValue": "4096" } })), "Deployment");
    expect(JSON.stringify(custom.spec.template.spec.affinity)).toContain('"key":"example.org/pagesize","operator":"In","values":["4096"]');
    const off = get(renderOk(withMinimal({ set: { "arm64PageSize.enforce": false } })), "Deployment");
    expect(off.spec.template.spec.affinity).toBeUndefined();
  });
});

describe.skipIf(skip)("server token", () => {
  test("from an existing Secret (key configurable) with optional rotation key", () => {
    const env = get(renderOk({ valuesFiles: ["ci/full-values.yaml"] }), "Deployment").spec.template.spec.containers[0].env;
    expect(env[0]).toEqual({ name: "TOKEN_PLACE_RELAY_SERVER_TOKEN", valueFrom: { secretKeyRef: { name: "tokenplace-relay-secrets", key: "token" } } });
    expect(env[1]).toEqual({
      name: "TOKEN_PLACE_RELAY_SERVER_TOKENS",
      valueFrom: { secretKeyRef: { name: "tokenplace-relay-secrets", key: "tokens", optional: true } },
    });
  });

  test("created from a value", () => {
    const docs = renderOk({ valuesFiles: ["ci/headless-values.yaml"] });
    const secret = get(docs, "Secret");
    expect(Buffer.from(secret.data.token, "base64").toString()).toBe("ci-only-token-0123456789abcdef");
    const env = get(docs, "Deployment").spec.template.spec.containers[0].env;
    expect(env[0].valueFrom.secretKeyRef.name).toBe(secret.metadata.name);
  });

  test("short token values are refused by the schema", () => {
    const r = render({ set: { "gpuExternalName.host": "gpu.lan", "relay.serverToken.value": "short", "networkPolicy.enabled": false } });
    expect(r.ok).toBe(false);
    expect(r.stderr).toContain("serverToken/value");
  });
});

describe.skipIf(skip)("API v1 relay settings", () => {
  const V1_NAMES = [
    "TOKEN_PLACE_API_V1_RELAY_SERVER_LEASE_SECONDS",
    "TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS",
    "TOKEN_PLACE_API_V1_IN_FLIGHT_TTL_SECONDS",
    "TOKEN_PLACE_API_V1_REQUEST_DEADLINE_SECONDS",
    "TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MIN_SECONDS",
    "TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MAX_SECONDS",
    "TOKEN_PLACE_API_V1_CONTROL_TOMBSTONE_TTL_SECONDS",
    "TOKENPLACE_TERMINAL_REQUEST_TTL_SECONDS",
    "TOKENPLACE_PENDING_REQUEST_TTL_SECONDS",
    "TOKEN_PLACE_API_V1_MAX_QUEUE_DEPTH_PER_NODE",
    "RELAY_V1_RETRIEVE_HOLD_MS",
    "RELAY_V1_MAX_REQUESTS",
  ];

  test("defaults: null keeps every relay default (no variable rendered); legacy routes off", () => {
    const cm = get(renderOk(withMinimal({})), "ConfigMap").data;
    for (const name of V1_NAMES) expect(cm[name]).toBeUndefined();
    expect(cm.TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES).toBe("false");
  });

  test("every value renders under its own name; fractions stay decimals, large integers never 1e+06", () => {
    const cm = get(renderOk({ valuesFiles: ["ci/full-values.yaml"] }), "ConfigMap").data;
    expect(Object.fromEntries(V1_NAMES.map((n) => [n, cm[n]]))).toEqual({
      TOKEN_PLACE_API_V1_RELAY_SERVER_LEASE_SECONDS: "45",
      TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "12.5",
      TOKEN_PLACE_API_V1_IN_FLIGHT_TTL_SECONDS: "60",
      TOKEN_PLACE_API_V1_REQUEST_DEADLINE_SECONDS: "600",
      TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MIN_SECONDS: "30",
      TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MAX_SECONDS: "1800",
      TOKEN_PLACE_API_V1_CONTROL_TOMBSTONE_TTL_SECONDS: "90",
      TOKENPLACE_TERMINAL_REQUEST_TTL_SECONDS: "900",
      TOKENPLACE_PENDING_REQUEST_TTL_SECONDS: "600",
      TOKEN_PLACE_API_V1_MAX_QUEUE_DEPTH_PER_NODE: "256",
      RELAY_V1_RETRIEVE_HOLD_MS: "7000",
      RELAY_V1_MAX_REQUESTS: "1000000",
    });
  });

  test("0 is a value, not unset (retrieve hold off, no poll hold)", () => {
    const cm = get(renderOk({ valuesFiles: ["ci/legacy-values.yaml"] }), "ConfigMap").data;
    expect(cm.RELAY_V1_RETRIEVE_HOLD_MS).toBe("0");
    expect(cm.TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS).toBe("0");
    expect(cm.TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES).toBe("true");
  });

  test("a deadline without min/max only has to fit the relay's defaults (1..3600); unset deadline is clamped by the relay", () => {
    expect(get(renderOk(withMinimal({ set: { "relay.apiV1.requestDeadlineSeconds": 3600 } })), "ConfigMap").data.TOKEN_PLACE_API_V1_REQUEST_DEADLINE_SECONDS).toBe("3600");
    const clamp = get(renderOk(withMinimal({ set: { "relay.apiV1.requestDeadlineMaxSeconds": 300 } })), "ConfigMap").data;
    expect(clamp.TOKEN_PLACE_API_V1_REQUEST_DEADLINE_MAX_SECONDS).toBe("300");
    expect(clamp.TOKEN_PLACE_API_V1_REQUEST_DEADLINE_SECONDS).toBeUndefined();
    const equal = get(renderOk(withMinimal({ setJson: { "relay.apiV1": { requestDeadlineMinSeconds: 90.5, requestDeadlineSeconds: 90.5, requestDeadlineMaxSeconds: 90.5 } } })), "ConfigMap").data;
    expect(equal.TOKEN_PLACE_API_V1_REQUEST_DEADLINE_SECONDS).toBe("90.5");
  });

  test("retrieveHoldMs accepts 0, 1000 and 9000", () => {
    for (const ms of [0, 1000, 9000]) {
      expect(get(renderOk(withMinimal({ set: { "relay.apiV1.retrieveHoldMs": ms } })), "ConfigMap").data.RELAY_V1_RETRIEVE_HOLD_MS).toBe(String(ms));
    }
  });
});

describe.skipIf(skip)("operator token", () => {
  const relayEnv = (docs: K8sObject[]) => get(docs, "Deployment").spec.template.spec.containers[0].env as { name: string; valueFrom?: any }[];

  test("not set: no variable, the unregister route stays off (503)", () => {
    const docs = renderOk(withMinimal({}));
    expect(relayEnv(docs).map((e) => e.name)).not.toContain("TOKEN_PLACE_OPERATOR_TOKEN");
    expect(find(docs, "Secret")).toBeUndefined();
  });

  test("from an existing Secret, after the server token(s)", () => {
    const env = relayEnv(renderOk({ valuesFiles: ["ci/full-values.yaml"] }));
    expect(env.map((e) => e.name).slice(0, 3)).toEqual(["TOKEN_PLACE_RELAY_SERVER_TOKEN", "TOKEN_PLACE_RELAY_SERVER_TOKENS", "TOKEN_PLACE_OPERATOR_TOKEN"]);
    expect(env[2]).toEqual({ name: "TOKEN_PLACE_OPERATOR_TOKEN", valueFrom: { secretKeyRef: { name: "tokenplace-relay-operator", key: "operator-token" } } });
  });

  test("optional key of the server token's Secret (staging style)", () => {
    const env = relayEnv(
      renderOk(withMinimal({ set: { "relay.operatorToken.existingSecret": "tokenplace-relay-secrets", "relay.operatorToken.optional": true } })),
    );
    expect(env.find((e) => e.name === "TOKEN_PLACE_OPERATOR_TOKEN")).toEqual({
      name: "TOKEN_PLACE_OPERATOR_TOKEN",
      valueFrom: { secretKeyRef: { name: "tokenplace-relay-secrets", key: "operator-token", optional: true } },
    });
  });

  test("created from a value next to the server token in the chart's Secret, never in the ConfigMap", () => {
    const docs = renderOk({ valuesFiles: ["ci/legacy-values.yaml"] });
    const secret = get(docs, "Secret");
    expect(Object.keys(secret.data).sort()).toEqual(["operator-token", "token"]);
    expect(Buffer.from(secret.data["operator-token"], "base64").toString()).toBe("ci-only-operator-token-0123456789");
    expect(Buffer.from(secret.data.token, "base64").toString()).toBe("ci-only-server-token-0123456789");
    const env = relayEnv(docs);
    expect(env.find((e) => e.name === "TOKEN_PLACE_OPERATOR_TOKEN")!.valueFrom.secretKeyRef).toEqual({ name: secret.metadata.name, key: "operator-token" });
    const cm = get(docs, "ConfigMap");
    expect(JSON.stringify(cm)).not.toContain("ci-only-operator-token");
    expect(JSON.stringify(cm)).not.toContain("TOKEN_PLACE_OPERATOR_TOKEN");
    const dep = get(docs, "Deployment");
    expect(dep.spec.template.metadata.annotations["checksum/secret"]).toMatch(/^[0-9a-f]{64}$/);
  });

  test("an operator token value alone also creates the chart's Secret (server token from an existing one)", () => {
    const docs = renderOk(withMinimal({ set: { "relay.operatorToken.value": "operator-token-0123456789abcdef" } }));
    const secret = get(docs, "Secret");
    expect(Object.keys(secret.data)).toEqual(["operator-token"]);
    const env = relayEnv(docs);
    expect(env[0]!.valueFrom.secretKeyRef).toEqual({ name: "tokenplace-relay-secrets", key: "token" });
    expect(env.find((e) => e.name === "TOKEN_PLACE_OPERATOR_TOKEN")!.valueFrom.secretKeyRef).toEqual({ name: "tokenplace-relay", key: "operator-token" });
    expect(get(docs, "Deployment").spec.template.metadata.annotations["checksum/secret"]).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe.skipIf(skip)("cross-field rules fail with a clear message", () => {
  const cases: [string, Parameters<typeof render>[0], string][] = [
    ["no GPU host", { set: { "relay.serverToken.existingSecret": "s", "networkPolicy.enabled": false } }, "gpuExternalName.host is required"],
    ["no GPU CIDRs with NetworkPolicy", { set: { "gpuExternalName.host": "gpu.lan", "relay.serverToken.existingSecret": "s" } }, "NetworkPolicy cannot match DNS names"],
    ["no server token", { set: { "gpuExternalName.host": "gpu.lan", "networkPolicy.enabled": false } }, "no server token"],
    ["two replicas with in-memory state", withMinimal({ set: { replicaCount: 2 } }), "needs shared state"],
    ["HPA with in-memory state", withMinimal({ set: { "autoscaling.enabled": true } }), "autoscaling.enabled needs shared state"],
    ["redis without a datastore", withMinimal({ set: { "state.backend": "redis", replicaCount: 2 } }), "state.backend=redis needs a datastore: valkey.enabled=true"],
    ["headless without addresses", { set: { "gpuExternalName.headless.enabled": true, "relay.serverToken.existingSecret": "s", "networkPolicy.enabled": false } }, "requires gpuExternalName.headless.addresses"],
    ["headless and host", { valuesFiles: ["ci/headless-values.yaml"], set: { "gpuExternalName.host": "gpu.lan" } }, "exclusive"],
    ["grace period shorter than the drain", withMinimal({ set: { terminationGracePeriodSeconds: 20 } }), "must be longer than the relay's drain"],
    ["image tag latest (schema)", withMinimal({ set: { "image.tag": "latest" } }), "/image/tag"],
    ["unknown key (schema)", withMinimal({ set: { "relay.unknownSetting": 1 } }), "additional properties 'unknownSetting' not allowed"],
    ["insecure security context (schema)", withMinimal({ set: { "securityContext.allowPrivilegeEscalation": true } }), "allowPrivilegeEscalation"],
    ["non-root pinned (schema)", withMinimal({ set: { "podSecurityContext.runAsNonRoot": false } }), "runAsNonRoot"],
    ["ingress without hosts", withMinimal({ set: { "ingress.enabled": true } }), "set ingress.hosts"],
    ["ServiceMonitor without the API", withMinimal({ set: { "metrics.serviceMonitor.enabled": true }, apiVersions: [] }), "no monitoring.coreos.com/v1 ServiceMonitor API"],
    ["PDB that blocks drains", withMinimal({ set: { "podDisruptionBudget.enabled": true, "podDisruptionBudget.minAvailable": 1 } }), "would block every node drain"],
    // API v1: bounds in the schema, cross-field rules in the template.
    ["v1 deadline min above max", withMinimal({ set: { "relay.apiV1.requestDeadlineMinSeconds": 600, "relay.apiV1.requestDeadlineMaxSeconds": 300 } }), "requestDeadlineMinSeconds (600) must not exceed requestDeadlineMaxSeconds (300"],
    ["v1 deadline below min", withMinimal({ set: { "relay.apiV1.requestDeadlineMinSeconds": 60, "relay.apiV1.requestDeadlineSeconds": 30 } }), "requestDeadlineSeconds (30) must lie within"],
    ["v1 deadline above max", withMinimal({ set: { "relay.apiV1.requestDeadlineMaxSeconds": 300, "relay.apiV1.requestDeadlineSeconds": 480 } }), "requestDeadlineSeconds (480) must lie within requestDeadlineMinSeconds..requestDeadlineMaxSeconds (1..300"],
    ["v1 deadline above the relay's ceiling (schema)", withMinimal({ set: { "relay.apiV1.requestDeadlineSeconds": 3601 } }), "apiV1/requestDeadlineSeconds"],
    ["v1 lease 0 (schema)", withMinimal({ set: { "relay.apiV1.leaseSeconds": 0 } }), "apiV1/leaseSeconds"],
    ["v1 lease not an integer (schema)", withMinimal({ setJson: { "relay.apiV1.leaseSeconds": 2.5 } }), "apiV1/leaseSeconds"],
    ["v1 lease above 3600 (schema)", withMinimal({ set: { "relay.apiV1.leaseSeconds": 3601 } }), "apiV1/leaseSeconds"],
    ["v1 poll wait above 120 (schema)", withMinimal({ set: { "relay.apiV1.pollWaitSeconds": 121 } }), "apiV1/pollWaitSeconds"],
    ["v1 poll wait negative (schema)", withMinimal({ set: { "relay.apiV1.pollWaitSeconds": -1 } }), "apiV1/pollWaitSeconds"],
    ["v1 poll wait as a string (schema)", withMinimal({ set: { "relay.apiV1.pollWaitSeconds": "10" } }), "apiV1/pollWaitSeconds"],
    ["v1 poll wait in exponent notation", withMinimal({ setJson: { "relay.apiV1.pollWaitSeconds": 0.00001 } }), "exponent notation"],
    ["v1 in-flight TTL 0 (schema)", withMinimal({ set: { "relay.apiV1.inFlightTtlSeconds": 0 } }), "apiV1/inFlightTtlSeconds"],
    ["v1 tombstone TTL above 300 (schema)", withMinimal({ set: { "relay.apiV1.tombstoneTtlSeconds": 301 } }), "apiV1/tombstoneTtlSeconds"],
    ["v1 terminal TTL above a day (schema)", withMinimal({ set: { "relay.apiV1.terminalTtlSeconds": 86401 } }), "apiV1/terminalTtlSeconds"],
    ["v1 pending TTL 0 (schema)", withMinimal({ set: { "relay.apiV1.pendingTtlSeconds": 0 } }), "apiV1/pendingTtlSeconds"],
    ["v1 queue depth above 100000 (schema)", withMinimal({ set: { "relay.apiV1.maxQueueDepthPerNode": 100001 } }), "apiV1/maxQueueDepthPerNode"],
    ["v1 max requests 0 (schema)", withMinimal({ set: { "relay.apiV1.maxRequests": 0 } }), "apiV1/maxRequests"],
    ["v1 retrieve hold between 0 and 1000 (schema)", withMinimal({ set: { "relay.apiV1.retrieveHoldMs": 500 } }), "apiV1/retrieveHoldMs"],
    ["v1 retrieve hold above 9000 (schema)", withMinimal({ set: { "relay.apiV1.retrieveHoldMs": 9001 } }), "apiV1/retrieveHoldMs"],
    ["v1 unknown key (schema)", withMinimal({ set: { "relay.apiV1.leaseSecs": 30 } }), "additional properties 'leaseSecs' not allowed"],
    ["legacyRoutes not a boolean (schema)", withMinimal({ set: { "relay.legacyRoutes": "yes" } }), "legacyRoutes"],
    ["operator token: existingSecret and value", withMinimal({ set: { "relay.operatorToken.existingSecret": "op", "relay.operatorToken.value": "operator-token-0123456789" } }), "relay.operatorToken: set existingSecret or value, not both"],
    ["operator token too short (schema)", withMinimal({ set: { "relay.operatorToken.value": "short" } }), "operatorToken/value"],
    ["operator token under the server token's key", withMinimal({ set: { "relay.operatorToken.existingSecret": "tokenplace-relay-secrets", "relay.operatorToken.key": "token" } }), "compute nodes would hold the operator token"],
    ["operator token under the rotation key", withMinimal({ set: { "relay.serverToken.rotationKey": "tokens", "relay.operatorToken.existingSecret": "tokenplace-relay-secrets", "relay.operatorToken.key": "tokens" } }), "is relay.serverToken.rotationKey"],
    ["operator and server token values under one key", { valuesFiles: ["ci/legacy-values.yaml"], set: { "relay.operatorToken.key": "token" } }, "compute nodes would hold the operator token"],
    ["operator token equal to the server token", { valuesFiles: ["ci/legacy-values.yaml"], set: { "relay.operatorToken.value": "ci-only-server-token-0123456789" } }, "equals relay.serverToken.value"],
    ["operator token optional without existingSecret", withMinimal({ set: { "relay.operatorToken.optional": true } }), "relay.operatorToken.optional only applies"],
  ];
  for (const [name, opts, message] of cases) {
    test(name, () => {
      const r = render(opts);
      expect(r.ok).toBe(false);
      expect(r.stderr).toContain(message);
    });
  }

  test("redis backend lifts the single-replica rule", () => {
    const docs = renderOk(withMinimal({ set: { "state.backend": "redis", "state.redis.existingSecret": "redis", replicaCount: 2 } }));
    expect(get(docs, "Deployment").spec.replicas).toBe(2);
  });
});

describe.skipIf(skip)("shared state: rules", () => {
  const valkey = (o: { set?: Record<string, string | number | boolean>; setJson?: Record<string, unknown> } = {}) => ({ valuesFiles: ["ci/valkey-values.yaml"], ...o });
  const cases: [string, Parameters<typeof render>[0], string][] = [
    ["valkey with memory state", withMinimal({ set: { "valkey.enabled": true } }), "valkey.enabled=true with state.backend=memory"],
    ["valkey and an existing Secret", valkey({ set: { "state.redis.existingSecret": "redis" } }), "are exclusive"],
    ["valkey and a URL value", valkey({ set: { "state.redis.url": "redis://r:6379/0" } }), "are exclusive"],
    ["URL value and existing Secret", withMinimal({ set: { "state.backend": "redis", "state.redis.url": "redis://r:6379/0", "state.redis.existingSecret": "redis" } }), "set url or existingSecret, not both"],
    ["existing Secret with memory state", withMinimal({ set: { "state.redis.existingSecret": "redis" } }), "state.redis.existingSecret is set but state.backend=memory"],
    ["URL value with memory state", withMinimal({ set: { "state.redis.url": "redis://r:6379/0" } }), "state.redis.url is set but state.backend=memory"],
    ["key prefix with memory state", withMinimal({ set: { "state.redis.keyPrefix": "p:" } }), "state.redis.keyPrefix is set but state.backend=memory"],
    ["command timeout with memory state", withMinimal({ set: { "state.redis.commandTimeoutMs": 500 } }), "state.redis.commandTimeoutMs is set but state.backend=memory"],
    ["RollingUpdate with memory state", withMinimal({ set: { "strategy.type": "RollingUpdate" } }), "strategy.type=RollingUpdate with state.backend=memory"],
    ["rollingUpdate settings with Recreate", withMinimal({ set: { "strategy.type": "Recreate", "strategy.rollingUpdate.maxSurge": 1 } }), "strategy.rollingUpdate only applies"],
    ["relay cap above 3/4 of Valkey's memory", valkey({ set: { "relay.apiV1.maxStoredBytes": 134217728 } }), "relay.apiV1.maxStoredBytes (134217728; unset, the relay derives 167772160 from its memory budget) must stay within 3/4 of valkey.maxmemory (128mb"],
    ["relay default cap with a small Valkey", valkey({ set: { "relay.apiV1.maxStoredBytes": null as unknown as number } }), "must stay within 3/4 of valkey.maxmemory"],
    ["Valkey memory limit below 1.5 x maxmemory", valkey({ set: { "valkey.resources.limits.memory": "160Mi" } }), "valkey.resources.limits.memory (160Mi) must be at least 1.5 x valkey.maxmemory (128mb)"],
    ["password and URL under one key", valkey({ set: { "valkey.auth.existingSecret": "vk", "valkey.auth.urlKey": "password" } }), "must differ"],
    ["egress CIDR /0", { valuesFiles: ["ci/redis-external-values.yaml"], setJson: { "state.redis.egress.cidrs": ["0.0.0.0/0"] } }, "egress/cidrs"],
    ["maxmemory without a unit (schema)", valkey({ set: { "valkey.maxmemory": "128" } }), "valkey/maxmemory"],
    ["maxmemory in kubernetes units (schema)", valkey({ set: { "valkey.maxmemory": "128Mi" } }), "valkey/maxmemory"],
    ["appendfsync no (schema)", valkey({ set: { "valkey.appendfsync": "no" } }), "valkey/appendfsync"],
    ["unknown Valkey key (schema)", valkey({ set: { "valkey.maxMemory": "128mb" } }), "additional properties 'maxMemory' not allowed"],
    ["unknown state.redis key (schema)", valkey({ set: { "state.redis.prefix": "x" } }), "additional properties 'prefix' not allowed"],
    ["Valkey image latest (schema)", valkey({ set: { "valkey.image.tag": "latest" } }), "valkey/image/tag"],
    ["Valkey digest malformed (schema)", valkey({ set: { "valkey.image.digest": "sha256:abc" } }), "valkey/image/digest"],
    ["privileged Valkey (schema)", valkey({ set: { "valkey.securityContext.privileged": true } }), "privileged"],
    ["Valkey as root (schema)", valkey({ set: { "valkey.podSecurityContext.runAsNonRoot": false } }), "runAsNonRoot"],
    ["Valkey writable root (schema)", valkey({ set: { "valkey.securityContext.readOnlyRootFilesystem": false } }), "readOnlyRootFilesystem"],
    ["maxStoredBytes below 1 MiB (schema)", withMinimal({ set: { "relay.apiV1.maxStoredBytes": 1048575 } }), "apiV1/maxStoredBytes"],
    ["PDB enabled not a boolean (schema)", withMinimal({ set: { "podDisruptionBudget.enabled": "yes" } }), "podDisruptionBudget/enabled"],
  ];
  for (const [name, opts, message] of cases) {
    test(name, () => {
      const r = render(opts);
      expect(r.ok).toBe(false);
      expect(r.stderr).toContain(message);
    });
  }
});

describe.skipIf(skip)("Deployment strategy and PodDisruptionBudget", () => {
  const redis = (set: Record<string, string | number | boolean> = {}) => withMinimal({ set: { "state.backend": "redis", "state.redis.existingSecret": "redis", ...set } });

  test("memory: Recreate by default; an explicit Recreate is accepted", () => {
    expect(get(renderOk(withMinimal({})), "Deployment").spec.strategy).toEqual({ type: "Recreate" });
    expect(get(renderOk(withMinimal({ set: { "strategy.type": "Recreate" } })), "Deployment").spec.strategy).toEqual({ type: "Recreate" });
  });

  test("redis: RollingUpdate with one extra pod and none taken away; an explicit strategy wins", () => {
    expect(get(renderOk(redis()), "Deployment").spec.strategy).toEqual({ type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    const custom = get(renderOk(redis({ "strategy.type": "RollingUpdate", "strategy.rollingUpdate.maxSurge": "50%", "strategy.rollingUpdate.maxUnavailable": 1 })), "Deployment");
    expect(custom.spec.strategy).toEqual({ type: "RollingUpdate", rollingUpdate: { maxSurge: "50%", maxUnavailable: 1 } });
  });

  test("PDB: automatic with shared state and several replicas (maxUnavailable 1), never for one replica or memory state", () => {
    expect(get(renderOk(redis({ replicaCount: 2 })), "PodDisruptionBudget").spec).toEqual({
      maxUnavailable: 1,
      selector: { matchLabels: { "app.kubernetes.io/name": "tokenplace-relay", "app.kubernetes.io/instance": "tokenplace-relay" } },
    });
    expect(find(renderOk(redis({ "autoscaling.enabled": true })), "PodDisruptionBudget")).toBeDefined();
    expect(find(renderOk(redis()), "PodDisruptionBudget")).toBeUndefined();
    expect(find(renderOk(withMinimal({})), "PodDisruptionBudget")).toBeUndefined();
    expect(find(renderOk(redis({ replicaCount: 2, "podDisruptionBudget.enabled": false })), "PodDisruptionBudget")).toBeUndefined();
    // Forced on with one replica (maxUnavailable 1 never blocks a drain).
    expect(get(renderOk(withMinimal({ set: { "podDisruptionBudget.enabled": true } })), "PodDisruptionBudget").spec.maxUnavailable).toBe(1);
    // minAvailable from values; the drain rule still applies to the automatic PDB.
    expect(get(renderOk({ valuesFiles: ["ci/redis-external-values.yaml"] }), "PodDisruptionBudget").spec.minAvailable).toBe(2);
    const blocked = render(redis({ replicaCount: 2, "podDisruptionBudget.minAvailable": 2 }));
    expect(blocked.ok).toBe(false);
    expect(blocked.stderr).toContain("would block every node drain");
  });
});

describe.skipIf(skip)("shared state: the relay's datastore URL and settings", () => {
  const relayEnv = (docs: K8sObject[]) => get(docs, "Deployment").spec.template.spec.containers[0].env as { name: string; value?: string; valueFrom?: any }[];

  test("external datastore: URL from the existing Secret's key, egress to its CIDRs on its port, no Valkey objects", () => {
    const docs = renderOk({ valuesFiles: ["ci/redis-external-values.yaml"] });
    expect(relayEnv(docs).find((e) => e.name === "TOKENPLACE_RELAY_REDIS_URL")).toEqual({
      name: "TOKENPLACE_RELAY_REDIS_URL",
      valueFrom: { secretKeyRef: { name: "tokenplace-redis", key: "redis-url" } },
    });
    const cm = get(docs, "ConfigMap").data;
    expect(cm.TOKENPLACE_RELAY_STATE_BACKEND).toBe("redis");
    expect(cm.TOKENPLACE_RELAY_REDIS_URL).toBeUndefined();
    // null keeps the relay's defaults.
    expect(cm.TOKENPLACE_RELAY_REDIS_KEY_PREFIX).toBeUndefined();
    expect(cm.RELAY_REDIS_COMMAND_TIMEOUT_MS).toBeUndefined();
    const np = get(docs, "NetworkPolicy", "tokenplace-relay");
    expect(np.spec.egress).toContainEqual({ to: [{ ipBlock: { cidr: "192.168.1.20/32" } }], ports: [{ port: 6380, protocol: "TCP" }] });
    for (const kind of ["StatefulSet", "Secret"]) expect(find(docs, kind)).toBeUndefined();
    expect(find(docs, "Service", "tokenplace-relay-valkey")).toBeUndefined();
    expect(get(docs, "Deployment").spec.replicas).toBe(3);
  });

  test("a URL given as a value goes into the chart's Secret (key redis-url), never the ConfigMap or the pod spec", () => {
    const url = "redis://:ci-only-password@valkey.example.svc:6379/2";
    const docs = renderOk(withMinimal({ set: { "state.backend": "redis", "state.redis.url": url } }));
    const secret = get(docs, "Secret", "tokenplace-relay");
    expect(Buffer.from(secret.data["redis-url"], "base64").toString()).toBe(url);
    expect(relayEnv(docs).find((e) => e.name === "TOKENPLACE_RELAY_REDIS_URL")!.valueFrom.secretKeyRef).toEqual({ name: "tokenplace-relay", key: "redis-url" });
    expect(JSON.stringify(get(docs, "ConfigMap"))).not.toContain("ci-only-password");
    expect(JSON.stringify(get(docs, "Deployment"))).not.toContain("ci-only-password");
    expect(get(docs, "Deployment").spec.template.metadata.annotations["checksum/secret"]).toMatch(/^[0-9a-f]{64}$/);
  });

  test("bundled Valkey: the relay's URL from the generated Secret, egress to the Valkey pods only, restarts when it changes", () => {
    const docs = renderOk({ valuesFiles: ["ci/valkey-values.yaml"] });
    expect(relayEnv(docs).find((e) => e.name === "TOKENPLACE_RELAY_REDIS_URL")!.valueFrom.secretKeyRef).toEqual({ name: "tokenplace-relay-valkey", key: "url" });
    const np = get(docs, "NetworkPolicy", "tokenplace-relay");
    expect(np.spec.egress).toContainEqual({
      to: [{ podSelector: { matchLabels: { "app.kubernetes.io/name": "tokenplace-relay-valkey", "app.kubernetes.io/instance": "tokenplace-relay" } } }],
      ports: [{ port: 6379, protocol: "TCP" }],
    });
    const relayAnn = get(docs, "Deployment").spec.template.metadata.annotations;
    const valkeyAnn = get(docs, "StatefulSet").spec.template.metadata.annotations;
    // One password per render: the relay and Valkey carry the same checksum of the same Secret.
    expect(relayAnn["checksum/valkey-secret"]).toMatch(/^[0-9a-f]{64}$/);
    expect(relayAnn["checksum/valkey-secret"]).toBe(valkeyAnn["checksum/secret"]);
    const cm = get(docs, "ConfigMap", "tokenplace-relay").data;
    expect(cm).toMatchObject({ TOKENPLACE_RELAY_STATE_BACKEND: "redis", TOKENPLACE_RELAY_REDIS_KEY_PREFIX: "tokenplace-relay:ci:", RELAY_REDIS_COMMAND_TIMEOUT_MS: "1500", RELAY_V1_MAX_STORED_BYTES: "67108864" });
  });
});

describe.skipIf(skip)("bundled Valkey", () => {
  const docs = skip ? [] : renderOk({ valuesFiles: ["ci/valkey-values.yaml"] });
  const sts = () => get(docs, "StatefulSet", "tokenplace-relay-valkey");
  const container = () => sts().spec.template.spec.containers[0];
  const VALKEY_SELECTOR = { "app.kubernetes.io/name": "tokenplace-relay-valkey", "app.kubernetes.io/instance": "tokenplace-relay" };

  test("StatefulSet: one replica, governed by the headless Service, image pinned by digest (arm64+amd64 index)", () => {
    expect(sts().spec).toMatchObject({ replicas: 1, serviceName: "tokenplace-relay-valkey-headless", selector: { matchLabels: VALKEY_SELECTOR } });
    expect(container().image).toMatch(/^docker\.io\/valkey\/valkey:8\.[0-9.]+-alpine@sha256:[0-9a-f]{64}$/);
    const noDigest = get(renderOk({ valuesFiles: ["ci/valkey-values.yaml"], set: { "valkey.image.digest": "" } }), "StatefulSet");
    expect(noDigest.spec.template.spec.containers[0].image).toBe("docker.io/valkey/valkey:8.1.9-alpine");
  });

  test("Valkey pods never carry the relay's selector labels (relay Service, PDB and NetworkPolicy select name+instance)", () => {
    const podLabels = sts().spec.template.metadata.labels;
    expect(podLabels).toMatchObject({ ...VALKEY_SELECTOR, "app.kubernetes.io/component": "valkey" });
    const relaySelector = get(docs, "Service", "tokenplace-relay").spec.selector as Record<string, string>;
    expect(Object.entries(relaySelector).every(([k, v]) => podLabels[k] === v)).toBe(false);
    expect(sts().metadata.labels?.["app.kubernetes.io/component"]).toBe("valkey");
  });

  test("hardened like the relay: non-root 999/1000, read-only root, no capabilities, RuntimeDefault, no token", () => {
    const spec = sts().spec.template.spec;
    expect(spec.automountServiceAccountToken).toBe(false);
    expect(spec.enableServiceLinks).toBe(false);
    expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 999, runAsGroup: 1000, fsGroup: 1000, seccompProfile: { type: "RuntimeDefault" } });
    expect(container().securityContext).toEqual({
      runAsNonRoot: true,
      runAsUser: 999,
      runAsGroup: 1000,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      privileged: false,
      capabilities: { drop: ["ALL"] },
      seccompProfile: { type: "RuntimeDefault" },
    });
    // Writable paths: the data volume and a memory-backed emptyDir for the password file only.
    expect(container().volumeMounts).toEqual([
      { name: "data", mountPath: "/data" },
      { name: "config", mountPath: "/etc/valkey", readOnly: true },
      { name: "run", mountPath: "/run/valkey" },
    ]);
    expect(spec.volumes.find((v: { name: string }) => v.name === "run").emptyDir).toEqual({ medium: "Memory", sizeLimit: "1Mi" });
    // The arm64 page-size rule applies to Valkey too (jemalloc aborts on 16 KB pages).
    expect(JSON.stringify(spec.affinity)).toContain('"key":"tokenplace.io/page-size","operator":"In","values":["4k"]');
    expect(container().resources.limits.memory).toBe("256Mi");
  });

  test("password from the Secret via env, written to a file (never argv); probes ping and TCP", () => {
    const c = container();
    expect(c.command.slice(0, 2)).toEqual(["/bin/sh", "-c"]);
    expect(c.command[2]).toContain("exec valkey-server /etc/valkey/valkey.conf");
    expect(c.command[2]).toContain("> /run/valkey/auth.conf");
    expect(c.args).toBeUndefined();
    for (const name of ["VALKEY_PASSWORD", "REDISCLI_AUTH"]) {
      expect(c.env.find((e: { name: string }) => e.name === name).valueFrom.secretKeyRef).toEqual({ name: "tokenplace-relay-valkey", key: "password" });
    }
    expect(c.readinessProbe.exec.command.join(" ")).toContain("valkey-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG");
    expect(c.livenessProbe.tcpSocket).toEqual({ port: "valkey" });
    expect(c.ports).toEqual([{ name: "valkey", containerPort: 6379, protocol: "TCP" }]);
  });

  test("valkey.conf: AOF everysec, maxmemory with noeviction, password only by include", () => {
    const conf: string = get(docs, "ConfigMap", "tokenplace-relay-valkey").data["valkey.conf"];
    const lines = conf.split("\n").filter((l) => l && !l.startsWith("#"));
    for (const l of ["appendonly yes", "appendfsync everysec", "maxmemory 128mb", "maxmemory-policy noeviction", "dir /data", 'save ""', "port 6379"]) expect(lines).toContain(l);
    expect(lines.at(-1)).toBe("include /run/valkey/auth.conf");
    expect(conf).not.toMatch(/requirepass/);
    const always = get(renderOk({ valuesFiles: ["ci/valkey-values.yaml"], set: { "valkey.appendfsync": "always", "valkey.maxmemory": "1gb", "valkey.resources.limits.memory": "2Gi" } }), "ConfigMap", "tokenplace-relay-valkey");
    expect(always.data["valkey.conf"]).toContain("appendfsync always\n");
    expect(always.data["valkey.conf"]).toContain("maxmemory 1gb\n");
  });

  test("generated Secret: 40-character password, the relay's URL points at the ClusterIP Service with it", () => {
    const secret = get(docs, "Secret", "tokenplace-relay-valkey");
    const password = Buffer.from(secret.data.password, "base64").toString();
    expect(password).toMatch(/^[A-Za-z0-9]{40}$/);
    expect(Buffer.from(secret.data.url, "base64").toString()).toBe(`redis://:${password}@tokenplace-relay-valkey.tokenplace.svc:6379/0`);
    const svc = get(docs, "Service", "tokenplace-relay-valkey");
    expect(svc.spec).toMatchObject({ type: "ClusterIP", selector: VALKEY_SELECTOR, ports: [{ name: "valkey", port: 6379, targetPort: "valkey", protocol: "TCP", appProtocol: "redis" }] });
    const headless = get(docs, "Service", "tokenplace-relay-valkey-headless");
    expect(headless.spec).toMatchObject({ clusterIP: "None", selector: VALKEY_SELECTOR });
  });

  test("existing Secret: no generated Secret, password and URL from its keys", () => {
    const d = renderOk({ valuesFiles: ["ci/valkey-values.yaml"], set: { "valkey.auth.existingSecret": "tokenplace-valkey", "valkey.auth.passwordKey": "valkey-password", "valkey.auth.urlKey": "relay-url" } });
    expect(find(d, "Secret")).toBeUndefined();
    const c = get(d, "StatefulSet").spec.template.spec.containers[0];
    expect(c.env[0].valueFrom.secretKeyRef).toEqual({ name: "tokenplace-valkey", key: "valkey-password" });
    const relay = get(d, "Deployment").spec.template;
    expect(relay.spec.containers[0].env.find((e: { name: string }) => e.name === "TOKENPLACE_RELAY_REDIS_URL").valueFrom.secretKeyRef).toEqual({ name: "tokenplace-valkey", key: "relay-url" });
    expect(relay.metadata.annotations["checksum/valkey-secret"]).toBeUndefined();
    expect(get(d, "StatefulSet").spec.template.metadata.annotations["checksum/secret"]).toBeUndefined();
  });

  test("persistence: a retained PVC of valkey.persistence.size and storageClass; '-' means no class; disabled: an emptyDir", () => {
    const spec = sts().spec;
    expect(spec.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: "Retain", whenScaled: "Retain" });
    expect(spec.volumeClaimTemplates).toHaveLength(1);
    expect(spec.volumeClaimTemplates[0].metadata.name).toBe("data");
    expect(spec.volumeClaimTemplates[0].spec).toEqual({ accessModes: ["ReadWriteOnce"], storageClassName: "local-path", resources: { requests: { storage: "2Gi" } } });
    const dflt = get(renderOk({ valuesFiles: ["ci/staging-values.yaml"] }), "StatefulSet").spec.volumeClaimTemplates[0].spec;
    expect(dflt.storageClassName).toBeUndefined();
    expect(dflt.resources.requests.storage).toBe("1Gi");
    const none = get(renderOk({ valuesFiles: ["ci/valkey-values.yaml"], set: { "valkey.persistence.storageClass": "-" } }), "StatefulSet");
    expect(none.spec.volumeClaimTemplates[0].spec.storageClassName).toBe("");
    const off = get(renderOk({ valuesFiles: ["ci/valkey-values.yaml"], set: { "valkey.persistence.enabled": false } }), "StatefulSet");
    expect(off.spec.volumeClaimTemplates).toBeUndefined();
    expect(off.spec.persistentVolumeClaimRetentionPolicy).toBeUndefined();
    expect(off.spec.template.spec.volumes.find((v: { name: string }) => v.name === "data").emptyDir).toEqual({ sizeLimit: "2Gi" });
  });

  test("NetworkPolicy: only this release's relay pods on 6379 (plus extraIngress); no egress at all", () => {
    const np = get(docs, "NetworkPolicy", "tokenplace-relay-valkey");
    expect(np.spec).toEqual({
      podSelector: { matchLabels: VALKEY_SELECTOR },
      policyTypes: ["Ingress", "Egress"],
      ingress: [{ from: [{ podSelector: { matchLabels: { "app.kubernetes.io/name": "tokenplace-relay", "app.kubernetes.io/instance": "tokenplace-relay" } } }], ports: [{ port: 6379, protocol: "TCP" }] }],
      egress: [],
    });
    const extra = { from: [{ podSelector: { matchLabels: { app: "exporter" } } }], ports: [{ port: 6379, protocol: "TCP" }] };
    const withExtra = get(renderOk({ valuesFiles: ["ci/valkey-values.yaml"], setJson: { "valkey.networkPolicy.extraIngress": [extra] } }), "NetworkPolicy", "tokenplace-relay-valkey");
    expect(withExtra.spec.ingress).toHaveLength(2);
    expect(withExtra.spec.ingress[1]).toEqual(extra);
    const off = renderOk({ valuesFiles: ["ci/valkey-values.yaml"], set: { "networkPolicy.enabled": false } });
    expect(find(off, "NetworkPolicy")).toBeUndefined();
  });

  test("not rendered unless valkey.enabled (memory scenarios and the external datastore)", () => {
    for (const f of ["default-values.yaml", "headless-values.yaml", "legacy-values.yaml", "full-values.yaml", "redis-external-values.yaml"]) {
      const d = renderOk({ valuesFiles: [`ci/${f}`] });
      expect(d.filter((x) => x.metadata.name.includes("valkey"))).toEqual([]);
    }
  });

  test("long release names: the StatefulSet name stays <= 52 characters, the headless Service <= 63", () => {
    const d = renderOk({ valuesFiles: ["ci/valkey-values.yaml"], release: "relay-".repeat(10).slice(0, 53) });
    const s = get(d, "StatefulSet");
    expect(s.metadata.name.length).toBeLessThanOrEqual(52);
    expect(s.spec.serviceName.length).toBeLessThanOrEqual(63);
    expect(find(d, "Service", s.spec.serviceName)).toBeDefined();
  });
});
