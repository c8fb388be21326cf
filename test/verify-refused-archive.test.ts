// An archive refused before its export was known (not a zip, hostile, against the spec): the run
// fails (exit 2) and its failure record names no export. Was (helper-119): `verify` exited 0
// ("verified"), every export it knew being complete, while none of that archive's items was in
// any mailbox; only `status` showed the failure.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

interface Verified {
  archivesRefused: { archive: string; sha256: string; code: string }[];
}

test('verify says NOT COMPLETE (exit 1) for an archive a run refused before its export was known, until a run reads an archive of that name to its export; --export leaves it out; a missing file is no refusal', async (t) => {
  const dir = await tempDir(t);
  const state = join(dir, 'state');
  const archive = join(dir, 'acme-2026-11-23.zip');
  await writeFile(archive, randomBytes(2000));
  const run = (path: string) => cli(['run', path, '--sink', `maildir:${join(dir, 'mail')}`, '--state-dir', state, '--all-domains', '--rejects', join(dir, 'rejects'), '--max-rejected', '100%']);
  t.is((await run(archive)).code, 2);
  // A name that is not there: nothing of it was read, nothing is known to be missing.
  t.is((await run(join(dir, 'typo.zip'))).code, 2);
  const refused = await cli(['verify', '--state-dir', state, '--json']);
  t.is(refused.code, 1, refused.stdout + refused.stderr);
  const found = (JSON.parse(refused.stdout) as Verified).archivesRefused;
  t.deepEqual(
    found.map((a) => [a.archive, a.code]),
    [[archive, 'E_ARCHIVE_UNREADABLE']],
  );
  const text = await cli(['verify', '--state-dir', state]);
  t.is(text.code, 1);
  t.regex(text.stdout, /NOT COMPLETE archive .*acme-2026-11-23\.zip \(sha256 [0-9a-f]{64}\): run .* failed on it at .* before its export was known \(E_ARCHIVE_UNREADABLE: /);
  t.regex(text.stdout, /1 archive was refused and never delivered .*\(exit 1\)/);
  // The exporter's corrected archive, under the same name: read to its export, which is complete.
  const { exportId } = await generateSample(archive, { events: 40, seed: 7 });
  const corrected = await run(archive);
  t.is(corrected.code, 0, corrected.stderr.slice(0, 2000));
  const after = await cli(['verify', '--state-dir', state, '--json']);
  t.is(after.code, 0, after.stdout + after.stderr);
  t.deepEqual((JSON.parse(after.stdout) as Verified).archivesRefused, []);
  // Another refusal after it; --export (another export's scope) does not count it, the whole ledger does.
  await writeFile(join(dir, 'other.zip'), randomBytes(500));
  t.is((await run(join(dir, 'other.zip'))).code, 2);
  t.is((await cli(['verify', '--state-dir', state, '--export', exportId])).code, 0);
  t.is((await cli(['verify', '--state-dir', state])).code, 1);
});
