// tmp/ files left over by killed runs: removed when their writer is surely gone, kept otherwise
// (a live writer's file must never be taken).
import test from 'ava';
import { readlinkSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createSink } from '../src/sinks/index.js';
import { delivery } from './helpers/sink-conformance.js';
import { tempDir } from './helpers/tmp.js';

const HOST = (hostname() || 'localhost').replace(/\//g, '\\057').replace(/:/g, '\\072');
const NAMESPACE = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? '';

/** A pid no process of this namespace has. */
function gonePid(): number {
  for (let pid = 4_194_000; ; pid--) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
}

async function deliverOne(root: string): Promise<void> {
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  await sink.write(delivery(1));
  await sink.close();
}

test('maildir tmp: a tmp/ file of a writer of this host and PID namespace that is gone is removed at the folder\'s first delivery', async (t) => {
  const root = await tempDir(t);
  const tmp = join(root, 'jane@acme.example', '.INBOX.Pivot', 'tmp');
  await mkdir(tmp, { recursive: true });
  const pid = gonePid();
  await writeFile(join(tmp, `1795420800.M1P${pid}N${NAMESPACE}Q1Rdeadbeef.${HOST}`), 'left by a killed run');
  await deliverOne(root);
  t.deepEqual(await readdir(tmp), []);
});

test('maildir tmp: a fresh tmp/ file whose writer may live in another PID namespace (same host name, pid not alive here) is kept', async (t) => {
  const root = await tempDir(t);
  const tmp = join(root, 'jane@acme.example', '.INBOX.Pivot', 'tmp');
  await mkdir(tmp, { recursive: true });
  const pid = gonePid();
  // Containers with the host's network (and name) but their own pids, writing into one volume.
  const names = [`1795420800.M1P${pid}Q1Rdeadbeef.${HOST}`, `1795420800.M1P${pid}N1Q1Rdeadbeef.${HOST}`, `1795420800.M1P${pid}N${NAMESPACE}Q1Rdeadbeef.other-host`];
  for (const name of names) await writeFile(join(tmp, name), 'being written');
  await deliverOne(root);
  t.deepEqual((await readdir(tmp)).sort(), names.sort());
});
