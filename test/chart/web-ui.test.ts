// relay.webUi carries RELAY_WEB_UI: the chat page is on by default, as in the relay, and the
// chart can turn it off for broker-only deployments; anything but a boolean is refused.
import { describe, expect, test } from "bun:test";
import { loadConfig } from "../../src/config/index.ts";
import { get, MINIMAL, render, renderOk, skipWithoutHelm, withMinimal } from "./helm.ts";

const skip = skipWithoutHelm("test/chart/web-ui.test.ts");

describe.skipIf(skip)("relay.webUi -> RELAY_WEB_UI", () => {
  const configMap = (o = MINIMAL) => get(renderOk(o), "ConfigMap", "tokenplace-relay").data as Record<string, string>;

  test("on by default, and the relay reads it so", () => {
    const data = configMap();
    expect(data.RELAY_WEB_UI).toBe("true");
    expect(loadConfig({ RELAY_WEB_UI: data.RELAY_WEB_UI }).config.web.enabled).toBe(true);
  });

  test("false turns the page off", () => {
    const data = configMap(withMinimal({ set: { "relay.webUi": false } }));
    expect(data.RELAY_WEB_UI).toBe("false");
    expect(loadConfig({ RELAY_WEB_UI: data.RELAY_WEB_UI }).config.web.enabled).toBe(false);
  });

  test("the schema refuses a non-boolean", () => {
    const r = render(withMinimal({ set: { "relay.webUi": "yes" } }));
    expect(r.ok).toBe(false);
    expect(r.stderr).toContain("webUi");
  });
});
