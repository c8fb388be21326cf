import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, mkdir, open, readFile, readdir, realpath, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { makeDirectory, noHardLinks } from '../fs-util.js';
import { ErrorCode, PivotArchiveError, errorMessage } from '../errors.js';
import { PID_NAMESPACE, processGone, processStartTicks } from '../process-util.js';
import type { FailureRecord } from '../status-log.js';
import type { RecordedSummary } from '../summary.js';

/** A run log's number (`runs/run-00000042-<start time>-<pid>.jsonl`); older versions named them `<start time>-<pid>.jsonl`. */
const RUN_LOG_NUMBER = /^run-(\d+)-/;

/** A lock holder renews its lock this often... */
const LOCK_RENEW_MS = 30_000;
/** ...and a lock not renewed for this long is stale, whoever held it. */
export const LOCK_LEASE_MS = 10 * 60_000;
/** Tries to take the lock: each stale lock found costs one, a turn waited behind another breaker one. */
const LOCK_ATTEMPTS = 50;
/** A `lock.break` file of another host (or torn) this old was left by a run killed while it broke a stale lock. */
const LOCK_BREAK_STALE_MS = 30_000;

/**
 * What makes a pid mean one process: the kernel's boot (its random boot id: two hosts, or one host
 * rebooted, never share it) and the PID namespace (two containers of one kernel have pids of their
 * own: each pod's first process is pid 1). Undefined where it cannot be read (not Linux, no /proc).
 */
const PID_SCOPE: { bootId: string; pidNamespace: string } | undefined = (() => {
  try {
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return bootId && PID_NAMESPACE ? { bootId, pidNamespace: PID_NAMESPACE } : undefined;
  } catch {
    return undefined;
  }
})();

/** The host's own PID namespace (Linux's PROC_PID_INIT_INO): a process outside any container. */
const INITIAL_PID_NAMESPACE = 'pid:[4026531836]';

/** Linux hands out no pid above this (PID_MAX_LIMIT, 2^22), in any namespace. */
const PID_MAX_LIMIT = 4_194_304;

/** When this process started (see processStartTicks): a later process given our pid is another holder. */
const OWN_START_TICKS = PID_SCOPE ? processStartTicks('self') : undefined;

/** Who made a lock or turn file: our pid, host, PID_SCOPE and start, as JSON (with `extra`). */
function maker(extra: Record<string, string>): string {
  return JSON.stringify({ pid: process.pid, host: hostname(), ...PID_SCOPE, ...(OWN_START_TICKS ? { startTicks: OWN_START_TICKS } : {}), ...extra });
}

/**
 * What the pid a lock or turn file (JSON) names can tell: `comparable` (its pid is one of this
 * host's boot and PID namespace, so whether that process runs can be asked here), `impossible` (it
 * names this host and a pid no Linux kernel hands out: no process holds it), or nothing (undefined:
 * another host, boot or PID namespace; a file of a version that did not record the boot and
 * namespace, read in a container; a torn file). Only then is the pid looked at: the same pid in another namespace (pod
 * replacements of one Indexed Job index, both with the same host name and node as pid 1) is another
 * process, and a pid missing from ours may be running in its own.
 */
function localPid(content: string): { pid: number; comparable: boolean; startTicks?: string } | undefined {
  try {
    const made = JSON.parse(content) as { pid?: unknown; host?: unknown; bootId?: unknown; pidNamespace?: unknown; startTicks?: unknown };
    if (made.host !== hostname() || typeof made.pid !== 'number') return undefined;
    if (PID_SCOPE && made.bootId === PID_SCOPE.bootId && made.pidNamespace === PID_SCOPE.pidNamespace) {
      return { pid: made.pid, comparable: true, ...(typeof made.startTicks === 'string' ? { startTicks: made.startTicks } : {}) };
    }
    // A lock of an older version (no boot id, no namespace) is judged by its pid as it was only in
    // the host's initial PID namespace (no container: pids are the host's own); in a container its
    // pid may be another pod's of the same host name (that version took those over: two writers).
    if (made.bootId === undefined && made.pidNamespace === undefined && PID_SCOPE?.pidNamespace === INITIAL_PID_NAMESPACE) return { pid: made.pid, comparable: true };
    // Where neither can be read (not Linux, no /proc), by host and pid as ever: a killed run's lock is not held for the whole lease.
    if (!PID_SCOPE && made.bootId === undefined && made.pidNamespace === undefined) return { pid: made.pid, comparable: true };
    if (process.platform === 'linux' && made.pid > PID_MAX_LIMIT) return { pid: made.pid, comparable: false };
    return undefined;
  } catch {
    return undefined;
  }
}

