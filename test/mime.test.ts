import { canonicalMailbox, needsSmtpUtf8 } from '../src/formats/address/index.js';
import test from 'ava';
import { execFileSync } from 'node:child_process';
import libmime from 'libmime';
import { parseAddressHeader, simpleParser } from 'mailparser';
import type { Item, User } from '../src/model.js';
import * as mime from '../src/transforms/mime/index.js';
import { buildMessage, messageIdFor } from '../src/transforms/mime/index.js';

const jane: User = { id: 'u_1', displayName: 'Jane Doe', email: 'jane.doe@acme.example' };
const omar: User = { id: 'u_2', displayName: 'Omar Haddad', email: 'omar@acme.example' };
const context = { tenant: 'acme', exportId: 'acme-2026-11-23' };

function item(overrides: Partial<Item> = {}): Item {
  const base: Item = {
    id: 'm_1001',
    type: 'message',
    sentAt: '2026-11-23T14:03:22.123Z',
    conversation: { id: 'c_456', type: 'room', name: 'Rates desk EMEA', members: ['u_1', 'u_2'] },
    sender: jane,
    text: 'Can you show 5y at 3.42?',
    attachments: [],
    participants: [jane, omar],
    headers: {},
    raw: {},
    position: { file: 0, index: 0 },
  };
  return { ...base, ...overrides };
}

function headerLines(message: Buffer): string[] {
  const text = message.toString('utf8');
  return text.slice(0, text.indexOf('\r\n\r\n')).split('\r\n');
}

function assertLineLengths(t: import('ava').ExecutionContext, message: Buffer): void {
  for (const line of message.toString('binary').split('\r\n')) t.true(line.length <= 998, `line of ${line.length} octets`);
  t.false(/[^\r]\n|\r(?!\n)/.test(message.toString('binary')), 'bare CR or LF');
}

test('a message has the headers the spec asks for, read back by mailparser', async (t) => {
  const message = buildMessage(item({ replyToId: 'm_0999' }), context, []);
  const mail = await simpleParser(message);
  t.is(mail.from?.value[0]?.address, 'jane.doe@acme.example');
  t.is(mail.from?.value[0]?.name, 'Jane Doe');
  t.deepEqual((Array.isArray(mail.to) ? mail.to : [mail.to]).flatMap((a) => a!.value.map((v) => v.address)), ['omar@acme.example']);
  t.is(mail.subject, 'Rates desk EMEA');
  t.is(mail.date?.toISOString(), '2026-11-23T14:03:22.000Z');
  t.is(mail.messageId, messageIdFor('acme', 'm_1001'));
  t.is(mail.inReplyTo, messageIdFor('acme', 'm_0999'));
  t.true(String(mail.references).includes(messageIdFor('acme', 'm_0999')));
  t.is(mail.headers.get('x-pivot-item-id'), 'm_1001');
  t.is(mail.headers.get('x-pivot-conversation-id'), 'c_456');
  t.is(mail.headers.get('x-pivot-export-id'), 'acme-2026-11-23');
  t.is(mail.headers.get('x-pivot-event-type'), 'message');
  t.is(mail.text?.trim(), 'Can you show 5y at 3.42?');
});

test('the Message-ID depends on tenant and event id, not on the export id', (t) => {
  const a = buildMessage(item(), context, []);
  const b = buildMessage(item(), { ...context, exportId: 'acme-redelivered' }, []);
  const id = (m: Buffer) => /Message-ID:\s*(<[^>]+>)/.exec(m.toString())![1];
  t.is(id(a), id(b));
  t.not(messageIdFor('acme', 'm_1'), messageIdFor('other', 'm_1'));
});

test('the same item yields byte-identical messages', (t) => {
  const attachment = { ref: { id: 'a_1', fileName: 'x.pdf', contentType: 'application/pdf' }, bytes: Buffer.from('%PDF-1.4') };
  const one = buildMessage(item({ html: '<p>hi</p>', attachments: [attachment.ref] }), context, [attachment]);
  const two = buildMessage(item({ html: '<p>hi</p>', attachments: [attachment.ref] }), context, [attachment]);
  t.true(one.equals(two));
});

