// Reads mailboxes back over IMAP for `verify` (see ../SPEC.md, "Reading a store back"): one
// read-only EXAMINE per mailbox, UID FETCH BODY.PEEK[] in ranges, each message hashed as it arrives.
import type { ImapFlow } from 'imapflow';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { HEADER_DOMAIN } from '../../transforms/mime/index.js';
import { exportIdOf, messageVersion } from '../../formats/message/export-id.js';
import { asBuilt } from './version-field.js';
import { Digest, messageIdentity, secondOf } from '../held.js';
import type { HeldMessage, SinkOptions, StoreReader, UnexpectedMessage, WantedMessage } from '../sink.js';
import type { ImapSinkConfig } from './config.js';
import { Slots } from '../slots.js';
import { authFor, findFolder, identity, imapClient, imapDescription, imapLocation, ImapSink, imapSpecAndCredentials, loginRefusal, logout, parseImapLocation, serverText, uidSet, type ImapCredentials, type ImapSpecOptions } from './index.js';

/** UIDs per FETCH command: a range of this many messages at most. */
const FETCH_UIDS = 500;
/** Message-IDs per SEARCH (OR of HEADER keys). */
const SEARCH_IDS = 50;
/** Messages of ours have Message-IDs in this domain. */
const OUR_MESSAGE_ID = `@${HEADER_DOMAIN}>`;

/** A message as fetched: its identity (from its header) and the hash of what the server holds. */
interface Fetched {
  uid: number;
  messageId: string;
  sentAt?: string;
  sha256: string;
  size: number;
  /** The sha256 of its bytes without X-Pivot-Export-Id: which version of its item it is (the same event from another export is the same version). */
  version: string;
  /** Its X-Pivot-Export-Id field's value (first line), when it has one. */
  exportId?: string;
}

export { uidSet };

/**
 * The sha256 the ledger records for a wanted message: its latest delivery's (`sha256`), else what a
 * skip would have built (`builtSha256`: verify passes its `Expected`, and src/sinks/sink.ts does not
 * declare that field on WantedMessage, hence the cast).
 */
function recordedSha256(w: WantedMessage): string | undefined {
  const e = w as WantedMessage & { sha256?: string; builtSha256?: string };
  return e.sha256 ?? e.builtSha256;
}

