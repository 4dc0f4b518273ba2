/**
 * The chat page in a real browser: Debian's Chromium, headless, driven by playwright-core (which
 * never downloads a browser: it is pointed at the installed one), against the COMPILED relay
 * (dist/tokenplace-relay-linux-x64) with the UNMODIFIED upstream server.py (mock LLM) registered
 * as a compute node, exactly as ../shared/peers/tokenplace-e2e.sh runs it.
 *
 * In order, on one relay and one tab: the "no node online" message before any node registered;
 * then server.py registers and a prompt typed into the page and sent with Enter comes back as the
 * decrypted mock answer; a second turn of the same conversation; a cancel while the node is
 * paused (SIGSTOP: a node too slow to answer), after which the node answers again; keyboard,
 * labels, phone width and dark mode; Send-to-answer time (median of 5) and the compressed page
 * size, measured in the browser and printed. Throughout: no console error, no page error, no CSP
 * violation, no request to another origin; and the relay only ever saw ciphertext: neither its
 * log (at debug) nor any request or response body the browser exchanged holds a prompt or an
 * answer. The answered chat is saved as test-artifacts/web/chat.png (UPDATE_DOCS_SCREENSHOT=1
 * also writes docs/chat.png, the README's picture).
 *
 * Needs the built binary, a Chromium and ../shared/peers with Python >= 3.11: missing, CI=true
 * fails, elsewhere the tests are skipped with a visible message.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Browser, BrowserContext, ConsoleMessage, Page } from "playwright-core";
import { peersProblems } from "../../bench/peers.ts";
import { ROOT, Spawned, X64, binaryProblem, gate, gatedTest } from "../container/harness.ts";
import { preparePeers, startComputeNode, type ComputeNode } from "./peers-node.ts";

/** Debian's package first (what .ci/run installs); CHROMIUM_PATH or Google Chrome elsewhere. */
function findChromium(): string | undefined {
  const candidates = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable"];
  return candidates.find((p): p is string => !!p && existsSync(p));
}

function playwrightProblem(): string | undefined {
  try {
    require.resolve("playwright-core");
    return undefined;
  } catch {
    return "playwright-core is not installed (npm ci)";
  }
}

// Functions handed to page.evaluate / waitForFunction run in the page, where these exist; this
// file is type-checked with Bun's globals, not the DOM's (the page's own code has a DOM tsconfig).
declare const document: any, window: any, getComputedStyle: any, MutationObserver: any;
type HTMLButtonElement = any;
type HTMLSelectElement = any;
type PerformanceNavigationTiming = any;
type PerformanceResourceTiming = any;

const CHROMIUM = findChromium();
const g = gate("chat page in a browser", [
  binaryProblem(X64),
  CHROMIUM ? undefined : "no Chromium (/usr/bin/chromium: scripts/install-system-deps.sh installs it; or set CHROMIUM_PATH)",
  playwrightProblem(),
  ...peersProblems(),
]);

const ARTIFACTS = join(ROOT, "test-artifacts/web");
const MOCK_ANSWER = "Mock Response: The capital of France is Paris.";
/** Every prompt typed in this file (each one different): none may reach the relay in plaintext. */
const prompts: string[] = [];
const prompt = (text: string) => {
  if (prompts.includes(text)) throw new Error(`prompt used twice: ${text}`);
  prompts.push(text);
  return text;
};

interface Seen {
  method: string;
  url: string;
  body: string | null;
}

let relay: Spawned;
let origin = "";
let browser: Browser;
let context: BrowserContext;
let page: Page;
let node: ComputeNode | undefined;
const requests: Seen[] = [];
const responseBodies: string[] = [];
const consoleProblems: { text: string; url: string; phase: string }[] = [];
const pageErrors: string[] = [];
let phase = "load";
/**
 * Console lines Chromium itself writes for an HTTP error or a refused connection ("Failed to load
 * resource: ..."), which the relay's refusals cause by design: allowed only in the phase that
 * provokes them, for that route, with that status. Any other console error or warning fails.
 */
const allowed: { phase: string; path: string; text: RegExp }[] = [];
const expectConsole = (path: string, text: RegExp) => allowed.push({ phase, path, text });

async function waitForAnswers(count: number, timeoutMs = 30_000) {
  await page.waitForFunction((n) => document.querySelectorAll("#log .msg.assistant").length >= n, count, { timeout: timeoutMs });
}
const assistantTexts = () => page.locator("#log .msg.assistant .text").allTextContents();

