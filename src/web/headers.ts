/**
 * Headers of every response of the chat page feature (the page, its assets, /relay/status).
 *
 * The policy allows exactly what the page does: its own script, stylesheet and icon, fetches to
 * this origin (the API v1 relay routes and /relay/status), nothing inline, no eval, no framing,
 * no plugins, no form posts anywhere (the composer is handled in script: a page whose script did
 * not run can never send the text in plaintext), and Trusted Types with no policy, so DOM-XSS
 * sinks such as innerHTML throw: the page writes text with textContent only.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "object-src 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join("; ");

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "Content-Security-Policy": CONTENT_SECURITY_POLICY,
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
  // For browsers that predate frame-ancestors.
  "X-Frame-Options": "DENY",
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Resource-Policy": "same-origin",
  "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
};

/** The page itself: revalidated on every load, so a new release is picked up at once. */
export const PAGE_CACHE = "no-cache";
/** Content-hashed assets never change under their name. */
export const ASSET_CACHE = "public, max-age=31536000, immutable";
