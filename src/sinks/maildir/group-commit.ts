// Group commit for the Maildir sink. A durable delivery costs a file fsync and a directory fsync;
// done one by one from Node's thread pool they were the sink's whole time (issue 11: the bare file
// operations ran at 0.55x a non-durable script). Here a worker thread does the file operations
// synchronously, in groups: it creates and writes every file posted since its last group, makes
// the links and renames posted, then one syncfs per file system makes all of them durable, and
// each is answered only then. syncfs (Linux 5.8 on) on a descriptor held open since before the
// first write reports every writeback error on that file system since its previous call, so a
// lost write is never answered as durable; when it reports one, every operation of the group on
// that file system fails (an fsync of its own can answer 0 for what an aborted journal lost). One
// perl for the run makes the calls (see group-commit-worker.ts). Where syncfs cannot be called,
// each file and directory is fsynced (still in groups, off the main thread).
import { once } from 'node:events';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { SHORTAGE_PATIENCE_MS, descriptorShortage, shortageDelay } from './descriptors.js';

/** A file operation, as posted to the worker (by id, answered by id). */
export type FileOp = { id: number; dev: number; folder: string; identity?: number } & OpBody;

/** What is posted to the worker at a time: operations, and the bytes of their writes one after another. */
export interface OpBatch {
  ops: FileOp[];
  /** A write's bytes are `bytes[at, at + length)`: one buffer a batch, not one a message (each costs the GC). */
  bytes: ArrayBuffer;
}

type OpBody =
  | { kind: 'write'; path: string; at: number; length: number; mtime: number; owner?: { uid: number; gid: number }; linkTo?: string }
  | { kind: 'link'; from: string; to: string; removeFrom: boolean }
  | { kind: 'rename'; from: string; to: string };

export interface OpAnswer {
  id: number;
  /**
   * `written`: the error is the link's after a durable write (the file is still in `tmp/`).
   * `folderLost`: the name was published, but the folder's `cur/` is gone or is another directory
   * than `OpPlace.identity` (removed during the run, perhaps made again): see `folderLost`.
   */
  error?: { message: string; code?: string; written?: boolean; folderLost?: boolean };
}

/** Whether an operation's error came after its file was written and made durable (it is still in `tmp/`). */
export function writtenBeforeError(err: unknown): boolean {
  return (err as { written?: boolean } | undefined)?.written === true;
}

export interface WorkerSetup {
  port: MessagePort;
  group: { count: number; bytes: number };
}

/** Files per group at most, and bytes: a group is one sync, and its bytes are held until it is done. */
export const GROUP = { count: 4096, bytes: 64 << 20 };

/**
 * Where a file operation happens: the folder (a directory on the file system `dev`), and which
 * directory its `cur/` was when the sink prepared the folder (`directoryIdentity`): a publication
 * answers `folderLost` when, once durable, `cur/` is gone or is another one. Without `identity`
 * (the bench's floor) nothing is checked.
 */
export interface OpPlace {
  folder: string;
  dev: number;
  identity?: number;
}

/** What the worker posts to its parent once its modules are loaded and it listens. */
export const WORKER_READY = 'ready';

/** The main thread's side: posts operations (batched per turn of the event loop) and settles each on its answer. */
export class GroupCommit {
  /**
   * A worker started and listening. Its modules are read from disk as it starts: under a low
   * `ulimit -n` that read can meet EMFILE (CI, 2026-12-02: every one of 600 deliveries failed
   * "maildir file worker exited (1)"), a passing shortage, so the start is tried again as a
   * delivery is (not past `stop`); any other failure to start is the caller's error.
   */
  static async start(group: { count: number; bytes: number } = GROUP, stop?: AbortSignal): Promise<GroupCommit> {
    const since = Date.now();
    for (let tries = 0; ; tries++) {
      try {
        const files = new GroupCommit(group);
        await files.ready;
        return files;
      } catch (err) {
        // A thread not made for want of a descriptor is ERR_WORKER_INIT_FAILED, its message naming EMFILE.
        const shortage = descriptorShortage(err) || ((err as { code?: string }).code === 'ERR_WORKER_INIT_FAILED' && /\bE[MN]FILE\b/.test((err as Error).message));
        if (!shortage || Date.now() - since > SHORTAGE_PATIENCE_MS || stop?.aborted) throw new Error(`the Maildir file worker did not start: ${(err as Error).message}`, { cause: err });
      }
      await new Promise((resolve) => setTimeout(resolve, shortageDelay(tries)));
    }
  }

