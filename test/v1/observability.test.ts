// API v1 metrics under upstream's names, and logs that never carry ciphertext, keys, credentials,
// cancel proofs or tokens (token.place API v1 relay spec §6.11, §10).
import { describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import { captureLogger, fakeKey } from "../helpers/relay.ts";
import { rid, startV1Relay, v1Peers } from "./helpers.ts";

const TOKEN = "registration-token-0123456789";

describe("a full API v1 run, observed", () => {
  test("upstream's series move, and the debug log holds no secret or payload", async () => {
    const { logger, raw } = captureLogger("trace");
    const relay = startV1Relay({ TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN }, undefined, { logger, registry: new Registry() });
    const p = v1Peers(relay, TOKEN);
    const secrets: string[] = [TOKEN];
    try {
      const node = await p.register();
      secrets.push(node.credential, node.key);
      const client = fakeKey("client");
      secrets.push(client);
      const ciphertext = "Q0lQSEVSVEVYVC1TRU5USU5FTA==";
      const ids = [rid(), rid(), rid()];
      for (const id of ids) {
        secrets.push(`proof-${id}`, id);
        await p.request(node.key, client, id, { chat_history: ciphertext, cipherkey: "Q0lQSEVSS0VZLVNFTlRJTkVM", iv: "SVYtU0VOVElORUw=" });
      }
      secrets.push(ciphertext, "Q0lQSEVSS0VZLVNFTlRJTkVM", "SVYtU0VOVElORUw=");
      await p.poll(node.key);
      await p.control(node.key, node.credential, ids[0]!);
      await p.progress(node.key, node.credential, client, ids[0]!, { ciphertext: "UFJPR1JFU1MtU0VOVElORUw=" });
      secrets.push("UFJPR1JFU1MtU0VOVElORUw=");
      await p.retrieve(client, ids[0]);
      await p.respond(client, ids[0], { chat_history: "QU5TV0VSLVNFTlRJTkVM" });
      secrets.push("QU5TV0VSLVNFTlRJTkVM");
      await p.retrieve(client, ids[0]);
      await p.cancel(client, ids[1]!);
      await p.poll(node.key);
      await p.control(node.key, "wrong-credential-value", ids[2]!);
      relay.clock.advance(480_000);
      await relay.v1Store.sweep();
      await p.retrieve(client, ids[2]);
      await p.unregister(node.key, node.credential);

      const text = await (await relay.get("/metrics")).text();
      const value = (series: string) => Number(text.match(new RegExp(`^${series.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m"))?.[1]);
      expect(value('tokenplace_relay_request_outcomes_total{outcome="completed"}')).toBe(1);
      expect(value('tokenplace_relay_request_outcomes_total{outcome="cancelled"}')).toBe(1);
      expect(value('tokenplace_relay_request_outcomes_total{outcome="expired"}')).toBe(1);
      expect(value('tokenplace_relay_compute_control_requests_total{state="active"}')).toBe(1);
      expect(value("tokenplace_relay_compute_control_lease_renewals_total")).toBe(1);
      // Silent past its lease (the clock moved 480 s), the node was evicted before it unregistered.
      expect(value('tokenplace_compute_node_evictions_total{reason="stale_lease"}')).toBe(1);
      expect(value('tokenplace_compute_node_evictions_total{reason="unregistered"}')).toBe(0);
      expect(value('tokenplace_relay_queue_depth{provider_mode="relay"}')).toBe(0);
      for (const name of [
        "tokenplace_relay_oldest_queued_request_age_seconds", "tokenplace_compute_nodes_registered", "tokenplace_compute_nodes_healthy",
        "tokenplace_compute_node_lease_age_seconds", "tokenplace_relay_in_flight_requests", "tokenplace_relay_oldest_in_flight_age_seconds",
      ]) expect(text).toContain(`# TYPE ${name} gauge`);
      for (const s of secrets) expect(text).not.toContain(s);

      const events = raw.map((l) => JSON.parse(l).event).filter(Boolean);
      expect(events).toEqual(expect.arrayContaining(["v1.node.registered", "v1.request.admitted", "v1.request.claimed", "v1.response.accepted", "v1.response.delivered", "v1.request.cancelled"]));
      const log = raw.join("\n");
      for (const s of secrets) expect({ leaked: log.includes(s) ? s.slice(0, 24) : null }).toEqual({ leaked: null });
    } finally {
      await relay.shutdown();
    }
  });
});
