import { hash } from 'node:crypto';

/**
 * The SHA-256 of `data` in hex: names, keys and checksums throughout the tool. The one-shot
 * `crypto.hash` (Node 20.12+), not a Hash object: 2-3x faster for the short inputs hashed per delivery.
 */
export function sha256Hex(data: Buffer | string): string {
  return hash('sha256', data, 'hex');
}
