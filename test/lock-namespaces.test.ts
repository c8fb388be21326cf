import test from 'ava';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { mkdir, readFile, readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { needing } from './helpers/needing.js';
import { tempDir } from './helpers/tmp.js';

// A pid is one process only within one boot of one kernel and one PID namespace: two pods of one
// Kubernetes Indexed Job index (a replacement started while the old pod still runs) share the host
// name, and each has node as pid 1. A lock's pid is judged only where it means the same process.

const stateModule = fileURLToPath(new URL('../src/state/index.js', import.meta.url));
/** Takes the lock of state dir argv[2], says `held` (or the error code), holds it argv[3] ms, releases it. */
const locker = `import { StateDir } from ${JSON.stringify(stateModule)};
const [dir, hold] = [process.argv[2], Number(process.argv[3])];
try { const release = await new StateDir(dir).lock(); console.log('held ' + process.pid); await new Promise((r) => setTimeout(r, hold)); await release(); }
catch (e) { console.log(e.code ?? String(e)); }`;

function unshareMissing(): string | undefined {
  if (process.getuid?.() !== 0) return 'root, for unshare --pid --uts';
  try {
    execFileSync('unshare', ['--fork', '--pid', '--uts', '--mount-proc', 'true'], { stdio: 'ignore' });
    return undefined;
  } catch (err) {
    return `unshare --pid --uts: ${(err as Error).message}`;
  }
}
const missing = process.platform === 'linux' ? unshareMissing() : 'Linux PID namespaces';

async function setup(t: Parameters<typeof tempDir>[0]): Promise<{ dir: string; state: string; script: string }> {
  const dir = await tempDir(t);
  const state = join(dir, 'state');
  await mkdir(state);
  const script = join(dir, 'locker.mjs');
  await writeFile(script, locker);
  return { dir, state, script };
}

/** Runs `sh -c command` (in `unshare args` if given) and gives its stdout once it has ended. */
function run(command: string, unshare: string[]): { out: Promise<string>; started: Promise<void> } {
  const child = unshare.length ? spawn('unshare', [...unshare, 'sh', '-c', command]) : spawn('sh', ['-c', command]);
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  return {
    started: new Promise((resolve) => child.stdout.once('data', () => resolve())),
    out: new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', () => resolve(out.trim()));
    }),
  };
}

needing(missing, 'two runs in PID namespaces of their own, one host name, both pid 1 (two pods of one Indexed Job index): the second finds the lock held (E_LOCKED)', async (t) => {
  t.timeout(60_000);
  const { state, script } = await setup(t);
  const pod = (hold: number) => run(`hostname pivot-job-0 && exec ${process.execPath} ${script} ${state} ${hold}`, ['--fork', '--pid', '--uts', '--mount-proc']);
  const first = pod(6000);
  await first.started;
  const lock = JSON.parse(await readFile(join(state, 'lock'), 'utf8')) as { pid: number; host: string; bootId?: string; pidNamespace?: string };
  t.like(lock, { pid: 1, host: 'pivot-job-0' });
  t.truthy(lock.bootId);
  t.regex(lock.pidNamespace ?? '', /^pid:\[\d+\]$/);
  const second = await pod(0).out;
  t.is(second, 'E_LOCKED', 'the second pod must not take the live lock of the first');
  t.is(await first.out, 'held 1');
  t.false((await readdir(state)).includes('lock'), 'released');
  // A lock of an older version (no boot id, no namespace) naming pid 1 of this host name: in a pod, not judged by its pid.
  await writeFile(join(state, 'lock'), JSON.stringify({ pid: 1, host: 'pivot-job-0', startedAt: new Date().toISOString() }));
  t.is(await pod(0).out, 'E_LOCKED', "an older version's lock, read in a container");
});

