// Several relay processes on one Valkey/Redis act as one relay, and neither a relay crash nor a
// datastore restart loses what was queued or answered. Real processes (the compiled binary), a
// real redis-server, real sockets.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, peersProblems, runTokenplaceE2E } from "../../bench/peers.ts";
import { binaryProblem, gate, gatedTest, X64 } from "../container/harness.ts";
import { spawnRelay, ROOT, type Spawned } from "../helpers/spawn.ts";
import { fakeKey } from "../helpers/relay.ts";
import { redisSkipReason, startRedis, type RedisServer } from "../helpers/redis.ts";
import { NODE_CAPS, PROTOCOL, rid } from "../v1/helpers.ts";

const BIN = `${ROOT}dist/tokenplace-relay-linux-x64`;
const TOKEN = "replica-token-0123456789";
const skip = redisSkipReason("test/state/replicas.test.ts");

type Json = Record<string, any>;
const post = async (base: string, path: string, body: unknown, node = false) => {
  const res = await fetch(`${base}/api/v1/relay/${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(node ? { "X-Relay-Server-Token": TOKEN } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Json };
};
const envelope = (serverKey: string, clientKey: string, requestId: string) => ({
  server_public_key: serverKey, client_public_key: clientKey, request_id: requestId, protocol: PROTOCOL, version: 1,
  chat_history: "Y2lwaGVy", cipherkey: "a2V5", iv: "aXY=", cancel_token: `proof-${requestId}`,
});
const answer = (clientKey: string, requestId: string) => ({ client_public_key: clientKey, request_id: requestId, protocol: PROTOCOL, version: 1, chat_history: "YW5zd2Vy", cipherkey: "azI=", iv: "aTI=" });

describe.skipIf(skip !== undefined)("relays sharing one datastore", () => {
  let redis: RedisServer;
  const relays: Spawned[] = [];
  const start = async (extra: Record<string, string> = {}) => {
    const relay = await spawnRelay(
      {
        TOKENPLACE_RELAY_ONLY: "true",
        TOKENPLACE_RELAY_STATE_BACKEND: "redis",
        TOKENPLACE_RELAY_REDIS_URL: `${redis.url}/0`,
        TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN,
        TOKEN_PLACE_API_V1_RELAY_POLL_WAIT_SECONDS: "5",
        RELAY_V1_RETRIEVE_HOLD_MS: "5000",
        LOG_LEVEL: "warn",
        ...extra,
      },
      { cmd: existsSync(BIN) ? [BIN] : undefined },
    );
    relays.push(relay);
    return relay;
  };
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(() => {
    for (const r of relays.splice(0)) r.kill("SIGKILL");
  });
  afterAll(async () => {
    await redis.stop();
  });

  test("a request posted on B wakes the node held on A; the answer posted on B is retrieved exactly once, from A", async () => {
    const [a, b] = [await start(), await start()];
    const node = fakeKey("node");
    const reg = await post(a.url, "servers/register", { server_public_key: node, capabilities: NODE_CAPS }, true);
    expect(reg.status).toBe(200);
    const held = post(a.url, "servers/poll", { server_public_key: node, capabilities: NODE_CAPS }, true);
    await Bun.sleep(200);
    const client = fakeKey("client");
    const id = rid();
    const posted = performance.now();
    expect((await post(b.url, "requests", envelope(node, client, id))).status).toBe(200);
    const work = await held;
    expect(work.body.request_id).toBe(id);
    // Woken through the datastore, not found by the re-check at the end of the 5 s hold.
    expect(performance.now() - posted).toBeLessThan(2_500);
    const retrieve = post(a.url, "responses/retrieve", { client_public_key: client, request_id: id });
    await Bun.sleep(200);
    const answered = performance.now();
    expect((await post(b.url, "responses", answer(client, id), true)).status).toBe(200);
    const got = await retrieve;
    expect(performance.now() - answered).toBeLessThan(2_500);
    expect(got.status).toBe(200);
    expect(got.body.chat_history).toBe("YW5zd2Vy");
    expect((await post(b.url, "responses/retrieve", { client_public_key: client, request_id: id })).status).toBe(404);
  }, 30_000);

  test("a cancel on A is seen by the node's control on B", async () => {
    const [a, b] = [await start(), await start()];
    const node = fakeKey("node");
    const { body } = await post(a.url, "servers/register", { server_public_key: node, capabilities: NODE_CAPS }, true);
    const client = fakeKey("client");
    const id = rid();
    await post(a.url, "requests", envelope(node, client, id));
    expect((await post(b.url, "servers/poll", { server_public_key: node }, true)).body.request_id).toBe(id);
    const control = (url: string) => post(url, "servers/control", { server_public_key: node, request_id: id, control_credential: body.control_credential }, true);
    expect((await control(b.url)).body.status).toBe("active");
    expect((await post(a.url, "requests/cancel", { client_public_key: client, request_id: id, cancel_token: `proof-${id}` })).status).toBe(200);
    expect((await control(b.url)).body.status).toBe("cancelled");
  }, 30_000);

  test("a relay killed with SIGKILL and restarted still delivers what was queued and answered", async () => {
    const a = await start();
    const node = fakeKey("node");
    await post(a.url, "servers/register", { server_public_key: node, capabilities: NODE_CAPS }, true);
    const client = fakeKey("client");
    const [queued, answered] = [rid(), rid()];
    await post(a.url, "requests", envelope(node, client, answered));
    await post(a.url, "servers/poll", { server_public_key: node }, true);
    await post(a.url, "responses", answer(client, answered), true);
    await post(a.url, "requests", envelope(node, client, queued));
    a.kill("SIGKILL");
    await a.proc.exited;
    const again = await start();
    expect((await post(again.url, "servers/poll", { server_public_key: node }, true)).body.request_id).toBe(queued);
    const got = await post(again.url, "responses/retrieve", { client_public_key: client, request_id: answered });
    expect(got.status).toBe(200);
  }, 30_000);

  test("the datastore restarted mid-run: 503 state_unavailable fast, readiness off, then recovery without a relay restart", async () => {
    const a = await start({ RELAY_REDIS_COMMAND_TIMEOUT_MS: "500" });
    const node = fakeKey("node");
    await post(a.url, "servers/register", { server_public_key: node, capabilities: NODE_CAPS }, true);
    const client = fakeKey("client");
    const id = rid();
    await post(a.url, "requests", envelope(node, client, id));
    await redis.kill();
    const t0 = performance.now();
    const down = await post(a.url, "requests", envelope(node, client, rid()));
    expect(performance.now() - t0).toBeLessThan(3_000);
    expect(down.status).toBe(503);
    expect(down.body.error.type).toBe("state_unavailable");
    const health = await fetch(`${a.url}/healthz`);
    expect(health.status).toBe(503);
    expect(((await health.json()) as Json).failing).toContain("stateStore");
    await redis.start();
    let ready = false;
    for (let i = 0; i < 50 && !ready; i++) {
      ready = (await fetch(`${a.url}/healthz`)).status === 200;
      if (!ready) await Bun.sleep(100);
    }
    expect(ready).toBe(true);
    // AOF kept the queue: the request admitted before the outage is still there.
    expect((await post(a.url, "servers/poll", { server_public_key: node }, true)).body.request_id).toBe(id);
  }, 30_000);
});

/**
 * The unmodified peers through two relays behind one port: nginx round robin in front, so the
 * node's polls and the client's calls land on different replicas (a held poll on one is woken by
 * a request posted on the other).
 */
describe.skipIf(skip !== undefined)("unmodified peers through two replicas behind a round-robin front", () => {
  const peers = gate("token.place peers through two replicas", [binaryProblem(X64), ...peersProblems(), nginxProblem()]);
  const procs: { kill(): void }[] = [];
  let redis: RedisServer | undefined;
  afterAll(async () => {
    for (const p of procs) p.kill();
    await redis?.stop();
  });

  gatedTest(peers, "every round succeeds, back to back", async () => {
    redis = await startRedis();
    const env = {
      TOKENPLACE_RELAY_ONLY: "true",
      TOKENPLACE_RELAY_STATE_BACKEND: "redis",
      TOKENPLACE_RELAY_REDIS_URL: redis.url,
      TOKEN_PLACE_RELAY_SERVER_TOKEN: TOKEN,
      LOG_LEVEL: "warn",
    };
    const [a, b] = [await spawnRelay(env, { cmd: [X64] }), await spawnRelay(env, { cmd: [X64] })];
    procs.push({ kill: () => a.kill() }, { kill: () => b.kill() });
    const front = await startNginx([a.port, b.port]);
    procs.push(front);
    const result = await runTokenplaceE2E(front.port, 6, TOKEN, { timeoutMs: 200_000 });
    expect(result.summary).toContain("6/6 round trips ok");
    expect(result.code).toBe(0);
    // Holds woken across replicas: a round costs the crypto, not a poll_wait or a retrieve hold.
    expect(result.medianS).toBeLessThan(5);
    // Both replicas served traffic.
    for (const r of [a, b]) expect(r.lines.length).toBeGreaterThan(0);
  }, 240_000);
});

function nginxProblem(): string | undefined {
  return ["/usr/sbin/nginx", "/usr/bin/nginx"].some((p) => existsSync(p)) ? undefined : "nginx is not installed (apt-get install nginx)";
}

/** nginx from Debian as a plain round-robin HTTP front on a free loopback port, in its own prefix. */
async function startNginx(ports: number[]): Promise<{ port: number; kill(): void }> {
  const bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => existsSync(p))!;
  const dir = mkdtempSync(join(tmpdir(), "relay-nginx-"));
  const port = await freePort();
  const conf = `
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream relays { ${ports.map((p) => `server 127.0.0.1:${p};`).join(" ")} }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://relays;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 60s;
    }
  }
}`;
  writeFileSync(join(dir, "nginx.conf"), conf);
  const proc = Bun.spawn([bin, "-p", dir, "-c", join(dir, "nginx.conf"), "-g", "daemon off;"], { stdout: "ignore", stderr: "pipe" });
  for (let i = 0; i < 50; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/livez`);
      break;
    } catch {
      await Bun.sleep(100);
    }
  }
  // SIGTERM: the master stops its workers (SIGKILL would leave them running, orphaned, on the port).
  return { port, kill: () => proc.kill("SIGTERM") };
}
