import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { checkInteger, parseSinkOptions, type OptionValues } from '../options.js';
import { IMAP_FORM, imapOptions } from './options.js';

export type ImapTls = 'implicit' | 'starttls' | 'none';
export type ImapAuthMode = 'master' | 'authzid' | 'xoauth2';

/** Where auth=xoauth2 gets its app-only tokens (Microsoft Entra ID), without the secret itself. */
export interface ImapOAuthConfig {
  /** The app registration (a secret from `secretEnv`, or `clientCertificate`), or the host's managed identity. */
  credential: 'app' | 'managedIdentity';
  tenant?: string;
  clientId?: string;
  clientCertificate?: string;
  secretEnv: string;
  authorityHost: string;
  /**
   * `https://<IMAP host>/.default`: Exchange Online's resource is its IMAP host
   * (outlook.office365.com; GCC High outlook.office365.us; DoD outlook-dod.office365.us; China partner.outlook.cn).
   */
  scope: string;
}

export interface ImapSinkConfig {
  host: string;
  port: number;
  tls: ImapTls;
  /** The admin (master) user that reaches every participant's mailbox; empty with auth=xoauth2, where the app's token does. */
  user: string;
  /** How the sink reaches a mailbox: the admin's password (Dovecot master user, SASL PLAIN authzid), or an app's token (SASL XOAUTH2). */
  auth: ImapAuthMode;
  /** With auth=xoauth2 only. */
  oauth?: ImapOAuthConfig;
  /** Between mailbox and admin in a master-user login (`jane@acme.com*archiver`). */
  masterSeparator: string;
  /** Folder path as the server names it; `/` or `.` is replaced by the server's delimiter. */
  folder: string;
  /** Connections at most, each logged in to one mailbox at a time. */
  pool: number;
  /** Messages appended to one mailbox per batch (one login, one duplicate search). */
  batch: number;
  /**
   * Deliveries the sink holds at once (its `maxInFlight`): each mailbox's queue grows while the
   * sessions serve others, so one login appends (or skips) more.
   */
  window: number;
  /** Attempts after the first for a batch whose connection fails. */
  retries: number;
  /** First retry delay; it doubles each attempt. */
  retryDelayMs: number;
  /** Environment variable holding the admin password (never the URL, never a log). */
  passwordEnv: string;
  /**
   * A mailbox the admin can log in to, used by `open()` to prove the admin's credentials; without
   * it `open()` logs in to a mailbox that does not exist (see SPEC.md).
   */
  probe?: string;
}

const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|::1)$/i;

/**
 * `SCHEME://USER@HOST[:PORT]` at the start of a spec. USER holds no `:` (a `:` there starts a
 * password), no `/`, `?`, `#`; it may hold `@` (`archiver@acme.com@mail.acme.com`): the HOST
 * starts after the last `@` before the first `/`, `?` or `#`.
 */
