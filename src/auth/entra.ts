// App-only access tokens from Microsoft Entra ID, shared by the sinks that reach Microsoft 365
// (Graph, IMAP with XOAUTH2). @azure/identity does the protocol; this file chooses the credential
// from what the user configured, keeps one token until shortly before it expires (callers ask per
// request), and turns a refusal into one error that names no secret.
import type { TokenCredential } from '@azure/core-auth';
import { readFile } from 'node:fs/promises';
import { get as httpsGet } from 'node:https';
import { rootCertificates } from 'node:tls';
import { errorMessage, ErrorCode, PivotArchiveError } from '../errors.js';
import { redactSecrets, registerSecret } from '../redact.js';

/** Where the tokens come from: an app registration's secret or certificate, or the host's managed identity. */
export type EntraCredential =
  | { kind: 'secret'; tenant: string; clientId: string; secret: string }
  | { kind: 'certificate'; tenant: string; clientId: string; certificatePath: string }
  | { kind: 'managedIdentity'; clientId?: string };

export interface EntraTokenOptions {
  /** The login host, e.g. `https://login.microsoftonline.us` for a national cloud. */
  authorityHost: string;
  /** The one scope asked for, e.g. `https://graph.microsoft.com/.default`. */
  scope: string;
  /** Names the sink in errors, e.g. `Graph sink graph://TENANT`. */
  describe: string;
  /**
   * A file of certificates (PEM) to trust beside the public roots for the token requests: what
   * NODE_EXTRA_CA_CERTS names in an environment given to a sink rather than to the process (the
   * process's own was read when it started).
   */
  extraCaFile?: string;
}

export const PUBLIC_CLOUD_AUTHORITY = 'https://login.microsoftonline.com';

/**
 * A token is renewed this long before it expires (or at half its life, when it lives less than
 * twice this long), so no request carries one that lapses in flight.
 */
const RENEW_BEFORE_MS = 5 * 60_000;
/**
 * A renewal that fails (the service briefly unreachable) leaves the token in use while it has
 * more than this left (a minute, or a quarter of a short life); renewal is tried again after
 * RETRY_RENEWAL_MS (or an eighth of a short life). Past that, the failure is the caller's.
 */
const KEEP_MARGIN_MS = 60_000;
const RETRY_RENEWAL_MS = 30_000;

/**
 * The login hosts of Microsoft's clouds (public, US Government, China): MSAL checks an authority
 * on them with Microsoft's instance discovery. Any other host (Azure Stack, a test's token
 * endpoint) is the user's to trust: discovery is off for it, as @azure/identity advises.
 */
const MICROSOFT_AUTHORITY_HOSTS = new Set(['login.microsoftonline.com', 'login.windows.net', 'login.microsoftonline.us', 'login.chinacloudapi.cn', 'login.partner.microsoftonline.cn']);

export interface AccessTokens {
  /** A valid bearer token: the cached one, or a new one once it nears expiry (one request for all callers). */
  get(): Promise<string>;
  /** The cached token while it needs no renewal, else undefined (then `get`): no promise per request. */
  current?(): string | undefined;
  /**
   * Drops the cached token (after the service refused it), so the next `get` asks the identity
   * service again: the credential is made anew, since MSAL keeps tokens of its own.
   */
  forget(): void;
}

/**
 * Tokens for one credential and scope. A refused credential rejects with E_SINK_UNAVAILABLE whose
 * message names the sink and the service's reason, never the secret.
 */
export function entraTokens(credential: EntraCredential, options: EntraTokenOptions, load: () => Promise<TokenCredential> = () => loadCredential(credential, options)): AccessTokens {
  let client: Promise<TokenCredential> | undefined;
  let cached: { token: string; renewAt: number; keepUntil: number; life: number } | undefined;
  let pending: Promise<string> | undefined;

  async function fetchToken(): Promise<string> {
    try {
      client ??= load();
      const token = await (await client).getToken(options.scope);
      if (!token) throw new Error('the identity service returned no token');
      // A server may quote it back (an IMAP server its XOAUTH2 blob) in a refusal the run logs.
      registerSecret(token.token);
      const expiresAt = token.expiresOnTimestamp;
      const life = expiresAt - Date.now();
      const renewAt = Math.min(token.refreshAfterTimestamp ?? expiresAt, expiresAt - Math.min(RENEW_BEFORE_MS, life / 2));
      cached = { token: token.token, renewAt: Math.max(renewAt, Date.now() + 1000), keepUntil: expiresAt - Math.min(KEEP_MARGIN_MS, life / 4), life };
      return token.token;
    } catch (err) {
      client = undefined;
      if (cached && Date.now() < cached.keepUntil) {
        cached.renewAt = Date.now() + Math.min(RETRY_RENEWAL_MS, cached.life / 8);
        return cached.token;
      }
      const why = isEndpointsError(err) && 'tenant' in credential ? await whyEndpointsUnresolved(credential.tenant, options) : firstLine(err, credential);
      throw new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `${options.describe}: no access token for ${options.scope} (${credentialName(credential)}): ${redactSecrets(why)}`);
    }
  }

  const current = () => (cached && Date.now() < cached.renewAt ? cached.token : undefined);
  return {
    current,
    get() {
      const token = current();
      if (token !== undefined) return Promise.resolve(token);
      pending ??= fetchToken().finally(() => (pending = undefined));
      return pending;
    },
    forget() {
      cached = undefined;
      if (!pending) client = undefined;
    },
  };
}

