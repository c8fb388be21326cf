// Reads what the Graph sink stored back for `verify` (see SPEC.md, "Reading back"): read-only
// requests, the same folder lookup (never creating), and for each message either the exact MIME
// Graph serves (`$value`, for imported messages) or, for a json-mode message, the compared fields
// checked against the stamp the sink wrote last.
import { createHash } from 'node:crypto';
import { exportIdOf, messageVersion } from '../../formats/message/export-id.js';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';
import type { AccessTokens } from '../../auth/entra.js';
import type { HeldMessage, SinkOptions, StoreReader, UnexpectedMessage, WantedMessage } from '../sink.js';
import { GraphClient, GraphError, mailboxUnusable } from './client.js';
import { parseGraphSpec, type GraphSinkConfig } from './config.js';
import { graphAccess, proveAccess } from './index.js';
import { COMPARED_FIELDS, dayOf, dayWindow, deliveredSha256, graphLocation, halfCreated, identity, isOurs, listFolder, listedKey, listedOf, parseGraphLocation, resolveFolder, stampFields, type Listed } from './mailbox.js';
import { eachLimited } from '../held.js';

/** Messages read back at once per mailbox (the client keeps to the per-mailbox limit in any case). */
const READS_AT_ONCE = 4;

export class GraphReader implements StoreReader {
  readonly description: string;
  private readonly tokens: AccessTokens;
  private readonly client: GraphClient;

  constructor(readonly config: GraphSinkConfig) {
    this.description = config.description;
    ({ tokens: this.tokens, client: this.client } = graphAccess(config));
  }

  open(): Promise<void> {
    return proveAccess(this.config, this.tokens, this.client);
  }

