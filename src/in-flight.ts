/**
 * Promises begun and not yet settled, counted rather than kept: `idle()` waits until none is.
 * Thousands are in flight at once, each for a delivery: a Set of them churned a hash table and a
 * closure each, which the young generation promoted (README, "Benchmarks").
 */
export class InFlight {
  private count = 0;
  private waiting: (() => void)[] = [];

  /** Settled (either way): one fewer; the waiters told once none is left. Shared by every promise tracked. */
  private readonly settled = (): void => {
    if (--this.count > 0 || this.waiting.length === 0) return;
    const waiting = this.waiting;
    this.waiting = [];
    for (const resolve of waiting) resolve();
  };

  /** Counts `work` until it settles, and returns it. */
  track<T>(work: Promise<T>): Promise<T> {
    this.count++;
    work.then(this.settled, this.settled);
    return work;
  }

  /** Resolves once every promise tracked, also those tracked while it waits, has settled; never rejects. */
  async idle(): Promise<void> {
    while (this.count > 0) await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
}
