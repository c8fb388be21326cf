// Starts the real Azurite blob emulator (npm package, a devDependency) on a free loopback port,
// in memory by default, or on disk so that its data survives a stop and start (fault tests).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlobServiceClient, type ContainerClient } from '@azure/storage-blob';
import archiver from 'archiver';
import unzipper from 'unzipper';
import { generateSample } from '../../src/sample/generate.js';
import { freePort, selfSignedCertificate, waitFor } from './net.js';

// Azurite's documented development account; not a secret.
const ACCOUNT = 'devstoreaccount1';
const KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
/** Azurite's blob server, or undefined when the package is not installed. */
export const AZURITE_BLOB = (() => {
  try {
    return join(createRequire(import.meta.url).resolve('azurite/package.json'), '..', 'dist', 'src', 'blob', 'main.js');
  } catch {
    return undefined;
  }
})();

export function azuriteMissingMessage(): string {
  return 'Azurite is not installed (npm devDependency azurite): Azure Blob tests cannot run. `npm ci` installs it.';
}

export interface Azurite {
  port: number;
  connectionString: string;
  /** With `oauth`: the HTTPS account URL and the certificate it presents (self-signed). */
  accountUrl: string;
  certFile?: string;
  /** The environment a pivot-archive child process needs to reach this Azurite. */
  env: NodeJS.ProcessEnv;
  container(name: string): ContainerClient;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Stops it and removes its data. */
  dispose(): Promise<void>;
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** The names of the blobs under `prefix/` of `container` that `pattern` matches (every one without it), sorted. */
export async function blobNamesIn(container: ContainerClient, prefix: string, pattern = /(?:)/): Promise<string[]> {
  const names: string[] = [];
  for await (const blob of container.listBlobsFlat({ prefix: `${prefix}/` })) if (pattern.test(blob.name)) names.push(blob.name);
  return names.sort();
}

/**
 * The batches under `prefix/` made to look staged by a version before staging runs marked their
 * batches (`stagingrun` metadata): such a folder without a staging-run record or an index is an
 * older staging (imported with a warning), not a staging run's that did not finish.
 */
export async function asStagedByOlderVersion(container: ContainerClient, prefix: string): Promise<void> {
  for (const name of await blobNamesIn(container, prefix, /\.zip$/)) {
    const blob = container.getBlockBlobClient(name);
    const { stagingrun: _, ...older } = (await blob.getProperties()).metadata ?? {};
    await blob.setMetadata(older);
  }
}

/** A test file's Azurite beside a work dir holding a sample export (`archive`); `dispose` ends both. */
export interface AzuriteWithSample {
  azurite: Azurite;
  env: Record<string, string>;
  workDir: string;
  archive: string;
  dispose(): Promise<void>;
}

/** For a test file's `test.before`: Azurite (a failure where it is not installed) and a sample export of two messages files. */
export async function startAzuriteWithSample(sample: { events: number; seed: number }): Promise<AzuriteWithSample> {
  if (!AZURITE_BLOB) throw new Error(azuriteMissingMessage());
  const azurite = await startAzurite();
  const workDir = await mkdtemp(join(tmpdir(), 'pivot-archive-test-'));
  const dispose = async () => {
    await azurite.dispose();
    await rm(workDir, { recursive: true, force: true });
  };
  const archive = join(workDir, 'export.zip');
  await generateSample(archive, { events: sample.events, messageFiles: 2, seed: sample.seed }).catch(async (err: unknown) => {
    await dispose();
    throw err;
  });
  return { azurite, env: azurite.env as Record<string, string>, workDir, archive, dispose };
}

/**
 * `persistent`: data on disk, surviving stop and start. `oauth`: HTTPS with a self-signed
 * certificate and Azure AD bearer tokens accepted (Azurite's `--oauth basic` checks a token's
 * audience, issuer and lifetime, not its signature).
 */
export async function startAzurite(options: { persistent?: boolean; oauth?: boolean } = {}): Promise<Azurite> {
  if (!AZURITE_BLOB) throw new Error(azuriteMissingMessage());
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'pivot-azurite-'));
  const storage = options.persistent ? ['--location', dir] : ['--inMemoryPersistence'];
  const tls = options.oauth ? await selfSignedCertificate(dir) : undefined;
  const https = tls ? ['--oauth', 'basic', '--cert', tls.certFile, '--key', tls.keyFile] : [];
  const args = [AZURITE_BLOB, '--blobHost', '127.0.0.1', '--blobPort', String(port), '--skipApiVersionCheck', '--disableTelemetry', '--silent', ...storage, ...https];
  let child: ChildProcess | undefined;
  const accountUrl = `${tls ? 'https' : 'http'}://127.0.0.1:${port}/${ACCOUNT}`;
  const connectionString = `DefaultEndpointsProtocol=http;AccountName=${ACCOUNT};AccountKey=${KEY};BlobEndpoint=${accountUrl};`;
  // The tests' own client: Azurite closes an idle kept-alive socket after 5 s, and a request sent on
  // it as it closes fails with ECONNRESET (CI once failed so); a fresh connection per request and
  // a short retry keep such races out of the tests' results.
  const service = BlobServiceClient.fromConnectionString(connectionString, {
    keepAliveOptions: { enable: false },
    retryOptions: { maxTries: 3, retryDelayInMs: 200, maxRetryDelayInMs: 1000 },
  });
  const azurite: Azurite = {
    port,
    connectionString,
    accountUrl,
    certFile: tls?.certFile,
    env: { ...process.env, AZURE_STORAGE_CONNECTION_STRING: connectionString },
    container: (name) => service.getContainerClient(name),
    async start() {
      child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
      // A loaded 2-core machine can take long to start it; one that never listens is stopped, so
      // no orphan keeps the test worker alive.
      await waitFor(() => listening(port), 'Azurite listens', 60_000).catch(async (err: unknown) => {
        await azurite.stop();
        throw err;
      });
    },
    async stop() {
      if (!child || child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
      child = undefined;
    },
    async dispose() {
      await azurite.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  await azurite.start();
  return azurite;
}

/** The files of a zip blob, in their order, read with unzipper (not our reader). */
async function zipFiles(client: ContainerClient, blob: string): Promise<{ name: string; data: Buffer }[]> {
  const zip = (await unzipper.Open.buffer(await client.getBlockBlobClient(blob).downloadToBuffer())) as unknown as { files: { path: string; buffer(): Promise<Buffer> }[] };
  return Promise.all(zip.files.map(async (f) => ({ name: f.path, data: await f.buffer() })));
}

/** The entries a staged batch's manifest lists, read with unzipper (not our reader). */
export async function batchEntries(client: ContainerClient, blob: string): Promise<{ mailbox: string; messageId: string; sha256: string }[]> {
  const manifest = (await zipFiles(client, blob)).find((f) => f.name === 'manifest.json')!;
  return (JSON.parse(manifest.data.toString()) as { entries: { mailbox: string; messageId: string; sha256: string }[] }).entries;
}

/** The batches under `prefix/`, how many messages they hold and the sha256 of each (read with unzipper). */
export async function stagedContents(client: ContainerClient, prefix: string): Promise<{ batches: string[]; messages: number; bytes: Set<string> }> {
  const batches = await blobNamesIn(client, prefix, /\.zip$/);
  const bytes = new Set<string>();
  let messages = 0;
  for (const name of batches) {
    const entries = await batchEntries(client, name);
    messages += entries.length;
    for (const e of entries) bytes.add(e.sha256);
  }
  return { batches, messages, bytes };
}

/** The bytes of the entry a staged location (`<blob>#<entry>`) names, or undefined. */
export async function readStagedAt(client: ContainerClient, location: string): Promise<Buffer | undefined> {
  const hash = location.lastIndexOf('#');
  if (hash < 0 || !(await client.getBlockBlobClient(location.slice(0, hash)).exists())) return undefined;
  return (await zipFiles(client, location.slice(0, hash))).find((f) => f.name === location.slice(hash + 1))?.data;
}

/**
 * The batch a staged location names, uploaded again (overwritten) as `change` makes its files
 * (manifest included), zipped with archiver: tampering behind the sink's back.
 */
export async function rewriteStaged(client: ContainerClient, location: string, change: (files: { name: string; data: Buffer }[], entry: string) => { name: string; data: Buffer }[]): Promise<void> {
  const hash = location.lastIndexOf('#');
  const blob = location.slice(0, hash);
  const files = change(await zipFiles(client, blob), location.slice(hash + 1));
  const zip = archiver('zip');
  for (const file of files) zip.append(file.data, { name: file.name });
  const done = zip.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of zip) chunks.push(chunk as Buffer);
  await done;
  const data = Buffer.concat(chunks);
  await client.getBlockBlobClient(blob).upload(data, data.length);
}
