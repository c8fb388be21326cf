// An independent, deliberately naive reading of the spec: whole-file JSON, sort everything by
// time. End-to-end tests compare the tool's output with what this computes.

interface Ev {
  id?: string;
  conversationId?: string;
  type?: string;
  sentAt?: string;
  senderId?: string;
  memberId?: string;
}

/** What the reference reads of users.json and conversations.json (as an independent parser gave them). */
export type ReferenceUsers = { id: string; email?: string | null }[];
export type ReferenceConversations = { id: string; members: string[] }[];

export function expectedPairs(
  users: ReferenceUsers,
  conversations: ReferenceConversations,
  files: unknown[][],
  options: { domains?: string[]; excluded?: Set<string> } = {},
): string[] {
  const emailOf = new Map(users.map((u) => [u.id, u.email]));
  const events: { ev: Ev; order: number }[] = [];
  files.forEach((file, f) => file.forEach((ev, i) => events.push({ ev: ev as Ev, order: f * 1e9 + i })));
  const time = (e: Ev) => Date.parse(e.sentAt ?? '');
  // Digits past the millisecond order events within one (Date.parse drops them).
  const beyondMs = (e: Ev) => Number(`0.${/\.\d{3}(\d+)/.exec(e.sentAt ?? '')?.[1] ?? '0'}`);
  const compare = (a: Ev, b: Ev) => time(a) - time(b) || beyondMs(a) - beyondMs(b);
  const out: string[] = [];
  for (const { ev, order } of events) {
    if (!ev.id || !ev.sentAt || !ev.type || Number.isNaN(time(ev)) || options.excluded?.has(ev.id)) continue;
    const conversation = conversations.find((c) => c.id === ev.conversationId);
    if (!conversation || !emailOf.has(ev.senderId!)) continue;
    const members = new Set(conversation.members);
    const earlier = events
      .filter(({ ev: o }) => o.conversationId === ev.conversationId && (o.type === 'join' || o.type === 'leave'))
      // At the very same time, only a change earlier in the same file is before it (a file is in sentAt order).
      .filter(({ ev: o, order: oo }) => compare(o, ev) < 0 || (compare(o, ev) === 0 && oo < order && Math.floor(oo / 1e9) === Math.floor(order / 1e9)))
      .sort((a, b) => compare(a.ev, b.ev) || a.order - b.order);
    for (const { ev: o } of earlier) {
      const who = o.memberId ?? o.senderId!;
      if (o.type === 'join') members.add(who);
      else members.delete(who);
    }
    members.add(ev.senderId!);
    if (ev.type === 'join' || ev.type === 'leave') members.add(ev.memberId ?? ev.senderId!);
    const mailboxes = new Set<string>();
    for (const id of members) {
      const email = emailOf.get(id);
      if (typeof email !== 'string' || !/^[^@\s]+@[^@\s]+\.[a-z]+$/i.test(email)) continue;
      const mailbox = email.toLowerCase();
      if (options.domains && !options.domains.includes(mailbox.split('@')[1]!)) continue;
      mailboxes.add(mailbox);
    }
    for (const mailbox of mailboxes) out.push(`${mailbox} ${ev.id}`);
  }
  return out.sort();
}
