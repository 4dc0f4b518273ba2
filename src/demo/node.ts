/**
 * A demo compute node, written against the wire protocol like token.place's server.py: it reaches
 * out to the relay (no inbound port), polls `POST /sink`, sleeps `next_ping_in_x_seconds`, decrypts
 * each job with its private key, runs the fake model and answers encrypted for the client.
 */
import { decryptJson, encryptJson, encryptText, generateKeyPair, type AesMode, type DemoKeyPair } from "./crypto.ts";
import { fakeAnswerPieces, isChatHistory, lastUserMessage } from "./fake-model.ts";
import { callJson, isAbort, sleep, type Json, type WireTap } from "./http.ts";

export interface NodeEvent {
  type: "polled" | "job" | "answered" | "chunk" | "error";
  /** performance.now() when it happened: the demo compares it with the client's clock. */
  at: number;
  /** For "job": the decrypted user prompt (only the node can read it). */
  detail: string;
  stream?: boolean;
}

export interface DemoNodeOptions {
  relayUrl: string;
  /** Sent as X-Relay-Server-Token on /sink, /source and /stream/source. */
  token?: string;
  keys?: DemoKeyPair;
  mode?: AesMode;
  /** Pause between streamed chunks so the stream is visibly incremental (default 0). */
  chunkDelayMs?: number;
  /** Per-request cap; above the relay's maximum hold (9 s), like server.py's 10 s. */
  requestTimeoutMs?: number;
  /** Upper bound on the relay's `next_ping_in_x_seconds` (default: obey it as sent). */
  maxSleepMs?: number;
  onEvent?: (event: NodeEvent) => void;
  wireTap?: WireTap;
}

const ERROR_BACKOFF_MS = 1_000;

export class DemoNode {
  readonly publicKeyB64: string;
  jobsHandled = 0;
  lastError: string | undefined;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;

  private constructor(
    private readonly opts: DemoNodeOptions,
    private readonly keys: DemoKeyPair,
  ) {
    this.publicKeyB64 = keys.publicKeyB64;
  }

  static async create(opts: DemoNodeOptions): Promise<DemoNode> {
    return new DemoNode(opts, opts.keys ?? (await generateKeyPair()));
  }

  /** Starts polling in the background; the returned promise never rejects. */
  start(): Promise<void> {
    this.loop ??= this.run().catch((err: unknown) => this.emit("error", `node loop crashed: ${String(err)}`));
    return this.loop;
  }

  /** Aborts any held poll and in-flight request, then waits for the loop to finish. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private emit(type: NodeEvent["type"], detail: string, stream?: boolean): void {
    if (type === "error") this.lastError = detail;
    this.opts.onEvent?.({ type, at: performance.now(), detail, ...(stream === undefined ? {} : { stream }) });
  }

  private async post(path: string, body: Json): Promise<Json> {
    const headers: Record<string, string> = this.opts.token ? { "X-Relay-Server-Token": this.opts.token } : {};
    const { status, json } = await callJson(this.opts.relayUrl, "POST", path, body, {
      signal: this.abort.signal,
      timeoutMs: this.opts.requestTimeoutMs ?? 10_000,
      headers,
    });
    this.opts.wireTap?.({ from: "node", method: "POST", path, status, request: body, response: json });
    if (status !== 200) throw new Error(`${path} answered ${status}: ${JSON.stringify(json)}`);
    return json;
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      let sleepMs: number;
      try {
        const res = await this.post("/sink", { server_public_key: this.publicKeyB64 });
        const next = typeof res.next_ping_in_x_seconds === "number" ? res.next_ping_in_x_seconds : 10;
        sleepMs = Math.min(Math.max(0, next) * 1000, this.opts.maxSleepMs ?? Infinity);
        if (typeof res.chat_history === "string") {
          await this.handle(res, performance.now());
        } else {
          this.emit("polled", `no work; next poll in ${next} s`);
        }
      } catch (err) {
        if (signal.aborted) break;
        // A poll that timed out client-side is normal for a long-poll; anything else is worth a pause.
        this.emit("error", err instanceof Error ? err.message : String(err));
        sleepMs = isAbort(err) ? 0 : ERROR_BACKOFF_MS;
      }
      await sleep(sleepMs, signal);
    }
  }

  private async handle(job: Json, receivedAt: number): Promise<void> {
    const envelope = { chat_history: String(job.chat_history), cipherkey: String(job.cipherkey), iv: String(job.iv) };
    const history = await decryptJson(this.keys.privateKey, envelope);
    if (!isChatHistory(history)) throw new Error("job is not a chat history");
    // `at` is when /sink answered (before decryption), so the demo can time relay dispatch alone.
    this.opts.onEvent?.({ type: "job", at: receivedAt, detail: lastUserMessage(history), stream: job.stream === true });
    const clientKey = typeof job.client_public_key === "string" ? job.client_public_key : undefined;
    if (!clientKey) throw new Error("job has no client_public_key: nowhere to send the answer");
    const pieces = fakeAnswerPieces(history);

    if (job.stream === true && typeof job.stream_session_id === "string") {
      for (let i = 0; i < pieces.length; i++) {
        const final = i === pieces.length - 1;
        // Each chunk is its own envelope for the client's key: the relay only ever stores ciphertext.
        const chunk = await encryptText(clientKey, pieces[i]!, this.opts.mode);
        await this.post("/stream/source", { session_id: job.stream_session_id, chunk, final });
        this.emit("chunk", `chunk ${i + 1}/${pieces.length}${final ? " (final)" : ""}`, true);
        if (!final) await sleep(this.opts.chunkDelayMs ?? 0, this.abort.signal);
        if (this.abort.signal.aborted) return;
      }
    } else {
      const answer = [...history, { role: "assistant" as const, content: pieces.join("") }];
      const sealed = await encryptJson(clientKey, answer, this.opts.mode);
      await this.post("/source", { client_public_key: clientKey, ...sealed });
      this.emit("answered", "answer posted to /source", false);
    }
    this.jobsHandled++;
  }
}
