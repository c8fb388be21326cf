// The Maildir sink's file operations, on a worker thread, synchronously, in groups (group commit):
// every operation the sink posted since the last group is done, then one sync makes them all
// durable, then each is answered. See group-commit.ts for the main thread's side and why.
import { spawnSync } from 'node:child_process';
import { closeSync, constants, fchownSync, fsyncSync, futimesSync, linkSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { release } from 'node:os';
import { dirname } from 'node:path';
import { receiveMessageOnPort, workerData } from 'node:worker_threads';
import type { FileOp, OpAnswer, OpBatch, WorkerSetup } from './group-commit.js';

/** syncfs(2)'s number where it is known: Node has no binding, perl's syscall() makes the call. */
const SYNCFS = ({ x64: 306, arm64: 267 } as Partial<Record<string, number>>)[process.arch];

/** Linux 5.8 on: syncfs reports writeback errors since the descriptor's open (errseq), not only the file system's own. */
function kernelReportsWritebackErrors(): boolean {
  const [major = 0, minor = 0] = release().split('.').map(Number);
  return process.platform === 'linux' && (major > 5 || (major === 5 && minor >= 8));
}

/**
 * syncfs on `fd`: perl's syscall() on its fd 3, which is `fd` itself (the same open file, so the
 * same error cursor). Undefined when it worked, else the errno; `null` when it cannot be called.
 */
function syncfs(fd: number): number | undefined | null {
  if (SYNCFS === undefined) return null;
  const run = spawnSync('perl', ['-e', `exit(syscall(${SYNCFS}, 3) < 0 ? ($! + 0) : 0)`], { stdio: ['ignore', 'ignore', 'ignore', fd] });
  if (run.error || run.status === null || run.status === 255) return null;
  return run.status === 0 ? undefined : run.status;
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
  from: string;
  to: string;
}

/** An operation as received, a write with a view of its bytes. */
type QueuedOp = Exclude<FileOp, { kind: 'write' }> | (Extract<FileOp, { kind: 'write' }> & { data: Uint8Array });

function groupCommit({ port, group }: WorkerSetup): void {
  const queue: QueuedOp[] = [];
  /** Files made durable by the last group, to be published by the next. */
  let publications: Publication[] = [];
  /** Per file system (st_dev): a descriptor opened before the first write to it, whose syncfs reports every writeback error since. */
  const fileSystems = new Map<number, number>();
  // syncfs where it reports errors honestly, else an fsync per file and per directory.
  let grouped = kernelReportsWritebackErrors() && SYNCFS !== undefined;

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
    const written: { id: number; fd: number; path: string; dev: number; linkTo?: string }[] = [];
    const published: { id: number; dir: string; dev: number }[] = [];
    for (const p of publications) {
      try {
        linkSync(p.from, p.to);
      } catch (err) {
        answers.push(answerOf(p.id, err, true));
        continue;
      }
      removeQuietly(p.from);
      published.push({ id: p.id, dir: dirname(p.to), dev: p.dev });
    }
    publications = [];
    for (const op of ops) {
      if (!fileSystems.has(op.dev)) {
        try {
          fileSystems.set(op.dev, openSync(op.folder, constants.O_RDONLY | constants.O_DIRECTORY));
        } catch (err) {
          answers.push(answerOf(op.id, err));
          continue;
        }
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
          written.push({ id: op.id, fd, path: op.path, dev: op.dev, ...(op.linkTo !== undefined ? { linkTo: op.linkTo } : {}) });
        } else {
          if (op.kind === 'link') linkSync(op.from, op.to);
          else renameSync(op.from, op.to);
          published.push({ id: op.id, dir: dirname(op.to), dev: op.dev });
          if (op.kind === 'link' && op.removeFrom) removeQuietly(op.from);
        }
      } catch (err) {
        answers.push(answerOf(op.id, err));
      }
    }
    // Which file systems' syncfs failed (or could not run): their writes and directories are
    // then checked one by one, each fsync reporting its own file's errors.
    const unsure = new Set<number>();
    const devs = new Set([...written.map((w) => w.dev), ...published.map((p) => p.dev)]);
    if (grouped) {
      for (const dev of devs) {
        const errno = syncfs(fileSystems.get(dev)!);
        if (errno === null) grouped = false;
        if (errno !== undefined) unsure.add(dev);
      }
    }
    for (const w of written) {
      let error: unknown;
      if (!grouped || unsure.has(w.dev)) {
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
      } else if (w.linkTo !== undefined) publications.push({ id: w.id, dev: w.dev, from: w.path, to: w.linkTo });
      else answers.push({ id: w.id });
    }
    const dirs = new Map<string, unknown>();
    for (const p of published) {
      if (grouped && !unsure.has(p.dev)) {
        answers.push({ id: p.id });
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
      answers.push(error === undefined ? { id: p.id } : answerOf(p.id, error));
    }
    port.postMessage(answers);
  };

  port.on('message', (batch: OpBatch) => {
    receive(batch);
    work();
  });
  port.on('close', () => {
    for (const fd of fileSystems.values()) closeSync(fd);
  });
}

groupCommit(workerData as WorkerSetup);
