/**
 * A demo client, written against the wire protocol like token.place's client: pick a node with
 * `GET /next_server`, encrypt the chat history for that node's key, drop it at `POST /faucet`,
 * then collect the answer (`POST /retrieve`) or drain the stream (`POST /stream/retrieve`).
 */
import { decryptJson, decryptText, encryptJson, generateKeyPair, type AesMode, type ChatMessage, type DemoKeyPair, type Envelope } from "./crypto.ts";
import { isChatHistory } from "./fake-model.ts";
import { callJson, sleep, type Json, type WireTap } from "./http.ts";

export interface DemoClientOptions {
  relayUrl: string;
  keys?: DemoKeyPair;
  mode?: AesMode;
  wireTap?: WireTap;
  /** Pause before re-polling after an empty answer (held polls already waited). Default 10 ms. */
  retryDelayMs?: number;
}

export interface ChatOptions {
  stream: boolean;
  /** Bound on the whole exchange, from picking a node to the last chunk. */
  timeoutMs?: number;
  /** Gives up early (e.g. the demo's node was refused); the timeout still applies. */
  signal?: AbortSignal;
  /** Called with each decrypted chunk as it arrives (streaming only). */
  onChunk?: (text: string, index: number) => void;
}

export interface ChatResult {
  serverKey: string;
  /** The sealed job exactly as it went to /faucet (for "the relay saw only this" checks). */
  sent: Envelope;
  text: string;
  /** Decrypted stream chunks in arrival order (empty for a single answer). */
  chunks: string[];
  /** performance.now() marks. */
  faucetSentAt: number;
  faucetAckedAt: number;
  firstResultAt: number;
  doneAt: number;
  /** How many /retrieve or /stream/retrieve calls it took. */
  polls: number;
}

const isEnvelope = (v: unknown): v is Envelope =>
  v !== null && typeof v === "object" && ["chat_history", "cipherkey", "iv"].every((k) => typeof (v as Json)[k] === "string");

export class DemoClient {
  readonly publicKeyB64: string;

  private constructor(
    private readonly opts: DemoClientOptions,
    private readonly keys: DemoKeyPair,
  ) {
    this.publicKeyB64 = keys.publicKeyB64;
  }

  static async create(opts: DemoClientOptions): Promise<DemoClient> {
    return new DemoClient(opts, opts.keys ?? (await generateKeyPair()));
  }

  private async call(method: "GET" | "POST", path: string, body: Json | undefined, signal: AbortSignal): Promise<Json> {
    const { status, json } = await callJson(this.opts.relayUrl, method, path, body, { signal, timeoutMs: 10_000 });
    this.opts.wireTap?.({ from: "client", method, path, status, ...(body ? { request: body } : {}), response: json });
    if (status !== 200) throw new Error(`${method} ${path} answered ${status}: ${JSON.stringify(json)}`);
    return json;
  }

  /** GET /next_server until a node is registered (the relay answers "No servers" with a 200). */
  async pickServer(signal: AbortSignal): Promise<string> {
    for (;;) {
      const res = await this.call("GET", "/next_server", undefined, signal);
      if (typeof res.server_public_key === "string") return res.server_public_key;
      await sleep(50, signal);
      signal.throwIfAborted();
    }
  }

  async chat(history: ChatMessage[], opts: ChatOptions): Promise<ChatResult> {
    const deadline = AbortSignal.timeout(opts.timeoutMs ?? 20_000);
    const signal = opts.signal ? AbortSignal.any([opts.signal, deadline]) : deadline;
    const serverKey = await this.pickServer(signal);
    const sent = await encryptJson(serverKey, history, this.opts.mode);
    const job: Json = { server_public_key: serverKey, ...sent, client_public_key: this.publicKeyB64 };
    if (opts.stream) job.stream = true;
    const faucetSentAt = performance.now();
    await this.call("POST", "/faucet", job, signal);
    const faucetAckedAt = performance.now();
    const base = { serverKey, sent, faucetSentAt, faucetAckedAt };
    return opts.stream ? { ...base, ...(await this.drainStream(signal, opts.onChunk)) } : { ...base, ...(await this.retrieve(signal)) };
  }

  private async retrieve(signal: AbortSignal) {
    for (let polls = 1; ; polls++) {
      const res = await this.call("POST", "/retrieve", { client_public_key: this.publicKeyB64 }, signal);
      if (isEnvelope(res)) {
        const at = performance.now();
        const history = await decryptJson(this.keys.privateKey, res);
        if (!isChatHistory(history)) throw new Error("answer is not a chat history");
        const text = history[history.length - 1]?.content ?? "";
        return { text, chunks: [], firstResultAt: at, doneAt: performance.now(), polls };
      }
      await sleep(this.opts.retryDelayMs ?? 10, signal);
      signal.throwIfAborted();
    }
  }

  private async drainStream(signal: AbortSignal, onChunk?: (text: string, index: number) => void) {
    const chunks: string[] = [];
    let sessionId: string | undefined;
    let firstResultAt = 0;
    for (let polls = 1; ; polls++) {
      const res = await this.call("POST", "/stream/retrieve", { client_public_key: this.publicKeyB64 }, signal);
      if (res.stream === true && Array.isArray(res.chunks)) {
        // A new session id mid-stream would mean a newer request replaced ours: never mix answers.
        if (sessionId !== undefined && res.session_id !== sessionId) throw new Error("stream session changed mid-stream");
        sessionId = String(res.session_id);
        for (const chunk of res.chunks) {
          if (!isEnvelope(chunk)) throw new Error("stream chunk is not an encrypted envelope");
          if (!firstResultAt) firstResultAt = performance.now();
          const text = await decryptText(this.keys.privateKey, chunk);
          chunks.push(text);
          onChunk?.(text, chunks.length - 1);
        }
        if (res.final === true) return { text: chunks.join(""), chunks, firstResultAt, doneAt: performance.now(), polls };
        if (res.chunks.length > 0) continue;
      }
      await sleep(this.opts.retryDelayMs ?? 10, signal);
      signal.throwIfAborted();
    }
  }
}
