import type { BigIntStats } from 'node:fs';

/**
 * Which directory a folder's `cur/` is, as one number: its inode and birth time (ns), folded into
 * 52 bits. A folder removed during the run and made again at the same path (by a mail client, by
 * Dovecot, by another writer) has another: ext4 hands a directory made just after one removed its
 * inode number again (seen here: rmdir then mkdir, the same inode), so the inode alone does not
 * tell them apart; the birth time does (statx; where a file system keeps none it is 0 and the inode
 * alone is compared).
 */
export function directoryIdentity(info: Pick<BigIntStats, 'ino' | 'birthtimeNs'>): number {
  return Number(BigInt.asUintN(52, info.ino * 1_000_000_007n + info.birthtimeNs));
}

/** Whether an error says the folder a write went to was removed or replaced during the run (see `directoryIdentity`). */
export function folderLost(err: unknown): boolean {
  return (err as { folderLost?: unknown } | undefined)?.folderLost === true;
}
