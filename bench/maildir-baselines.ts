// The two yardsticks the maildir row is measured against (issue 11):
// - floor: the sink's own file operations for the same items, in a bare loop with no MIME work,
//   so the ratio says how much of the disk's speed the whole chain keeps: from Node's thread pool
//   with an fsync per file (as the sink did them before its file worker), and through the sink's
//   file worker (floor-group);
// - naive: what a quick script does (whole-file JSON.parse, nodemailer's MailComposer, plain
//   writes, no fsync, no dedup, members as conversations.json lists them), which is not durable.
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { link, mkdir, open, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { DirectorySync } from '../src/fs-util.js';
import { readCentralDirectory, readEntryBuffer } from '../src/formats/zip/index.js';
import type { Delivery } from '../src/model.js';
import { GroupCommit, type OpPlace } from '../src/sinks/maildir/group-commit.js';

/** What the floor needs of a delivery: no message, its size. */
export interface DeliveryShape {
  mailbox: string;
  size: number;
  time: number;
  copyKey?: string;
}

/** In flight at once from the thread pool, as the sink's `concurrency` was before its file worker. */
const IN_FLIGHT = 256;
/** In flight at once with the file worker, as the sink's default `concurrency`. */
const GROUP_IN_FLIGHT = 8192;

export function shapeOf(delivery: Delivery): DeliveryShape {
  return { mailbox: delivery.mailbox, size: delivery.message.length, time: delivery.internalDate, ...(delivery.copyKey !== undefined ? { copyKey: delivery.copyKey } : {}) };
}

/** A mailbox's Pivot folder with its cur/, new/ and tmp/, made as the sink makes it. */
async function makeFolder(root: string, mailbox: string): Promise<string> {
  const path = join(root, mailbox, '.INBOX.Pivot');
  for (const sub of ['cur', 'new', 'tmp']) await mkdir(join(path, sub), { recursive: true });
  await writeFile(join(path, 'maildirfolder'), '');
  return path;
}

/** The promise `make` gives for `key`, made once. */
function once<K, V>(made: Map<K, Promise<V>>, key: K, make: () => Promise<V>): Promise<V> {
  let value = made.get(key);
  if (!value) made.set(key, (value = make()));
  return value;
}

/**
 * The Maildir sink's file operations for these deliveries and nothing else: per mailbox its
 * folders once; per item its first copy written to `tmp/` (create, write, set mtime, fsync,
 * close), linked into `cur/`, the temporary unlinked; each later copy a link to the first; `cur/`
 * synced after each link (coalesced, as the sink did before its file worker). Returns the seconds
 * and CPU it took.
 */
export async function maildirFloor(root: string, shapes: DeliveryShape[]): Promise<{ seconds: number; cpu: NodeJS.CpuUsage }> {
  const payload = randomBytes(shapes.reduce((most, s) => Math.max(most, s.size), 1));
  const folders = new Map<string, Promise<string>>();
  const syncs = new Map<string, DirectorySync>();
  const firsts = new Map<string, Promise<string>>();
  let sequence = 0;
  const folderOf = (mailbox: string) => once(folders, mailbox, () => makeFolder(root, mailbox));
  const syncOf = (dir: string) => {
    let sync = syncs.get(dir);
    if (!sync) syncs.set(dir, (sync = new DirectorySync(dir)));
    return sync;
  };
  const deliver = async (shape: DeliveryShape) => {
    const folder = await folderOf(shape.mailbox);
    const name = `${++sequence}.floor`;
    const final = join(folder, 'cur', `${name}:2,S`);
    const first = shape.copyKey === undefined ? undefined : firsts.get(shape.copyKey);
    if (first) {
      await link(await first, final);
    } else {
      const written = (async () => {
        const temporary = join(folder, 'tmp', name);
        const handle = await open(temporary, 'wx');
        await handle.writeFile(payload.subarray(0, shape.size));
        const time = new Date(shape.time);
        await handle.utimes(time, time);
        await handle.sync();
        await handle.close();
        await link(temporary, final);
        await unlink(temporary);
        return final;
      })();
      if (shape.copyKey !== undefined) firsts.set(shape.copyKey, written);
      await written;
    }
    await syncOf(join(folder, 'cur')).sync();
  };
  const start = performance.now();
  const startCpu = process.cpuUsage();
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < shapes.length) await deliver(shapes[next++]!);
    }),
  );
  return { seconds: (performance.now() - start) / 1000, cpu: process.cpuUsage(startCpu) };
}

