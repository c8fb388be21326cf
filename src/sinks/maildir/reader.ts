// Reads a Maildir root back for `verify` (see ../SPEC.md, "Reading a store back"): read-only, one
// listing per folder, every wanted file hashed as it is read, a bounded number at once.
import fs from 'node:fs';
import { access, readdir, stat } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import { ErrorCode, errorMessage, PivotArchiveError } from '../../errors.js';
import { Digest, eachLimited, messageIdentity } from '../held.js';
import type { HeldMessage, StoreReader, WantedMessage } from '../sink.js';
import { maildirDescription, parseMaildirSpec, type MaildirSinkConfig } from './config.js';
import { isCode } from '../../fs-util.js';
import { mailboxFolder, mailboxOfFolderName, maildirBaseName, SUFFIX } from './index.js';
import { OURS, ourFiles } from './listing.js';
import { isNotRegularFile, openRegular } from './regular-file.js';
import { descriptorBudget, openFileLimit } from './descriptors.js';

/** Files read at once: enough to keep a disk (or the page cache) busy, few enough for the descriptors (under a low `ulimit -n`, the sink's share of them: descriptors.ts). */
const READS_AT_ONCE = Math.min(64, descriptorBudget(openFileLimit(), 1).reads);
/** Read size when hashing a file; also what is read of a file to learn its Message-ID. */
const CHUNK = 64 * 1024;

/** Our files of one folder, as one listing of its `cur/` and `new/` found them. */
interface FolderListing {
  /** Base name (before `:2,`) -> paths relative to the folder (`cur/<name>`, `new/<name>`). */
  byBase: Map<string, string[]>;
  /** `<sec>.P<key>` (an identity) -> base names of its content-named variants (`.C<hash>`). */
  variants: Map<string, string[]>;
}

async function listFolder(folder: string): Promise<FolderListing> {
  const listing: FolderListing = { byBase: new Map(), variants: new Map() };
  for await (const { sub, name, base } of ourFiles(folder, true)) {
    const paths = listing.byBase.get(base);
    if (paths) paths.push(`${sub}/${name}`);
    else listing.byBase.set(base, [`${sub}/${name}`]);
    const identity = /^(.*)\.C[0-9a-f]{16}\.pivot-archive$/.exec(base)?.[1];
    if (identity !== undefined && !paths) {
      const names = listing.variants.get(identity);
      if (names) names.push(base);
      else listing.variants.set(identity, [base]);
    }
  }
  return listing;
}

/**
 * sha256 and size of a file, read in `buffer`-sized pieces with callback fs (on 100k small files
 * FileHandle and streams cost several times more, as the sink measured for its reads). Only a
 * regular file is read: anything else fails `NotRegularFile`, unopened or unread (see `openRegular`).
 */
function hashFile(path: string, buffer: Buffer): Promise<{ sha256: string; size: number }> {
  return new Promise((resolve, reject) => {
    openRegular(path, (err, fd) => {
      if (err) return reject(err);
      const digest = new Digest();
      const done = (readErr: unknown) => fs.close(fd, (closeErr) => (readErr || closeErr ? reject(readErr ?? closeErr) : resolve(digest.result())));
      const next = () =>
        fs.read(fd, buffer, 0, buffer.length, null, (readErr, bytes) => {
          if (readErr) return done(readErr);
          if (bytes === 0) return done(null);
          digest.update(buffer.subarray(0, bytes));
          next();
        });
      next();
    });
  });
}

/** The start of a file (its header, for the Message-ID); a regular file only, as `hashFile`. */
function readHead(path: string, buffer: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    openRegular(path, (err, fd) => {
      if (err) return reject(err);
      fs.read(fd, buffer, 0, buffer.length, 0, (readErr, bytes) =>
        fs.close(fd, (closeErr) => (readErr || closeErr ? reject(readErr ?? closeErr) : resolve(buffer.subarray(0, bytes)))),
      );
    });
  });
}

/**
 * What `verify` is told of a name of ours that is not a regular file: an unexpected entry whose
 * "Message-ID" says what it is. The wanted message it stands for (if any) is not held, so it is
 * also missing: either counts, exit 6.
 */
function oddEntry(path: string, kind: string, location: string): Omit<HeldMessage, 'sha256' | 'size'> {
  return { messageId: `(not a regular file: ${kind})`, sentAt: sentAtOf(path), location };
}

/** The second a file of ours is named after (`<sec>.P...`): its `sentAt`. */
function sentAtOf(path: string): string {
  return new Date(Number(/^(-?\d+)\./.exec(basename(path))![1]) * 1000).toISOString();
}

/** A wanted message's base name: the one its location names, else its identity's. */
function baseNames(wanted: WantedMessage, listing: FolderListing): string[] {
  const fromLocation = wanted.location === undefined ? undefined : OURS.exec(basename(wanted.location))?.[1];
  const identity = maildirBaseName({ messageId: wanted.messageId, internalDate: Date.parse(wanted.sentAt) });
  return [...new Set([...(fromLocation === undefined ? [] : [fromLocation]), identity, ...(listing.variants.get(identity.slice(0, -SUFFIX.length)) ?? [])])];
}

