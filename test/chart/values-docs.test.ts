// values.yaml documents every key (helm-docs `# --` comments) and values.schema.json closes
// every object (additionalProperties: false) and covers every key. No helm needed.
import { describe, expect, test } from "bun:test";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { CHART } from "./helm.ts";

const valuesText = readFileSync(join(CHART, "values.yaml"), "utf8");
const schema = JSON.parse(readFileSync(join(CHART, "values.schema.json"), "utf8")) as Schema;

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  items?: Schema;
  [k: string]: unknown;
}

/** Keys (dotted paths) of values.yaml with whether a `# --` comment documents them. */
function documentedKeys(text: string): { path: string; documented: boolean; leaf: boolean }[] {
  const lines = text.split("\n");
  const out: { path: string; documented: boolean; leaf: boolean; indent: number }[] = [];
  const stack: { indent: number; key: string; documented: boolean }[] = [];
  let pendingDoc = false;
  let inDocBlock = false;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const trimmed = line.trim();
    if (trimmed.startsWith("# --")) {
      pendingDoc = true;
      inDocBlock = true;
      continue;
    }
    if (trimmed.startsWith("#")) {
      if (!inDocBlock) pendingDoc = false;
      continue;
    }
    inDocBlock = false;
    const m = /^(\s*)([A-Za-z0-9_.-]+):(\s|$)/.exec(line);
    if (!m || trimmed.startsWith("-")) {
      if (trimmed !== "") pendingDoc = false;
      continue;
    }
    const indent = m[1]!.length;
    while (stack.length > 0 && stack[stack.length - 1]!.indent >= indent) stack.pop();
    const parentDocumented = stack.some((s) => s.documented);
    // A list item or a nested mapping belongs to a documented ancestor's value.
    const path = [...stack.map((s) => s.key), m[2]!].join(".");
    const rest = line.slice(m[0].length).trim();
    const next = lines.slice(i + 1).find((l) => l.trim() !== "" && !l.trim().startsWith("#"));
    const hasChildren = rest === "" && next !== undefined && /^(\s*)/.exec(next)![1]!.length > indent;
    const documented = pendingDoc;
    if (!parentDocumented) out.push({ path, documented, leaf: !hasChildren, indent });
    stack.push({ indent, key: m[2]!, documented: documented || parentDocumented });
    pendingDoc = false;
  }
  return out;
}

function walkSchema(s: Schema, path: string, visit: (s: Schema, path: string) => void): void {
  visit(s, path);
  for (const [k, v] of Object.entries(s.properties ?? {})) walkSchema(v, path ? `${path}.${k}` : k, visit);
  if (s.items) walkSchema(s.items, `${path}[]`, visit);
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    for (const sub of (s[key] as Schema[] | undefined) ?? []) walkSchema(sub, path, visit);
  }
}

describe("values.yaml", () => {
  const keys = documentedKeys(valuesText);

  test("every leaf key carries a `# --` comment (on itself or a documented parent)", () => {
    expect(keys.length).toBeGreaterThan(100);
    const undocumented = keys.filter((k) => k.leaf && !k.documented).map((k) => k.path);
    expect(undocumented).toEqual([]);
  });

  test("the defaults refuse `latest` and keep the security posture", () => {
    const v = parse(valuesText);
    expect(v.image.tag).not.toBe("latest");
    expect(v.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    expect(v.podSecurityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: "RuntimeDefault" } });
    expect(v.networkPolicy.enabled).toBe(true);
    expect(v.serviceAccount.automount).toBe(false);
    expect(v.ingress.className).toBe("traefik");
    expect(v.gpuExternalName).toMatchObject({ name: "gpu-server", port: 3000 });
    expect(v.state.backend).toBe("memory");
    expect(v.replicaCount).toBe(1);
  });
});

describe("values.schema.json", () => {
  test("every object schema with properties rejects unknown keys", () => {
    const open: string[] = [];
    walkSchema(schema, "", (s, path) => {
      if (s.properties && s.additionalProperties !== false) open.push(path || "(root)");
    });
    expect(open).toEqual([]);
  });

  test("every key of values.yaml is described by the schema", () => {
    const values = parse(valuesText) as Record<string, unknown>;
    const missing: string[] = [];
    const visit = (v: unknown, s: Schema | undefined, path: string) => {
      if (!s) {
        missing.push(path);
        return;
      }
      if (v && typeof v === "object" && !Array.isArray(v) && s.properties) {
        for (const [k, child] of Object.entries(v)) visit(child, s.properties[k], `${path}.${k}`);
      }
    };
    for (const [k, v] of Object.entries(values)) visit(v, schema.properties?.[k], k);
    expect(missing).toEqual([]);
  });

  test("security fields are pinned with const", () => {
    const sc = schema.properties!.securityContext!.properties!;
    expect(sc.allowPrivilegeEscalation!.const).toBe(false);
    expect(sc.readOnlyRootFilesystem!.const).toBe(true);
    expect(sc.runAsNonRoot!.const).toBe(true);
    expect(schema.properties!.podSecurityContext!.properties!.runAsNonRoot!.const).toBe(true);
  });

  test("every ci scenario exists as a values file", () => {
    expect(readdirSync(join(CHART, "ci")).filter((f) => f.endsWith("-values.yaml")).length).toBeGreaterThanOrEqual(4);
  });
});
