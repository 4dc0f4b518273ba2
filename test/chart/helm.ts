// Helpers for the chart tests: find helm (.tools/bin first, then PATH), render the chart, parse
// the YAML stream. Without helm the tests skip locally with a warning and fail under CI=true.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";

export const ROOT = join(import.meta.dir, "..", "..");
export const CHART = join(ROOT, "charts", "tokenplace-relay");
export const KUBE_VERSION = "1.35.0";
export const MONITORING_APIS = ["monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule"];

function findTool(name: string): string | undefined {
  const local = join(ROOT, ".tools", "bin", name);
  if (existsSync(local)) return local;
  return Bun.which(name) ?? undefined;
}

export const helm = findTool("helm");
export const helmfile = findTool("helmfile");
export const kubeconform = findTool("kubeconform");

/** Call once per test file: returns true when the chart tests must be skipped. */
export function skipWithoutHelm(file: string): boolean {
  if (helm) return false;
  if (process.env.CI === "true") {
    throw new Error(`${file}: helm not found in .tools/bin or on PATH under CI=true; run bash scripts/install-tools.sh`);
  }
  console.warn(`[${file}] SKIPPED: helm not found (run bash scripts/install-tools.sh to enable the chart tests)`);
  return true;
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  // Kubernetes objects are deeply nested; the tests index into them freely.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  [key: string]: any;
}

export interface RenderOptions {
  valuesFiles?: string[];
  set?: Record<string, string | number | boolean>;
  /** --set-json entries, e.g. { "networkPolicy.gpuServerCIDRs": ["10.0.0.1/32"] } */
  setJson?: Record<string, unknown>;
  apiVersions?: string[];
  release?: string;
  namespace?: string;
}

export interface RenderResult {
  ok: boolean;
  stdout: string;
  stderr: string;
  docs: K8sObject[];
}

export function helmArgs(o: RenderOptions = {}): string[] {
  const args = ["template", o.release ?? "tokenplace-relay", CHART, "--namespace", o.namespace ?? "tokenplace", "--kube-version", KUBE_VERSION];
  for (const f of o.valuesFiles ?? []) args.push("--values", f.startsWith("/") ? f : join(CHART, f));
  for (const [k, v] of Object.entries(o.set ?? {})) args.push(typeof v === "string" ? "--set-string" : "--set", `${k}=${v}`);
  for (const [k, v] of Object.entries(o.setJson ?? {})) args.push("--set-json", `${k}=${JSON.stringify(v)}`);
  for (const a of o.apiVersions ?? MONITORING_APIS) args.push("--api-versions", a);
  return args;
}

export function render(o: RenderOptions = {}): RenderResult {
  if (!helm) throw new Error("helm not available");
  const proc = Bun.spawnSync([helm, ...helmArgs(o)], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const stdout = proc.stdout.toString();
  const stderr = proc.stderr.toString();
  const docs = proc.exitCode === 0 ? parseDocs(stdout) : [];
  return { ok: proc.exitCode === 0, stdout, stderr, docs };
}

/** Renders and throws with helm's message when the render fails. */
export function renderOk(o: RenderOptions = {}): K8sObject[] {
  const r = render(o);
  if (!r.ok) throw new Error(`helm template failed: ${r.stderr}`);
  return r.docs;
}

export function parseDocs(text: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`YAML error: ${doc.errors[0]?.message}`);
    const value = doc.toJS() as K8sObject | null;
    if (value) out.push(value);
  }
  return out;
}

export function find(docs: K8sObject[], kind: string, name?: string): K8sObject | undefined {
  return docs.find((d) => d.kind === kind && (name === undefined || d.metadata.name === name));
}

export function get(docs: K8sObject[], kind: string, name?: string): K8sObject {
  const d = find(docs, kind, name);
  if (!d) throw new Error(`no ${kind}${name ? ` ${name}` : ""} in [${docs.map((x) => `${x.kind}/${x.metadata.name}`).join(", ")}]`);
  return d;
}

/** Required values for a render that passes the chart's cross-field rules. */
export const MINIMAL: RenderOptions = { valuesFiles: ["ci/default-values.yaml"] };

export function withMinimal(o: RenderOptions): RenderOptions {
  return { ...o, valuesFiles: ["ci/default-values.yaml", ...(o.valuesFiles ?? [])] };
}