/** The version digest of that same record, when it carries one (verify's `Expected`, as above). */
function recordedVersionOf(w: WantedMessage): string | undefined {
  const e = w as WantedMessage & { sha256?: string; version?: string; builtVersion?: string };
  return e.sha256 !== undefined ? e.version : e.builtVersion;
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export class ImapReader implements StoreReader {
  readonly description: string;
  /** Connections open at once, at most `pool` (mailboxes read at once beyond that wait). */
  private readonly connections: Slots;

  constructor(
    readonly config: ImapSinkConfig,
    private readonly credentials: ImapCredentials,
    private readonly stop?: AbortSignal,
  ) {
    this.description = imapDescription(config);
    this.connections = new Slots(config.pool);
  }

  /** Proves the admin's credentials as the sink's `open()` does (the same logins; nothing is written). */
  async open(): Promise<void> {
    const sink = new ImapSink(this.config, this.credentials, { stop: this.stop });
    await sink.open();
    await sink.close();
  }

  async mailbox(mailbox: string, wanted: WantedMessage[], { sample }: { sample: boolean }): Promise<{ held: Map<WantedMessage, HeldMessage>; unexpected: UnexpectedMessage[] }> {
    const held = new Map<WantedMessage, HeldMessage>();
    const unexpected: UnexpectedMessage[] = [];
    const client = await this.connect(mailbox);
    if (!client) return { held, unexpected };
    const onStop = () => client.close();
    this.stop?.addEventListener('abort', onStop, { once: true });
    try {
      const { path, exists } = await findFolder(client, this.config.folder);
      if (!exists) return { held, unexpected };
      // EXAMINE: read-only, so no flag (\Recent, \Seen) changes by reading.
      const box = await client.mailboxOpen(path, { readOnly: true });
      const where = (uid: number) => imapLocation(mailbox, path, box.uidValidity, uid)!;
      const fetched = new Map<number, Fetched>();
      const fetch = (uids: number[]) => this.fetchHashed(client, uids.filter((uid) => !fetched.has(uid)), fetched);
      // By location first: the same folder and UIDVALIDITY, then the UID.
      const located = new Map<WantedMessage, number>();
      for (const w of wanted) {
        const at = w.location === undefined ? undefined : parseImapLocation(w.location);
        if (at && at.mailbox === mailbox && at.folder === path && at.uidValidity === box.uidValidity) located.set(w, at.uid);
      }
      if (!sample) await fetch(box.exists === 0 ? [] : ((await client.search({ all: true }, { uid: true })) || []));
      else await fetch([...located.values()]);
      const used = new Set<number>();
      const take = (w: WantedMessage, found: Fetched) => {
        used.add(found.uid);
        const copy: HeldMessage = { messageId: found.messageId, ...(found.sentAt === undefined ? {} : { sentAt: found.sentAt }), location: where(found.uid), sha256: found.sha256, size: found.size, version: found.version, ...(found.exportId === undefined ? {} : { exportId: found.exportId }) };
        held.set(w, copy);
      };
      // Records of one identity (Message-ID and the Date header's second, as the sink's presence
      // check tells an item) answer for one copy each: the copy with the content the ledger
      // records (the sha256 of the latest delivery, else of what a skip would have built), the
      // least UID of those, as the sink keeps when it removes copies and names when it skips.
      // Without one of that content: the least UID (altered). The other copies are unexpected,
      // whatever copy a record names: an item in a folder twice is never intact. Of those, the
      // least UID of each other version (content less X-Pivot-Export-Id: the same event from
      // another export is a plain copy) is told apart (`version`): a corrected re-delivery is
      // stored beside the earlier version (see SPEC.md, "Corrected versions"), and verify asks the
      // ledger whether a record of that identity has its sha256. A record whose location holds its
      // Message-ID under another Date (an edit) is matched there: it is altered.
      const answers = new Map<string, Fetched>();
      const byIdentity = async (final: boolean) => {
        const index = new Map<string, Fetched[]>();
        for (const found of [...fetched.values()].sort((a, b) => a.uid - b.uid)) {
          if (found.sentAt === undefined) continue;
          const key = identity(found.messageId, Date.parse(found.sentAt));
          const copies = index.get(key);
          if (copies) copies.push(found);
          else index.set(key, [found]);
        }
        for (const w of wanted) {
          if (held.has(w)) continue;
          const key = identity(w.messageId, secondOf(w.sentAt) * 1000);
          const recorded = recordedSha256(w);
          const answerKey = `${key} ${recorded ?? ''}`;
          const copies = index.get(key) ?? [];
          let found = answers.get(answerKey) ?? (recorded === undefined ? undefined : copies.find((c) => c.sha256 === recorded));
          // Else a copy of the version the record carries (the same event as another export built it), before any other.
          const version = recordedVersionOf(w);
          if (!found && final && version !== undefined) found = copies.find((c) => !used.has(c.uid) && c.version === version) ?? copies.find((c) => c.version === version);
          // Not final (a sample, before the search by Message-ID): a copy of other content may not be the only one.
          if (!found && (final || recorded === undefined)) found = copies.find((c) => !used.has(c.uid)) ?? copies[0];
          if (!found && final) {
            const uid = located.get(w);
            const there = uid === undefined ? undefined : fetched.get(uid);
            if (there && there.messageId === w.messageId && !used.has(there.uid)) found = there;
          }
          if (!found) continue;
          answers.set(answerKey, found);
          take(w, found);
        }
        return index;
      };
      if (sample) {
        await byIdentity(false);
        const ids = [...new Set(wanted.filter((w) => !held.has(w)).map((w) => w.messageId))];
        const uids: number[] = [];
        for (const group of chunks(ids, SEARCH_IDS)) {
          const query = group.length === 1 ? { header: { 'message-id': group[0]! } } : { or: group.map((id) => ({ header: { 'message-id': id } })) };
          uids.push(...((await client.search(query, { uid: true })) || []));
        }
        if (uids.length > 0) await fetch(uids);
        await byIdentity(true);
      } else {
        const index = await byIdentity(true);
        for (const copies of index.values()) {
          // Versions a record answered for; the first copy of any other version is told apart.
          const versions = new Set(copies.filter((c) => used.has(c.uid)).map((c) => c.version));
          const answered = versions.size > 0;
          for (const found of copies) {
            if (used.has(found.uid) || !found.messageId.endsWith(OUR_MESSAGE_ID)) continue;
            // A copy of ours no record matched. `version`: the sha256 of a copy of an identity a
            // record answered for, of a version no earlier copy of it is (another version of the
            // item stored beside it: a corrected re-delivery); verify looks for a ledger record of
            // that identity with that sha256, and found, the copy is that record's, not unexpected.
            // `sha256`: what a copy of such an identity holds (verify: a delivered version is still there).
            const version = answered && !versions.has(found.version);
            versions.add(found.version);
            const entry: UnexpectedMessage = { messageId: found.messageId, ...(found.sentAt === undefined ? {} : { sentAt: found.sentAt }), location: where(found.uid), ...(answered ? { sha256: found.sha256 } : {}), ...(version ? { version: found.sha256 } : {}) };
            unexpected.push(entry);
          }
        }
        for (const found of fetched.values()) {
          if (used.has(found.uid) || found.sentAt !== undefined || !found.messageId.endsWith(OUR_MESSAGE_ID)) continue;
          unexpected.push({ messageId: found.messageId, location: where(found.uid) });
        }
      }
      return { held, unexpected };
    } catch (err) {
      if (err instanceof PivotArchiveError) throw err;
      throw new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `IMAP reader: mailbox ${mailbox} cannot be read back: ${serverText(err)}`, { cause: err });
    } finally {
      this.stop?.removeEventListener('abort', onStop);
      await logout(client);
      this.connections.give();
    }
  }

  /** UID FETCH BODY.PEEK[] in ranges; each message, less the sink's X-Pivot-Version field, hashed with and without X-Pivot-Export-Id (and its identity read), as it arrives, then let go. */
  private async fetchHashed(client: ImapFlow, uids: number[], into: Map<number, Fetched>): Promise<void> {
    for (const group of chunks([...new Set(uids)].sort((a, b) => a - b), FETCH_UIDS)) {
      for await (const message of client.fetch(uidSet(group), { uid: true, source: true }, { uid: true })) {
        if (!message.source) continue;
        // The message as built: the sink's X-Pivot-Version field is not part of what the ledger recorded.
        const { built: source, version } = asBuilt(message.source, messageVersion);
        const { messageId, sentAt } = messageIdentity(source);
        const exportId = exportIdOf(source);
        into.set(message.uid, { uid: message.uid, messageId, ...(sentAt === undefined ? {} : { sentAt }), ...new Digest().update(source).result(), version, ...(exportId === undefined ? {} : { exportId }) });
      }
    }
  }

  /** No IMAP command lists a server's accounts: the mailboxes the ledger names are all it reads. */
  async mailboxes(): Promise<string[]> {
    return [];
  }

  async close(): Promise<void> {}

  /**
   * A client logged in to the mailbox, once one of `pool` connections is free; undefined (and the
   * slot given back) when the server does not know the mailbox (AUTHORIZATIONFAILED): it holds
   * nothing. With the app's token a refusal is retried once with a token asked for anew (it may
   * have lapsed); refused again, the app may not open the mailbox (Exchange does not tell that from
   * a mailbox that does not exist): it holds nothing the app can see.
   */
  private async connect(mailbox: string): Promise<ImapFlow | undefined> {
    await this.connections.take();
    const tokens = typeof this.credentials === 'string' ? undefined : this.credentials;
    for (let tries = 0; ; tries++) {
      let client: ImapFlow | undefined;
      try {
        if (this.stop?.aborted) throw new Error('stopped by a signal');
        client = imapClient(this.config, await authFor(this.config, this.credentials, mailbox), { connectionTimeout: 30_000, greetingTimeout: 15_000 });
        client.on('error', () => undefined);
        await client.connect();
        return client;
      } catch (err) {
        client?.close();
        const refusal = loginRefusal(err);
        if (tokens && refusal !== null && refusal !== 'unavailable' && tries === 0) {
          tokens.forget();
          continue;
        }
        this.connections.give();
        if (refusal === 'authorization' || (tokens && refusal !== null && refusal !== 'unavailable')) return undefined;
        if (err instanceof PivotArchiveError) throw err;
        throw new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `IMAP reader: cannot log in to mailbox ${mailbox}: ${serverText(err)}`, { cause: err });
      }
    }
  }
}

export function createImapReader(spec: string, options: ImapSpecOptions & Pick<SinkOptions, 'cwd'>): ImapReader {
  const { config, credentials } = imapSpecAndCredentials(spec, options);
  return new ImapReader(config, credentials, options.stop);
}
