// Starts a throwaway Dovecot (Debian package dovecot-imapd) on a free loopback port with its own
// config, passwd-file users, a master user and Maildir storage in a temporary folder.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { ImapFlow } from 'imapflow';
import { processStatFields } from '../../src/process-util.js';
import { freePort, selfSignedCertificate, waitFor } from './net.js';

const run = promisify(execFile);

/**
 * Runs dovecot with no pipes (the daemon it forks keeps inherited pipes open forever); its stderr,
 * where it says why it cannot start before its log is open, goes to a file quoted on failure.
 */
async function runDetached(args: string[], stderrFile: string): Promise<void> {
  const stderr = await open(stderrFile, 'w');
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(DOVECOT_BINARY!, args, { stdio: ['ignore', 'ignore', stderr.fd] });
      child.on('error', reject);
      child.on('exit', resolve);
    });
    if (code !== 0) throw new Error(`dovecot ${args.join(' ')} exited with ${code}: ${(await readFile(stderrFile, 'utf8')).trim()}`);
  } finally {
    await stderr.close();
  }
}
export const DOVECOT_BINARY = ['/usr/sbin/dovecot', '/usr/local/sbin/dovecot'].find((p) => existsSync(p));
export const ADMIN = 'archiver';
export const ADMIN_PASSWORD = 'admin-secret-Zq81';

/**
 * Why this Dovecot cannot stand in for Exchange Online's XOAUTH2, or undefined: its library must
 * validate JWTs locally with the audience check (`aud` against the oauth2 passdb's `client_id`),
 * which upstream has since 2.3.x and Debian 12's 2.3.19.1 has backported.
 */
export function dovecotOAuth2Missing(): string | undefined {
  const library = ['/usr/lib/dovecot/libdovecot.so.0', '/usr/local/lib/dovecot/libdovecot.so.0'].find((p) => existsSync(p));
  if (!library) return 'Dovecot\'s library (libdovecot.so.0) is not where Debian puts it: its OAuth2 support cannot be checked';
  if (!readFileSync(library).includes('client_id not found in aud field')) {
    return 'this Dovecot\'s oauth2 passdb does not check a token\'s audience (Debian 12\'s dovecot-core 2.3.19.1 does): IMAP XOAUTH2 tests cannot run';
  }
  return undefined;
}

/** Outside CI a missing Dovecot is said loudly; in CI it is a failure (the test command installs it). */
export function dovecotMissingMessage(): string {
  return 'Dovecot is not installed (Debian package dovecot-imapd): IMAP tests cannot run. `npm test` installs it as root.';
}

export interface Dovecot {
  /** Plain IMAP (with STARTTLS offered); `tlsPort` is implicit TLS (IMAPS). */
  port: number;
  tlsPort: number;
  /** The self-signed certificate the server presents (for 127.0.0.1 and localhost). */
  certFile: string;
  dir: string;
  /** Where mailboxes live when the default mail location is used. */
  mailRoot: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /**
   * The server gone at once, as a crash or a power cut: the master and every process it started
   * (logins, sessions) killed with SIGKILL. `start()` brings it back on the same mail. A graceful
   * `stop()` lets sessions already logged in go on working for seconds while it waits for them.
   */
  kill(): Promise<void>;
}