/**
 * The holder the lock or turn file `content` names is known to be gone: its pid, comparable here,
 * runs no more, is ours (an earlier life of this pid), is a process started later than the holder
 * (the pid handed out again), or is impossible.
 */
function holderGone(content: string): boolean {
  const made = localPid(content);
  if (made === undefined) return false;
  if (!made.comparable || made.pid === process.pid || processGone(made.pid)) return true;
  const started = made.startTicks === undefined ? undefined : processStartTicks(made.pid);
  return started !== undefined && started !== made.startTicks;
}

/**
 * The holder `content` names is known to run: this host, boot and PID namespace, and the process
 * with its pid started when the holder did. Such a lock is held whatever its lease says: a holder
 * stopped a while (SIGSTOP, a paused container or VM, a clock stepped forward) goes on writing when
 * it resumes, and a second writer would interleave the ledger's lines.
 */
function holderRunning(content: string): boolean {
  const made = localPid(content);
  return made !== undefined && made.comparable && made.startTicks !== undefined && made.pid !== process.pid && processStartTicks(made.pid) === made.startTicks;
}

/** The file at `path` was last changed more than `ms` ago (false when it is gone). */
async function olderThan(path: string, ms: number): Promise<boolean> {
  const changed = await stat(path).then((s) => s.mtimeMs, () => undefined);
  return changed !== undefined && Date.now() - changed > ms;
}

/**
 * Why `path` cannot be made a directory (`err`: what the recursive mkdir said), from the nearest of
 * it and its parents that exists: a file in the way, or the error of making the first one missing
 * alone (a recursive mkdir says ENOENT where that parent is on a read-only file system).
 */
async function whyNotADirectory(path: string, err: unknown): Promise<string> {
  let missing: string | undefined;
  for (let at = path; ; missing = at, at = dirname(at)) {
    const info = await stat(at).catch(() => undefined);
    if (info && !info.isDirectory()) return `${at} is not a directory`;
    if (info) return missing === undefined ? errorMessage(err) : mkdir(missing).then(() => errorMessage(err), errorMessage);
    if (at === dirname(at)) return errorMessage(err);
  }
}

/** The path as the file system resolves it: symbolic links followed, as far as it exists. */
async function realPath(path: string): Promise<string> {
  const absolute = resolve(path);
  const parent = dirname(absolute);
  return realpath(absolute).catch(async () => (parent === absolute ? absolute : join(await realPath(parent), basename(absolute))));
}

/** Both exist and are one inode (hard links of each other). */
async function sameInode(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([stat(a).catch(() => undefined), stat(b).catch(() => undefined)]);
  return x !== undefined && y !== undefined && x.dev === y.dev && x.ino === y.ino;
}

/** `a` and `b` are one file: the same path once links are followed, or the same inode by a hard link. */
async function sameFile(a: string, b: string): Promise<boolean> {
  return (await realPath(a)) === (await realPath(b)) || sameInode(a, b);
}

/**
 * Refuses a status log or log file that would write one of the state dir's own files (its ledger is
 * hash-chained: a line of anything else breaks it for ever; its run logs and lock are its own), and one file
 * given as both (the status log holds records only). Before anything is written.
 */
