import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { chown, lstat, mkdir, open, opendir, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ErrorCode, errorMessage, PivotArchiveError } from '../../errors.js';
import type { Delivery } from '../../model.js';
import { firstFew, MAILBOX_ADDRESS, markStorageLost, RESUMED_FOLDER_NOTE, type FoldersToLook, type LostSinceWritten, type Sink, type SinkFactory, type Stored } from '../sink.js';
import { LifecycleSink, SinkLifecycle } from '../lifecycle.js';
import { sha256Hex } from '../../hash.js';
import { messageVersion, withoutExportId } from '../../formats/message/export-id.js';
import { DirectorySync, isCode, makeDirectory } from '../../fs-util.js';
import { PID_NAMESPACE, processGone } from '../../process-util.js';
import { maildirDescription, parseMaildirSpec, type MaildirSinkConfig } from './config.js';
import { createMaildirReader } from './reader.js';
import { GROUP, GroupCommit, writtenBeforeError, type OpPlace } from './group-commit.js';
import { Slots } from '../slots.js';
import { eachLimited } from '../held.js';
import { dayOfTime } from './seen-names.js';
import { listOurs, type Listing } from './listing.js';
import { isNotRegularFile, openRegular, openRegularSync } from './regular-file.js';
import { directoryIdentity, folderLost } from './folder-identity.js';
import { SHORTAGE_PATIENCE_MS, descriptorBudget, descriptorShortage, openFileLimit, shortageDelay, type DescriptorBudget } from './descriptors.js';

/** Folders looked at once by `lostSinceWritten` (one stat each). */
const LOST_CHECKS_AT_ONCE = 32;


