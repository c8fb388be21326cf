// The two yardsticks the maildir row is measured against (issue 11):
// - floor: the sink's own file operations for the same items, in a bare loop with no MIME work,
//   so the ratio says how much of the disk's speed the whole chain keeps;
// - naive: what a quick script does (whole-file JSON.parse, nodemailer's MailComposer, plain
//   writes, no fsync, no dedup, members as conversations.json lists them), which is not durable.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fsyncSync, futimesSync, linkSync, mkdirSync, openSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { isMainThread, MessageChannel, receiveMessageOnPort, Worker, workerData, type MessagePort } from 'node:worker_threads';
import { link, mkdir, open, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { DirectorySync } from '../src/fs-util.js';
import { readCentralDirectory, readEntryBuffer } from '../src/formats/zip/index.js';
import type { Delivery } from '../src/model.js';

/** What the floor needs of a delivery: no message, its size. */
export interface DeliveryShape {
  mailbox: string;
  size: number;
  time: number;
  copyKey?: string;
}

/** In flight at once, as the sink's default `concurrency`. */
const IN_FLIGHT = 256;

export function shapeOf(delivery: Delivery): DeliveryShape {
  return { mailbox: delivery.mailbox, size: delivery.message.length, time: delivery.internalDate, ...(delivery.copyKey !== undefined ? { copyKey: delivery.copyKey } : {}) };
}

/**
 * The Maildir sink's file operations for these deliveries and nothing else: per mailbox its
 * folders once; per item its first copy written to `tmp/` (create, write, set mtime, fsync,
 * close), linked into `cur/`, the temporary unlinked; each later copy a link to the first; `cur/`
 * synced after each link (coalesced, as the sink does). Returns the seconds and CPU it took.
 */
export async function maildirFloor(root: string, shapes: DeliveryShape[]): Promise<{ seconds: number; cpu: NodeJS.CpuUsage }> {
  const payload = randomBytes(shapes.reduce((most, s) => Math.max(most, s.size), 1));
  const folders = new Map<string, Promise<string>>();
  const syncs = new Map<string, DirectorySync>();
  const firsts = new Map<string, Promise<string>>();
  let sequence = 0;
  const folderOf = (mailbox: string) => {
    let folder = folders.get(mailbox);
    if (!folder) {
      folder = (async () => {
        const path = join(root, mailbox, '.INBOX.Pivot');
        for (const sub of ['cur', 'new', 'tmp']) await mkdir(join(path, sub), { recursive: true });
        await writeFile(join(path, 'maildirfolder'), '');
        return path;
      })();
      folders.set(mailbox, folder);
    }
    return folder;
  };
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
 * How the worker floor makes a group durable:
 * - `fsync`: an fsync per file, then one per directory touched;
 * - `syncfs`: one syncfs on a descriptor the worker holds open (its error report covers every
 *   writeback error on the file system since the previous call), after the files and again after
 *   the links;
 * - `sync-f-check`: `sync -f` (a descriptor opened afresh: blind to errors before its open), then
 *   an fsync of each file still open (cheap, and honest for that file), then one fsync per
 *   directory touched.
 */
export type GroupSync = 'fsync' | 'syncfs' | 'sync-f-check';

interface FloorItem {
  id: number;
  mailbox: string;
  time: number;
  copyKey?: string;
  /** Absent for a copy that links to its item's first file. */
  data?: ArrayBuffer;
}

/** syncfs(2)'s number: Node has no binding, perl's syscall() calls it on an inherited descriptor. */
const SYNCFS = ({ x64: 306, arm64: 267 } as Record<string, number>)[process.arch];

/** syncfs on descriptor `fd` of this process (passed to perl as its fd 3: the same open file). */
function syncfs(fd: number): void {
  const run = spawnSync('perl', ['-e', `exit(syscall(${SYNCFS}, 3) < 0 ? ($! + 0) : 0)`], { stdio: ['ignore', 'ignore', 'inherit', fd] });
  if (run.error) throw run.error;
  if (run.status !== 0) throw new Error(`syncfs failed: errno ${run.status}`);
}

/**
 * The floor with the file operations on a worker thread, synchronously, in groups (`count` items
 * or `bytes`, whichever first): each group's files created and written in `tmp/`, made durable
 * (`sync`), linked into `cur/` (an item's later copies linked to its first file), their `tmp/`
 * names removed, the directories made durable; the main thread only posts the bytes (transferred,
 * not copied) and waits for each item's answer, as a sink would.
 */
export async function maildirGroupFloor(root: string, shapes: DeliveryShape[], sync: GroupSync, group = { count: 2000, bytes: 64 << 20 }): Promise<{ seconds: number; cpu: NodeJS.CpuUsage }> {
  const payload = randomBytes(shapes.reduce((most, s) => Math.max(most, s.size), 1));
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(new URL(import.meta.url), { workerData: { floorWorker: true, root, sync, group, port: port2 }, transferList: [port2] });
  const waiting = new Map<number, () => void>();
  port1.on('message', (ids: number[]) => {
    for (const id of ids) {
      waiting.get(id)!();
      waiting.delete(id);
    }
  });
  let batch: FloorItem[] = [];
  const post = () => {
    if (batch.length === 0) return;
    port1.postMessage(batch, batch.flatMap((item) => (item.data ? [item.data] : [])));
    batch = [];
  };
  const posted = new Set<string>();
  const start = performance.now();
  const startCpu = process.cpuUsage();
  // The sink's pipeline holds a bounded window: here 4 groups.
  const window = group.count * 4;
  let next = 0;
  await Promise.all(
    Array.from({ length: window }, async () => {
      while (next < shapes.length) {
        const id = next++;
        const shape = shapes[id]!;
        const first = shape.copyKey === undefined || !posted.has(shape.copyKey);
        if (shape.copyKey !== undefined) posted.add(shape.copyKey);
        let data: ArrayBuffer | undefined;
        if (first) {
          // A message of its own, as the MIME stage hands each item a Buffer of its own.
          data = new ArrayBuffer(shape.size);
          payload.copy(new Uint8Array(data), 0, 0, shape.size);
        }
        const done = new Promise<void>((resolve) => waiting.set(id, resolve));
        if (batch.length === 0) setImmediate(post);
        batch.push({ id, mailbox: shape.mailbox, time: shape.time, ...(shape.copyKey !== undefined ? { copyKey: shape.copyKey } : {}), ...(data ? { data } : {}) });
        await done;
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(startCpu);
  port1.close();
  await worker.terminate();
  return { seconds, cpu };
}

/** The worker side of maildirGroupFloor. */
function groupFloorWorker({ root, sync, group, port }: { root: string; sync: GroupSync; group: { count: number; bytes: number }; port: MessagePort }): void {
  const queue: FloorItem[] = [];
  const folders = new Set<string>();
  const firsts = new Map<string, string>();
  let sequence = 0;
  mkdirSync(root, { recursive: true });
  const rootFd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
  const folderOf = (mailbox: string) => {
    const path = join(root, mailbox, '.INBOX.Pivot');
    if (!folders.has(path)) {
      for (const sub of ['cur', 'new', 'tmp']) mkdirSync(join(path, sub), { recursive: true });
      writeFileSync(join(path, 'maildirfolder'), '');
      folders.add(path);
    }
    return path;
  };
  const fsyncPath = (path: string) => {
    const fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  };
  const work = () => {
    for (let message; (message = receiveMessageOnPort(port)); ) queue.push(...(message.message as FloorItem[]));
    while (queue.length > 0) {
      let bytes = 0;
      let count = 0;
      while (count < queue.length && count < group.count && bytes < group.bytes) bytes += queue[count++]!.data?.byteLength ?? 0;
      const items = queue.splice(0, count);
      const written: { item: FloorItem; temporary: string; final: string; fd?: number }[] = [];
      const linked: { source: string; final: string }[] = [];
      for (const item of items) {
        const folder = folderOf(item.mailbox);
        const name = `${++sequence}.floor`;
        const final = join(folder, 'cur', `${name}:2,S`);
        if (!item.data) {
          linked.push({ source: firsts.get(item.copyKey!)!, final });
          continue;
        }
        const temporary = join(folder, 'tmp', name);
        const fd = openSync(temporary, 'wx');
        writeSync(fd, new Uint8Array(item.data));
        futimesSync(fd, item.time / 1000, item.time / 1000);
        if (sync === 'fsync') fsyncSync(fd);
        if (sync === 'sync-f-check') written.push({ item, temporary, final, fd });
        else {
          closeSync(fd);
          written.push({ item, temporary, final });
        }
        if (item.copyKey !== undefined) firsts.set(item.copyKey, final);
      }
      if (sync === 'syncfs') syncfs(rootFd);
      if (sync === 'sync-f-check') {
        const run = spawnSync('sync', ['-f', root], { stdio: 'inherit' });
        if (run.status !== 0) throw new Error('sync -f failed');
        for (const w of written) {
          fsyncSync(w.fd!);
          closeSync(w.fd!);
        }
      }
      const touched = new Set<string>();
      for (const w of written) {
        linkSync(w.temporary, w.final);
        unlinkSync(w.temporary);
        touched.add(dirname(w.final));
      }
      for (const l of linked) {
        linkSync(l.source, l.final);
        touched.add(dirname(l.final));
      }
      if (sync === 'syncfs') syncfs(rootFd);
      else for (const dir of touched) fsyncPath(dir);
      port.postMessage(items.map((item) => item.id));
      for (let message; (message = receiveMessageOnPort(port)); ) queue.push(...(message.message as FloorItem[]));
    }
  };
  port.on('message', (items: FloorItem[]) => {
    queue.push(...items);
    work();
  });
}

if (!isMainThread && (workerData as { floorWorker?: boolean } | undefined)?.floorWorker) groupFloorWorker(workerData);

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
