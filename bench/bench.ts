// npm run bench: generates sample archives and measures each stage in its own process.
// Usage: npm run bench [-- --events 100000,1000000 --stages source,naive-json-parse,mime,maildir,maildir-ledger,verify --imap-events 3000 --staging-events 20000]
// The IMAP row delivers into a throwaway local Dovecot, the staging row into a local Azurite (in
// memory), both started as the tests start them, on smaller archives.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateSample } from '../src/sample/generate.js';

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const sizes = option('events', '100000,1000000').split(',').filter(Boolean).map(Number);
// verify reads back what maildir-ledger delivered, so it follows it.
const stages = option('stages', 'source,naive-json-parse,mime,maildir,maildir-ledger,verify').split(',').filter(Boolean);
const imapEvents = Number(option('imap-events', '3000'));
const stagingEvents = Number(option('staging-events', '20000'));
const work = join(tmpdir(), 'pivot-archive-bench');
await mkdir(work, { recursive: true });
const stageScript = fileURLToPath(new URL('./stage.js', import.meta.url));

interface Row {
  stage: string;
  events: number;
  deliveries: number;
  messageBytes: number;
  seconds: number;
  peakRssMB: number;
}

const rows: { size: number; archiveMB: number; row: Row }[] = [];

async function archiveOf(size: number): Promise<{ archive: string; archiveMB: number }> {
  const archive = join(work, `sample-${size}.zip`);
  if (!existsSync(archive)) {
    process.stderr.write(`generating ${archive} ...\n`);
    await generateSample(archive, { events: size, seed: 42, edgeCases: false, level: 6 });
  }
  return { archive, archiveMB: (await stat(archive)).size / 1024 / 1024 };
}

function runStage(stage: string, archive: string, out: string, env: Record<string, string> = {}): Row {
  // --optimize-for-size, as bin/pivot-archive.js runs: V8 then grows its heap far less eagerly.
  const line = execFileSync(process.execPath, ['--optimize-for-size', stageScript, stage, archive, out], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 20,
  }).toString();
  return JSON.parse(line) as Row;
}

for (const size of sizes) {
  const { archive, archiveMB } = await archiveOf(size);
  const out = join(work, `maildir-${size}`);
  const clean = () => Promise.all([out, `${out}-state`, `${out}-rejects`].map((d) => rm(d, { recursive: true, force: true })));
  for (const stage of stages) {
    // Each delivering stage starts from an empty store; verify reads what the one before it left.
    if (stage !== 'verify') await clean();
    process.stderr.write(`${size} events: ${stage} ...\n`);
    rows.push({ size, archiveMB, row: runStage(stage, archive, out) });
  }
  await clean();
}

if (imapEvents > 0) {
  const { archive, archiveMB } = await archiveOf(imapEvents);
  const users = (JSON.parse(execFileSync('python3', ['-c', 'import sys,zipfile;print(zipfile.ZipFile(sys.argv[1]).read("users.json").decode())', archive]).toString()) as { email?: string }[])
    .flatMap((u) => (u.email ? [u.email.toLowerCase()] : []));
  const { startDovecot, removeDovecot, ADMIN_PASSWORD } = await import('../test/helpers/dovecot.js');
  const dovecot = await startDovecot(users);
  try {
    process.stderr.write(`${imapEvents} events: imap (local Dovecot) ...\n`);
    const sink = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none`;
    rows.push({ size: imapEvents, archiveMB, row: runStage('imap', archive, '', { PIVOT_BENCH_SINK: sink, PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD }) });
  } finally {
    await removeDovecot(dovecot);
  }
}

if (stagingEvents > 0) {
  const { archive, archiveMB } = await archiveOf(stagingEvents);
  const { startAzurite } = await import('../test/helpers/azurite.js');
  const azurite = await startAzurite();
  try {
    process.stderr.write(`${stagingEvents} events: azblob (local Azurite) ...\n`);
    const env = { PIVOT_BENCH_SINK: 'azblob://bench/staging', AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString };
    rows.push({ size: stagingEvents, archiveMB, row: runStage('azblob', archive, '', env) });
  } finally {
    await azurite.dispose();
  }
}

const header = ['events', 'archive MB', 'stage', 'seconds', 'events/s', 'deliveries/s', 'message MB/s', 'peak RSS MB'];
const table = rows.map(({ size, archiveMB, row }) => [
  String(size),
  archiveMB.toFixed(0),
  row.stage,
  row.seconds.toFixed(1),
  Math.round(row.events / row.seconds).toLocaleString('en'),
  row.deliveries ? Math.round(row.deliveries / row.seconds).toLocaleString('en') : '-',
  row.messageBytes ? (row.messageBytes / 1024 / 1024 / row.seconds).toFixed(1) : '-',
  row.peakRssMB.toFixed(0),
]);
const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i]!.length)));
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
console.log(line(header));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const r of table) console.log(line(r));
