import type { EnvReader } from "./env-reader.ts";

/**
 * The private operator endpoints, `/metrics` and `/relay/diagnostics` (token.place API v1 relay
 * spec §6.11). Names and meaning are upstream relay.py's; unlike upstream, a token set but empty
 * is a configuration problem (exit 2) rather than a relay that silently answers every scrape 401.
 */
export interface OperatorConfig {
  /**
   * TOKENPLACE_METRICS_TOKEN: the bearer token `/metrics` and `/relay/diagnostics` require
   * (`Authorization: Bearer <token>`, compared in constant time); undefined = both open, as upstream.
   */
  metricsToken?: string;
  /** TOKENPLACE_METRICS_DISABLED: `/metrics` answers 401 metrics_disabled to everyone. */
  metricsDisabled: boolean;
}

export const METRICS_TOKEN_MIN_CHARS = 16;

/** Tokens of other roles, which the metrics token must not equal. */
export interface OtherTokens {
  serverTokens: readonly string[];
  operatorTokens: readonly string[];
}

export function loadOperatorConfig(r: EnvReader, others: OtherTokens): OperatorConfig {
  if (r.isBlank("TOKENPLACE_METRICS_TOKEN")) {
    r.problem(
      "TOKENPLACE_METRICS_TOKEN: set but empty (upstream would answer every scrape 401 without saying why); " +
        "unset it to leave /metrics and /relay/diagnostics open, or set TOKENPLACE_METRICS_DISABLED=true to turn /metrics off",
    );
  }
  const metricsToken = r.raw("TOKENPLACE_METRICS_TOKEN");
  if (metricsToken !== undefined) {
    if (metricsToken.length < METRICS_TOKEN_MIN_CHARS) {
      r.problem(`TOKENPLACE_METRICS_TOKEN: must be at least ${METRICS_TOKEN_MIN_CHARS} characters`);
    }
    // No client could ever send it in an Authorization header: every request would be refused.
    if (/[\x00-\x1f\x7f]/.test(metricsToken)) r.problem("TOKENPLACE_METRICS_TOKEN: contains a control character (line break?)");
    // Prometheus (and whoever reads its configuration) must not hold a node's or an operator's credential.
    if (others.serverTokens.includes(metricsToken)) {
      r.problem("TOKENPLACE_METRICS_TOKEN: equals a registration token (TOKEN_PLACE_RELAY_SERVER_TOKEN(S)); use a separate token");
    }
    if (others.operatorTokens.includes(metricsToken)) {
      r.problem("TOKENPLACE_METRICS_TOKEN: equals an operator token (TOKEN_PLACE_OPERATOR_TOKEN); use a separate token");
    }
  }
  const metricsDisabled = r.bool("TOKENPLACE_METRICS_DISABLED", false);
  return metricsToken === undefined ? { metricsDisabled } : { metricsToken, metricsDisabled };
}

/** The printable view (--check-config, start-up log): never the token. */
export function describeOperatorConfig(c: OperatorConfig): Record<string, string> {
  const guarded = c.metricsToken !== undefined ? "bearer token required (redacted)" : "open (TOKENPLACE_METRICS_TOKEN unset)";
  return { metrics: c.metricsDisabled ? "disabled (401 metrics_disabled)" : guarded, diagnostics: guarded };
}
