export const REQUEST_ID_HEADER = "X-Request-Id";

// Echo a caller's id only when it is short and log-safe; anything else could forge or flood log lines.
const SAFE_ID = /^[A-Za-z0-9._:@\-]{1,128}$/;

export function requestIdFor(req: Request): string {
  const inbound = req.headers.get(REQUEST_ID_HEADER);
  return inbound !== null && SAFE_ID.test(inbound) ? inbound : crypto.randomUUID();
}
