// Signed notes (https://c2sp.org/signed-note) as text: the text, a blank line, then one line
// `— name base64(key id || Ed25519 signature)` per signature. What the text says (a ledger
// checkpoint, a staging index) is its reader's; keys are read and made in src/ledger/note.ts.
import { sign, verify, type KeyObject } from 'node:crypto';

export interface SigningKey {
  name: string;
  keyId: Buffer;
  privateKey: KeyObject;
}

export interface VerifierKey {
  name: string;
  keyId: Buffer;
  publicKey: KeyObject;
}

export type SignatureState = 'verified' | 'failed' | 'unsigned' | 'not checked';

/** A note's text (up to its blank line, its last newline kept) and its signature lines; a note without a blank line is all text. */
export function splitNote(note: string): { text: string; signatures: string[] } {
  const split = note.indexOf('\n\n');
  if (split < 0) return { text: note, signatures: [] };
  return { text: note.slice(0, split + 1), signatures: note.slice(split + 2).split('\n').filter(Boolean) };
}

/** A signed note of `text` (which ends with a newline): the text, a blank line, then `— name base64(id || signature)`. */
export function signText(text: string, key: SigningKey): string {
  const signature = sign(null, Buffer.from(text), key.privateKey);
  return `${text}\n\u2014 ${key.name} ${Buffer.concat([key.keyId, signature]).toString('base64')}\n`;
}

/**
 * A note's text (up to its blank line), and whether `key` signed it: `unsigned` with no signature
 * line, `failed` when none of its lines is a good signature by that key (signed by another key, or
 * the text changed since).
 */
export function openSignedText(note: string, key: VerifierKey | undefined): { text: string; signature: SignatureState } {
  const { text, signatures } = splitNote(note);
  if (signatures.length === 0) return { text, signature: 'unsigned' };
  if (!key) return { text, signature: 'not checked' };
  for (const line of signatures) {
    const match = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!match || match[1] !== key.name) continue;
    const blob = Buffer.from(match[2]!, 'base64');
    if (blob.length !== 68 || !blob.subarray(0, 4).equals(key.keyId)) continue;
    return { text, signature: verify(null, Buffer.from(text), key.publicKey, blob.subarray(4)) ? 'verified' : 'failed' };
  }
  // Signed, but by another key (or a key of the same name with another id): not what the verifier trusts.
  return { text, signature: 'failed' };
}