/**
 * The floor of the sink as it works now: the same file operations for the same items, through the
 * sink's own file worker (group-commit.ts: created and written in groups on a worker thread, one
 * syncfs per group), the main thread only posting, as many in flight as the sink's default.
 */
export async function maildirGroupFloor(root: string, shapes: DeliveryShape[]): Promise<{ seconds: number; cpu: NodeJS.CpuUsage }> {
  const payload = randomBytes(shapes.reduce((most, s) => Math.max(most, s.size), 1));
  const files = await GroupCommit.start();
  const folders = new Map<string, Promise<OpPlace>>();
  const firsts = new Map<string, Promise<string>>();
  let sequence = 0;
  const folderOf = (mailbox: string) =>
    once(folders, mailbox, async () => {
      const path = await makeFolder(root, mailbox);
      return { folder: path, dev: (await stat(path)).dev };
    });
  const deliver = async (shape: DeliveryShape) => {
    const place = await folderOf(shape.mailbox);
    const name = `${++sequence}.floor`;
    const final = join(place.folder, 'cur', `${name}:2,S`);
    const first = shape.copyKey === undefined ? undefined : firsts.get(shape.copyKey);
    if (first) return files.link(place, await first, final, false);
    const written = (async () => {
      const temporary = join(place.folder, 'tmp', name);
      await files.write(place, temporary, payload.subarray(0, shape.size), shape.time, undefined, final);
      return final;
    })();
    if (shape.copyKey !== undefined) firsts.set(shape.copyKey, written);
    await written;
  };
  const start = performance.now();
  const startCpu = process.cpuUsage();
  let next = 0;
  await Promise.all(
    Array.from({ length: GROUP_IN_FLIGHT }, async () => {
      while (next < shapes.length) await deliver(shapes[next++]!);
    }),
  );
  await files.close();
  return { seconds: (performance.now() - start) / 1000, cpu: process.cpuUsage(startCpu) };
}

interface NaiveEvent {
  id: string;
  conversationId: string;
  senderId: string;
  sentAt: string;
  type: string;
  text?: string;
  attachments?: { id: string; fileName?: string; contentType?: string }[];
}

/** The naive script: returns events read and files written. */
export async function naiveMaildir(archivePath: string, root: string): Promise<{ events: number; deliveries: number; bytes: number }> {
  const { default: MailComposer } = (await import('nodemailer/lib/mail-composer/index.js' as string)) as { default: new (mail: object) => { compile(): { build(): Promise<Buffer> } } };
  const handle = await open(archivePath, 'r');
  const { entries } = await readCentralDirectory({ label: archivePath, handle, size: (await handle.stat()).size });
  const json = async (name: string) => JSON.parse((await readEntryBuffer(entries.get(name)!, 2 ** 31 - 1)).toString('utf8')) as unknown;
  const users = new Map((await json('users.json') as { id: string; displayName: string; email: string | null }[]).map((u) => [u.id, u]));
  const members = new Map((await json('conversations.json') as { id: string; members: string[] }[]).map((c) => [c.id, c.members.map((m) => users.get(m)?.email).filter((e): e is string => !!e)]));
  const made = new Set<string>();
  let events = 0;
  let deliveries = 0;
  let bytes = 0;
  for (const entry of [...entries.values()].filter((e) => e.name.startsWith('messages/'))) {
    for (const event of (await json(entry.name)) as NaiveEvent[]) {
      events++;
      const sender = users.get(event.senderId);
      const to = members.get(event.conversationId) ?? [];
      const attachments = [];
      for (const a of event.attachments ?? []) {
        const content = entries.get(`attachments/${a.id}`);
        if (content) attachments.push({ filename: a.fileName ?? a.id, contentType: a.contentType ?? 'application/octet-stream', content: await readEntryBuffer(content, 2 ** 31 - 1) });
      }
      const message = await new MailComposer({
        from: { name: sender?.displayName ?? event.senderId, address: sender?.email ?? 'unknown@invalid' },
        to,
        subject: `Pivot ${event.type} in ${event.conversationId}`,
        date: new Date(event.sentAt),
        messageId: `<${event.id}@pivot.invalid>`,
        text: event.text ?? '',
        attachments,
      })
        .compile()
        .build();
      await Promise.all(
        to.map(async (mailbox) => {
          const cur = join(root, mailbox, 'cur');
          if (!made.has(cur)) {
            made.add(cur);
            mkdirSync(cur, { recursive: true });
          }
          writeFileSync(join(cur, `${event.id}.naive`), message);
          deliveries++;
          bytes += message.length;
        }),
      );
    }
  }
  await handle.close();
  return { events, deliveries, bytes };
}
