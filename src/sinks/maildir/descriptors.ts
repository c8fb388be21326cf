// File descriptors, a resource the Maildir sink must share with its process: under `ulimit -n 1024`
// (a common soft limit, systemd's default) its 4,096 deliveries at once each opened a file (a
// re-run compares every message it finds) and 210 of 11,858 failed EMFILE. Node has no getrlimit;
// on Linux the soft limit is in /proc/self/limits. The sink bounds what it holds open to a share
// of it, and a delivery that still meets EMFILE or ENFILE (the system's table full) waits and tries
// again: a shortage of descriptors is a passing limit of this host, never a message that failed.
import { readFileSync } from 'node:fs';
import { isCode } from '../../fs-util.js';

/** The soft RLIMIT_NOFILE (`ulimit -n`) from `limits` (the text of /proc/self/limits); undefined when unlimited or unknown. */
export function openFileLimit(limits?: string): number | undefined {
  let text = limits;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return undefined; // not Linux: the retry on EMFILE alone
    }
  }
  const soft = /^Max open files\s+(\S+)/m.exec(text)?.[1];
  const n = soft === undefined ? NaN : Number(soft);
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

/** Descriptors left to the rest of the process: stdio, the logs and ledger, the archive, libuv, the worker, folder listings (32 at once), perl's syncfs. */
const RESERVED = 160;

/** What the sink may hold open at once, by use, under a soft limit of `limit` descriptors. */
export interface DescriptorBudget {
  /** Files the main thread has open at once to compare (a re-run reads what it finds). */
  reads: number;
  /** Files a group of the file worker holds open (each from its create until the group is durable). */
  group: number;
}

/** The budget under `limit` (undefined: no limit known, the sink's own bounds alone). */
export function descriptorBudget(limit: number | undefined, groupCount: number): DescriptorBudget {
  // Reads to compare run on the thread pool (4 threads): a few hundred waiting already keep it busy.
  const reads = 256;
  if (limit === undefined) return { reads, group: groupCount };
  const free = Math.max(8, limit - RESERVED);
  const share = Math.max(4, Math.min(reads, Math.floor(free / 4)));
  return { reads: share, group: Math.max(4, Math.min(groupCount, free - share)) };
}

/** A shortage of descriptors (this process's, or the system's): it passes, nothing is wrong with the message. */
export function descriptorShortage(err: unknown): boolean {
  return isCode(err, 'EMFILE') || isCode(err, 'ENFILE');
}

/** How long a delivery waits for descriptors before it fails, in all. */
export const SHORTAGE_PATIENCE_MS = 120_000;

/** The wait before try `n` (from 0): 10 ms doubling to 1 s, jittered so the waiters do not come back at once. */
export function shortageDelay(n: number): number {
  return Math.min(1000, 10 * 2 ** n) * (0.5 + Math.random());
}
