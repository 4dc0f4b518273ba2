import { createTokenCheck } from "../common/tokens.ts";
import type { OperatorConfig } from "../config/operator.ts";
import { RelayError } from "../errors.ts";
import type { RouteSpec } from "../http/routes.ts";

/**
 * The private operator reads (token.place API v1 relay spec §6.11): routes declared with
 * `auth: "metrics-scrape"` (/metrics) or `auth: "metrics-token"` (/relay/diagnostics).
 *
 * - TOKENPLACE_METRICS_TOKEN set: `Authorization: Bearer <token>` is required on both, compared
 *   in constant time (createTokenCheck); missing or wrong: 401 metrics_token_invalid.
 * - TOKENPLACE_METRICS_DISABLED: /metrics answers 401 metrics_disabled, token or not (upstream
 *   answers 401 too; the route exists, so 404 would mislead). Diagnostics are not metrics and
 *   stay under the token rule.
 * - Neither: both open, as upstream (the chart keeps them off the public Ingress).
 *
 * The operator token (TOKEN_PLACE_OPERATOR_TOKEN) is deliberately not accepted here: it can
 * remove nodes, so it travels to the one route that needs it; scrapers and dashboards get the
 * read-only metrics token.
 */
export type OperatorReadGuard = (auth: RouteSpec["auth"], req: Request) => void;

const CHALLENGE = { "WWW-Authenticate": 'Bearer realm="tokenplace-relay"' } as const;

const authError = (code: string, message: string) =>
  new RelayError(401, code, message, { error: { message, type: "authentication_error", param: null, code } }, CHALLENGE);

export const operatorReadErrors = {
  tokenInvalid: () => authError("metrics_token_invalid", "Missing or invalid metrics token (Authorization: Bearer)"),
  metricsDisabled: () => authError("metrics_disabled", "Metrics are disabled on this relay (TOKENPLACE_METRICS_DISABLED)"),
};

/** The credentials of `Authorization: Bearer <credentials>` (scheme case-insensitive, RFC 9110 §11.1), else null. */
export function bearerCredentials(header: string | null): string | null {
  const m = header === null ? null : /^bearer +(.+)$/i.exec(header.trim());
  return m ? m[1]!.trim() : null;
}

export function createOperatorReadGuard(config: OperatorConfig): OperatorReadGuard {
  const { metricsToken, metricsDisabled } = config;
  const tokenOk = createTokenCheck(metricsToken === undefined ? [] : [metricsToken]);
  return (auth, req) => {
    if (auth !== "metrics-scrape" && auth !== "metrics-token") return;
    if (auth === "metrics-scrape" && metricsDisabled) throw operatorReadErrors.metricsDisabled();
    if (metricsToken !== undefined && !tokenOk(bearerCredentials(req.headers.get("authorization")))) throw operatorReadErrors.tokenInvalid();
  };
}
