// A local stand-in for the part of Microsoft Graph the Graph sink uses, written from Microsoft's
// documented contract (Graph v1.0 and beta reference pages for mailFolder, message, attachment,
// createUploadSession, importMime; "Microsoft Graph throttling guidance", Outlook service limits;
// "Microsoft Graph error responses"). No Microsoft 365 tenant can be reached from the test
// machines, so this is what the sink's tests run against. It is strict: it refuses what Graph
// refuses (each `Refusal`; the application permission each request takes, `GRANTS`; what a
// national cloud lacks, `cloud`) and keeps what a real mailbox would show (drafts included), so a
// test can assert there are none. What it does NOT model: the bearer token's signature (tokens
// from the test identity endpoint are unsigned; aud, exp, tid and roles are checked), Exchange's
// rewriting of HTML bodies and of the MIME it serves for JSON-created messages, and the 150 MB per
// 5 minutes upload limit. JSON batching (`$batch`, "Combine multiple HTTP requests using JSON
// batching") is modelled: at most 20 requests, ids unique, a Content-Type with every body,
// `dependsOn` sequencing with 424 for the dependents of a failed request, at most 4 of a batch
// dispatched at once, each request counted against its mailbox's limits as if sent alone, the
// answers in an order of their own, and a batch whose client has gone carried on to its end
// (`cutBatch`). A folder's DELETE moves it, with what it holds, into Deleted Items (its id kept,
// its parentFolderId that of Deleted Items); its permanentDelete removes it with its messages and
// child folders (404 ErrorItemNotFound after); a well-known folder is deleted neither way.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { randomBytes, randomUUID } from 'node:crypto';

export interface StandinAttachment {
  id: string;
  name: string;
  contentType: string;
  bytes: Buffer;
}

export interface StandinMessage {
  id: string;
  folderId: string;
  isDraft: boolean;
  /** JSON-created: the fields as posted (validated); imported: parsed from nothing, `mime` holds the bytes. */
  subject: string;
  body: { contentType: string; content: string };
  from?: { emailAddress: { name?: string; address: string } };
  toRecipients: { emailAddress: { name?: string; address: string } }[];
  ccRecipients: { emailAddress: { name?: string; address: string } }[];
  internetMessageId: string;
  receivedDateTime: string;
  sentDateTime: string;
  extended: Map<string, string>;
  attachments: StandinAttachment[];
  /** The exact MIME of an imported (importMime) or MIME-posted message. */
  mime?: Buffer;
}

interface Folder {
  id: string;
  displayName: string;
  parentId: string | null;
  wellKnown?: string;
}

interface Mailbox {
  address: string;
  /** No Exchange Online licence: Graph answers 404 MailboxNotEnabledForRESTAPI. */
  licensed: boolean;
  folders: Map<string, Folder>;
  messages: Map<string, StandinMessage>;
  /** Requests of this mailbox being served now, and the times of those in the rate window. */
  active: number;
  peak: number;
  recent: number[];
  /** Messages created in it so far (`POST .../messages`, `importMime`), and what runs at a count (`afterCreates`). */
  creates: number;
  createHooks: Map<number, () => void>;
}

interface UploadSession {
  mailbox: string;
  messageId: string;
  name: string;
  contentType: string;
  size: number;
  received: Buffer[];
  next: number;
  token: string;
}

/** A response the test wants the next request(s) of a mailbox to get (an outage, a throttle). */
export interface Injected {
  status: number;
  code: string;
  message?: string;
  retryAfter?: number;
}

export interface GraphStandinOptions {
  tenant?: string;
  /** The `aud` tokens must carry: this server's origin unless given. */
  audience?: string;
  /** Mailboxes that exist (created on first use of `mailbox()` too). */
  mailboxes?: string[];
  /** Every request waits this long before it is answered (a realistic round trip). */
  latencyMs?: number;
  /** Requests per mailbox allowed in `windowMs`: Outlook's 10,000 per 10 minutes unless given (lower for tests). */
  rate?: { requests: number; windowMs: number };
  /** Outlook's concurrent requests per mailbox (4). */
  concurrency?: number;
  /** Every user asked for exists (a tenant where the export's users all have mailboxes). */
  everyUser?: boolean;
  /**
   * The national cloud this endpoint stands for (`global` unless given). Each reference page's
   * "national cloud deployments" table: `message: permanentDelete` is in the global service only,
   * `attachment: createUploadSession` not in US Government L4 or L5, `importMime` (beta) in the
   * global service only. What a cloud lacks is answered as Graph answers an unknown segment.
   */
  cloud?: 'global' | 'usGovL4' | 'usGovL5' | 'china';
}

/** A `$batch` whose answer is cut midway (see `cutBatch`). */
export interface BatchCut {
  /** Resolves once the whole batch was carried out, after the cut. */
  finished: Promise<void>;
}

export interface GraphStandin {
  url: string;
  tenant: string;
  audience: string;
  /** The mailbox's store (created if absent), for tests to read and tamper with. */
  mailbox(address: string, options?: { licensed?: boolean }): { messages: Map<string, StandinMessage>; folders: Map<string, Folder> };
  /** Every message of a mailbox in the folder of that display-name path (`Inbox/Pivot`). */
  messagesIn(address: string, path: string): StandinMessage[];
  /** The addresses of the mailboxes asked for so far. */
  users(): string[];
  /**
   * Deletes the folder of that display-name path (`Inbox/Pivot`) as Graph's `DELETE
   * .../mailFolders/{id}` does (into Deleted Items, its id kept), or with `permanently` as its
   * `permanentDelete` does (gone, with its messages and child folders).
   */
  deleteFolder(address: string, path: string, options?: { permanently?: boolean }): void;
  /**
   * `hook` runs once the mailbox's `count`-th message is created (counted from the start), before
   * that create is answered: what a test does to the mailbox then comes after its last create and
   * before anything the client does next.
   */
  afterCreates(address: string, count: number, hook: () => void): void;
  /** The MIME Graph would serve as `$value`: the exact bytes of an imported message, else rendered from its fields. */
  mimeOf(message: StandinMessage): Buffer;
  /** The next `count` requests of a mailbox, after `after` more that go through, get this answer. */
  inject(address: string, response: Injected, count?: number, after?: number): void;
  /**
   * The next `count` requests of that kind (as `stats.byKind` names it, e.g. `POST
   * /messages/{id}/attachments`) for a mailbox are carried out, and then their answer is lost: the
   * connection is cut (or, given `instead`, that error is answered), as when a gateway times out
   * after Exchange did the work.
   */
  loseAnswers(address: string, kind: string, count?: number, instead?: Injected): void;
  /**
   * Pages hold at most `n` items whatever `$top` asked (Graph may answer fewer than asked: a client
   * must follow `@odata.nextLink`); 1000 again with no argument.
   */
  pageAtMost(n?: number): void;
  /** The next `count` `$batch` requests for a mailbox (their first request's) get this answer themselves, none of their requests carried out. */
  injectBatch(address: string, response: Injected, count?: number): void;
  /**
   * The next `$batch` for a mailbox (its first request's) has its connection cut once `after` of
   * its requests were carried out; Graph goes on with the rest of the chain, whose client has
   * gone: those are carried out once `goOn` resolves (the test says when: after the client
   * looked for them, the worst case).
   */
  cutBatch(address: string, after: number, goOn: Promise<void>): BatchCut;
  stats: {
    /** Requests carried out or refused, each of a batch counted as one. */
    requests: number;
    /** `$batch` requests. */
    batches: number;
    /** Requests refused because a mailbox already had `concurrency` in flight (a fifth concurrent request). */
    overConcurrency: number;
    /** The most requests one mailbox had in flight at once, the refused fifth included. */
    peakConcurrency: number;
    throttled: number;
    /** Requests by method and path shape, e.g. `POST messages`. */
    byKind: Map<string, number>;
    /** Authorization headers seen on upload URLs (Graph refuses them). */
    bearerOnUpload: number;
    /** Requests by the mailbox they name (lower-cased), and by `<mailbox> <kind>`. */
    byMailbox: Map<string, number>;
  };
  /** The bearer tokens seen, to prove no secret travelled elsewhere. */
  tokensSeen: Set<string>;
  close(): Promise<void>;
}

