// A local stand-in for Microsoft Entra ID's token service, for the client-credentials flow that
// app-only access to Microsoft 365 uses (no tenant can be reached from the test machines). It is
// written from Microsoft's documented contract and refuses what Entra refuses:
//   - OpenID discovery at /{tenant}/v2.0/.well-known/openid-configuration, keys at
//     /{tenant}/discovery/v2.0/keys, tokens from POST /{tenant}/oauth2/v2.0/token;
//   - grant_type=client_credentials only, one scope of the form <resource>/.default;
//   - a client secret, or a client assertion (RFC 7523 JWT, RS256 or PS256, signed with the app's
//     certificate key, x5t or x5t#S256 naming that certificate, aud the token endpoint, iss = sub =
//     the client id, within its lifetime);
//   - Entra's error bodies (`error`, `error_description` starting `AADSTSnnnn:`, `error_codes`,
//     trace and correlation ids): a wrong secret is 401 invalid_client AADSTS7000215.
// Tokens are JWTs signed RS256 with a key of the endpoint's own, in the form Entra gives app-only
// tokens for a v1 resource such as Exchange Online: aud = the resource, iss
// https://sts.windows.net/{tenant}/, appid, oid = sub = the service principal, tid, roles.
// It also serves the managed-identity endpoint an Azure App Service host gives its processes
// (IDENTITY_ENDPOINT with the IDENTITY_HEADER secret, api-version 2019-08-01), issuing the same
// signed tokens for the identities configured.
// It serves HTTPS only (MSAL refuses an authority that is not https), with a self-signed
// certificate in `caFile`: a child process trusts it through NODE_EXTRA_CA_CERTS.
import { createHash, createPublicKey, createVerify, generateKeyPairSync, randomBytes, randomUUID, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import { selfSignedCertificate } from './net.js';

export interface EntraApp {
  clientId: string;
  /** The client secrets the app registration holds (Certificates & secrets). */
  secrets?: string[];
  /** The certificate (PEM) uploaded to the app registration, for client assertions. */
  certificatePem?: string;
  /** The application permissions granted with admin consent, e.g. `IMAP.AccessAsApp`: the token's `roles`. */
  roles?: string[];
  /** The service principal's object id (`oid` and `sub` of its tokens): what Add-MailboxPermission names. */
  servicePrincipalId?: string;
}

/** A managed identity of the host: system-assigned (the first), or user-assigned, named by its client id. */
export interface EntraManagedIdentity {
  clientId: string;
  roles?: string[];
  servicePrincipalId?: string;
}

export interface EntraEndpointOptions {
  tenant: string;
  apps: EntraApp[];
  managedIdentities?: EntraManagedIdentity[];
  /** Seconds a token lives (Entra: 60-90 minutes); tests of renewal use a few seconds. */
  lifetimeSeconds?: number;
  /** Resources tokens may be asked for (`https://outlook.office365.com`); absent: any. */
  resources?: string[];
}

export interface EntraEndpoint {
  /** `https://127.0.0.1:PORT`: what `authorityHost` is set to. */
  authorityHost: string;
  tenant: string;
  /** The endpoint's TLS certificate (self-signed), to trust. */
  caFile: string;
  /** The public key (PEM, SPKI) that verifies its tokens, and its key id (`kid`). */
  publicKeyPem: string;
  kid: string;
  /** The environment that makes @azure/identity's ManagedIdentityCredential ask this endpoint (App Service). */
  managedIdentityEnv: Record<string, string>;
  /** Tokens issued, per client id. */
  issued(clientId: string): number;
  /** Token requests refused, with the AADSTS code of each. */
  refusals(): number[];
  /** Changes how long the tokens issued from now on live. */
  setLifetime(seconds: number): void;
  /** A token signed by this endpoint with these claims over the usual ones (for tokens the service would never issue: expired, another audience). */
  sign(claims: Record<string, unknown>): string;
  close(): Promise<void>;
}

const b64url = (value: object | Buffer) => (Buffer.isBuffer(value) ? value : Buffer.from(JSON.stringify(value))).toString('base64url');

export async function startEntraEndpoint(options: EntraEndpointOptions): Promise<EntraEndpoint> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  // Entra's key ids are the certificate's SHA-1 thumbprint in base64url; the key's is as good here.
  const kid = createHash('sha1').update(publicKey.export({ type: 'spki', format: 'der' })).digest('base64url');
  const dir = await mkdtemp(join(tmpdir(), 'pivot-entra-'));
  const { certFile, keyFile } = await selfSignedCertificate(dir);
  let lifetime = options.lifetimeSeconds ?? 3600;
  const issued = new Map<string, number>();
  const identityHeader = randomBytes(16).toString('hex');
  const refused: number[] = [];
  let authorityHost = '';

  const tokenFor = (claims: Record<string, unknown>) => {
    const now = Math.floor(Date.now() / 1000);
    const body = {
      aud: 'https://outlook.office365.com',
      iss: `https://sts.windows.net/${options.tenant}/`,
      iat: now,
      nbf: now,
      exp: now + lifetime,
      idp: `https://sts.windows.net/${options.tenant}/`,
      tid: options.tenant,
      // Entra's unique token identifier: two tokens issued in one second differ.
      uti: randomBytes(16).toString('base64url'),
      ver: '1.0',
      ...claims,
    };
    const head = b64url({ typ: 'JWT', alg: 'RS256', x5t: kid, kid });
    const payload = b64url(body);
    return `${head}.${payload}.${sign('sha256', Buffer.from(`${head}.${payload}`), privateKey).toString('base64url')}`;
  };

  /** Entra's error response: status, `error`, and an `error_description` that starts with the AADSTS code. */
  const refuse = (res: ServerResponse, status: number, error: string, code: number, text: string) => {
    refused.push(code);
    const traceId = randomUUID();
    const correlationId = randomUUID();
    const timestamp = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
    json(res, status, {
      error,
      // Entra ends the description with CRLF-separated trace lines.
      error_description: `AADSTS${code}: ${text}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
      error_codes: [code],
      timestamp,
      trace_id: traceId,
      correlation_id: correlationId,
      error_uri: `${authorityHost}/error?code=${code}`,
    });
  };

  const server: Server = createServer({ cert: await readFile(certFile), key: await readFile(keyFile) }, (req, res) => {
    void handle(req, res).catch((err: Error) => json(res, 500, { error: 'server_error', error_description: err.message }));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', authorityHost);
    if (url.pathname === '/msi/token') return managedIdentityToken(req, url, res);
    const [tenant, ...rest] = url.pathname.split('/').filter(Boolean);
    const path = rest.join('/');
    if (tenant !== options.tenant) {
      refuse(res, 400, 'invalid_request', 90002, `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`);
      return;
    }
    const base = `${authorityHost}/${tenant}`;
    if (req.method === 'GET' && path === 'v2.0/.well-known/openid-configuration') {
      json(res, 200, {
        token_endpoint: `${base}/oauth2/v2.0/token`,
        token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
        jwks_uri: `${base}/discovery/v2.0/keys`,
        response_modes_supported: ['query', 'fragment', 'form_post'],
        subject_types_supported: ['pairwise'],
        id_token_signing_alg_values_supported: ['RS256'],
        response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
        scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
        issuer: `${base}/v2.0`,
        request_uri_parameter_supported: false,
        authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
        device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
        end_session_endpoint: `${base}/oauth2/v2.0/logout`,
        tenant_region_scope: 'EU',
        cloud_instance_name: new URL(authorityHost).host,
      });
      return;
    }
    if (req.method === 'GET' && path === 'discovery/v2.0/keys') {
      json(res, 200, { keys: [{ kty: 'RSA', use: 'sig', kid, x5t: kid, ...publicKey.export({ format: 'jwk' }) }] });
      return;
    }
    if (req.method !== 'POST' || path !== 'oauth2/v2.0/token') {
      json(res, 404, { error: 'not_found' });
      return;
    }
    const form = new URLSearchParams(await body(req));
    const tokenEndpoint = `${base}/oauth2/v2.0/token`;
    if (form.get('grant_type') !== 'client_credentials') {
      refuse(res, 400, 'unsupported_grant_type', 70003, `The app requested an unsupported grant type '${form.get('grant_type') ?? ''}'.`);
      return;
    }
    const clientId = form.get('client_id') ?? '';
    const app = options.apps.find((a) => a.clientId === clientId);
    if (!app) {
      refuse(res, 400, 'unauthorized_client', 700016, `Application with identifier '${clientId}' was not found in the directory '${tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.`);
      return;
    }
    const scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
    const resource = scopes.length === 1 && scopes[0]!.endsWith('/.default') ? scopes[0]!.slice(0, -'/.default'.length) : undefined;
    if (!resource) {
      refuse(res, 400, 'invalid_scope', 1002012, `The provided value for scope ${scopes.join(' ')} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`);
      return;
    }
    if (options.resources && !options.resources.includes(resource)) {
      refuse(res, 400, 'invalid_resource', 500011, `The resource principal named ${resource} was not found in the tenant named ${tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.`);
      return;
    }
    const secret = form.get('client_secret');
    const assertion = form.get('client_assertion');
    if (secret !== null) {
      if (!(app.secrets ?? []).includes(secret)) {
        refuse(res, 401, 'invalid_client', 7000215, `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`);
        return;
      }
    } else if (assertion !== null) {
      if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
        refuse(res, 400, 'invalid_request', 50027, 'Invalid client_assertion_type.');
        return;
      }
      const why = assertionProblem(assertion, app, tokenEndpoint);
      if (why) {
        refuse(res, 401, 'invalid_client', why.code, why.text);
        return;
      }
    } else {
      refuse(res, 401, 'invalid_client', 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
      return;
    }
    issued.set(clientId, (issued.get(clientId) ?? 0) + 1);
    const sp = app.servicePrincipalId ?? `sp-${clientId}`;
    const claims: Record<string, unknown> = { aud: resource, appid: clientId, appidacr: secret !== null ? '1' : '2', oid: sp, sub: sp };
    if (app.roles?.length) claims.roles = app.roles;
    json(res, 200, { token_type: 'Bearer', expires_in: lifetime, ext_expires_in: lifetime, access_token: tokenFor(claims) });
  }

  /** App Service's managed-identity protocol: GET with the X-IDENTITY-HEADER secret, `resource`, and `client_id` for a user-assigned identity. */
  function managedIdentityToken(req: IncomingMessage, url: URL, res: ServerResponse): void {
    const identities = options.managedIdentities ?? [];
    const clientId = url.searchParams.get('client_id');
    const identity = clientId ? identities.find((i) => i.clientId === clientId) : identities[0];
    const resource = url.searchParams.get('resource');
    if (req.headers['x-identity-header'] !== identityHeader || url.searchParams.get('api-version') !== '2019-08-01' || !resource) {
      json(res, 400, { statusCode: 400, message: 'Unable to load the proper Managed Identity.' });
      return;
    }
    if (!identity) {
      json(res, 400, { statusCode: 400, message: `No managed identity with client id ${clientId ?? '(system-assigned)'} on this host.` });
      return;
    }
    issued.set(identity.clientId, (issued.get(identity.clientId) ?? 0) + 1);
    const sp = identity.servicePrincipalId ?? `sp-${identity.clientId}`;
    const claims: Record<string, unknown> = { aud: resource.replace(/\/$/, ''), appid: identity.clientId, appidacr: '2', oid: sp, sub: sp };
    if (identity.roles?.length) claims.roles = identity.roles;
    json(res, 200, { access_token: tokenFor(claims), expires_on: String(Math.floor(Date.now() / 1000) + lifetime), resource, token_type: 'Bearer', client_id: identity.clientId });
  }

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  authorityHost = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    authorityHost,
    tenant: options.tenant,
    caFile: certFile,
    managedIdentityEnv: { IDENTITY_ENDPOINT: `${authorityHost}/msi/token`, IDENTITY_HEADER: identityHeader },
    publicKeyPem,
    kid,
    issued: (clientId) => issued.get(clientId) ?? 0,
    refusals: () => [...refused],
    setLifetime: (seconds) => void (lifetime = seconds),
    sign: tokenFor,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Why Entra would refuse this client assertion, or undefined when it is good. */
function assertionProblem(assertion: string, app: EntraApp, tokenEndpoint: string): { code: number; text: string } | undefined {
  if (!app.certificatePem) return { code: 700027, text: `Client assertion failed signature validation. No certificate is registered for app '${app.clientId}'.` };
  const [head, payload, signature] = assertion.split('.');
  if (!head || !payload || !signature) return { code: 50012, text: 'Client assertion is not a JWT.' };
  let header: Record<string, string>;
  let claims: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(head, 'base64url').toString()) as Record<string, string>;
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
  } catch {
    return { code: 50012, text: 'Client assertion is not a JWT.' };
  }
  const certificate = new X509Certificate(app.certificatePem);
  const thumbprints = [Buffer.from(certificate.fingerprint.replace(/:/g, ''), 'hex').toString('base64url'), Buffer.from(certificate.fingerprint256.replace(/:/g, ''), 'hex').toString('base64url')];
  if (!thumbprints.includes(header.x5t ?? '') && !thumbprints.includes(header['x5t#S256'] ?? '')) {
    return { code: 700027, text: `Client assertion failed signature validation. Key was not found for app '${app.clientId}' (x5t does not name a certificate the app holds).` };
  }
  const key: KeyObject = createPublicKey(certificate.publicKey.export({ type: 'spki', format: 'pem' }));
  const verifier = createVerify('sha256').update(`${head}.${payload}`);
  const pss = header.alg === 'PS256';
  if (header.alg !== 'RS256' && !pss) return { code: 700027, text: `Client assertion uses an unsupported algorithm '${header.alg}'.` };
  if (!verifier.verify(pss ? { key, padding: 6, saltLength: 32 } : key, Buffer.from(signature, 'base64url'))) {
    return { code: 700027, text: 'Client assertion contains an invalid signature.' };
  }
  if (claims.aud !== tokenEndpoint) return { code: 700212, text: `No matching federated identity record found for presented assertion audience '${String(claims.aud)}'.` };
  if (claims.iss !== app.clientId || claims.sub !== app.clientId) return { code: 700021, text: 'Client assertion application identifier does not match the client_id parameter.' };
  const now = Math.floor(Date.now() / 1000);
  if (typeof claims.exp !== 'number' || claims.exp < now || (typeof claims.nbf === 'number' && claims.nbf > now + 300)) {
    return { code: 700024, text: 'Client assertion is not within its valid time range.' };
  }
  return undefined;
}

function json(res: ServerResponse, status: number, value: object): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(JSON.stringify(value));
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}