test('CR/LF and control characters in names, subject and ids never create or break a header', async (t) => {
  const eve: User = { id: 'u_eve', displayName: 'Eve\r\nBcc: victim@evil.example\r\n\r\nbody', email: 'eve@acme.example' };
  const message = buildMessage(
    item({
      id: 'm_\r\nX-Injected: 1',
      sender: eve,
      participants: [eve, { ...omar, displayName: 'Omar\u0000"<x>", Haddad' }],
      conversation: { id: 'c\n1', type: 'room', name: 'Desk\r\nSubject: fake', members: [] },
      text: 'hello\r\nBcc: nobody@evil.example',
    }),
    context,
    [],
  );
  const lines = headerLines(message);
  t.false(lines.some((l) => /^(Bcc|X-Injected|Subject: fake)/i.test(l)));
  t.is(lines.filter((l) => /^Subject:/.test(l)).length, 1);
  const mail = await simpleParser(message);
  t.is(mail.bcc, undefined);
  t.is(mail.from?.value[0]?.address, 'eve@acme.example');
  t.is(mail.subject, 'Desk Subject: fake');
  // mailparser leaves unknown headers RFC 2047-encoded; any RFC 2047 decoder gives the id back exactly.
  t.is(libmime.decodeWords(String(mail.headers.get('x-pivot-item-id'))), 'm_\r\nX-Injected: 1');
  t.is(libmime.decodeWords(String(mail.headers.get('x-pivot-conversation-id'))), 'c\n1');
  t.is((Array.isArray(mail.to) ? mail.to[0] : mail.to)?.value[0]?.address, 'omar@acme.example');
  t.true(mail.text?.includes('Bcc: nobody@evil.example'), 'the body keeps its text');
  assertLineLengths(t, message);
});

test('non-ASCII, emoji and right-to-left names and subjects round-trip as RFC 2047 words', async (t) => {
  const zoe: User = { id: 'u_z', displayName: 'Zoë Ødegård 😀 مرحبا', email: 'zoe@acme.example' };
  const message = buildMessage(
    item({ sender: zoe, participants: [zoe, jane], conversation: { id: 'c', type: 'group', name: 'Ставки \u202Eevil 📈', members: [] } }),
    context,
    [],
  );
  t.true(/^[\x00-\x7f]*$/.test(message.toString('binary').split('\r\n\r\n')[0]!), 'headers are 7-bit');
  const mail = await simpleParser(message);
  t.is(mail.from?.value[0]?.name, 'Zoë Ødegård 😀 مرحبا');
  t.is(mail.subject, 'Ставки \u202Eevil 📈');
});

test('a 120 KB line, NUL and emoji in the body keep every line within 998 octets', async (t) => {
  const text = `start ${'x'.repeat(120_000)} 😀 \u0000 end`;
  const message = buildMessage(item({ text, html: `<p>${'y'.repeat(120_000)}</p>` }), context, []);
  assertLineLengths(t, message);
  const mail = await simpleParser(message);
  t.is(mail.text, text);
  t.true(mail.html && mail.html.includes('y'.repeat(120_000)));
});

test('a very long subject without spaces is folded within the line limit', async (t) => {
  const name = 'z'.repeat(5000);
  const message = buildMessage(item({ conversation: { id: 'c', type: 'room', name, members: [] } }), context, []);
  assertLineLengths(t, message);
  t.is((await simpleParser(message)).subject, name);
});

test('html makes multipart/alternative; attachments are base64 with RFC 2231 names', async (t) => {
  const bytes = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 256));
  const ref = { id: 'a_77', fileName: 'tërm shëet "Q4"\r\n.pdf', contentType: 'application/pdf' };
  const message = buildMessage(item({ html: '<p>Can you show <b>5y</b>?</p>', attachments: [ref] }), context, [{ ref, bytes }]);
  const text = message.toString();
  t.regex(text, /Content-Type: multipart\/mixed/);
  t.regex(text, /Content-Type: multipart\/alternative/);
  t.regex(text, /filename\*0\*=utf-8''/);
  assertLineLengths(t, message);
  const mail = await simpleParser(message);
  t.is(mail.html, '<p>Can you show <b>5y</b>?</p>');
  t.is(mail.attachments.length, 1);
  t.is(mail.attachments[0]!.filename, 'tërm shëet "Q4" .pdf');
  t.is(mail.attachments[0]!.contentType, 'application/pdf');
  t.true(mail.attachments[0]!.content.equals(bytes));
});

