// The Graph JSON of a message this tool built (src/transforms/mime): Graph makes a draft of any
// MIME posted to /messages, so json mode reads our own MIME back into the fields Graph takes,
// with the MAPI properties that make it a received, read message at its sentAt.
import libmime from 'libmime';
import * as libqp from 'libqp';
import { sha256Hex } from '../../hash.js';
import { messageVersion } from '../../formats/message/export-id.js';

/**
 * Attachments from this size on go through an upload session ("between 3 MB and 150 MB"; a
 * smaller one is refused ErrorAttachmentSizeShouldNotBeLessThanMinimumSize), smaller ones in one
 * request (Graph: "under 3 MB"), the create's or their own, while it stays under REQUEST_BODY_MAX.
 */
export const UPLOAD_SESSION_MIN = 3 * 1024 * 1024;
/** Graph refuses a request body over 4 MB. */
export const REQUEST_BODY_MAX = 4 * 1024 * 1024;
/** Graph's largest attachment through an upload session. */
export const ATTACHMENT_MAX = 150 * 1024 * 1024;
/** Upload-session chunks: at most 4 MB each. */
export const CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * The namespace of the one named property this tool stamps on a message in json mode
 * (`String {GUID} Name pivotArchiveStamp`): `<sha256 of the MIME> <its size> <sha256 of the compared fields>
 * <sha256 of the MIME without X-Pivot-Export-Id>` (the last, which version of its item it is, since
 * 2026-11-30: an older stamp stands for any version), final once the whole message is in (see SPEC.md, mode=json, and "Location and reading back").
 */
export const STAMP_PROPERTY = 'String {6b3f3d1e-3c0e-4f55-9d3a-5f1c2a9e7b41} Name pivotArchiveStamp';
/** What the stamp starts with while attachments are still being added: the message is not whole yet. */
export const PENDING = 'pending ';

export interface Recipient {
  emailAddress: { name?: string; address: string };
}

export interface FileAttachment {
  name: string;
  contentType: string;
  bytes: Buffer;
}

/** What a message of ours becomes in json mode. */
export interface GraphMessage {
  /** The create request's body: every field, the small attachments inline, the stamp when nothing is left to add. */
  create: Record<string, unknown>;
  /** Attachments added after the create (too large to go inline): upload sessions, or one POST each. */
  later: FileAttachment[];
  /** The stamp's value. */
  stamp: string;
}

/** The fields verify compares in json mode, as Graph returns them and as this tool sent them. */
export interface ComparedFields {
  internetMessageId: string;
  subject: string;
  from: string;
  to: string[];
  cc: string[];
  sentAt: string;
  attachments: string[];
}

/** sha256 of the compared fields, addresses lower-cased, lists sorted: what the stamp's second half holds. */
export function fieldsDigest(f: ComparedFields): string {
  const sorted = (list: string[]) => [...list].map((a) => a.toLowerCase()).sort();
  return sha256Hex(JSON.stringify([f.internetMessageId, f.subject, f.from.toLowerCase(), sorted(f.to), sorted(f.cc), f.sentAt, [...f.attachments].sort()]));
}

interface Part {
  /** The first value of each header field this module reads (HEADERS_READ), by lower-cased name. */
  headers: Map<string, string>;
  body: Buffer;
}

/** The header fields read of a message or part (`first`): the others are not kept. */
const HEADERS_READ = ['content-type', 'content-disposition', 'content-transfer-encoding', 'message-id', 'subject', 'from', 'to', 'cc', 'in-reply-to', 'references'] as const;
type HeaderRead = (typeof HEADERS_READ)[number];
const READ = new Set<string>(HEADERS_READ);

/** Splits a message or part at its first empty line; header fields unfolded, names lower-cased. */
function splitPart(raw: Buffer): Part & { headerBlock: string } {
  let end = raw.indexOf('\r\n\r\n');
  let gap = 4;
  if (end < 0) {
    end = raw.indexOf('\n\n');
    gap = 2;
  }
  if (end < 0) [end, gap] = [raw.length, 0];
  const headerBlock = raw.toString('utf8', 0, end);
  const headers = new Map<string, string>();
  for (const line of headerBlock.replace(/\r?\n[ \t]/g, ' ').split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    // Only a field's first value is read.
    if (READ.has(name) && !headers.has(name)) headers.set(name, line.slice(colon + 1).trim());
  }
  return { headers, body: raw.subarray(Math.min(raw.length, end + gap)), headerBlock };
}

function first(part: Part, name: HeaderRead): string | undefined {
  return part.headers.get(name);
}

