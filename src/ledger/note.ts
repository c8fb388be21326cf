import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { ErrorCode, PivotArchiveError } from '../errors.js';
import { openSignedText, signText, type SignatureState, type SigningKey, type VerifierKey } from '../formats/signed-note/index.js';

/**
 * Signed checkpoints in the C2SP formats (https://c2sp.org/signed-note, https://c2sp.org/tlog-checkpoint):
 * Ed25519 keys written as the note formats write them, so Go's golang.org/x/mod/sumdb/note (and
 * any other implementation) can check our signatures. All cryptography is Node's. A note's text
 * (signing it, opening it) is src/formats/signed-note's, which staging indexes share.
 */

// The ledger's files take the key types from here, with the keys this file reads.
export type { SigningKey, VerifierKey };

/** Ed25519's algorithm byte in signed-note keys. */
const ED25519 = 0x01;
/** PKCS#8 DER of an Ed25519 private key, up to its 32-byte seed (RFC 8410). */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
/** SPKI DER of an Ed25519 public key, up to its 32 bytes (RFC 8410). */
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** A key name as signed-note allows it: no spaces, no `+`, printable. */
function checkName(name: string): string {
  if (!/^[\x21-\x2a\x2c-\x7e]+$/.test(name)) throw new PivotArchiveError(ErrorCode.USAGE, `key name ${JSON.stringify(name)} must be printable ASCII without spaces or "+"`);
  return name;
}

/** The signed-note key id: the first 4 bytes of SHA-256(name || "\n" || 0x01 || public key). */
function keyIdOf(name: string, publicKey: Buffer): Buffer {
  return createHash('sha256').update(`${name}\n`).update(Buffer.from([ED25519])).update(publicKey).digest().subarray(0, 4);
}

function rawPublicKey(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' }).subarray(SPKI_ED25519_PREFIX.length);
}

/** A new key pair: the private key's text (`PRIVATE+KEY+name+id+data`) and the verifier key's (`name+id+data`). */
export function generateKeys(name: string): { privateText: string; verifierText: string } {
  checkName(name);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_ED25519_PREFIX.length);
  const pub = rawPublicKey(publicKey);
  const id = keyIdOf(name, pub).toString('hex');
  return {
    privateText: `PRIVATE+KEY+${name}+${id}+${Buffer.concat([Buffer.from([ED25519]), seed]).toString('base64')}\n`,
    verifierText: `${name}+${id}+${Buffer.concat([Buffer.from([ED25519]), pub]).toString('base64')}\n`,
  };
}

function keyParts(text: string, what: string, privateKey: boolean): { name: string; id: string; key: Buffer } {
  // name+id+data: the name holds no "+" and the id is hex, but base64 data may hold "+".
  let rest = text.trim();
  const prefixed = rest.startsWith('PRIVATE+KEY+');
  if (privateKey && prefixed) rest = rest.slice('PRIVATE+KEY+'.length);
  const match = /^([^+]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/]+={0,2})$/.exec(rest);
  const key = match ? Buffer.from(match[3]!, 'base64') : undefined;
  if (!match || privateKey !== prefixed || key?.length !== 33 || key[0] !== ED25519) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `${what} is not an Ed25519 ${privateKey ? 'signing key (PRIVATE+KEY+NAME+ID+DATA, as keygen writes it)' : 'verifier key (NAME+ID+DATA, as keygen prints it)'}`);
  }
  return { name: checkName(match[1]!), id: match[2]!, key: key.subarray(1) };
}

/** Reads a signing key's text; `what` names it in errors, never its content. */
export function parseSigningKey(text: string, what: string): SigningKey {
  const { name, id, key } = keyParts(text, what, true);
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, key]), format: 'der', type: 'pkcs8' });
  const keyId = keyIdOf(name, rawPublicKey(createPublicKey(privateKey)));
  if (keyId.toString('hex') !== id) throw new PivotArchiveError(ErrorCode.CONFIG, `${what}: its key id does not match its key (a damaged key file?)`);
  return { name, keyId, privateKey };
}

export function parseVerifierKey(text: string, what: string): VerifierKey {
  const { name, id, key } = keyParts(text, what, false);
  const keyId = keyIdOf(name, key);
  if (keyId.toString('hex') !== id) throw new PivotArchiveError(ErrorCode.CONFIG, `${what}: its key id does not match its key (a damaged key?)`);
  return { name, keyId, publicKey: createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, key]), format: 'der', type: 'spki' }) };
}

/** What a checkpoint says: the log it is of, how many records, the head, and when. */
export interface CheckpointBody {
  origin: string;
  size: number;
  /** sha256 (hex) of the last record line covered. */
  head: string;
  time: string;
}

/** The checkpoint's text (tlog-checkpoint: origin, size, base64 hash, then extension lines). */
export function checkpointText(c: CheckpointBody): string {
  return `${c.origin}\n${c.size}\n${Buffer.from(c.head, 'hex').toString('base64')}\ntime ${c.time}\n`;
}

/** The checkpoint's note: its text, and a signature line when a key is given. */
export function signedNote(body: CheckpointBody, key: SigningKey | undefined): string {
  const text = checkpointText(body);
  return key ? signText(text, key) : text;
}

/** Reads a checkpoint's note back: its body, and whether `key` signed it. */
export function openNote(note: string, key: VerifierKey | undefined): { body: CheckpointBody | undefined; signature: SignatureState } {
  const { text, signature } = openSignedText(note, key);
  const lines = text.split('\n');
  const timeLine = lines[3]?.startsWith('time ') ? lines[3].slice(5) : undefined;
  const size = Number(lines[1]);
  const head = lines[2] === undefined ? '' : Buffer.from(lines[2], 'base64').toString('hex');
  const body = lines.length >= 5 && /^\d+$/.test(lines[1] ?? '') && head.length === 64 && timeLine ? { origin: lines[0]!, size, head, time: timeLine } : undefined;
  return { body, signature };
}
