// Private operator endpoints in the chart: /metrics and /relay/diagnostics stay off the Ingress
// (an allowlist of the relay's public paths, checked against the relay's own route tables), the
// metrics token comes from a Secret, and the ServiceMonitor scrapes with it.
import { describe, expect, test } from "bun:test";
import { loadConfig } from "../../src/config/index.ts";
import { RELAY_ROUTE_SPECS } from "../../src/routes.ts";
import { find, get, render, renderOk, skipWithoutHelm, withMinimal, type K8sObject, type RenderOptions } from "./helm.ts";

const skip = skipWithoutHelm("test/chart/operator-endpoints.test.ts");

const TOKEN = "ci-only-metrics-token-0123456789";
const OPERATOR_ROUTES = RELAY_ROUTE_SPECS.filter((s) => s.auth === "metrics-token" || s.auth === "metrics-scrape").map((s) => s.path);
const HOST = { "ingress.enabled": true } as const;

interface IngressPath {
  path: string;
  pathType: string;
}

function ingressPaths(docs: K8sObject[], host = 0): IngressPath[] {
  const ing = get(docs, "Ingress");
  return ing.spec.rules[host].http.paths.map((p: IngressPath & { backend: unknown }) => {
    expect(p.backend).toEqual({ service: { name: "tokenplace-relay", port: { name: "http" } } });
    return { path: p.path, pathType: p.pathType };
  });
}

/** Whether an Ingress path routes a request path, under Kubernetes' element-wise Prefix. */
function routesK8s(p: IngressPath, path: string): boolean {
  if (p.pathType === "Exact") return p.path === path;
  const prefix = p.path.replace(/\/+$/, "");
  return prefix === "" || path === prefix || path.startsWith(`${prefix}/`);
}

/** The same under Traefik's PathPrefix (a plain string prefix): the looser of the two. */
function routesTraefik(p: IngressPath, path: string): boolean {
  return p.pathType === "Exact" ? p.path === path : path.startsWith(p.path);
}

const withIngress = (o: RenderOptions = {}, hosts: unknown[] = [{ host: "relay.example.org" }]): RenderOptions =>
  withMinimal({ ...o, set: { ...HOST, ...(o.set ?? {}) }, setJson: { "ingress.hosts": hosts, ...(o.setJson ?? {}) } });

const relayEnv = (docs: K8sObject[]) => (get(docs, "Deployment").spec.template.spec.containers[0].env ?? []) as { name: string; valueFrom?: any }[];

