import type { Env } from "./env-reader.ts";

/**
 * Which set variables look like relay settings but are none: a misspelt name must never start a
 * relay that quietly runs on a default (worst case: a misspelt registration token starts it with
 * registration open). Such a name is a configuration problem (exit 2), with the closest known name
 * as a suggestion.
 *
 * "Looks like ours" is a name prefix. RELAY_, TOKENPLACE_ and TOKEN_PLACE_ are the relay's own.
 * API_ alone is too broad (a developer's shell or a shared env file may hold other programs'
 * API_KEY, API_URL, ...): only the API_ families the relay reads (API_RATE_LIMIT,
 * API_DAILY_QUOTA, API_RELAY_CONTROL_PLANE_*) and API_V1_, the bare form of the
 * TOKEN_PLACE_API_V1_* names, count.
 */
export const OUR_PREFIXES = ["RELAY_", "TOKENPLACE_", "TOKEN_PLACE_", "API_V1_", "API_RELAY_", "API_RATE_", "API_DAILY_"] as const;

/**
 * Names with our prefixes that belong to the project's own tooling, not to the relay: an operator's
 * or developer's shell legitimately holds them while a relay starts, so they are ignored without a
 * word. Deployment (helmfile.yaml.gotmpl, justfile, scripts/k8s-cluster-test.sh), benches,
 * the demo client (src/demo/run.ts) and the image build (Dockerfile, scripts/build.ts).
 */
export const PROJECT_TOOL_VARIABLES: ReadonlySet<string> = new Set([
  "TOKENPLACE_ENV",
  "TOKENPLACE_NAMESPACE",
  "TOKENPLACE_RELEASE",
  "TOKENPLACE_KUBE_CONTEXT",
  "TOKENPLACE_HELM_TIMEOUT",
  "TOKENPLACE_IMAGE_TAG",
  "TOKENPLACE_GPU_CIDRS",
  "TOKENPLACE_MONITORING",
  "TOKENPLACE_BENCH_RELAY_BIN",
  "TOKENPLACE_PEERS_DIR",
  "RELAY_URL",
  "RELAY_BUILD_REVISION",
  "RELAY_BUILD_CREATED",
  "RELAY_VERSION",
  "RELAY_SOURCE",
]);

/** Upstream relay.py settings this relay does not have, and what to do instead. */
export const RETIRED_UPSTREAM_VARIABLES: Readonly<Record<string, string>> = {
  TOKENPLACE_RATE_LIMIT_STORAGE_URI:
    "upstream's rate-limit storage is not a setting here: the counters live where TOKENPLACE_RELAY_STATE_BACKEND keeps the state; unset it",
  TOKEN_PLACE_RELAY_SERVER_TTL_SECONDS: "upstream's legacy node expiry is not a setting here: use RELAY_NODE_STALE_MS (milliseconds); unset it",
};

/**
 * Kubernetes service links (and Docker's legacy links) inject `<SERVICE>_SERVICE_HOST`,
 * `<SERVICE>_PORT=tcp://...` and `<SERVICE>_PORT_<n>_TCP_*` for every Service in the namespace: a
 * Service named tokenplace-relay yields TOKENPLACE_RELAY_SERVICE_HOST. Nobody wrote those, so they
 * are only warned about (the chart turns service links off; other manifests may not).
 */
const SERVICE_LINK = /_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)$/;
const SERVICE_LINK_PORT_VALUE = /^(tcp|udp|sctp):\/\/[^\s]+:\d+$/;

export interface NameCheck {
  /** Names that are a configuration problem, each as one message. */
  problems: string[];
  /** Names only warned about (service links): the relay starts. */
  warnings: string[];
}

export function checkSettingNames(env: Env, known: ReadonlySet<string>, routeVars: readonly string[] = []): NameCheck {
  const problems: string[] = [];
  const warnings: string[] = [];
  const knownList = [...known].sort();
  for (const name of Object.keys(env).sort()) {
    if (env[name] === undefined || known.has(name) || PROJECT_TOOL_VARIABLES.has(name)) continue;
    const upper = name.toUpperCase();
    if (!OUR_PREFIXES.some((p) => upper.startsWith(p))) continue;
    const retired = RETIRED_UPSTREAM_VARIABLES[name];
    if (retired !== undefined) {
      problems.push(`${name}: ${retired}`);
      continue;
    }
    if (name === upper && (SERVICE_LINK.test(name) || (name.endsWith("_PORT") && SERVICE_LINK_PORT_VALUE.test(env[name]!.trim())))) {
      warnings.push(name);
      continue;
    }
    // Never the value: it may be a secret.
    const hint = suggest(name, knownList);
    const routes = /^API_RELAY_CONTROL_PLANE_.+_RATE_LIMIT$/.test(upper) && routeVars.length > 0 ? ` (${CONTROL_PLANE_PATTERN} routes: ${routeVars.map(routeWord).join(", ")})` : "";
    if (hint !== undefined) {
      problems.push(`${name}: not a relay setting; did you mean ${hint}?${known.has(upper) ? " (names are case-sensitive)" : routes}`);
    } else {
      problems.push(`${name}: not a relay setting (typo?)${routes}; the settings are listed in README "Configuration"`);
    }
  }
  return { problems, warnings };
}

const CONTROL_PLANE_HEAD = "API_RELAY_CONTROL_PLANE_";
const CONTROL_PLANE_TAIL = "_RATE_LIMIT";
const CONTROL_PLANE_PATTERN = `${CONTROL_PLANE_HEAD}<ROUTE>${CONTROL_PLANE_TAIL}`;
const routeWord = (v: string) => v.slice(CONTROL_PLANE_HEAD.length, -CONTROL_PLANE_TAIL.length);

/** Our name prefixes (and their run-together forms) a name may carry in front of its own words. */
const LEADING_PREFIX = /^(TOKEN_?PLACE_|RELAY_|API_)+/;

/**
 * The known name the unknown one most probably meant: the same name in another case; one a few
 * edits away (Damerau-Levenshtein: a letter left out, doubled, swapped); the same words in another
 * order; the name with its last word left off; or the same words behind another of our prefixes (API_V1_RELAY_POLL_WAIT_SECONDS for
 * TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS).
 */
export function suggest(name: string, known: readonly string[]): string | undefined {
  const upper = name.toUpperCase();
  if (known.includes(upper)) return upper;
  const words = (s: string) => s.split("_").filter(Boolean).sort().join("_");
  const core = (s: string) => s.replace(LEADING_PREFIX, "");
  let best: { name: string; score: number } | undefined;
  for (const k of known) {
    // A few edits for every ten characters: RELAY_LONGPOL_MS is two from RELAY_LONG_POLL_MS.
    const allowed = Math.max(2, Math.floor(k.length / 10));
    let score = editDistance(upper, k);
    if (score > allowed) score = Number.POSITIVE_INFINITY;
    if (words(upper) === words(k)) score = Math.min(score, 1);
    // A word left off the end: RELAY_MAX_BODY for RELAY_MAX_BODY_BYTES.
    if (k.startsWith(`${upper}_`)) score = Math.min(score, 2);
    const a = core(upper);
    const b = core(k);
    if (a !== "" && b !== "") {
      if (a === b || words(a) === words(b)) score = Math.min(score, 1.5);
      else if (editDistance(a, b) <= Math.max(1, Math.floor(b.length / 10))) score = Math.min(score, 1.5 + editDistance(a, b));
    }
    if (score < (best?.score ?? Number.POSITIVE_INFINITY)) best = { name: k, score };
  }
  return best?.name;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and adjacent swaps. */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}
