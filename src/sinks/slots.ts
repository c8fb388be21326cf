// What sinks and their readers share to bound work in flight: a counting semaphore.

/** A counting semaphore whose waiters are served in order. */
export class Slots {
  private free: number;
  private readonly waiting: (() => void)[] = [];
  constructor(size: number) {
    this.free = size;
  }
  async take(): Promise<void> {
    if (!this.tryTake()) await this.wait();
  }
  /** Takes a free slot without a promise (a hot path takes two a request); false when none is free: then `wait`. */
  tryTake(): boolean {
    if (this.free === 0) return false;
    this.free--;
    return true;
  }
  /** Resolves once `give` hands a slot over. */
  wait(): Promise<void> {
    return new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  give(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}