describe.skipIf(skip)("Ingress: the relay's public paths only", () => {
  test("the route tables name exactly two private operator endpoints", () => {
    expect(OPERATOR_ROUTES.sort()).toEqual(["/metrics", "/relay/diagnostics"]);
  });

  test("a host without paths gets /api, /assets and the proxy prefixes (Prefix), then the fixed public routes (Exact)", () => {
    expect(ingressPaths(renderOk(withIngress()))).toEqual([
      { path: "/api", pathType: "Prefix" },
      { path: "/assets", pathType: "Prefix" },
      { path: "/v1", pathType: "Prefix" },
      ...["/", "/relay/status", "/livez", "/healthz", "/unregister", "/stream/source", "/stream/retrieve", "/next_server", "/faucet", "/sink", "/source", "/retrieve", "/relay/api/v1/chat/completions", "/relay/api/v1/source"].map(
        (path) => ({ path, pathType: "Exact" }),
      ),
    ]);
  });

  test("every public route of the relay is routed, no private one is (Kubernetes Prefix and Traefik PathPrefix alike)", () => {
    const paths = ingressPaths(renderOk(withIngress()));
    for (const spec of RELAY_ROUTE_SPECS) {
      const routed = paths.some((p) => routesK8s(p, spec.path));
      const routedLoosely = paths.some((p) => routesTraefik(p, spec.path));
      if (OPERATOR_ROUTES.includes(spec.path)) {
        expect({ path: spec.path, routed, routedLoosely }).toEqual({ path: spec.path, routed: false, routedLoosely: false });
      } else {
        expect({ path: spec.path, routed }).toEqual({ path: spec.path, routed: true });
      }
    }
    // Proxied paths and the API v1 family under /api; the root is the chat page, not a catch-all.
    for (const p of ["/api/v1/models", "/v1/chat/completions", "/api/v1/relay/servers/poll"]) expect(paths.some((x) => routesK8s(x, p))).toBe(true);
    expect(paths.find((p) => p.path === "/")).toEqual({ path: "/", pathType: "Exact" });
  });

  test("the proxy prefixes follow relay.proxy.prefixes; relayOnly has none but /api", () => {
    const custom = ingressPaths(renderOk(withIngress({ setJson: { "relay.proxy.prefixes": ["/api/", "/v1/", "/openai/v1/", "/v1/"] } })));
    expect(custom.filter((p) => p.pathType === "Prefix")).toEqual([
      { path: "/api", pathType: "Prefix" },
      { path: "/assets", pathType: "Prefix" },
      { path: "/v1", pathType: "Prefix" },
      { path: "/openai/v1", pathType: "Prefix" },
    ]);
    const relayOnly = ingressPaths(renderOk(withIngress({ set: { "relay.relayOnly": true } })));
    expect(relayOnly.filter((p) => p.pathType === "Prefix")).toEqual([
      { path: "/api", pathType: "Prefix" },
      { path: "/assets", pathType: "Prefix" },
    ]);
  });

  test("every host gets the list; the staging and everything-enabled scenarios route no operator endpoint", () => {
    const docs = renderOk(withIngress({}, [{ host: "a.example.org" }, { host: "b.example.org" }]));
    expect(ingressPaths(docs, 1)).toEqual(ingressPaths(docs, 0));
    for (const file of ["ci/staging-values.yaml", "ci/full-values.yaml", "ci/headless-values.yaml"]) {
      const ing = get(renderOk({ valuesFiles: [file] }), "Ingress");
      for (const rule of ing.spec.rules) {
        for (const route of OPERATOR_ROUTES) expect(rule.http.paths.some((p: IngressPath) => routesTraefik(p, route) || routesK8s(p, route))).toBe(false);
      }
    }
  });

  test("a host's own paths replace the list (everything-enabled scenario)", () => {
    const docs = renderOk({ valuesFiles: ["ci/full-values.yaml"] });
    expect(ingressPaths(docs, 1)).toEqual([
      { path: "/api/", pathType: "Prefix" },
      { path: "/v1/", pathType: "Prefix" },
      { path: "/livez", pathType: "Exact" },
    ]);
    expect(ingressPaths(docs, 0)[0]).toEqual({ path: "/api", pathType: "Prefix" });
  });

  const refused: [string, IngressPath[]][] = [
    ["/ (Prefix)", [{ path: "/", pathType: "Prefix" }]],
    ["/ (ImplementationSpecific)", [{ path: "/", pathType: "ImplementationSpecific" }]],
    ["/metrics (Exact)", [{ path: "/metrics", pathType: "Exact" }]],
    ["/metrics/ (Exact)", [{ path: "/metrics/", pathType: "Exact" }]],
    ["/relay (Prefix)", [{ path: "/relay", pathType: "Prefix" }]],
    ["/relay/diagnostics (Exact)", [{ path: "/relay/diagnostics", pathType: "Exact" }]],
    ["/met (a string prefix, as Traefik's PathPrefix matches)", [{ path: "/met", pathType: "Prefix" }]],
    ["a path without pathType (Prefix)", [{ path: "/api" } as IngressPath, { path: "/" } as IngressPath]],
  ];
  for (const [name, paths] of refused) {
    test(`explicit paths that would route an operator endpoint fail the render: ${name}`, () => {
      const r = render(withIngress({}, [{ host: "relay.example.org", paths }]));
      expect(r.ok).toBe(false);
      expect(r.stderr).toContain("a private operator endpoint, to the internet");
      expect(r.stderr).toContain("ingress.hosts[relay.example.org]");
    });
  }

  test("public explicit paths are accepted (/relay/api is not /relay/diagnostics)", () => {
    const paths = [
      { path: "/api", pathType: "Prefix" },
      { path: "/relay/api", pathType: "Prefix" },
      { path: "/healthz", pathType: "Exact" },
    ];
    expect(ingressPaths(renderOk(withIngress({}, [{ host: "relay.example.org", paths }])))).toEqual(paths);
  });

  test("a proxy prefix that would cover /relay/diagnostics fails the render too", () => {
    const r = render(withIngress({ setJson: { "relay.proxy.prefixes": ["/api/", "/relay/"] } }));
    expect(r.ok).toBe(false);
    expect(r.stderr).toContain('path "/relay" (Prefix) would route /relay/diagnostics');
  });
});

