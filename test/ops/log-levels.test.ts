import { afterEach, expect, test } from "bun:test";
import { spawnRelay, type Spawned } from "../helpers/spawn.ts";

let relay: Spawned | undefined;
afterEach(() => relay?.kill());

test("at LOG_LEVEL=warn requests are not logged but lifecycle events still are", async () => {
  relay = await spawnRelay({ TOKENPLACE_RELAY_ONLY: "true", TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true", LOG_LEVEL: "warn" });
  expect((await fetch(`${relay.url}/next_server`)).status).toBe(200);
  relay.proc.kill("SIGTERM");
  expect(await relay.closed()).toBe(0);
  const msgs = relay.lines.map((l) => JSON.parse(l).msg);
  expect(msgs).toEqual(["listening", "draining", "stopped"]);
});

test("service-link variables are warned about at start-up, by name only", async () => {
  relay = await spawnRelay({ TOKENPLACE_RELAY_ONLY: "true", TOKENPLACE_ENABLE_LEGACY_RELAY_ROUTES: "true", LOG_LEVEL: "warn", TOKENPLACE_RELAY_SERVICE_HOST: "secret-looking-value" });
  const warning = relay.lines.find((l) => l.includes("unknown setting"));
  expect(warning).toContain("TOKENPLACE_RELAY_SERVICE_HOST");
  expect(warning).not.toContain("secret-looking-value");
});
