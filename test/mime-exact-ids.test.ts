// X-Pivot-Item-Id, X-Pivot-Conversation-Id and X-Pivot-Export-Id give the ids exactly, read back
// by mailparser and by Python's email package, whatever spaces they start or end with.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import libmime from 'libmime';
import { simpleParser } from 'mailparser';
import type { Item, User } from '../src/model.js';
import { buildMessage } from '../src/transforms/mime/index.js';

const jane: User = { id: 'u_1', displayName: 'Jane Doe', email: 'jane.doe@acme.example' };
const omar: User = { id: 'u_2', displayName: 'Omar Haddad', email: 'omar@acme.example' };

function item(id: string): Item {
  return {
    id,
    type: 'message',
    sentAt: '2026-11-23T14:03:22.123Z',
    conversation: { id, type: 'room', name: 'Desk', members: ['u_1', 'u_2'] },
    sender: jane,
    text: 'hi',
    attachments: [],
    participants: [jane, omar],
    headers: {},
    raw: {},
    position: { file: 0, index: 0 },
  };
}

const HEADERS = ['x-pivot-item-id', 'x-pivot-conversation-id', 'x-pivot-export-id'];
const python =
  'import sys, json, email\nfrom email import policy\nm = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)\n' +
  `print(json.dumps([str(m[h]) for h in ${JSON.stringify(HEADERS)}]))`;

test('ids with a space at either end (m_1 and " m_1" are two events) come back exactly', async (t) => {
  for (const id of [' m_1', 'm_1 ', '  m_1  ', ' ', 'm_1']) {
    const message = buildMessage(item(id), { tenant: 'acme', exportId: id }, []);
    const mail = await simpleParser(message);
    // mailparser leaves an X- header's RFC 2047 words encoded: libmime decodes them.
    t.deepEqual(HEADERS.map((h) => libmime.decodeWords(String(mail.headers.get(h)))), [id, id, id], `mailparser, id ${JSON.stringify(id)}`);
    t.deepEqual(JSON.parse(execFileSync('python3', ['-c', python], { input: message }).toString()), [id, id, id], `Python, id ${JSON.stringify(id)}`);
  }
});
