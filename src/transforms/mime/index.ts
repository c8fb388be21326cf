import libmime from 'libmime';
import * as libqp from 'libqp';
import { whyNotPluginHeader, type AttachmentRef, type Item, type User } from '../../model.js';
import { sha256Hex } from '../../hash.js';
import { parseAddress } from '../../formats/address/index.js';
import { parseZonedTime } from '../../formats/pivot-export/time.js';

/** Identity of the export a message came from; only `tenant` feeds the Message-ID. */
export interface MimeContext {
  tenant: string;
  exportId: string;
}

/** An attachment as the builder receives it: its bytes, or the reason they are not there. */
export type LoadedAttachment = { ref: AttachmentRef; bytes: Buffer } | { ref: AttachmentRef; missing: string };

const CRLF = '\r\n';
/** The domain of every Message-ID this tool makes: how a store's messages of ours are told apart. */
export const HEADER_DOMAIN = 'pivot-archive.invalid';

function digest(...parts: string[]): string {
  return sha256Hex(parts.join('\u0000'));
}

/**
 * Message-ID from tenant and event id only (not the export id), so an export delivered
 * again yields the same id and the sinks can recognise what they already hold.
 */
export function messageIdFor(tenant: string, itemId: string): string {
  return `<${digest('item', tenant, itemId).slice(0, 40)}@${HEADER_DOMAIN}>`;
}

function conversationRootId(tenant: string, conversationId: string): string {
  return `<conversation.${digest('conversation', tenant, conversationId).slice(0, 40)}@${HEADER_DOMAIN}>`;
}

/** Control characters (CR, LF, NUL, ...) become spaces: no input can start or break a header. */
export function headerSafe(value: string): string {
  return value.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').trim();
}

const PLAIN_HEADER_TEXT = /^[\x20-\x7e]*$/;

/**
 * A header value that decodes to exactly `value`: kept as it is when it is short-worded
 * printable ASCII without a space at either end (a reader drops those: ` m_1` read as `m_1`),
 * else RFC 2047 words, which carry any character (even CR/LF) encoded.
 */
function exactText(value: string): string {
  const plain =
    PLAIN_HEADER_TEXT.test(value) && value.trim() === value && !value.includes('=?') && value.split(' ').every((word) => word.length <= 70);
  return plain ? value : libmime.encodeWord(value, 'Q', 52);
}

/** Display text (subject, plugin headers): control characters folded to spaces first. */
function unstructured(value: string): string {
  return exactText(headerSafe(value));
}

export function displayNameOf(user: User): string {
  const name = typeof user.displayName === 'string' ? headerSafe(user.displayName) : '';
  return name || user.id;
}

const addresses = new WeakMap<User, string>();

/** `"Name" <address>` of a user; users recur in every item, so the text is made once. */
function addressOf(user: User): string {
  let address = addresses.get(user);
  if (address === undefined) addresses.set(user, (address = formatAddress(user)));
  return address;
}

/**
 * Whether the message of this item has an RFC 6532 UTF-8 address in From or To (a participant
 * whose address has a non-ASCII local part): only a sink or server that takes UTF-8 headers
 * (SMTPUTF8 / IMAP UTF8=ACCEPT) can hold it as it is. Every other header is always 7-bit.
 */
export function hasUtf8Headers(item: Item): boolean {
  return item.participants.concat(item.sender).some((user) => parseAddress(user.email)?.smtpUtf8 === true);
}

function formatAddress(user: User): string {
  // An ASCII local part: local@A-label, pure ASCII. A non-ASCII one: RFC 6532 UTF-8 (no ASCII form exists).
  const address = parseAddress(user.email)?.header ?? `pivot-user.${digest('user', user.id).slice(0, 16)}@${HEADER_DOMAIN}`;
  const name = typeof user.displayName === 'string' ? headerSafe(user.displayName) : headerSafe(user.id);
  if (!name) return `<${address}>`;
  const phrase =
    PLAIN_HEADER_TEXT.test(name) && !name.includes('=?') && name.length <= 70
      ? `"${name.replace(/[\\"]/g, (c) => `\\${c}`)}"`
      : libmime.encodeWord(name, 'Q', 52);
  return `${phrase} <${address}>`;
}