export class MaildirReader implements StoreReader {
  readonly description: string;

  constructor(readonly config: MaildirSinkConfig) {
    this.description = maildirDescription(config);
  }

  /** The root must be a directory this process can list and read; nothing is made. */
  async open(): Promise<void> {
    const root = this.config.root;
    try {
      if (!(await stat(root)).isDirectory()) throw new Error('not a directory');
      await access(root, fs.constants.R_OK | fs.constants.X_OK);
    } catch (err) {
      throw new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `maildir root ${root} cannot be read: ${errorMessage(err)}`, { cause: err });
    }
  }

  async mailbox(mailbox: string, wanted: WantedMessage[], { sample }: { sample: boolean }): Promise<{ held: Map<WantedMessage, HeldMessage>; unexpected: Omit<HeldMessage, 'sha256' | 'size'>[] }> {
    const held = new Map<WantedMessage, HeldMessage>();
    const unexpected: Omit<HeldMessage, 'sha256' | 'size'>[] = [];
    let home: string;
    try {
      home = mailboxFolder(this.config.root, mailbox);
    } catch {
      return { held, unexpected }; // a name that cannot be a folder here holds nothing
    }
    const folder = join(home, this.config.folder);
    let listing = await listFolder(folder);
    let relisting: Promise<FolderListing> | undefined;
    const used = new Set<string>();
    const where = (path: string) => relative(this.config.root, join(folder, path));
    // One read buffer per worker, used again for every file it reads.
    const buffers: Buffer[] = [];
    const bufferOf = (worker: number) => (buffers[worker] ??= Buffer.allocUnsafe(CHUNK));
    // Names of ours that hold something other than a regular file (never read), by path: a kind.
    const odd = new Map<string, string>();
    await eachLimited(wanted, READS_AT_ONCE, async function find(this: void, w: WantedMessage, worker: number, retried = false): Promise<void> {
      const buffer = bufferOf(worker);
      for (const base of baseNames(w, listing)) {
        const paths = listing.byBase.get(base);
        if (paths === undefined) continue;
        // The base's files not yet taken by another wanted message first; a name that is not a
        // regular file is passed over for the next (its message may be there under another flag).
        for (const path of [...paths.filter((p) => !used.has(p)), ...paths.filter((p) => used.has(p)).slice(0, 1)]) {
          if (odd.has(path)) continue;
          let hashed;
          try {
            hashed = await hashFile(join(folder, path), buffer);
          } catch (err) {
            if (isNotRegularFile(err)) {
              odd.set(path, err.kind);
              continue;
            }
            if (!isCode(err, 'ENOENT')) throw err;
            // Gone again since the folder was listed afresh: deleted, or renamed once more.
            if (retried) continue;
            // A client renamed it since the listing (a flag change): list the folder again, once.
            listing = await (relisting ??= listFolder(folder));
            return find(w, worker, true);
          }
          used.add(path);
          held.set(w, { messageId: w.messageId, sentAt: sentAtOf(path), location: where(path), ...hashed });
          return;
        }
      }
    });
    if (!sample) {
      const others = [...listing.byBase.values()].flat().filter((path) => !used.has(path) && !odd.has(path));
      await eachLimited(others, READS_AT_ONCE, async (path, worker) => {
        let head: Buffer;
        try {
          head = await readHead(join(folder, path), bufferOf(worker));
        } catch (err) {
          if (isNotRegularFile(err)) return void odd.set(path, err.kind);
          if (isCode(err, 'ENOENT')) return; // gone since the listing: nothing to report
          throw err;
        }
        unexpected.push({ messageId: messageIdentity(head).messageId, sentAt: sentAtOf(path), location: where(path) });
      });
    }
    // Named, whether or not unexpected messages are looked for: verify keeps them only when they are.
    for (const [path, kind] of odd) if (!used.has(path)) unexpected.push(oddEntry(path, kind, where(path)));
    unexpected.sort((a, b) => (a.location < b.location ? -1 : 1));
    return { held, unexpected };
  }

  /** Mailbox folders under the root that hold the Pivot folder. */
  async mailboxes(): Promise<string[]> {
    const found: string[] = [];
    const entries = await readdir(this.config.root, { withFileTypes: true });
    await eachLimited(entries, READS_AT_ONCE, async (entry) => {
      const mailbox = entry.isDirectory() ? mailboxOfFolderName(entry.name) : undefined;
      if (mailbox === undefined) return;
      const pivot = await stat(join(this.config.root, entry.name, this.config.folder)).catch(() => undefined);
      if (pivot?.isDirectory()) found.push(mailbox);
    });
    return found.sort();
  }

  async close(): Promise<void> {}
}

export function createMaildirReader(spec: string, cwd: string): MaildirReader {
  return new MaildirReader(parseMaildirSpec(spec, cwd));
}
