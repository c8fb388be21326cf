// A Maildir root on overlayfs whose mailbox folders are in the lower layer (a container image, a
// restored base layer): the run's first link into such a `cur/` copies it up into the upper layer,
// the same inode with a new birth time. That is no folder removed during the run: a healthy run
// must deliver everything, exit 0 (a review of 2026-12-01 found every such mailbox's first group
// failed as storage lost). The overlay is mounted in a user and mount namespace of the run's own
// (`unshare -rm`), so no privilege is needed beyond what the kernel grants any user.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { BIN, cli, REPO_ROOT } from './helpers/cli.js';
import { needing } from './helpers/needing.js';
import { tempDir } from './helpers/tmp.js';

interface Summary {
  delivered: number;
  skipped: number;
  failed: number;
  itemsAvailableForImport: number;
}

/** `command` with the overlay of `lower` and `upper` mounted at `merged`, for that process alone. */
function onOverlay(dir: string, command: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => join(dir, d));
  const mount = `mount -t overlay overlay -o lowerdir=${lower},upperdir=${upper},workdir=${work} ${merged}`;
  return new Promise((resolve) => {
    const child = spawn('unshare', ['-rm', 'sh', '-c', `${mount} && exec "$0" "$@"`, ...command], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', (err) => resolve({ code: null, stdout, stderr: String(err) }));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Why an overlay cannot be mounted in a user namespace here, if it cannot. */
function overlayMissing(): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'pivot-archive-overlay-probe-'));
  try {
    for (const d of ['lower', 'upper', 'work', 'merged']) mkdirSync(join(dir, d));
    const probe = spawnSync('unshare', ['-rm', 'sh', '-c', `mount -t overlay overlay -o lowerdir=${dir}/lower,upperdir=${dir}/upper,workdir=${dir}/work ${dir}/merged`], { encoding: 'utf8' });
    return probe.status === 0 ? undefined : `overlayfs in a user namespace (unshare -rm): ${(probe.stderr || String(probe.error)).trim()}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const runOnOverlay = (dir: string, archive: string) =>
  onOverlay(dir, [process.execPath, BIN, 'run', archive, '--sink', `maildir:${join(dir, 'merged', 'mail')}`, '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--json']);

needing(overlayMissing(), 'maildir on overlayfs, its mailbox folders in the lower layer: the first link into each copies its cur/ up, and the run delivers everything, exit 0; the re-run skips everything', async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  for (const d of ['lower', 'upper', 'work', 'merged']) await mkdir(join(dir, d));
  // The lower layer: the mailboxes as a first day left them.
  const firstDay = join(dir, 'first.zip');
  await generateSample(firstDay, { events: 300, seed: 71 });
  const base = await cli(['run', firstDay, '--sink', `maildir:${join(dir, 'lower', 'mail')}`, '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--json']);
  t.is(base.code, 0, base.stderr.slice(0, 2000));
  // The next day, over the overlay.
  const nextDay = join(dir, 'next.zip');
  await generateSample(nextDay, { events: 300, seed: 72, day: '2026-11-24' });
  const run = await runOnOverlay(dir, nextDay);
  t.is(run.code, 0, run.stderr.slice(0, 3000));
  const summary = JSON.parse(run.stdout) as Summary;
  t.is(summary.failed, 0);
  t.true(summary.delivered > 0);
  t.is(summary.delivered + summary.skipped, summary.itemsAvailableForImport);
  t.notRegex(run.stderr, /removed during the run/);
  const again = await runOnOverlay(dir, nextDay);
  t.is(again.code, 0, again.stderr.slice(0, 3000));
  const rerun = JSON.parse(again.stdout) as Summary;
  t.is(rerun.skipped, rerun.itemsAvailableForImport);
  t.is(rerun.failed, 0);
});
