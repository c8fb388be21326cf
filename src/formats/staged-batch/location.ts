// Where staged batches live (a container and a prefix, one folder per export) and how to reach it:
// shared by the Blob sink that writes them and the import source that reads them.
import type { TokenCredential } from '@azure/core-auth';
import { BlobServiceClient, type ContainerClient, type StoragePipelineOptions } from '@azure/storage-blob';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';
import { registerIdentityEnvironment } from '../../auth/entra.js';
import { redactSecrets, registerSecret } from '../../redact.js';

/** Where staged batches live, and how they are cut. */
export interface AzureBlobLocation {
  container: string;
  /** Folder-like prefix inside the container, without leading or trailing `/` ('' for none). */
  prefix: string;
}



/** Container names per Azure's rules; prefixes as `/`-separated names with nothing to climb out. */
export function parseAzureBlobLocation(spec: string, bad: (why: string) => Error): { location: AzureBlobLocation; query: URLSearchParams } {
  const match = /^azblob:\/\/([^/?#]*)(\/[^?#]*)?(\?[^#]*)?$/i.exec(spec);
  if (!match) throw bad('is not of the form azblob://CONTAINER[/PREFIX][?options]');
  const container = match[1]!;
  // USER:PASSWORD@ written into the URL (a password may hold `/`, `?`, `#`, so it may reach past
  // the container): refused, and nothing of it quoted.
  const at = spec.lastIndexOf('@');
  if (at > 0 && spec.slice('azblob://'.length, at).includes(':')) {
    throw bad('must not carry credentials: they come from the environment (AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_URL, AZURE_STORAGE_SAS_TOKEN)');
  }
  if (!/^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/.test(container)) {
    // Quoted only when it holds nothing that could be part of a credential.
    const quoted = /^[\w.-]*$/.test(container) ? ` ${JSON.stringify(container)}` : '';
    throw bad(`container${quoted} is not a valid Azure container name (3-63 lowercase letters, digits, single hyphens)`);
  }
  const prefix = (match[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((part) => part === '.' || part === '..' || (prefix !== '' && part === '')) || /[\u0000-\u001f\u007f\\]/.test(prefix)) {
    throw bad(`prefix ${JSON.stringify(prefix)} must be plain /-separated names`);
  }
  return { location: { container, prefix }, query: new URLSearchParams(match[3] ?? '') };
}

/**
 * The container client, from the environment: AZURE_STORAGE_CONNECTION_STRING, or
 * AZURE_STORAGE_ACCOUNT_URL (which may carry a SAS) plus an optional AZURE_STORAGE_SAS_TOKEN.
 * Builds no connection: the first request is made in `open()`.
 */
export function containerClientFromEnv(location: AzureBlobLocation, env: NodeJS.ProcessEnv, retries: number): ContainerClient {
  const options: StoragePipelineOptions = {
    retryOptions: { maxTries: retries + 1, retryDelayInMs: 500, maxRetryDelayInMs: 5000, tryTimeoutInMs: 120_000 },
    userAgentOptions: { userAgentPrefix: 'pivot-archive' },
  };
  const fail = (why: string) => new PivotArchiveError(ErrorCode.SINK_CONFIG, `Azure Blob storage: ${why}`);
  const connectionString = env.AZURE_STORAGE_CONNECTION_STRING;
  const accountUrl = env.AZURE_STORAGE_ACCOUNT_URL;
  registerStorageSecrets(env);
  let service: BlobServiceClient;
  try {
    if (connectionString) {
      service = BlobServiceClient.fromConnectionString(connectionString, options);
    } else if (accountUrl) {
      const sas = (env.AZURE_STORAGE_SAS_TOKEN ?? '').replace(/^\?/, '');
      const url = new URL(accountUrl);
      if (sas) url.search = url.search ? `${url.search}&${sas}` : `?${sas}`;
      // No SAS: Azure AD (managed identity, workload identity, a service principal in the environment).
      const credential = url.searchParams.has('sig') ? undefined : azureAdCredential();
      service = new BlobServiceClient(url.toString(), credential, options);
    } else {
      throw fail('set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_URL (with a SAS in it or in AZURE_STORAGE_SAS_TOKEN, or alone for Azure AD)');
    }
  } catch (err) {
    if (err instanceof PivotArchiveError) throw err;
    throw fail(`the connection settings are not usable: ${redactSecrets(errorMessage(err))}`);
  }
  return service.getContainerClient(location.container);
}

/**
 * Registers with the redactor the secrets of the storage settings in `env`: the account key and
 * the SAS of the connection string, the SAS of the account URL or AZURE_STORAGE_SAS_TOKEN (whole,
 * and its signature), and what @azure/identity reads when no SAS is given.
 */
function registerStorageSecrets(env: NodeJS.ProcessEnv): void {
  for (const part of (env.AZURE_STORAGE_CONNECTION_STRING ?? '').split(';')) {
    const [, name, value] = /^\s*(AccountKey|SharedAccessSignature)\s*=(.*)$/i.exec(part) ?? [];
    if (name !== undefined) registerSas(value!.trim());
  }
  const query = /\?([^#]*)/.exec(env.AZURE_STORAGE_ACCOUNT_URL ?? '')?.[1];
  for (const sas of [query, env.AZURE_STORAGE_SAS_TOKEN?.replace(/^\?/, '')]) if (sas) registerSas(sas);
  registerIdentityEnvironment(env);
}

/** A SAS whole, and its signature (`sig=`) alone; an account key (no `sig=`): whole. */
function registerSas(text: string): void {
  registerSecret(text);
  const sig = /(?:^|&)sig=([^&]*)/.exec(text)?.[1];
  registerSecret(sig);
}

/**
 * @azure/identity's DefaultAzureCredential, loaded on first use (it costs about 0.1 s to load and
 * most runs never need it): managed identity on an Azure host, workload identity, or a service
 * principal in AZURE_TENANT_ID / AZURE_CLIENT_ID / AZURE_CLIENT_SECRET, in that library's order.
 */
function azureAdCredential(): TokenCredential {
  let credential: Promise<TokenCredential> | undefined;
  return {
    async getToken(scopes, options) {
      credential ??= import('@azure/identity').then(({ DefaultAzureCredential }) => new DefaultAzureCredential());
      return (await credential).getToken(scopes, options);
    },
  };
}

/** `azblob://account/container/prefix`, for logs: no key, no SAS. */
export function describeLocation(client: ContainerClient, location: AzureBlobLocation): string {
  return `azblob://${client.accountName}/${location.container}${location.prefix ? `/${location.prefix}` : ''}`;
}

/** The HTTP status a storage error carries, if it carries one. */
export function storageStatusOf(err: unknown): number | undefined {
  return (err as { statusCode?: number } | null)?.statusCode;
}

/** A storage error as one line, secrets masked (SDK messages can quote request URLs). */
export function storageErrorMessage(err: unknown): string {
  const e = err as { statusCode?: number; code?: string };
  const status = e?.statusCode ? ` (HTTP ${e.statusCode}${e.code ? ` ${e.code}` : ''})` : '';
  return redactSecrets(`${errorMessage(err).split('\n')[0]}${status}`);
}

/** The export folder `<prefix>/<exportId>/` of a batch blob `<prefix>/<exportId>/<file>/<window>-<n>.zip`. */
export function folderOfBatch(name: string): string {
  return name.replace(/[^/]+\/[^/]+$/, '');
}

/** The export id of a folder `.../<URL-encoded exportId>/`, or undefined when it is not of that shape. */
export function exportOfFolder(folder: string): string | undefined {
  const parts = folder.split('/');
  if (parts.length < 2 || parts.at(-1) !== '') return undefined;
  try {
    return decodeURIComponent(parts.at(-2)!);
  } catch {
    return undefined;
  }
}

/** The export id whose folder a batch blob `<prefix>/<exportId>/<file>/<window>-<n>.zip` is in, or undefined when its name is not of that shape. */
export function exportOfBatch(name: string): string | undefined {
  return name.split('/').length < 3 ? undefined : exportOfFolder(folderOfBatch(name));
}

/** Whether `folder` (a listed `.../<exportId>/`, under whatever prefix the listing began) is the folder of export `exportId`. */
export function isFolderOf(folder: string, exportId: string): boolean {
  const own = `${encodeURIComponent(exportId)}/`;
  return folder === own || folder.endsWith(`/${own}`);
}

/** `<prefix>/<exportId>/`: the export id is URL-encoded, so a blob name stays ASCII and flat. */
export function exportFolder(location: AzureBlobLocation, exportId: string): string {
  return `${location.prefix ? `${location.prefix}/` : ''}${encodeURIComponent(exportId)}/`;
}