test('an attachment is offered under the last part of its name, without bidi or other controls: no folder to save into, no disguised extension (read by mailparser and Python)', async (t) => {
  const cases: [string, string][] = [
    ['../../x', 'x'],
    ['/etc/passwd', 'passwd'],
    ['a/b/c.txt', 'c.txt'],
    ['.\\..\\win.ini', 'win.ini'],
    ['\u202egnp.exe', 'gnp.exe'],
    ['..', 'a_5'],
    ['report.pdf', 'report.pdf'],
  ];
  const refs = cases.map(([fileName], i) => ({ id: `a_${i}`, fileName, contentType: 'application/octet-stream' }));
  const message = buildMessage(item({ attachments: refs }), context, refs.map((ref) => ({ ref, bytes: Buffer.from('hi') })));
  const mail = await simpleParser(message);
  t.deepEqual(mail.attachments.map((a) => a.filename), cases.map(([, safe]) => safe));
  const script = 'import sys, email\nfrom email import policy\nm = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)\nprint("\\n".join(p.get_filename() for p in m.iter_attachments()))';
  t.deepEqual(execFileSync('python3', ['-c', script], { input: message }).toString().trim().split('\n'), cases.map(([, safe]) => safe));
});

test('an attachment given a composite type (message/rfc822, multipart/*) goes as application/octet-stream: its base64 bytes come back whole from Python and mailparser', async (t) => {
  const eml = Buffer.from('From: a@b.example\r\nSubject: fwd\r\n\r\nforwarded body\r\n');
  const types = ['message/rfc822', 'Message/Partial', 'multipart/mixed', 'text/plain'];
  // Not named .eml: mailparser would take the type from the name.
  const refs = types.map((contentType, i) => ({ id: `a_${i}`, fileName: `x${i}.bin`, contentType }));
  const message = buildMessage(item({ attachments: refs }), context, refs.map((ref) => ({ ref, bytes: eml })));
  const mail = await simpleParser(message);
  t.deepEqual(mail.attachments.map((a) => a.contentType), ['application/octet-stream', 'application/octet-stream', 'application/octet-stream', 'text/plain']);
  t.true(mail.attachments.every((a) => a.content.equals(eml)));
  const script = 'import sys, email\nfrom email import policy\nm = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)\nparts = list(m.iter_attachments())\nprint(len(parts), sum(len(p.defects) for p in m.walk()), all(p.get_payload(decode=True) == sys.argv[1].encode() for p in parts), *[p.get_content_type() for p in parts])';
  t.is(execFileSync('python3', ['-c', script, eml.toString()], { input: message }).toString().trim(), '4 0 True application/octet-stream application/octet-stream application/octet-stream text/plain');
});

test('a missing attachment is noted in the body and the item still has its text', async (t) => {
  const ref = { id: 'a_gone', fileName: 'gone.pdf' };
  const mail = await simpleParser(buildMessage(item({ attachments: [ref] }), context, [{ ref, missing: 'its bytes are not in the export archive' }]));
  t.is(mail.attachments.length, 0);
  t.regex(mail.text ?? '', /Attachment "gone.pdf" \(a_gone\) is not included: its bytes are not in the export archive/);
  t.regex(mail.text ?? '', /Can you show/);
});

test('edits and deletes reference their target; join and leave are short notices', async (t) => {
  const edit = await simpleParser(buildMessage(item({ id: 'm_2', type: 'edit', targetId: 'm_1001', text: 'new text' }), context, []));
  t.is(edit.inReplyTo, messageIdFor('acme', 'm_1001'));
  t.regex(edit.text ?? '', /edited message m_1001[\s\S]*new text/);
  t.is(edit.headers.get('x-pivot-event-type'), 'edit');
  const del = await simpleParser(buildMessage(item({ id: 'm_3', type: 'delete', targetId: 'm_1001', text: undefined }), context, []));
  t.is(del.inReplyTo, messageIdFor('acme', 'm_1001'));
  t.regex(del.text ?? '', /deleted message m_1001/);
  const join = await simpleParser(buildMessage(item({ id: 'm_4', type: 'join', member: omar, text: undefined }), context, []));
  t.regex(join.text ?? '', /Omar Haddad joined the conversation\. \(by Jane Doe\)/);
});

test('a direct chat without a name takes the participants as its subject; a user without email still appears by name', async (t) => {
  const ghost: User = { id: 'u_ghost', displayName: 'Ghost', email: 'not an address' };
  const mail = await simpleParser(
    buildMessage(item({ sender: ghost, participants: [ghost, jane], conversation: { id: 'c', type: 'direct', name: null, members: [] } }), context, []),
  );
  t.is(mail.subject, 'Ghost, Jane Doe');
  t.is(mail.from?.value[0]?.name, 'Ghost');
  t.regex(mail.from?.value[0]?.address ?? '', /@pivot-archive\.invalid$/);
});

test('plugin headers are added when they are X- headers, and cannot replace the built-in ones', async (t) => {
  const mail = await simpleParser(
    buildMessage(item({ headers: { 'X-Desk': 'Rates\r\nBcc: x@y.z', 'X-Pivot-Item-Id': 'forged', Bcc: 'x@evil.example' } }), context, []),
  );
  t.is(mail.headers.get('x-desk'), 'Rates Bcc: x@y.z');
  t.is(mail.headers.get('x-pivot-item-id'), 'm_1001');
  t.is(mail.bcc, undefined);
});

