// The Maildir sink's file operations, on a worker thread, synchronously, in groups (group commit):
// every operation the sink posted since the last group is done, then one sync makes them all
// durable, then each is answered. See group-commit.ts for the main thread's side and why. A name
// published is answered only once its folder's `cur/` is found to be the one the sink prepared
// (`folderLostReason`): a folder removed during the run fails the write as storage lost.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, constants, fchownSync, fsyncSync, futimesSync, linkSync, mkdtempSync, openSync, readSync, renameSync, rmSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { constants as osConstants, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { WORKER_READY, type FileOp, type OpAnswer, type OpBatch, type WorkerSetup } from './group-commit.js';
import { directoryIdentity } from './folder-identity.js';

/** syncfs(2)'s number where it is known: Node has no binding, perl's syscall() makes the call. */
const SYNCFS = ({ x64: 306, arm64: 267 } as Partial<Record<string, number>>)[process.arch];

/** Linux 5.8 on: syncfs reports writeback errors since the descriptor's open (errseq), not only the file system's own. */
function kernelReportsWritebackErrors(): boolean {
  const [major = 0, minor = 0] = release().split('.').map(Number);
  return process.platform === 'linux' && (major > 5 || (major === 5 && minor >= 8));
}

/**
 * The perl that makes the syncfs calls: reads `o <path in hex>` (answers the index of a directory
 * descriptor it opened on that file system, or `e<errno>`) and `s <index>` (answers syncfs's errno,
 * 0 when it worked) a line each, and ends when its requests end (the worker closed, or died).
 */
const SYNCFS_HELPER = `use Fcntl; open(my $in, '<', $ARGV[0]) or exit 1; open(my $out, '>', $ARGV[1]) or exit 1; select($out); $| = 1; my @fs;
while (my $line = <$in>) {
  if ($line =~ /^o ([0-9a-f]*)$/) { if (sysopen(my $fh, pack('H*', $1), O_RDONLY | O_DIRECTORY)) { push @fs, $fh; print $#fs, "\\n" } else { print 'e', $! + 0, "\\n" } }
  elsif ($line =~ /^s (\\d+)$/ && defined $fs[$1]) { print syscall(${SYNCFS}, fileno($fs[$1])) < 0 ? $! + 0 : 0, "\\n" }
  else { exit 2 }
}`;

/** How long the worker waits for the helper to start (open its end of the requests) before it does without. */
const HELPER_START_MS = 10_000;

/**
 * One perl for the run, spoken to over two FIFOs, synchronously. A perl spawned per group forked
 * this whole process each time, and after each fork every page the main thread wrote faulted
 * (copy-on-write, with a TLB shootdown on the other core): measured 2026-12-01, 20k events, 159
 * groups, the Maildir stage took 40.4 s, and 12.1 s with the syncfs calls left out.
 */
class SyncfsHelper {
  private constructor(
    private readonly requests: number,
    private readonly answers: number,
  ) {}

