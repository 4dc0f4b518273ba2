/**
 * The one error type of the relay: an HTTP status plus a machine-readable code.
 *
 * The broker protocol fixes some error bodies byte for byte (token.place peers read them), so an
 * error may carry that exact body; otherwise it renders as
 * `{"error": {"message", "code": <status>, "type": <code>}}`, the protocol's own nested shape.
 */
export class RelayError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body?: unknown,
    readonly headers?: Record<string, string>,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "RelayError";
  }

  toBody(): unknown {
    return this.body ?? { error: { message: this.message, code: this.status, type: this.code } };
  }
}

export const badRequest = (code: string, message: string, body?: unknown) => new RelayError(400, code, message, body);
export const notFound = (message = "Not found") => new RelayError(404, "not_found", message);
export const methodNotAllowed = (allow: string[]) =>
  new RelayError(405, "method_not_allowed", "Method not allowed", undefined, { Allow: allow.join(", ") });
/** Closes the connection: otherwise Bun reads and discards whatever the client goes on sending. */
export const tooLarge = (limit: number) =>
  new RelayError(413, "body_too_large", `Request body exceeds the limit of ${limit} bytes`, undefined, { Connection: "close" });
/**
 * The same refusal, closing the connection after it: for answers that leave a body unread or that
 * end a client's share (Bun otherwise keeps the connection and reads on).
 */
export const withConnectionClose = (e: RelayError) => new RelayError(e.status, e.code, e.message, e.body, { ...e.headers, Connection: "close" });
export const unavailable = (code: string, message: string) => new RelayError(503, code, message);
/** The upstream could not be reached or broke the exchange. */
export const badGateway = (code: string, message: string) => new RelayError(502, code, message);
/** The upstream did not answer in time. */
export const gatewayTimeout = (code: string, message: string) => new RelayError(504, code, message);