// --- Internationalised addresses (RFC 6531/6532, IDN) ---

function headerValue(message: Buffer, name: string): string {
  const text = message.toString('utf8');
  const head = text.slice(0, text.indexOf('\r\n\r\n'));
  const match = new RegExp(`^${name}: ((?:.*)(?:\r\n[ \t].*)*)`, 'm').exec(head);
  return match![1]!.replace(/\r\n(?=[ \t])/g, '');
}

/** What mailparser reads in From and To, domains as written (decodePunycode off) and as simpleParser gives them. */
async function mailparserAddresses(message: Buffer): Promise<{ from: string[]; to: string[]; fromSimple: string[]; toSimple: string[] }> {
  const mail = await simpleParser(message);
  const list = (a: typeof mail.to) => (Array.isArray(a) ? a : a ? [a] : []).flatMap((x) => x.value.map((v) => v.address ?? ''));
  const raw = (name: string) => parseAddressHeader(headerValue(message, name), { decodePunycode: false }).value.map((v) => v.address ?? '');
  return { from: raw('From'), to: raw('To'), fromSimple: list(mail.from), toSimple: list(mail.to) };
}

/**
 * What Python's email package (policy=default) reads in From and To: from the bytes (8-bit
 * header bytes come back surrogate-escaped, undone here) and from the text decoded as UTF-8.
 */
function pythonAddresses(message: Buffer): { bytes: { from: string[]; to: string[] }; text: { from: string[]; to: string[] } } {
  const script = `
import email, json, sys
from email import policy
raw = sys.stdin.buffer.read()
def read(msg):
    fix = lambda s: s.encode('utf-8', 'surrogateescape').decode('utf-8')
    return {h.lower(): [fix(a.addr_spec) for a in msg[h].addresses] for h in ('From', 'To')}
print(json.dumps({'bytes': read(email.message_from_bytes(raw, policy=policy.default)),
                  'text': read(email.message_from_string(raw.decode('utf-8'), policy=policy.default))}))
`;
  return JSON.parse(execFileSync('python3', ['-c', script], { input: message }).toString());
}

test('an IDN domain makes a valid address, written with its A-label: the headers stay pure ASCII', async (t) => {
  const anna: User = { id: 'u_a', displayName: 'Anna Bücher', email: 'anna@BÜCHER.example' };
  const bob: User = { id: 'u_b', displayName: 'Bob', email: 'bob@xn--bcher-kva.example' };
  const message = buildMessage(item({ sender: anna, participants: [anna, bob, jane] }), context, []);
  t.true(/^[\x00-\x7f]*$/.test(message.toString('binary').split('\r\n\r\n')[0]!), 'headers are 7-bit');
  t.regex(headerValue(message, 'From'), /<anna@xn--bcher-kva\.example>$/);
  const parsed = await mailparserAddresses(message);
  t.deepEqual(parsed.from, ['anna@xn--bcher-kva.example']);
  t.deepEqual(parsed.to, ['bob@xn--bcher-kva.example', 'jane.doe@acme.example']);
  // simpleParser shows an IDN domain in Unicode: the same mailbox.
  t.deepEqual(parsed.toSimple, ['bob@bücher.example', 'jane.doe@acme.example']);
  const python = pythonAddresses(message);
  t.deepEqual(python.bytes, { from: ['anna@xn--bcher-kva.example'], to: ['bob@xn--bcher-kva.example', 'jane.doe@acme.example'] });
  t.false(/pivot-archive\.invalid/.test(headerValue(message, 'From') + headerValue(message, 'To')), 'no placeholder address');
});

