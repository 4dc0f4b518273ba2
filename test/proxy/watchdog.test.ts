/**
 * The shared watchdog and the exchange's deadlines: a deadline never fires early, a disarmed one
 * never fires, the hard stop reaches every open exchange through one listener, and a disposed
 * exchange leaves the watchdog.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { Exchange } from "../../src/proxy/exchange.ts";
import { ProxyAbort } from "../../src/proxy/failure.ts";
import { WATCHDOG_MAX_TICK_MS, WATCHDOG_MIN_TICK_MS, Watchdog, watchdogTickMs } from "../../src/proxy/watchdog.ts";

const dogs: Watchdog[] = [];
afterEach(() => {
  for (const d of dogs.splice(0)) d.close();
});
function watchdog(tickMs: number, hardStop = new AbortController().signal): Watchdog {
  const d = new Watchdog(tickMs, hardStop);
  dogs.push(d);
  return d;
}
const kindOf = (ex: Exchange) => (ex.signal.reason instanceof ProxyAbort ? ex.signal.reason.kind : undefined);
const aborted = (ex: Exchange) => new Promise<number>((r) => ex.signal.addEventListener("abort", () => r(performance.now()), { once: true }));

describe("watchdogTickMs", () => {
  test("a tenth of the shortest timeout, clamped", () => {
    expect(watchdogTickMs([60_000, 300_000])).toBe(WATCHDOG_MAX_TICK_MS);
    expect(watchdogTickMs([2_000, 300_000])).toBe(200);
    expect(watchdogTickMs([10])).toBe(WATCHDOG_MIN_TICK_MS);
    expect(watchdogTickMs([0, 500])).toBe(50);
  });
});

describe("deadlines", () => {
  test("an armed exchange is aborted with its kind, not before its deadline", async () => {
    const ex = new Exchange(new AbortController().signal, watchdog(5));
    const t0 = performance.now();
    const at = aborted(ex);
    ex.arm(60, "idle");
    const firedAt = await at;
    expect(firedAt - t0).toBeGreaterThanOrEqual(60);
    expect(kindOf(ex)).toBe("idle");
    expect(ex.reason).toBe("idle");
  });

  test("re-arming moves the deadline and the kind; disarm stops it", async () => {
    const d = watchdog(5);
    const ex = new Exchange(new AbortController().signal, d);
    const t0 = performance.now();
    ex.arm(50, "idle");
    await Bun.sleep(20);
    ex.arm(1_000, "client_abort");
    // Well past the first deadline, far before the second.
    await Bun.sleep(130);
    expect(performance.now() - t0).toBeGreaterThan(50);
    expect(ex.aborted).toBe(false);
    await aborted(ex);
    expect(kindOf(ex)).toBe("client_abort");

    const quiet = new Exchange(new AbortController().signal, d);
    quiet.arm(20, "timeout");
    quiet.disarm();
    await Bun.sleep(80);
    expect(quiet.aborted).toBe(false);
  });

  test("dispose leaves the watchdog; its interval stops once nothing is watched", async () => {
    const d = watchdog(5);
    const ex = new Exchange(new AbortController().signal, d);
    expect(d.size).toBe(1);
    expect(d.running).toBe(true);
    ex.arm(10, "idle");
    ex.dispose();
    expect(d.size).toBe(0);
    await Bun.sleep(50);
    expect(ex.aborted).toBe(false);
    expect(d.running).toBe(false);
  });
});

describe("signals", () => {
  test("the hard stop aborts every open exchange as shutdown, and any opened after it at once", () => {
    const hard = new AbortController();
    const d = watchdog(1_000, hard.signal);
    const open = [0, 1, 2].map(() => new Exchange(new AbortController().signal, d));
    const done = new Exchange(new AbortController().signal, d);
    done.dispose();
    hard.abort();
    expect(open.map(kindOf)).toEqual(["shutdown", "shutdown", "shutdown"]);
    expect(done.aborted).toBe(false);
    expect(kindOf(new Exchange(new AbortController().signal, d))).toBe("shutdown");
  });

  test("the client going away aborts as client_abort, unless the exchange was disposed", () => {
    const d = watchdog(1_000);
    const client = new AbortController();
    const ex = new Exchange(client.signal, d);
    client.abort();
    expect(kindOf(ex)).toBe("client_abort");

    const later = new AbortController();
    const finished = new Exchange(later.signal, d);
    finished.dispose();
    later.abort();
    expect(finished.aborted).toBe(false);

    const gone = new AbortController();
    gone.abort();
    expect(kindOf(new Exchange(gone.signal, d))).toBe("client_abort");
  });
});
