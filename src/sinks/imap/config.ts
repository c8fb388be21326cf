import { isIP } from 'node:net';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { redactSecrets } from '../../redact.js';
import { integerOption } from '../query.js';

export type ImapTls = 'implicit' | 'starttls' | 'none';
export type ImapAuthMode = 'master' | 'authzid';

export interface ImapSinkConfig {
  host: string;
  port: number;
  tls: ImapTls;
  /** The admin (master) user that reaches every participant's mailbox. */
  user: string;
  /** How the admin reaches a mailbox: Dovecot master-user login, or SASL PLAIN with an authzid. */
  auth: ImapAuthMode;
  /** Between mailbox and admin in a master-user login (`jane@acme.com*archiver`). */
  masterSeparator: string;
  /** Folder path as the server names it; `/` or `.` is replaced by the server's delimiter. */
  folder: string;
  /** Connections at most, each logged in to one mailbox at a time. */
  pool: number;
  /** Messages appended to one mailbox per batch (one login, one duplicate search). */
  batch: number;
  /** Attempts after the first for a batch whose connection fails. */
  retries: number;
  /** First retry delay; it doubles each attempt. */
  retryDelayMs: number;
  /** Environment variable holding the admin password (never the URL, never a log). */
  passwordEnv: string;
}

const QUERY_KEYS = ['folder', 'tls', 'auth', 'masterSeparator', 'pool', 'batch', 'retries', 'retryDelay', 'passwordEnv'];
const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|::1|\[::1\])$/i;


/**
 * Parses `imap[s]://admin@host[:port]/?folder=INBOX/Pivot&tls=implicit|starttls|none&auth=master|authzid`.
 * TLS on port 993 is the default; plain text on a host other than loopback needs `insecure`.
 */
export function parseImapSpec(spec: string, options: { insecure?: boolean } = {}): ImapSinkConfig {
  const bad = (why: string) => new PivotArchiveError(ErrorCode.SINK_CONFIG, `IMAP sink ${redactSecrets(spec)}: ${why}`);
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    throw bad('is not a URL such as imap://archiver@mail.example.com/?folder=INBOX/Pivot');
  }
  if (url.password) throw bad(`must not carry a password: put it in the environment (PIVOT_IMAP_PASSWORD)`);
  if (!url.username) throw bad('names no admin user (imap://USER@host)');
  if (url.pathname !== '/' && url.pathname !== '') throw bad('takes options after "?", not a path');
  for (const key of url.searchParams.keys()) {
    if (!QUERY_KEYS.includes(key)) throw bad(`unknown option ${JSON.stringify(key)} (known: ${QUERY_KEYS.join(', ')})`);
  }
  const q = url.searchParams;
  const tls = (q.get('tls') ?? 'implicit') as ImapTls;
  if (!['implicit', 'starttls', 'none'].includes(tls)) throw bad('tls must be implicit, starttls or none');
  const auth = (q.get('auth') ?? 'master') as ImapAuthMode;
  if (!['master', 'authzid'].includes(auth)) throw bad('auth must be master or authzid');
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (tls === 'none' && !LOOPBACK.test(url.hostname) && !(isIP(host) && host.startsWith('127.')) && !options.insecure) {
    throw bad('tls=none sends the password in clear text to a host that is not loopback: add --insecure to allow it');
  }
  const folder = q.get('folder') ?? 'INBOX/Pivot';
  if (folder === '' || /[\u0000-\u001f*%]/.test(folder)) throw bad('folder must be a plain folder path such as INBOX/Pivot');
  return {
    host,
    port: integerOption(url.port || null, tls === 'implicit' ? 993 : 143, 1, 65535, 'port', bad),
    tls,
    user: decodeURIComponent(url.username),
    auth,
    masterSeparator: q.get('masterSeparator') ?? '*',
    folder,
    pool: integerOption(q.get('pool'), 4, 1, 64, 'pool', bad),
    batch: integerOption(q.get('batch'), 50, 1, 1000, 'batch', bad),
    retries: integerOption(q.get('retries'), 5, 0, 100, 'retries', bad),
    retryDelayMs: integerOption(q.get('retryDelay'), 500, 0, 600_000, 'retryDelay', bad),
    passwordEnv: q.get('passwordEnv') ?? 'PIVOT_IMAP_PASSWORD',
  };
}