export async function checkRecordPaths(paths: { statusLog?: string; logFile?: string; stateDir?: string }, cwd: string): Promise<void> {
  const state = paths.stateDir === undefined ? undefined : new StateDir(resolve(cwd, paths.stateDir));
  for (const [flag, path] of [['--status-log', paths.statusLog], ['--log-file', paths.logFile]] as const) {
    if (path === undefined || !state || !(await state.holds(resolve(cwd, path)))) continue;
    throw new PivotArchiveError(
      ErrorCode.USAGE,
      `${flag} ${path} is ${(await sameFile(resolve(cwd, path), state.ledgerPath)) ? "the state dir's ledger" : "one of the state dir's own files"} (--state-dir ${paths.stateDir}): the ledger is hash-chained and the run logs, lock and checkpoints are the state dir's own, so nothing else may write them; give another file`,
    );
  }
  if (paths.statusLog !== undefined && paths.logFile !== undefined && (await sameFile(resolve(cwd, paths.statusLog), resolve(cwd, paths.logFile)))) {
    throw new PivotArchiveError(ErrorCode.USAGE, `--status-log ${paths.statusLog} and --log-file ${paths.logFile} are the same file: the status log holds records only, and log lines would be mixed into it; give each its own file`);
  }
}

/**
 * The state dir's own names, declared once: whatever is made under one of them is the state dir's,
 * and nothing else may write it (`holds`). A file of the state dir not named here could be given
 * as a --status-log and be broken by it.
 */
export const STATE_FILES = { lock: 'lock', ledger: 'ledger.jsonl', checkpointNote: 'checkpoint.note', shard: 'shard', inboxWaiting: 'inbox-waiting.json', inboxUnfinished: 'inbox-unfinished.json' } as const;
export const STATE_FOLDERS = { runs: 'runs', checkpoints: 'checkpoints', completed: 'completed' } as const;
const OWN_FILES = new Set<string>(Object.values(STATE_FILES));
const OWN_FOLDERS = new Set<string>(Object.values(STATE_FOLDERS));
/** Whether a name relative to the state dir is its own: one of its files, the lock's companions (`lock.break`, turns), anything in its folders. */
function isOwnName(relativeName: string): boolean {
  const [first = '', ...rest] = relativeName.split(sep);
  return first === '' || OWN_FOLDERS.has(first) || (rest.length === 0 && (OWN_FILES.has(first) || first.startsWith(STATE_FILES.lock)));
}

/** A run (or import) as its log under `runs/` recorded it. */
export interface RecordedRun {
  log: string;
  summary?: RecordedSummary;
  failure?: FailureRecord;
  /** Its status-log lines with outcome `failed`. */
  failed: Record<string, unknown>[];
}

/**
 * The state dir of scheduled runs: a lock (one run at a time) and every run's status log under
 * `runs/`, kept for auditors.
 */
export class StateDir {
  constructor(readonly dir: string) {}

  get lockPath(): string {
    return join(this.dir, STATE_FILES.lock);
  }

  /** The append-only, hash-chained ledger of every run (src/ledger/SPEC.md); never pruned. */
  get ledgerPath(): string {
    return join(this.dir, STATE_FILES.ledger);
  }

  /** The last run's checkpoint note, replaced whole each run: the file to copy off the host. */
  get checkpointNotePath(): string {
    return join(this.dir, STATE_FILES.checkpointNote);
  }

  /**
   * Whether `path` is, or would be, one of the state dir's own files (the ledger, the run logs,
   * the lock, checkpoints, the shard and completion marks): by its name once symbolic links are
   * followed, or (if it exists and has other names) as a hard link to one of them. Other files in
   * the state dir (a status log kept beside the ledger) are the user's.
   */
  async holds(path: string): Promise<boolean> {
    const from = relative(await realPath(this.dir), await realPath(path));
    if (from !== '..' && !from.startsWith(`..${sep}`) && !isAbsolute(from)) return isOwnName(from);
    const info = await stat(path).catch(() => undefined);
    if (!info || info.nlink < 2) return false;
    const names = await readdir(this.dir, { recursive: true }).catch(() => [] as string[]);
    for (const name of names.filter(isOwnName)) if (await sameInode(path, join(this.dir, name))) return true;
    return false;
  }

