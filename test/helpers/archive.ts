import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import archiver from 'archiver';

export interface Fixture {
  manifest?: Record<string, unknown> | null;
  users?: unknown[] | null;
  conversations?: unknown[] | null;
  /** messages file name (under messages/) -> events. */
  messages: Record<string, unknown[]>;
  attachments?: Record<string, Buffer>;
  /** Raw extra entries: name -> bytes. */
  extra?: Record<string, Buffer | string>;
}

export const MANIFEST = {
  format: 'pivot-export',
  version: 1,
  exportId: 'acme-2026-11-23',
  tenant: 'acme',
  windowStart: '2026-11-23T00:00:00Z',
  windowEnd: '2026-11-24T00:00:00Z',
  createdAt: '2026-11-24T00:05:12Z',
};

/** Writes a fixture with archiver (streamed: data descriptors), optionally forcing ZIP64 or STORE. */
export async function writeArchive(path: string, fixture: Fixture, options: { zip64?: boolean; store?: boolean } = {}): Promise<string> {
  const zip = archiver('zip', { forceZip64: options.zip64 ?? false, store: options.store ?? false });
  const out = createWriteStream(path);
  zip.pipe(out);
  const add = (name: string, data: Buffer | string) => zip.append(data, { name, date: new Date('2026-11-24T00:05:12Z') });
  if (fixture.manifest !== null) add('manifest.json', JSON.stringify(fixture.manifest ?? MANIFEST));
  if (fixture.users !== null) add('users.json', JSON.stringify(fixture.users ?? []));
  if (fixture.conversations !== null) add('conversations.json', JSON.stringify(fixture.conversations ?? []));
  for (const [name, events] of Object.entries(fixture.messages)) add(`messages/${name}`, JSON.stringify(events));
  for (const [id, bytes] of Object.entries(fixture.attachments ?? {})) add(`attachments/${id}`, bytes);
  for (const [name, bytes] of Object.entries(fixture.extra ?? {})) add(name, bytes);
  await zip.finalize();
  if (!out.closed) await once(out, 'close');
  return path;
}
