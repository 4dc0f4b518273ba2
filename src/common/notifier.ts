/** Wakes held requests. Subscribe before checking the store so no notification falls between. */
export interface Notifier {
  subscribe(topic: string): Subscription;
  notify(topic: string, opts?: NotifyOptions): void;
}

export interface NotifyOptions {
  /**
   * The transition already published this wake-up to the other replicas (a Valkey script that
   * PUBLISHes in the same round trip): only this process's waiters are left to wake.
   */
  published?: boolean;
}

export interface Subscription {
  /** Resolves on the first notification after subscribing. */
  readonly fired: Promise<void>;
  cancel(): void;
}


/** In-process notifier: one set of waiters per topic, woken all at once. */
export class MemoryNotifier implements Notifier {
  private readonly waiters = new Map<string, Set<() => void>>();

  subscribe(topic: string): Subscription {
    let wake!: () => void;
    const fired = new Promise<void>((resolve) => (wake = resolve));
    let set = this.waiters.get(topic);
    if (!set) this.waiters.set(topic, (set = new Set()));
    set.add(wake);
    const cancel = () => {
      const s = this.waiters.get(topic);
      if (!s) return;
      s.delete(wake);
      if (s.size === 0) this.waiters.delete(topic);
    };
    return { fired, cancel };
  }

  notify(topic: string): void {
    const set = this.waiters.get(topic);
    if (!set) return;
    this.waiters.delete(topic);
    for (const wake of set) wake();
  }

  /** Wakes every waiter of every topic (they re-check their state). */
  notifyAll(): void {
    for (const topic of [...this.waiters.keys()]) this.notify(topic);
  }

  /** Topics with at least one waiter (tests and leak checks). */
  get size(): number {
    return this.waiters.size;
  }
}
