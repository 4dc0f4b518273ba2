import type Redis from "ioredis";
import { MemoryNotifier, type Notifier, type NotifyOptions, type Subscription } from "./notifier.ts";
import { sha256Hex } from "./tokens.ts";

/**
 * Wakes held requests across replicas: a request posted on replica B wakes the poll held on
 * replica A. Every replica subscribes once, at start, to one channel; a notification publishes
 * the SHA-256 of its topic there (topics contain public keys, kilobytes long; the hash also keeps
 * keys out of the datastore's monitoring). Pub/Sub is only a wake-up (the store is the truth):
 * a lost message costs latency until the hold's final re-check, never correctness, and after a
 * reconnect every local waiter is woken to re-check at once, since messages may have been missed.
 *
 * The same subscription carries one more signal between replicas: "a registration token check
 * failed" (FailureSignal), so that while nobody guesses, no replica reads failure counters.
 */
export class RedisNotifier implements Notifier {
  private readonly local = new MemoryNotifier();
  private readonly channel: string;
  private readonly failureChannel: string;
  private readonly failureListeners = new Set<() => void>();
  /** Subscribed on the current connection: every signal published from now on reaches us. */
  private subscribed = false;
  /** What rate limits use to know of other replicas' failed token checks. */
  readonly authFailures: FailureSignal;

  constructor(
    private readonly publisher: Redis,
    private readonly subscriber: Redis,
    keyPrefix: string,
  ) {
    this.channel = wakeChannel(keyPrefix);
    this.failureChannel = `${keyPrefix}auth-failure`;
    subscriber.on("message", (channel: string, digest: string) => {
      if (channel === this.channel) this.local.notify(digest);
      else if (channel === this.failureChannel) this.heardFailure();
    });
    // Subscribe whenever the connection becomes ready: at start (commands are not queued while
    // connecting, see src/state/redis.ts) and after every reconnect. Whatever was published while
    // unsubscribed is gone, so every local waiter re-checks the store at once, and rate limits
    // act as if a token check had just failed (they read the counters for a while).
    const onReady = () => {
      subscriber.subscribe(this.channel, this.failureChannel).then(
        () => {
          this.subscribed = subscriber.status === "ready";
          this.local.notifyAll();
          this.heardFailure();
        },
        () => {},
      );
    };
    subscriber.on("ready", onReady);
    subscriber.on("close", () => (this.subscribed = false));
    if (subscriber.status === "ready") onReady();
    const self = this;
    this.authFailures = {
      get listening() {
        return self.subscribed && subscriber.status === "ready";
      },
      announce: () => {
        // Published in the same tick as the failure's counter update (ioredis pipelines both into
        // one write), so the datastore has both before the relay answers 401.
        if (publisher.status === "ready") publisher.publish(this.failureChannel, "1").catch(() => {});
      },
      onSignal: (listener) => {
        this.failureListeners.add(listener);
      },
    };
  }

  private heardFailure(): void {
    for (const listener of this.failureListeners) listener();
  }

  subscribe(topic: string): Subscription {
    return this.local.subscribe(digest(topic));
  }

  notify(topic: string, opts?: NotifyOptions): void {
    const d = digest(topic);
    this.local.notify(d);
    if (opts?.published) return;
    // Fire and forget: a failed publish costs other replicas latency, not correctness.
    if (this.publisher.status === "ready") this.publisher.publish(this.channel, d).catch(() => {});
  }

  close(): void {
    this.subscriber.disconnect();
  }
}

/**
 * "A registration token check failed somewhere", between replicas (src/common/rate-limits.ts).
 * Only a hint that lets a replica skip reading counters while nobody is guessing: the counters in
 * the datastore stay the truth, and whenever signals may have been missed (not yet subscribed, a
 * reconnect) listeners are called as if a failure had just happened.
 */
export interface FailureSignal {
  /** Subscribed: a failure announced from now on reaches this replica. */
  readonly listening: boolean;
  /** Tells every replica, this one included, that a check failed now. */
  announce(): void;
  /** Runs on every failure announced by any replica, and whenever announcements may have been missed. */
  onSignal(listener: () => void): void;
}

const digest = sha256Hex;

/** The one channel of wake-ups, and what a wake-up carries: a script may publish them itself. */
export const wakeChannel = (keyPrefix: string) => `${keyPrefix}wake`;
export const wakeDigest = digest;
