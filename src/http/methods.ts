/**
 * The request methods HTTP defines (RFC 9110 §9, and PATCH, RFC 5789). Any other method string is
 * the client's choice: whatever keys metrics labels or caches by method maps it to one value or
 * leaves it out, so a client cannot grow them.
 */
export const KNOWN_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"]);