function decodeBody(part: Part): Buffer {
  const encoding = (first(part, 'content-transfer-encoding') ?? '7bit').toLowerCase();
  if (encoding === 'base64') return Buffer.from(part.body.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, ''), 'base64');
  if (encoding === 'quoted-printable') return libqp.decode(part.body.toString('latin1'));
  return part.body;
}

type HeaderValue = ReturnType<typeof libmime.parseHeaderValue>;

/** A part with no parts in it, and its Content-Type parsed. */
interface Leaf extends Part {
  type: HeaderValue;
}

/** The leaves of a part, depth first: multipart bodies split at their boundary. */
function leaves(part: Part): Leaf[] {
  const type = libmime.parseHeaderValue(first(part, 'content-type') ?? 'text/plain');
  const boundary = type.params.boundary;
  if (!type.value.toLowerCase().startsWith('multipart/') || !boundary) return [{ ...part, type }];
  // Before the first delimiter: the preamble; after the closing one: the epilogue.
  return splitAtDelimiters(part.body.toString('latin1'), `--${boundary}`)
    .slice(1, -1)
    .flatMap((piece) => leaves(splitPart(Buffer.from(piece, 'latin1'))));
}

/** RFC 2047 words decoded; a text with none (nearly all) as it is, without libmime's five passes. */
function decodedWords(text: string): string {
  return text.includes('=?') ? libmime.decodeWords(text) : text;
}

/**
 * `text` split at its delimiter lines (RFC 2046: the delimiter at the start of a line, `--` after
 * it on the closing one, then blanks): the line break before a delimiter and the one ending it
 * belong to the delimiter. By indexOf, not a RegExp made per message.
 */
export function splitAtDelimiters(text: string, delimiter: string): string[] {
  const pieces: string[] = [];
  let pieceStart = 0;
  for (let at = text.indexOf(delimiter); at >= 0; at = text.indexOf(delimiter, at + 1)) {
    if (at < pieceStart || (at > 0 && text[at - 1] !== '\n')) continue;
    let end = at + delimiter.length;
    if (text.startsWith('--', end)) end += 2;
    while (text[end] === ' ' || text[end] === '\t') end++;
    const lineEnd = end === text.length ? 0 : text[end] === '\n' ? 1 : text.startsWith('\r\n', end) ? 2 : -1;
    if (lineEnd < 0) continue;
    const lineStart = at === 0 ? 0 : Math.max(pieceStart, at - (text[at - 2] === '\r' ? 2 : 1));
    pieces.push(text.slice(pieceStart, lineStart));
    pieceStart = end + lineEnd;
  }
  pieces.push(text.slice(pieceStart));
  return pieces;
}

/** `"Name" <a@b>, =?utf-8?Q?...?= <c@d>`, as our builder writes them (a group such as `undisclosed-recipients:;` holds no one). */
export function parseAddressList(value: string | undefined): Recipient[] {
  if (!value) return [];
  const out: Recipient[] = [];
  let quoted = false;
  let angle = false;
  let start = 0;
  const push = (end: number) => {
    const text = value.slice(start, end).trim();
    start = end + 1;
    if (!text || /:\s*;?$/.test(text)) return;
    const m = /^(.*?)<([^<>]+)>\s*$/.exec(text);
    const address = (m ? m[2]! : text).trim();
    let name = m ? m[1]!.trim() : '';
    if (name.startsWith('"') && name.endsWith('"')) name = name.slice(1, -1).replace(/\\(.)/g, '$1');
    name = decodedWords(name);
    out.push({ emailAddress: name ? { name, address } : { address } });
  };
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\' && quoted) i++;
    else if (c === '"') quoted = !quoted;
    else if (!quoted && c === '<') angle = true;
    else if (!quoted && c === '>') angle = false;
    else if (!quoted && !angle && c === ',') push(i);
  }
  push(value.length);
  return out;
}

function charsetText(part: Leaf): string {
  const charset = part.type.params.charset ?? 'utf-8';
  const bytes = decodeBody(part);
  return /^utf-?8$/i.test(charset) || /^us-ascii$/i.test(charset) ? bytes.toString('utf8') : new TextDecoder(charset, { fatal: false }).decode(bytes);
}

/**
 * The Graph message of our MIME `raw` with `sentAt`: subject, from, to and cc, the html body if
 * there is one (else the text), attachments, internetMessageId, and the extended properties
 * PR_MESSAGE_FLAGS (0x0E07) = 1 (read, not unsent: no draft), PR_MESSAGE_DELIVERY_TIME (0x0E06)
 * and PR_CLIENT_SUBMIT_TIME (0x0039) = sentAt, PR_TRANSPORT_MESSAGE_HEADERS (0x007D) = our header
 * block, PR_IN_REPLY_TO_ID (0x1042) and PR_INTERNET_REFERENCES (0x1039).
 */
