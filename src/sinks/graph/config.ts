import { resolve } from 'node:path';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { registerSecret } from '../../redact.js';
import type { EntraCredential } from '../../auth/entra.js';
import { environmentLabel, parseSinkOptions } from '../options.js';
import { GRAPH_FORM, graphOptions } from './options.js';

export type GraphMode = 'json' | 'importMime';

export interface GraphSinkConfig {
  tenant: string;
  /** Where tokens come from; a client secret is read from the environment here and never shown. */
  credential: EntraCredential;
  /** Folder path parts: the first a well-known name or a top-level folder, the rest children by display name. */
  folder: string[];
  mode: GraphMode;
  /** Requests in flight per mailbox (Outlook allows 4). */
  concurrency: number;
  /** Mailboxes delivered to at once. */
  mailboxes: number;
  /** Creates of one mailbox per JSON batch (1: each alone). */
  batch: number;
  /** The mailboxes' message size limit, in bytes. */
  maxMessageBytes: number;
  retries: number;
  retryDelayMs: number;
  /** Graph here has attachment upload sessions (not in GCC High or DoD: `NO_UPLOAD_SESSIONS`). */
  uploadSessions: boolean;
  /** How long after the last item made again after a lost answer the close waits before it removes copies. */
  lateCopyWaitMs: number;
  /** `https://graph.microsoft.com`, no trailing slash. */
  graphEndpoint: string;
  authorityHost: string;
  probe?: string;
  /** `graph://TENANT/?folder=...` with no secret: for logs and errors. */
  description: string;
}

const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/i;
/** A tenant id (GUID) or a verified domain (`contoso.onmicrosoft.com`). */
const TENANT = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+)$/i;

/** Each known Graph host's Entra ID login host (Microsoft's national cloud deployments page): a token of another cloud is refused. */
const LOGIN_HOST_OF = new Map([
  ['graph.microsoft.com', 'login.microsoftonline.com'],
  ['graph.microsoft.us', 'login.microsoftonline.us'],
  ['dod-graph.microsoft.us', 'login.microsoftonline.us'],
  ['microsoftgraph.chinacloudapi.cn', 'login.chinacloudapi.cn'],
]);
/** The login hosts of those clouds. */
const LOGIN_HOSTS = new Set(LOGIN_HOST_OF.values());
/** The Graph hosts of the national clouds: every known one but the global service's. */
const NATIONAL_CLOUD_HOSTS = new Set([...LOGIN_HOST_OF.keys()].filter((host) => host !== 'graph.microsoft.com'));
/** The hosts of GCC High and DoD, where `createUploadSession` is not offered. */
const NO_UPLOAD_SESSIONS = new Set(['graph.microsoft.us', 'dod-graph.microsoft.us']);

/**
 * Parses `graph://TENANT_ID/?clientId=APP_ID&folder=Inbox/Pivot&...` (see `graphOptions`). The
 * client secret comes from the environment (`secretEnv`), never from the spec; plain http to a
 * host other than loopback needs `insecure`.
 */
