// Each command loads its own modules when it runs: a command line that only answers (--version,
// --help, status, cron, keygen, one refused for a typo) loads no logger, no delivery chain and no
// sink client. Every cron job and every test starts the command line; those modules cost it about
// half a second of CPU at each start.
import test from 'ava';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { BIN } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

/** Packages only a delivery, a verify or a plugin needs. */
const HEAVY = ['winston', 'libmime', 'iconv-lite', 'encoding-japanese', 'highland', 'semver', 'imapflow', '@azure/storage-blob', '@azure/identity', 'archiver'];

/**
 * Records every module file the process loads: ES modules through a loader hook (it sees each
 * package's entry, CommonJS too), and the CommonJS modules required from there by the cache left at exit.
 */
const REGISTER_HOOK = `import { register, createRequire } from 'node:module';
import { appendFileSync } from 'node:fs';
register(new URL('./hook.mjs', import.meta.url));
const require = createRequire(import.meta.url);
process.on('exit', () => appendFileSync(process.env.LOADED_MODULES_FILE, Object.keys(require.cache).map((path) => path + '\\n').join('')));
`;
const LOAD_HOOK = `import { appendFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
export async function load(url, context, next) {
  if (url.startsWith('file:')) appendFileSync(process.env.LOADED_MODULES_FILE, fileURLToPath(url) + '\\n');
  return next(url, context);
}
`;

interface Traced {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The packages under node_modules it loaded (`winston`, `@azure/identity`). */
  packages: Set<string>;
}

async function traced(dir: string, args: string[]): Promise<Traced> {
  const hooks = join(dir, 'register-hooks.mjs');
  await writeFile(join(dir, 'hook.mjs'), LOAD_HOOK);
  await writeFile(hooks, REGISTER_HOOK);
  const list = join(dir, `loaded-${Math.random().toString(36).slice(2)}.txt`);
  await writeFile(list, '');
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', hooks, BIN, ...args], { cwd: dir, env: { ...process.env, LOADED_MODULES_FILE: list }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (exit) => resolve({ code: exit, stdout: out, stderr: err }));
  });
  const packages = new Set((await readFile(list, 'utf8')).split('\n').flatMap((path) => {
    const name = /\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path)?.[1];
    return name ? [name] : [];
  }));
  return { code, stdout, stderr, packages };
}

function heavyIn(packages: Set<string>): string[] {
  return HEAVY.filter((name) => packages.has(name));
}

test('--version, --help and each command\'s --help load no logger, delivery chain or sink client, and still answer in full', async (t) => {
  const dir = await tempDir(t);
  const version = await traced(dir, ['--version']);
  t.is(version.code, 0, version.stderr);
  t.regex(version.stdout, /^\d+\.\d+\.\d+/);
  t.deepEqual(heavyIn(version.packages), []);
  // yargs answers them all: the trace does see the packages a command line loads.
  t.true(version.packages.has('yargs'));
  for (const args of [['--help'], ['run', '--help'], ['import', '--help'], ['status', '--help'], ['verify', '--help'], ['report', '--help'], ['keygen', '--help'], ['cron', '--help'], ['sample', '--help']]) {
    const help = await traced(dir, args);
    t.is(help.code, 0, `${args.join(' ')}: ${help.stderr}`);
    t.deepEqual(heavyIn(help.packages), [], args.join(' '));
  }
  const runHelp = await traced(dir, ['run', '--help']);
  // The sinks' options (from their option tables, not their client modules) are still in run's help.
  t.regex(runHelp.stdout, /Sink options[\s\S]*maildir:DIR[\s\S]*imap\[s\]:\/\/[\s\S]*azblob:\/\//);
});

test('status, keygen and cron --print load no logger, delivery chain or sink client', async (t) => {
  const dir = await tempDir(t);
  const status = await traced(dir, ['status', '--state-dir', dir]);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /no runs recorded/i);
  t.deepEqual(heavyIn(status.packages), []);
  const keygen = await traced(dir, ['keygen', '--out', join(dir, 'ledger.key')]);
  t.is(keygen.code, 0, keygen.stderr);
  t.regex(keygen.stdout, /public key: /);
  t.deepEqual(heavyIn(keygen.packages), []);
  const cron = await traced(dir, ['cron', '--print', '--', 'run', '--inbox', join(dir, 'in'), '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--state-dir', join(dir, 'state')]);
  t.is(cron.code, 0, cron.stderr);
  t.regex(cron.stdout, /^30 2 \* \* \* /);
  t.deepEqual(heavyIn(cron.packages), []);
});

test('a run refused for a typo is still recorded in its status log, without loading the delivery chain', async (t) => {
  const dir = await tempDir(t);
  const statusLog = join(dir, 'status.jsonl');
  const refused = await traced(dir, ['run', join(dir, 'export.zip'), '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--status-log', statusLog, '--setle', '5']);
  t.is(refused.code, 2);
  t.regex(refused.stderr, /Unknown argument: setle; did you mean --settle\?/);
  t.like(JSON.parse((await readFile(statusLog, 'utf8')).trim()), { record: 'failure', code: 'E_USAGE', exitCode: 2 });
  t.deepEqual(heavyIn(refused.packages), []);
});

test('a run loads what it delivers with (the logger, libmime, highland): the trace sees them when they are loaded', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 20, seed: 5, edgeCases: false });
  const run = await traced(dir, ['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--quiet']);
  t.is(run.code, 0, run.stderr);
  for (const name of ['winston', 'libmime', 'highland']) t.true(run.packages.has(name), name);
  // A Maildir run needs no IMAP or Azure client.
  t.false(run.packages.has('imapflow'));
  t.false(run.packages.has('@azure/storage-blob'));
});
