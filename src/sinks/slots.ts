// What sinks and their readers share to bound work in flight: a counting semaphore.

/**
 * A counting semaphore whose waiters are served in order. A taker may take several slots at once
 * (a Graph batch that Outlook runs four requests of at a time holds four): it is served whole or
 * not at all, and no later taker goes before it (so it cannot be starved by single slots).
 */
export class Slots {
  private free: number;
  private readonly waiting: { count: number; resolve: () => void }[] = [];
  constructor(private readonly size: number) {
    this.free = size;
  }
  async take(count = 1): Promise<void> {
    if (!this.tryTake(count)) await this.wait(count);
  }
  /** Takes `count` free slots without a promise (a hot path takes two a request); false when they are not free: then `wait`. */
  tryTake(count = 1): boolean {
    if (this.free < count || this.waiting.length > 0) return false;
    this.free -= count;
    return true;
  }
  /** Resolves once `give` hands `count` slots over (at most the semaphore's size). */
  wait(count = 1): Promise<void> {
    if (count > this.size) throw new RangeError(`${count} slots asked of ${this.size}`);
    return new Promise<void>((resolve) => this.waiting.push({ count, resolve }));
  }
  give(count = 1): void {
    this.free += count;
    while (this.waiting.length > 0 && this.waiting[0]!.count <= this.free) {
      const next = this.waiting.shift()!;
      this.free -= next.count;
      next.resolve();
    }
  }
}