describe("the chat page in Chromium, against the compiled relay and the unmodified server.py", () => {
  beforeAll(async () => {
    if (!g.ok) return;
    relay = new Spawned([X64], {
      env: { RELAY_PORT: "0", RELAY_HOST: "127.0.0.1", TOKENPLACE_RELAY_ONLY: "true", LOG_LEVEL: "debug" },
    });
    const port = await relay.waitListening(20_000);
    origin = `http://127.0.0.1:${port}`;
    mkdirSync(ARTIFACTS, { recursive: true });

    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM!, headless: true });
    context = await browser.newContext({ viewport: { width: 920, height: 760 }, colorScheme: "light" });
    page = await context.newPage();
    // A CSP violation is also logged to the console; this catches any the console might not show.
    await page.addInitScript(() => {
      const w = window as unknown as { __csp: string[] };
      w.__csp = [];
      document.addEventListener("securitypolicyviolation", (e: { violatedDirective: string; blockedURI: string }) => w.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    page.on("console", (m: ConsoleMessage) => {
      if (m.type() === "error" || m.type() === "warning") consoleProblems.push({ text: m.text(), url: m.location().url, phase });
    });
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    page.on("request", (r) => requests.push({ method: r.method(), url: r.url(), body: r.postData() }));
    page.on("response", async (r) => {
      if (!r.url().includes("/api/v1/relay/")) return;
      try {
        responseBodies.push(await r.text());
      } catch {
        // aborted (a cancelled wait): nothing arrived
      }
    });
  }, 60_000);

  afterAll(async () => {
    await node?.stop();
    await browser?.close().catch(() => {});
    await relay?.stop();
  });

  gatedTest(g, "loads with its security headers; with no node registered, Send says no node is online", async () => {
    const res = await page.goto(`${origin}/`);
    expect(res?.status()).toBe(200);
    const h = res!.headers();
    expect(h["content-security-policy"]).toContain("script-src 'self'");
    expect(h["content-security-policy"]).toContain("connect-src 'self'");
    expect(h["content-security-policy"]).toContain("frame-ancestors 'none'");
    expect(h["content-security-policy"]).not.toContain("unsafe-");
    expect(h["x-content-type-options"]).toBe("nosniff");
    expect(h["referrer-policy"]).toBe("no-referrer");
    expect(h["cache-control"]).toBe("no-cache");
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "No compute node online", undefined, { timeout: 10_000 });

    phase = "no-node";
    expectConsole("/api/v1/relay/servers/next", /status of 503/);
    const text = prompt("Is anybody there?");
    await page.getByLabel("Message").fill(text);
    await page.getByLabel("Message").press("Enter");
    await page.locator("#problem").waitFor({ state: "visible", timeout: 10_000 });
    expect(await page.locator("#problem-text").textContent()).toContain("No compute node is online right now");
    // The text is handed back for a later try, and nothing joined the conversation.
    expect(await page.getByLabel("Message").inputValue()).toBe(text);
    expect(await page.locator("#log .msg").count()).toBe(0);
    phase = "load";
  }, 30_000);

  gatedTest(g, "with server.py registered, a typed prompt comes back as the decrypted mock answer", async () => {
    const peers = await preparePeers();
    node = await startComputeNode(peers, origin);
    await node.registered(90_000);
    await page.reload();
    await page.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("1 node online"), undefined, { timeout: 15_000 });
    expect(await page.getByLabel("Model").inputValue()).toBe("qwen3-8b-instruct");
    expect(await page.getByLabel("Context").inputValue()).toBe("8k-fast");

    await page.getByLabel("Message").fill(prompt("What is the capital of France?"));
    await page.getByRole("button", { name: "Send", exact: true }).click();
    await waitForAnswers(1);
    expect(await assistantTexts()).toEqual([MOCK_ANSWER]);
    expect(await page.locator("#problem").isHidden()).toBe(true);
    expect(await page.getByLabel("Message").inputValue()).toBe("");
    // Focus stays in the box for the next message.
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("prompt");
  }, 180_000);

  gatedTest(g, "a second turn in the same conversation", async () => {
    await page.getByLabel("Message").fill(prompt("And of Germany?"));
    await page.getByLabel("Message").press("Enter");
    await waitForAnswers(2);
    expect(await page.locator("#log .msg").evaluateAll((els) => els.map((e) => (e.classList.contains("user") ? "user" : "assistant")))).toEqual([
      "user",
      "assistant",
      "user",
      "assistant",
    ]);
    expect(await assistantTexts()).toEqual([MOCK_ANSWER, MOCK_ANSWER]);
    await page.screenshot({ path: join(ARTIFACTS, "chat.png") });
    if (process.env.UPDATE_DOCS_SCREENSHOT === "1") copyFileSync(join(ARTIFACTS, "chat.png"), join(ROOT, "docs/chat.png"));
  }, 60_000);

  gatedTest(g, "Cancel stops a message the node has not answered, and the node answers the next one", async () => {
    phase = "cancel";
    node!.pause();
    try {
      const text = prompt("This one will be cancelled.");
      await page.getByLabel("Message").fill(text);
      await page.getByLabel("Message").press("Enter");
      await page.waitForFunction(() => document.getElementById("progress")?.textContent?.includes("Waiting for the node"), undefined, { timeout: 15_000 });
      const cancelled = page.waitForResponse((r) => r.url().endsWith("/api/v1/relay/requests/cancel"));
      await page.getByRole("button", { name: "Cancel" }).click();
      expect((await cancelled).status()).toBe(200);
      await page.locator("#problem").waitFor({ state: "visible" });
      expect(await page.locator("#problem-text").textContent()).toContain("Cancelled");
      expect(await page.getByLabel("Message").inputValue()).toBe(text);
      expect(await page.locator("#log .msg").count()).toBe(4);
    } finally {
      node!.resume();
    }
    phase = "after-cancel";
    await page.getByLabel("Message").fill(prompt("Still there?"));
    await page.getByLabel("Message").press("Enter");
    await waitForAnswers(3);
    expect(await assistantTexts()).toEqual([MOCK_ANSWER, MOCK_ANSWER, MOCK_ANSWER]);
    expect(await page.locator("#problem").isHidden()).toBe(true);
  }, 60_000);


  /** Sends `text` and returns the problem the page shows; the text must come back to the box. */
  async function sendExpectingProblem(text: string): Promise<string> {
    const before = await page.locator("#log .msg").count();
    await page.getByLabel("Message").fill(text);
    await page.getByLabel("Message").press("Enter");
    await page.locator("#problem").waitFor({ state: "visible", timeout: 20_000 });
    await page.waitForFunction(() => document.getElementById("cancel")?.hasAttribute("disabled"));
    expect(await page.getByLabel("Message").inputValue()).toBe(text);
    expect(await page.locator("#log .msg").count()).toBe(before);
    return (await page.locator("#problem-text").textContent()) ?? "";
  }

  /** Runs `fn` while the browser answers `pattern` with `handler`; the route is always removed. */
  async function withRoute(pattern: string, handler: Parameters<Page["route"]>[1], fn: () => Promise<void>) {
    await page.route(pattern, handler);
    try {
      await fn();
    } finally {
      await page.unroute(pattern);
    }
  }

  gatedTest(g, "every failure has a plain message: no node for the model, rate limited (with the wait), unreachable, node gone, expired, decryption failed", async () => {
    // A model the list no longer offers (a stale picker): the real relay finds no node for it.
    phase = "no-model";
    expectConsole("/api/v1/relay/servers/next", /status of 503/);
    await page.evaluate(() => {
      const select = document.getElementById("model") as HTMLSelectElement;
      const o = document.createElement("option");
      o.value = "no-such-model";
      o.textContent = "no-such-model";
      select.append(o);
      select.value = "no-such-model";
    });
    expect(await sendExpectingProblem(prompt("Which model?"))).toContain("No online node serves no-such-model");
    await page.getByLabel("Model").selectOption("qwen3-8b-instruct");

    // The relay's public rate limit (429 rate_limit_exceeded with Retry-After): the wait is shown and Send waits.
    phase = "rate-limited";
    expectConsole("/api/v1/relay/requests", /status of 429/);
    const tooMany = { error: { message: "Rate limit exceeded", type: "rate_limit_error", code: "rate_limit_exceeded", param: null } };
    await withRoute(
      "**/api/v1/relay/requests",
      (route) => route.fulfill({ status: 429, headers: { "Retry-After": "3", "Content-Type": "application/json" }, body: JSON.stringify(tooMany) }),
      async () => expect(await sendExpectingProblem(prompt("Too fast?"))).toContain("You can send again in 3 seconds"),
    );
    expect(await page.locator("#send").textContent()).toMatch(/^Send \([1-3] s\)$/);
    expect(await page.locator("#send").isDisabled()).toBe(true);
    await page.waitForFunction(() => document.getElementById("send")?.textContent === "Send", undefined, { timeout: 6_000 });
    expect(await page.locator("#send").isDisabled()).toBe(false);

    phase = "unreachable";
    expectConsole("/api/v1/relay/servers/next", /net::ERR_/);
    await withRoute(
      "**/api/v1/relay/servers/next*",
      (route) => route.abort("connectionrefused"),
      async () => expect(await sendExpectingProblem(prompt("Hello?"))).toContain("The relay cannot be reached"),
    );

    phase = "node-gone";
    expectConsole("/api/v1/relay/requests", /status of 404/);
    await withRoute(
      "**/api/v1/relay/requests",
      (route) => route.fulfill({ status: 404, contentType: "application/json", body: JSON.stringify({ error: { message: "Server with the specified public key not found", code: 404 } }) }),
      async () => expect(await sendExpectingProblem(prompt("Gone?"))).toContain("went offline"),
    );

    phase = "expired";
    expectConsole("/api/v1/relay/responses/retrieve", /status of 410/);
    const expired = { error: { message: "Request expired", code: "expired", status: "expired", reason: "pending_request_ttl_exceeded" } };
    await withRoute(
      "**/api/v1/relay/responses/retrieve",
      (route) => route.fulfill({ status: 410, contentType: "application/json", body: JSON.stringify(expired) }),
      async () => expect(await sendExpectingProblem(prompt("Too late?"))).toContain("No node answered in time"),
    );

    // An answer that does not open with this tab's key (here: its wrapped key swapped for another).
    // The node may still be busy with the message whose wait was cut short above (one at a time):
    // the page then waits for it (servers/next answers 503 no_available_capacity meanwhile).
    phase = "tampered";
    expectConsole("/api/v1/relay/servers/next", /status of 503/);
    await withRoute(
      "**/api/v1/relay/responses/retrieve",
      async (route) => {
        const real = await route.fetch();
        const body = (await real.json()) as Record<string, unknown>;
        if (real.status() === 200 && typeof body.cipherkey === "string") {
          const bytes = Buffer.from(body.cipherkey, "base64");
          bytes[bytes.length - 1]! ^= 0x01;
          body.cipherkey = bytes.toString("base64");
        }
        await route.fulfill({ response: real, body: JSON.stringify(body) });
      },
      async () => expect(await sendExpectingProblem(prompt("Scrambled?"))).toContain("could not be decrypted"),
    );

    // And the page is still good for a normal exchange afterwards.
    phase = "recovered";
    await page.getByLabel("Message").fill(prompt("All good again?"));
    await page.getByLabel("Message").press("Enter");
    await waitForAnswers(4);
    expect(await page.locator("#problem").isHidden()).toBe(true);
  }, 90_000);

  gatedTest(g, "keyboard and screen reader: labels, focus order, Enter and Shift+Enter", async () => {
    for (const label of ["Model", "Context", "Message"]) expect(await page.getByLabel(label).count()).toBe(1);
    expect(await page.getByRole("log").count()).toBe(1);
    expect(await page.getByRole("button", { name: "Send", exact: true }).isVisible()).toBe(true);
    // Tab walks the controls in reading order.
    await page.locator("#model").focus();
    const order: string[] = [];
    for (let i = 0; i < 5; i++) {
      order.push(await page.evaluate(() => document.activeElement?.id ?? ""));
      await page.keyboard.press("Tab");
    }
    expect(order).toEqual(["model", "tier", "new-chat", "prompt", "send"]);
    // Shift+Enter is a new line, not a send.
    await page.getByLabel("Message").fill("");
    await page.getByLabel("Message").press("a");
    await page.getByLabel("Message").press("Shift+Enter");
    await page.getByLabel("Message").press("b");
    expect(await page.getByLabel("Message").inputValue()).toBe("a\nb");
    expect(await page.locator("#log .msg").count()).toBe(8);
    await page.getByLabel("Message").fill("");
  }, 30_000);

  gatedTest(g, "readable at phone width, in light and dark", async () => {
    await page.setViewportSize({ width: 360, height: 740 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    const light = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await page.emulateMedia({ colorScheme: "dark" });
    const dark = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(dark).not.toBe(light);
    await page.screenshot({ path: join(ARTIFACTS, "chat-phone-dark.png") });
    await page.emulateMedia({ colorScheme: "light" });
    await page.setViewportSize({ width: 920, height: 760 });
  }, 30_000);

  gatedTest(g, "measured in the browser: compressed page size and Send-to-answer time (median of 5)", async () => {
    phase = "measure";
    await page.reload();
    await page.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("1 node online"), undefined, { timeout: 15_000 });
    const sizes = await page.evaluate(() => {
      const perf = (window as { performance: { getEntriesByType(t: string): any[] } }).performance;
      const nav = perf.getEntriesByType("navigation")[0] as PerformanceNavigationTiming;
      const res = perf.getEntriesByType("resource") as PerformanceResourceTiming[];
      const assets = res.filter((r) => new URL(r.name).pathname.startsWith("/assets/"));
      return {
        page: nav.encodedBodySize,
        assets: assets.map((r) => ({ path: new URL(r.name).pathname, encoded: r.encodedBodySize, decoded: r.decodedBodySize })),
      };
    });
    const encodedTotal = sizes.page + sizes.assets.reduce((n, a) => n + a.encoded, 0);
    const decodedTotal = sizes.assets.reduce((n, a) => n + a.decoded, 0);
    const accept = (await page.evaluate(async () => (await fetch("/relay/status")).headers.get("content-type"))) ?? "";
    expect(accept).toContain("application/json");
    // The icon is fetched by the browser on its own schedule; the script and stylesheet block the page.
    expect(sizes.assets.filter((a) => a.path.endsWith(".js") || a.path.endsWith(".css")).length).toBe(2);
    expect(encodedTotal).toBeLessThan(100 * 1024);

    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      await page.getByLabel("Message").fill(prompt(`Timing run ${i}`));
      const ms = await page.evaluate(
        () =>
          new Promise<number>((resolve, reject) => {
            const log = document.getElementById("log")!;
            const before = log.querySelectorAll(".msg.assistant").length;
            const t0 = performance.now();
            const obs = new MutationObserver(() => {
              if (log.querySelectorAll(".msg.assistant").length > before) {
                obs.disconnect();
                resolve(performance.now() - t0);
              } else if (!document.getElementById("problem")!.hidden) {
                obs.disconnect();
                reject(new Error(document.getElementById("problem-text")!.textContent ?? "problem"));
              }
            });
            obs.observe(document.body, { subtree: true, childList: true, attributes: true });
            (document.getElementById("send") as HTMLButtonElement).click();
          }),
      );
      times.push(ms);
    }
    const sorted = [...times].sort((a, b) => a - b);
    const median = sorted[2]!;
    console.log(
      `CHAT_PAGE_MEASURE ${JSON.stringify({
        pageEncodedBytes: encodedTotal,
        page: sizes.page,
        assets: sizes.assets,
        assetsDecodedBytes: decodedTotal,
        sendToAnswerMs: times.map((t) => Math.round(t)),
        medianMs: Math.round(median),
      })}`,
    );
    // Loose on purpose (shared machines): a relay without held polls and retrieves takes ~30 s.
    expect(median).toBeLessThan(10_000);
  }, 120_000);

  gatedTest(g, "no console error, no page error, no CSP violation, no request to another origin", async () => {
    const csp = await page.evaluate(() => (window as unknown as { __csp: string[] }).__csp);
    expect(csp).toEqual([]);
    expect(pageErrors).toEqual([]);
    // The only errors Chromium may log are its own "Failed to load resource" lines for the relay's
    // expected 503 (no node online) while there was no node; nothing else, in any phase.
    const unexpected = consoleProblems.filter(
      (m) => !allowed.some((a) => a.phase === m.phase && m.url !== "" && new URL(m.url).pathname === a.path && a.text.test(m.text)),
    );
    console.log(`browser console: ${consoleProblems.length} line(s), all Chromium's own for provoked refusals: ${JSON.stringify(consoleProblems.map((m) => `${m.phase}: ${m.text}`))}`);
    expect(unexpected).toEqual([]);
    expect(consoleProblems.filter((m) => /Content Security Policy|Trusted Type/i.test(m.text))).toEqual([]);
    const foreign = requests.filter((r) => !r.url.startsWith(`${origin}/`));
    expect(foreign).toEqual([]);
  });

  gatedTest(g, "the relay only ever saw ciphertext: no prompt or answer in its log or in any body", async () => {
    expect(prompts.length).toBeGreaterThanOrEqual(8);
    const posts = requests.filter((r) => r.method === "POST");
    expect(posts.some((r) => r.url.endsWith("/api/v1/relay/requests"))).toBe(true);
    expect(responseBodies.some((b) => b.includes('"chat_history"'))).toBe(true);
    const needles = [...prompts, MOCK_ANSWER, "capital of France", "Paris"];
    const bodies = [...posts.map((r) => r.body ?? ""), ...requests.map((r) => decodeURIComponent(r.url)), ...responseBodies];
    for (const n of needles) {
      expect({ needle: n, inBody: bodies.some((b) => b.includes(n)) }).toEqual({ needle: n, inBody: false });
    }
    // The relay logged this run (at debug), and none of it.
    const log = relay.stdout + relay.stderr;
    expect(log).toContain('"route":"/api/v1/relay/requests"');
    for (const n of needles) expect({ needle: n, inLog: log.includes(n) }).toEqual({ needle: n, inLog: false });
  });
});
