import { describe, expect, test } from "bun:test";
import { ManualClock } from "../../src/clock.ts";
import { createUpstreamPool } from "../../src/proxy/upstreams.ts";

const urls = ["http://a:1", "http://b:1", "http://c:1"].map((u) => new URL(u));
const labels = (us: { label: string }[]) => us.map((u) => u.label.replace(/^http:\/\/|:1$/g, "")).join("");

describe("upstream pool", () => {
  test("round robin: each plan starts one further along and lists every upstream", () => {
    const pool = createUpstreamPool(urls, new ManualClock(), 1_000);
    expect([labels(pool.plan()), labels(pool.plan()), labels(pool.plan()), labels(pool.plan())]).toEqual(["abc", "bca", "cab", "abc"]);
  });

  test("a failed upstream moves to the back for ejectMs, then returns", () => {
    const clock = new ManualClock();
    const pool = createUpstreamPool(urls, clock, 1_000);
    const [a] = pool.all;
    pool.failed(a!);
    expect(pool.isEjected(a!)).toBe(true);
    expect(labels(pool.plan())).toBe("bca");
    expect(labels(pool.plan())).toBe("bca");
    clock.advance(1_000);
    expect(pool.isEjected(a!)).toBe(false);
    // Back in its round-robin place (the cursor has moved on to c).
    expect(labels(pool.plan())).toBe("cab");
  });

  test("all ejected: still tried, soonest-to-return first; success clears ejection", () => {
    const clock = new ManualClock();
    const pool = createUpstreamPool(urls, clock, 1_000);
    const [a, b, c] = pool.all;
    pool.failed(c!);
    clock.advance(10);
    pool.failed(a!);
    clock.advance(10);
    pool.failed(b!);
    expect(labels(pool.plan())).toBe("cab");
    pool.succeeded(b!);
    expect(labels(pool.plan())).toBe("bca");
  });

  test("a single upstream or ejectMs=0 never ejects", () => {
    const one = createUpstreamPool([urls[0]!], new ManualClock(), 1_000);
    one.failed(one.all[0]!);
    expect(one.isEjected(one.all[0]!)).toBe(false);
    const off = createUpstreamPool(urls, new ManualClock(), 0);
    off.failed(off.all[0]!);
    expect(labels(off.plan())).toBe("abc");
  });
});
