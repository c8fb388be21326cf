// What every store reader shares: hashing what a store holds as it streams, the two header fields
// that identify a message, and a bounded pool of reads.
import { createHash, type Hash } from 'node:crypto';

/** sha256 (hex) and size of bytes fed in pieces, never held whole. */
export class Digest {
  private readonly hash: Hash = createHash('sha256');
  size = 0;

  update(chunk: Uint8Array): this {
    this.hash.update(chunk);
    this.size += chunk.length;
    return this;
  }

  result(): { sha256: string; size: number } {
    return { sha256: this.hash.digest('hex'), size: this.size };
  }
}

/** The header block of a message (up to the first empty line), as Latin-1 text. */
function headerBlock(raw: Buffer): string {
  let end = raw.indexOf('\r\n\r\n');
  if (end < 0) end = raw.indexOf('\n\n');
  if (end < 0) end = raw.length;
  return raw.toString('latin1', 0, end);
}

/** A header field's unfolded value, or undefined. */
function field(head: string, name: string): string | undefined {
  const match = new RegExp(`(?:^|\\n)${name}:[ \\t]*([^\\n]*(?:\\n[ \\t][^\\n]*)*)`, 'i').exec(head);
  return match?.[1]?.replace(/\r?\n[ \t]/g, ' ').replace(/\r$/, '').trim();
}

/**
 * What identifies a stored message, as the sinks' presence checks read it: its Message-ID (as the
 * header has it, `<...>`) and its Date header to the second (= the event's `sentAt`).
 */
export function messageIdentity(raw: Buffer): { messageId: string; sentAt?: string } {
  const head = headerBlock(raw);
  const messageId = field(head, 'message-id') ?? '';
  const date = Date.parse(field(head, 'date') ?? '');
  return Number.isNaN(date) ? { messageId } : { messageId, sentAt: new Date(Math.floor(date / 1000) * 1000).toISOString() };
}

/** The second an ISO time (or epoch milliseconds) falls in: half of a message's identity. */
export function secondOf(time: string | number): number {
  return Math.floor((typeof time === 'number' ? time : Date.parse(time)) / 1000);
}

/**
 * Runs `work` over `items`, at most `limit` at once; resolves when all have, rejects with the first
 * failure. `work` is told which of the `limit` workers runs it (0 to limit - 1), for buffers of its own.
 */
export async function eachLimited<T>(items: Iterable<T>, limit: number, work: (item: T, worker: number) => Promise<void>): Promise<void> {
  const iterator = items[Symbol.iterator]();
  let failed = false;
  const worker = async (id: number) => {
    for (let next = iterator.next(); !next.done && !failed; next = iterator.next()) {
      try {
        await work(next.value, id);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: limit }, (_, id) => worker(id)));
}