const AUTHORITY = /^(imaps?):\/\/([^:/?#\s]+)@(\[[^\s/?#@[\]\\]*\]|[^\s:/?#@[\]\\]+)(?::(\d*))?(?=[/?#]|$)/i;
/** `SCHEME://HOST[:PORT]` with no user: the form of auth=xoauth2, where the app's token reaches every mailbox. */
const HOST_ONLY = /^(imaps?):\/\/()(\[[^\s/?#@[\]\\]*\]|[^\s:/?#@[\]\\]+)(?::(\d*))?(?=[/?#]|$)/i;

/** Options of the password modes, and of xoauth2: each refused in the other (see options.ts). */
const PASSWORD_ONLY = ['masterSeparator', 'passwordEnv'] as const;
const XOAUTH2_ONLY = ['credential', 'tenant', 'clientId', 'clientCertificate', 'secretEnv', 'authorityHost'] as const;

/**
 * Parses `imap[s]://admin@host[:port]/?folder=INBOX/Pivot&tls=implicit|starttls|none&auth=master|authzid`,
 * or `imap[s]://host[:port]/?auth=xoauth2&tenant=...&clientId=...` (no admin: the app's token
 * reaches each mailbox). TLS on port 993 is the default; plain text on a host other than loopback
 * needs `insecure`.
 *
 * A password in the URL is refused, and no error repeats the text where one could be: the URL is
 * split by hand, since a pasted password may hold `/`, `?`, `#`, `@`, `%` or spaces, which make a
 * URL parser cut the authority in the wrong place (and then quote the password as a "port").
 */
export function parseImapSpec(spec: string, options: { insecure?: boolean } = {}): ImapSinkConfig {
  const scheme = /^(imaps?):\/\//i.exec(spec)?.[1]?.toLowerCase();
  if (!scheme) throw new PivotArchiveError(ErrorCode.SINK_CONFIG, `IMAP sink: the spec must start with imap:// or imaps:// (${IMAP_FORM})`);
  const rest = spec.slice(scheme.length + 3);
  const authority = AUTHORITY.exec(spec) ?? HOST_ONLY.exec(spec);
  if (!authority) {
    // Anything up to an `@` that holds a `:` may be USER:PASSWORD: say so, and quote nothing.
    const at = rest.lastIndexOf('@');
    if (at >= 0 && rest.slice(0, at).includes(':')) {
      throw new PivotArchiveError(
        ErrorCode.SINK_CONFIG,
        `IMAP sink: the URL must not carry a password (it is not repeated here): write ${scheme}://ADMIN@HOST/... and put the password in the environment (PIVOT_IMAP_PASSWORD, or the variable passwordEnv names)`,
      );
    }
    // Quoted only when it cannot hold a password at all (`imap://archiver:secret` has no `@`, yet
    // the text after the `:` is most likely one).
    const quoted = /[:@]/.test(rest) ? '' : ` ${JSON.stringify(spec)}`;
    if (at < 0) throw new PivotArchiveError(ErrorCode.SINK_CONFIG, `IMAP sink${quoted}: names no admin user (${IMAP_FORM})`);
    throw new PivotArchiveError(ErrorCode.SINK_CONFIG, `IMAP sink: the spec is not of the form ${IMAP_FORM} (it is not repeated here, in case it holds a password)`);
  }
  const [whole, , rawUser, rawHost, rawPort] = authority;
  // From here on the USER part holds no password: errors may name the sink by its authority.
  const bad = (why: string) => new PivotArchiveError(ErrorCode.SINK_CONFIG, `IMAP sink ${scheme}://${rawUser ? `${rawUser}@` : ''}${rawHost}${rawPort !== undefined ? `:${rawPort}` : ''}: ${why}`);
  const tail = /^(\/[^?#]*)?(?:\?([^#]*))?(#.*)?$/s.exec(spec.slice(whole.length))!;
  if (tail[1] !== undefined && tail[1] !== '/') throw bad('takes options after "?", not a path (folder=INBOX/Pivot)');
  if (tail[3] !== undefined) throw bad('takes no #fragment (write # in a folder name as %23)');
  let user: string;
  try {
    user = decodeURIComponent(rawUser!);
  } catch {
    throw bad('the admin user is not valid percent-encoding');
  }
  const bracketed = /^\[(.*)\]$/.exec(rawHost!);
  const host = bracketed ? bracketed[1]! : domainToASCII(rawHost!);
  if (bracketed ? isIP(host) !== 6 : host === '') throw bad('the host is not a valid host name or address');
  const query = tail[2] ?? '';
  const o = parseSinkOptions(imapOptions, query, bad);
  // Valid percent-encoding by now (parseSinkOptions checked it): the keys as the table names them.
  const given = new Set(query.split('&').map((pair) => decodeURIComponent(pair.split('=')[0]!.replace(/\+/g, ' '))));
  const misplaced = (names: readonly string[]) => names.filter((name) => given.has(name));
  let oauth: ImapOAuthConfig | undefined;
  if (o.auth === 'xoauth2') {
    if (user !== '') throw bad(`auth=xoauth2 logs in to each mailbox with the app's token: name no admin user (${scheme}://HOST/?auth=xoauth2&tenant=TENANT_ID&clientId=APP_ID)`);
    const wrong = misplaced(PASSWORD_ONLY);
    if (wrong.length > 0) throw bad(`${wrong.join(' and ')} ${wrong.length > 1 ? 'apply' : 'applies'} to the admin's password (auth=master or authzid), not to auth=xoauth2`);
    oauth = oauthConfig(o, host, given, bad);
  } else {
    if (user === '') throw new PivotArchiveError(ErrorCode.SINK_CONFIG, `IMAP sink: names no admin user (${IMAP_FORM})`);
    const wrong = misplaced(XOAUTH2_ONLY);
    if (wrong.length > 0) throw bad(`${wrong.join(', ')} ${wrong.length > 1 ? 'apply' : 'applies'} to auth=xoauth2 only, not to auth=${o.auth}`);
  }
  if (o.tls === 'none' && !LOOPBACK.test(host) && !options.insecure) {
    throw bad(`tls=none sends the ${oauth ? "app's token" : 'password'} in clear text to a host that is not loopback: add --insecure to allow it`);
  }
  return {
    host,
    port: rawPort ? checkInteger('port', rawPort, { min: 1, max: 65535 }, bad) : o.tls === 'implicit' ? 993 : 143,
    tls: o.tls,
    user,
    auth: o.auth,
    ...(oauth ? { oauth } : {}),
    masterSeparator: o.masterSeparator,
    folder: o.folder,
    pool: o.pool,
    batch: o.batch,
    window: o.window,
    retries: o.retries,
    retryDelayMs: o.retryDelay,
    passwordEnv: o.passwordEnv,
    ...(o.probe !== undefined ? { probe: o.probe } : {}),
  };
}

/** Where auth=xoauth2 gets its tokens: which options the credential needs, and which make no sense with it. */
function oauthConfig(o: OptionValues<typeof imapOptions>, host: string, given: Set<string>, bad: (why: string) => Error): ImapOAuthConfig {
  const resource = host.includes(':') ? `[${host}]` : host;
  const common = { secretEnv: o.secretEnv, authorityHost: o.authorityHost.replace(/\/$/, ''), scope: `https://${resource}/.default` };
  if (o.credential === 'managedIdentity') {
    const wrong = ['tenant', 'clientCertificate', 'secretEnv'].filter((name) => given.has(name));
    if (wrong.length > 0) throw bad(`credential=managedIdentity takes no ${wrong.join(' or ')}: the host's identity needs no secret (clientId= names a user-assigned one)`);
    return { credential: 'managedIdentity', ...(o.clientId !== undefined ? { clientId: o.clientId } : {}), ...common };
  }
  if (o.tenant === undefined || o.clientId === undefined) throw bad("auth=xoauth2 needs the app registration's tenant=TENANT_ID and clientId=APP_ID (or credential=managedIdentity)");
  if (o.clientCertificate !== undefined && given.has('secretEnv')) throw bad('give clientCertificate or secretEnv, not both: the app proves itself one way');
  return { credential: 'app', tenant: o.tenant, clientId: o.clientId, ...(o.clientCertificate !== undefined ? { clientCertificate: o.clientCertificate } : {}), ...common };
}