  /** Makes the state dir (or a folder of it: `runs/`, `checkpoints/`), or throws E_CONFIG naming it and why it cannot be. */
  async makeDirectory(path: string): Promise<void> {
    try {
      await makeDirectory(path);
    } catch (err) {
      throw new PivotArchiveError(ErrorCode.CONFIG, `state dir ${this.dir} cannot be used: ${await whyNotADirectory(path, err)}`);
    }
  }

  /** Which shard's state this is (`K/N`), written by its first sharded run (see `claimShard`). */
  get shardPath(): string {
    return join(this.dir, STATE_FILES.shard);
  }

  /** The shard (`K/N`) this state dir belongs to, or undefined for an unsharded one. */
  async shard(): Promise<string | undefined> {
    return (await readFile(this.shardPath, 'utf8').catch(() => '')).trim() || undefined;
  }

  /**
   * Binds the state dir to one shard, under the lock: its checkpoints mean "every mailbox of
   * shard K settled up to here", which another shard (or an unsharded run) must never resume
   * from. A state dir already used by unsharded runs may become a shard's (those checkpoints
   * cover every mailbox, this shard's too); once a shard's, it stays that shard's.
   */
  async claimShard(shard: string | undefined): Promise<void> {
    const owner = await this.shard();
    if (owner === shard) return;
    if (owner !== undefined) {
      const what = shard === undefined ? 'an unsharded run' : `shard ${shard}`;
      throw new PivotArchiveError(ErrorCode.CONFIG, `state dir ${this.dir} belongs to shard ${owner} (see ${this.shardPath}); ${what} needs its own --state-dir: each shard has its own state dir, ledger and checkpoints`);
    }
    if (shard === undefined) return;
    try {
      await writeFile(`${this.shardPath}.tmp`, `${shard}\n`);
      await rename(`${this.shardPath}.tmp`, this.shardPath);
    } catch (err) {
      // The state dir's fault (a full disk), said as such: not a bug (exit 70).
      throw new PivotArchiveError(ErrorCode.CONFIG, `state dir ${this.dir} cannot be used: its shard cannot be recorded in ${this.shardPath}: ${errorMessage(err)}`, { cause: err });
    }
  }

  /**
   * Status log of a run that starts now: `runs/<UTC time>-<pid>.jsonl`, sortable by name. With
   * `keepRuns` > 0, only that many runs are kept, this one included; 0 keeps them for ever.
   */
  async newRunLog(keepRuns = 0, now = new Date()): Promise<string> {
    const runs = join(this.dir, STATE_FOLDERS.runs);
    await this.makeDirectory(runs);
    const old = (await readdir(runs)).filter((n) => n.endsWith('.jsonl')).sort();
    if (keepRuns > 0) {
      for (const name of old.slice(0, Math.max(0, old.length - (keepRuns - 1)))) await unlink(join(runs, name));
    }
    // Numbered after the last: ordered by when they began whatever the clock said (a host whose clock
    // ran ahead named a run of the past for the future). `run-` sorts after older versions' names.
    const last = old.reduce((most, name) => Math.max(most, Number(RUN_LOG_NUMBER.exec(name)?.[1] ?? 0)), 0);
    return join(runs, `run-${String(last + 1).padStart(8, '0')}-${now.toISOString().replace(/[:.]/g, '-')}-${process.pid}.jsonl`);
  }

  /**
   * What a scheduled run or import takes of the state dir: the lock (unless its caller already
   * holds it) and a new run log. `release` frees the lock; it is freed already if this throws.
   */
  async begin(keepRuns: number, lockHeld = false): Promise<{ runLog: string; release: () => Promise<void> }> {
    const release = lockHeld ? async () => undefined : await this.lock();
    try {
      return { runLog: await this.newRunLog(keepRuns), release };
    } catch (err) {
      await release();
      throw err;
    }
  }