/** `version`: the message's `versionOf` when the caller has it already (the sink keys its items by it). */
export function graphMessage(raw: Buffer, sentAt: number, version = messageVersion(raw)): GraphMessage {
  const top = splitPart(raw);
  let text: string | undefined;
  let html: string | undefined;
  const attachments: FileAttachment[] = [];
  for (const leaf of leaves(top)) {
    const type = leaf.type;
    const dispositionHeader = first(leaf, 'content-disposition');
    const disposition = dispositionHeader === undefined ? undefined : libmime.parseHeaderValue(dispositionHeader);
    const attached = disposition?.value.toLowerCase() === 'attachment';
    const mediaType = type.value.toLowerCase();
    if (!attached && mediaType === 'text/plain' && text === undefined) text = charsetText(leaf);
    else if (!attached && mediaType === 'text/html' && html === undefined) html = charsetText(leaf);
    else {
      const param = (p: HeaderValue | undefined, key: string) => (p === undefined ? undefined : p.decodedParams.includes(key) ? p.params[key] : p.params[key] !== undefined ? decodedWords(p.params[key]) : undefined);
      const name = param(disposition, 'filename') ?? param(type, 'name') ?? 'attachment';
      attachments.push({ name, contentType: mediaType, bytes: decodeBody(leaf) });
    }
  }
  const when = new Date(Math.floor(sentAt / 1000) * 1000).toISOString();
  const internetMessageId = first(top, 'message-id') ?? '';
  const subject = decodedWords(first(top, 'subject') ?? '');
  const from = parseAddressList(first(top, 'from'))[0];
  const to = parseAddressList(first(top, 'to'));
  const cc = parseAddressList(first(top, 'cc'));
  const properties: { id: string; value: string }[] = [
    { id: 'Integer 0x0E07', value: '1' },
    { id: 'SystemTime 0x0E06', value: when },
    { id: 'SystemTime 0x0039', value: when },
    { id: 'String 0x007D', value: `${top.headerBlock}\r\n` },
  ];
  const inReplyTo = first(top, 'in-reply-to');
  const references = first(top, 'references');
  if (inReplyTo) properties.push({ id: 'String 0x1042', value: inReplyTo });
  if (references) properties.push({ id: 'String 0x1039', value: references });

  const stamp = `${sha256Hex(raw)} ${raw.length} ${fieldsDigest({
    internetMessageId,
    subject,
    from: from?.emailAddress.address ?? '',
    to: to.map((r) => r.emailAddress.address),
    cc: cc.map((r) => r.emailAddress.address),
    sentAt: when,
    attachments: attachments.map((a) => a.name),
  })} ${version}`;
  const create: Record<string, unknown> = {
    subject,
    body: html !== undefined ? { contentType: 'html', content: html } : { contentType: 'text', content: text ?? '' },
    ...(from ? { from } : {}),
    toRecipients: to,
    ccRecipients: cc,
    internetMessageId,
  };
  // Inline what fits: each under 3 MB, and the whole request under Graph's 4 MB (base64 adds a third).
  const inline: FileAttachment[] = [];
  const later: FileAttachment[] = [];
  // (The create's own size is only needed when there are attachments: most messages have none.)
  let size = attachments.length === 0 ? 0 : Buffer.byteLength(JSON.stringify(create)) + properties.reduce((n, p) => n + p.value.length + 64, 0) + 256;
  for (const a of attachments) {
    const encoded = Math.ceil(a.bytes.length / 3) * 4 + Buffer.byteLength(a.name) * 2 + 256;
    if (a.bytes.length < UPLOAD_SESSION_MIN && size + encoded < REQUEST_BODY_MAX - 64 * 1024) {
      inline.push(a);
      size += encoded;
    } else later.push(a);
  }
  // The stamp is final in the create when nothing is left to add; else the create says `pending`
  // and the final stamp is written after the last attachment.
  properties.push({ id: STAMP_PROPERTY, value: later.length === 0 ? stamp : `${PENDING}${stamp}` });
  create.singleValueExtendedProperties = properties;
  if (inline.length > 0) create.attachments = inline.map(fileAttachmentJson);
  return { create, later, stamp };
}

export function fileAttachmentJson(a: FileAttachment): Record<string, unknown> {
  return { '@odata.type': '#microsoft.graph.fileAttachment', name: a.name, contentType: a.contentType, contentBytes: a.bytes.toString('base64') };
}

/** The bytes of the `POST .../attachments` that adds `a` alone: its JSON, the base64 counted rather than made. */
export function attachmentRequestBytes(a: FileAttachment): number {
  return Buffer.byteLength(JSON.stringify(fileAttachmentJson({ ...a, bytes: Buffer.alloc(0) }))) + 4 * Math.ceil(a.bytes.length / 3);
}
