// Every alert of the chart's PrometheusRule links to its section of docs/runbooks.md, and every
// section of that document belongs to an alert and says what it means, how to confirm it with a
// command and what to do.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { CHART, ROOT, get, renderOk, skipWithoutHelm, withMinimal, type K8sObject } from "./helm.ts";

const RUNBOOKS = join(ROOT, "docs", "runbooks.md");
const text = readFileSync(RUNBOOKS, "utf8");
const templateAlerts = [...readFileSync(join(CHART, "templates", "prometheusrule.yaml"), "utf8").matchAll(/^\s*- alert: (\w+)$/gm)].map((m) => m[1]!);
const values = parse(readFileSync(join(CHART, "values.yaml"), "utf8"));
const chart = parse(readFileSync(join(CHART, "Chart.yaml"), "utf8"));

/** GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens. */
export function githubAnchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

/** Level-2 headings (`## ...`) outside code blocks. */
function sections(md: string): { heading: string }[] {
  const withoutCode = md.replace(/```[\s\S]*?```/g, "");
  return [...withoutCode.matchAll(/^## (.+)$/gm)].map((m) => ({ heading: m[1]!.trim() }));
}

function sectionBody(heading: string): string {
  const start = text.indexOf(`\n## ${heading}\n`);
  const next = text.indexOf("\n## ", start + 1);
  return text.slice(start, next < 0 ? undefined : next);
}

describe("docs/runbooks.md", () => {
  const secs = sections(text);

  test("has one section per alert of the chart, named after it, and no other", () => {
    expect(templateAlerts.length).toBeGreaterThanOrEqual(5);
    expect(secs.map((s) => s.heading).sort()).toEqual([...templateAlerts].sort());
  });

  test("every section says what the alert means, how to confirm it with a command, and what to do", () => {
    for (const alert of templateAlerts) {
      const body = sectionBody(alert);
      expect(`${alert}: ${body.includes("**What it means.**")}`).toBe(`${alert}: true`);
      expect(`${alert}: ${body.includes("**Confirm.**")}`).toBe(`${alert}: true`);
      expect(`${alert}: ${body.includes("**What to do.**")}`).toBe(`${alert}: true`);
      // At least one command block (shell or PromQL) to confirm it.
      expect(`${alert}: ${/```(sh|promql)\n[^`]*\S[^`]*```/.test(body)}`).toBe(`${alert}: true`);
    }
  });

  test("links inside the document reach a heading; links to other docs reach a file", () => {
    const anchors = new Set([...text.replace(/```[\s\S]*?```/g, "").matchAll(/^#{1,6} (.+)$/gm)].map((m) => githubAnchor(m[1]!)));
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1]!;
      if (target.startsWith("#")) expect(`${target} ${anchors.has(target.slice(1))}`).toBe(`${target} true`);
      else if (!/^https?:/.test(target)) expect(`${target} ${existsSync(join(ROOT, "docs", target.split("#")[0]!))}`).toBe(`${target} true`);
    }
  });

  test("never names a path of one machine", () => {
    expect(text).not.toMatch(/\/work\/|\.\.\/shared/);
  });

  test("the anchor rule matches GitHub's", () => {
    expect(githubAnchor("TokenplaceRelayDown")).toBe("tokenplacerelaydown");
    expect(githubAnchor("Sizing on a Pi")).toBe("sizing-on-a-pi");
    expect(githubAnchor("arm64 and page size (Raspberry Pi 5)")).toBe("arm64-and-page-size-raspberry-pi-5");
  });
});

describe("docs/acceptance.md", () => {
  const acceptance = readFileSync(join(ROOT, "docs", "acceptance.md"), "utf8");

  test("every item says what CI proves and what the operator proves, with commands", () => {
    const rows = acceptance.split("\n").filter((l) => /^\| \d+ \|/.test(l));
    expect(rows.length).toBe(7);
    for (let n = 1; n <= 7; n++) expect(acceptance).toMatch(new RegExp(`^## ${n}\\. .+\\n\\n\`\`\`sh\\n`, "m"));
  });

  test("links reach files; the README, the staging runbook and the alert runbooks link it", () => {
    for (const m of acceptance.matchAll(/\]\(([^)\s#]+)(#[^)]*)?\)/g)) {
      if (!/^https?:/.test(m[1]!)) expect(`${m[1]} ${existsSync(join(ROOT, "docs", m[1]!))}`).toBe(`${m[1]} true`);
    }
    expect(readFileSync(join(ROOT, "README.md"), "utf8")).toContain("(docs/acceptance.md)");
    expect(readFileSync(join(ROOT, "docs", "sugarkube-staging.md"), "utf8")).toContain("(acceptance.md)");
    expect(text).toContain("(acceptance.md)");
    expect(acceptance).not.toMatch(/\/work\/|\.\.\/shared/);
  });
});

const skip = skipWithoutHelm("test/chart/runbooks.test.ts");

function alertsOf(docs: K8sObject[]): { alert: string; annotations: Record<string, string> }[] {
  return get(docs, "PrometheusRule").spec.groups.flatMap((g: { rules: { alert?: string; annotations?: Record<string, string> }[] }) =>
    g.rules.filter((r) => r.alert).map((r) => ({ alert: r.alert!, annotations: r.annotations ?? {} })),
  );
}

describe.skipIf(skip)("PrometheusRule runbook_url", () => {
  const base = values.metrics.prometheusRule.runbookBaseUrl as string;

  test("the default base URL is this project's docs/runbooks.md on its main branch", () => {
    expect(base).toBe(`${chart.sources[0]}/blob/main/docs/runbooks.md`);
  });

  test("every alert links to the section of docs/runbooks.md named after it", () => {
    const alerts = alertsOf(renderOk(withMinimal({ set: { "metrics.prometheusRule.enabled": true } })));
    // Every alert of the template is on by default.
    expect(alerts.map((a) => a.alert).sort()).toEqual([...templateAlerts].sort());
    const anchors = new Set(sections(text).map((s) => githubAnchor(s.heading)));
    for (const { alert, annotations } of alerts) {
      const url = annotations.runbook_url ?? "";
      expect(url).toBe(`${base}#${alert.toLowerCase()}`);
      expect(`${alert} -> ${url}: ${anchors.has(url.split("#")[1]!)}`).toBe(`${alert} -> ${url}: true`);
      expect(annotations.summary).toBeTruthy();
    }
  });

  test("the base URL is a value (a fork or mirror); empty leaves runbook_url out", () => {
    const mirror = alertsOf(renderOk(withMinimal({ set: { "metrics.prometheusRule.enabled": true, "metrics.prometheusRule.runbookBaseUrl": "https://git.example.org/ops/relay/runbooks.md/" } })));
    for (const a of mirror) expect(a.annotations.runbook_url).toBe(`https://git.example.org/ops/relay/runbooks.md#${a.alert.toLowerCase()}`);
    const none = alertsOf(renderOk(withMinimal({ set: { "metrics.prometheusRule.enabled": true, "metrics.prometheusRule.runbookBaseUrl": "" } })));
    expect(none.length).toBe(templateAlerts.length);
    for (const a of none) expect(a.annotations.runbook_url).toBeUndefined();
  });
});
