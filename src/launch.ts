// How every pivot-archive process is started: V8's flags and glibc's malloc setting. The bin's
// shebang, package.json's start script and the examples repeat them (a shebang cannot import);
// test/launch.test.ts holds every copy equal to these. Why these: README, "Benchmarks".
// No module of ours is imported here: under a low open-file limit this one is loaded on Node's
// loader thread too (`load`), where each file read takes a descriptor that is scarce.
import { readFileSync, readdirSync } from 'node:fs';
import { register } from 'node:module';

/** V8's flags: a heap that grows little before it is collected (the memory bound). */
export const NODE_FLAGS: readonly string[] = ['--optimize-for-size'];

/**
 * glibc's malloc arenas, at most two (not 8 per core): native memory (message buffers, the
 * thread pool's file requests) freed in one thread's arena stayed there; 6-12 MB less peak RSS.
 */
export const LAUNCH_ENVIRONMENT: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/** `NAME=VALUE ...` of LAUNCH_ENVIRONMENT, as a shell command line or `env -S` puts it before the command. */
export function launchAssignments(): string[] {
  return Object.entries(LAUNCH_ENVIRONMENT).map(([name, value]) => `${name}=${value}`);
}

// The open-file limit (`ulimit -n`, soft RLIMIT_NOFILE). Node's loader reads every import of a
// module at once, each file on a descriptor of its own, and node itself holds some 20: under
// `ulimit -n 24` to `40` the CLI failed EMFILE while it loaded (`open '.../dist/src/options/index.js'`),
// before it could write any record. Under LOAD_ONE_AT_A_TIME_BELOW the bin has modules read one
// at a time (`load` below, on Node's loader thread, some 4 descriptors), so the CLI loads and a
// run under MIN_OPEN_FILES is refused with its record (E_OPEN_FILE_LIMIT, exit 2).

/**
 * The soft open-file limit of this process (`ulimit -n`, from /proc/self/limits as
 * src/sinks/maildir/descriptors.ts reads it); undefined when unlimited or unknown (not Linux).
 */
export function openFileLimit(limits?: string): number | undefined {
  let text = limits;
  try {
    text ??= readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return undefined;
  }
  const n = Number(/^Max open files\s+(\S+)/m.exec(text)?.[1]);
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

/** Under this soft limit modules are read one at a time (50 ms and some 13 MB more to start). */
export const LOAD_ONE_AT_A_TIME_BELOW = 256;

/**
 * The least soft limit a run or an import starts under: node's own descriptors, the loader's
 * thread, stdio, the lock, run log, ledger, archive, rejects and a sink's (the Maildir sink keeps
 * its own within what is left). Under 30 every delivery of a small export failed EMFILE; at 40 an
 * export of 1,500 events went through; 64 leaves room for IMAP's and Graph's connections.
 */
export const MIN_OPEN_FILES = 64;

/**
 * Descriptors Node's loader thread needs free to start and read the first modules (measured: 6;
 * with fewer, registering it crashed on EMFILE, or, with 1 or 2, hung the process for good).
 */
const LOADER_HEADROOM = 8;

/** Descriptors this process has open under `limit` (Linux: /proc/self/fd, less the one listing it); undefined when not known. */
export function descriptorsOpen(limit: number): number | undefined {
  try {
    return readdirSync('/proc/self/fd').filter((fd) => Number(fd) < limit).length - 1;
  } catch {
    return undefined;
  }
}

/**
 * Whether modules are to be read one at a time (`resolve` and `load` below registered): under a
 * soft limit below LOAD_ONE_AT_A_TIME_BELOW, when LOADER_HEADROOM descriptors are free for the
 * loader's thread (with fewer, nothing can load: the bin says so). Not when either is unknown.
 */
export function loadsOneAtATime(limit: number | undefined, open: number | undefined): boolean {
  return limit !== undefined && limit < LOAD_ONE_AT_A_TIME_BELOW && open !== undefined && limit - open >= LOADER_HEADROOM;
}

/** Called by the bin before it loads the CLI: registers this module's hooks when `loadsOneAtATime`. Returns whether it did. */
export function loadModulesWithinOpenFileLimit(): boolean {
  const limit = openFileLimit();
  if (!loadsOneAtATime(limit, limit === undefined ? undefined : descriptorsOpen(limit))) return false;
  register(import.meta.url);
  return true;
}

/** How long a module read that meets EMFILE or ENFILE is tried again, in all. */
const LOAD_PATIENCE_MS = 2_000;

/** The loader's reads, one after another: each waits for the one before it to end. */
let reading: Promise<unknown> = Promise.resolve();

/** `work` once every read queued before it has ended, tried again while it meets a shortage of descriptors. */
function oneAtATime<R>(work: () => Promise<R>): Promise<R> {
  const mine = reading.then(async () => {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      try {
        return await work();
      } catch (err) {
        if (!shortage(err) || Date.now() - started > LOAD_PATIENCE_MS) throw err;
        await new Promise((resolve) => setTimeout(resolve, Math.min(200, 5 * 2 ** attempt)));
      }
    }
  });
  reading = mine.catch(() => undefined);
  return mine;
}

/**
 * Node's `resolve` hook (module.register): in turn with the reads of `load`, since resolving a
 * package reads its package.json (one that cannot be opened for want of a descriptor reads as
 * no package: ERR_MODULE_NOT_FOUND).
 */
export function resolve<C, R>(specifier: string, context: C, nextResolve: (specifier: string, context: C) => R | Promise<R>): Promise<R> {
  return oneAtATime(async () => nextResolve(specifier, context));
}

/**
 * Node's `load` hook (module.register): one module read at a time, so the loader holds one
 * descriptor for them, not one per import at once; a read that still meets EMFILE or ENFILE (the
 * run holding what the limit allows) waits for descriptors to be closed and is tried again.
 */
export function load<C, R>(url: string, context: C, nextLoad: (url: string, context: C) => Promise<R>): Promise<R> {
  return oneAtATime(() => nextLoad(url, context));
}

/** Out of descriptors: this process's (EMFILE) or the system's (ENFILE). */
function shortage(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'EMFILE' || code === 'ENFILE';
}
