/**
 * The paths the relay serves itself. The app registers exactly these (a test checks it), and the
 * config refuses a proxy prefix that would cover any of them.
 */
export const RELAY_ROUTES = [
  "/next_server",
  "/faucet",
  "/sink",
  "/source",
  "/retrieve",
  "/stream/source",
  "/stream/retrieve",
  "/livez",
  "/healthz",
  "/metrics",
] as const;
