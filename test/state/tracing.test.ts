// ioredis traces every command unless diagnostics_channel says nobody listens; Bun's
// TracingChannel lacked the property it reads (src/state/redis.ts). With the relay's connection
// nothing is traced while no tracer subscribed, and a tracer that subscribes is still served.
// A real redis-server and a real connection.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import dc from "node:diagnostics_channel";
import { connectRedis, whenReady } from "../../src/state/redis.ts";
import { redisSkipReason, startRedis, type RedisServer } from "../helpers/redis.ts";

const skip = redisSkipReason("test/state/tracing.test.ts");

describe.skipIf(skip !== undefined)("ioredis command tracing", () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis({ persist: false });
  });
  afterAll(async () => {
    await redis.stop();
  });

  test("off while nobody subscribed; a subscribed tracer sees the relay's commands", async () => {
    const client = connectRedis({ url: `${redis.url}/0`, keyPrefix: "trace:", commandTimeoutMs: 2_000 }, "tracing-test");
    try {
      await whenReady(client, 5_000);
      const channel = dc.tracingChannel("ioredis:command");
      expect(channel.hasSubscribers).toBe(false);

      const seen: string[] = [];
      const tracer = { start: (ctx: unknown) => void seen.push((ctx as { command: string }).command), end() {}, asyncStart() {}, asyncEnd() {}, error() {} };
      channel.subscribe(tracer);
      try {
        expect(channel.hasSubscribers).toBe(true);
        expect(await client.set("trace:k", "v")).toBe("OK");
        expect(seen).toContain("set");
      } finally {
        channel.unsubscribe(tracer);
      }
      expect(channel.hasSubscribers).toBe(false);
      await client.get("trace:k");
      expect(seen).not.toContain("get");
    } finally {
      client.disconnect();
    }
  });
});
