import type { EnvReader } from "./env-reader.ts";

/**
 * The browser chat page (src/web): `GET /`, its hashed `/assets/...` and the public `/relay/status`
 * summary the page's status strip reads. On by default, as upstream relay.py serves its landing
 * page; broker-only deployments turn it off, and then `/` is the relay's JSON 404 again.
 */
export interface WebConfig {
  /** RELAY_WEB_UI: serve the chat page, its assets and /relay/status. */
  enabled: boolean;
}

export function loadWebConfig(r: EnvReader): WebConfig {
  return { enabled: r.bool("RELAY_WEB_UI", true) };
}
