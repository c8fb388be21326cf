// The staged batch format, written by the Blob sink and read back by `import --from`:
// a zip holding `manifest.json` first, then one `.eml` per (mailbox, item). See SPEC.md.
import type { Readable } from 'node:stream';
import archiver from 'archiver';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';
import { sha256Hex } from '../../hash.js';
import type { Delivery, EventPosition } from '../../model.js';
import { readCentralDirectory, readEntryBuffer } from '../zip/index.js';

export const BATCH_FORMAT = 'pivot-archive-staged-batch';
export const MANIFEST_NAME = 'manifest.json';

/** One message of a batch, as the manifest lists it. */
export interface StagedEntry {
  /** The entry's name in the zip: `000001.eml`... never derived from the mailbox. */
  name: string;
  mailbox: string;
  itemId: string;
  conversationId: string;
  messageId: string;
  internalDate: number;
  position: EventPosition;
  size: number;
  sha256: string;
}

export interface BatchManifest {
  format: typeof BATCH_FORMAT;
  version: 1;
  exportId: string;
  entries: StagedEntry[];
}

/**
 * What identifies a staged message: the same (mailbox, Message-ID) with the same bytes is never
 * staged twice; other bytes (a corrected re-delivery of the export) are another version, staged
 * beside it (the import then stores both, as every sink keeps such versions).
 */
export function stagedKey(d: { mailbox: string; messageId: string } & ({ sha256: string } | { message: Buffer })): string {
  return `${d.mailbox}\n${d.messageId}\n${'sha256' in d ? d.sha256 : messageSha256(d.message)}`;
}

/** The sha256 of a message's bytes, made once: an item's copies for its mailboxes share one buffer. */
const digests = new WeakMap<Buffer, string>();
function messageSha256(message: Buffer): string {
  let digest = digests.get(message);
  if (digest === undefined) digests.set(message, (digest = sha256Hex(message)));
  return digest;
}

export function manifestFor(exportId: string, deliveries: Delivery[]): BatchManifest {
  return {
    format: BATCH_FORMAT,
    version: 1,
    exportId,
    entries: deliveries.map((d, i) => ({
      name: `${String(i + 1).padStart(6, '0')}.eml`,
      mailbox: d.mailbox,
      itemId: d.itemId,
      conversationId: d.conversationId,
      messageId: d.messageId,
      internalDate: d.internalDate,
      position: d.position,
      size: d.message.length,
      sha256: messageSha256(d.message),
    })),
  };
}

/**
 * Messages under this size are stored, larger ones deflated: archiver starts a zlib stream per
 * deflated entry, which for typical 1-2 KB chat messages cost half the staging run's time and
 * 25 MB of peak RSS (measured: 8.3 s instead of 16.4 s for 75,833 messages; 92 MB staged
 * instead of 62 MB).
 */
const STORE_BELOW_BYTES = 16 * 1024;

/** `manifest.json` as a batch holds it: the staging index records its sha256 (see staging-index.ts). */
export function manifestBytes(manifest: BatchManifest): Buffer {
  return Buffer.from(JSON.stringify(manifest));
}

/** The batch as a zip stream (archiver), to pipe straight into an upload. Same input, same bytes. */
export function batchZipStream(manifest: BatchManifest, messages: Buffer[]): Readable {
  const zip = archiver('zip', { zlib: { level: 1 } });
  zip.append(manifestBytes(manifest), { name: MANIFEST_NAME, date: new Date(0) });
  manifest.entries.forEach((entry, i) => {
    const message = messages[i]!;
    zip.append(message, { name: entry.name, date: new Date(entry.internalDate), store: message.length < STORE_BELOW_BYTES });
  });
  zip.finalize().catch((err: Error) => zip.destroy(err));
  return zip;
}

/** A staged message read back: its bytes, or why they cannot be trusted. */
export type ReadEntry = { entry: StagedEntry; message: Buffer } | { entry: StagedEntry; problem: string };

/**
 * Reads a downloaded batch through its central directory. The manifest must be well formed;
 * each message is checked against its sha256 and size, and a mismatch is reported per entry.
 * `manifestSha256` is the sha256 of `manifest.json`'s bytes, to hold against the staging index.
 */
export async function readBatch(label: string, zip: Buffer, maxMessageSize: number): Promise<{ manifest: BatchManifest; manifestSha256: string; entries: AsyncGenerator<ReadEntry> }> {
  const bad = (why: string) => new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `staged batch ${label}: ${why}`);
  const { entries } = await readCentralDirectory({ label: `staged batch ${label}`, buffer: zip });
  const manifestEntry = entries.get(MANIFEST_NAME);
  if (!manifestEntry) throw bad(`has no ${MANIFEST_NAME}`);
  let manifest: BatchManifest;
  let manifestSha256: string;
  try {
    const bytes = await readEntryBuffer(manifestEntry, 64 * 1024 * 1024);
    manifestSha256 = sha256Hex(bytes);
    manifest = JSON.parse(bytes.toString('utf8')) as BatchManifest;
  } catch (err) {
    throw bad(`${MANIFEST_NAME} is not readable JSON: ${errorMessage(err)}`);
  }
  if (manifest?.format !== BATCH_FORMAT || manifest.version !== 1 || !Array.isArray(manifest.entries) || typeof manifest.exportId !== 'string') {
    throw bad(`${MANIFEST_NAME} is not a ${BATCH_FORMAT} version 1 manifest`);
  }
  for (const e of manifest.entries) {
    if (typeof e?.name !== 'string' || typeof e.mailbox !== 'string' || typeof e.messageId !== 'string' || typeof e.sha256 !== 'string') {
      throw bad(`${MANIFEST_NAME} lists an entry without name, mailbox, messageId or sha256`);
    }
  }
  async function* read(): AsyncGenerator<ReadEntry> {
    for (const entry of manifest.entries) {
      const zipEntry = entries.get(entry.name);
      if (!zipEntry) {
        yield { entry, problem: `${entry.name} is listed in the manifest but missing from the batch` };
        continue;
      }
      let message: Buffer;
      try {
        message = await readEntryBuffer(zipEntry, maxMessageSize);
      } catch (err) {
        yield { entry, problem: `${entry.name} cannot be read: ${errorMessage(err)}` };
        continue;
      }
      if (message.length !== entry.size || sha256Hex(message) !== entry.sha256) {
        yield { entry, problem: `${entry.name} does not match its sha256 in the manifest (tampered or corrupt)` };
        continue;
      }
      yield { entry, message };
    }
  }
  return { manifest, manifestSha256, entries: read() };
}
