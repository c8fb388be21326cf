import test from 'ava';
import unzipper from 'unzipper';
import { createAzureBlobSink } from '../src/sinks/azblob/index.js';
import { startAzurite, type Azurite } from './helpers/azurite.js';
import { sinkConformance } from './helpers/sink-conformance.js';

let azurite: Azurite;
let stores = 0;

test.before(async () => {
  azurite = await startAzurite();
});
test.after.always(async () => {
  await azurite?.dispose();
});

/** Every .eml of every staged batch for a mailbox, read with the SDK and unzipper, not our reader. */
async function readStaged(container: string, mailbox: string): Promise<Buffer[]> {
  const found: Buffer[] = [];
  const client = azurite.container(container);
  if (!(await client.exists())) return found;
  for await (const blob of client.listBlobsFlat()) {
    const zip = (await unzipper.Open.buffer(await client.getBlockBlobClient(blob.name).downloadToBuffer())) as { files: unknown };
    const files = zip.files as { path: string; buffer(): Promise<Buffer> }[];
    const manifest = JSON.parse((await files.find((f) => f.path === 'manifest.json')!.buffer()).toString()) as { entries: { name: string; mailbox: string }[] };
    for (const entry of manifest.entries.filter((e) => e.mailbox === mailbox)) found.push(await files.find((f) => f.path === entry.name)!.buffer());
  }
  return found;
}

sinkConformance({
  name: 'azblob',
  async store() {
    const container = `conformance-${++stores}`;
    return {
      create: async () => createAzureBlobSink(`azblob://${container}/staging?linger=50`, { env: azurite.env }),
      read: (mailbox) => readStaged(container, mailbox),
    };
  },
});