export function parseGraphSpec(spec: string, options: { cwd?: string; insecure?: boolean; env?: NodeJS.ProcessEnv; secretChecked?: boolean } = {}): GraphSinkConfig {
  const match = /^graph:\/\/([^/?#]*)\/?(?:\?([^#]*))?$/i.exec(spec);
  // Not quoted: a secret pasted into it would reach the log.
  if (!match) throw new PivotArchiveError(ErrorCode.SINK_CONFIG, `Graph sink: the spec must be of the form ${GRAPH_FORM} (it is not repeated here, in case it holds a secret)`);
  const tenant = match[1]!;
  const bad = (why: string) => new PivotArchiveError(ErrorCode.SINK_CONFIG, `Graph sink graph://${tenant}: ${why}`);
  if (!TENANT.test(tenant)) {
    const why = 'must be a tenant id (GUID) or a domain such as contoso.onmicrosoft.com';
    // A tenant's letters only (`contoso`) is named, to be corrected; anything else may hold a secret pasted after it (`TENANT:SECRET`, `SECRET@TENANT`).
    if (/^[a-z0-9.-]*$/i.test(tenant)) throw bad(`the tenant ${why}`);
    throw new PivotArchiveError(ErrorCode.SINK_CONFIG, `Graph sink: the tenant (not repeated here: it holds characters no tenant has, perhaps a secret) ${why}`);
  }
  const o = parseSinkOptions(graphOptions, match[2] ?? '', bad);
  for (const [name, value] of [['graphEndpoint', o.graphEndpoint], ['authorityHost', o.authorityHost]] as const) {
    const url = new URL(value);
    if (url.protocol === 'http:' && !LOOPBACK.test(url.hostname) && !options.insecure) throw bad(`${name}=${value} sends tokens in clear text to a host that is not loopback: use https, or add --insecure`);
  }
  const graphHost = new URL(o.graphEndpoint).hostname.toLowerCase();
  const loginHost = new URL(o.authorityHost).hostname.toLowerCase();
  if (o.credential !== 'managedIdentity' && LOGIN_HOST_OF.has(graphHost) && LOGIN_HOSTS.has(loginHost) && LOGIN_HOST_OF.get(graphHost) !== loginHost) {
    throw bad(`graphEndpoint=${o.graphEndpoint} takes tokens of https://${LOGIN_HOST_OF.get(graphHost)}, not of authorityHost=${o.authorityHost}: give authorityHost=https://${LOGIN_HOST_OF.get(graphHost)} (see "National clouds")`);
  }
  if (o.mode === 'importMime' && NATIONAL_CLOUD_HOSTS.has(graphHost)) throw bad(`mode=importMime is a beta API of the global service only, not offered at ${graphHost}: use mode=json`);
  // As the IMAP sink's xoauth2: an app registration (its certificate when given, else its secret) or the host's managed identity.
  if (o.clientCertificate !== undefined && o.credential === 'managedIdentity') throw bad('clientCertificate= is for credential=app, not managedIdentity');
  let credential: EntraCredential;
  if (o.credential === 'managedIdentity') {
    credential = { kind: 'managedIdentity', ...(o.clientId !== undefined ? { clientId: o.clientId } : {}) };
  } else {
    if (o.clientId === undefined) throw bad('names no app: add clientId=APP_ID (the app registration\'s application id)');
    if (o.clientCertificate !== undefined) {
      credential = { kind: 'certificate', tenant, clientId: o.clientId, certificatePath: resolve(options.cwd ?? process.cwd(), o.clientCertificate) };
    } else {
      const secret = options.secretChecked === false ? '' : (options.env ?? process.env)[o.secretEnv];
      registerSecret(secret);
      if (!secret && options.secretChecked !== false) throw bad(`no client secret: set ${environmentLabel('secretEnv', o.secretEnv, graphOptions.secretEnv.default)} (or give clientCertificate=, or credential=managedIdentity)`);
      credential = { kind: 'secret', tenant, clientId: o.clientId, secret: secret ?? '' };
    }
  }
  const folder = o.folder.split('/').map((part) => part.trim());
  return {
    tenant,
    credential,
    folder,
    mode: o.mode,
    concurrency: o.concurrency,
    mailboxes: o.mailboxes,
    batch: o.batch,
    retries: o.retries,
    retryDelayMs: o.retryDelay,
    lateCopyWaitMs: o.lateCopyWait,
    uploadSessions: !NO_UPLOAD_SESSIONS.has(graphHost),
    maxMessageBytes: o.maxMessageSize * 1024 * 1024,
    graphEndpoint: o.graphEndpoint.replace(/\/+$/, ''),
    authorityHost: o.authorityHost.replace(/\/+$/, ''),
    ...(o.probe !== undefined ? { probe: o.probe } : {}),
    description: `graph://${tenant}/?folder=${folder.join('/')}${o.mode === 'importMime' ? '&mode=importMime' : ''}`,
  };
}
