// The offline manifest validation (scripts/validate-manifests.sh) must be able to fail: broken
// manifests are reported INVALID (not "could not find schema", which would mean the schemas did
// not load offline), and the Helmfile environments render what the issue asks for.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config/index.ts";
import { get, helm, helmArgs, helmfile, kubeconform, parseDocs, ROOT, skipWithoutHelm, withMinimal, type K8sObject } from "./helm.ts";

const venv = join(ROOT, ".tools", "venv", "bin", "python");
const haveTools = Boolean(helm && helmfile && kubeconform && existsSync(venv));
const skipHelm = skipWithoutHelm("test/chart/validate.test.ts");
if (!haveTools && !skipHelm) {
  if (process.env.CI === "true") throw new Error("validate.test.ts: helmfile/kubeconform/.tools/venv missing under CI=true; run bash scripts/install-tools.sh");
  console.warn("[test/chart/validate.test.ts] SKIPPED: helmfile, kubeconform or .tools/venv missing (run bash scripts/install-tools.sh)");
}
const skip = skipHelm || !haveTools;

const dir = mkdtempSync(join(tmpdir(), "tokenplace-validate-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function validateFiles(...files: string[]): { code: number; out: string } {
  const p = Bun.spawnSync(["bash", "scripts/validate-manifests.sh", "--files", ...files], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, K8S_VERSIONS: "1.28.0 1.37.0" },
  });
  return { code: p.exitCode ?? -1, out: p.stdout.toString() + p.stderr.toString() };
}

/** The Deployment half of the script's own self-test fixture (one source for both). */
const BROKEN_DEPLOYMENT = readFileSync(join(ROOT, "scripts/k8s-fixtures/broken.yaml"), "utf8").split("\n---\n")[0]!;

