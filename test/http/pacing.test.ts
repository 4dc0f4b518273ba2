import { afterEach, describe, expect, test } from "bun:test";
import { CLIENT_PACE_MS, EMPTY_ANSWERS_PER_SECOND, PACE_JITTER_SHARE, PACE_SLOT_MS, createPacer } from "../../src/common/pacing.ts";
import type { RequestContext } from "../../src/http/context.ts";
import { fakeKey, startLegacyRelay, startTestRelay, type TestRelay } from "../helpers/relay.ts";

/**
 * The pacer (src/common/pacing.ts): client polls answered with nothing without a hold come a pace
 * late (a tarpit for crowds that ignore Retry-After), capped per address, on one timer per slot.
 */
const ctx = (clientId: string) => ({ clientId }) as RequestContext;
/**
 * Waits until the pacer's one-second window (performance.now(), the same clock: the relay runs in
 * this process) is at `from`..`from + 100` ms, so a burst lands where the test needs it.
 */
async function windowAt(from: number): Promise<void> {
  while (Math.abs((performance.now() % 1000) - from - 50) > 50) await Bun.sleep(5);
}
const req = () => new Request("http://relay.test/retrieve", { method: "POST" });

describe("createPacer", () => {
  test("the pool: past maxTotal paces over all addresses false at once; active counts the paces in progress", async () => {
    let full = 0;
    const pacer = createPacer({ maxPerAddress: 0, maxTotal: 2, onFull: () => full++, paceMs: 100 });
    const a = [pacer.pace(req(), ctx("a")), pacer.pace(req(), ctx("b"))];
    expect(pacer.active).toBe(2);
    expect(await pacer.pace(req(), ctx("c"))).toBe(false);
    expect(full).toBe(1);
    expect(await Promise.all(a)).toEqual([true, true]);
    expect(pacer.active).toBe(0);
    expect(await pacer.pace(req(), ctx("c"))).toBe(true);
  });

  test("a pace resolves true a pace later; past the address's cap false at once, other addresses unaffected", async () => {
    let full = 0;
    const pacer = createPacer({ maxPerAddress: 2, onFull: () => full++, paceMs: 200 });
    const t0 = performance.now();
    const a = [pacer.pace(req(), ctx("a")), pacer.pace(req(), ctx("a"))];
    expect(await pacer.pace(req(), ctx("a"))).toBe(false);
    expect(full).toBe(1);
    const b = pacer.pace(req(), ctx("b"));
    expect(await Promise.all([...a, b])).toEqual([true, true, true]);
    // Ends on the slot grid: never early.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(200 - 5);
    // The cap is about paces at once: once they ended, the address may pace again.
    expect(await pacer.pace(req(), ctx("a"))).toBe(true);
  });

  test("paces ending in the same slot share one timer", async () => {
    const real = globalThis.setTimeout;
    let timers = 0;
    globalThis.setTimeout = ((fn: () => void, ms?: number) => {
      timers++;
      return real(fn, ms);
    }) as typeof setTimeout;
    try {
      const pacer = createPacer({ maxPerAddress: 0, onFull: () => {}, paceMs: 100 });
      const paces = Array.from({ length: 500 }, (_, i) => pacer.pace(req(), ctx(`c${i % 7}`)));
      // 500 paces started within one turn end in a few slots (the pace's jitter spreads them).
      expect(timers).toBeLessThanOrEqual(Math.ceil((100 * PACE_JITTER_SHARE) / PACE_SLOT_MS) + 2);
      expect((await Promise.all(paces)).every(Boolean)).toBe(true);
    } finally {
      globalThis.setTimeout = real;
    }
  });

  test("empty answers are allowed EMPTY_ANSWERS_PER_SECOND per address and second, then paced", () => {
    const pacer = createPacer({ maxPerAddress: 0, onFull: () => {} });
    // Start just after a window boundary so all calls fall in one window.
    const answers = Array.from({ length: EMPTY_ANSWERS_PER_SECOND + 3 }, () => pacer.overAllowance(ctx("crowd")));
    const over = answers.filter(Boolean).length;
    // Either all in one window (3 over) or split by a window boundary (fewer, never more).
    expect(over).toBeGreaterThan(0);
    expect(over).toBeLessThanOrEqual(3);
    expect(answers.slice(0, EMPTY_ANSWERS_PER_SECOND).every((x) => !x) || over < 3).toBe(true);
    expect(pacer.overAllowance(ctx("someone-else"))).toBe(false);
  });

  test("the pace and its slot are what the docs say", () => {
    expect(CLIENT_PACE_MS).toBe(1_000);
    expect(PACE_SLOT_MS).toBeLessThan(CLIENT_PACE_MS / 10);
  });
});

