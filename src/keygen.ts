import { open, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { ErrorCode, PivotArchiveError, errorMessage } from './errors.js';
import { generateKeys } from './ledger/index.js';

/** The default key name: the host, as signed-note names allow (no spaces, no `+`). */
export function defaultKeyName(): string {
  return `pivot-archive-${hostname().replace(/[^\x21-\x2a\x2c-\x7e]/g, '-')}`;
}

/**
 * `keygen`: a new Ed25519 signing key at `out` (mode 0600, never over an existing file) and its
 * verifier key at `out.pub`; returns the verifier key, which is safe to print and to share.
 */
export async function keygen(out: string, name = defaultKeyName()): Promise<string> {
  const { privateText, verifierText } = generateKeys(name);
  try {
    // The public key first, never over an existing one: a key pair is written whole or not at all.
    await writeFile(`${out}.pub`, verifierText, { mode: 0o644, flag: 'wx' });
    const handle = await open(out, 'wx', 0o600).catch(async (err: unknown) => {
      await unlink(`${out}.pub`).catch(() => undefined);
      throw err;
    });
    try {
      await handle.writeFile(privateText);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new PivotArchiveError(ErrorCode.USAGE, code === 'EEXIST' ? `${out} or ${out}.pub exists: keygen never replaces a key (a lost key cannot sign again; move it away first)` : `cannot write ${out}: ${errorMessage(err)}`);
  }
  return verifierText;
}