  /** The helper started, or null where it cannot be (no perl, no FIFO, no answer in time). */
  static start(): SyncfsHelper | null {
    if (SYNCFS === undefined) return null;
    let dir: string | undefined;
    let perl: ReturnType<typeof spawn> | undefined;
    /** The worker's ends opened so far: closed when the start fails. */
    const ends: number[] = [];
    const openEnd = (path: string, flags: number) => {
      const fd = openSync(path, flags);
      ends.push(fd);
      return fd;
    };
    const since = Date.now();
    const waitOrGiveUp = () => {
      if (Date.now() - since > HELPER_START_MS) throw new Error('the syncfs helper did not start in time');
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    };
    try {
      dir = mkdtempSync(join(tmpdir(), 'pivot-archive-syncfs-'));
      const [requestsPath, answersPath] = [join(dir, 'requests'), join(dir, 'answers')];
      const made = spawnSync('mkfifo', ['-m', '600', requestsPath, answersPath], { stdio: 'ignore' });
      if (made.error || made.status !== 0) return null;
      perl = spawn('perl', ['-e', SYNCFS_HELPER, requestsPath, answersPath], { stdio: 'ignore' });
      // Its failure to start after exec is seen as no reader in time, below.
      perl.on('error', () => undefined);
      // No perl on PATH is known at once (no pid): not worth the wait below.
      if (perl.pid === undefined) return null;
      perl.unref();
      // Non-blocking, so a perl that never opens its end is waited for a bounded time (ENXIO until it does).
      let requests: number | undefined;
      while (requests === undefined) {
        try {
          requests = openEnd(requestsPath, constants.O_WRONLY | constants.O_NONBLOCK);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw err;
          waitOrGiveUp();
        }
      }
      // perl opens its answers right after its requests, but a blocking open here would wait for
      // ever for a perl killed in between (and the run with it, deaf to SIGINT and SIGTERM). A
      // non-blocking end is read instead: EOF while perl has no writer open, EAGAIN once it has.
      const probe = openEnd(answersPath, constants.O_RDONLY | constants.O_NONBLOCK);
      const perlWriting = () => {
        try {
          return readSync(probe, Buffer.alloc(1)) !== 0;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return true;
          throw err;
        }
      };
      while (!perlWriting()) waitOrGiveUp();
      // The answers are read blocking, from an end opened while the worker holds a writer of its
      // own (so that open cannot wait either), closed then: perl's death is EOF there.
      const own = openEnd(answersPath, constants.O_WRONLY | constants.O_NONBLOCK);
      const answers = openEnd(answersPath, constants.O_RDONLY);
      closeSync(own);
      closeSync(probe);
      return new SyncfsHelper(requests, answers);
    } catch {
      for (const fd of ends) closeSync(fd);
      // Of no use now: not left waiting at an end the worker gave up.
      perl?.kill('SIGKILL');
      return null;
    } finally {
      // Both ends open (or given up): the names are not needed any more.
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    }
  }

  /** One request, its answer line; null when the helper is gone. */
  private ask(request: string): string | null {
    try {
      writeSync(this.requests, `${request}\n`);
      let line = '';
      const buffer = Buffer.alloc(64);
      while (!line.endsWith('\n')) {
        const n = readSync(this.answers, buffer, 0, buffer.length, null);
        if (n === 0) return null;
        line += buffer.toString('latin1', 0, n);
      }
      return line.slice(0, -1);
    } catch {
      return null;
    }
  }

  /** The helper's descriptor on the file system of `directory`, opened now (before the worker writes there): its index, an errno, or null when the helper is gone. */
  open(directory: string): { index: number } | { errno: number } | null {
    const answer = this.ask(`o ${Buffer.from(directory).toString('hex')}`);
    if (answer === null) return null;
    return answer.startsWith('e') ? { errno: Number(answer.slice(1)) } : { index: Number(answer) };
  }

  /** syncfs on that descriptor: undefined when it worked, else the errno; null when the helper is gone. */
  syncfs(index: number): number | undefined | null {
    const answer = this.ask(`s ${index}`);
    if (answer === null) return null;
    return answer === '0' ? undefined : Number(answer);
  }

  close(): void {
    closeSync(this.requests);
    closeSync(this.answers);
  }
}

/**
 * Removes a name, its failure ignored: after a failed write the write's error is the one to
 * report; after a publish, a `tmp/` name left over is removed by a later run.
 */
function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // see above
  }
}

/** Why fsync on `fd` failed, if it did. */
function fsyncError(fd: number): Error | undefined {
  try {
    fsyncSync(fd);
    return undefined;
  } catch (err) {
    return err as Error;
  }
}

/** syncfs's errno as an error with its code (EIO, ENOSPC), as the sink reports a write's. */
function syncfsError(errno: number): Error {
  const code = Object.entries(osConstants.errno).find(([, n]) => n === errno)?.[0] ?? `errno ${errno}`;
  return Object.assign(new Error(`${code}: the file system reported a write error when this group of files was made durable (syncfs); not counted as stored`), { code });
}

