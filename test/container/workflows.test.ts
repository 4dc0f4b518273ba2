/**
 * The release pipeline's promises, checked on .github/workflows/build.yml so that an
 * edit cannot quietly drop one: triggers, multi-arch, what is pushed when, the tag scheme, OCI
 * labels with the licence, provenance and SBOM attestations, least-privilege tokens, layer cache,
 * and the release assets. actionlint (scripts/lint-workflows.sh) checks the syntax and types.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { ROOT } from "./harness.ts";

type Step = { name?: string; id?: string; uses?: string; run?: string; if?: string; with?: Record<string, unknown>; env?: Record<string, unknown> };
type Job = { if?: string; needs?: string | string[]; permissions?: Record<string, string>; steps: Step[] };
type Workflow = { on: Record<string, unknown>; permissions?: unknown; env?: Record<string, string>; jobs: Record<string, Job> };

const wf = parse(readFileSync(join(ROOT, ".github/workflows/build.yml"), "utf8")) as Workflow;
const image = wf.jobs.image!;
const release = wf.jobs.release!;
const step = (job: Job, pred: (s: Step) => boolean | undefined) => {
  const s = job.steps.find(pred);
  if (!s) throw new Error("step not found");
  return s;
};
const uses = (name: string) => (s: Step) => s.uses?.startsWith(`${name}@`);
const w = (s: Step, key: string) => String(s.with?.[key] ?? "");
const expand = (v: string) => v.replace(/\$\{\{\s*env\.(\w+)\s*\}\}/g, (_, k: string) => wf.env?.[k] ?? "");

describe("build workflow", () => {
  test("runs on pushes to main, v* tags and pull requests", () => {
    const push = wf.on.push as { branches: string[]; tags: string[] };
    expect(push.branches).toContain("main");
    expect(push.tags).toContain("v*");
    expect(wf.on).toHaveProperty("pull_request");
  });

  test("grants nothing by default; the image job gets packages: write, the release job contents: write", () => {
    expect(wf.permissions).toEqual({});
    expect(image.permissions).toEqual({ contents: "read", packages: "write" });
    expect(release.permissions?.contents).toBe("write");
    expect(release.permissions?.packages).toBeUndefined();
  });

  test("logs in to ghcr.io with the built-in token, and only when it will push", () => {
    const login = step(image, uses("docker/login-action"));
    expect(w(login, "registry")).toBe("ghcr.io");
    expect(w(login, "password")).toMatch(/secrets\.GITHUB_TOKEN/);
    expect(login.if).toMatch(/github\.event_name != 'pull_request'/);
    const names = step(image, (s) => s.id === "names");
    expect(names.run).toContain("ghcr.io/${OWNER,,}/tokenplace-relay");
  });

  test("tags: immutable sha-<short>, semver on releases, main on main, PRs not pushed", () => {
    const meta = step(image, uses("docker/metadata-action"));
    const tags = w(meta, "tags");
    expect(tags).toMatch(/type=sha,prefix=sha-,format=short/);
    expect(tags).toMatch(/type=semver,pattern=\{\{version\}\}/);
    expect(tags).toMatch(/type=semver,pattern=\{\{major\}\}\.\{\{minor\}\}/);
    expect(tags).toMatch(/type=ref,event=branch/);
    const labels = w(meta, "labels");
    expect(labels).toMatch(/org\.opencontainers\.image\.licenses=/);
    expect(labels).toMatch(/org\.opencontainers\.image\.title=tokenplace-relay/);
  });

  test("builds linux/amd64 and linux/arm64 with provenance, SBOM and the GitHub Actions layer cache", () => {
    const build = step(image, (s) => s.id === "build");
    expect(build.uses).toMatch(/^docker\/build-push-action@/);
    expect(expand(w(build, "platforms")).split(",").sort()).toEqual(["linux/amd64", "linux/arm64"]);
    expect(w(build, "push")).toMatch(/github\.event_name != 'pull_request'/);
    expect(w(build, "provenance")).toContain("mode=max");
    expect(w(build, "sbom")).not.toBe("false");
    expect(w(build, "sbom")).not.toBe("");
    expect(w(build, "cache-from")).toMatch(/type=gha/);
    expect(w(build, "cache-to")).toMatch(/type=gha.*mode=max/);
    expect(w(build, "labels")).toContain("steps.meta.outputs.labels");
    expect(w(build, "tags")).toContain("steps.meta.outputs.tags");
    expect(w(build, "build-args")).toMatch(/RELAY_BUILD_REVISION=\$\{\{ github\.sha \}\}/);
  });

  test("smoke-tests the amd64 image read-only, without capabilities, until HEALTHCHECK says healthy", () => {
    const smoke = step(image, (s) => s.run?.includes("docker run") === true);
    for (const flag of ["--read-only", "--cap-drop ALL", "no-new-privileges", "healthy", "docker stop"]) expect(smoke.run).toContain(flag);
  });

  test("on v* tags attaches both binaries and their SHA-256 sums to the release", () => {
    expect(release.if).toMatch(/startsWith\(github\.ref, 'refs\/tags\/v'\)/);
    const exp = step(release, (s) => s.uses?.startsWith("docker/build-push-action@") && w(s, "target") === "binaries");
    expect(expand(w(exp, "platforms")).split(",").sort()).toEqual(["linux/amd64", "linux/arm64"]);
    expect(w(exp, "outputs")).toMatch(/type=local/);
    const all = release.steps.map((s) => s.run ?? "").join("\n");
    for (const f of ["tokenplace-relay-linux-x64", "tokenplace-relay-linux-arm64", "SHA256SUMS", "sha256sum", "gh release upload"]) expect(all).toContain(f);
    // Same names as scripts/build.ts produces (npm run build).
    const buildTs = readFileSync(join(ROOT, "scripts/build.ts"), "utf8");
    expect(buildTs).toContain("tokenplace-relay-linux-${arch}");
  });

  test("a release tag must equal package.json's version (the binary reports that one)", () => {
    const names = step(image, (s) => s.id === "names");
    expect(names.run).toContain("package.json");
    expect(names.run).toMatch(/GITHUB_REF_NAME#v/);
  });
});