needing(missing, 'a run of another PID namespace with the same host name and another pid: its pid missing from ours does not make its lock stale', async (t) => {
  t.timeout(60_000);
  const { state, script } = await setup(t);
  // Forty processes first: node gets a pid no process (nor a thread of node's) has in the second's namespace.
  const first = run(`for i in $(seq 40); do /bin/true; done; ${process.execPath} ${script} ${state} 6000`, ['--fork', '--pid', '--mount-proc']);
  await first.started;
  const { pid } = JSON.parse(await readFile(join(state, 'lock'), 'utf8')) as { pid: number };
  t.true(pid > 40, String(pid));
  const second = await run(`exec ${process.execPath} ${script} ${state} 0`, ['--fork', '--pid', '--mount-proc']).out;
  t.is(second, 'E_LOCKED');
  t.is(await first.out, `held ${pid}`);
});

/** The pid of a process that has ended. */
function deadPid(): number {
  return Number(execFileSync('sh', ['-c', 'sh -c "echo \\$\\$"'], { encoding: 'utf8' }).trim());
}

test('a lock left by a killed run of this host, boot and PID namespace is taken over at once; one of another boot or another namespace only once its 10-minute lease has run out', async (t) => {
  t.timeout(60_000);
  const { state, script } = await setup(t);
  const lockPath = join(state, 'lock');
  const take = () => new Promise<string>((resolve, reject) => execFile(process.execPath, [script, state, '0'], (err, stdout) => (err ? reject(err) : resolve(stdout.trim()))));
  const scope = process.platform === 'linux' ? { bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), pidNamespace: readlinkSync('/proc/self/ns/pid') } : undefined;
  const pid = deadPid();
  const startedAt = new Date().toISOString();
  if (scope) {
    await writeFile(lockPath, JSON.stringify({ pid, host: hostname(), ...scope, startedAt }));
    t.regex(await take(), /^held /, 'same host, boot and namespace, the process gone: stale');
  }
  const others = [
    ['another boot', { pid, host: hostname(), bootId: '00000000-0000-4000-8000-000000000000', pidNamespace: scope?.pidNamespace ?? 'pid:[1]', startedAt }],
    ['another PID namespace', { pid, host: hostname(), bootId: scope?.bootId ?? 'x', pidNamespace: 'pid:[1]', startedAt }],
    // An older version's lock (no boot id, no namespace) is judged by its pid outside containers only.
    ...(scope?.pidNamespace === 'pid:[4026531836]' ? [] : ([['an older version', { pid, host: hostname(), startedAt }]] as const)),
  ] as const;
  for (const [what, content] of others) {
    await writeFile(lockPath, JSON.stringify(content));
    t.is(await take(), 'E_LOCKED', `${what}: held while its lease runs`);
    const elevenMinutesAgo = new Date(Date.now() - 11 * 60_000);
    await utimes(lockPath, elevenMinutesAgo, elevenMinutesAgo);
    t.regex(await take(), /^held /, `${what}: taken once the lease has run out`);
  }
});

test('a lock whose holder runs here is held past its lease (a run paused by SIGSTOP, a paused VM); one naming a live pid that a later process was given is taken over at once', async (t) => {
  t.timeout(60_000);
  const { state, script } = await setup(t);
  const lockPath = join(state, 'lock');
  const take = () => new Promise<string>((resolve, reject) => execFile(process.execPath, [script, state, '0'], (err, stdout) => (err ? reject(err) : resolve(stdout.trim()))));
  const holder = run(`exec ${process.execPath} ${script} ${state} 20000`, []);
  await holder.started;
  const lock = JSON.parse(await readFile(lockPath, 'utf8')) as { pid: number; startTicks?: string };
  t.regex(lock.startTicks ?? '', /^\d+$/, 'the holder recorded when it started');
  process.kill(lock.pid, 'SIGSTOP');
  try {
    const elevenMinutesAgo = new Date(Date.now() - 11 * 60_000);
    await utimes(lockPath, elevenMinutesAgo, elevenMinutesAgo);
    t.is(await take(), 'E_LOCKED', 'its lease ran out, but its holder still runs here');
  } finally {
    process.kill(lock.pid, 'SIGCONT');
    process.kill(lock.pid, 'SIGTERM');
  }
  await holder.out;
  // This test's own pid runs, but started before (or after) the holder the lock names: the pid was handed out again.
  await writeFile(lockPath, JSON.stringify({ ...lock, pid: process.pid, startTicks: '1', startedAt: new Date().toISOString() }));
  t.regex(await take(), /^held /, 'a live pid of another start: the holder is gone');
});