test('a non-ASCII local part is written as RFC 6532 UTF-8, and mailparser and Python read it back exactly', async (t) => {
  const jurgen: User = { id: 'u_j', displayName: 'Jürgen\r\nBcc: victim@evil.example', email: ' Jürgen@Acme.Example ' };
  const yonghu: User = { id: 'u_y', displayName: '用户 "Q"', email: '用户@例子.广告' };
  const ascii: User = { id: 'u_x', displayName: 'Xavier', email: 'xavier@xn--fsqu00a.xn--4rr70v' };
  const message = buildMessage(item({ sender: jurgen, participants: [jurgen, yonghu, ascii, omar] }), context, []);
  const lines = headerLines(message);
  t.false(lines.some((l) => /^Bcc/i.test(l)), 'a display name cannot add a header');
  t.is(lines.filter((l) => /^(From|To):/.test(l)).length, 2);
  t.regex(headerValue(message, 'From'), /<Jürgen@acme\.example>$/, 'local part as given (NFC), domain lower-cased');
  t.true(headerValue(message, 'To').includes('<用户@例子.广告>'), 'UTF-8 local part with the Unicode domain');
  t.true(headerValue(message, 'To').includes('<xavier@xn--fsqu00a.xn--4rr70v>'), 'an ASCII local part keeps the A-label');
  const expected = { from: ['Jürgen@acme.example'], to: ['用户@例子.广告', 'xavier@xn--fsqu00a.xn--4rr70v', 'omar@acme.example'] };
  const parsed = await mailparserAddresses(message);
  t.deepEqual({ from: parsed.from, to: parsed.to }, expected);
  t.deepEqual(parsed.fromSimple, expected.from);
  const python = pythonAddresses(message);
  t.deepEqual(python.bytes, expected);
  t.deepEqual(python.text, expected);
  const mail = await simpleParser(message);
  t.is(mail.from?.value[0]?.name, 'Jürgen Bcc: victim@evil.example');
  t.is(mail.bcc, undefined);
  assertLineLengths(t, message);
});

test('long internationalised addresses and names keep every header line within 998 octets', async (t) => {
  const users: User[] = Array.from({ length: 40 }, (_, i) => ({
    id: `u_${i}`,
    displayName: `Jürgen 用户 ${'名'.repeat(100)} ${i}`,
    email: `${'ü'.repeat(30)}${i}@${'例'.repeat(15)}.${'子'.repeat(15)}.example`,
  }));
  const message = buildMessage(item({ sender: users[0]!, participants: users }), context, []);
  assertLineLengths(t, message);
  const parsed = await mailparserAddresses(message);
  t.is(parsed.to.length, 39);
  t.is(parsed.from[0], users[0]!.email!);
  t.deepEqual(pythonAddresses(message).bytes.to, users.slice(1).map((u) => u.email!));
});

test('malformed addresses stay invalid: the user appears by name with a placeholder address', async (t) => {
  const invalid = [
    'a b@acme.example', 'a@@acme.example', '@acme.example', 'jane@', 'a..b@acme.example', '.a@acme.example',
    'eve\r\nBcc: victim@evil.example', 'jürgen\u0000@acme.example', 'x@xn--zz.example', 'x@a/b.example',
    'x@exa mple.example', 'ü\u202E@acme.example', 'a"b@acme.example', 'x@acme', 'x@1.2.3.4', 'a\ufffd@acme.example',
    `${'ü'.repeat(33)}@acme.example`, 'not an address', '',
  ];
  for (const email of invalid) {
    t.is(canonicalMailbox(email), undefined, JSON.stringify(email));
    const ghost: User = { id: 'u_g', displayName: 'Ghost', email };
    const message = buildMessage(item({ sender: ghost, participants: [ghost, jane] }), context, []);
    t.regex(headerValue(message, 'From'), /^"Ghost" <pivot-user\.[0-9a-f]{16}@pivot-archive\.invalid>$/, JSON.stringify(email));
    t.true(/^[\x00-\x7f]*$/.test(message.toString('binary').split('\r\n\r\n')[0]!), 'headers are 7-bit');
    t.false(headerLines(message).some((l) => /^Bcc/i.test(l)));
  }
});

test('validEmail gives the mailbox key; needsSmtpUtf8 and hasUtf8Headers say when EAI is needed', (t) => {
  t.is(canonicalMailbox('anna@BÜCHER.example'), 'anna@xn--bcher-kva.example');
  t.is(canonicalMailbox('Jürgen@acme.example'), 'jürgen@acme.example');
  t.is(canonicalMailbox('Jane.Doe@ACME.example'), 'jane.doe@acme.example');
  t.true(needsSmtpUtf8('Jürgen@acme.example'));
  t.true(needsSmtpUtf8('用户@xn--fsqu00a.xn--4rr70v'));
  t.false(needsSmtpUtf8('anna@bücher.example'), 'an IDN domain alone has an ASCII form');
  t.false(needsSmtpUtf8('not an address'));
  const jurgen: User = { id: 'u_j', email: 'jürgen@acme.example' };
  t.true(mime.hasUtf8Headers(item({ participants: [jane, jurgen] })));
  t.true(mime.hasUtf8Headers(item({ sender: jurgen, participants: [jane] })));
  t.false(mime.hasUtf8Headers(item({ participants: [jane, { id: 'u_a', email: 'anna@bücher.example' }] })));
});
