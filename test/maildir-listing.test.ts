// The Maildir sink's listing of a Pivot folder: what it covers (the item's day, and an empty day
// either side), and that a file renamed while the folder is read is never missed under both names.
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { listOurs } from '../src/sinks/maildir/listing.js';
import { dayOfTime } from '../src/sinks/maildir/seen-names.js';
import { tempDir } from './helpers/tmp.js';

const DAY = dayOfTime(Date.parse('2026-11-23T12:00:00Z'));

/** A base name of ours at `seconds`, number `n`. */
const base = (seconds: number, n: number) => `${seconds}.P${n.toString(16).padStart(32, '0')}.pivot-archive`;

async function folderWith(root: string, names: string[]): Promise<string> {
  const folder = join(root, 'f');
  for (const sub of ['cur', 'new', 'tmp']) await mkdir(join(folder, sub), { recursive: true });
  for (let i = 0; i < names.length; i += 256) await Promise.all(names.slice(i, i + 256).map((name) => writeFile(join(folder, 'cur', name), 'x')));
  return folder;
}

test('maildir listing: it covers the item\'s day, and a day either side only when that day holds no name of ours', async (t) => {
  const root = await tempDir(t);
  const noon = (day: number) => day * 86400 + 43200;
  const folder = await folderWith(root, [`${base(noon(DAY), 1)}:2,S`, `${base(noon(DAY - 1), 2)}:2,S`, `${base(noon(DAY - 9), 3)}:2,FS`]);
  const listing = await listOurs(folder, new Set([DAY]), { neighbours: true });
  t.deepEqual([...listing.days].sort(), [DAY, DAY + 1].sort(), 'yesterday holds a name: not covered');
  t.true(listing.heldOurs);
  t.true(listing.seen!.has(base(noon(DAY), 1)));
  t.deepEqual([...listing.renamed.keys()], [base(noon(DAY - 9), 3)]);
  const empty = await listOurs(await folderWith(join(root, 'other'), [`${base(noon(DAY - 9), 4)}:2,S`]), new Set([DAY]), { neighbours: true });
  t.deepEqual([...empty.days].sort(), [DAY - 1, DAY, DAY + 1].sort());
  t.is(empty.seen, undefined, 'nothing of the days covered: nothing kept (the folder stays a number)');
});

test('maildir listing: files a client renames while the folder is read are each found under one of their names', async (t) => {
  const root = await tempDir(t);
  const count = 20000;
  const names = Array.from({ length: count }, (_, n) => base(DAY * 86400 + n, n));
  const folder = await folderWith(root, names.map((name) => `${name}:2,S`));
  // Another process renames them all (:2,S -> :2,FS), as Dovecot does for a client, while we list.
  const renamer = spawn(process.execPath, ['-e', `const fs=require('fs');const d=${JSON.stringify(join(folder, 'cur'))};for(const n of fs.readdirSync(d))fs.renameSync(d+'/'+n,d+'/'+n.replace(/:2,S$/,':2,FS'));`]);
  const finished = new Promise((resolve) => renamer.on('exit', resolve));
  const listings = [];
  while (renamer.exitCode === null) listings.push(await listOurs(folder, new Set([DAY])));
  await finished;
  t.true(listings.length > 0);
  for (const listing of listings) {
    const missed = names.filter((name) => !listing.renamed.has(name) && !(listing.seen?.has(name) ?? false));
    t.deepEqual(missed, [], `a listing missed ${missed.length} of ${count}`);
  }
  t.log(`${listings.length} listings made while the renamer ran`);
});
