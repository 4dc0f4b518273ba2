// The Grafana dashboard of the chart (dashboards/tokenplace-relay.json): every PromQL query names a
// series a live relay exports on /metrics, with labels it carries; the data source is a variable;
// the ConfigMap renders only when enabled and carries the sidecar's label. The relay runs as its
// own process (legacy routes and the proxy on, a fake GPU upstream) and is exercised until every
// family the dashboard reads has samples.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fakeKey, job } from "../helpers/relay.ts";
import { spawnRelay, type Spawned } from "../helpers/spawn.ts";
import { CHART, find, get, render, renderOk, skipWithoutHelm, withMinimal } from "./helm.ts";

const DASHBOARD_FILE = join(CHART, "dashboards", "tokenplace-relay.json");
const dashboardText = readFileSync(DASHBOARD_FILE, "utf8");
// Grafana dashboard JSON is free-form; the tests index into it.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const dashboard = JSON.parse(dashboardText) as any;

/** Series Prometheus itself records for every scrape target (not on the relay's /metrics). */
const SCRAPE_SERIES = new Set(["up"]);
/** Labels Prometheus attaches from the ServiceMonitor's target (not on the relay's /metrics). */
const TARGET_LABELS = new Set(["namespace", "job", "pod", "instance", "service", "endpoint", "container"]);
/** What the issue asks the dashboard to show, by the series that carry it. */
const REQUIRED_SERIES = [
  "tokenplace_relay_http_requests_total", // request rate and errors by route
  "tokenplace_relay_long_polls_waiting", // held polls
  "tokenplace_relay_queue_depth", // queue depth
  "tokenplace_relay_oldest_queued_request_age_seconds", // oldest age
  "tokenplace_relay_in_flight_requests", // in-flight
  "tokenplace_relay_request_outcomes_total", // outcomes (incl. rate_limited)
  "tokenplace_compute_nodes_registered", // node count
  "tokenplace_compute_nodes_healthy",
  "tokenplace_relay_upstream_up", // upstream proxy health
  "tokenplace_relay_upstream_errors_total",
  "process_resident_memory_bytes", // process memory
];

// ---------------------------------------------------------------------------------------------
// A small PromQL scanner: enough to find metric names, their label matchers and grouping labels.

const KEYWORDS = new Set(["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "inf", "nan"]);
const GROUPING = new Set(["by", "without", "on", "ignoring", "group_left", "group_right"]);
const TOKEN = /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\{[^}]*\}|\[[^\]]*\]|\d[\w.]*|[A-Za-z_:][\w:]*|\S/g;

export interface Selector {
  metric: string;
  /** Label names of the matchers in `{...}`. */
  labels: string[];
  matchers: string;
}
export interface Parsed {
  selectors: Selector[];
  /** Labels named by by/without/on/ignoring/group_left/group_right. */
  grouping: string[];
}