describe("over real HTTP", () => {
  let relay: TestRelay | undefined;
  afterEach(async () => {
    await relay?.shutdown();
    relay = undefined;
  });

  test("API v1: a crowd retrieving unknown request ids is answered its 404s at once up to the allowance, then a pace late", async () => {
    relay = startTestRelay({ RATE_LIMITS_ENABLED: "false" });
    const client = fakeKey("crowd");
    const n = EMPTY_ANSWERS_PER_SECOND + 8;
    // The whole burst in one window of the allowance.
    await windowAt(0);
    const t0 = performance.now();
    const answers = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const res = await relay!.post("/api/v1/relay/responses/retrieve", { client_public_key: client, request_id: `nope-${i}` });
        return { status: res.status, body: (await res.json()) as { error: { code: unknown } }, ms: performance.now() - t0 };
      }),
    );
    for (const a of answers) {
      expect(a.status).toBe(404);
      expect(a.body.error.code).toBe(404);
    }
    const late = answers.filter((a) => a.ms >= CLIENT_PACE_MS - 50).length;
    expect(late).toBeGreaterThan(0);
    expect(late).toBeLessThanOrEqual(8);
  });

  test("legacy: past the hold budget (RELAY_MAX_LONG_POLLS) a client poll is paced, with Retry-After, instead of answered at once", async () => {
    relay = startLegacyRelay({ RELAY_LONG_POLL_MS: "3000", RELAY_MAX_LONG_POLLS: "1" });
    const ac = new AbortController();
    const held = fetch(relay.url + "/retrieve", { method: "POST", body: JSON.stringify({ client_public_key: fakeKey("held") }), signal: ac.signal }).catch(() => "left");
    for (const end = Date.now() + 2_000; relay.app.holds.waiting < 1; await Bun.sleep(10)) if (Date.now() > end) throw new Error("not held");
    const t0 = performance.now();
    const res = await relay.post("/retrieve", { client_public_key: fakeKey("other") });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(CLIENT_PACE_MS - 50);
    expect(res.status).toBe(200);
    expect(res.headers.get("retry-after")).toBe("1");
    expect(await res.json()).toEqual({ error: "No response available for the given public key" });
    expect(await (await relay.get("/metrics")).text()).toMatch(/rejections_total\{reason="long_poll_capacity_client"\} 1\b/);
    ac.abort();
    await held;
  });
});

describe("held retrieves are never paced again", () => {
  let relay: TestRelay | undefined;
  afterEach(async () => {
    await relay?.shutdown();
    relay = undefined;
  });

  test("API v1: a retrieve held until its hold ended answers then, even when its address is past the allowance of empty answers", async () => {
    const { startV1Relay, v1Peers, rid } = await import("../v1/helpers.ts");
    const HOLD_MS = 1_000;
    relay = startV1Relay({ RATE_LIMITS_ENABLED: "false", RELAY_V1_RETRIEVE_HOLD_MS: String(HOLD_MS) });
    const p = v1Peers(relay);
    const node = await p.register();
    const client = fakeKey("held-client");
    const id = rid();
    expect((await p.request(node.key, client, id)).status).toBe(200);
    // The hold starts 400-500 ms into a window: the burst below (700 ms later) and the hold's end
    // (1,000 ms later) fall in the same window of the allowance.
    await windowAt(400);
    const t0 = performance.now();
    const held = p.retrieve(client, id).then((r) => ({ ...r, ms: performance.now() - t0 }));
    // Just before the hold ends, the same address spends its allowance of empty answers (per
    // second) on unknown ids.
    await Bun.sleep(HOLD_MS - 300);
    await Promise.all(Array.from({ length: EMPTY_ANSWERS_PER_SECOND + 4 }, (_, i) => p.retrieve(client, `nope-${i}`)));
    const r = await held;
    expect(r.status).toBe(202);
    expect(r.body).toMatchObject({ status: "pending" });
    // Answered when the hold ended, not a pace (CLIENT_PACE_MS, up to a quarter longer) after it.
    expect(r.ms).toBeGreaterThanOrEqual(HOLD_MS - 50);
    expect(r.ms).toBeLessThan(HOLD_MS + CLIENT_PACE_MS * 0.75);
  });
});

describe("paced polls have their own pool", () => {
  let relay: TestRelay | undefined;
  afterEach(async () => {
    await relay?.shutdown();
    relay = undefined;
  });

  test("two addresses filling their shares of paces never make RELAY_MAX_CONNECTIONS refuse a third address", async () => {
    const MAX = 16;
    relay = startLegacyRelay({
      RELAY_MAX_CONNECTIONS: String(MAX),
      RELAY_LONG_POLL_MS: "3000",
      RELAY_MAX_LONG_POLLS: "1",
      RELAY_PROXY_TRUST_FORWARDED: "true",
      RELAY_TRUSTED_PROXY_CIDRS: "127.0.0.1/32",
      RATE_LIMITS_ENABLED: "false",
    });
    const from = (ip: string) => ({ "X-Forwarded-For": ip });
    const ac = new AbortController();
    const poll = (ip: string) =>
      fetch(relay!.url + "/retrieve", { method: "POST", headers: from(ip), body: JSON.stringify({ client_public_key: fakeKey(ip) }), signal: ac.signal }).catch(() => "left");
    const held = poll("198.51.100.1");
    for (const end = Date.now() + 2_000; relay.app.holds.waiting < 1; await Bun.sleep(10)) if (Date.now() > end) throw new Error("not held");
    // The hold budget is full: every other poll is paced; each of two addresses takes half the pool.
    const paced = [...Array.from({ length: MAX / 2 }, () => poll("203.0.113.1")), ...Array.from({ length: MAX / 2 }, () => poll("203.0.113.2"))];
    await Bun.sleep(200);
    const res = await fetch(relay.url + "/next_server", { headers: from("192.0.2.77") });
    expect([res.status, await res.json()]).toEqual([200, { error: { message: "No servers available", code: 503 } }]);
    // A fifth of a second into the paces, nothing paced has been answered yet: they were all in flight.
    expect(await Promise.race([Promise.all(paced).then(() => "answered"), Bun.sleep(1).then(() => "in flight")])).toBe("in flight");
    ac.abort();
    await Promise.all([held, ...paced]);
  });
});