function fsyncPath(path: string): void {
  const fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** An error as it crosses to the main thread: its code kept, so the sink can tell EEXIST and ENOENT. */
function answerOf(id: number, err: unknown, written = false): OpAnswer {
  const e = err as NodeJS.ErrnoException;
  return { id, error: { message: e.message ?? String(err), ...(e.code ? { code: e.code } : {}), ...(written ? { written } : {}) } };
}

/** A durable file's publication, done in the group after its write's (the second half of a write with `linkTo`). */
interface Publication {
  id: number;
  dev: number;
  folder: string;
  identity?: number;
  from: string;
  to: string;
}

/**
 * Why a publication in `folder` does not count though its name is durable: the folder's `cur/` is
 * gone, or is not the directory `identity` says (the folder removed during the run, perhaps made
 * again at the same path), so what the sink published there before may be gone with it. Undefined
 * when it is the same. Asked after the group's sync: a folder removed after that is seen by the
 * folder's next publication.
 */
function folderLostReason(folder: string, identity: number | undefined): string | undefined {
  if (identity === undefined) return undefined;
  let now: number;
  try {
    now = directoryIdentity(statSync(join(folder, 'cur'), { bigint: true }));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Only a path that is gone says the folder went; any other error (EACCES: a mode changed) fails the write as itself.
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
    return `${folder}/cur cannot be found any more (${code})`;
  }
  return now === identity ? undefined : `${folder}/cur is another directory than the one this run prepared (made again at that path)`;
}

/** An operation as received, a write with a view of its bytes. */
type QueuedOp = Exclude<FileOp, { kind: 'write' }> | (Extract<FileOp, { kind: 'write' }> & { data: Uint8Array });

function groupCommit({ port, group }: WorkerSetup): void {
  const queue: QueuedOp[] = [];
  /** Files made durable by the last group, to be published by the next. */
  let publications: Publication[] = [];
  /**
   * Per file system (st_dev): a descriptor of the worker's and one of the syncfs helper's
   * (`helperIndex`, when grouped), opened before the first write to it: the helper's syncfs
   * reports every writeback error since, the worker's fsync tells a file system gone read-only.
   */
  const fileSystems = new Map<number, { fd: number; helperIndex?: number }>();
  // syncfs where it reports errors honestly, else an fsync per file and per directory.
  let grouped = kernelReportsWritebackErrors() && SYNCFS !== undefined;
  /** Started for the first file system, when grouped. */
  let helper: SyncfsHelper | null | undefined;
  /** The helper's descriptor there, or undefined: it cannot sync there (no helper, or its open failed), so nothing is grouped from now on. */
  const helperIndexOf = (folder: string): number | undefined => {
    if (!grouped) return undefined;
    helper ??= SyncfsHelper.start();
    const opened = helper?.open(folder);
    return opened && 'index' in opened ? opened.index : undefined;
  };

  const receive = ({ ops, bytes }: OpBatch) => {
    for (const op of ops) queue.push(op.kind === 'write' ? { ...op, data: new Uint8Array(bytes, op.at, op.length) } : op);
  };
  const take = () => {
    for (let message; (message = receiveMessageOnPort(port)); ) receive(message.message as OpBatch);
  };

  const work = () => {
    take();
    while (queue.length > 0 || publications.length > 0) {
      let bytes = 0;
      let count = 0;
      while (count < queue.length && count < group.count && bytes < group.bytes) {
        const op = queue[count++]!;
        if (op.kind === 'write') bytes += op.length;
      }
      commit(queue.splice(0, count));
      take();
    }
  };

  const commit = (ops: QueuedOp[]) => {
    const answers: OpAnswer[] = [];
    const written: { id: number; fd: number; path: string; dev: number; folder: string; identity?: number; linkTo?: string }[] = [];
    const published: { id: number; dir: string; dev: number; folder: string; identity?: number }[] = [];
    for (const p of publications) {
      try {
        linkSync(p.from, p.to);
      } catch (err) {
        answers.push(answerOf(p.id, err, true));
        continue;
      }
      removeQuietly(p.from);
      published.push({ id: p.id, dir: dirname(p.to), dev: p.dev, folder: p.folder, identity: p.identity });
    }
    publications = [];
    for (const op of ops) {
      if (!fileSystems.has(op.dev)) {
        let fd: number;
        try {
          fd = openSync(op.folder, constants.O_RDONLY | constants.O_DIRECTORY);
        } catch (err) {
          answers.push(answerOf(op.id, err));
          continue;
        }
        const helperIndex = helperIndexOf(op.folder);
        // This group's files so far are fsynced one by one, as every later one is.
        if (helperIndex === undefined) grouped = false;
        fileSystems.set(op.dev, { fd, ...(helperIndex !== undefined ? { helperIndex } : {}) });
      }
      try {
        if (op.kind === 'write') {
          const fd = openSync(op.path, 'wx');
          try {
            const data = op.data;
            for (let at = 0; at < data.length; ) at += writeSync(fd, data, at);
            futimesSync(fd, op.mtime / 1000, op.mtime / 1000);
            if (op.owner) fchownSync(fd, op.owner.uid, op.owner.gid);
            if (!grouped) fsyncSync(fd);
          } catch (err) {
            closeSync(fd);
            removeQuietly(op.path);
            throw err;
          }
          written.push({ id: op.id, fd, path: op.path, dev: op.dev, folder: op.folder, identity: op.identity, ...(op.linkTo !== undefined ? { linkTo: op.linkTo } : {}) });
        } else {
          if (op.kind === 'link') linkSync(op.from, op.to);
          else renameSync(op.from, op.to);
          published.push({ id: op.id, dir: dirname(op.to), dev: op.dev, folder: op.folder, identity: op.identity });
          if (op.kind === 'link' && op.removeFrom) removeQuietly(op.from);
        }
      } catch (err) {
        answers.push(answerOf(op.id, err));
      }
    }
    // Per file system, why this group's operations there are not durable: syncfs reported an
    // error. Then none of them is vouched for, not even by an fsync of its own: once ext4's
    // journal aborted (a thin disk that ran out), an fsync of a directory whose transaction was
    // the aborted one answers 0 (measured: 139-252 links lost in 5 of 5 runs that were answered
    // so). A re-run delivers what is missing.
    const failedSync = new Map<number, Error>();
    const devs = new Set([...written.map((w) => w.dev), ...published.map((p) => p.dev)]);
    if (grouped) {
      for (const dev of devs) {
        const { fd, helperIndex } = fileSystems.get(dev)!;
        const errno = helper && helperIndex !== undefined ? helper.syncfs(helperIndex) : null;
        if (errno === null) {
          // No syncfs here: every file and directory is fsynced one by one from now on.
          grouped = false;
          break;
        }
        // syncfs answers 0 without syncing anything once the file system is read-only (Linux's
        // sync_filesystem), as ext4 makes itself when its journal aborts: an fsync there says why.
        const error = errno !== undefined ? syncfsError(errno) : fsyncError(fd);
        if (error) failedSync.set(dev, error);
      }
    }
    for (const w of written) {
      let error: unknown = failedSync.get(w.dev);
      if (error === undefined && !grouped) {
        try {
          fsyncSync(w.fd);
        } catch (err) {
          error = err;
        }
      }
      try {
        closeSync(w.fd);
      } catch (err) {
        error ??= err;
      }
      if (error !== undefined) {
        removeQuietly(w.path);
        answers.push(answerOf(w.id, error));
      } else if (w.linkTo !== undefined) publications.push({ id: w.id, dev: w.dev, folder: w.folder, identity: w.identity, from: w.path, to: w.linkTo });
      else answers.push({ id: w.id });
    }
    const dirs = new Map<string, unknown>();
    // Per folder and identity, once a group: whether its `cur/` is still the one the sink prepared.
    const lost = new Map<string, string | Error | undefined>();
    const answered = (p: (typeof published)[number]): OpAnswer => {
      const key = `${p.identity ?? ''} ${p.folder}`;
      if (!lost.has(key)) {
        try {
          lost.set(key, folderLostReason(p.folder, p.identity));
        } catch (err) {
          lost.set(key, err as Error);
        }
      }
      const reason = lost.get(key);
      if (reason instanceof Error) return answerOf(p.id, reason);
      return reason === undefined ? { id: p.id } : { id: p.id, error: { message: `the folder was removed during the run: ${reason}`, code: 'EFOLDERLOST', folderLost: true } };
    };
    for (const p of published) {
      const failed = failedSync.get(p.dev);
      if (failed !== undefined || grouped) {
        answers.push(failed === undefined ? answered(p) : answerOf(p.id, failed));
        continue;
      }
      if (!dirs.has(p.dir)) {
        try {
          fsyncPath(p.dir);
          dirs.set(p.dir, undefined);
        } catch (err) {
          dirs.set(p.dir, err);
        }
      }
      const error = dirs.get(p.dir);
      answers.push(error === undefined ? answered(p) : answerOf(p.id, error));
    }
    port.postMessage(answers);
  };

  port.on('message', (batch: OpBatch) => {
    receive(batch);
    work();
  });
  port.on('close', () => {
    for (const { fd } of fileSystems.values()) closeSync(fd);
    // Its requests end: it exits.
    helper?.close();
  });
}

groupCommit(workerData as WorkerSetup);
parentPort!.postMessage(WORKER_READY);