export function parsePromQL(expr: string): Parsed {
  const tokens = expr.match(TOKEN) ?? [];
  const selectors: Selector[] = [];
  const grouping: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (GROUPING.has(t) && tokens[i + 1] === "(") {
      for (i += 2; i < tokens.length && tokens[i] !== ")"; i++) if (/^[A-Za-z_]\w*$/.test(tokens[i]!)) grouping.push(tokens[i]!);
      continue;
    }
    // A function or aggregation: followed by its arguments, or by its grouping (`sum by (x) (...)`).
    if (!/^[A-Za-z_:][\w:]*$/.test(t) || KEYWORDS.has(t.toLowerCase()) || tokens[i + 1] === "(" || GROUPING.has(tokens[i + 1] ?? "")) continue;
    const next = tokens[i + 1];
    const matchers = next?.startsWith("{") ? next : "";
    const labels = [...matchers.matchAll(/([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*["']/g)].map((m) => m[1]!);
    selectors.push({ metric: t, labels, matchers });
    if (matchers) i++;
  }
  return { selectors, grouping };
}

/** Grafana's `label_values(<selector>, <label>)` variable query, or a plain PromQL query. */
export function parseQuery(q: string): Parsed {
  const m = /^\s*label_values\(\s*(.*),\s*([A-Za-z_]\w*)\s*\)\s*$/.exec(q);
  if (!m) return parsePromQL(q);
  const inner = parsePromQL(m[1]!);
  return { selectors: inner.selectors, grouping: [...inner.grouping, m[2]!] };
}

// ---------------------------------------------------------------------------------------------
// The relay's /metrics, as series name -> label names seen on its samples.

export type Exported = Map<string, Set<string>>;

export function parseExposition(text: string): Exported {
  const out: Exported = new Map();
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) {
      const [, name, kind] = type;
      const names = kind === "histogram" ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : kind === "summary" ? [name!, `${name}_sum`, `${name}_count`] : [name!];
      for (const n of names) if (!out.has(n)) out.set(n, new Set());
      continue;
    }
    const sample = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s/.exec(line);
    if (!sample) continue;
    const labels = out.get(sample[1]!) ?? new Set<string>();
    for (const m of (sample[2] ?? "").matchAll(/([A-Za-z_]\w*)="/g)) labels.add(m[1]!);
    labels.add("\0sampled");
    out.set(sample[1]!, labels);
  }
  return out;
}

/** Every problem of one query against what the relay exports; empty when the query is sound. */
export function problemsOf(query: string, exported: Exported): string[] {
  const problems: string[] = [];
  // Brackets balance outside string literals (a cheap guard against a broken edit).
  const stack: string[] = [];
  for (const c of query.replace(/"(?:[^"\\]|\\.)*"/g, '""')) {
    if ("({[".includes(c)) stack.push(c);
    else if (")}]".includes(c) && stack.pop() !== "({["[")}]".indexOf(c)]) return [`unbalanced ${c}: ${query}`];
  }
  if (stack.length > 0) return [`unclosed ${stack.join("")}: ${query}`];
  const { selectors, grouping } = parseQuery(query);
  if (selectors.length === 0) problems.push(`names no series: ${query}`);
  const known = new Set(TARGET_LABELS);
  for (const s of selectors) {
    if (SCRAPE_SERIES.has(s.metric)) continue;
    const labels = exported.get(s.metric);
    if (!labels) {
      problems.push(`${s.metric}: not a series the relay exports`);
      continue;
    }
    if (!labels.has("\0sampled")) {
      problems.push(`${s.metric}: exported but without samples in this test (exercise it so its labels can be checked)`);
      continue;
    }
    for (const l of labels) known.add(l);
    for (const l of s.labels) if (!TARGET_LABELS.has(l) && !labels.has(l)) problems.push(`${s.metric}: has no label ${l}`);
  }
  for (const l of grouping) if (!known.has(l)) problems.push(`groups by ${l}, which none of its series carries`);
  return problems;
}

// ---------------------------------------------------------------------------------------------
// The dashboard's queries.

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function allPanels(panels: any[]): any[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}
const panels = allPanels(dashboard.panels);
const queryPanels = panels.filter((p) => p.type !== "row");
const panelQueries: { panel: string; expr: string }[] = queryPanels.flatMap((p) => (p.targets ?? []).map((t: { expr: string }) => ({ panel: p.title, expr: t.expr })));
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const variables: any[] = dashboard.templating.list;
const variableQueries = variables.filter((v) => v.type === "query").map((v) => ({ panel: `$${v.name}`, expr: typeof v.query === "string" ? v.query : v.query.query }));
const queries = [...panelQueries, ...variableQueries];

describe("dashboard JSON", () => {
  test("has panels with queries for every topic the operators asked for", () => {
    expect(queryPanels.length).toBeGreaterThanOrEqual(20);
    for (const p of queryPanels) expect(p.targets?.length ?? 0).toBeGreaterThan(0);
    const used = new Set(queries.flatMap((q) => parseQuery(q.expr).selectors.map((s) => s.metric)));
    expect(REQUIRED_SERIES.filter((s) => !used.has(s))).toEqual([]);
    // Outcomes are shown by outcome, so rate_limited is a line of its own.
    expect(panelQueries.some((q) => q.expr.includes("tokenplace_relay_request_outcomes_total") && /by \(outcome\)/.test(q.expr))).toBe(true);
  });

  test("the data source is the ${datasource} variable everywhere: no hard-coded UID", () => {
    const ds = variables.find((v) => v.name === "datasource");
    expect(ds).toMatchObject({ type: "datasource", query: "prometheus" });
    for (const p of queryPanels) {
      expect(p.datasource).toEqual({ type: "prometheus", uid: "${datasource}" });
      for (const t of p.targets) expect(t.datasource).toEqual({ type: "prometheus", uid: "${datasource}" });
    }
    for (const v of variables.filter((x) => x.type === "query")) expect(v.datasource).toEqual({ type: "prometheus", uid: "${datasource}" });
    const uids = [...dashboardText.matchAll(/"uid":\s*"([^"]*)"/g)].map((m) => m[1]);
    // The dashboard's own uid, the data source variable, Grafana's built-in annotation source.
    expect(new Set(uids)).toEqual(new Set(["tokenplace-relay", "${datasource}", "-- Grafana --"]));
  });

  test("every panel query is scoped to the chosen namespace and job (pods: the chosen ones)", () => {
    for (const q of panelQueries) {
      for (const s of parseQuery(q.expr).selectors) {
        expect(`${q.panel}: ${s.metric}${s.matchers}`).toContain('namespace="$namespace", job="$job", pod=~"$pod"');
      }
    }
  });

  test("panel ids are unique and panels stay inside the 24-column grid", () => {
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
  });

  test("the scanner finds a misspelt series, a wrong label and a wrong grouping label", () => {
    const exported = parseExposition(
      [
        "# TYPE tokenplace_relay_http_requests_total counter",
        'tokenplace_relay_http_requests_total{method="GET",route="/livez",status="200"} 1',
        "# TYPE tokenplace_relay_http_request_duration_seconds histogram",
        'tokenplace_relay_http_request_duration_seconds_bucket{le="0.1",method="GET",route="/livez",status="200"} 1',
        "# TYPE tokenplace_relay_upstream_errors_total counter",
      ].join("\n") + "\n",
    );
    expect(problemsOf('sum by (route) (rate(tokenplace_relay_http_requests_total{job="$job"}[5m]))', exported)).toEqual([]);
    expect(problemsOf("rate(tokenplace_relay_http_request_total[5m])", exported)).toEqual(["tokenplace_relay_http_request_total: not a series the relay exports"]);
    expect(problemsOf('rate(tokenplace_relay_http_requests_total{code="500"}[5m])', exported)).toEqual(["tokenplace_relay_http_requests_total: has no label code"]);
    expect(problemsOf("sum by (handler) (rate(tokenplace_relay_http_requests_total[5m]))", exported)).toEqual(["groups by handler, which none of its series carries"]);
    expect(problemsOf("histogram_quantile(0.95, sum by (le, route) (rate(tokenplace_relay_http_request_duration_seconds_bucket[5m])))", exported)).toEqual([]);
    expect(problemsOf("rate(tokenplace_relay_http_request_duration_seconds_count[5m])", exported)[0]).toContain("without samples");
    expect(problemsOf("sum(rate(tokenplace_relay_upstream_errors_total[5m]))", exported)[0]).toContain("without samples");
    expect(problemsOf("label_values(tokenplace_relay_http_requests_total, pod)", exported)).toEqual([]);
    expect(problemsOf("label_values(tokenplace_relay_http_requests_total, status_code)", exported)).toEqual(["groups by status_code, which none of its series carries"]);
    expect(problemsOf("vector(1)", exported)).toEqual(["names no series: vector(1)"]);
    expect(problemsOf("sum(rate(tokenplace_relay_http_requests_total[5m])", exported)[0]).toStartWith("unclosed (");
    expect(problemsOf('sum(tokenplace_relay_http_requests_total{route="/a)"}))', exported)[0]).toStartWith("unbalanced )");
  });
});

describe("dashboard against a live relay's /metrics", () => {
  let relay: Spawned | undefined;
  let upstream: ReturnType<typeof Bun.serve> | undefined;
  let exported: Exported = new Map();

  beforeAll(async () => {
    upstream = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        const path = new URL(req.url).pathname;
        if (path === "/health") return Response.json({ status: "ok" });
        // Slower than the relay's first-byte timeout below: a proxy error of kind "timeout".
        if (path === "/api/slow") await Bun.sleep(1_500);
        return Response.json({ path });
      },
    });
    relay = await spawnRelay({
      LOG_LEVEL: "warn",
      TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true",
      TOKENPLACE_RELAY_UPSTREAM_URL: `http://127.0.0.1:${upstream.port}`,
      RELAY_UPSTREAM_HEALTH_INTERVAL_MS: "500",
      RELAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS: "200",
    });
    const url = relay.url;
    // Proxy: a success (requests, bytes, time to first byte) and a timeout (errors by kind).
    expect((await fetch(`${url}/api/v1/models`)).status).toBe(200);
    expect((await fetch(`${url}/api/slow`)).status).toBe(504);
    // A held legacy poll woken by a job: held polls and their outcomes by route.
    const node = fakeKey("dashboard-node");
    const held = fetch(`${url}/sink`, { method: "POST", body: JSON.stringify({ server_public_key: node }) });
    // Post the job only once the poll is held (on a loaded machine 100 ms may not be enough).
    for (let i = 0; i < 100; i++) {
      if (/^tokenplace_relay_long_polls_waiting\{[^}]*\} 1$/m.test(await (await fetch(`${url}/metrics`)).text())) break;
      await Bun.sleep(50);
    }
    expect((await fetch(`${url}/faucet`, { method: "POST", body: JSON.stringify(job(node)) })).status).toBe(200);
    expect((await held).status).toBe(200);
    // A client's mistake: a refusal with its reason.
    expect((await fetch(`${url}/faucet`, { method: "POST", body: "{not json" })).status).toBe(400);
    // An API v1 route, so its route label is among the request series.
    await fetch(`${url}/api/v1/relay/requests`, { method: "POST", body: "{}" });
    // Wait for a health probe of the upstream (its gauge is labelled by upstream).
    for (let i = 0; i < 50 && !exported.get("tokenplace_relay_upstream_up")?.has("\0sampled"); i++) {
      await Bun.sleep(100);
      exported = parseExposition(await (await fetch(`${url}/metrics`)).text());
    }
  }, 30_000);

  afterAll(() => {
    relay?.kill();
    upstream?.stop(true);
  });

  test("the relay exported the families the dashboard is built from", () => {
    expect(exported.size).toBeGreaterThan(40);
    for (const s of REQUIRED_SERIES.filter((x) => !SCRAPE_SERIES.has(x))) expect(exported.has(s)).toBe(true);
  });

  test("every query of every panel and variable names exported series, with labels they carry", () => {
    const problems = queries.flatMap((q) => problemsOf(q.expr, exported).map((p) => `${q.panel}: ${p}`));
    expect(problems).toEqual([]);
    expect(queries.length).toBeGreaterThanOrEqual(40);
  });
});