describe.skipIf(skip)("offline manifest validation", () => {
  test("a deliberately broken Deployment is INVALID for every Kubernetes version", () => {
    const file = join(dir, "broken-deployment.yaml");
    writeFileSync(file, BROKEN_DEPLOYMENT);
    const r = validateFiles(file);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("Deployment broken is invalid");
    expect(r.out).toContain("imagePullPolice");
    expect(r.out).not.toContain("could not find schema");
    expect(r.out.match(/Valid: 0, Invalid: 1, Errors: 0/g)?.length).toBe(2);
  });

  test("a broken CRD object (ServiceMonitor) is INVALID against ../shared/crd-schemas", () => {
    const file = join(dir, "broken-servicemonitor.yaml");
    writeFileSync(file, "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: broken\nspec:\n  selector: {}\n  endpoints: not-a-list\n");
    const r = validateFiles(file);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("ServiceMonitor broken is invalid");
    expect(r.out).not.toContain("could not find schema");
  });

  test("a misspelled kind fails instead of being skipped", () => {
    const file = join(dir, "typo-kind.yaml");
    writeFileSync(file, "apiVersion: apps/v1\nkind: Deploymnet\nmetadata:\n  name: typo\n");
    const r = validateFiles(file);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("could not find schema for Deploymnet");
  });

  test("the chart's own render passes, and breaking one field in it fails", () => {
    const p = Bun.spawnSync([helm!, ...helmArgs(withMinimal({}))], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    expect(p.exitCode).toBe(0);
    const good = join(dir, "chart.yaml");
    writeFileSync(good, p.stdout.toString());
    const ok = validateFiles(good);
    if (ok.code !== 0) console.error(ok.out);
    expect(ok.code).toBe(0);
    expect(ok.out).toContain("Invalid: 0, Errors: 0");

    const bad = join(dir, "chart-broken.yaml");
    writeFileSync(bad, p.stdout.toString().replace("enableServiceLinks: false", "enableServiceLinks: \"no\""));
    const r = validateFiles(bad);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("Deployment tokenplace-relay is invalid");
  }, 30_000); // kubeconform runs four times; a loaded 2-core machine needs more than bun's 5 s default
});

describe.skipIf(skip)("Helmfile environments", () => {
  function template(env: string) {
    const p = Bun.spawnSync([helmfile!, "-e", env, "template", "--skip-deps"], {
      cwd: ROOT,
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, PATH: `${join(ROOT, ".tools", "bin")}:${process.env.PATH}`, HELMFILE_UPGRADE_NOTICE_DISABLED: "1" },
    });
    if (p.exitCode !== 0) throw new Error(p.stderr.toString());
    return parseDocs(p.stdout.toString());
  }

  test("staging: staging.token.place, TLS via letsencrypt-production, pinned image, existing secret, monitoring", () => {
    const docs = template("staging");
    for (const d of docs) expect(d.metadata.namespace).toBe("tokenplace");
    const ing = get(docs, "Ingress");
    expect(ing.spec.rules[0].host).toBe("staging.token.place");
    expect(ing.spec.tls).toEqual([{ hosts: ["staging.token.place"], secretName: "staging-token-place-tls" }]);
    expect(ing.metadata.annotations?.["cert-manager.io/cluster-issuer"]).toBe("letsencrypt-production");
    expect(ing.spec.ingressClassName).toBe("traefik");
    const c = get(docs, "Deployment").spec.template.spec.containers[0];
    expect(c.image).toMatch(/^ghcr\.io\/tokenplace\/tokenplace-relay:(sha-[0-9a-f]{7,}|\d+\.\d+\.\d+)$/);
    expect(c.env[0].valueFrom.secretKeyRef).toEqual({ name: "tokenplace-relay-secrets", key: "token" });
    // The operator token is an optional key of the same Secret: without it the relay starts with
    // POST /api/v1/relay/unregister off (503).
    expect(c.env.find((e: { name: string }) => e.name === "TOKEN_PLACE_OPERATOR_TOKEN").valueFrom.secretKeyRef).toEqual({
      name: "tokenplace-relay-secrets",
      key: "operator-token",
      optional: true,
    });
    const cm = get(docs, "ConfigMap", "tokenplace-relay").data;
    expect(cm.TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES).toBe("false");
    expect(cm.TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS).toBe("10");
    expect(Number(cm.RELAY_V1_RETRIEVE_HOLD_MS)).toBeLessThan(10000);
    // The only Secret the chart renders is the bundled Valkey's generated password/URL.
    expect(docs.filter((d) => d.kind === "Secret").map((d) => d.metadata.name)).toEqual(["tokenplace-relay-valkey"]);
    expect(get(docs, "ServiceMonitor")).toBeDefined();
    expect(get(docs, "PrometheusRule")).toBeDefined();
  });

  test("staging: /metrics and /relay/diagnostics need the metrics token (a required key of the Secret), Prometheus scrapes with it, the Ingress never routes them", () => {
    const docs = template("staging");
    const c = get(docs, "Deployment").spec.template.spec.containers[0];
    // Required, not optional: a missing key must stop the new pods, not start them with the routes open.
    expect(c.env.find((e: { name: string }) => e.name === "TOKENPLACE_METRICS_TOKEN").valueFrom.secretKeyRef).toEqual({ name: "tokenplace-relay-secrets", key: "metrics-token" });
    expect(get(docs, "ServiceMonitor").spec.endpoints[0].authorization).toEqual({ type: "Bearer", credentials: { name: "tokenplace-relay-secrets", key: "metrics-token" } });
    const routed = get(docs, "Ingress").spec.rules[0].http.paths as { path: string; pathType: string }[];
    const paths = routed.map((p) => p.path);
    expect(paths[0]).toBe("/api");
    for (const p of ["/metrics", "/relay", "/relay/diagnostics"]) expect(paths).not.toContain(p);
    expect(routed.filter((p) => p.path === "/").map((p) => p.pathType)).toEqual(["Exact"]); // the chat page only
    expect(relayConfig(docs).config.operator.metricsToken).toBeDefined();
  });

  test("staging: two relays sharing their state in the bundled Valkey (AOF on a PVC), rolling without downtime, PDB", () => {
    const docs = template("staging");
    const dep = get(docs, "Deployment");
    expect(dep.spec.replicas).toBe(2);
    expect(dep.spec.strategy).toEqual({ type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    expect(get(docs, "PodDisruptionBudget").spec.maxUnavailable).toBe(1);
    expect(get(docs, "ConfigMap", "tokenplace-relay").data.TOKENPLACE_RELAY_STATE_BACKEND).toBe("redis");
    const url = dep.spec.template.spec.containers[0].env.find((e: { name: string }) => e.name === "TOKENPLACE_RELAY_REDIS_URL");
    expect(url.valueFrom.secretKeyRef).toEqual({ name: "tokenplace-relay-valkey", key: "url" });
    const sts = get(docs, "StatefulSet");
    expect(sts.spec.replicas).toBe(1);
    expect(sts.spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBe("1Gi");
    const conf: string = get(docs, "ConfigMap", "tokenplace-relay-valkey").data["valkey.conf"];
    for (const l of ["appendonly yes", "appendfsync everysec", "maxmemory 128mb", "maxmemory-policy noeviction"]) expect(conf).toContain(`${l}\n`);
    expect(get(docs, "NetworkPolicy", "tokenplace-relay-valkey").spec.ingress).toHaveLength(1);
    const r = relayConfig(docs);
    expect(r.problems).toEqual([]);
    expect(r.config.state.backend).toBe("redis");
    expect(r.config.v1.maxStoredBytes).toBe(67108864);
  });

  test("the bundled Valkey's variants not in a ci scenario (existing Secret, no persistence, no storage class) pass kubeconform", () => {
    const p = Bun.spawnSync(
      [
        helm!,
        ...helmArgs({
          valuesFiles: ["ci/valkey-values.yaml"],
          set: { "valkey.auth.existingSecret": "tokenplace-valkey", "valkey.persistence.enabled": false, "valkey.appendfsync": "always" },
        }),
      ],
      { cwd: ROOT, stdout: "pipe", stderr: "pipe" },
    );
    expect(p.exitCode).toBe(0);
    const noPvc = join(dir, "valkey-variants.yaml");
    writeFileSync(noPvc, p.stdout.toString());
    const q = Bun.spawnSync([helm!, ...helmArgs({ valuesFiles: ["ci/valkey-values.yaml"], set: { "valkey.persistence.storageClass": "-" } })], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    expect(q.exitCode).toBe(0);
    const noClass = join(dir, "valkey-no-class.yaml");
    writeFileSync(noClass, q.stdout.toString());
    const r = validateFiles(noPvc, noClass);
    if (r.code !== 0) console.error(r.out);
    expect(r.code).toBe(0);
    expect(r.out).not.toContain("could not find schema");
  }, 30_000);

  /** The relay container's environment (secret refs become a stand-in token) as the relay parses it. */
  function relayConfig(docs: K8sObject[]) {
    const c = get(docs, "Deployment").spec.template.spec.containers[0];
    const env: Record<string, string> = { ...get(docs, "ConfigMap", "tokenplace-relay").data };
    const standIn: Record<string, string> = {
      TOKENPLACE_RELAY_REDIS_URL: "redis://:secret@tokenplace-relay-valkey.tokenplace.svc:6379/0",
      TOKENPLACE_METRICS_TOKEN: "metrics-token-from-kubernetes-0123456789",
    };
    for (const e of c.env ?? []) env[e.name] = e.value ?? standIn[e.name] ?? "secret-from-kubernetes-0123456789";
    return loadConfig(env);
  }

  test("both environments: the relay accepts the settings; API v1 only (legacy routes off)", () => {
    for (const env of ["dev", "staging"]) {
      const r = relayConfig(template(env));
      expect(r.problems).toEqual([]);
      expect(r.unknown).toEqual([]);
      expect(r.config.v1.legacyRoutes).toBe(false);
    }
  });

  test("dev: local host, no TLS, small resources, one relay on in-memory state (Recreate, no Valkey)", () => {
    const docs = template("dev");
    const dep = get(docs, "Deployment");
    expect(dep.spec.replicas).toBe(1);
    expect(dep.spec.strategy).toEqual({ type: "Recreate" });
    expect(get(docs, "ConfigMap").data.TOKENPLACE_RELAY_STATE_BACKEND).toBe("memory");
    expect(docs.filter((d) => d.kind === "StatefulSet" || d.kind === "PodDisruptionBudget")).toEqual([]);
    const ing = get(docs, "Ingress");
    expect(ing.spec.rules[0].host).toBe("relay.localhost");
    expect(ing.spec.rules[0].http.paths.filter((p: { path: string; pathType: string }) => p.path === "/" && p.pathType !== "Exact")).toEqual([]);
    expect(ing.spec.tls).toBeUndefined();
    expect(ing.metadata.annotations?.["cert-manager.io/cluster-issuer"]).toBeUndefined();
    const c = get(docs, "Deployment").spec.template.spec.containers[0];
    expect(c.resources.limits.memory).toBe("256Mi");
    expect(c.resources.requests.cpu).toBe("50m");
    const cm = get(docs, "ConfigMap").data;
    expect(cm.TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES).toBe("false");
    expect((c.env ?? []).map((e: { name: string }) => e.name)).not.toContain("TOKEN_PLACE_OPERATOR_TOKEN");
  });
});