  private readonly worker: Worker;
  /** Settles once the worker listens (WORKER_READY), or with why it never will. */
  private readonly ready: Promise<void>;
  private readonly port: MessagePort;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private batch: FileOp[] = [];
  /** The bytes of the batch's writes, copied into one buffer when it is posted. */
  private pieces: Uint8Array[] = [];
  private batchBytes = 0;
  private ids = 0;
  private failure: Error | undefined;

  /** `group`: files a group holds at most (each open from its create until the group is durable), and bytes. Use `start()`. */
  private constructor(group: { count: number; bytes: number }) {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.worker = new Worker(new URL('./group-commit-worker.js', import.meta.url), {
      workerData: { port: port2, group } satisfies WorkerSetup,
      transferList: [port2],
      // None of the process's flags: some (--input-type with -e) refuse a worker loaded from a file.
      execArgv: [],
    });
    this.port.on('message', (answers: OpAnswer[]) => {
      for (const { id, error } of answers) {
        const waiter = this.waiting.get(id)!;
        this.waiting.delete(id);
        if (!error) waiter.resolve();
        else waiter.reject(Object.assign(new Error(error.message), error.code ? { code: error.code } : {}, error.written ? { written: true } : {}, error.folderLost ? { folderLost: true } : {}));
      }
      if (this.waiting.size === 0) this.port.unref();
    });
    // A worker that dies fails what it held: none of it is answered durable.
    const fail = (err: Error) => {
      this.failure = err;
      for (const waiter of this.waiting.values()) waiter.reject(err);
      this.waiting.clear();
    };
    this.ready = new Promise<void>((resolve, reject) => {
      this.worker.once('message', (message) => (message === WORKER_READY ? resolve() : reject(new Error(`unexpected message ${String(message)}`))));
      this.worker.once('error', reject);
      this.worker.once('exit', (code) => reject(new Error(`exited (${code})`)));
    });
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`maildir file worker exited (${code})`)));
    // Idle, it does not keep the process alive (starting, it does: `start()` waits for it).
    void this.ready.then(
      () => this.worker.unref(),
      () => undefined,
    );
    this.port.unref();
  }

  /**
   * A file created (exclusively), written, given its mtime (and owner), durable once this
   * resolves; with `linkTo`, then linked there (never replacing a name) and its own name removed,
   * in the worker's next group, and this resolves once that name is durable: one round trip, and
   * the worker does not wait for this thread between the two. A failed write leaves no file; a
   * failed link leaves the durable file at `path` (the error says `written`). `data` is copied
   * (when the batch is posted) into a buffer the worker takes over: the caller's stays its own.
   */
  write(place: OpPlace, path: string, data: Uint8Array, mtime: number, owner?: { uid: number; gid: number }, linkTo?: string): Promise<void> {
    const at = this.batchBytes;
    this.pieces.push(data);
    this.batchBytes += data.length;
    return this.post(place, { kind: 'write', path, at, length: data.length, mtime, ...(owner ? { owner } : {}), ...(linkTo !== undefined ? { linkTo } : {}) });
  }

  /** `link(from, to)`, its directory entry durable once this resolves; `removeFrom`: `from` then unlinked. */
  link(place: OpPlace, from: string, to: string, removeFrom: boolean): Promise<void> {
    return this.post(place, { kind: 'link', from, to, removeFrom });
  }

  /** `rename(from, to)`, durable once this resolves. */
  rename(place: OpPlace, from: string, to: string): Promise<void> {
    return this.post(place, { kind: 'rename', from, to });
  }

  private post(place: OpPlace, body: OpBody): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const id = ++this.ids;
    if (this.batch.length === 0) setImmediate(() => this.flush());
    this.batch.push({ id, dev: place.dev, folder: place.folder, ...(place.identity !== undefined ? { identity: place.identity } : {}), ...body });
    if (this.waiting.size === 0) this.port.ref();
    return new Promise<void>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
  }

  private flush(): void {
    const bytes = new Uint8Array(this.batchBytes);
    let at = 0;
    for (const piece of this.pieces) {
      bytes.set(piece, at);
      at += piece.length;
    }
    this.port.postMessage({ ops: this.batch, bytes: bytes.buffer } satisfies OpBatch, [bytes.buffer]);
    this.batch = [];
    this.pieces = [];
    this.batchBytes = 0;
  }

  /** Ends the worker (it closes its descriptors and exits); called once no operation is waiting. */
  async close(): Promise<void> {
    if (this.failure) return;
    this.worker.ref();
    const exited = once(this.worker, 'exit');
    this.port.close();
    await exited;
  }
}