function greets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.setTimeout(1000);
    socket.once('data', (d) => {
      socket.destroy();
      resolve(d.toString().startsWith('* OK'));
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Dovecot as Exchange Online's IMAP with app-only OAuth2: SASL XOAUTH2 (Exchange offers no
 * OAUTHBEARER) with a bearer token that Dovecot's `oauth2` passdb validates locally (2.3:
 * `introspection_mode = local`), its signature against `keys` (by the token's `kid`), its `aud`
 * against `audience` (the passdb's `client_id`: Debian's 2.3.19.1 has the upstream check that a
 * token's `aud` holds it), its `exp`, `nbf`, `iat` and issuer. An app-only token names the app, not a mailbox, so
 * the token's user is not compared with the login's (empty `username_format`); what Exchange
 * decides with `Add-MailboxPermission` is the second passdb: the mailboxes the app may open
 * (`appMailboxes`), any other refused as Exchange refuses it (`NO AUTHENTICATE failed`).
 */
export interface DovecotOAuth2 {
  /** The token services' signing keys (Entra publishes several; each token names its `kid`). */
  keys: { kid: string; publicKeyPem: string }[];
  audience: string;
  issuer: string;
  appMailboxes: string[];
}

/** Why Dovecot refused a token ("Token has expired", "client_id not found in aud field") is in its log. */
const OAUTH2_LOGGING = 'auth_verbose = yes\n';
/**
 * The tests of refused tokens make many failed logins from one address: Dovecot's growing
 * per-address penalty (2, 6, 10, 17 s...) is off (its anvil socket unusable, as its docs say).
 */
const NO_AUTH_PENALTY = `
  unix_listener anvil-auth-penalty {
    mode = 0
  }`;

/** The key dictionary and passdbs of `DovecotOAuth2`, written below `dir`. */
async function oauth2Passdbs(dir: string, oauth2: DovecotOAuth2): Promise<string> {
  // Dovecot looks a key up as shared/<azp>/<alg>/<kid>, which the fs dict reads from
  // <prefix><azp>/<alg>/<kid>; a v1 token (Exchange's) has no azp: "default".
  const keyDir = join(dir, 'oauth2-keys', 'default', 'RS256');
  await mkdir(keyDir, { recursive: true });
  for (const key of oauth2.keys) await writeFile(join(keyDir, key.kid), key.publicKeyPem);
  await writeFile(
    join(dir, 'oauth2.conf.ext'),
    `introspection_mode = local
local_validation_key_dict = fs:posix:prefix=${dir}/oauth2-keys/
client_id = ${oauth2.audience}
issuers = ${oauth2.issuer}
username_attribute = sub
username_format =
`,
  );
  await setAppMailboxes({ dir }, oauth2.appMailboxes);
  return `passdb {
  driver = oauth2
  mechanisms = xoauth2
  args = ${dir}/oauth2.conf.ext
  result_success = continue-ok
  result_failure = return-fail
  result_internalfail = return-fail
}
passdb {
  driver = passwd-file
  mechanisms = xoauth2
  args = scheme=PLAIN username_format=%u ${dir}/app-mailboxes
  skip = unauthenticated
  result_failure = return-fail
}
`;
}

/** The mailboxes the app may open from now on (Add-MailboxPermission / Remove-MailboxPermission). */
export async function setAppMailboxes(dovecot: Pick<Dovecot, 'dir'>, mailboxes: string[]): Promise<void> {
  const file = join(dovecot.dir, 'app-mailboxes');
  await writeFile(`${file}.new`, mailboxes.map((m) => `${m}:::::::nopassword=y`).join('\n') + '\n');
  await rename(`${file}.new`, file);
}

/**
 * `mailLocation` gets a folder Dovecot may write its index and control files to; `oauth2` adds
 * XOAUTH2 logins (see `DovecotOAuth2`) beside the password logins.
 */
export async function startDovecot(users: string[], options: { mailLocation?: (indexDir: string) => string; oauth2?: DovecotOAuth2 } = {}): Promise<Dovecot> {
  if (!DOVECOT_BINARY) throw new Error(dovecotMissingMessage());
  const dir = await mkdtemp(join(tmpdir(), 'pivot-dovecot-'));
  // Dovecot's own unprivileged processes read the config, users and mail below it.
  await chmod(dir, 0o755);
  const { certFile, keyFile } = await selfSignedCertificate(dir);
  const asRoot = process.getuid?.() === 0;
  // Dovecot will not run mail processes as root: as root, use its own unprivileged users.
  const mailUser = asRoot ? 'dovecot' : userInfo().username;
  const loginUser = asRoot ? 'dovenull' : userInfo().username;
  const mailRoot = join(dir, 'mail');
  for (const sub of ['run', 'state', 'log', 'mail', 'home', 'index']) await mkdir(join(dir, sub), { recursive: true });
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'dovecot']);
    const { stdout: gid } = await run('id', ['-g', 'dovecot']);
    for (const sub of ['mail', 'home', 'index']) await chown(join(dir, sub), Number(stdout), Number(gid));
  }
  await writeFile(join(dir, 'users'), [...new Set(users)].map((u) => `${u}:{PLAIN}user-secret`).join('\n') + '\n');
  await writeFile(join(dir, 'masters'), `${ADMIN}:{PLAIN}${ADMIN_PASSWORD}\n`);
  const oauth2 = options.oauth2 ? await oauth2Passdbs(dir, options.oauth2) : '';
  // With XOAUTH2 the password passdbs take password logins only (not a token as a password).
  const passwordMechanisms = options.oauth2 ? '\n  mechanisms = plain login' : '';
  const config = (port: number, tlsPort: number) => `
protocols = imap
listen = 127.0.0.1
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/log/dovecot.log
ssl = yes
ssl_cert = <${certFile}
ssl_key = <${keyFile}
disable_plaintext_auth = no
auth_mechanisms = plain login${options.oauth2 ? ' xoauth2' : ''}
${options.oauth2 ? OAUTH2_LOGGING : ''}auth_master_user_separator = *
default_internal_user = ${mailUser}
default_internal_group = ${mailUser}
default_login_user = ${loginUser}
mail_location = ${options.mailLocation?.(join(dir, 'index')) ?? `maildir:${mailRoot}/%u`}
mail_uid = ${mailUser}
mail_gid = ${mailUser}
first_valid_uid = 1
# The tests of a file share one server and one mailbox (jane) at once: sinks, readers and the
# tests' own clients. Dovecot's default of 10 per user and address is for real users.
mail_max_userip_connections = 200
namespace inbox {
  inbox = yes
  separator = /
}
${oauth2}passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${dir}/masters
  master = yes
  pass = yes${passwordMechanisms}
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${dir}/users${passwordMechanisms}
}
userdb {
  driver = static
  args = uid=${mailUser} gid=${mailUser} home=${dir}/home/%u
}
# Login processes started beforehand and kept (Dovecot's high-performance mode), not one forked per
# connection: on a loaded CI host a fork and exec per connection took past a client's 10 s greeting wait.
service imap-login {
  chroot =
  service_count = 0
  process_min_avail = 2
  inet_listener imap {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = ${tlsPort}
  }
}
service anvil {
  chroot =${options.oauth2 ? NO_AUTH_PENALTY : ''}
}
service stats {
  unix_listener stats-reader {
    mode = 0666
  }
  unix_listener stats-writer {
    mode = 0666
  }
}
`;
  const conf = join(dir, 'dovecot.conf');
  const dovecot: Dovecot = {
    port: 0,
    tlsPort: 0,
    certFile,
    dir,
    mailRoot,
    async start() {
      await runDetached(['-c', conf], join(dir, 'log', 'start.err'));
      await waitFor(() => greets(dovecot.port), 'Dovecot greets');
    },
    async kill() {
      const pid = Number(await readFile(join(dir, 'run', 'master.pid'), 'utf8').catch(() => '0'));
      if (!(pid > 0)) return;
      const children: number[] = [];
      for (const entry of await readdir('/proc').catch(() => [] as string[])) {
        if (!/^\d+$/.test(entry)) continue;
        if (Number(processStatFields(entry)?.[1]) === pid) children.push(Number(entry));
      }
      for (const child of [pid, ...children]) {
        try {
          process.kill(child, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
      await waitFor(async () => !(await greets(dovecot.port)) && !alive(pid) && children.every((c) => !alive(c)), 'Dovecot is killed');
      await rm(join(dir, 'run', 'master.pid'), { force: true });
    },
    async stop() {
      const pid = Number(await readFile(join(dir, 'run', 'master.pid'), 'utf8').catch(() => '0'));
      await runDetached(['-c', conf, 'stop'], join(dir, 'log', 'stop.err')).catch(() => undefined);
      // Not just the port: a new master refuses to start while the old one is still exiting.
      await waitFor(async () => !(await greets(dovecot.port)) && !(pid > 0 && alive(pid)), 'Dovecot stops');
    },
  };
  // Another test's server may bind a port between our check and Dovecot's bind: then new ports.
  for (let attempt = 1; ; attempt++) {
    dovecot.port = await freePort();
    do dovecot.tlsPort = await freePort();
    while (dovecot.tlsPort === dovecot.port);
    await writeFile(conf, config(dovecot.port, dovecot.tlsPort));
    await rm(join(dir, 'log', 'dovecot.log'), { force: true });
    try {
      await dovecot.start();
      return dovecot;
    } catch (error) {
      const log = await readFile(join(dir, 'log', 'dovecot.log'), 'utf8').catch(() => '');
      if (attempt === 3 || !/Address already in use/.test(`${(error as Error).message}\n${log}`)) throw new Error(`${(error as Error).message}\n${log.slice(-2000)}`);
    }
  }
}

/**
 * Gives the master user (the sink's admin) another password, as an administrator rotating it
 * would: Dovecot reads the passwd-file again on a later login, no restart.
 */
export async function setAdminPassword(dovecot: Dovecot, password: string): Promise<void> {
  const file = join(dovecot.dir, 'masters');
  await writeFile(`${file}.new`, `${ADMIN}:{PLAIN}${password}\n`);
  await rename(`${file}.new`, file);
  // Dovecot looks at the file at most once a second (passwd_file_sync): a login in the same second
  // as the last one would still get the old password.
  await new Promise((resolve) => setTimeout(resolve, 1100));
}

/**
 * Makes a mailbox's storage unusable to the server, as a revoked or broken mail folder is: its
 * Maildir made a directory the mail user may not enter (made first if no login made it yet).
 * Logins to it still pass; every command that touches its folders fails. Returns the repair.
 */
export async function revokeMailbox(dovecot: Dovecot, mailbox: string): Promise<() => Promise<void>> {
  const path = join(dovecot.mailRoot, mailbox);
  const before = await stat(path).catch(() => undefined);
  if (!before) await mkdir(path);
  await chmod(path, 0o000);
  return async () => {
    if (before) await chmod(path, before.mode & 0o7777);
    else await rm(path, { recursive: true, force: true });
  };
}

export async function removeDovecot(dovecot: Dovecot): Promise<void> {
  await dovecot.stop();
  await rm(dovecot.dir, { recursive: true, force: true });
}

export interface FetchedMessage {
  source: Buffer;
  internalDate: Date;
  flags: Set<string>;
  messageId: string;
}

/**
 * Reads a mailbox's folder back with a plain imapflow client of its own (master-user login),
 * independent of the sink's code.
 */
export async function fetchFolder(port: number, mailbox: string, folder = 'INBOX/Pivot'): Promise<FetchedMessage[]> {
  const client = new ImapFlow({ host: '127.0.0.1', port, secure: false, doSTARTTLS: false, logger: false, auth: { user: `${mailbox}*${ADMIN}`, pass: ADMIN_PASSWORD } });
  await client.connect();
  try {
    const exists = (await client.list()).some((m) => m.path === folder);
    if (!exists) return [];
    const box = await client.mailboxOpen(folder, { readOnly: true });
    if (box.exists === 0) return [];
    const messages = await client.fetchAll('1:*', { source: true, internalDate: true, flags: true, envelope: true });
    return messages.map((m) => ({
      source: m.source!,
      internalDate: new Date(m.internalDate!),
      flags: m.flags ?? new Set(),
      messageId: m.envelope?.messageId ?? '',
    }));
  } finally {
    await client.logout();
  }
}

/** The parts of a location the IMAP sink resolves (`<mailbox>/<folder>;UIDVALIDITY=v/;UID=u`), read here on their own. */
function locationParts(location: string): { mailbox: string; folder: string; uidValidity: string; uid: number } {
  const match = /^([^/]+)\/(.+);UIDVALIDITY=(\d+)\/;UID=(\d+)$/.exec(location);
  if (!match) throw new Error(`not an IMAP location: ${location}`);
  return { mailbox: match[1]!, folder: match[2]!, uidValidity: match[3]!, uid: Number(match[4]) };
}

/**
 * Runs `use` on a plain imapflow client logged in to the location's mailbox (master user) with its
 * folder selected (read-only unless `write`), when the folder still has the location's UIDVALIDITY.
 */
async function atLocation<T>(port: number, location: string, write: boolean, use: (client: ImapFlow, uid: number) => Promise<T>): Promise<T | undefined> {
  const at = locationParts(location);
  const client = new ImapFlow({ host: '127.0.0.1', port, secure: false, doSTARTTLS: false, logger: false, auth: { user: `${at.mailbox}*${ADMIN}`, pass: ADMIN_PASSWORD } });
  await client.connect();
  try {
    const box = await client.mailboxOpen(at.folder, { readOnly: !write });
    if (String(box.uidValidity) !== at.uidValidity) return undefined;
    return await use(client, at.uid);
  } finally {
    await client.logout();
  }
}

/** The bytes the server holds at a location (BODY.PEEK[] of that UID), or undefined. */
/** The sha256 of a message less the text of its X-Pivot-Export-Id field (its line break stays), as the Maildir names and Graph stamps have it: worked out here, not with the tool's code. */
function versionOf(built: Buffer): string {
  const split = built.indexOf('\r\n\r\n');
  const head = built.toString('latin1', 0, split).replace(/(^|\n)X-Pivot-Export-Id:[^\n]*(\n[ \t][^\n]*)*/i, '$1');
  return createHash('sha256').update(Buffer.from(head, 'latin1')).update(built.subarray(split)).digest('hex');
}

/** A message built, as the IMAP sink appends it: its X-Pivot-Version field first (see src/sinks/imap/SPEC.md). */
export function asAppended(built: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`X-Pivot-Version: sha256=${versionOf(built)}\r\n`), built]);
}

