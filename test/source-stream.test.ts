// The source's unit stream under the chain's real consumption: piped, with async work per unit
// that reads from the same archive (attachments) while the source reads ahead.
import test from 'ava';
import _ from 'highland';
import { join } from 'node:path';
import { readEntryBuffer } from '../src/formats/zip/index.js';
import { inOrder } from '../src/pipeline/in-order.js';
import type { Unit } from '../src/pipeline/unit.js';
import { generateSample } from '../src/sample/generate.js';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { PivotZipSource } from '../src/sources/pivot-zip/source.js';
import { tempDir } from './helpers/tmp.js';

test('pivot-zip source: every event reaches a consumer that awaits attachment reads per unit (no stall while the source reads ahead)', async (t) => {
  const path = (await generateSample(join(await tempDir(t), 'a.zip'), { events: 1000 })).path;
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  const source = new PivotZipSource(archive, path);
  let attachmentsRead = 0;
  const count = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`stalled after ${source.progress().read} of ${archive.eventCount} events`)), 20_000);
    _<Unit>(source.read())
      .through(
        inOrder({ count: 1 }, async (unit: Unit) => {
          const refs = unit.kind === 'event' && Array.isArray((unit.event.raw as { attachments?: unknown })?.attachments) ? ((unit.event.raw as { attachments: { id: string }[] }).attachments) : [];
          for (const ref of refs) {
            const entry = archive.attachment(ref.id);
            if (entry) {
              await readEntryBuffer(entry, 64 * 1024 * 1024);
              attachmentsRead++;
            }
          }
          return unit;
        }),
      )
      .stopOnError(reject)
      .toArray((units) => {
        clearTimeout(timer);
        resolve(units.length);
      });
  });
  t.is(count, archive.eventCount);
  t.true(attachmentsRead > 0, 'the sample has attachments, so reads overlapped the source');
  t.true(source.exhausted);
});
