import { describe, expect, test } from "bun:test";
import { BenchArgsError, parseBenchArgs } from "../bench/args.ts";
import { REPO_ROOT } from "../src/demo/relay-process.ts";

const SPEC = { quick: "flag", rounds: "count", only: "list", out: "text" } as const;

function problemsOf(argv: string[]): string[] {
  try {
    parseBenchArgs("bench/x.ts", SPEC, argv);
  } catch (err) {
    if (err instanceof BenchArgsError) return err.problems;
    throw err;
  }
  return [];
}

describe("bench command-line options", () => {
  test("every kind parses, in both --name=value and --name value forms", () => {
    expect(parseBenchArgs("bench/x.ts", SPEC, ["--quick", "--rounds=2.9", "--only", "cycles, memory,", "--out=/tmp/r.md"])).toEqual({
      quick: true,
      rounds: 2,
      only: ["cycles", "memory"],
      out: "/tmp/r.md",
    });
    expect(parseBenchArgs("bench/x.ts", SPEC, [])).toEqual({ quick: false, rounds: undefined, only: undefined, out: undefined });
  });

  test("every mistake is reported at once, none falls back to a default", () => {
    const problems = problemsOf(["--pair=1", "--quick=yes", "stray", "--rounds=0", "--only=", "--out"]);
    expect(problems).toEqual([
      "unknown option --pair (known: --quick, --rounds, --only, --out)",
      '--quick is a flag and takes no value (got "yes")',
      'unexpected argument "stray"',
      "--only needs a value: --only=...",
      "--out needs a value: --out=...",
      '--rounds must be a positive number (got "0")',
    ]);
    expect(problemsOf(["--rounds=many"])).toEqual(['--rounds must be a positive number (got "many")']);
  });

  test("a bench script given a mistyped option exits 2 naming it, before it starts anything", async () => {
    const proc = Bun.spawn([process.execPath, "run", "bench/layers.ts", "--pair=1", "--quick"], { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe" });
    const [code, out, err] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
    expect(code).toBe(2);
    expect(out).toBe("");
    expect(err).toContain("bench/layers.ts: unknown option --pair (known: --quick, --pairs,");
  });
});