describe.skipIf(skip)("Ingress: ingress.exposeOperatorRoutes", () => {
  test("refused without a metrics token", () => {
    const r = render(withIngress({ set: { "ingress.exposeOperatorRoutes": true } }));
    expect(r.ok).toBe(false);
    expect(r.stderr).toContain("ingress.exposeOperatorRoutes=true needs relay.metricsToken");
  });

  test("with a metrics token: hosts without paths get /, explicit ones may cover the operator endpoints (scenario)", () => {
    const docs = renderOk({ valuesFiles: ["ci/operator-routes-values.yaml"] });
    expect(ingressPaths(docs)).toEqual([{ path: "/", pathType: "Prefix" }]);
    const explicit = renderOk(
      withIngress({ set: { "ingress.exposeOperatorRoutes": true, "relay.metricsToken.value": TOKEN } }, [{ host: "relay.example.org", paths: [{ path: "/metrics", pathType: "Exact" }] }]),
    );
    expect(ingressPaths(explicit)).toEqual([{ path: "/metrics", pathType: "Exact" }]);
  });
});

describe.skipIf(skip)("metrics token", () => {
  test("not set: no variable, no Secret, a ServiceMonitor without authorization (the relay answers unauthenticated scrapes)", () => {
    const docs = renderOk(withMinimal({ set: { "metrics.serviceMonitor.enabled": true } }));
    expect(relayEnv(docs).map((e) => e.name)).not.toContain("TOKENPLACE_METRICS_TOKEN");
    expect(find(docs, "Secret")).toBeUndefined();
    expect(get(docs, "ServiceMonitor").spec.endpoints[0].authorization).toBeUndefined();
    expect(get(docs, "ConfigMap").data.TOKENPLACE_METRICS_DISABLED).toBe("false");
  });

  test("from an existing Secret: required key (never optional), and the ServiceMonitor scrapes with the same key", () => {
    const docs = renderOk({ valuesFiles: ["ci/full-values.yaml"] });
    expect(relayEnv(docs).find((e) => e.name === "TOKENPLACE_METRICS_TOKEN")).toEqual({
      name: "TOKENPLACE_METRICS_TOKEN",
      valueFrom: { secretKeyRef: { name: "tokenplace-relay-operator", key: "metrics-token" } },
    });
    expect(get(docs, "ServiceMonitor").spec.endpoints[0]).toMatchObject({
      port: "http",
      path: "/metrics",
      authorization: { type: "Bearer", credentials: { name: "tokenplace-relay-operator", key: "metrics-token" } },
    });
  });

  test("from a value: into the chart's Secret (never the ConfigMap), env and ServiceMonitor point at it, the pod restarts when it changes", () => {
    const docs = renderOk({ valuesFiles: ["ci/operator-routes-values.yaml"] });
    const secret = get(docs, "Secret", "tokenplace-relay");
    expect(Object.keys(secret.data)).toEqual(["metrics-token"]);
    expect(Buffer.from(secret.data["metrics-token"], "base64").toString()).toBe(TOKEN);
    expect(relayEnv(docs).find((e) => e.name === "TOKENPLACE_METRICS_TOKEN")!.valueFrom.secretKeyRef).toEqual({ name: "tokenplace-relay", key: "metrics-token" });
    expect(get(docs, "ServiceMonitor").spec.endpoints[0].authorization).toEqual({ type: "Bearer", credentials: { name: "tokenplace-relay", key: "metrics-token" } });
    expect(JSON.stringify(get(docs, "ConfigMap"))).not.toContain(TOKEN);
    expect(get(docs, "Deployment").spec.template.metadata.annotations["checksum/secret"]).toMatch(/^[0-9a-f]{64}$/);
  });

  test("next to the server and operator tokens in the chart's Secret, each under its own key", () => {
    const docs = renderOk({ valuesFiles: ["ci/legacy-values.yaml"], set: { "relay.metricsToken.value": TOKEN } });
    expect(Object.keys(get(docs, "Secret").data).sort()).toEqual(["metrics-token", "operator-token", "token"]);
  });

  test("the relay accepts what the chart renders, and gets the token and the switch", () => {
    const docs = renderOk({ valuesFiles: ["ci/operator-routes-values.yaml"], set: { "metrics.serviceMonitor.enabled": false, "relay.metricsDisabled": true } });
    const env: Record<string, string> = { ...get(docs, "ConfigMap").data };
    for (const e of relayEnv(docs)) env[e.name] = e.name === "TOKENPLACE_METRICS_TOKEN" ? TOKEN : "secret-from-kubernetes-0123456789";
    const { config, problems, unknown } = loadConfig(env);
    expect(problems).toEqual([]);
    expect(unknown).toEqual([]);
    expect(config.operator).toEqual({ metricsToken: TOKEN, metricsDisabled: true });
  });

  const cases: [string, RenderOptions, string][] = [
    ["existingSecret and value", withMinimal({ set: { "relay.metricsToken.existingSecret": "m", "relay.metricsToken.value": TOKEN } }), "relay.metricsToken: set existingSecret or value, not both"],
    ["value too short (schema)", withMinimal({ set: { "relay.metricsToken.value": "short" } }), "metricsToken/value"],
    ["unknown key (schema)", withMinimal({ set: { "relay.metricsToken.optional": true } }), "additional properties 'optional' not allowed"],
    ["under the server token's key", withMinimal({ set: { "relay.metricsToken.existingSecret": "tokenplace-relay-secrets", "relay.metricsToken.key": "token" } }), "compute nodes would hold the metrics token"],
    [
      "under the rotation key",
      withMinimal({ set: { "relay.serverToken.rotationKey": "tokens", "relay.metricsToken.existingSecret": "tokenplace-relay-secrets", "relay.metricsToken.key": "tokens" } }),
      "is a server token key in the same Secret",
    ],
    [
      "under the operator token's key",
      withMinimal({ set: { "relay.operatorToken.existingSecret": "ops", "relay.metricsToken.existingSecret": "ops", "relay.metricsToken.key": "operator-token" } }),
      "Prometheus would hold the operator token",
    ],
    ["values under one key in the chart's Secret", { valuesFiles: ["ci/legacy-values.yaml"], set: { "relay.metricsToken.value": TOKEN, "relay.metricsToken.key": "operator-token" } }, "Prometheus would hold the operator token"],
    ["equal to the server token", { valuesFiles: ["ci/legacy-values.yaml"], set: { "relay.metricsToken.value": "ci-only-server-token-0123456789" } }, "equals the server or operator token value"],
    ["equal to the operator token", { valuesFiles: ["ci/legacy-values.yaml"], set: { "relay.metricsToken.value": "ci-only-operator-token-0123456789" } }, "equals the server or operator token value"],
    [
      "under the chart Secret's redis-url key",
      { valuesFiles: ["ci/redis-external-values.yaml"], set: { "state.redis.existingSecret": "", "state.redis.url": "redis://r:6379/0", "relay.metricsToken.value": TOKEN, "relay.metricsToken.key": "redis-url" } },
      "relay.metricsToken.key",
    ],
    ["ServiceMonitor with metrics disabled", withMinimal({ set: { "metrics.serviceMonitor.enabled": true, "relay.metricsDisabled": true } }), "every scrape would get 401 metrics_disabled"],
  ];
  for (const [name, o, message] of cases) {
    test(`fails with a clear message: ${name}`, () => {
      const r = render(o);
      expect(r.ok).toBe(false);
      expect(r.stderr).toContain(message);
    });
  }
});