/** The folder of a mailbox (an address) under the root. */
export function mailboxFolder(root: string, mailbox: string): string {
  if (!MAILBOX_ADDRESS.test(mailbox)) throw new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${JSON.stringify(mailbox)} is not an address, so it has no Maildir folder`);
  return join(root, mailboxFolderName(mailbox));
}

/**
 * A mailbox's folder name: the address itself, with `%`, `/`, `\\`, control characters and a
 * leading `.` written `%XX`. So every address a user may have gets a folder of its own (an
 * `a/b@x` too), and none leaves the root or hides as a dot folder.
 */
export function mailboxFolderName(mailbox: string): string {
  return mailbox.replace(/^\.|[%/\\\u0000-\u001f\u007f]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/** The mailbox whose folder has this name, or undefined when no mailbox's folder is named so. */
export function mailboxOfFolderName(name: string): string | undefined {
  const mailbox = name.replace(/%([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  return MAILBOX_ADDRESS.test(mailbox) && mailboxFolderName(mailbox) === name ? mailbox : undefined;
}

export const SUFFIX = '.pivot-archive';

/** A file name unique per (mailbox, Message-ID, second), so a re-run finds what it wrote before. */
export function maildirBaseName(delivery: Pick<Delivery, 'messageId' | 'internalDate'>): string {
  // An item's copies for its mailboxes come one after another: their name is made once.
  if (lastBase.messageId !== delivery.messageId || lastBase.internalDate !== delivery.internalDate) {
    lastBase = { messageId: delivery.messageId, internalDate: delivery.internalDate, name: `${Math.floor(delivery.internalDate / 1000)}.P${sha256Hex(delivery.messageId).slice(0, 32)}${SUFFIX}` };
  }
  return lastBase.name;
}
let lastBase = { messageId: '', internalDate: NaN, name: '' };

/**
 * The name of a message stored beside another complete version of it (same identity, other
 * content): the identity's name plus a short hash of what is compared (`withoutExportId`).
 */
export function maildirVariantName(delivery: Pick<Delivery, 'messageId' | 'internalDate' | 'message'>): string {
  const base = maildirBaseName(delivery);
  return `${base.slice(0, -SUFFIX.length)}.C${messageVersion(delivery.message).slice(0, 16)}${SUFFIX}`;
}

/** `tmp/` names of ours: the unique ones, and the fixed `<base>` that versions before them used. */
const OUR_TEMPORARY = /^(?:-?\d+\.M\d+P\d+(?:N\d+)?Q\d+R[0-9a-f]{8}\..*|-?\d+\.P[0-9a-f]{32}\.pivot-archive)$/;

/** Maildir's rule: a `tmp/` file not touched for 36 hours is left over, never a live delivery. */
const STALE_TEMPORARY_MS = 36 * 3600 * 1000;

const HOST = (hostname() || 'localhost').replace(/\//g, '\\057').replace(/:/g, '\\072');
/** Random per process: pids repeat across containers that share a volume, and across reboots. */
const PROCESS_TAG = randomBytes(4).toString('hex');
/**
 * The PID namespace this process runs in, as the number in its name (the inode of /proc/self/ns/pid), so that a pid
 * in a `tmp/` name is judged only where it means the same process: containers that share a host
 * name (host networking) and a volume have pids of their own. Empty where unknown.
 */
const NAMESPACE_NUMBER = /\[(\d+)\]/.exec(PID_NAMESPACE ?? '')?.[1] ?? '';
let temporaries = 0;

/**
 * A `tmp/` name no other writer uses: `<sec>.M<usec>P<pid>N<pid namespace>Q<n>R<random>.<host>`
 * (Maildir's convention, plus the namespace; `N` left out where it is unknown).
 */
function uniqueName(): string {
  const usec = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  const namespace = NAMESPACE_NUMBER ? `N${NAMESPACE_NUMBER}` : '';
  return `${Math.floor(usec / 1e6)}.M${usec % 1e6}P${process.pid}${namespace}Q${++temporaries}R${PROCESS_TAG}.${HOST}`;
}

/** What a name holds, against our message (see `compare`). */
type Verdict = 'same' | 'torn' | 'other' | 'absent' | 'odd';

/** A file's identity: two names with the same one are one file, with the same bytes. */
interface Inode {
  dev: number;
  ino: number;
}

/**
 * What a file holds, against our message: `same` message (byte for byte, or but for the export id),
 * `torn` (empty, or NUL bytes only), `other` (another version, even the start of ours),
 * `absent`, or `odd`: not a regular file (`kind` says what), never read (see `openRegular`; what
 * `place` does with it is said there). Files much larger than ours are `other` unread.
 * `identify`: also say which file it is.
 */
async function compare(reads: FileReads, path: string, ours: Buffer, identify: boolean): Promise<{ verdict: Verdict; inode?: Inode; kind?: string }> {
  let read: FileStart;
  try {
    read = await reads.read(path, ours.length + 65536, identify);
  } catch (err) {
    if (isCode(err, 'ENOENT')) return { verdict: 'absent' };
    if (isNotRegularFile(err)) return { verdict: 'odd', kind: err.kind };
    throw err;
  }
  const theirs = read.data;
  const verdict = (() => {
    if (theirs === undefined) return 'other';
    if (theirs.length === ours.length && theirs.equals(ours)) return 'same';
    // Empty, or NUL bytes only (a file system's answer after a crash): no message. A non-empty
    // start of ours is another version (a correction that only added text at the end), kept:
    // this sink publishes a file only once it is whole and durable.
    if (theirs.every((b) => b === 0)) return 'torn';
    return withoutExportId(theirs).equals(withoutExportId(ours)) ? 'same' : 'other';
  })();
  return { verdict, inode: read.inode };
}

/** What a read of a file found (see `readStart`). */
export interface FileStart {
  data?: Buffer;
  inode?: Inode;
}

/** A read that took longer than this (not the page cache's: a disk or a network file system) sends the next reads to the thread pool. */
const SLOW_READ_MS = 2;
/** How many: then a read made synchronously tells again. */
const POOL_READS = 1000;

/**
 * How the sink reads the files it finds under a message's name (a re-run compares every one):
 * synchronously while the reads are quick, on the thread pool (four at once, callbacks) when one
 * was slow. Each of the four calls a file makes through the pool is a callback with its request
 * and promise on the main thread: measured 2026-12-02, a re-run of 20k events into 1,500 mailboxes
 * (71,868 files, all there, from the page cache) took 20.3-25.4 s of user CPU and 5.9-8.5 s of
 * system with the pool, 14.8-19.5 s and 4.1-5.5 s made synchronously. A read from a cold disk or
 * an NFS mount takes milliseconds, which the main thread must not wait out one by one.
 */
export class FileReads {
  private pooled = 0;

  /** `slowReadMs`: a test's, to take the thread pool after any read. */
  constructor(private readonly slowReadMs = SLOW_READ_MS) {}

  /** Whether the next read goes to the thread pool. */
  get pooling(): boolean {
    return this.pooled > 0;
  }

  read(path: string, limit: number, identify: boolean): Promise<FileStart> {
    if (this.pooled > 0) {
      this.pooled--;
      return readStart(path, limit, identify);
    }
    const since = performance.now();
    try {
      return Promise.resolve(readStartNow(path, limit, identify));
    } catch (err) {
      return Promise.reject(err);
    } finally {
      if (performance.now() - since > this.slowReadMs) this.pooled = POOL_READS;
    }
  }
}

/** `readStart`, synchronously. */
function readStartNow(path: string, limit: number, identify: boolean): FileStart {
  const { fd, info } = openRegularSync(path);
  try {
    const inode: Inode | undefined = identify ? { dev: info.dev, ino: info.ino } : undefined;
    if (info.size > limit) return { inode };
    const data = Buffer.allocUnsafe(info.size);
    let filled = 0;
    // A file shorter by now than its fstat said (truncated meanwhile) is what was read.
    for (let n = -1; filled < data.length && n !== 0; filled += n) n = fs.readSync(fd, data, filled, data.length - filled, filled);
    return { data: data.subarray(0, filled), inode };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A regular file's bytes (see `openRegular`: anything else fails `NotRegularFile`, unread): the
 * fstat of the descriptor opened gives its size (and its dev and ino, the file's identity, when
 * `identify`), then one read of that size. No data if the file is over `limit`. Callback fs, not
 * FileHandle: FileHandle's open/read/close measured 3 to 7 times slower here. Four calls a file
 * (open, fstat, read, close), as many as before the type was looked at (open, read, a read to find
 * the end, close).
 */
function readStart(path: string, limit: number, identify: boolean): Promise<FileStart> {
  return new Promise((resolve, reject) => {
    openRegular(path, (err, fd, info) => {
      if (err) return reject(err);
      const inode: Inode | undefined = identify ? { dev: info.dev, ino: info.ino } : undefined;
      const done = (readErr: unknown, data?: Buffer) =>
        fs.close(fd, (closeErr) => {
          if (readErr || closeErr) reject(readErr ?? closeErr);
          else resolve({ data, inode });
        });
      const readAll = (buffer: Buffer, filled: number) => {
        if (filled === buffer.length) return done(null, buffer);
        fs.read(fd, buffer, filled, buffer.length - filled, filled, (readErr, bytesRead) => {
          if (readErr) return done(readErr);
          if (bytesRead === 0) return done(null, buffer.subarray(0, filled));
          readAll(buffer, filled + bytesRead);
        });
      };
      if (info.size > limit) return done(null, undefined);
      readAll(Buffer.allocUnsafe(info.size), 0);
    });
  });
}

/**
 * Whether `err` (from a link or rename of our `tmp/` file) is that file gone: removed by a
 * `tmp/` cleaner that took it for left over (another host's, or a writer in another PID
 * namespace that took our pid for gone), not a missing `cur/`.
 */
async function vanished(err: unknown, temporary: string): Promise<boolean> {
  if (!isCode(err, 'ENOENT')) return false;
  try {
    await lstat(temporary);
    return false;
  } catch (statErr) {
    return isCode(statErr, 'ENOENT');
  }
}

/** The Pivot folder of one mailbox, as prepared (and listed) once per run. */
interface Folder {
  path: string;
  /** `path` relative to the root: where its messages are, as the ledger records them. */
  location: string;
  /** Where the file worker's operations in it happen (the folder, its file system, which `cur/` it was when prepared). */
  place: Required<OpPlace>;
  listing: Listing;
  /** A listing under way (a name the listing saw has gone, or a day it did not cover came), and the days it covers. */
  relisting?: { done: Promise<void>; days: ReadonlySet<number> };
}

/**
 * A prepared folder whose listing has nothing to remember but its kind, as the sink keeps it for
 * the rest of the run: an index into the sink's few kinds (file system, whether the listing
 * found files of ours, the days it covers). Its path and location follow from the address. A
 * `Folder` kept whole cost ~700 bytes a mailbox (two path strings, a Map, four objects and a
 * settled promise); this is a map entry and a small integer. Nearly every folder is one: only
 * a listing that found renamed files of ours, or names of the day it covers, is kept whole.
 */
type Ready = number;

/** What a `Ready` folder is, shared by the folders of its kind. */
interface ReadyKind {
  dev: number;
  listing: Listing;
}

const NOTHING_RENAMED = new Map<string, string[]>();

/** Our unique `tmp/` name's writer: pid, PID namespace and host. */
const WRITER = /^\d+\.M\d+P(\d+)N(\d+)Q\d+R[0-9a-f]{8}\.(.*)$/;

/**
 * Removes our `tmp/` files that runs killed mid-delivery left: at once when their writer was a
 * process of this host and PID namespace that is gone, else once untouched for 36 hours
 * (Maildir's rule). Best effort.
 */
async function removeStaleTemporaries(tmp: string): Promise<void> {
  try {
    for await (const entry of await opendir(tmp, { bufferSize: 256 })) {
      if (!OUR_TEMPORARY.test(entry.name)) continue;
      const path = join(tmp, entry.name);
      const writer = WRITER.exec(entry.name);
      const deadHere = writer !== null && writer[3] === HOST && writer[2] === NAMESPACE_NUMBER && Number(writer[1]) !== process.pid && processGone(Number(writer[1]));
      // ctime: a live delivery sets its file's mtime to the message's date, but not its ctime.
      const info = await lstat(path).catch(() => undefined);
      if (info?.isFile() && (deadHere || Date.now() - info.ctimeMs > STALE_TEMPORARY_MS)) await unlink(path).catch(() => undefined);
    }
  } catch {
    // a listing that fails costs nothing but the clean-up
  }
}

/** Where a message goes, as what holds its names says. */
type Place =
  /** The message is there already (put there by an earlier run, or by another writer just now). */
  | { kind: 'held'; path: string }
  /** Nothing holds this base name: publish `cur/<name>:2,S`, without replacing anything. */
  | { kind: 'free'; name: string }
  /** A torn file holds it: replace that file. */
  | { kind: 'torn'; path: string };

/** Folder preparations under way at once (see `MaildirSink.prepare`). */
const PREPARING = 32;

/** How many times a write looks again after another writer took the name it was publishing. */
const MAX_TRIES = 8;

/** How many times one placement lists a folder again because a name the listing saw has gone. */
const MAX_RELISTS = 4;

/**
 * Copies of one item (one `copyKey`) remembered for the copies still to come: fan-out hands an
 * item's copies to the sink one after another, so the most recent few thousand keys cover them
 * and memory stays bounded.
 */
const REMEMBERED_COPIES = 4096;

/** What this run knows of one item's copies (see `Delivery.copyKey`). */
interface Copies {
  /** Its first file written (once durable; undefined if that write failed or wrote nothing), for the others to link to. */
  first?: Promise<string | undefined>;
  /** The file found holding it this run. */
  held?: Inode;
}

export class MaildirSink extends LifecycleSink implements Sink {
  readonly kind = 'maildir';
  readonly description: string;
  readonly maxInFlight: number;
  /** Two groups' bytes: one being made durable while the next gathers. */
  readonly maxInFlightBytes = 2 * GROUP.bytes;
  /**
   * The Pivot folder of each mailbox this run delivered to, by mailbox: its preparation while it
   * runs, then (a bank's day reaches 10,000 mailboxes, and this stays for the run) only what
   * cannot be derived from the address: `Ready` for a folder whose listing found no renamed file
   * of ours (nearly all), the whole `Folder` for the others. See `Ready`.
   */
  private readonly folders = new Map<string, Promise<Folder> | Ready | Folder>();
  /**
   * Which directory each prepared folder's `cur/` was when prepared (`directoryIdentity`), by
   * mailbox: a publication there checks it (`OpPlace.identity`), so a folder removed during the
   * run, or removed and made again, fails the write as storage lost (`lostFolder`). One number a
   * mailbox, for the run.
   */
  private readonly identities = new Map<string, number>();
  /** Mailboxes whose `identities` entry an earlier run gave (`resumeFolders`), not prepared by this run yet. */
  private readonly resumed = new Set<string>();
  /** `foldersToLook()` as last made, until `identities` changes (the checkpoint then serialises it again). */
  private foldersSnapshot: FoldersToLook | undefined;
  /** Preparations under way at once (see `prepare`). */
  private readonly preparations = new Slots(PREPARING);
  /** The kinds of `Ready` folder met this run, and each one's index by what it is. */
  private readonly readyKinds: ReadyKind[] = [];
  private readonly readyKindIndex = new Map<string, Ready>();
  /** The root as `join()` writes it, with a trailing `/`: a folder's path is this, its name, `/`, the Pivot folder. */
  private readonly base: string;
  /** By copyKey, oldest first (see REMEMBERED_COPIES). */
  private readonly copies = new Map<string, Copies>();
  private readonly syncs = new Map<string, DirectorySync>();
  /** Run as root: whom the directories and files it creates are given to. */
  private owner: { uid: number; gid: number } | undefined;
  /** The file system the root was on when the sink opened (see `rootElsewhere`). */
  private rootDevice: number | undefined;
  /** The worker that does the file operations in groups, from open() on. */
  private files: GroupCommit | undefined;
  protected readonly lifecycle = new SinkLifecycle('maildir', {
    open: async () => {
      await this.proveRoot();
      this.files ??= await GroupCommit.start({ count: this.descriptors.group, bytes: GROUP.bytes }, this.stop);
    },
    flush: async () => {
      await this.files?.close();
      this.files = undefined;
    },
  });

  /** What it may hold open at once, under the process's `ulimit -n` (see descriptors.ts). */
  private readonly descriptors: DescriptorBudget;
  /** Files open at once to be compared. */
  private readonly reads: Slots;
  private readonly fileReads = new FileReads();

  constructor(
    readonly config: MaildirSinkConfig,
    fileLimit: number | undefined = openFileLimit(),
    /** SIGINT/SIGTERM: a delivery waiting out a descriptor shortage stops waiting. */
    private readonly stop?: AbortSignal,
  ) {
    super();
    this.descriptors = descriptorBudget(fileLimit, GROUP.count);
    this.reads = new Slots(this.descriptors.reads);
    this.description = maildirDescription(config);
    this.maxInFlight = config.concurrency;
    // A mailbox's folder name has no `/` and never starts with `.`, the Pivot folder starts with `.` and has no `/`: join() would only add the separators.
    this.base = join(config.root, '_').slice(0, -1);
  }

  /**
   * Makes the root if need be and proves it a writable directory (a probe file created, synced and
   * removed); E_SINK_UNAVAILABLE if not, once, instead of a failure per delivery.
   */
  private async proveRoot(): Promise<void> {
    const root = this.config.root;
    const unavailable = (why: string, err?: unknown) =>
      new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `maildir root ${root} ${why}${err === undefined ? '' : `: ${errorMessage(err)}`}`, { cause: err });
    const asRoot = process.getuid?.() === 0;
    const wanted = this.config.owner;
    if (!asRoot && wanted) {
      const [uid, gid] = [process.getuid?.(), process.getgid?.()];
      if (wanted.uid !== uid || (wanted.gid !== undefined && wanted.gid !== gid)) {
        throw unavailable(`cannot be given to owner ${wanted.uid}${wanted.gid === undefined ? '' : `:${wanted.gid}`}: only root can give files away (this runs as ${uid}:${gid}); run as root or drop ?owner=`);
      }
    }
    let made: string | undefined;
    try {
      made = await makeDirectory(root);
    } catch (err) {
      throw unavailable('cannot be made', err);
    }
    let info;
    try {
      info = await stat(root);
    } catch (err) {
      throw unavailable('cannot be read', err);
    }
    if (!info.isDirectory()) throw unavailable('is not a directory');
    this.rootDevice = info.dev;
    if (asRoot) {
      const owner = { uid: wanted?.uid ?? info.uid, gid: wanted?.gid ?? info.gid };
      // Files root creates are root's already: no chown for a root-owned root unless asked.
      this.owner = !wanted && owner.uid === process.getuid?.() && owner.gid === process.getgid?.() ? undefined : owner;
    }
    const probe = join(root, `.pivot-archive-probe.${uniqueName()}`);
    try {
      const handle = await open(probe, 'wx');
      try {
        await handle.writeFile('probe\n');
        await handle.sync();
      } finally {
        await handle.close();
      }
      await unlink(probe);
    } catch (err) {
      await unlink(probe).catch(() => undefined);
      throw unavailable('is not writable', err);
    }
    if (made !== undefined && this.owner) {
      // The root and the folders on the way to it that mkdir made are the owner's too.
      for (let dir = root; ; dir = dirname(dir)) {
        await chown(dir, this.owner.uid, this.owner.gid).catch((err: unknown) => {
          throw unavailable(`cannot be given to ${this.owner!.uid}:${this.owner!.gid}`, err);
        });
        if (dir === made || dir === dirname(dir)) break;
      }
    }
  }

  /** A directory, made (and given to the owner) unless it is there; whether it was made. */
  private async makeDir(dir: string): Promise<boolean> {
    try {
      await mkdir(dir);
    } catch (err) {
      if (isCode(err, 'EEXIST')) return false;
      throw err;
    }
    if (this.owner) await chown(dir, this.owner.uid, this.owner.gid);
    return true;
  }

  /**
   * The Pivot folder of a mailbox, prepared once per run at its first delivery: the mailbox's own
   * Maildir and the subfolder made, `cur/` and `new/` listed for our renamed files. Remembered
   * (compactly) for the run; a preparation that fails is forgotten (the next delivery tries again).
   */
  private folderOf(mailbox: string, day: number): Folder | Promise<Folder> {
    const known = this.folders.get(mailbox);
    if (typeof known === 'number') return this.readyFolder(mailbox, known);
    if (known) return known;
    const preparing = this.prepare(mailbox, day).then(
      (folder) => {
        // The folder the run this one resumes wrote to must be the one prepared: else it went, with what it held.
        const earlier = this.resumed.delete(mailbox) ? this.identities.get(mailbox) : undefined;
        if (earlier !== undefined && earlier !== folder.place.identity) {
          this.identities.delete(mailbox);
          this.folders.delete(mailbox);
          this.foldersSnapshot = undefined;
          throw markStorageLost(new PivotArchiveError(ErrorCode.SINK_WRITE, `maildir: not stored: the folder was removed since the earlier run this one resumes wrote to it: ${folder.path}/cur is another directory than the one that run prepared; what earlier runs stored in ${folder.path} went with it: the next run reads the export from the start (no checkpoint) and delivers again what the folder, made anew, does not hold`));
        }
        this.folders.set(mailbox, this.asReady(folder) ?? folder);
        this.identities.set(mailbox, folder.place.identity);
        this.foldersSnapshot = undefined;
        return folder;
      },
      (err: unknown) => {
        this.folders.delete(mailbox);
        throw err;
      },
    );
    this.folders.set(mailbox, preparing);
    return preparing;
  }

  /** A folder remembered as `Ready`, as its preparation found it. */
  private readyFolder(mailbox: string, ready: Ready): Folder {
    const { path, location } = this.pivotFolder(mailbox);
    const kind = this.readyKinds[ready]!;
    return { path, location, place: { folder: path, dev: kind.dev, identity: this.identities.get(mailbox)! }, listing: kind.listing };
  }

  /** `folder` as `Ready`, or undefined when its listing has names to remember. */
  private asReady(folder: Folder): Ready | undefined {
    const { heldOurs, renamed, days, seen, variants } = folder.listing;
    if (renamed.size > 0 || seen !== undefined || variants !== undefined) return undefined;
    const key = `${folder.place.dev} ${heldOurs} ${[...days].sort((a, b) => a - b).join(',')}`;
    let ready = this.readyKindIndex.get(key);
    if (ready === undefined) {
      ready = this.readyKinds.push({ dev: folder.place.dev, listing: { heldOurs, renamed: NOTHING_RENAMED, days } }) - 1;
      this.readyKindIndex.set(key, ready);
    }
    return ready;
  }

  /** A mailbox's Pivot folder: its path, and its location under the root (as `Stored.location` starts). */
  private pivotFolder(mailbox: string): { path: string; location: string } {
    const location = `${mailboxFolderName(mailbox)}/${this.config.folder}`;
    return { path: this.base + location, location };
  }

  /**
   * A preparation waits its turn: at most PREPARING at once. Unbounded, a day's first minute (every
   * mailbox new) had 900 under way, 700 directories open at once, each with glibc's 32 KiB buffer
   * and libuv's entries, in the thread pool's malloc arenas; with 10,000 mailboxes new ones keep
   * coming all run, and those arenas stayed twice the size (RSS +11 MiB). The thread pool (4
   * threads) is as busy with a few: each preparation is a chain of one-at-a-time calls.
   */
  private async prepare(mailbox: string, day: number): Promise<Folder> {
    await this.preparations.take();
    try {
      return await this.prepareNow(mailbox, day);
    } finally {
      this.preparations.give();
    }
  }

  private async prepareNow(mailbox: string, day: number): Promise<Folder> {
    const home = mailboxFolder(this.config.root, mailbox);
    const { path, location } = this.pivotFolder(mailbox);
    let made = 0;
    for (const dir of [home, path]) {
      await this.makeDir(dir);
      for (const sub of ['cur', 'new', 'tmp']) if ((await this.makeDir(join(dir, sub))) && dir === path && sub !== 'tmp') made++;
    }
    try {
      const marker = await open(join(path, 'maildirfolder'), 'wx');
      try {
        if (this.owner) await marker.chown(this.owner.uid, this.owner.gid);
      } finally {
        await marker.close();
      }
    } catch (err) {
      if (!isCode(err, 'EEXIST')) throw err;
    }
    // Which `cur/` the listing is of: taken before it, so a folder replaced meanwhile fails its first publication rather than pass for the one listed.
    // A no-op chown first: on overlayfs a `cur/` of the lower layer (an image's) is copied up at its first change, with a
    // new birth time, and the run's first link into it then read as the folder made again (review of 2026-12-01).
    await chown(join(path, 'cur'), -1, -1).catch(() => undefined);
    const info = await stat(join(path, 'cur'), { bigint: true });
    const [listing] = await Promise.all([listOurs(path, new Set([day]), { neighbours: true, made: made === 2 }), removeStaleTemporaries(join(path, 'tmp'))]);
    return { path, location, place: { folder: path, dev: Number(info.dev), identity: directoryIdentity(info) }, listing };
  }

  /**
   * Lists a mailbox's folder again (one listing at a time), covering `day` (with the days either
   * side: a backfill of many days lists a folder a third as often). A listing under way that
   * does not cover it is waited for first. The folder is kept whole from then on, and is what
   * `folderOf` gives.
   */
  private async relist(mailbox: string, folder: Folder, day: number): Promise<Folder> {
    const kept = this.folders.get(mailbox);
    const current = this.identities.get(mailbox) === folder.place.identity;
    if (typeof kept === 'object' && !(kept instanceof Promise) && kept.place.identity === folder.place.identity) folder = kept;
    // Not a folder forgotten since (removed during the run: see `lostFolder`), nor over one prepared again.
    else if (current) this.folders.set(mailbox, folder);
    while (folder.relisting && !folder.relisting.days.has(day)) await folder.relisting.done.catch(() => undefined);
    let relisting = folder.relisting;
    if (!relisting) {
      const { days } = folder.listing;
      const covering = days.has(day) ? days : new Set([...days, day - 1, day, day + 1]);
      const done = listOurs(folder.path, covering)
        .then((listing) => {
          folder.listing = listing;
        })
        .finally(() => {
          folder.relisting = undefined;
        });
      folder.relisting = relisting = { done, days: covering };
    }
    await relisting.done;
    return folder;
  }

  /**
   * Where `message` (identity `base`) goes: every file holding the base name is compared. One
   * holding our message: `held`. Another complete version: it stays, and the content-named
   * variant is looked at the same way (where anything else is a torn file of ours). A torn file,
   * with nothing else holding the name: `torn`. Nothing: `free`. With no complete version under
   * the base name, ours may still be under its variant, stored beside a version since moved
   * away or torn: where the listing saw a variant of this identity, that name is looked at
   * first, and only if it does not hold ours is the base name's answer given.
   *
   * Anything but a regular file under a name it compares (a FIFO, socket, device, directory or
   * symbolic link: nothing this tool makes) is never read, and unless a file under another of the
   * names holds the message, fails the delivery (E_SINK_WRITE, saying what stands where), left as
   * it is. It is not a file of ours to replace, nor one to keep and store beside: it may stand for
   * the message (a link Dovecot follows, to a copy of it), and a fresh name would show it twice.
   * Once it is moved away, a re-run stores the message, once.
   *
   * A name is called free only on a listing that would have seen it: when the listing saw its
   * `cur/<base>:2,S` (or remembered a renamed one) and it has gone since (a client renamed or
   * removed it), or did not cover its day, the folder is listed again first.
   */
  private async place(folder: Folder, delivery: Delivery, relists = 0): Promise<Place> {
    const day = dayOfTime(delivery.internalDate);
    let name = maildirBaseName(delivery);
    let variant = false;
    /** The base name's answer, while the variant is looked at with no complete version under the base. */
    let atBase: Place | undefined;
    let vanished = false;
    let unlisted = false;
    for (;;) {
      // One listing for the whole look: a relist may replace the folder's meanwhile.
      const listing = folder.listing;
      const remembered = listing.renamed.get(name) ?? [];
      const plain = join(folder.path, 'cur', `${name}:2,S`);
      let torn: string | undefined;
      let taken = false;
      let odd: { path: string; kind: string } | undefined;
      for (const path of [plain, ...remembered]) {
        const { verdict, kind } = await this.holds(path, delivery);
        if (verdict === 'same') return { kind: 'held', path };
        if (verdict === 'odd') {
          odd ??= { path, kind: kind! };
          continue;
        }
        if (verdict === 'absent') {
          if (path !== plain) vanished = true;
          else if (!listing.days.has(day)) unlisted = true;
          else if (listing.seen?.has(name)) vanished = true;
        } else if (verdict === 'torn' || variant) torn ??= path;
        else taken = true;
      }
      // (A name seen that has gone may be the message renamed: the folder is listed again first.)
      if (odd && !vanished && !unlisted) {
        throw new PivotArchiveError(
          ErrorCode.SINK_WRITE,
          `maildir: ${odd.path} is not a regular file but ${odd.kind}, under the name this message is stored by: not read, not replaced, and the message not stored beside it; move it away and run again`,
        );
      }
      if (taken && !odd) {
        name = maildirVariantName(delivery);
        variant = true;
        continue;
      }
      if (!variant) {
        // No complete version under the base name. Which variants there are, the listing knows for its days only.
        if (torn && !listing.days.has(day)) unlisted = true;
        if (!vanished && !unlisted && listing.variants?.has(name)) {
          atBase = torn ? { kind: 'torn', path: torn } : { kind: 'free', name };
          name = maildirVariantName(delivery);
          variant = true;
          continue;
        }
      }
      if (vanished || unlisted) {
        if (vanished && relists === MAX_RELISTS) {
          throw new PivotArchiveError(ErrorCode.SINK_WRITE, `maildir: files of ours in ${folder.path} kept being renamed while it was listed (${MAX_RELISTS} listings), so whether it holds ${delivery.messageId} is not known`);
        }
        const relisted = await this.relist(delivery.mailbox, folder, day);
        return this.place(relisted, delivery, vanished ? relists + 1 : relists);
      }
      return torn ? { kind: 'torn', path: torn } : (atBase ?? { kind: 'free', name });
    }
  }

  /**
   * What this run knows of the delivery's item, by its `copyKey`; none without links or a key. An
   * entry used again becomes the most recent; the oldest is forgotten past REMEMBERED_COPIES.
   */
  private copiesOf(delivery: Delivery): Copies | undefined {
    const key = delivery.copyKey;
    if (!this.config.links || key === undefined) return undefined;
    const copies = this.copies.get(key) ?? {};
    this.copies.delete(key);
    this.copies.set(key, copies);
    if (this.copies.size > REMEMBERED_COPIES) this.copies.delete(this.copies.keys().next().value!);
    return copies;
  }

  /**
   * `compare()`, but an item's copies (one `copyKey`) that are hard links to a file already found
   * holding the item this run are known by an lstat: one file, the same bytes.
   */
  private async holds(path: string, delivery: Delivery): Promise<{ verdict: Verdict; kind?: string }> {
    const copies = this.copiesOf(delivery);
    if (!copies) return this.compare(path, delivery.message, false);
    const known = copies.held;
    if (known) {
      let info;
      try {
        info = await lstat(path);
      } catch (err) {
        if (isCode(err, 'ENOENT')) return { verdict: 'absent' };
        throw err;
      }
      if (info.dev === known.dev && info.ino === known.ino) return { verdict: 'same' };
    }
    const compared = await this.compare(path, delivery.message, !known);
    if (compared.verdict === 'same' && compared.inode) copies.held = compared.inode;
    return compared;
  }

  /** `compare()` holding one of the sink's read descriptors (see `reads`). */
  private async compare(path: string, ours: Buffer, identify: boolean): ReturnType<typeof compare> {
    await this.reads.take();
    try {
      return await compare(this.fileReads, path, ours, identify);
    } finally {
      this.reads.give();
    }
  }

  private syncOf(dir: string): DirectorySync {
    let sync = this.syncs.get(dir);
    if (!sync) this.syncs.set(dir, (sync = new DirectorySync(dir)));
    return sync;
  }

  /**
   * A complete, durable file of our own in `tmp/` under a name no other writer uses, given to the
   * owner, its mtime the message's date (Dovecot's INTERNALDATE). A write that fails leaves none.
   */
  private async writeTemporary(folder: Folder, delivery: Delivery): Promise<string> {
    const temporary = `${folder.path}/tmp/${uniqueName()}`;
    await this.files!.write(folder.place, temporary, delivery.message, delivery.internalDate, this.owner);
    return temporary;
  }

  /**
   * The Maildir delivery: a complete, durable file in `tmp/` (or, for an item's later copies, its
   * first durable file) is published into `cur/` by `link()`, which never replaces a name another
   * writer took first (then what holds it is compared again), and made durable. A torn file of
   * ours is replaced whole by `rename()`. The file worker does both halves of a new file in one
   * round trip.
   */
  protected store(delivery: Delivery): Promise<Stored> {
    return this.storeOnce(delivery, 0, Date.now());
  }

  /**
   * One try of `store` (`tries` before it since `since`: one may have published the message, its
   * directory is then made durable here). Out of descriptors (EMFILE: this process's `ulimit -n`;
   * ENFILE: the system's): a passing shortage, not the message's failure. What failed left nothing
   * to undo (a file not created, a name not compared); the delivery waits and starts over, and
   * finds whatever it did publish. One async step for the usual delivery, not one for the retry
   * and one for the try: each step's frame and promise live as long as the delivery is in flight.
   */
  private async storeOnce(delivery: Delivery, tries: number, since: number): Promise<Stored> {
    try {
      const known = this.folderOf(delivery.mailbox, dayOfTime(delivery.internalDate));
      const folder = known instanceof Promise ? await known : known;
      try {
        return await this.storeIn(folder, delivery, tries > 0);
      } catch (err) {
        if (!isCode(err, 'ENOENT') || !(await this.tmpThere(folder))) throw (await this.lostFolder(delivery.mailbox, folder, err)) ?? err;
        // `cur/` the one prepared, `tmp/` there (made again if a cleaner took the empty directory): nothing of ours went; tried once more.
        try {
          return await this.storeIn(folder, delivery, true);
        } catch (again) {
          throw (await this.lostFolder(delivery.mailbox, folder, again)) ?? again;
        }
      }
    } catch (err) {
      if (!descriptorShortage(err) || Date.now() - since > SHORTAGE_PATIENCE_MS || this.stop?.aborted) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, shortageDelay(tries)));
    return this.storeOnce(delivery, tries + 1, since);
  }

  /** The folders the end-of-run look would look at now: the identity of each one's `cur/`, by mailbox. */
  foldersToLook(): FoldersToLook {
    return (this.foldersSnapshot ??= Object.fromEntries(this.identities));
  }

  /** An earlier run's folders (see Sink.resumeFolders): the mailbox's first preparation must find the same `cur/`, and the look covers them. */
  resumeFolders(folders: FoldersToLook): boolean {
    const entries = Object.entries(folders);
    if (!entries.every(([mailbox, identity]) => MAILBOX_ADDRESS.test(mailbox) && Number.isSafeInteger(identity) && (identity as number) >= 0)) return false;
    for (const [mailbox, identity] of entries) {
      if (this.identities.has(mailbox)) continue;
      this.identities.set(mailbox, identity as number);
      this.resumed.add(mailbox);
      this.foldersSnapshot = undefined;
    }
    return true;
  }

  /**
   * The folders this run prepared whose `cur/` is gone or another directory now: removed after
   * their mailbox's last write (a write after it fails as storage lost, see `lostFolder`). One
   * stat a mailbox, a few at once. A stat that fails otherwise (EIO, EACCES) leaves the folder
   * not confirmed, a reason too: exit 0 says every item is there.
   */
  async lostSinceWritten(): Promise<LostSinceWritten | undefined> {
    const elsewhere = this.identities.size > 0 ? await this.rootElsewhere() : undefined;
    // Out of sight is not gone: naming every mailbox lost would fail every earlier export there until each archive is run again.
    if (elsewhere) return { reason: `maildir: whether the ${this.identities.size} folder(s) this run wrote to or found items in are still in place could not be confirmed: ${elsewhere}, so the run cannot say every item is there; the next run reads the export from the start and looks at them again`, mailboxes: [] };
    const gone: string[] = [];
    const goneMailboxes: string[] = [];
    const unconfirmed: string[] = [];
    await eachLimited(this.identities, LOST_CHECKS_AT_ONCE, async ([mailbox, identity]) => {
      const cur = join(this.pivotFolder(mailbox).path, 'cur');
      const named = this.resumed.has(mailbox) ? `${cur} (${RESUMED_FOLDER_NOTE})` : cur;
      try {
        if (directoryIdentity(await stat(cur, { bigint: true })) === identity) return;
      } catch (err) {
        if (!isCode(err, 'ENOENT') && !isCode(err, 'ENOTDIR')) return void unconfirmed.push(`${cur}: ${errorMessage(err)}`);
      }
      gone.push(named);
      goneMailboxes.push(mailbox);
    });
    const reasons: string[] = [];
    if (gone.length > 0) reasons.push(`${gone.length} folder(s) this run wrote to or found items in were removed during the run, after their last write (${firstFew(gone)}): what was stored there went with them`);
    if (unconfirmed.length > 0) reasons.push(`whether ${unconfirmed.length} folder(s) this run wrote to or found items in are still in place could not be confirmed (${firstFew(unconfirmed)}), so the run cannot say every item is there`);
    if (reasons.length === 0) return undefined;
    return { reason: `maildir: ${reasons.join('; ')}; the next run reads the export from the start (no checkpoint) and delivers again what the folders, made anew, do not hold`, mailboxes: goneMailboxes };
  }

  /**
   * Why the root is not on the file system the run wrote to (unmounted, or a path above it is),
   * or undefined: found there, or gone from it (removed: then the folders' look tells what went).
   * The first directory found on the way up from the root is the one compared.
   */
  private async rootElsewhere(): Promise<string | undefined> {
    const root = this.config.root;
    for (let dir = root; ; dir = dirname(dir)) {
      try {
        if ((await stat(dir)).dev === this.rootDevice) return undefined;
        return dir === root ? `the Maildir root ${root} is on another file system than the one the run wrote to (unmounted?)` : `the Maildir root ${root} is gone and ${dir} above it is on another file system than the one the run wrote to (unmounted?)`;
      } catch (err) {
        if (!isCode(err, 'ENOENT') && !isCode(err, 'ENOTDIR')) return `the Maildir root ${root} cannot be looked at (${dir}: ${errorMessage(err)})`;
        if (dir === dirname(dir)) return undefined;
      }
    }
  }

  /** Whether the folder's `cur/` is the directory prepared and its `tmp/` is there, made again if it was gone. */
  private async tmpThere(folder: Folder): Promise<boolean> {
    try {
      if (directoryIdentity(await stat(join(folder.path, 'cur'), { bigint: true })) !== folder.place.identity) return false;
      await this.makeDir(join(folder.path, 'tmp'));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Whether a write's failure shows its folder removed during the run (see SPEC.md, "A folder
   * removed during the run"): a publication answered `folderLost` (its `cur/` gone or another
   * directory once durable), or a file operation answered ENOENT where `cur/` or `tmp/` is gone or
   * `cur/` is another directory now. Then the folder is forgotten (the mailbox's next delivery
   * prepares it again: made, listed) and the write's error is storage lost (`markStorageLost`: the
   * run drops its checkpoint, so the next run reads the export from the start and finds what the
   * folder lacks). Undefined otherwise.
   */
  private async lostFolder(mailbox: string, folder: Folder, err: unknown): Promise<PivotArchiveError | undefined> {
    let reason: string | undefined;
    if (folderLost(err)) reason = errorMessage(err);
    else if (isCode(err, 'ENOENT')) {
      try {
        const info = await stat(join(folder.path, 'cur'), { bigint: true });
        await stat(join(folder.path, 'tmp'));
        if (directoryIdentity(info) !== folder.place.identity) reason = `the folder was removed during the run: ${folder.path}/cur is another directory than the one this run prepared (made again at that path); the write: ${errorMessage(err)}`;
      } catch (gone) {
        if (!isCode(gone, 'ENOENT') && !isCode(gone, 'ENOTDIR')) return undefined;
        reason = `the folder was removed during the run: ${errorMessage(gone)}; the write: ${errorMessage(err)}`;
      }
    }
    if (reason === undefined) return undefined;
    // Forgotten once, by the first write that finds it so: not a folder prepared again since.
    if (this.identities.get(mailbox) === folder.place.identity) {
      this.identities.delete(mailbox);
      this.folders.delete(mailbox);
      this.foldersSnapshot = undefined;
    }
    return markStorageLost(
      new PivotArchiveError(
        ErrorCode.SINK_WRITE,
        `maildir: not stored: ${reason}; what this run and earlier runs stored in ${folder.path} went with it: the next run reads the export from the start (no checkpoint) and delivers again what the folder, made anew, does not hold`,
        { cause: err },
      ),
    );
  }

  /**
   * Where the message is, as the ledger records it: relative to the root. Every name a delivery
   * stores or finds is in its folder (concatenated: path.relative costs more than the rest of a
   * delivery's path work). A method, not a closure in `storeIn`: that would live as long as each delivery.
   */
  private storedAt(folder: Folder, outcome: Stored['outcome'], path: string): Stored {
    return { outcome, location: path.startsWith(`${folder.path}/`) ? folder.location + path.slice(folder.path.length) : relative(this.config.root, path) };
  }

  /** `storeOnce` in its mailbox's folder, as prepared. */
  private async storeIn(folder: Folder, delivery: Delivery, again: boolean): Promise<Stored> {
    // A folder that held nothing of ours when listed: the link below finds any name taken since.
    let place: Place = folder.listing.heldOurs ? await this.place(folder, delivery) : { kind: 'free', name: maildirBaseName(delivery) };
    if (place.kind === 'held') {
      // Found after a try that may have linked it itself: its directory entry made durable first.
      if (again) await this.syncOf(dirname(place.path)).sync();
      return this.storedAt(folder, 'skipped', place.path);
    }
    let linkFrom: string | undefined;
    let becomeFirst: ((path: string | undefined) => void) | undefined;
    const copies = this.copiesOf(delivery);
    if (copies) {
      if (copies.first) linkFrom = await copies.first;
      if (!linkFrom) copies.first = new Promise((resolve) => (becomeFirst = resolve));
    }
    let temporary: string | undefined;
    let raced = false;
    try {
      for (let tries = 0; tries < MAX_TRIES; tries++) {
        if (place.kind === 'held') {
          // Another writer published it while we wrote: ours is not needed, theirs made durable.
          if (raced) await this.syncOf(dirname(place.path)).sync();
          return this.storedAt(folder, 'skipped', place.path);
        }
        if (place.kind === 'torn') {
          temporary ??= await this.writeTemporary(folder, delivery);
          try {
            await this.files!.rename(folder.place, temporary, place.path);
          } catch (err) {
            if (folderLost(err) || !(await vanished(err, temporary))) throw err;
            temporary = undefined;
            continue;
          }
          temporary = undefined;
          becomeFirst?.(place.path);
          return this.storedAt(folder, 'delivered', place.path);
        }
        const final = `${folder.path}/cur/${place.name}:2,S`;
        const writing = (linkFrom ?? temporary) === undefined;
        const source = linkFrom ?? temporary ?? (temporary = `${folder.path}/tmp/${uniqueName()}`);
        try {
          // Each resolves once the name is durable in cur/; the tmp/ name is removed after the link.
          if (writing) await this.files!.write(folder.place, source, delivery.message, delivery.internalDate, this.owner, final);
          else await this.files!.link(folder.place, source, final, source === temporary);
        } catch (err) {
          // Published in a folder removed during the run: nothing in tmp/ (see `lostFolder`).
          if (folderLost(err)) {
            if (source === temporary) temporary = undefined;
            throw err;
          }
          // A write that failed left nothing in tmp/: its error is the delivery's.
          if (writing && !writtenBeforeError(err)) {
            temporary = undefined;
            throw err;
          }
          if (isCode(err, 'EEXIST')) {
            raced = true;
            place = await this.place(folder, delivery);
            continue;
          }
          if (source === temporary && (await vanished(err, temporary))) {
            // Someone's tmp/ cleaner took ours for left over: write it again.
            temporary = undefined;
            continue;
          }
          if (source !== linkFrom) throw err;
          // No link to the first copy (a client renamed it, another file system): a file of its own.
          linkFrom = undefined;
          continue;
        }
        temporary = undefined;
        if (source !== linkFrom) becomeFirst?.(final);
        return this.storedAt(folder, 'delivered', final);
      }
      throw new PivotArchiveError(ErrorCode.SINK_WRITE, `maildir: other writers kept taking the name of ${delivery.messageId} in ${folder.path}, or its tmp/ file (${MAX_TRIES} tries)`);
    } finally {
      becomeFirst?.(undefined);
      if (temporary !== undefined) await unlink(temporary).catch(() => undefined);
    }
  }
}

export const maildirSinkFactory: SinkFactory = {
  scheme: 'maildir',
  create: (spec, { cwd, stop }) => new MaildirSink(parseMaildirSpec(spec, cwd), openFileLimit(), stop),
  check: (spec, { cwd }) => void parseMaildirSpec(spec, cwd),
  reader: (spec, { cwd }) => createMaildirReader(spec, cwd),
};
