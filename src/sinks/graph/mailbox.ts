// What the sink and its reader share about one mailbox: finding (or creating) the folder path,
// listing what a folder holds in a time window, and where a message is (`Stored.location`).
import { GraphClient, GraphError, type GraphResponse } from './client.js';
import { HEADER_DOMAIN } from '../../transforms/mime/index.js';
import { fieldsDigest, PENDING, STAMP_PROPERTY } from './message.js';

/** Well-known folder names Graph takes in place of an id (mailFolder resource, v1.0). */
const WELL_KNOWN = new Set(['archive', 'clutter', 'conflicts', 'conversationhistory', 'deleteditems', 'drafts', 'inbox', 'junkemail', 'localfailures', 'msgfolderroot', 'outbox', 'recoverableitemsdeletions', 'scheduled', 'searchfolders', 'sentitems', 'serverfailures', 'syncissues']);

/** A string in an OData literal: `'` doubled. */
export function odataString(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** Where a message is, as the ledger records it: `<mailbox>/<folder id>/<message id>`, ids percent-encoded. */
export function graphLocation(mailbox: string, folderId: string, messageId: string): string {
  return `${mailbox}/${encodeURIComponent(folderId)}/${encodeURIComponent(messageId)}`;
}

export function parseGraphLocation(location: string): { mailbox: string; folderId: string; messageId: string } | undefined {
  const m = /^([^/]+)\/([^/]+)\/([^/]+)$/.exec(location);
  if (!m) return undefined;
  try {
    return { mailbox: m[1]!, folderId: decodeURIComponent(m[2]!), messageId: decodeURIComponent(m[3]!) };
  } catch {
    return undefined;
  }
}

/** A message a folder holds, as a listing gives it. */
export interface Listed {
  id: string;
  internetMessageId: string;
  /** sentDateTime, ISO. */
  sentAt: string;
  /** The json-mode stamp (`<sha256> <size> <fields sha256>`, `pending ...` until the message is whole); absent on an imported message. */
  stamp?: string;
  /** The sha256 of the compared fields as Graph returned them (`fieldsDigest`), when they were asked for. */
  fields?: string;
  /** The folder that holds it, when asked for. */
  parentFolderId?: string;
}

/** A json-mode message whose attachments were still being added when its run stopped. */
export function halfCreated(message: Listed): boolean {
  return message.stamp?.startsWith(PENDING) === true;
}

/**
 * Which version of its item a message is: the sha256 of the MIME it was made from without its
 * X-Pivot-Export-Id (its stamp's fourth field, pending or not: the same event in an export with
 * another id is the same version), or '' for one whose version cannot be told without reading it
 * (imported, or stamped before stamps carried it), which stands for any.
 */
export function versionOf(message: Listed): string {
  return stampFields(message)[3] ?? '';
}

/** The sha256 of the MIME a json-mode message was made from as the stamp holds it (what the ledger records), or undefined. */
export function deliveredSha256(message: Listed): string | undefined {
  return stampFields(message)[0];
}

/** The stamp's fields (`<sha256> <size> <fields sha256> [<version>]`), pending or not; none without a stamp. */
export function stampFields(message: Listed): string[] {
  const stamp = message.stamp;
  if (stamp === undefined) return [];
  return (stamp.startsWith(PENDING) ? stamp.slice(PENDING.length) : stamp).split(' ');
}

/** What identifies an item in a mailbox: its Message-ID and its sentAt to the second. */
export function identity(messageId: string, time: string | number): string {
  return `${messageId} ${Math.floor((typeof time === 'number' ? time : Date.parse(time)) / 1000)}`;
}

/** An item's identity and a version of it (`versionOf`; '' for one that cannot be told). */
export function versionKey(messageId: string, sentAt: string | number, version: string): string {
  return `${identity(messageId, sentAt)} ${version}`;
}

/** The identity and the version a listed message holds. */
export function listedKey(m: Listed): string {
  return versionKey(m.internetMessageId, m.sentAt, versionOf(m));
}

/** The identity a listed message holds. */
export function listedIdentity(m: Listed): string {
  return identity(m.internetMessageId, m.sentAt);
}

/**
 * Whether a message of an item, of version `held` (`versionOf`), is taken for the item's version
 * `wanted` (the sha256 of the delivery's MIME without X-Pivot-Export-Id, in either mode): the same
 * version, or one that cannot be told ('': imported, or stamped before stamps carried it), which
 * stands for any. So a run of either mode after one of the other makes nothing twice, and a
 * corrected version is made beside a stamped earlier one in either mode.
 */
export function standsFor(held: string, wanted: string): boolean {
  return held === wanted || held === '';
}

/** Whether a Message-ID is one this tool made. */
export function isOurs(messageId: string): boolean {
  return messageId.endsWith(`@${HEADER_DOMAIN}>`);
}

const STAMP_EXPANDED = `singleValueExtendedProperties($filter=id eq ${odataString(STAMP_PROPERTY)})`;
/** The `$select`/`$expand` of the sink's listings and look-ups: identity and stamp. */
export const MESSAGE_FIELDS = `$select=id,internetMessageId,sentDateTime&$expand=${STAMP_EXPANDED}`;
/** The reader's: the compared fields too, so a stamped message is checked from its listing alone. */
export const COMPARED_FIELDS = `$select=id,parentFolderId,internetMessageId,sentDateTime,subject,from,toRecipients,ccRecipients&$expand=${STAMP_EXPANDED},attachments($select=name)`;

interface GraphAddress {
  emailAddress?: { address?: string };
}

/** A message's identity fields and `stamp`: all a create's answer is read for (the stamp it was sent). */
export function createdOf(message: Record<string, unknown>, stamp: string | undefined): Listed {
  const sent = Date.parse(String(message.sentDateTime));
  return { id: String(message.id), internetMessageId: String(message.internetMessageId ?? ''), sentAt: Number.isNaN(sent) ? '' : new Date(sent).toISOString(), ...(stamp ? { stamp } : {}) };
}

/** STAMP_PROPERTY lower-cased, once (not per message listed). */
const STAMP_PROPERTY_LOWER = STAMP_PROPERTY.toLowerCase();

export function listedOf(message: Record<string, unknown>): Listed {
  const props = (message.singleValueExtendedProperties as { id: string; value: string }[] | undefined) ?? [];
  const stamp = props.find((p) => p.id.toLowerCase() === STAMP_PROPERTY_LOWER)?.value;
  const listed = createdOf(message, stamp);
  if (!('subject' in message)) return listed;
  const f = message as { subject?: string; from?: GraphAddress; toRecipients?: GraphAddress[]; ccRecipients?: GraphAddress[]; attachments?: { name?: string }[] };
  const fields = fieldsDigest({
    internetMessageId: listed.internetMessageId,
    subject: f.subject ?? '',
    from: f.from?.emailAddress?.address ?? '',
    to: (f.toRecipients ?? []).map((r) => r.emailAddress?.address ?? ''),
    cc: (f.ccRecipients ?? []).map((r) => r.emailAddress?.address ?? ''),
    sentAt: listed.sentAt,
    attachments: (f.attachments ?? []).map((a) => a.name ?? ''),
  });
  return { ...listed, fields, ...(typeof message.parentFolderId === 'string' ? { parentFolderId: message.parentFolderId } : {}) };
}

/**
 * Every message of a folder with `sentDateTime` in [from, to) (or all, without a window), page
 * by page (`@odata.nextLink`), 1000 a page.
 */
export function listFolder(client: GraphClient, mailbox: string, folderId: string, window?: { from: number; to: number }, fields = MESSAGE_FIELDS): Promise<Listed[]> {
  return listMessages(client, mailbox, folderId, windowFilter(window), { fields });
}

/** As `listFolder`, each message given to `visit` as its page comes, none kept (a day of many messages is not held at once). */
export function eachInFolder(client: GraphClient, mailbox: string, folderId: string, window: { from: number; to: number }, visit: (message: Listed) => void): Promise<void> {
  return eachMessage(client, mailbox, folderId, windowFilter(window), visit);
}

const DAY_MS = 86_400_000;

/** The UTC day (days since the epoch) of a time in milliseconds: the unit the sink lists and checks by. */
export function dayOf(ms: number): number {
  return Math.floor(ms / DAY_MS);
}

/** The window of UTC day `day` (days since the epoch), as listFolder takes it. */
export function dayWindow(day: number): { from: number; to: number } {
  return { from: day * DAY_MS, to: (day + 1) * DAY_MS };
}

function windowFilter(window: { from: number; to: number } | undefined): string | undefined {
  return window ? `sentDateTime ge ${new Date(window.from).toISOString()} and sentDateTime lt ${new Date(window.to).toISOString()}` : undefined;
}

/**
 * The messages of a folder that `filter` (OData, or none) matches, 1000 a page (Graph's default
 * is 10), following `@odata.nextLink`; each page a request retried as `retries` says. More than
 * `maxPages` pages is an error.
 */
export async function listMessages(client: GraphClient, mailbox: string, folderId: string, filter: string | undefined, options: { fields?: string; maxPages?: number; retries?: number } = {}): Promise<Listed[]> {
  const found: Listed[] = [];
  await eachMessage(client, mailbox, folderId, filter, (m) => found.push(m), options);
  return found;
}

/** As `listMessages`, each message given to `visit` as its page comes. */
async function eachMessage(client: GraphClient, mailbox: string, folderId: string, filter: string | undefined, visit: (message: Listed) => void, options: { fields?: string; maxPages?: number; retries?: number } = {}): Promise<void> {
  let next: string | undefined = `${GraphClient.user('v1.0', mailbox)}/mailFolders/${encodeURIComponent(folderId)}/messages?${options.fields ?? MESSAGE_FIELDS}${filter !== undefined ? `&$filter=${encodeURIComponent(filter)}` : ''}&$top=1000`;
  for (let pages = 0; next; pages++) {
    if (pages === options.maxPages) throw new Error(`more than ${options.maxPages * 1000} messages of the folder match ${filter}`);
    const page: GraphResponse = await client.send(mailbox, { method: 'GET', path: next, ...(options.retries !== undefined ? { retries: options.retries } : {}) });
    const body = page.json as { value?: Record<string, unknown>[]; '@odata.nextLink'?: string };
    for (const message of body.value ?? []) visit(listedOf(message));
    next = body['@odata.nextLink'];
  }
}

/** A folder of the path that is no well-known one, as resolved: where the run found (or made) it. */
export interface PlacedFolder {
  id: string;
  /** Its display name as the path gives it. */
  name: string;
  /** The folder it was in when resolved. */
  parentFolderId: string;
}

/**
 * The id of a folder path (`Inbox/Pivot`): the first part a well-known name or a top-level folder
 * by display name, then child folders by display name. Missing folders are created with `create`
 * (a folder another writer created meanwhile, 409, is looked up again), else the answer is
 * undefined. `created`: whether the last folder was created now (so it holds nothing yet).
 * `placed`: the path's folders below a well-known one, top first, each with the parent it was in
 * (Graph gives it with the lookup or the create, so knowing it costs no request).
 */
export async function resolveFolder(client: GraphClient, mailbox: string, path: string[], create: boolean): Promise<{ id: string; created: boolean; placed: PlacedFolder[] } | undefined> {
  const user = GraphClient.user('v1.0', mailbox);
  // A well-known name stands for its folder's id in a path: it is looked up only when it is the whole path.
  let parent: string | undefined;
  let created = false;
  const placed: PlacedFolder[] = [];
  for (const [depth, name] of path.entries()) {
    if (depth === 0 && WELL_KNOWN.has(name.toLowerCase())) {
      parent = name.toLowerCase();
      if (path.length > 1) continue;
      const folder = await client.send(mailbox, { method: 'GET', path: `${user}/mailFolders/${parent}?$select=id` });
      return { id: String((folder.json as { id: string }).id), created: false, placed };
    }
    const container = parent === undefined ? `${user}/mailFolders` : `${user}/mailFolders/${encodeURIComponent(parent)}/childFolders`;
    const find = async () => {
      const list = await client.send(mailbox, { method: 'GET', path: `${container}?$filter=${encodeURIComponent(`displayName eq ${odataString(name)}`)}&$select=id,parentFolderId` });
      return ((list.json as { value?: FolderAnswer[] }).value ?? [])[0];
    };
    let folder = await find();
    created = false;
    if (folder === undefined) {
      if (!create) return undefined;
      try {
        const made = await client.send(mailbox, { method: 'POST', path: container, contentType: 'application/json', body: JSON.stringify({ displayName: name }) });
        folder = made.json as FolderAnswer;
        created = true;
      } catch (err) {
        if (!(err instanceof GraphError && err.status === 409)) throw err;
        folder = await find();
        if (folder === undefined) throw err;
      }
    }
    parent = String(folder.id);
    placed.push({ id: parent, name, parentFolderId: String(folder.parentFolderId) });
  }
  return { id: parent!, created, placed };
}

/** A mailFolder as Graph answers it (`$select=id,parentFolderId[,displayName]`). */
export interface FolderAnswer {
  id: string;
  parentFolderId?: string;
  displayName?: string;
}