  async mailbox(mailbox: string, wanted: WantedMessage[], { sample }: { sample: boolean }): Promise<{ held: Map<WantedMessage, HeldMessage>; unexpected: UnexpectedMessage[] }> {
    const held = new Map<WantedMessage, HeldMessage>();
    let folderId: string | undefined;
    try {
      folderId = (await resolveFolder(this.client, mailbox, this.config.folder, false))?.id;
    } catch (err) {
      if (mailboxUnusable(err)) return { held, unexpected: [] };
      throw this.unavailable(mailbox, err);
    }
    if (folderId === undefined) return { held, unexpected: [] };
    const used = new Set<string>();
    // The versions of items a wanted message is (identity and stamp's sha256): another copy of one is a plain copy.
    const answered = new Set<string>();
    // By location first: the message there, if it is still the wanted item.
    await eachLimited(wanted, READS_AT_ONCE, async (w) => {
      const at = w.location === undefined ? undefined : parseGraphLocation(w.location);
      if (!at || at.mailbox !== mailbox) return;
      const message = await this.get(mailbox, at.messageId);
      // Moved out of the folder: not where the sink put it (a search of the folder follows).
      if (message && message.parentFolderId === folderId && identity(message.internetMessageId, message.sentAt) === identity(w.messageId, w.sentAt)) {
        used.add(message.id);
        answered.add(listedKey(message));
        held.set(w, await this.hashed(mailbox, folderId!, message));
      }
    });
    if (held.size === wanted.length && sample) return { held, unexpected: [] };
    // Then by identity, from a listing: of the wanted days in a sample, of the whole folder otherwise.
    let listed: Listed[];
    try {
      if (sample) {
        const days = [...new Set(wanted.filter((w) => !held.has(w)).map((w) => dayOf(Date.parse(w.sentAt))))];
        listed = (await Promise.all(days.map((d) => listFolder(this.client, mailbox, folderId!, dayWindow(d), COMPARED_FIELDS)))).flat();
      } else listed = await listFolder(this.client, mailbox, folderId, undefined, COMPARED_FIELDS);
    } catch (err) {
      throw this.unavailable(mailbox, err);
    }
    const missing = wanted.filter((w) => !held.has(w));
    await eachLimited(missing, READS_AT_ONCE, async (w) => {
      // One message is the item for every record of its identity: a run whose copy was removed as
      // another writer's duplicate (see the sink's close) recorded where its own copy was.
      const want = identity(w.messageId, w.sentAt);
      const same = (m: Listed) => identity(m.internetMessageId, m.sentAt) === want;
      // The version the ledger recorded first, when the folder holds several (a corrected re-delivery beside the first).
      const found = listed.find((m) => !used.has(m.id) && same(m) && w.sha256 !== undefined && deliveredSha256(m) === w.sha256) ?? listed.find((m) => !used.has(m.id) && same(m)) ?? listed.find(same);
      if (!found) return;
      used.add(found.id);
      answered.add(listedKey(found));
      held.set(w, await this.hashed(mailbox, folderId!, found));
    });
    // A whole json-mode message says which version of its item it is (its stamp's sha256s): the
    // least copy of a version no wanted message is (an earlier one kept beside a corrected
    // re-delivery) is answered for by the ledger's record of it; every other copy is plainly unexpected.
    const unexpected: UnexpectedMessage[] = [];
    if (!sample) {
      for (const m of listed.filter((l) => !used.has(l.id) && isOurs(l.internetMessageId)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
        // Only a stamp whose compared fields still hold (else the message was altered: plainly unexpected).
        const [sha256, , fields] = stampFields(m);
        const known = m.stamp !== undefined && !halfCreated(m) && fields === m.fields;
        const version = known && !answered.has(listedKey(m)) ? sha256 : undefined;
        if (version !== undefined) answered.add(listedKey(m));
        unexpected.push({ messageId: m.internetMessageId, sentAt: m.sentAt, location: graphLocation(mailbox, folderId!, m.id), ...(version !== undefined ? { version } : {}), ...(known ? { sha256 } : {}) });
      }
    }
    return { held, unexpected };
  }

  /** Graph lists no mailboxes to an app that holds Mail.ReadWrite only (User.Read.All would be another permission): none. */
  async mailboxes(): Promise<string[]> {
    return [];
  }

  async close(): Promise<void> {
    this.client.close();
  }

  /** A message by id, or undefined when Graph has none by that id. */
  private async get(mailbox: string, messageId: string): Promise<Listed | undefined> {
    try {
      const got = await this.client.send(mailbox, { method: 'GET', path: `${GraphClient.user('v1.0', mailbox)}/messages/${encodeURIComponent(messageId)}?${COMPARED_FIELDS}` });
      return listedOf(got.json as Record<string, unknown>);
    } catch (err) {
      if (err instanceof GraphError && (err.status === 404 || err.status === 400)) return undefined;
      throw this.unavailable(mailbox, err);
    }
  }

  /**
   * What verify compares. A stamped (json-mode) message: the stamp's MIME sha256 and size when the
   * fields Graph returned (with the listing or the read by location) hash to the stamp's fields
   * digest, else that other digest (so it is altered), with the stamp's version when it has one. Any
   * other message: the sha256 and version of the MIME Graph serves (`$value`).
   */
  private async hashed(mailbox: string, folderId: string, m: Listed): Promise<HeldMessage> {
    const base = { messageId: m.internetMessageId, sentAt: m.sentAt, location: graphLocation(mailbox, folderId, m.id) };
    if (m.stamp === undefined) {
      try {
        const value = await this.client.send(mailbox, { method: 'GET', path: `${GraphClient.user('v1.0', mailbox)}/messages/${encodeURIComponent(m.id)}/$value`, raw: true });
        const bytes = value.bytes ?? Buffer.alloc(0);
        const exportId = exportIdOf(bytes);
        return { ...base, sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length, version: messageVersion(bytes), ...(exportId === undefined ? {} : { exportId }) };
      } catch (err) {
        throw this.unavailable(mailbox, err);
      }
    }
    // A pending stamp: its run stopped before the attachments were all in; it is not what was delivered.
    if (halfCreated(m)) return { ...base, sha256: 'incomplete: attachments missing', size: 0 };
    const [sha256 = '', size = '0', fields = '', version] = stampFields(m);
    return fields === m.fields ? { ...base, sha256, size: Number(size), ...(version ? { version } : {}) } : { ...base, sha256: m.fields ?? 'fields not read', size: 0 };
  }

  private unavailable(mailbox: string, err: unknown): PivotArchiveError {
    if (err instanceof PivotArchiveError) return err;
    return new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `Graph reader ${this.description}: mailbox ${mailbox}: ${errorMessage(err)}`, { cause: err });
  }
}

export function createGraphReader(spec: string, options: Partial<SinkOptions> & { env?: NodeJS.ProcessEnv } = {}): GraphReader {
  return new GraphReader(parseGraphSpec(spec, options));
}
