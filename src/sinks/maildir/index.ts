import { constants } from 'node:fs';
import { link, mkdir, open, opendir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { isAbsolute, join, resolve, sep } from 'node:path';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { pathExists } from '../../fs-util.js';
import type { Delivery } from '../../model.js';
import type { Sink, SinkFactory, WriteOutcome } from '../sink.js';
import { integerOption } from '../query.js';
import { sha256Hex } from '../../hash.js';

export interface MaildirSinkConfig {
  /** Root folder; each mailbox is the Maildir++ tree `root/<mailbox>/`. */
  root: string;
  /**
   * On-disk name of the Inbox/Pivot folder in Maildir++ layout. `.INBOX.Pivot` is what
   * Dovecot's default namespace shows as `INBOX/Pivot`; `.Pivot` suits a Courier-style
   * `INBOX.` namespace.
   */
  folder: string;
  /** Deliveries written at once (files opened, written and synced in parallel). */
  concurrency: number;
  /**
   * Hard-link an item's later mailbox copies to its first file (as Dovecot's own
   * `maildir_copy_with_hardlinks` does) instead of writing and syncing each one.
   */
  links: boolean;
}

const QUERY_KEYS = new Set(['folder', 'concurrency', 'links']);

export function parseMaildirSpec(spec: string, cwd: string): MaildirSinkConfig {
  const bad = (why: string) => new PivotArchiveError(ErrorCode.SINK_CONFIG, `maildir sink ${JSON.stringify(spec)}: ${why}`);
  const body = spec.replace(/^maildir:/i, '');
  const [path = '', query = ''] = body.split('?', 2);
  if (path === '') throw bad('names no folder (use maildir:DIR)');
  const params = new URLSearchParams(query);
  for (const key of params.keys()) {
    if (!QUERY_KEYS.has(key)) throw bad(`unknown option ${JSON.stringify(key)} (known: ${[...QUERY_KEYS].join(', ')})`);
  }
  const folder = params.get('folder') ?? '.INBOX.Pivot';
  if (!/^\.[^/\\.\u0000-\u001f][^/\\\u0000-\u001f]*$/.test(folder) || folder.includes('..')) {
    throw bad(`folder ${JSON.stringify(folder)} is not a Maildir++ folder name such as .INBOX.Pivot`);
  }
  const concurrency = integerOption(params.get('concurrency'), 256, 1, 1024, 'concurrency', bad);
  const links = params.get('links') ?? '1';
  if (links !== '0' && links !== '1') throw bad(`links must be 1 (hard-link an item's copies, the default) or 0 (a file each), not ${JSON.stringify(links)}`);
  return { root: isAbsolute(path) ? path : resolve(cwd, path), folder, concurrency, links: links === '1' };
}

/**
 * Coalesces directory fsyncs: every caller waits for a sync that started after it asked,
 * so many renames share one fsync.
 */
class DirectorySync {
  private inFlight: Promise<void> | null = null;
  private queued: Promise<void> | null = null;

  constructor(private readonly dir: string) {}

  sync(): Promise<void> {
    if (this.queued) return this.queued;
    if (!this.inFlight) return this.start();
    this.queued = this.inFlight
      .catch(() => undefined)
      .then(() => {
        this.queued = null;
        return this.start();
      });
    return this.queued;
  }

  private start(): Promise<void> {
    const run = (async () => {
      const handle = await open(this.dir, constants.O_RDONLY | constants.O_DIRECTORY);
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    })();
    const tracked: Promise<void> = run.finally(() => {
      if (this.inFlight === tracked) this.inFlight = null;
    });
    tracked.catch(() => undefined); // the caller of start() sees the failure
    this.inFlight = tracked;
    return run;
  }
}

/** Mailbox names that can be folder names under the root, and nothing else. */
function mailboxFolder(root: string, mailbox: string): string {
  if (!/^[^/\\\u0000-\u001f]+@[^/\\\u0000-\u001f]+$/.test(mailbox) || mailbox.startsWith('.')) {
    throw new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${JSON.stringify(mailbox)} cannot be a Maildir folder name`);
  }
  const path = resolve(root, mailbox);
  if (!path.startsWith(root + sep)) {
    throw new PivotArchiveError(ErrorCode.SINK_WRITE, `mailbox ${JSON.stringify(mailbox)} would leave the Maildir root`);
  }
  return path;
}

/** A file name unique per (mailbox, Message-ID, second), so a re-run finds what it wrote before. */
export function maildirBaseName(delivery: Pick<Delivery, 'messageId' | 'internalDate'>): string {
  const key = sha256Hex(delivery.messageId).slice(0, 32);
  return `${Math.floor(delivery.internalDate / 1000)}.P${key}.pivot-archive`;
}

/**
 * In the Pivot folder, beside `maildirfolder`: the export ids ever delivered into it, one JSON
 * string per line. Mail servers ignore a plain file there (only `.`-folders are folders).
 */
export const EXPORTS_FILE = 'pivot-archive-exports';

/** `cur/` names of ours whose flags a mail client changed (anything but the `:2,S` we wrote). */
const RENAMED_BY_CLIENT = /^(\d+\.P[0-9a-f]{32}\.pivot-archive):2,(?!S$)/;

/** `make()` run once per key and remembered, unless it fails (the next caller tries again). */
function once<T>(cache: Map<string, Promise<T>>, key: string, make: () => Promise<T>): Promise<T> {
  let value = cache.get(key);
  if (!value) {
    value = make();
    value.catch(() => cache.delete(key));
    cache.set(key, value);
  }
  return value;
}

/** The export ids an exports file lists (none if there is none yet). */
async function readExportsFile(path: string): Promise<Set<string>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw err;
  }
  const ids = new Set<string>();
  for (const line of text.split('\n')) {
    try {
      const id: unknown = JSON.parse(line);
      if (typeof id === 'string') ids.add(id);
    } catch {
      // an empty last line, or one cut short by a crash
    }
  }
  return ids;
}

export class MaildirSink implements Sink {
  readonly kind = 'maildir';
  readonly description: string;
  readonly maxInFlight: number;
  private readonly prepared = new Map<string, Promise<string>>();
  /** Per folder: the export ids its exports file listed when this run first looked. */
  private readonly exportsListed = new Map<string, Promise<Set<string>>>();
  /** Per (folder, export): whether that export had been delivered into the folder before this run. */
  private readonly deliveredBefore = new Map<string, Promise<boolean>>();
  /** Per folder, listed once per run: base names of ours that a client renamed. */
  private readonly renamed = new Map<string, Promise<Set<string>>>();
  /**
   * Fan-out hands every mailbox of an item the same Buffer: its first file written (once durable;
   * undefined if that write failed), for the other mailboxes to link to. Weak, so it lives only
   * as long as the item's deliveries do.
   */
  private readonly firstCopy = new WeakMap<Buffer, Promise<{ base: string; path: string } | undefined>>();
  private readonly syncs = new Map<string, DirectorySync>();
  private readonly inFlight = new Set<Promise<unknown>>();
  private state: 'new' | 'open' | 'closed' = 'new';

  constructor(readonly config: MaildirSinkConfig) {
    this.description = `maildir:${config.root}`;
    this.maxInFlight = config.concurrency;
  }

  async open(): Promise<void> {
    await mkdir(this.config.root, { recursive: true });
    this.state = 'open';
  }

  write(delivery: Delivery): Promise<WriteOutcome> {
    if (this.state !== 'open') {
      return Promise.reject(new PivotArchiveError(ErrorCode.SINK_CLOSED, `maildir sink is ${this.state === 'new' ? 'not open' : 'closed'}`));
    }
    const work = this.deliver(delivery);
    this.inFlight.add(work);
    const forget = () => this.inFlight.delete(work);
    work.then(forget, forget);
    return work;
  }

  async close(): Promise<void> {
    this.state = 'closed';
    await Promise.allSettled([...this.inFlight]);
  }

  /** The Pivot folder of a mailbox, made once per run: the mailbox's own Maildir and the subfolder. */
  private folderOf(mailbox: string): Promise<string> {
    return once(this.prepared, mailbox, async () => {
      const home = mailboxFolder(this.config.root, mailbox);
      const folder = join(home, this.config.folder);
      for (const dir of [home, folder]) {
        for (const sub of ['cur', 'new', 'tmp']) await mkdir(join(dir, sub), { recursive: true });
      }
      await writeFile(join(folder, 'maildirfolder'), '');
      return folder;
    });
  }

  /**
   * Whether `exportId` was delivered into `folder` before this run. If not, it is recorded (and
   * synced) now, before the first of its messages lands, so that a later re-run knows to look.
   */
  private exportDeliveredBefore(folder: string, exportId: string): Promise<boolean> {
    return once(this.deliveredBefore, `${folder}\n${exportId}`, async () => {
      const listed = await once(this.exportsListed, folder, () => readExportsFile(join(folder, EXPORTS_FILE)));
      if (listed.has(exportId)) return true;
      const handle = await open(join(folder, EXPORTS_FILE), 'a');
      try {
        await handle.write(`${JSON.stringify(exportId)}\n`);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await this.syncOf(folder).sync(); // the file's name, if this made it
      return false;
    });
  }

  private renamedIn(folder: string): Promise<Set<string>> {
    return once(this.renamed, folder, async () => {
      const bases = new Set<string>();
      for await (const entry of await opendir(join(folder, 'cur'), { bufferSize: 1024 })) {
        const match = RENAMED_BY_CLIENT.exec(entry.name);
        if (match) bases.add(match[1]!);
      }
      return bases;
    });
  }

  /**
   * A copy as a hard link to the item's durable first file: linked into `tmp/` under this copy's
   * name, renamed into `cur/`, `cur/` synced, as Dovecot's own hard-link copy does. False where no
   * link can be made (the first file renamed by a client, another file system): then the caller
   * writes a file of its own.
   */
  private async linkCopy(from: string, folder: string, base: string, final: string): Promise<boolean> {
    const temporary = join(folder, 'tmp', base);
    try {
      await replacingStale(temporary, () => link(from, temporary));
    } catch {
      return false;
    }
    await rename(temporary, final);
    await this.syncOf(join(folder, 'cur')).sync();
    return true;
  }

  private syncOf(dir: string): DirectorySync {
    let sync = this.syncs.get(dir);
    if (!sync) this.syncs.set(dir, (sync = new DirectorySync(dir)));
    return sync;
  }

  private async deliver(delivery: Delivery): Promise<WriteOutcome> {
    const folder = await this.folderOf(delivery.mailbox);
    const base = maildirBaseName(delivery);
    const final = join(folder, 'cur', `${base}:2,S`);
    if ((await pathExists(final)) || (await pathExists(join(folder, 'new', base)))) return 'skipped';
    // A client that changes flags renames the file (`:2,S` -> `:2,FS`). Finding that takes a
    // listing of the folder, made only when this export went into the folder before (a re-run).
    if ((await this.exportDeliveredBefore(folder, delivery.exportId)) && (await this.renamedIn(folder)).has(base)) return 'skipped';
    if (this.config.links) {
      const copy = this.firstCopy.get(delivery.message);
      if (!copy) {
        const written = this.writeFile(delivery, folder, base, final);
        this.firstCopy.set(delivery.message, written.then(() => ({ base, path: final }), () => undefined));
        return written;
      }
      const first = await copy;
      if (first?.base === base && (await this.linkCopy(first.path, folder, base, final))) return 'delivered';
    }
    return this.writeFile(delivery, folder, base, final);
  }

  /** The Maildir delivery proper: `tmp/`, write, mtime, fsync, rename into `cur/`, sync `cur/`. */
  private async writeFile(delivery: Delivery, folder: string, base: string, final: string): Promise<WriteOutcome> {
    const temporary = join(folder, 'tmp', base);
    const handle = await replacingStale(temporary, () => open(temporary, 'wx'));
    try {
      await handle.writeFile(delivery.message);
      const time = new Date(delivery.internalDate);
      // Dovecot takes a Maildir file's mtime as the message's INTERNALDATE.
      await handle.utimes(time, time);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, final);
    await this.syncOf(join(folder, 'cur')).sync();
    return 'delivered';
  }
}

/** `create()` of a `tmp/` file; one of that name is left by a run killed before its rename (never delivered): replaced. */
async function replacingStale<T>(temporary: string, create: () => Promise<T>): Promise<T> {
  try {
    return await create();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    await unlink(temporary);
    return create();
  }
}

export const maildirSinkFactory: SinkFactory = {
  scheme: 'maildir',
  create: (spec, { cwd }) => new MaildirSink(parseMaildirSpec(spec, cwd)),
};
