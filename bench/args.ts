/**
 * Command-line options of the bench scripts, parsed with Node's `util.parseArgs` (tokens mode) and
 * checked against what each script declares: an option it does not know, a flag given a value, a
 * number that is not a positive number, or a stray argument is a mistake to report, not a default to
 * fall back on silently (a mistyped `--pair=1` would otherwise measure the default pairs and label
 * them as asked). Every problem is listed at once, then the script exits 2, as the relay does for bad
 * configuration.
 */
import { parseArgs } from "node:util";

/**
 * What an option holds: `flag` (present or not), `text` (`--name=value`), `count` (a positive
 * number, rounded down), `list` (comma-separated, blanks dropped).
 */
export type OptionKind = "flag" | "text" | "count" | "list";

export type ParsedArgs<S extends Record<string, OptionKind>> = {
  [K in keyof S]: S[K] extends "flag" ? boolean : S[K] extends "count" ? number | undefined : S[K] extends "list" ? string[] | undefined : string | undefined;
};

/** Thrown by parseBenchArgs with every problem; `exitOnBadArgs` prints them and exits 2. */
export class BenchArgsError extends Error {
  constructor(
    readonly script: string,
    readonly problems: string[],
  ) {
    super(`${script}: ${problems.join("; ")}`);
  }
}

/** Parses `argv` (no program or script name) against `spec`; throws BenchArgsError listing every problem. */
export function parseBenchArgs<S extends Record<string, OptionKind>>(script: string, spec: S, argv: string[]): ParsedArgs<S> {
  const options = Object.fromEntries(Object.entries(spec).map(([name, kind]) => [name, { type: kind === "flag" ? "boolean" : "string" }] as const));
  const { tokens } = parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true });
  const problems: string[] = [];
  const raw = new Map<string, string | true>();
  const known = Object.keys(spec)
    .map((n) => `--${n}`)
    .join(", ");
  for (const t of tokens) {
    if (t.kind === "positional") problems.push(`unexpected argument ${JSON.stringify(t.value)}`);
    if (t.kind !== "option") continue;
    const kind = spec[t.name];
    if (kind === undefined) problems.push(`unknown option ${t.rawName} (known: ${known})`);
    else if (kind === "flag" && t.value !== undefined) problems.push(`${t.rawName} is a flag and takes no value (got ${JSON.stringify(t.value)})`);
    else if (kind !== "flag" && (t.value === undefined || t.value === "")) problems.push(`${t.rawName} needs a value: ${t.rawName}=...`);
    else raw.set(t.name, t.value ?? true);
  }
  const out: Record<string, unknown> = {};
  for (const [name, kind] of Object.entries(spec)) {
    const v = raw.get(name);
    if (kind === "flag") out[name] = v === true;
    else if (typeof v !== "string") out[name] = undefined;
    else if (kind === "text") out[name] = v;
    else if (kind === "list") out[name] = v.split(",").map((s) => s.trim()).filter(Boolean);
    else {
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0) problems.push(`--${name} must be a positive number (got ${JSON.stringify(v)})`);
      else out[name] = Math.floor(n);
    }
  }
  if (problems.length > 0) throw new BenchArgsError(script, problems);
  return out as ParsedArgs<S>;
}

/** parseBenchArgs on this process's arguments; on bad arguments prints every problem and exits 2. */
export function benchArgs<S extends Record<string, OptionKind>>(script: string, spec: S, argv = process.argv.slice(2)): ParsedArgs<S> {
  try {
    return parseBenchArgs(script, spec, argv);
  } catch (err) {
    if (!(err instanceof BenchArgsError)) throw err;
    for (const p of err.problems) console.error(`${script}: ${p}`);
    process.exit(2);
  }
}
