// The staging recipes of the justfile (docs/sugarkube-staging.md), run with the pinned `just` from
// the rust-just package. No cluster: KUBECTL and HELMFILE point at recording fakes, so the tests see
// exactly which helmfile/kubectl commands a recipe runs, and that a bad argument stops it before
// any of them. The recipes against a (fake-node) API server: scripts/k8s-cluster-test.sh.
import { beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../helpers/spawn.ts";

const JUST = join(ROOT, ".tools", "bin", "just");
const RECIPES = ["tokenplace-oci-redeploy", "tokenplace-status", "tokenplace-logs", "tokenplace-port-forward"];

const haveJust = existsSync(JUST);
if (!haveJust) {
  if (process.env.CI === "true") throw new Error(`${JUST} is missing under CI=true: bash scripts/install-tools.sh installs just (rust-just)`);
  console.warn(`SKIP justfile tests: ${JUST} not installed (bash scripts/install-tools.sh)`);
}

/** A fake kubectl/helmfile: appends its arguments (one call per line) to $FAKE_LOG, answers canned output. */
const FAKE = `#!/usr/bin/env bash
printf '%s %s\\n' "$(basename "$0")" "$*" >> "$FAKE_LOG"
case "$*" in
  *"spec.rules"*) printf '%s' "\${FAKE_HOSTS:-}" ;;
  *"spec.tls"*) printf '%s' "\${FAKE_TLS:-}" ;;
  *"get service"*) [ -z "\${FAKE_NO_SERVICE:-}" ] && printf 'tokenplace-relay' ;;
  *" logs "*) [ -n "\${FAKE_LOGS_FAIL:-}" ] && case "$*" in *"\${FAKE_LOGS_FAIL}"*) echo "logs failed" >&2; exit 1 ;; esac ;;
esac
exit 0
`;

let dir = "";
let log = "";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  calls: string[];
}

