// An export and its corrected re-delivery, for the tests of corrected versions: the same three
// events (same ids and sentAt) to two mailboxes, where `m_att`'s attachment bytes are missing the
// first time and present the second (`writeArchive(..., { ...CORRECTED_EXPORT, attachments })`).

export const MAILBOXES = ['jane@acme.example', 'omar@acme.example'];
const users = [
  { id: 'u_1', displayName: 'Jane', email: MAILBOXES[0] },
  { id: 'u_2', displayName: 'Omar', email: MAILBOXES[1] },
];
const conversations = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 'u_2'] }];
const event = (id: string, second: number, extra: Record<string, unknown> = {}) => ({ id, conversationId: 'c_1', type: 'message', sentAt: `2026-11-23T09:00:0${second}Z`, senderId: 'u_1', text: `text of ${id}`, ...extra });
const EVENTS = [event('m_1', 1), event('m_att', 2, { attachments: [{ id: 'a_1', fileName: 'report.pdf', contentType: 'application/pdf' }] }), event('m_3', 3)];

/** The export's users, conversations and messages file (its attachment's bytes left out). */
export const CORRECTED_EXPORT = { users, conversations, messages: { '0.json': EVENTS } };

/** The attachment's bytes: absent from the first export, present in the corrected one. */
export const ATTACHMENT_BYTES = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7919) % 251));
