import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cli, readStatusLog } from './cli.js';

/**
 * A plugin (its module's text, for a `.mjs` file) that holds its run at the AT-th item it
 * transforms until the file GATE exists: the items before it go on to the sink, so a test can act
 * on the store (delete a folder, stop a server) after a known part of the run, then let it go on.
 */
export function gatePlugin(at: number, gate: string): string {
  return `import { existsSync } from 'node:fs';\nlet n = 0;\nexport default { name: 'gate', version: '1.0.0', hostApi: '^1.0.0', async transform(item) { if (++n === ${at}) while (!existsSync(${JSON.stringify(gate)})) await new Promise((r) => setTimeout(r, 20)); return item; } };\n`;
}

/** Waits until `ready()` says so, polling every 50 ms; fails (throws) when `ended()` says the run ended first. */
export async function untilReady(ready: () => Promise<boolean>, ended: () => boolean, what: string): Promise<void> {
  for (;;) {
    if (await ready()) return;
    if (ended()) throw new Error(`the run ended before ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Which item reaches the plugins last in a run of `archive` with `options`, found by a first run
 * into a Maildir of its own under `dir` (which items reach the plugins, and in what order, does
 * not depend on the sink): its count of plugin calls (where `gatePlugin` holds a run), its id,
 * the mailboxes its copies go to, and how many deliveries come before it.
 */
export async function lastItemOf(dir: string, archive: string, options: string[]): Promise<{ calls: number; lastItem: string; lastMailboxes: Set<string>; before: number }> {
  const counter = join(dir, 'count.mjs');
  const lastSeen = join(dir, 'last-seen');
  await writeFile(counter, `import { writeFileSync } from 'node:fs';\nlet n = 0;\nexport default { name: 'count', version: '1.0.0', hostApi: '^1.0.0', transform(item) { writeFileSync(${JSON.stringify(lastSeen)}, ++n + ' ' + item.id); return item; } };\n`);
  const scout = await cli(['run', archive, '--sink', `maildir:${join(dir, 'scout')}`, '--status-log', join(dir, 'scout.jsonl'), '--plugin', counter, ...options]);
  if (scout.code !== 0) throw new Error(`the first run exited ${scout.code}: ${scout.stderr.slice(0, 2000)}`);
  const [calls, lastItem] = (await readFile(lastSeen, 'utf8')).split(' ') as [string, string];
  const scouted = (await readStatusLog(join(dir, 'scout.jsonl'))).lines.filter((l) => l.outcome === 'delivered');
  const last = scouted.filter((l) => l.itemId === lastItem);
  return { calls: Number(calls), lastItem, lastMailboxes: new Set(last.map((l) => String(l.mailbox))), before: scouted.length - last.length };
}
