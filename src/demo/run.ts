/**
 * `npm run demo`: one compute node and one client talk through a relay with real end-to-end
 * encryption, once streamed and once as a single answer, narrating what crossed the wire.
 *
 * RELAY_URL=http://host:port uses a running relay; otherwise a relay child process is started on
 * a free loopback port (it inherits this environment). The node sends TOKEN_PLACE_RELAY_SERVER_TOKEN
 * (or the first of TOKEN_PLACE_RELAY_SERVER_TOKENS) as X-Relay-Server-Token, the relay's own setting.
 * Exit code 0 when both exchanges decrypted to the expected answer, 1 otherwise.
 */
import { DemoClient, type ChatResult } from "./client.ts";
import type { ChatMessage } from "./crypto.ts";
import { fakeAnswer } from "./fake-model.ts";
import { preview, type WireRecord } from "./http.ts";
import { DemoNode, type NodeEvent } from "./node.ts";
import { startRelay, type ChildServer } from "./relay-process.ts";

const t0 = performance.now();
const stamp = () => `[${((performance.now() - t0) / 1000).toFixed(3)}s]`;
const say = (who: string, text: string) => console.log(`${stamp()} ${who.padEnd(6)} ${text}`);
const ms = (a: number, b: number) => `${(b - a).toFixed(1)} ms`;

/** Narrates the interesting bodies: ciphertext shown only as length + prefix. */
function narrateWire(r: WireRecord): void {
  const req = r.request ?? {};
  const res = r.response;
  switch (r.path) {
    case "/faucet":
      say("wire", `client -> relay POST /faucet ${r.status}: chat_history ${preview(req.chat_history)}, cipherkey ${preview(req.cipherkey, 12)}, iv ${preview(req.iv, 8)}${req.stream ? ", stream: true" : ""}`);
      break;
    case "/sink":
      if (typeof res.chat_history === "string")
        say("wire", `relay -> node  /sink answer: chat_history ${preview(res.chat_history)} (the same opaque bytes)${res.stream ? `, stream_session_id ${String(res.stream_session_id)}` : ""}`);
      break;
    case "/source":
      say("wire", `node -> relay  POST /source ${r.status}: chat_history ${preview(req.chat_history)}`);
      break;
    case "/stream/source": {
      const chunk = req.chunk as Record<string, unknown> | undefined;
      say("wire", `node -> relay  POST /stream/source ${r.status}: chunk.chat_history ${preview(chunk?.chat_history, 16)}${req.final ? ", final: true" : ""}`);
      break;
    }
    case "/stream/retrieve":
      if (Array.isArray(res.chunks) && res.chunks.length > 0)
        say("wire", `relay -> client /stream/retrieve: ${res.chunks.length} encrypted chunk(s)${res.final ? ", final: true" : ""}`);
      break;
    case "/retrieve":
      if (typeof res.chat_history === "string") say("wire", `relay -> client /retrieve: chat_history ${preview(res.chat_history)}`);
      break;
  }
}

/** Aborted when the node cannot work at all, so the client stops waiting for it. */
const fatal = new AbortController();

async function exchange(client: DemoClient, jobs: NodeEvent[], prompt: string, stream: boolean): Promise<boolean> {
  const history: ChatMessage[] = [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: prompt },
  ];
  console.log(`\n=== ${stream ? "Streamed" : "Single-answer"} exchange ===`);
  say("client", `plaintext prompt: ${JSON.stringify(prompt)} (encrypting for the node's public key)`);
  const result: ChatResult = await client.chat(history, {
    stream,
    timeoutMs: 20_000,
    signal: fatal.signal,
    onChunk: (text, i) => say("client", `decrypted chunk #${i + 1}: ${JSON.stringify(text)}`),
  });
  const job = jobs.shift();
  if (job) say("timing", `job reached the node ${ms(result.faucetSentAt, job.at)} after the client sent /faucet (faucet acked in ${ms(result.faucetSentAt, result.faucetAckedAt)})`);
  say("timing", `first ${stream ? "chunk" : "answer"} decrypted ${ms(result.faucetSentAt, result.firstResultAt)} after /faucet; done after ${ms(result.faucetSentAt, result.doneAt)} (${result.polls} poll(s))`);
  say("client", `decrypted answer: ${JSON.stringify(result.text)}`);
  const ok = result.text === fakeAnswer(history) && job?.detail === prompt;
  say("check", ok ? "OK: both ends decrypted; the relay only carried ciphertext" : "FAILED: answer or prompt mismatch");
  return ok;
}

async function main(): Promise<number> {
  let relay: ChildServer | undefined;
  let node: DemoNode | undefined;
  try {
    let url = process.env.RELAY_URL;
    if (url) {
      say("relay", `using the running relay at ${url}`);
    } else {
      relay = await startRelay();
      url = relay.url;
      say("relay", `started a relay child process (pid ${relay.pid}) at ${url}`);
    }
    const token = process.env.TOKEN_PLACE_RELAY_SERVER_TOKEN || process.env.TOKEN_PLACE_RELAY_SERVER_TOKENS?.split(",")[0]?.trim();
    const jobs: NodeEvent[] = [];
    node = await DemoNode.create({
      relayUrl: url,
      ...(token ? { token } : {}),
      chunkDelayMs: 30,
      wireTap: narrateWire,
      onEvent: (e) => {
        if (e.type === "job") {
          jobs.push(e);
          say("node", `decrypted the job with its private key: prompt ${JSON.stringify(e.detail)}`);
        } else if (e.type === "error") {
          say("node", `error: ${e.detail}`);
          if (e.detail.includes(" 401:")) fatal.abort(new Error("the relay refused the node: set TOKEN_PLACE_RELAY_SERVER_TOKEN to the relay's token"));
        }
      },
    });
    say("node", `generated an RSA-2048 key pair; public key (base64 PEM) ${preview(node.publicKeyB64, 20)}`);
    void node.start();
    say("node", "polling POST /sink (the relay holds the poll open until a job arrives)");
    const client = await DemoClient.create({ relayUrl: url, wireTap: narrateWire });
    say("client", `generated its own key pair; public key ${preview(client.publicKeyB64, 20)}`);

    const okStream = await exchange(client, jobs, "stream me a tiny answer please", true);
    const okSingle = await exchange(client, jobs, "now answer in one piece", false);
    console.log(`\n${okStream && okSingle ? "Demo passed" : "Demo FAILED"} in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    return okStream && okSingle ? 0 : 1;
  } catch (err) {
    const cause = fatal.signal.aborted ? fatal.signal.reason : err;
    console.error(`demo failed: ${cause instanceof Error ? cause.message : String(cause)}`);
    if (relay) console.error(`relay output (last lines):\n${relay.output.slice(-10).join("\n")}`);
    return 1;
  } finally {
    await node?.stop();
    await relay?.stop();
  }
}

process.exitCode = await main();