/** A message as the IMAP sink appended it, less its X-Pivot-Version field, which must be first and name the rest's version (`versionOf`); else this throws. */
export function asBuilt(stored: Buffer): Buffer {
  const line = /^X-Pivot-Version: sha256=([0-9a-f]{64})\r\n/.exec(stored.toString('latin1', 0, 100));
  if (!line) throw new Error(`no X-Pivot-Version field first: ${JSON.stringify(stored.toString('latin1', 0, 60))}`);
  const built = stored.subarray(line[0].length);
  if (versionOf(built) !== line[1]) throw new Error(`X-Pivot-Version names ${line[1]}, the message is ${versionOf(built)}`);
  return built;
}

/**
 * Holds back the next APPEND an imapflow client of this process sends (`hold`), until released:
 * so a test can put another writer's message between a sink's listing and its APPEND. imapflow is
 * put back when the test ends.
 */
export function appendGate(t: ExecutionContext): { hold(): () => void; taken(): Promise<void> } {
  const proto = ImapFlow.prototype as unknown as { append: (...args: unknown[]) => Promise<unknown> };
  const append = proto.append;
  let gate: Promise<void> | undefined;
  proto.append = async function (this: unknown, ...args: unknown[]) {
    const held = gate;
    gate = undefined;
    if (held) await held;
    return append.apply(this, args);
  };
  t.teardown(() => void (proto.append = append));
  return {
    hold() {
      let release!: () => void;
      gate = new Promise((resolve) => (release = resolve));
      return release;
    },
    /** Resolves once an APPEND waits at the gate. */
    async taken() {
      while (gate) await new Promise((resolve) => setTimeout(resolve, 20));
    },
  };
}