const skip = skipWithoutHelm("test/chart/dashboard.test.ts");

describe.skipIf(skip)("dashboard ConfigMap", () => {
  const NAME = "tokenplace-relay-dashboard";

  test("not rendered by default", () => {
    const docs = renderOk(withMinimal({}));
    expect(find(docs, "ConfigMap", NAME)).toBeUndefined();
  });

  test("enabled: the sidecar's label grafana_dashboard=1 and the dashboard JSON unchanged", () => {
    const docs = renderOk(withMinimal({ set: { "dashboard.enabled": true } }));
    const cm = get(docs, "ConfigMap", NAME);
    expect(cm.metadata.namespace).toBe("tokenplace");
    expect(cm.metadata.labels?.grafana_dashboard).toBe("1");
    expect(cm.metadata.labels?.["app.kubernetes.io/name"]).toBe("tokenplace-relay");
    expect(Object.keys(cm.data)).toEqual(["tokenplace-relay.json"]);
    // Byte for byte: Grafana's ${...} and {{...}} must not be touched by helm's templating.
    expect(cm.data["tokenplace-relay.json"]).toBe(dashboardText.replace(/\n$/, ""));
    expect(JSON.parse(cm.data["tokenplace-relay.json"])).toEqual(dashboard);
  });

  test("label key and value, namespace, extra labels and annotations are configurable", () => {
    const docs = renderOk(
      withMinimal({
        set: { "dashboard.enabled": true, "dashboard.label": "example.org/dashboard", "dashboard.labelValue": "relay", "dashboard.namespace": "monitoring" },
        setJson: { "dashboard.labels": { team: "tokenplace" }, "dashboard.annotations": { grafana_folder: "token.place" } },
      }),
    );
    const cm = get(docs, "ConfigMap", NAME);
    expect(cm.metadata.namespace).toBe("monitoring");
    expect(cm.metadata.labels).toMatchObject({ "example.org/dashboard": "relay", team: "tokenplace" });
    expect(cm.metadata.labels?.grafana_dashboard).toBeUndefined();
    expect(cm.metadata.annotations).toEqual({ grafana_folder: "token.place" });
  });

  test("the schema refuses a bad label key, namespace or an unknown key", () => {
    const bad: Record<string, string>[] = [{ "dashboard.label": "bad label" }, { "dashboard.namespace": "Monitoring" }, { "dashboard.folder": "x" }];
    for (const set of bad) {
      const r = render(withMinimal({ set: { "dashboard.enabled": true, ...set } }));
      expect(r.ok).toBe(false);
      expect(r.stderr).toContain("dashboard");
    }
  });

  test("the full-values scenario enables it", () => {
    const docs = renderOk({ valuesFiles: ["ci/full-values.yaml"] });
    expect(get(docs, "ConfigMap", NAME).metadata.labels?.grafana_dashboard).toBe("1");
  });
});
