import { createHash } from 'node:crypto';

/** The SHA-256 of `data` in hex: names, keys and checksums throughout the tool. */
export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}
