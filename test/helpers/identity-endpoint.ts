// The managed-identity token endpoint an Azure host (App Service, Functions) gives its processes
// through IDENTITY_ENDPOINT and IDENTITY_HEADER. No local real component provides one, so the
// Azure AD test runs this stand-in; the storage side of that test is the real Azurite.
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';

export interface IdentityEndpoint {
  /** The environment that makes DefaultAzureCredential ask this endpoint. */
  env: Record<string, string>;
  /** How many tokens were handed out. */
  tokensIssued(): number;
  close(): Promise<void>;
}

const base64url = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** What the tokens claim beyond the defaults (Azurite's storage audience, no tenant, no roles). */
export interface IdentityEndpointOptions {
  /** `aud`: `https://storage.azure.com` unless given; `resource`: the resource the token is asked for (as a real endpoint does). */
  audience?: string;
  /** `tid`, the tenant the token is for. */
  tenant?: string;
  /** `roles`, the application permissions granted (e.g. Mail.ReadWrite). */
  roles?: string[];
  /** Seconds until `exp` (3600 unless given). */
  lifetime?: number;
}

/** An unsigned JWT with the audience, issuer and lifetime Azurite's `--oauth basic` checks (and the claims asked for). */
function unsignedToken(options: IdentityEndpointOptions, resource: string): string {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    aud: options.audience === 'resource' ? resource : (options.audience ?? 'https://storage.azure.com'),
    iss: 'https://sts.windows.net/00000000-0000-0000-0000-000000000001/',
    nbf: now - 60,
    iat: now - 60,
    exp: now + (options.lifetime ?? 3600),
    oid: 'pivot-archive-test',
    ...(options.tenant ? { tid: options.tenant } : {}),
    ...(options.roles ? { roles: options.roles } : {}),
  };
  return `${base64url({ alg: 'RS256', typ: 'JWT' })}.${base64url(claims)}.c2lnbmF0dXJl`;
}

export async function startIdentityEndpoint(options: IdentityEndpointOptions = {}): Promise<IdentityEndpoint> {
  const secret = 'identity-header-for-tests';
  let issued = 0;
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.headers['x-identity-header'] !== secret || !url.searchParams.get('resource')) {
      res.writeHead(400).end('{"error":"bad request"}');
      return;
    }
    issued++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({ access_token: unsignedToken(options, url.searchParams.get('resource')!), expires_on: String(Math.floor(Date.now() / 1000) + (options.lifetime ?? 3600)), resource: url.searchParams.get('resource'), token_type: 'Bearer' }),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  return {
    env: { IDENTITY_ENDPOINT: `http://127.0.0.1:${port}/msi/token`, IDENTITY_HEADER: secret },
    tokensIssued: () => issued,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
