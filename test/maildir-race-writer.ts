// A writer for the Maildir race tests: `node dist/test/maildir-race-writer.js ROOT ITEMS` delivers
// the same deliveries as every other writer started with the same ITEMS into ROOT, 256 in flight
// (as the pipeline keeps them), and prints one JSON line: its outcomes and the errors of any write
// that was rejected. Also imported by test/maildir-race.test.ts for the deliveries themselves.
import { fileURLToPath } from 'node:url';
import type { Delivery } from '../src/model.js';
import { createSink } from '../src/sinks/index.js';
import { chatDeliveries } from './helpers/chat.js';

export const RACE_MAILBOXES = ['a@acme.example', 'b@acme.example', 'c@acme.example', 'd@acme.example'];

/**
 * `items` items fanned out to RACE_MAILBOXES as the pipeline does it: one message Buffer shared
 * by every mailbox of an item (so the sink links copies). Bodies of some tens of KiB, so that a
 * write takes long enough for writers to overlap.
 */
export function raceDeliveries(items: number): Delivery[] {
  return Array.from({ length: items }, (_, n) =>
    chatDeliveries(
      {
        id: `race_${n}`,
        sentAt: new Date(Date.parse('2026-11-23T08:00:00Z') + n * 1000).toISOString(),
        text: `message ${n}\n` + `line ${n} of a long body that makes the write take a while\n`.repeat(400 + (n % 7) * 100),
        exportId: 'race',
        index: n,
        conversation: { id: 'c_race', name: 'Race' },
      },
      RACE_MAILBOXES,
    ),
  ).flat();
}

export interface RaceReport {
  delivered: number;
  skipped: number;
  errors: string[];
  /** `mailbox itemId` of each write that resolved `delivered`. */
  deliveredKeys: string[];
}

/** Writes every delivery through one sink, at most `inFlight` at once. */
export async function writeAll(spec: string, deliveries: Delivery[], inFlight = 256): Promise<RaceReport> {
  const sink = await createSink(spec, { cwd: '/' });
  await sink.open();
  const report: RaceReport = { delivered: 0, skipped: 0, errors: [], deliveredKeys: [] };
  let next = 0;
  const worker = async () => {
    while (next < deliveries.length) {
      const d = deliveries[next++]!;
      try {
        const { outcome } = await sink.write(d);
        report[outcome]++;
        if (outcome === 'delivered') report.deliveredKeys.push(`${d.mailbox} ${d.itemId}`);
      } catch (err) {
        report.errors.push(`${d.mailbox} ${d.itemId}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  await sink.close();
  return report;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [root, items] = process.argv.slice(2);
  const report = await writeAll(`maildir:${root}`, raceDeliveries(Number(items)));
  process.stdout.write(`${JSON.stringify(report)}\n`);
}