/**
 * The application permissions (`roles`) an Entra access token carries, or undefined when the
 * token cannot be read as a JWT (an opaque or encrypted token: then only Graph's answers tell).
 */
export function tokenRoles(token: string): string[] | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const roles = (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { roles?: unknown }).roles;
    return Array.isArray(roles) && roles.every((r) => typeof r === 'string') ? roles : undefined;
  } catch {
    return undefined;
  }
}

/** What credential it is, for messages: never its secret. */
export function credentialName(credential: EntraCredential): string {
  if (credential.kind === 'managedIdentity') return `managed identity${credential.clientId ? ` ${credential.clientId}` : ''}`;
  return `app ${credential.clientId} in tenant ${credential.tenant} with a client ${credential.kind}`;
}

/** The library's message, first line only (it appends trouble-shooting links), the secret masked whatever its form. */
function firstLine(err: unknown, credential: EntraCredential): string {
  const text = errorMessage(err).split(/\r?\n/)[0] ?? '';
  return credential.kind === 'secret' && credential.secret !== '' ? text.split(credential.secret).join('***') : text;
}

/** MSAL's word for an authority whose OpenID configuration it could not get: an unknown tenant, or no answer at all. */
const isEndpointsError = (err: unknown) => errorMessage(err).startsWith('endpoints_resolution_error');

/**
 * Why MSAL could not get the tenant's OpenID configuration, asked of the service the way MSAL
 * asks it: it answered (an unknown tenant: HTTP 400) or it could not be reached (ECONNREFUSED,
 * ENOTFOUND, a certificate not trusted). Was: every such failure read as an unknown tenant.
 */
async function whyEndpointsUnresolved(tenant: string, options: EntraTokenOptions): Promise<string> {
  const url = new URL(`${encodeURIComponent(tenant)}/v2.0/.well-known/openid-configuration`, options.authorityHost.endsWith('/') ? options.authorityHost : `${options.authorityHost}/`);
  const ca = options.extraCaFile ? [...rootCertificates, await readFile(options.extraCaFile, 'utf8').catch(() => '')] : undefined;
  const answer = await new Promise<number | string>((resolve) => {
    const request = httpsGet(url, { timeout: 10_000, ...(ca ? { ca } : {}) }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    request.on('timeout', () => request.destroy(Object.assign(new Error('no answer within 10 s'), { code: 'ETIMEDOUT' })));
    request.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? errorMessage(err)));
  });
  if (typeof answer === 'string') return `the identity service at ${options.authorityHost} cannot be reached (${answer}): check authorityHost, DNS, proxy and firewall`;
  return answer === 200
    ? `the identity service at ${options.authorityHost} gives tenant ${tenant}'s OpenID configuration, yet the library could not resolve it (endpoints_resolution_error)`
    : `the identity service knows no tenant ${tenant} at this authorityHost (its OpenID configuration: HTTP ${answer})`;
}

/**
 * The secrets @azure/identity reads from the environment itself: a service principal's
 * (EnvironmentCredential: AZURE_CLIENT_SECRET, the certificate's password, a user's password) and
 * the host's managed identity endpoint's (App Service: IDENTITY_HEADER; older hosts: MSI_SECRET).
 */
const IDENTITY_SECRET_VARIABLES = ['AZURE_CLIENT_SECRET', 'AZURE_CLIENT_CERTIFICATE_PASSWORD', 'AZURE_PASSWORD', 'IDENTITY_HEADER', 'MSI_SECRET'] as const;

/** Registers with the redactor the secrets @azure/identity will read from `env` (IDENTITY_SECRET_VARIABLES). */
export function registerIdentityEnvironment(env: NodeJS.ProcessEnv = process.env): void {
  for (const name of IDENTITY_SECRET_VARIABLES) registerSecret(env[name]);
}

/** @azure/identity is loaded on first use: it costs about 0.1 s, and most runs never need it. */
async function loadCredential(credential: EntraCredential, options: EntraTokenOptions): Promise<TokenCredential> {
  const identity = await import('@azure/identity');
  const common = {
    authorityHost: options.authorityHost,
    disableInstanceDiscovery: !MICROSOFT_AUTHORITY_HOSTS.has(new URL(options.authorityHost).hostname.toLowerCase()),
    ...(options.extraCaFile ? { tlsOptions: { ca: [...rootCertificates, await readFile(options.extraCaFile, 'utf8')] } } : {}),
  };
  switch (credential.kind) {
    case 'secret':
      return new identity.ClientSecretCredential(credential.tenant, credential.clientId, credential.secret, common);
    case 'certificate':
      return new identity.ClientCertificateCredential(credential.tenant, credential.clientId, { certificatePath: credential.certificatePath }, common);
    case 'managedIdentity':
      registerIdentityEnvironment();
      return credential.clientId ? new identity.ManagedIdentityCredential({ clientId: credential.clientId }) : new identity.ManagedIdentityCredential();
  }
}