const WELL_KNOWN = ['inbox', 'archive', 'drafts', 'sentitems', 'deleteditems', 'junkemail', 'outbox', 'msgfolderroot'];
const WELL_KNOWN_NAMES: Record<string, string> = { inbox: 'Inbox', archive: 'Archive', drafts: 'Drafts', sentitems: 'Sent Items', deleteditems: 'Deleted Items', junkemail: 'Junk Email', outbox: 'Outbox', msgfolderroot: 'Top of Information Store' };
/** Properties a message may be created with (message resource, v1.0). */
const MESSAGE_PROPERTIES = new Set([
  'subject', 'body', 'from', 'sender', 'toRecipients', 'ccRecipients', 'bccRecipients', 'replyTo', 'internetMessageId', 'internetMessageHeaders',
  'singleValueExtendedProperties', 'multiValueExtendedProperties', 'attachments', 'importance', 'isRead', 'categories', 'flag',
  'isDeliveryReceiptRequested', 'isReadReceiptRequested', 'receivedDateTime', 'sentDateTime',
]);
/** What PATCH may change on a message that is not a draft. */
const PATCH_RECEIVED = new Set(['singleValueExtendedProperties', 'multiValueExtendedProperties', 'categories', 'isRead', 'flag', 'importance', 'inferenceClassification']);
const PROPERTY_ID = /^(Integer|Long|Short|SystemTime|String|Boolean|Binary|Double|Float|Currency|ApplicationTime|CLSID) (0x[0-9A-Fa-f]{4}|\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\} (Name \S.*|Id 0x[0-9A-Fa-f]{4}))$/;
const MAX_BODY = 4 * 1024 * 1024;
/** Attachments from 3 MB on go through an upload session, smaller ones in one POST ("Attach large files to Outlook messages"). */
const SESSION_MIN = 3 * 1024 * 1024;
const ATTACHMENT_MAX = 150 * 1024 * 1024;
/**
 * Exchange Online's default message size limit, attachments included ("By default, this message
 * size limit is 35 MB": attachment-createuploadsession). Where and how Graph refuses a message that
 * would exceed it is not documented: here the request that would take it over is refused with 413
 * ErrorMessageSizeExceeded (EWS's name for it).
 */
const MESSAGE_MAX = 35 * 1024 * 1024;
const MSGFLAG_UNSENT = 0x8;
/** The clouds each action is in, of those the sink uses that are not in every cloud (see `cloud`). */
const AVAILABLE: Record<string, NonNullable<GraphStandinOptions['cloud']>[]> = {
  permanentDelete: ['global'],
  createUploadSession: ['global', 'china'],
  importMime: ['global'],
};
/** `POST /v1.0/$batch` (or beta). */
const BATCH_PATH = /^\/(v1\.0|beta)\/\$batch$/;
/** "JSON batch requests are currently limited to 20 individual requests." */
const BATCH_MAX = 20;
/** Graph dispatches at most four requests of a batch to Outlook at once. */
const BATCH_DISPATCH = 4;

/** What a request does to a mailbox, as the permissions it needs tell apart. */
type Access = 'read' | 'readContent' | 'write' | 'import';
/**
 * The application permissions that allow each access (the Permissions table of each v1.0 page:
 * reading folders and listing messages takes Mail.ReadBasic.All, Mail.Read or Mail.ReadWrite;
 * Mail.ReadBasic.All reads no body, attachment or extended property, so not `$value` nor an
 * `$expand`; creating, changing and deleting take Mail.ReadWrite; importMime takes
 * Mail-Advanced.ReadWrite.All).
 */
const GRANTS: Record<Access, string[]> = {
  read: ['Mail.ReadBasic.All', 'Mail.Read', 'Mail.ReadWrite', 'Mail-Advanced.ReadWrite.All'],
  readContent: ['Mail.Read', 'Mail.ReadWrite', 'Mail-Advanced.ReadWrite.All'],
  write: ['Mail.ReadWrite', 'Mail-Advanced.ReadWrite.All'],
  import: ['Mail-Advanced.ReadWrite.All'],
};

interface Claims {
  aud?: string;
  exp?: number;
  nbf?: number;
  tid?: string;
  roles?: string[];
}

/** Request headers, names lower-cased. */
type Headers = Record<string, string | undefined>;
/** One request as the stand-in serves it: sent alone, or one of a batch. */
interface Call {
  method: string;
  url: URL;
  headers: Headers;
  body: Buffer;
  /** The body was over 4 MB (and not kept). */
  tooLarge: boolean;
  /** A batch's request whose body is JSON: the body as the batch gave it (`body` is then empty). */
  parsed?: unknown;
}
interface Answer {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}
interface BatchRequest {
  id: string;
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: unknown;
  dependsOn?: string[];
}
interface BatchAnswer {
  id: string;
  status: number;
  headers: Record<string, string>;
  body?: unknown;
}

function errorBody(code: string, message: string): Record<string, unknown> {
  return { error: { code, message, innerError: { date: new Date().toISOString(), 'request-id': randomUUID() } } };
}

function lowerCased(headers: Record<string, string>): Headers {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfter?: number,
  ) {
    super(message);
  }
}

/** Ids as Graph's look (base64url, `=` at the end), unique: a random base and a counter (a random draw per id cost more than a create). */
const idBytes = randomBytes(24);
let idCount = 0;
const newId = (prefix: string) => {
  idBytes.writeUIntBE(++idCount, 18, 6);
  return `${prefix}${idBytes.toString('base64url')}=`;
};

