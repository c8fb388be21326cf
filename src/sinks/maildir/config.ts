import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { parseSinkOptions, withoutQuery } from '../options.js';
import { maildirOptions } from './options.js';

/** Who owns what the sink creates (run as root): `gid` absent = the Maildir root's group. */
export interface MaildirOwner {
  uid: number;
  gid?: number;
}

export interface MaildirSinkConfig {
  /** Root folder; each mailbox is the Maildir++ tree `root/<mailbox>/`. */
  root: string;
  /**
   * On-disk name of the Inbox/Pivot folder in Maildir++ layout. `.INBOX.Pivot` is what
   * Dovecot's default namespace shows as `INBOX/Pivot`; `.Pivot` suits a Courier-style
   * `INBOX.` namespace.
   */
  folder: string;
  /** Deliveries written at once (files opened, written and synced in parallel). */
  concurrency: number;
  /**
   * Hard-link an item's later mailbox copies to its first file (as Dovecot's own
   * `maildir_copy_with_hardlinks` does) instead of writing and syncing each one.
   */
  links: boolean;
  /** `?owner=USER[:GROUP]`; absent: the owner of the Maildir root. Only root can give files away. */
  owner?: MaildirOwner;
}

/** Parses `maildir:DIR?...` (see `maildirOptions`); relative paths resolve against `cwd`. No I/O but /etc/passwd and /etc/group. */
export function parseMaildirSpec(spec: string, cwd: string): MaildirSinkConfig {
  const bad = (why: string) => new PivotArchiveError(ErrorCode.SINK_CONFIG, `maildir sink ${JSON.stringify(withoutQuery(spec))}: ${why}`);
  const body = spec.replace(/^maildir:/i, '');
  const q = body.indexOf('?');
  const path = q < 0 ? body : body.slice(0, q);
  if (path === '') throw bad('names no folder (use maildir:DIR)');
  // `maildir://./m` is a URL whose host is `.`: as a path, `//./m` is `/m` (it was written there).
  // `maildir:///srv/mail` (no host, as a file URL) names /srv/mail.
  const host = /^\/\/([^/]+)/.exec(path)?.[1];
  if (host !== undefined) {
    throw bad(`"//${host}" reads as a URL's host, not as a folder: write maildir:${host}/... for a folder under the working directory, or maildir:/ABSOLUTE/PATH`);
  }
  const options = parseSinkOptions(maildirOptions, q < 0 ? '' : body.slice(q + 1), bad);
  const config: MaildirSinkConfig = {
    root: maildirRoot(path, cwd),
    folder: options.folder,
    concurrency: options.concurrency,
    links: options.links === '1',
  };
  if (options.owner !== undefined) config.owner = parseOwner(options.owner, bad);
  return config;
}

/**
 * The root as the sink describes it (`maildir:ROOT`, in the ledger's start records): absolute and
 * normalised (no trailing slash, no `.` or `..` parts, no doubled slash), so that `maildir:/srv/mail/`
 * and `maildir:/srv/mail` are one sink. Symbolic links are not followed (the root may not exist yet).
 */
export function maildirRoot(path: string, cwd: string): string {
  return isAbsolute(path) ? resolve(path) : resolve(cwd, path);
}

/**
 * What the sink is (`maildir:ROOT`, and `?folder=` when not the default): the ledger's start
 * records, the checkpoint's and the import markers' key. Another folder is another sink: a run
 * into it resumes nothing a run into the first settled, an import marks nothing imported twice.
 */
export function maildirDescription(config: Pick<MaildirSinkConfig, 'root' | 'folder'>): string {
  return `maildir:${config.root}${config.folder === maildirOptions.folder.default ? '' : `?folder=${config.folder}`}`;
}

/**
 * A sink description normalised for comparison: a Maildir one's root as `maildirRoot` makes it
 * (ledgers written before it was normalised may hold `maildir:/srv/mail/`), its folder kept; any other as it is.
 * Runs before the folder was part of the description recorded `maildir:ROOT` whatever the folder:
 * given an outcome's `location` (`MAILBOX/FOLDER/cur/NAME`), such a record is read as the folder it names.
 */
export function normalSinkDescription(description: string, location?: string): string {
  const maildir = /^maildir:([^?]+)(\?.*)?$/is.exec(description);
  if (!maildir) return description;
  const root = maildirRoot(maildir[1]!, '/');
  const folder = maildir[2] === undefined ? location?.split('/')[1] : undefined;
  return folder !== undefined && folder.startsWith('.') ? maildirDescription({ root, folder }) : `maildir:${root}${maildir[2] ?? ''}`;
}

/** Entries of /etc/passwd or /etc/group as [name, id, primary gid (passwd only)]; none if unreadable. */
function accounts(file: string): string[][] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').flatMap((line) => (line.startsWith('#') || !line.includes(':') ? [] : [line.split(':')]));
}

const ID = /^\d{1,10}$/;
/** Ids chown takes: -1 (0xffffffff) means "leave as is" to the kernel, so it is not an owner. */
const MAX_ID = 0xfffffffe;

/**
 * `USER[:GROUP]`: names resolved from /etc/passwd and /etc/group (users only NSS knows need
 * numbers), numbers taken as they are. A user without a group takes its primary group when
 * /etc/passwd lists it, otherwise the group of the Maildir root.
 */
function parseOwner(value: string, bad: (why: string) => Error): MaildirOwner {
  const parts = value.split(':');
  const [user = '', group] = parts;
  if (parts.length > 2 || user === '' || group === '') throw bad(`owner must be USER[:GROUP] (names or numbers), not ${JSON.stringify(value)}`);
  const passwd = accounts('/etc/passwd');
  let uid: number;
  let gid: number | undefined;
  if (ID.test(user)) {
    uid = Number(user);
    const entry = passwd.find((e) => e[2] === String(uid));
    if (entry && ID.test(entry[3] ?? '')) gid = Number(entry[3]);
  } else {
    const entry = passwd.find((e) => e[0] === user);
    if (!entry || !ID.test(entry[2] ?? '') || !ID.test(entry[3] ?? '')) throw bad(`owner: no user ${JSON.stringify(user)} in /etc/passwd (give a number for a user it does not list)`);
    uid = Number(entry[2]);
    gid = Number(entry[3]);
  }
  if (group !== undefined) {
    if (ID.test(group)) {
      gid = Number(group);
    } else {
      const entry = accounts('/etc/group').find((e) => e[0] === group);
      if (!entry || !ID.test(entry[2] ?? '')) throw bad(`owner: no group ${JSON.stringify(group)} in /etc/group (give a number for a group it does not list)`);
      gid = Number(entry[2]);
    }
  }
  if (uid > MAX_ID || (gid !== undefined && gid > MAX_ID)) throw bad(`owner ${JSON.stringify(value)}: ids go up to ${MAX_ID}`);
  return gid === undefined ? { uid } : { uid, gid };
}