  /**
   * Takes the lock or throws E_LOCKED. A lock whose process is gone (killed run) on this host, in
   * this boot and PID namespace, is stale and taken over; so is any lock (of another host or PID
   * namespace, of an older version, or torn by a crash) that its holder
   * has not renewed for LOCK_LEASE_MS: a holder touches it every LOCK_RENEW_MS while it runs. A
   * lock is never seen half written (see `create`): one that could not be written (a full disk)
   * is not there, and this run throws E_CONFIG.
   */
  async lock(): Promise<() => Promise<void>> {
    await this.makeDirectory(this.dir);
    const mine = maker({ startedAt: new Date().toISOString() });
    for (let attempt = 0; attempt < LOCK_ATTEMPTS; attempt++) {
      try {
        await this.create(this.lockPath, mine, true);
        const renewal = setInterval(() => {
          const now = new Date();
          void utimes(this.lockPath, now, now).catch(() => undefined);
        }, LOCK_RENEW_MS);
        renewal.unref();
        return async () => {
          clearInterval(renewal);
          if ((await readFile(this.lockPath, 'utf8').catch(() => '')) === mine) await unlink(this.lockPath);
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new PivotArchiveError(ErrorCode.CONFIG, `cannot lock state dir ${this.dir}: ${errorMessage(err)}`);
        }
      }
      const seen = await readFile(this.lockPath, 'utf8').catch(() => undefined);
      if (seen === undefined) continue; // released meanwhile
      if (await this.stale(seen)) {
        await this.breakStale(seen);
        continue;
      }
      const holder = await this.holder();
      throw new PivotArchiveError(
        ErrorCode.LOCKED,
        `another run holds ${this.lockPath}${holder ? ` (pid ${holder.pid} on ${holder.host}, since ${holder.startedAt})` : ''}; this run did nothing`,
      );
    }
    throw new PivotArchiveError(ErrorCode.LOCKED, `could not take over the stale lock ${this.lockPath}`);
  }