export async function startGraphStandin(options: GraphStandinOptions = {}): Promise<GraphStandin> {
  const tenant = options.tenant ?? '11111111-2222-3333-4444-555555555555';
  const limit = options.concurrency ?? 4;
  const cloud = options.cloud ?? 'global';
  const rate = options.rate ?? { requests: 10_000, windowMs: 10 * 60_000 };
  const mailboxes = new Map<string, Mailbox>();
  const sessions = new Map<string, UploadSession>();
  /** Per mailbox: the answers its next requests get (null: that one goes through). */
  const injected = new Map<string, (Injected | null)[]>();
  /** Per `<mailbox> <kind>`: how many more answers are lost after the work is done, and what is answered instead. */
  const losing = new Map<string, { count: number; instead?: Injected }>();
  /** Per mailbox: the answers its next `$batch` requests get. */
  const batchInjected = new Map<string, Injected[]>();
  /** Per mailbox: the cut its next `$batch` gets (see `cutBatch`). */
  const batchCuts = new Map<string, { after: number; goOn: Promise<void>; finished: () => void }>();
  const stats: GraphStandin['stats'] = { requests: 0, batches: 0, overConcurrency: 0, peakConcurrency: 0, throttled: 0, byKind: new Map(), bearerOnUpload: 0, byMailbox: new Map() };
  const tokensSeen = new Set<string>();
  let base = '';
  let audience = options.audience ?? '';

  function mailboxOf(address: string, licensed = true): Mailbox {
    const key = address.toLowerCase();
    let box = mailboxes.get(key);
    if (!box) {
      const folders = new Map<string, Folder>();
      const root: Folder = { id: newId('AAMkRoot'), displayName: WELL_KNOWN_NAMES.msgfolderroot!, parentId: null, wellKnown: 'msgfolderroot' };
      folders.set(root.id, root);
      for (const name of WELL_KNOWN.filter((n) => n !== 'msgfolderroot')) {
        const f: Folder = { id: newId('AAMkF'), displayName: WELL_KNOWN_NAMES[name]!, parentId: root.id, wellKnown: name };
        folders.set(f.id, f);
      }
      box = { address: key, licensed, folders, messages: new Map(), active: 0, peak: 0, recent: [], creates: 0, createHooks: new Map() };
      mailboxes.set(key, box);
    }
    return box;
  }
  for (const address of options.mailboxes ?? []) mailboxOf(address);

  /** The claims of each token seen, read once. */
  const claimsOf = new Map<string, Claims>();
  /** Checks the bearer token as Graph does (its signature excepted: see the header comment), and that its roles allow `access`. */
  function authorize(headers: Headers, access: Access | undefined): void {
    const header = headers.authorization ?? '';
    const m = /^Bearer ([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)$/.exec(header);
    if (!m) throw new Refusal(401, 'InvalidAuthenticationToken', header ? 'IDX14100: JWT is not well formed.' : 'Access token is empty.');
    tokensSeen.add(header.slice(7));
    let claims = claimsOf.get(m[2]!);
    if (!claims) {
      try {
        claims = JSON.parse(Buffer.from(m[2]!, 'base64url').toString('utf8')) as Claims;
      } catch {
        throw new Refusal(401, 'InvalidAuthenticationToken', 'IDX14100: JWT is not well formed.');
      }
      claimsOf.set(m[2]!, claims);
    }
    const now = Date.now() / 1000;
    if (claims.aud !== audience && claims.aud !== `${audience}/`) throw new Refusal(401, 'InvalidAuthenticationToken', 'Invalid audience.');
    if (typeof claims.exp !== 'number' || claims.exp < now || (typeof claims.nbf === 'number' && claims.nbf > now + 300)) throw new Refusal(401, 'InvalidAuthenticationToken', 'Lifetime validation failed, the token is expired.');
    if (claims.tid !== tenant) throw new Refusal(401, 'InvalidAuthenticationToken', 'Access token validation failure. Invalid audience or tenant.');
    if (access === undefined) return;
    if (!(claims.roles ?? []).some((role) => GRANTS[access].includes(role))) throw new Refusal(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.');
  }

  function user(address: string): Mailbox {
    const name = decodeURIComponent(address).toLowerCase();
    const box = mailboxes.get(name) ?? (options.everyUser && !name.endsWith('.invalid') ? mailboxOf(name) : undefined);
    if (!box) throw new Refusal(404, 'ErrorInvalidUser', `The requested user '${decodeURIComponent(address)}' is invalid.`);
    if (!box.licensed) throw new Refusal(404, 'MailboxNotEnabledForRESTAPI', 'The mailbox is either inactive, soft-deleted, or is hosted on-premise.');
    return box;
  }

  function folderOf(box: Mailbox, idOrName: string): Folder {
    const key = decodeURIComponent(idOrName);
    const folder = box.folders.get(key) ?? [...box.folders.values()].find((f) => f.wellKnown === key.toLowerCase());
    if (!folder) throw new Refusal(404, 'ErrorItemNotFound', 'The specified object was not found in the store.');
    return folder;
  }

  function messageOf(box: Mailbox, id: string): StandinMessage {
    const message = box.messages.get(decodeURIComponent(id));
    if (!message) throw new Refusal(404, 'ErrorItemNotFound', 'The specified object was not found in the store.');
    return message;
  }

  /** The request's JSON body (a batch's request carries its body parsed already). */
  function json(call: Call): Record<string, unknown> {
    try {
      const value = 'parsed' in call ? call.parsed : (JSON.parse(call.body.toString('utf8')) as unknown);
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
      return value as Record<string, unknown>;
    } catch {
      throw new Refusal(400, 'BadRequest', 'Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.');
    }
  }

  function checkRecipients(value: unknown, name: string): StandinMessage['toRecipients'] {
    if (value === undefined) return [];
    if (!Array.isArray(value)) throw new Refusal(400, 'RequestBodyRead', `A node of type 'StartObject' was read from the JSON reader when trying to read a value of the property '${name}'; however, a 'StartArray' node was expected.`);
    return value.map((r) => recipient(r, name));
  }

  function recipient(r: unknown, name: string): { emailAddress: { name?: string; address: string } } {
    const address = (r as { emailAddress?: { address?: unknown; name?: unknown } })?.emailAddress;
    const extra = Object.keys((r as object) ?? {}).filter((k) => k !== 'emailAddress');
    if (!address || typeof address.address !== 'string' || extra.length > 0) throw new Refusal(400, 'RequestBodyRead', `Invalid recipient in '${name}'.`);
    if (!/^[^\s@]+@[^\s@]+$/.test(address.address)) throw new Refusal(400, 'ErrorInvalidRecipients', `At least one recipient isn't valid: ${address.address}`);
    return { emailAddress: { ...(typeof address.name === 'string' ? { name: address.name } : {}), address: address.address } };
  }

  function extendedProperties(value: unknown): Map<string, string> {
    const out = new Map<string, string>();
    if (value === undefined) return out;
    if (!Array.isArray(value)) throw new Refusal(400, 'RequestBodyRead', "singleValueExtendedProperties must be an array.");
    for (const p of value as { id?: unknown; value?: unknown }[]) {
      const keys = Object.keys(p ?? {});
      if (typeof p?.id !== 'string' || typeof p.value !== 'string' || keys.some((k) => k !== 'id' && k !== 'value')) throw new Refusal(400, 'RequestBodyRead', 'An extended property needs a string id and a string value.');
      const m = PROPERTY_ID.exec(p.id);
      if (!m) throw new Refusal(400, 'ErrorInvalidExtendedPropertyValue', `The extended property id '${p.id}' is not valid.`);
      if (['Integer', 'Long', 'Short'].includes(m[1]!) && !/^-?\d+$/.test(p.value)) throw new Refusal(400, 'ErrorInvalidExtendedPropertyValue', `'${p.value}' is not a valid ${m[1]} value.`);
      if (m[1] === 'SystemTime' && Number.isNaN(Date.parse(p.value))) throw new Refusal(400, 'ErrorInvalidExtendedPropertyValue', `'${p.value}' is not a valid SystemTime value.`);
      if (m[1] === 'Boolean' && !/^(true|false)$/i.test(p.value)) throw new Refusal(400, 'ErrorInvalidExtendedPropertyValue', `'${p.value}' is not a valid Boolean value.`);
      out.set(normalizedPropertyId(p.id), p.value);
    }
    return out;
  }

  function fileAttachment(a: unknown): StandinAttachment {
    const att = a as Record<string, unknown>;
    const unknown = Object.keys(att ?? {}).filter((k) => !['@odata.type', 'name', 'contentType', 'contentBytes', 'isInline', 'contentId'].includes(k));
    if (att?.['@odata.type'] !== '#microsoft.graph.fileAttachment') throw new Refusal(400, 'RequestBodyRead', "An attachment needs '@odata.type': '#microsoft.graph.fileAttachment'.");
    if (unknown.length > 0) throw new Refusal(400, 'RequestBodyRead', `The property '${unknown[0]}' does not exist on type 'microsoft.graph.fileAttachment'.`);
    if (typeof att.name !== 'string' || typeof att.contentBytes !== 'string') throw new Refusal(400, 'ErrorInvalidRequest', 'An attachment needs name and contentBytes.');
    const bytes = Buffer.from(att.contentBytes, 'base64');
    if (bytes.toString('base64') !== att.contentBytes.replace(/\s/g, '')) throw new Refusal(400, 'ErrorInvalidRequest', 'contentBytes is not valid base64.');
    if (bytes.length >= SESSION_MIN) throw new Refusal(413, 'ErrorAttachmentSizeLimitExceeded', 'An attachment of 3 MB or more must be added through an upload session.');
    return { id: newId('AAMkA'), name: att.name, contentType: typeof att.contentType === 'string' ? att.contentType : 'application/octet-stream', bytes };
  }

  /** A message created from JSON (POST .../messages), refusing any property the message resource does not have. */
  function createFromJson(folder: Folder, body: Record<string, unknown>): StandinMessage {
    for (const key of Object.keys(body)) {
      if (!MESSAGE_PROPERTIES.has(key)) throw new Refusal(400, 'RequestBodyRead', `The property '${key}' does not exist on type 'microsoft.graph.message'. Make sure to only use property names that are defined by the type or mark the type as open type.`);
    }
    const b = body.body as { contentType?: unknown; content?: unknown } | undefined;
    if (b !== undefined && (typeof b.content !== 'string' || (b.contentType !== 'text' && b.contentType !== 'html') || Object.keys(b).some((k) => k !== 'content' && k !== 'contentType'))) throw new Refusal(400, 'RequestBodyRead', 'body must be {contentType: text|html, content}.');
    const extended = extendedProperties(body.singleValueExtendedProperties);
    const flags = extended.get('Integer 0x0E07');
    const attachments = body.attachments === undefined ? [] : (body.attachments as unknown[]).map(fileAttachment);
    const now = new Date().toISOString();
    // Graph ignores receivedDateTime and sentDateTime on create; the MAPI properties set them.
    return {
      id: newId('AAMkM'),
      folderId: folder.id,
      isDraft: flags === undefined || (Number(flags) & MSGFLAG_UNSENT) !== 0,
      subject: typeof body.subject === 'string' ? body.subject : '',
      body: b ? { contentType: String(b.contentType), content: String(b.content) } : { contentType: 'text', content: '' },
      ...(body.from !== undefined ? { from: recipient(body.from, 'from') } : {}),
      toRecipients: checkRecipients(body.toRecipients, 'toRecipients'),
      ccRecipients: checkRecipients(body.ccRecipients, 'ccRecipients'),
      internetMessageId: typeof body.internetMessageId === 'string' ? body.internetMessageId : `<${randomUUID()}@standin.invalid>`,
      receivedDateTime: isoSecond(extended.get('SystemTime 0x0E06') ?? now),
      sentDateTime: isoSecond(extended.get('SystemTime 0x0039') ?? now),
      extended,
      attachments,
    };
  }

  /** A message from MIME: what importMime keeps (a non-draft, the exact bytes) or what a MIME post to /messages makes (always a draft). */
  function createFromMime(folder: Folder, body: Buffer, draft: boolean): StandinMessage {
    const text = body.toString('latin1').replace(/\s/g, '');
    const mime = Buffer.from(text, 'base64');
    if (mime.length === 0 || mime.toString('base64') !== text) throw new Refusal(400, 'ErrorMimeContentInvalidBase64String', 'The MIME content is not a valid base64 string.');
    const head = mime.toString('utf8', 0, Math.max(0, mime.indexOf('\r\n\r\n')));
    const field = (name: string) => new RegExp(`(?:^|\\n)${name}:[ \\t]*([^\\r\\n]*(?:\\r?\\n[ \\t][^\\r\\n]*)*)`, 'i').exec(head)?.[1]?.replace(/\r?\n[ \t]/g, ' ').trim();
    const date = Date.parse(field('date') ?? '');
    if (!field('message-id') || Number.isNaN(date)) throw new Refusal(400, 'ErrorMimeContentInvalid', 'The MIME content is not a valid message.');
    const now = new Date().toISOString();
    return {
      id: newId('AAMkM'),
      folderId: folder.id,
      isDraft: draft,
      subject: field('subject') ?? '',
      body: { contentType: 'text', content: '' },
      toRecipients: [],
      ccRecipients: [],
      internetMessageId: field('message-id')!,
      receivedDateTime: isoSecond(now),
      sentDateTime: isoSecond(new Date(date).toISOString()),
      extended: new Map(),
      attachments: [],
      mime,
    };
  }

  /** A message as Graph returns it, with `$select` and `$expand` applied. */
  function render(message: StandinMessage, query: URLSearchParams): Record<string, unknown> {
    const full: Record<string, unknown> = {
      id: message.id,
      '@odata.etag': `W/"${message.id.slice(-8)}"`,
      parentFolderId: message.folderId,
      isDraft: message.isDraft,
      isRead: message.extended.has('Integer 0x0E07') ? (Number(message.extended.get('Integer 0x0E07')) & 1) === 1 : !message.isDraft,
      subject: message.subject,
      body: message.body,
      from: message.from ?? null,
      toRecipients: message.toRecipients,
      ccRecipients: message.ccRecipients,
      internetMessageId: message.internetMessageId,
      receivedDateTime: message.receivedDateTime,
      sentDateTime: message.sentDateTime,
      hasAttachments: message.attachments.length > 0,
    };
    const select = query.get('$select');
    const out: Record<string, unknown> = {};
    if (select) {
      for (const name of select.split(',').map((s) => s.trim())) {
        if (!(name in full)) throw new Refusal(400, 'RequestBroker--ParseUri', `Could not find a property named '${name}' on type 'microsoft.graph.message'.`);
        out[name] = full[name];
      }
      out.id = message.id;
      out['@odata.etag'] = full['@odata.etag'];
    } else Object.assign(out, full);
    for (const expand of splitTopLevel(query.get('$expand') ?? '')) {
      const m = /^(\w+)(?:\((.*)\))?$/.exec(expand.trim());
      const inner = new URLSearchParams((m?.[2] ?? '').replace(/;/g, '&'));
      if (m?.[1] === 'singleValueExtendedProperties') {
        const wanted = inner.get('$filter');
        const idEq = wanted ? /^id eq '(.*)'$/.exec(wanted)?.[1]?.replace(/''/g, "'") : undefined;
        if (wanted && idEq === undefined) throw new Refusal(400, 'BadRequest', 'Invalid filter clause');
        out.singleValueExtendedProperties = [...message.extended].filter(([id]) => idEq === undefined || id === normalizedPropertyId(idEq)).map(([id, value]) => ({ id, value }));
      } else if (m?.[1] === 'attachments') {
        out.attachments = message.attachments.map((a) => ({ '@odata.type': '#microsoft.graph.fileAttachment', id: a.id, name: a.name, ...(inner.get('$select') ? {} : { contentType: a.contentType, size: a.bytes.length + 200 }) }));
      } else throw new Refusal(400, 'BadRequest', `Parsing OData Select and Expand failed: Could not find a property named '${expand}'.`);
    }
    return out;
  }

  /** `$filter` as the sink uses it: clauses joined by `and`, each `field eq|ge|gt|le|lt value`. */
  function matches(subject: Record<string, unknown>, filter: string | null): boolean {
    if (!filter) return true;
    return filterClauses(filter).every((clause) => {
      const m = /^(\w+) (eq|ne|ge|gt|le|lt) (?:'((?:[^']|'')*)'|(\d{4}-\d\d-\d\dT[\d:.]+Z))$/.exec(clause.trim());
      if (!m) throw new Refusal(400, 'BadRequest', `Invalid filter clause: ${clause}`);
      const [, field, op, quoted, time] = m;
      if (!(field! in subject)) throw new Refusal(400, 'BadRequest', `Could not find a property named '${field}'.`);
      const have = subject[field!];
      if (time !== undefined) {
        const a = Date.parse(String(have));
        const b = Date.parse(time);
        return op === 'eq' ? a === b : op === 'ne' ? a !== b : op === 'ge' ? a >= b : op === 'gt' ? a > b : op === 'le' ? a <= b : a < b;
      }
      const want = quoted!.replace(/''/g, "'");
      if (op === 'eq') return String(have).toLowerCase() === want.toLowerCase();
      if (op === 'ne') return String(have).toLowerCase() !== want.toLowerCase();
      throw new Refusal(400, 'BadRequest', `Operator ${op} is not supported on strings.`);
    });
  }

  let pageLimit = 1000;
  /** One page of a collection: `$top` (at most 1000), `$skiptoken` for the next page as `@odata.nextLink`. */
  function page<T>(items: T[], url: URL, renderOne: (item: T) => Record<string, unknown>): Record<string, unknown> {
    const top = Number(url.searchParams.get('$top') ?? '10');
    if (!Number.isInteger(top) || top < 1 || top > 1000) throw new Refusal(400, 'ErrorInvalidUrlQuery', 'The value of $top must be from 1 to 1000.');
    const skip = Number(url.searchParams.get('$skiptoken') ?? '0');
    const size = Math.min(top, pageLimit);
    const out: Record<string, unknown> = { value: items.slice(skip, skip + size).map(renderOne) };
    if (skip + size < items.length) {
      const next = new URL(url.toString());
      next.searchParams.set('$skiptoken', String(skip + size));
      out['@odata.nextLink'] = `${base}${next.pathname}${next.search}`;
    }
    return out;
  }

  async function route(call: Call): Promise<Answer> {
    const { method, url, body } = call;
    const upload = /^\/upload\/([\w-]+)$/.exec(url.pathname);
    if (upload) return uploadChunk(call, upload[1]!);
    const m = /^\/(v1\.0|beta)\/users\/([^/]+)(\/.*)?$/.exec(url.pathname);
    if (!m) throw new Refusal(400, 'BadRequest', `Resource not found for the segment '${url.pathname.split('/')[1] ?? ''}'.`);
    const [, version, address, rest = ''] = m;
    const missing = /\/(permanentDelete|createUploadSession|importMime)$/.exec(rest)?.[1];
    if (missing && !AVAILABLE[missing]!.includes(cloud)) throw new Refusal(400, 'BadRequest', `Resource not found for the segment '${missing}'.`);
    authorize(call.headers, accessOf(method, rest, url.searchParams));
    const box = user(address!);
    let p: RegExpExecArray | null;
    if ((p = /^\/mailFolders(?:\/([^/]+)\/childFolders)?$/.exec(rest))) {
      const parent = p[1] !== undefined ? folderOf(box, p[1]) : [...box.folders.values()].find((f) => f.wellKnown === 'msgfolderroot')!;
      if (method === 'GET') {
        const children = [...box.folders.values()].filter((f) => f.parentId === parent.id);
        return { status: 200, body: page(children.filter((f) => matches({ displayName: f.displayName }, url.searchParams.get('$filter'))), url, (f) => folderJson(f, url.searchParams)) };
      }
      if (method === 'POST') {
        const b = json(call);
        if (typeof b.displayName !== 'string' || Object.keys(b).some((k) => k !== 'displayName' && k !== 'isHidden')) throw new Refusal(400, 'RequestBodyRead', 'A folder needs a displayName (and may have isHidden).');
        if ([...box.folders.values()].some((f) => f.parentId === parent.id && f.displayName.toLowerCase() === String(b.displayName).toLowerCase())) throw new Refusal(409, 'ErrorFolderExists', 'A folder with the specified name already exists.');
        const folder: Folder = { id: newId('AAMkF'), displayName: b.displayName, parentId: parent.id };
        box.folders.set(folder.id, folder);
        return { status: 201, body: folderJson(folder) };
      }
    }
    if ((p = /^\/mailFolders\/([^/]+)$/.exec(rest)) && method === 'GET') return { status: 200, body: folderJson(folderOf(box, p[1]!), url.searchParams) };
    if ((p = /^\/mailFolders\/([^/]+)$/.exec(rest)) && method === 'DELETE') {
      removeFolder(box, folderOf(box, p[1]!), false);
      return { status: 204 };
    }
    if ((p = /^\/mailFolders\/([^/]+)\/permanentDelete$/.exec(rest)) && method === 'POST') {
      removeFolder(box, folderOf(box, p[1]!), true);
      return { status: 204 };
    }
    if ((p = /^\/mailFolders\/([^/]+)\/messages$/.exec(rest))) {
      const folder = folderOf(box, p[1]!);
      if (method === 'GET') {
        const inFolder = [...box.messages.values()].filter((msg) => msg.folderId === folder.id).filter((msg) => matches({ ...msg } as unknown as Record<string, unknown>, url.searchParams.get('$filter')));
        return { status: 200, body: page(inFolder, url, (msg) => render(msg, url.searchParams)) };
      }
      if (method === 'POST') {
        // MIME posted to /messages: Graph makes a draft of it, whatever it holds.
        const contentType = String(call.headers['content-type'] ?? '');
        const message = /^text\/plain/i.test(contentType) ? createFromMime(folder, body, true) : createFromJson(folder, json(call));
        created(box, message);
        return { status: 201, body: render(message, new URLSearchParams()) };
      }
    }
    if ((p = /^\/mailFolders\/([^/]+)\/importMime$/.exec(rest)) && method === 'POST') {
      if (version !== 'beta') throw new Refusal(400, 'BadRequest', "Resource not found for the segment 'importMime'.");
      if (!/^text\/plain/i.test(String(call.headers['content-type'] ?? ''))) throw new Refusal(415, 'UnsupportedMediaType', 'importMime takes Content-Type: text/plain (the base64 MIME).');
      const message = createFromMime(folderOf(box, p[1]!), body, false);
      created(box, message);
      return { status: 201, body: render(message, new URLSearchParams()) };
    }
    if ((p = /^\/messages\/([^/]+)$/.exec(rest))) {
      const message = messageOf(box, p[1]!);
      if (method === 'GET') return { status: 200, body: render(message, url.searchParams) };
      if (method === 'DELETE') {
        // DELETE moves to Deleted Items.
        message.folderId = folderOf(box, 'deleteditems').id;
        return { status: 204 };
      }
      if (method === 'PATCH') {
        const b = json(call);
        for (const key of Object.keys(b)) {
          if (!MESSAGE_PROPERTIES.has(key) && key !== 'inferenceClassification') throw new Refusal(400, 'RequestBodyRead', `The property '${key}' does not exist on type 'microsoft.graph.message'.`);
          if (!message.isDraft && !PATCH_RECEIVED.has(key)) throw new Refusal(400, 'ErrorInvalidPropertyUpdateSentMessage', `Update operation is not supported for '${key}' on a message that has been sent.`);
        }
        for (const [id, value] of extendedProperties(b.singleValueExtendedProperties)) message.extended.set(id, value);
        return { status: 200, body: render(message, new URLSearchParams()) };
      }
    }
    if ((p = /^\/messages\/([^/]+)\/permanentDelete$/.exec(rest)) && method === 'POST') {
      box.messages.delete(messageOf(box, p[1]!).id);
      return { status: 204 };
    }
    if ((p = /^\/messages\/([^/]+)\/\$value$/.exec(rest)) && method === 'GET') {
      return { status: 200, body: mimeOf(messageOf(box, p[1]!)), headers: { 'content-type': 'text/plain' } };
    }
    if ((p = /^\/messages\/([^/]+)\/attachments$/.exec(rest)) && method === 'POST') {
      const message = messageOf(box, p[1]!);
      const attachment = fileAttachment(json(call));
      withinMessageLimit(message, attachment.bytes.length);
      message.attachments.push(attachment);
      return { status: 201, body: { id: attachment.id, name: attachment.name } };
    }
    if ((p = /^\/messages\/([^/]+)\/attachments\/createUploadSession$/.exec(rest)) && method === 'POST') {
      const message = messageOf(box, p[1]!);
      const item = json(call).AttachmentItem as Record<string, unknown> | undefined;
      if (!item || item.attachmentType !== 'file' || typeof item.name !== 'string' || typeof item.size !== 'number' || Object.keys(item).some((k) => !['attachmentType', 'name', 'size', 'contentType', 'isInline', 'contentId'].includes(k))) {
        throw new Refusal(400, 'ErrorInvalidRequest', 'AttachmentItem needs attachmentType "file", name and size.');
      }
      if (item.size > ATTACHMENT_MAX) throw new Refusal(413, 'ErrorAttachmentSizeLimitExceeded', 'The attachment size must be at most 150 MB.');
      // "This error indicates that uploadSession was used for a file smaller than 3 MB" (Attach large files to Outlook messages, Errors).
      if (item.size < SESSION_MIN) throw new Refusal(400, 'ErrorAttachmentSizeShouldNotBeLessThanMinimumSize', 'Attachment size must be greater than the minimum size.');
      withinMessageLimit(message, item.size);
      const id = randomUUID();
      const token = randomBytes(16).toString('hex');
      sessions.set(id, { mailbox: box.address, messageId: message.id, name: item.name, contentType: typeof item.contentType === 'string' ? item.contentType : 'application/octet-stream', size: item.size, received: [], next: 0, token });
      return { status: 201, body: { uploadUrl: `${base}/upload/${id}?authtoken=${token}`, expirationDateTime: new Date(Date.now() + 15 * 60_000).toISOString(), nextExpectedRanges: ['0-'] } };
    }
    throw new Refusal(400, 'BadRequest', `Resource not found for the segment '${rest.split('/')[1] ?? ''}'.`);
  }

  /** A message made in the mailbox, and what a test asked to run at that count (`afterCreates`). */
  function created(box: Mailbox, message: StandinMessage): void {
    box.messages.set(message.id, message);
    box.createHooks.get(++box.creates)?.();
  }

  /**
   * A folder deleted (mailFolder: delete, "Delete the specified mailFolder", 204): Outlook moves a
   * deleted folder, with what it holds, into Deleted Items, where its id still works; or
   * permanently (mailFolder: permanentDelete, global service only: "Permanently deleted folders
   * are removed from the mailbox"), its messages and child folders with it. A well-known folder
   * cannot be deleted (Outlook: "an Outlook folder that cannot be deleted, such as the Inbox and
   * the Deleted Items folder"; EWS names the error ErrorDeleteDistinguishedFolder, Graph's status
   * for it is not documented).
   */
  function removeFolder(box: Mailbox, folder: Folder, permanently: boolean): void {
    if (folder.wellKnown) throw new Refusal(400, 'ErrorDeleteDistinguishedFolder', 'Distinguished folders cannot be deleted.');
    if (!permanently) {
      folder.parentId = folderOf(box, 'deleteditems').id;
      return;
    }
    const gone = new Set([folder.id]);
    for (let more = true; more; ) {
      more = false;
      for (const f of box.folders.values()) {
        if (f.parentId === null || !gone.has(f.parentId) || gone.has(f.id)) continue;
        gone.add(f.id);
        more = true;
      }
    }
    for (const id of gone) box.folders.delete(id);
    for (const [id, m] of box.messages) if (gone.has(m.folderId)) box.messages.delete(id);
  }

  /** What a request needs: a GET of basic properties only (a `$select` without body, no `$expand`) is a basic read. */
  function accessOf(method: string, rest: string, query: URLSearchParams): Access {
    if (rest.endsWith('/importMime')) return 'import';
    if (method !== 'GET') return 'write';
    const basic = !rest.includes('/messages') || query.has('$select') && !query.get('$select')!.split(',').some((f) => f.trim() === 'body') && !query.has('$expand') && !rest.endsWith('/$value');
    return basic ? 'read' : 'readContent';
  }

  function withinMessageLimit(message: StandinMessage, adding: number): void {
    const size = message.body.content.length + message.attachments.reduce((n, a) => n + a.bytes.length, 0) + adding;
    if (size > MESSAGE_MAX) throw new Refusal(413, 'ErrorMessageSizeExceeded', 'The message exceeds the maximum supported size.');
  }

  /** A chunk to an upload session's URL: no bearer token (Graph answers 401), in order, at most 4 MB. */
  function uploadChunk(call: Call, id: string): Answer {
    const { url, body, headers } = call;
    const session = sessions.get(id);
    if (!session || url.searchParams.get('authtoken') !== session.token) throw new Refusal(404, 'ErrorItemNotFound', 'The upload session was not found.');
    if (headers.authorization) {
      stats.bearerOnUpload++;
      throw new Refusal(401, 'InvalidAuthenticationToken', 'An Authorization header is not allowed on an upload URL.');
    }
    if (call.method !== 'PUT') throw new Refusal(405, 'MethodNotAllowed', 'Upload with PUT.');
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(headers['content-range'] ?? ''));
    if (!range) throw new Refusal(400, 'InvalidContentRange', 'Content-Range is required.');
    const [start, end, total] = [Number(range[1]), Number(range[2]), Number(range[3])];
    if (total !== session.size || start !== session.next || end - start + 1 !== body.length || end >= total) throw new Refusal(416, 'InvalidRange', `Expected the range starting at ${session.next} of ${session.size}.`);
    session.received.push(body);
    session.next = end + 1;
    if (session.next < session.size) return { status: 200, body: { expirationDateTime: new Date(Date.now() + 15 * 60_000).toISOString(), nextExpectedRanges: [`${session.next}-`] } };
    sessions.delete(id);
    const box = mailboxOf(session.mailbox);
    const message = messageOf(box, session.messageId);
    const attachment = { id: newId('AAMkA'), name: session.name, contentType: session.contentType, bytes: Buffer.concat(session.received) };
    message.attachments.push(attachment);
    return { status: 201, headers: { location: `${base}/v1.0/users/${encodeURIComponent(session.mailbox)}/messages/${encodeURIComponent(message.id)}/attachments/${encodeURIComponent(attachment.id)}` } };
  }

  /** The mailbox a request counts against (upload chunks: the session's). */
  function mailboxKey(url: URL): string | undefined {
    const upload = /^\/upload\/([\w-]+)$/.exec(url.pathname);
    if (upload) return sessions.get(upload[1]!)?.mailbox;
    const m = /^\/(?:v1\.0|beta)\/users\/([^/]+)/.exec(url.pathname);
    return m ? decodeURIComponent(m[1]!).toLowerCase() : undefined;
  }

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) tooLarge = true;
      else chunks.push(chunk);
    });
    req.on('end', () => void handle(req, res, tooLarge, Buffer.concat(chunks)));
  });

  async function handle(req: IncomingMessage, res: ServerResponse, tooLarge: boolean, body: Buffer): Promise<void> {
    const call: Call = { method: req.method ?? 'GET', url: new URL(req.url ?? '/', 'http://standin'), headers: req.headers as Headers, body, tooLarge };
    const answer = BATCH_PATH.test(call.url.pathname) ? await batch(call) : await serve(call);
    // Carried out, and the connection is cut before the answer.
    if (answer === 'cut') return void req.socket.destroy();
    const headers: Record<string, string> = { ...answer.headers };
    let payload: Buffer | undefined;
    if (Buffer.isBuffer(answer.body)) payload = answer.body;
    else if (answer.body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = Buffer.from(JSON.stringify(answer.body));
    }
    res.writeHead(answer.status, headers).end(payload);
  }

  /** One request, alone or from a batch: counted against its mailbox's limits, then carried out (or refused). */
  async function serve(call: Call): Promise<Answer | 'cut'> {
    stats.requests++;
    const { url } = call;
    const key = mailboxKey(url);
    const box = key !== undefined ? mailboxes.get(key) : undefined;
    const kind = `${call.method} ${url.pathname.replace(/^\/(v1\.0|beta)\/users\/[^/]+/, '').replace(/\/(AAMk|[0-9a-f-]{36})[^/]*/g, '/{id}').replace(/^\/upload\/.*/, 'upload')}`;
    stats.byKind.set(kind, (stats.byKind.get(kind) ?? 0) + 1);
    if (key !== undefined) for (const k of [key, `${key} ${kind}`]) stats.byMailbox.set(k, (stats.byMailbox.get(k) ?? 0) + 1);
    if (box) {
      box.active++;
      box.peak = Math.max(box.peak, box.active);
      stats.peakConcurrency = Math.max(stats.peakConcurrency, box.active);
    }
    try {
      if (options.latencyMs) await new Promise((r) => setTimeout(r, options.latencyMs));
      if (box && box.active > limit) {
        stats.overConcurrency++;
        throw new Refusal(429, 'ApplicationThrottled', 'Application is over its MailboxConcurrency limit.', 1);
      }
      if (box) {
        const now = Date.now();
        while (box.recent.length > 0 && box.recent[0]! <= now - rate.windowMs) box.recent.shift();
        if (box.recent.length >= rate.requests) throw new Refusal(429, 'ApplicationThrottled', 'Application is over its MailboxRequests limit.', Math.max(1, Math.ceil((box.recent[0]! + rate.windowMs - now) / 1000)));
        box.recent.push(now);
      }
      const queue = key !== undefined ? injected.get(key) : undefined;
      const next = queue?.shift();
      if (next) throw new Refusal(next.status, next.code, next.message ?? next.code, next.retryAfter);
      if (call.tooLarge) throw new Refusal(413, 'RequestEntityTooLarge', 'The request body is over 4 MB.');
      const answer = await route(call);
      const lose = key !== undefined ? losing.get(`${key} ${kind}`) : undefined;
      if (lose && lose.count > 0) {
        lose.count--;
        if (!lose.instead) return 'cut';
        throw new Refusal(lose.instead.status, lose.instead.code, lose.instead.message ?? lose.instead.code, lose.instead.retryAfter);
      }
      return answer;
    } catch (err) {
      return refused(err);
    } finally {
      if (box) box.active--;
    }
  }

  /**
   * `POST /$batch`: the batch checked whole (a malformed one is refused 400, nothing carried out),
   * then its requests carried out as their `dependsOn` allows, at most 4 at once, each through
   * `serve` as if sent alone; a request whose dependency failed answers 424 unsent. Answers come
   * in an order of their own (Graph: "might appear in a different order"). A lost answer of any
   * request loses the whole batch's, once all of it was carried out; a `cutBatch` cuts it midway,
   * the rest of the chain carried out later.
   */
  async function batch(call: Call): Promise<Answer | 'cut'> {
    stats.batches++;
    let requests: BatchRequest[];
    let firstMailbox: string | undefined;
    try {
      if (call.method !== 'POST') throw new Refusal(405, 'BadRequest', 'A batch is sent with POST.');
      if (call.tooLarge) throw new Refusal(413, 'RequestEntityTooLarge', 'The request body is over 4 MB.');
      // The batch's token is checked once; each request's permission when it is carried out.
      authorize(call.headers, undefined);
      requests = batchRequests(json(call));
      const first = /^\/users\/([^/]+)/.exec(requests[0]!.url);
      firstMailbox = first ? decodeURIComponent(first[1]!).toLowerCase() : undefined;
      const next = firstMailbox !== undefined ? batchInjected.get(firstMailbox)?.shift() : undefined;
      if (next) throw new Refusal(next.status, next.code, next.message ?? next.code, next.retryAfter);
    } catch (err) {
      return refused(err);
    }
    const version = BATCH_PATH.exec(call.url.pathname)![1]!;
    const answers = new Map<string, Promise<BatchAnswer>>();
    let cut = false;
    let running = 0;
    const turns: (() => void)[] = [];
    const midway = firstMailbox !== undefined ? batchCuts.get(firstMailbox) : undefined;
    if (midway) batchCuts.delete(firstMailbox!);
    let done = 0;
    let cutMidway: () => void = () => undefined;
    const cutNow = new Promise<'cut'>((resolve) => (cutMidway = () => resolve('cut')));
    const run = async (r: BatchRequest, index: number): Promise<BatchAnswer> => {
      const after = await Promise.all((r.dependsOn ?? []).map((id) => answers.get(id.toLowerCase())!));
      if (after.some((a) => a.status >= 400)) return { id: r.id, status: 424, headers: {}, body: errorBody('FailedDependency', 'A request this one depends on failed.') };
      if (midway && index >= midway.after) await midway.goOn;
      // Graph dispatches at most four requests of a batch at once.
      while (running >= BATCH_DISPATCH) await new Promise<void>((resolve) => turns.push(resolve));
      running++;
      try {
        const headers: Headers = { ...lowerCased(r.headers ?? {}), authorization: call.headers.authorization };
        // A body is a JSON value, or a string of base64 bytes.
        const body = typeof r.body === 'string' ? Buffer.from(r.body, 'base64') : Buffer.alloc(0);
        const url = new URL(`/${version}${r.url.startsWith('/') ? '' : '/'}${r.url}`, 'http://standin');
        const answer = await serve({ method: r.method.toUpperCase(), url, headers, body, tooLarge: false, ...(r.body !== undefined && typeof r.body !== 'string' ? { parsed: r.body } : {}) });
        if (answer === 'cut') {
          cut = true;
          return { id: r.id, status: 200, headers: {} };
        }
        const json = answer.body === undefined || !Buffer.isBuffer(answer.body);
        return { id: r.id, status: answer.status, headers: { ...answer.headers, ...(answer.body !== undefined ? { 'content-type': json ? 'application/json' : 'text/plain' } : {}) }, ...(answer.body !== undefined ? { body: json ? answer.body : (answer.body as Buffer).toString('base64') } : {}) };
      } finally {
        running--;
        turns.shift()?.();
        if (++done === midway?.after) cutMidway();
      }
    };
    // Dependencies come first in `requests` (checked): each one's answer is in the map before it is awaited.
    for (const [i, r] of requests.entries()) answers.set(r.id.toLowerCase(), run(r, i));
    const all = Promise.all(answers.values());
    if (midway) {
      // A batch shorter than `after` is cut once all of it ran.
      void all.then(() => {
        cutMidway();
        midway.finished();
      });
      return cutNow;
    }
    const responses = await all;
    if (cut) return 'cut';
    for (let i = responses.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [responses[i], responses[j]] = [responses[j]!, responses[i]!];
    }
    return { status: 200, body: { responses } };
  }

  /** A batch body's requests, checked as Graph checks them (else 400, the batch refused whole). */
  function batchRequests(body: Record<string, unknown>): BatchRequest[] {
    const bad = (why: string) => new Refusal(400, 'BadRequest', why);
    if (Object.keys(body).some((k) => k !== 'requests') || !Array.isArray(body.requests)) throw bad('A batch body is {"requests": [...]}.');
    const requests = body.requests as unknown[];
    if (requests.length === 0) throw bad('A batch holds at least one request.');
    if (requests.length > BATCH_MAX) throw bad(`The number of requests in the batch (${requests.length}) exceeds the limit of ${BATCH_MAX}.`);
    const seen = new Set<string>();
    for (const value of requests) {
      const r = value as BatchRequest;
      if (typeof r !== 'object' || r === null || Array.isArray(r)) throw bad('Each request of a batch is an object.');
      const extra = Object.keys(r).filter((k) => !['id', 'method', 'url', 'headers', 'body', 'dependsOn'].includes(k));
      if (extra.length > 0) throw bad(`The property '${extra[0]}' does not exist on a batch request.`);
      if (typeof r.id !== 'string' || r.id === '' || typeof r.method !== 'string' || typeof r.url !== 'string') throw bad('Each request of a batch needs a string id, method and url.');
      if (/^https?:/i.test(r.url)) throw bad(`The url of request ${r.id} must be relative (such as /users/...).`);
      if (seen.has(r.id.toLowerCase())) throw bad(`The id ${r.id} is used by more than one request of the batch.`);
      if (r.headers !== undefined && (typeof r.headers !== 'object' || r.headers === null || Object.values(r.headers).some((v) => typeof v !== 'string'))) throw bad(`The headers of request ${r.id} must be an object of strings.`);
      if (r.body !== undefined && !Object.keys(r.headers ?? {}).some((h) => h.toLowerCase() === 'content-type')) throw bad(`Request ${r.id} has a body but no Content-Type header.`);
      if (r.dependsOn !== undefined && (!Array.isArray(r.dependsOn) || r.dependsOn.some((d) => typeof d !== 'string' || !seen.has(d.toLowerCase())))) {
        throw bad(`The dependsOn of request ${r.id} must name requests earlier in the batch.`);
      }
      seen.add(r.id.toLowerCase());
    }
    return requests as BatchRequest[];
  }

  function refused(err: unknown): Answer {
    if (!(err instanceof Refusal)) throw err;
    if (err.status === 429) stats.throttled++;
    return { status: err.status, body: errorBody(err.code, err.message), headers: err.retryAfter !== undefined ? { 'retry-after': String(err.retryAfter) } : {} };
  }

  // Graph's front ends keep an idle connection for minutes, longer than the client's 30 s. Node's
  // default of 5 s, with this server on the test's own event loop, closed sockets the client was
  // reusing whenever a loaded CI host stalled that loop (CI, 2026-12-02: a connection cut retried
  // on top of the 503s a test counted, and a create made uncertain spent a 401 a test injected).
  server.keepAliveTimeout = 120_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  base = `http://127.0.0.1:${port}`;
  audience ||= base;

  function pathFolder(box: Mailbox, path: string): Folder | undefined {
    let folder: Folder | undefined;
    for (const [i, name] of path.split('/').entries()) {
      folder =
        i === 0 && WELL_KNOWN.includes(name.toLowerCase())
          ? [...box.folders.values()].find((f) => f.wellKnown === name.toLowerCase())
          : [...box.folders.values()].find((f) => f.parentId === (folder?.id ?? [...box.folders.values()].find((r) => r.wellKnown === 'msgfolderroot')!.id) && f.displayName === name);
      if (!folder) return undefined;
    }
    return folder;
  }

  return {
    url: base,
    tenant,
    audience,
    mailbox: (address, opts) => {
      const box = mailboxOf(address, opts?.licensed ?? true);
      if (opts?.licensed !== undefined) box.licensed = opts.licensed;
      return { messages: box.messages, folders: box.folders };
    },
    messagesIn(address, path) {
      const box = mailboxes.get(address.toLowerCase());
      const folder = box && pathFolder(box, path);
      return folder ? [...box.messages.values()].filter((m) => m.folderId === folder.id) : [];
    },
    users: () => [...mailboxes.keys()],
    deleteFolder(address, path, opts) {
      const box = mailboxOf(address);
      const folder = pathFolder(box, path);
      if (!folder) throw new Error(`${address} has no folder ${path}`);
      removeFolder(box, folder, opts?.permanently ?? false);
    },
    afterCreates(address, count, hook) {
      mailboxOf(address).createHooks.set(count, hook);
    },
    mimeOf,
    inject(address, response, count = 1, after = 0) {
      const queue = injected.get(address.toLowerCase()) ?? [];
      for (let i = 0; i < after; i++) queue.push(null);
      for (let i = 0; i < count; i++) queue.push(response);
      injected.set(address.toLowerCase(), queue);
    },
    injectBatch(address, response, count = 1) {
      const queue = batchInjected.get(address.toLowerCase()) ?? [];
      for (let i = 0; i < count; i++) queue.push(response);
      batchInjected.set(address.toLowerCase(), queue);
    },
    cutBatch(address, after, goOn) {
      let finished: () => void = () => undefined;
      const cut: BatchCut = { finished: new Promise<void>((resolve) => (finished = resolve)) };
      batchCuts.set(address.toLowerCase(), { after, goOn, finished });
      return cut;
    },
    pageAtMost(n = 1000) {
      pageLimit = n;
    },
    loseAnswers(address, kind, count = 1, instead) {
      losing.set(`${address.toLowerCase()} ${kind}`, { count, ...(instead ? { instead } : {}) });
    },
    stats,
    tokensSeen,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A folder as Graph returns it, with `$select` applied (an unknown property refused). */
function folderJson(f: Folder, query?: URLSearchParams): Record<string, unknown> {
  const full: Record<string, unknown> = { id: f.id, displayName: f.displayName, parentFolderId: f.parentId, childFolderCount: 0, unreadItemCount: 0, totalItemCount: 0, isHidden: false };
  const select = query?.get('$select');
  if (!select) return full;
  const out: Record<string, unknown> = { id: f.id };
  for (const name of select.split(',').map((s) => s.trim())) {
    if (!(name in full)) throw new Refusal(400, 'RequestBroker--ParseUri', `Could not find a property named '${name}' on type 'microsoft.graph.mailFolder'.`);
    out[name] = full[name];
  }
  return out;
}

/** Graph names `String 0x7D` and `String 0x007D` alike; ids compare case-insensitively in the hex. */
const normalizedIds = new Map<string, string>();
function normalizedPropertyId(id: string): string {
  let normal = normalizedIds.get(id);
  if (normal === undefined && normalizedIds.size < 10_000) normalizedIds.set(id, (normal = normalizedPropertyIdOf(id)));
  return normal ?? normalizedPropertyIdOf(id);
}
function normalizedPropertyIdOf(id: string): string {
  return id.replace(/0x([0-9A-Fa-f]+)$/, (_, hex: string) => `0x${hex.toUpperCase().padStart(4, '0')}`).replace(/\{([0-9A-Fa-f-]+)\}/, (_, g: string) => `{${g.toLowerCase()}}`);
}

function isoSecond(value: string): string {
  return new Date(Math.floor(Date.parse(value) / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/** `$filter` split at the `and`s outside quoted strings (a folder may be named `R and D`). */
function filterClauses(filter: string): string[] {
  const clauses: string[] = [];
  const and = /\s+and\s+/iy;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < filter.length; i++) {
    // A quote doubled inside a string flips this twice.
    if (filter[i] === "'") quoted = !quoted;
    if (quoted) continue;
    and.lastIndex = i;
    const m = and.exec(filter);
    if (!m) continue;
    clauses.push(filter.slice(start, i));
    start = i + m[0].length;
    i = start - 1;
  }
  clauses.push(filter.slice(start));
  return clauses;
}

/** `a,b($select=x,y),c` split at the commas outside parentheses. */
function splitTopLevel(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let current = '';
  for (const c of text) {
    if (c === '(') depth++;
    if (c === ')') depth--;
    if (c === ',' && depth === 0) {
      out.push(current);
      current = '';
    } else current += c;
  }
  if (current) out.push(current);
  return out;
}

/**
 * The MIME Graph serves for a message (`$value`): the imported bytes as they came, else a message
 * rendered from the stored fields, as Exchange renders one (not our bytes: a JSON-created message
 * never had them).
 */
function mimeOf(message: StandinMessage): Buffer {
  if (message.mime) return message.mime;
  const addr = (r: { emailAddress: { name?: string; address: string } }) => `${r.emailAddress.name ? `=?utf-8?B?${Buffer.from(r.emailAddress.name).toString('base64')}?= ` : ''}<${r.emailAddress.address}>`;
  const boundary = `_standin_${message.id.slice(-12)}`;
  const head = [
    ...(message.from ? [`From: ${addr(message.from)}`] : []),
    `To: ${message.toRecipients.map(addr).join(', ')}`,
    ...(message.ccRecipients.length ? [`Cc: ${message.ccRecipients.map(addr).join(', ')}`] : []),
    `Subject: =?utf-8?B?${Buffer.from(message.subject).toString('base64')}?=`,
    `Date: ${new Date(message.sentDateTime).toUTCString().replace(/GMT$/, '+0000')}`,
    `Message-ID: ${message.internetMessageId}`,
    'MIME-Version: 1.0',
  ];
  const bodyPart = `Content-Type: text/${message.body.contentType === 'html' ? 'html' : 'plain'}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n${Buffer.from(message.body.content).toString('base64')}`;
  if (message.attachments.length === 0) return Buffer.from(`${head.join('\r\n')}\r\n${bodyPart}\r\n`);
  const parts = [bodyPart, ...message.attachments.map((a) => `Content-Type: ${a.contentType}; name="${a.name}"\r\nContent-Disposition: attachment; filename="${a.name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n${a.bytes.toString('base64')}`)];
  return Buffer.from(`${head.join('\r\n')}\r\nContent-Type: multipart/mixed; boundary="${boundary}"\r\n\r\n${parts.map((p) => `--${boundary}\r\n${p}\r\n`).join('')}--${boundary}--\r\n`);
}
