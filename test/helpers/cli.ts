import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunSummary } from '../../src/status-log.js';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const BIN = fileURLToPath(new URL('../../../bin/pivot-archive.js', import.meta.url));

export interface CliResult {
  code: number | null;
  /** The signal that ended it, if one did (a hang killed after `timeoutMs`). */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stderr with each JSON log line (the format off a terminal) read back as "level message". */
  log: string;
}

function logText(stderr: string): string {
  return stderr
    .split('\n')
    .map((line) => {
      try {
        const record = JSON.parse(line) as { level?: string; message?: string };
        return record.message === undefined ? line : `${record.level} ${record.message}`;
      } catch {
        return line;
      }
    })
    .join('\n');
}

/**
 * Runs the real command line in a child process. `shell`: commands a shell runs first, in the
 * child's own process (`ulimit -n 30`, `trap "" XFSZ; ulimit -f 0`). `timeoutMs`: killed after it
 * (a hang is then a failure, not a stuck suite).
 */
export function cli(args: string[], options: { cwd?: string; stdin?: Buffer; env?: Record<string, string>; shell?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const [command, argv] = options.shell === undefined ? [process.execPath, [BIN, ...args]] : ['sh', ['-c', `${options.shell} && exec "$0" "$@"`, process.execPath, BIN, ...args]];
    const child = spawn(command, argv, {
      cwd: options.cwd ?? REPO_ROOT,
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(options.timeoutMs !== undefined ? { timeout: options.timeoutMs, killSignal: 'SIGKILL' as const } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, log: logText(stderr) }));
    child.stdin.end(options.stdin ?? '');
  });
}

/** Starts the command line without waiting: for tests that signal or race it. */
export function startCli(args: string[], options: { env?: Record<string, string> } = {}): { child: ChildProcess; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, stdio: 'ignore', env: { ...process.env, ...options.env } });
  return { child, exited: new Promise((resolve) => child.on('exit', resolve)) };
}

export async function readStatusLog(path: string): Promise<{ lines: Record<string, unknown>[]; summary: RunSummary }> {
  const lines = (await readFile(path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const summaries = lines.filter((l) => l.record === 'summary');
  return { lines, summary: summaries[summaries.length - 1] as unknown as RunSummary };
}

/** Every record of every run log in a state dir. */
export async function runRecords(state: string): Promise<Record<string, unknown>[]> {
  const runs = join(state, 'runs');
  const out: Record<string, unknown>[] = [];
  for (const name of await readdir(runs)) {
    for (const line of (await readFile(join(runs, name), 'utf8')).split('\n')) if (line.trim()) out.push(JSON.parse(line) as Record<string, unknown>);
  }
  return out;
}

/**
 * The checkpoints in a state dir's `checkpoints/` that resume past an item: a run that may have
 * lost what its sink stored keeps none of those, only one at the first event holding the folders
 * to look at again (Checkpoint.finish), which makes the next run read from the start.
 */
export async function checkpointsResuming(stateDir: string): Promise<string[]> {
  const dir = join(stateDir, 'checkpoints');
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.json'));
  const resuming: string[] = [];
  for (const name of names) {
    const { resumeAt } = JSON.parse(await readFile(join(dir, name), 'utf8')) as { resumeAt?: { file: number; index: number } };
    if (!resumeAt || resumeAt.file !== 0 || resumeAt.index !== 0) resuming.push(name);
  }
  return resuming;
}