  /**
   * Makes `path` holding `content` (EEXIST when it exists). Written whole under a name of its own
   * first, then linked into place: no run ever sees it empty or half written (a maker slowed down
   * between create and write, a full disk), so nobody takes a lock being made for a torn one. A
   * file system without hard links gets O_EXCL and one write, removed again if not written whole.
   */
  private async create(path: string, content: string, sync: boolean): Promise<void> {
    const temporary = `${path}.${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await writeFile(temporary, content, { flag: 'wx' });
      if (sync) {
        const handle = await open(temporary, 'r');
        await handle.sync().finally(() => handle.close());
      }
      await link(temporary, path);
      return;
    } catch (err) {
      if (!noHardLinks(err)) throw err;
    } finally {
      await unlink(temporary).catch(() => undefined);
    }
    const handle = await open(path, 'wx');
    try {
      const bytes = Buffer.from(content);
      const { bytesWritten } = await handle.write(bytes, 0, bytes.length, 0);
      if (bytesWritten !== bytes.length) throw Object.assign(new Error(`short write (${bytesWritten} of ${bytes.length} bytes)`), { code: 'ENOSPC' });
      if (sync) await handle.sync();
      await handle.close();
    } catch (err) {
      await handle.close().catch(() => undefined);
      // Ours (made by O_EXCL): removed unless it already holds another run's whole lock (it can only if ours was broken meanwhile).
      const left = await readFile(path, 'utf8').catch(() => undefined);
      if (left !== undefined && content.startsWith(left)) await unlink(path).catch(() => undefined);
      throw err;
    }
  }

  /**
   * A lock (as `content`) whose holder is gone: its process, where its pid can be judged here (this
   * host, boot and PID namespace: see `localPid`), runs no more or is our own pid (an earlier life
   * of it) or another process; or one not renewed for LOCK_LEASE_MS, unless its holder is known to
   * run (`holderRunning`). A lock of another PID namespace (a container, a retried Kubernetes pod
   * with the same host name) or of an older version is stale by its lease only.
   */
  private async stale(content: string): Promise<boolean> {
    if (holderGone(content)) return true;
    if (holderRunning(content)) return false;
    // Not renewed for LOCK_LEASE_MS: its holder is gone, whatever its host (a Kubernetes pod's
    // host name changes with every night's Job) or its content (torn by a crash).
    return olderThan(this.lockPath, LOCK_LEASE_MS);
  }

  /**
   * Removes the stale lock `content`, and nothing else: runs that find it stale at once take turns
   * through a second file made with O_EXCL that names its maker, and each removes the lock only if
   * it is still the one it judged (one may already have taken over, and its fresh lock must stay).
   */
  private async breakStale(content: string): Promise<void> {
    const breaker = `${this.lockPath}.break`;
    const mine = maker({ token: randomBytes(8).toString('hex') });
    const ours = async () => (await readFile(breaker, 'utf8').catch(() => undefined)) === mine;
    try {
      await this.create(breaker, mine, false);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new PivotArchiveError(ErrorCode.CONFIG, `cannot lock state dir ${this.dir}: ${errorMessage(err)}`);
      // Another run is breaking it: wait for it. A breaker whose run is gone (killed in that instant) is removed.
      const other = await readFile(breaker, 'utf8').catch(() => undefined);
      if (other !== undefined && (await this.breakerGone(breaker, other)) && (await readFile(breaker, 'utf8').catch(() => undefined)) === other) await unlink(breaker).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 80));
      return;
    }
    try {
      if ((await readFile(this.lockPath, 'utf8').catch(() => undefined)) === content && (await this.stale(content)) && (await ours())) await unlink(this.lockPath).catch(() => undefined);
    } finally {
      if (await ours()) await unlink(breaker).catch(() => undefined);
    }
  }

  /** Whether the run that made the breaker `content` is gone: its process, where its pid can be judged here; else (another host or namespace, or torn) once it is LOCK_BREAK_STALE_MS old. */
  private async breakerGone(breaker: string, content: string): Promise<boolean> {
    const made = localPid(content);
    if (made === undefined) return olderThan(breaker, LOCK_BREAK_STALE_MS);
    return !made.comparable || (made.pid !== process.pid && processGone(made.pid));
  }

  /**
   * Whether a run may hold the lock now: there is one and it is not stale (its holder's pid, where
   * it can be judged here, still runs; else its lease has not run out). What a reader of a store a
   * run may be writing (verify) asks, so that a holder in another PID namespace counts as running.
   */
  async heldByLiveRun(): Promise<boolean> {
    const content = await readFile(this.lockPath, 'utf8').catch(() => undefined);
    return content !== undefined && !(await this.stale(content));
  }

  /** Who holds the lock, if anyone (undefined also when it cannot be read). */
  async holder(): Promise<{ pid: number; host: string; startedAt: string; bootId?: string; pidNamespace?: string } | undefined> {
    try {
      return JSON.parse(await readFile(this.lockPath, 'utf8')) as { pid: number; host: string; startedAt: string; bootId?: string; pidNamespace?: string };
    } catch {
      // Unreadable or half written: treat as held, never delete what we cannot read.
      return undefined;
    }
  }

  /** The runs and imports recorded here, newest first, each with its summary (none if it was killed) or its failure record. */
  async runs(limit: number): Promise<RecordedRun[]> {
    const names = (await readdir(join(this.dir, STATE_FOLDERS.runs)).catch(() => [] as string[])).filter((n) => n.endsWith('.jsonl')).sort().reverse().slice(0, limit);
    const runs = [];
    for (const name of names) {
      const log = join(this.dir, STATE_FOLDERS.runs, name);
      const lines = (await readFile(log, 'utf8')).split('\n').filter(Boolean).flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, unknown>];
        } catch {
          return []; // a line cut by a kill
        }
      });
      runs.push({
        log,
        summary: lines.find((l) => l.record === 'summary' || l.record === 'import-summary') as RecordedSummary | undefined,
        failure: lines.find((l) => l.record === 'failure') as FailureRecord | undefined,
        failed: lines.filter((l) => l.outcome === 'failed'),
      });
    }
    return runs;
  }
}