function just(args: string[], env: Record<string, string> = {}): Run {
  writeFileSync(log, "");
  const proc = Bun.spawnSync([JUST, "--justfile", join(ROOT, "justfile"), ...args], {
    // Not the repo root: the recipes must find scripts/ relative to the justfile, not the caller.
    cwd: dir,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, KUBECTL: join(dir, "kubectl"), HELMFILE: join(dir, "helmfile"), FAKE_LOG: log, ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const calls = readFileSync(log, "utf8").split("\n").filter(Boolean);
  return { code: proc.exitCode ?? -1, stdout: proc.stdout.toString(), stderr: proc.stderr.toString(), calls };
}

describe.skipIf(!haveJust)("justfile", () => {
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "relay-just-"));
    log = join(dir, "calls.log");
    for (const name of ["kubectl", "helmfile"]) {
      writeFileSync(join(dir, name), FAKE);
      chmodSync(join(dir, name), 0o755);
    }
    return () => rmSync(dir, { recursive: true, force: true });
  });

  test("`just --list` lists the four staging recipes with their parameters", () => {
    const proc = Bun.spawnSync([JUST, "--list"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    expect(proc.exitCode).toBe(0);
    const out = proc.stdout.toString();
    for (const r of RECIPES) expect(out).toMatch(new RegExp(`^\\s+${r}\\b.*#`, "m"));
    expect(out).toMatch(/tokenplace-oci-redeploy tag\s/);
    expect(out).toContain('tokenplace-port-forward local_port="8500"');
  });

  test.each([
    ["latest"],
    ["tag=latest"],
    ["sha-ABCDEF1"],
    ["sha-123456"],
    [`sha-${"a".repeat(41)}`],
    ["0.2.0"],
    ["main"],
    ["tag=sha-1a2b3c4;echo"],
    ["sha-1a2b3c4 --set image.repository=evil"],
    [""],
  ])("oci-redeploy refuses the tag %p before calling helmfile or kubectl", (tag) => {
    const r = just(["tokenplace-oci-redeploy", tag]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("tag must look like sha-<7 to 40 lower-case hex digits>");
    expect(r.calls).toEqual([]);
  });

  test.each([["tag=sha-1a2b3c4"], ["sha-1a2b3c4"]])("oci-redeploy %p: helmfile -e staging apply of the relay release with image.tag set, then the image shown", (arg) => {
    const r = just(["tokenplace-oci-redeploy", arg]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.calls[0]).toBe("helmfile -e staging --selector name=tokenplace-relay apply --set image.tag=sha-1a2b3c4");
    expect(r.calls[1]).toStartWith("kubectl -n tokenplace get deploy -l app.kubernetes.io/name=tokenplace-relay,app.kubernetes.io/instance=tokenplace-relay -o jsonpath=");
    expect(r.calls.length).toBe(2);
  });

  test("a full 40-digit sha tag, another environment, namespace and kube context come from the environment", () => {
    const sha = `sha-${"0123456789abcdef0123456789abcdef01234567".slice(0, 40)}`;
    const r = just(["tokenplace-oci-redeploy", `tag=${sha}`], { TOKENPLACE_ENV: "dev", TOKENPLACE_NAMESPACE: "tp-dev", TOKENPLACE_KUBE_CONTEXT: "sugarkube" });
    expect(r.code).toBe(0);
    expect(r.calls[0]).toBe(`helmfile --kube-context sugarkube -e dev --selector name=tokenplace-relay apply --set image.tag=${sha}`);
    expect(r.calls[1]).toStartWith("kubectl --context sugarkube -n tp-dev get deploy ");
  });

  test("a failed apply stops the recipe with helmfile's exit status", () => {
    writeFileSync(join(dir, "helmfile-fail"), `#!/usr/bin/env bash\nprintf 'helmfile %s\\n' "$*" >> "$FAKE_LOG"\nexit 3\n`);
    chmodSync(join(dir, "helmfile-fail"), 0o755);
    const r = just(["tokenplace-oci-redeploy", "sha-1a2b3c4"], { HELMFILE: join(dir, "helmfile-fail") });
    expect(r.code).toBe(3);
    expect(r.calls.length).toBe(1);
  });

  test("status lists the release's objects and prints the public URL: https for hosts with TLS", () => {
    const r = just(["tokenplace-status"], { FAKE_HOSTS: "staging.token.place\nplain.example.org\n", FAKE_TLS: "staging.token.place\n" });
    expect(r.code).toBe(0);
    expect(r.calls[0]).toBe("kubectl -n tokenplace get deploy,statefulset,pod,service,ingress,pdb -l app.kubernetes.io/instance=tokenplace-relay -o wide");
    expect(r.stdout).toContain("https://staging.token.place/\n");
    expect(r.stdout).toContain("http://plain.example.org/\n");
    expect(r.stdout).not.toContain("no Ingress");
  });

  test("status without an Ingress says so and points at the port-forward", () => {
    const r = just(["tokenplace-status"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("no Ingress");
  });

  test("logs reads the relay pods and Traefik, and still reads Traefik when the relay part fails", () => {
    const ok = just(["tokenplace-logs"]);
    expect(ok.code).toBe(0);
    expect(ok.calls).toEqual([
      "kubectl -n tokenplace logs -l app.kubernetes.io/name=tokenplace-relay,app.kubernetes.io/instance=tokenplace-relay --all-containers --prefix --timestamps --tail=200 --max-log-requests=10",
      "kubectl -n kube-system logs -l app.kubernetes.io/name=traefik --prefix --timestamps --tail=200 --max-log-requests=10",
    ]);
    const failed = just(["tokenplace-logs", "lines=50"], { FAKE_LOGS_FAIL: "-n tokenplace" });
    expect(failed.code).toBe(1);
    expect(failed.calls.length).toBe(2);
    expect(failed.calls[1]).toContain("--tail=50");
    expect(just(["tokenplace-logs", "lines=all"]).code).toBe(2);
  });

  test("port-forward forwards the relay Service's http port to local_port; a bad port is refused first", () => {
    const r = just(["tokenplace-port-forward"]);
    expect(r.code).toBe(0);
    expect(r.calls[1]).toBe("kubectl -n tokenplace port-forward service/tokenplace-relay 8500:http");
    expect(r.stdout).toContain("http://127.0.0.1:8500");
    expect(just(["tokenplace-port-forward", "local_port=9090"]).calls[1]).toBe("kubectl -n tokenplace port-forward service/tokenplace-relay 9090:http");
    const missing = just(["tokenplace-port-forward"], { FAKE_NO_SERVICE: "1" });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("no relay Service of release tokenplace-relay in namespace tokenplace");
    expect(missing.calls.length).toBe(1);
    for (const bad of ["local_port=0", "local_port=70000", "local_port=80;id", "http"]) {
      const b = just(["tokenplace-port-forward", bad]);
      expect(b.code).toBe(2);
      expect(b.calls).toEqual([]);
    }
  });
});
