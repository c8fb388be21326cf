import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { checkInteger, parseSinkOptions } from '../options.js';
import { IMAP_FORM, imapOptions } from './options.js';

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

/**
 * Parses `imap[s]://admin@host[:port]/?folder=INBOX/Pivot&tls=implicit|starttls|none&auth=master|authzid`.
 * TLS on port 993 is the default; plain text on a host other than loopback needs `insecure`.
 *
 * A password in the URL is refused, and no error repeats the text where one could be: the URL is
 * split by hand, since a pasted password may hold `/`, `?`, `#`, `@`, `%` or spaces, which make a
 * URL parser cut the authority in the wrong place (and then quote the password as a "port").
 */
export function parseImapSpec(spec: string, options: { insecure?: boolean } = {}): ImapSinkConfig {
  const scheme = /^(imaps?):\/\//i.exec(spec)?.[1]?.toLowerCase();
  if (!scheme) throw new PivotArchiveError(ErrorCode.SINK_CONFIG, `IMAP sink: the spec must start with imap:// or imaps:// (${IMAP_FORM})`);
  const rest = spec.slice(scheme.length + 3);
  const authority = AUTHORITY.exec(spec);
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
  const bad = (why: string) => new PivotArchiveError(ErrorCode.SINK_CONFIG, `IMAP sink ${scheme}://${rawUser}@${rawHost}${rawPort !== undefined ? `:${rawPort}` : ''}: ${why}`);
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
  const o = parseSinkOptions(imapOptions, tail[2] ?? '', bad);
  if (o.tls === 'none' && !LOOPBACK.test(host) && !options.insecure) {
    throw bad('tls=none sends the password in clear text to a host that is not loopback: add --insecure to allow it');
  }
  return {
    host,
    port: rawPort ? checkInteger('port', rawPort, { min: 1, max: 65535 }, bad) : o.tls === 'implicit' ? 993 : 143,
    tls: o.tls,
    user,
    auth: o.auth,
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