function header(name: string, value: string): string {
  return libmime.foldLines(`${name}: ${value}`, 76) + CRLF;
}

function rfc5322Date(time: number): string {
  return new Date(time).toUTCString().replace(/GMT$/, '+0000');
}

function crlf(text: string): string {
  return text.replace(/\r\n|\r|\n/g, CRLF);
}

function quotedPrintable(text: string): string {
  return libqp.wrap(libqp.encode(Buffer.from(crlf(text), 'utf8')), 76);
}

function base64Lines(bytes: Buffer): string {
  return (bytes.toString('base64').match(/.{1,76}/g) ?? []).join(CRLF);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function htmlToText(html: string): string {
  return html
    .replace(/<(script|style)[^>]*>[\s\S]*?<\/\1>/gi, '')
    .replace(/<br\s*\/?>|<\/p>|<\/div>/gi, '\n')
    .replace(/<[^>]*>/g, '')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&');
}

/**
 * An attachment's media type as the event gives it, when well formed and not composite: the body
 * of a `multipart/*` or `message/*` part may not be base64 (RFC 2045 6.4, RFC 2046 5.2.1), and a
 * parser that follows them reads a base64 `message/rfc822` as a broken message, its bytes lost.
 */
function mediaType(value: unknown): string {
  return typeof value === 'string' && /^[A-Za-z0-9!#$&^_.+-]{1,64}\/[A-Za-z0-9!#$&^_.+-]{1,64}$/.test(value) && !/^(multipart|message)\//i.test(value)
    ? value.toLowerCase()
    : 'application/octet-stream';
}

function param(key: string, value: string): string {
  return libmime
    .buildHeaderParam(key, value, 50)
    .map((p) => (p.key.endsWith('*') ? `${p.key}=${p.value}` : `${p.key}="${p.value.replace(/[\\"]/g, (c) => `\\${c}`)}"`))
    .join(`;${CRLF} `);
}

function subjectOf(item: Item): string {
  const topic = item.conversation.name
    ? String(item.conversation.name)
    : item.participants.map(displayNameOf).join(', ');
  const prefix = { message: '', edit: 'Edited: ', delete: 'Deleted: ', join: 'Joined: ', leave: 'Left: ' }[item.type];
  return prefix + topic;
}

/** What the message says, as text and (when the event has it) html. */
function bodyOf(item: Item, notes: string[]): { text: string; html?: string } {
  const sender = displayNameOf(item.sender);
  let text: string;
  let html: string | undefined;
  switch (item.type) {
    case 'message':
    case 'edit': {
      text = item.text ?? (item.html !== undefined ? htmlToText(item.html) : '');
      html = item.html;
      if (item.type === 'edit') {
        const note = `${sender} edited message ${item.targetId}. New text:`;
        text = `${note}\n\n${text}`;
        if (html !== undefined) html = `<p><i>${escapeHtml(note)}</i></p>\n${html}`;
      }
      break;
    }
    case 'delete':
      text = `${sender} deleted message ${item.targetId}. The original is kept as its own message.`;
      break;
    case 'join':
    case 'leave': {
      const member = displayNameOf(item.member ?? item.sender);
      const verb = item.type === 'join' ? 'joined' : 'left';
      text = `${member} ${verb} the conversation.`;
      if (item.member && item.member.id !== item.sender.id) text += ` (by ${sender})`;
      break;
    }
    default:
      // The validate and plugin stages let no other type through: a bug, not a message without a body.
      throw new Error(`cannot build a message for an item of type ${JSON.stringify(item.type satisfies never)}`);
  }
  if (notes.length > 0) {
    text += `\n\n${notes.join('\n')}`;
    if (html !== undefined) html += `\n${notes.map((n) => `<p><i>${escapeHtml(n)}</i></p>`).join('\n')}`;
  }
  return { text, html };
}

function textPart(text: string, subtype: 'plain' | 'html'): string {
  return (
    `Content-Type: text/${subtype}; charset=utf-8${CRLF}` +
    `Content-Transfer-Encoding: quoted-printable${CRLF}${CRLF}` +
    quotedPrintable(text)
  );
}

function multipart(subtype: string, boundary: string, parts: string[]): string {
  return (
    `Content-Type: multipart/${subtype};${CRLF} boundary="${boundary}"${CRLF}${CRLF}` +
    parts.map((p) => `--${boundary}${CRLF}${p}${CRLF}`).join('') +
    `--${boundary}--${CRLF}`
  );
}

/** Bidirectional controls: a name `<U+202E>gnp.exe` shows as `exe.png`. */
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** The last part of a name (no folder a client that saves by name could be led into), without controls or leading dots. */
function baseFileName(name: string): string {
  return headerSafe(name.replace(BIDI_CONTROLS, '')).split(/[\\/]/).pop()!.trim().replace(/^\.+/, '');
}

/** The name an attachment is offered under: the exporter's `fileName` made safe, else its id made safe. */
export function attachmentFileName(ref: AttachmentRef): string {
  return baseFileName(typeof ref.fileName === 'string' ? ref.fileName : '') || baseFileName(ref.id) || 'attachment';
}

function attachmentPart(ref: AttachmentRef, bytes: Buffer): string {
  const fileName = attachmentFileName(ref);
  return (
    `Content-Type: ${mediaType(ref.contentType)};${CRLF} ${param('name', fileName)}${CRLF}` +
    `Content-Disposition: attachment;${CRLF} ${param('filename', fileName)}${CRLF}` +
    `Content-Transfer-Encoding: base64${CRLF}${CRLF}` +
    base64Lines(bytes)
  );
}

export function missingAttachmentNote(ref: AttachmentRef, why: string): string {
  return `[Attachment "${attachmentFileName(ref)}" (${headerSafe(ref.id)}) is not included: ${why}.]`;
}

/**
 * The RFC 5322 message of one item. The same item always yields the same bytes: the
 * boundaries and ids derive from the item, and nothing reads the clock.
 */
export function buildMessage(item: Item, context: MimeContext, attachments: LoadedAttachment[]): Buffer {
  const time = parseZonedTime(item.sentAt);
  const others = item.participants.filter((p) => p.id !== item.sender.id);
  const references = [conversationRootId(context.tenant, item.conversation.id)];
  const parent = item.replyToId ?? item.targetId;
  if (parent !== undefined) references.push(messageIdFor(context.tenant, parent));

  let head =
    `MIME-Version: 1.0${CRLF}` +
    header('Date', rfc5322Date(time)) +
    header('From', addressOf(item.sender)) +
    header('To', others.length > 0 ? others.map(addressOf).join(', ') : 'undisclosed-recipients:;') +
    header('Subject', unstructured(subjectOf(item))) +
    header('Message-ID', messageIdFor(context.tenant, item.id));
  if (parent !== undefined) head += header('In-Reply-To', messageIdFor(context.tenant, parent));
  head +=
    header('References', references.join(' ')) +
    header('X-Pivot-Item-Id', exactText(item.id)) +
    header('X-Pivot-Conversation-Id', exactText(item.conversation.id)) +
    header('X-Pivot-Export-Id', exactText(context.exportId)) +
    header('X-Pivot-Event-Type', item.type);
  for (const [name, value] of Object.entries(item.headers).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (whyNotPluginHeader(name) !== undefined) continue; // refused at the plugin stage; kept out here too
    head += header(name, unstructured(value));
  }

  const notes = attachments.flatMap((a) => ('missing' in a ? [missingAttachmentNote(a.ref, a.missing)] : []));
  const { text, html } = bodyOf(item, notes);
  const boundary = (kind: string) => `=_pivot_${kind}_${digest('boundary', item.id).slice(0, 24)}`;
  const body =
    html === undefined
      ? textPart(text, 'plain')
      : multipart('alternative', boundary('alt'), [textPart(text, 'plain'), textPart(html, 'html')]);
  const present = attachments.flatMap((a) => ('bytes' in a ? [attachmentPart(a.ref, a.bytes)] : []));
  const content = present.length === 0 ? body : multipart('mixed', boundary('mixed'), [body, ...present]);
  return Buffer.from(head + content, 'utf8');
}
