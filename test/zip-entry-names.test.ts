// Entry names as zip writers store them: UTF-8 with the flag (Python, Java), UTF-8 without it
// (Info-ZIP's zip on Linux), and code page 437 without it (Windows' own zipper, APPNOTE's rule).
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readCentralDirectory } from '../src/formats/zip/index.js';
import { MANIFEST } from './helpers/archive.js';
import { cli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';
import { storedZip } from './helpers/zip-bytes.js';

const users = [
  { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' },
  { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' },
];
const conversations = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 'u_2'] }];

/** A stored zip whose names hold `#` and `$` where the bytes 0x82 and 0x81 (é and ü in code page 437) are written, no UTF-8 flag. */
function cp437Zip(entries: Record<string, Buffer | string>): Buffer {
  const zip = storedZip(entries);
  for (const name of Object.keys(entries)) {
    for (let at = zip.indexOf(name); at >= 0; at = zip.indexOf(name, at + 1)) {
      Buffer.from(name.replace('#', '\x82').replace('$', '\x81'), 'latin1').copy(zip, at);
    }
  }
  return zip;
}

test('names without the UTF-8 flag that are not UTF-8 are read as code page 437: two of them stay two, and the archive is not refused as overlapping', async (t) => {
  const zip = cp437Zip({ 'attachments/caf#': 'one', 'attachments/caf$': 'two', 'attachments/plain': 'three' });
  const { entries } = await readCentralDirectory({ label: 'cp437.zip', buffer: zip });
  t.deepEqual([...entries.keys()], ['attachments/café', 'attachments/cafü', 'attachments/plain']);
  // UTF-8 bytes without the flag (Info-ZIP) stay UTF-8.
  const { entries: utf8 } = await readCentralDirectory({ label: 'utf8.zip', buffer: storedZip({ 'attachments/café': 'one' }) });
  t.deepEqual([...utf8.keys()], ['attachments/café']);
});

test('run: an attachment whose name a Windows zipper wrote in code page 437 reaches the mailboxes with its bytes', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  const event = { id: 'm_1', conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId: 'u_1', text: 'see attached', attachments: [{ id: 'café', fileName: 'café.pdf', contentType: 'application/pdf' }] };
  await writeFile(
    archive,
    cp437Zip({
      'manifest.json': JSON.stringify(MANIFEST),
      'users.json': JSON.stringify(users),
      'conversations.json': JSON.stringify(conversations),
      'messages/a.json': JSON.stringify([event]),
      'attachments/caf#': '%PDF-1.4 the bytes',
    }),
  );
  const out = join(dir, 'mail');
  const result = await cli(['run', archive, '--sink', `maildir:${out}`, '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--json']);
  t.is(result.code, 0, result.stderr);
  t.notRegex(result.stderr, /not in the archive|unnamed|overlaps/);
  const stored = await readMaildir(out);
  t.is(stored.length, 2);
  for (const message of stored) t.deepEqual(message.parsed.attachments.map((a) => a.content.toString()), ['%PDF-1.4 the bytes']);
});