export async function fetchAt(port: number, location: string): Promise<Buffer | undefined> {
  return atLocation(port, location, false, async (client, uid) => {
    const message = await client.fetchOne(String(uid), { source: true }, { uid: true });
    return message ? message.source : undefined;
  });
}

/** IMAP has no edit: the message at a location deleted and `change(its bytes)` appended in its place (same flags and date). */
export async function replaceAt(port: number, location: string, change: (raw: Buffer) => Buffer): Promise<void> {
  await atLocation(port, location, true, async (client, uid) => {
    const message = await client.fetchOne(String(uid), { source: true, flags: true, internalDate: true }, { uid: true });
    if (!message || !message.source) throw new Error(`nothing at ${location}`);
    await client.messageDelete(String(uid), { uid: true });
    await client.append(client.mailbox ? client.mailbox.path : '', change(message.source), [...(message.flags ?? [])], new Date(message.internalDate!));
  });
}

/** Another writer's copy of the message at a location, appended to its folder (same bytes, flags and date). */
export async function copyAt(port: number, location: string): Promise<void> {
  await atLocation(port, location, true, async (client, uid) => {
    const message = await client.fetchOne(String(uid), { source: true, flags: true, internalDate: true }, { uid: true });
    if (!message || !message.source) throw new Error(`nothing at ${location}`);
    await client.append(client.mailbox ? client.mailbox.path : '', message.source, [...(message.flags ?? [])], new Date(message.internalDate!));
  });
}

/** The message at a location deleted (and expunged). */
export async function removeAt(port: number, location: string): Promise<void> {
  await atLocation(port, location, true, (client, uid) => client.messageDelete(String(uid), { uid: true }));
}

/** What a mail client does: the first message marked unread, the others flagged. */
export async function clientFlags(port: number, locations: string[]): Promise<void> {
  for (const [i, location] of locations.entries()) {
    await atLocation(port, location, true, async (client, uid) => {
      if (i === 0) await client.messageFlagsRemove(String(uid), ['\\Seen'], { uid: true });
      else await client.messageFlagsAdd(String(uid), ['\\Flagged', '\\Answered'], { uid: true });
    });
  }
}
