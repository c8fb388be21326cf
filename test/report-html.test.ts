import test from 'ava';
import { BANNER_COLOURS, REPORT_CSP, escapeHtml, renderReport, type ReportMeta } from '../src/report/html.js';
import type { ExportAccount } from '../src/ledger/account.js';
import { EXPORT_ID, HOSTILE, RUN_IDS, SHA, reportFixture } from './helpers/report-account.js';
import { PYTHON_MISSING, needingTools, parseHtmlIndependently, type ParsedHtml } from './helpers/report-tools.js';

const META: ReportMeta = { generatedAt: '2026-11-24T08:00:00.000Z', tool: 'pivot-archive 0.2.0' };

/** A number as the report prints it. */
const n = (v: number) => v.toLocaleString('en-US');
/** Text from the data as the report shows it: invisible and bidi characters as a visible marker. */
const shown = (s: string) => s.replace(/[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u061C\u200B-\u200F\u2028-\u202E\u2060-\u2069\uFEFF]/g, (c) => `⟨U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}⟩`);

test('escapeHtml: markup, quotes and & become text; bidi and control characters a visible marker', (t) => {
  t.is(escapeHtml(`<a href="x" title='y'>&amp;</a>`), '&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;');
  t.is(escapeHtml('a\u202Eb'), 'a<span class="ctl">⟨U+202E⟩</span>b');
  t.is(escapeHtml('x\u0000y\u200Bz'), 'x<span class="ctl">⟨U+0000⟩</span>y<span class="ctl">⟨U+200B⟩</span>z');
  t.is(escapeHtml('tab\tand\nline feed stay; é, 日本, 😀 too'), 'tab\tand\nline feed stay; é, 日本, 😀 too');
  t.is(escapeHtml('lone \uD800 surrogate'), 'lone <span class="ctl">⟨U+D800⟩</span> surrogate');
  t.is(escapeHtml(undefined), '');
});

test('the document is HTML5 with the restrictive CSP first in its head, and no script, URL or external asset in its source', (t) => {
  const { account, ledger } = reportFixture({ failed: true });
  const html = renderReport(account, ledger, META);
  t.true(html.startsWith('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'));
  t.true(html.includes(`<meta http-equiv="Content-Security-Policy" content="${REPORT_CSP}">`));
  t.is(REPORT_CSP, "default-src 'none'; style-src 'unsafe-inline'; img-src data:");
  t.false(/<script/i.test(html), 'no script element');
  t.false(/url\(|@import|<link|<iframe|<object|<embed|<img/i.test(html), 'no external asset of any kind');
  t.false(/<[^<>]*\s(src|href|action|xmlns|srcset)\s*=\s*["']?(https?:|\/\/)/i.test(html), 'no URL in an attribute');
  t.true(html.includes('&lt;img src=http://evil.example/x.png onerror=alert(1)&gt;'), 'a hostile detail is escaped text');
  t.false(html.includes('\u202E'), 'no raw bidi override');
});

needingTools('report HTML (Python html.parser)', [PYTHON_MISSING], () => {
  async function parsed(account: ExportAccount, ledger = reportFixture().ledger, meta = META): Promise<ParsedHtml> {
    const doc = await parseHtmlIndependently(renderReport(account, ledger, meta));
    return doc;
  }

  function assertSafe(t: import('ava').ExecutionContext, doc: ParsedHtml): void {
    t.deepEqual(doc.errors, [], 'every element closed in order');
    t.is(doc.doctype, 'DOCTYPE html');
    const tags = new Set(doc.tags);
    for (const tag of ['script', 'iframe', 'object', 'embed', 'img', 'link', 'base', 'form', 'b', 'frame', 'audio', 'video']) t.false(tags.has(tag), `no <${tag}>`);
    for (const [tag, name, value] of doc.attrs) {
      t.false(name.startsWith('on'), `no event handler attribute (${tag} ${name})`);
      if (['src', 'href', 'action', 'xlink:href', 'srcset', 'poster', 'formaction'].includes(name)) t.regex(value ?? '', /^(#[a-z-]+|data:)/, `${tag} ${name}=${value} is not external`);
      t.notRegex(value ?? '', /https?:|\/\/|javascript:/i, `${tag} ${name}=${value}`);
    }
    const csp = doc.attrs.filter(([tag, name, value]) => tag === 'meta' && name === 'http-equiv' && value === 'Content-Security-Policy');
    t.is(csp.length, 1);
    t.true(doc.attrs.some(([tag, name, value]) => tag === 'meta' && name === 'content' && value === REPORT_CSP));
  }

  test('counters, runs, mailboxes, rejects, problems and the ledger are in their cells (Python html.parser)', async (t) => {
    const { account, ledger } = reportFixture({ failed: true });
    const doc = await parsed(account, ledger);
    assertSafe(t, doc);
    const k = doc.keyed;
    t.is(doc.title, `Export ${EXPORT_ID}: INCOMPLETE`);
    t.is(k.verdict, 'INCOMPLETE');
    t.is(k.exportId, EXPORT_ID);
    t.is(k['export.sha256'], SHA);
    t.is(k['export.events'], n(account.eventsInArchive!));
    // The equations, term by term, and that they add up.
    t.is(k['items.inArchive'], n(account.items.inArchive!));
    t.is(k['items.rejectedKept'], n(account.items.rejectedKept));
    t.is(k['items.rejectedNotKept'], n(account.items.rejectedNotKept));
    t.is(k['items.routed'], n(account.items.routed));
    t.is(k['items.notYetRead'], '0');
    t.is(account.items.inArchive, account.items.rejectedKept + account.items.rejectedNotKept + account.items.routed);
    t.regex(k['items.check']!, /^✓ Adds up: 10 \+ 1 \+ 1,187 \+ 0 = 1,198\.$/);
    t.is(k['pairs.total'], n(account.pairs.total));
    t.is(k['pairs.delivered'], n(account.pairs.delivered));
    t.is(k['pairs.skipped'], '0');
    t.is(k['pairs.failed'], '2');
    t.regex(k['pairs.check']!, new RegExp(`^✓ Adds up: ${n(account.pairs.delivered)} \\+ 0 \\+ 2 = ${n(account.pairs.total)}\\.$`));

    // Runs: the killed one has no end and no exit code; the hostile host is text.
    const runs = doc.tables['runs-table']!;
    t.deepEqual(runs[0]!.slice(0, 4), ['Run', 'Command', 'Host', 'Started']);
    t.is(runs.length, 1 + account.runs.length);
    t.deepEqual(runs[1], [RUN_IDS[0], 'run', 'archive01', '2026-11-24T02:00:00.120Z', '—', 'no summary (killed, or its records could not be written)', '—', '—', `${SHA.slice(0, 12)}…`, n(account.runs[0]!.delivered), '0', '0', n(account.runs[0]!.rejected)]);
    t.deepEqual(runs[2]!.slice(0, 8), [RUN_IDS[1], 'run', HOSTILE.host, '2026-11-24T02:38:02.877Z', '2026-11-24T02:41:10.005Z', 'finished (summary)', '1', '2 (mailbox, item) pairs failed: ENOSPC']);

    // Mailboxes: one row each, in order, with its counts, and a total row that matches the pairs.
    const rows = doc.tables['mailboxes-table']!;
    t.is(rows.length, 1 + 30 + 1);
    account.mailboxes.forEach((m, i) => t.deepEqual(rows[i + 1], [shown(m.mailbox), n(m.delivered), n(m.skipped), n(m.failed), m.runs.join(', ')]));
    t.deepEqual(rows[31], ['All mailboxes', n(account.pairs.delivered), '0', '2', '']);
    t.true(rows.some((r) => r[0] === HOSTILE.mailbox), 'the hostile mailbox is shown as its text');

    // Rejects by reason: most first, then by name; the total.
    const reasons = doc.tables['reasons-table']!;
    t.deepEqual(reasons.slice(1, 4), [['unmapped', '4'], ['oversize', '3'], ['duplicate-id', '1']]);
    t.true(reasons.some((r) => r[0] === HOSTILE.reason && r[1] === '1'));
    t.deepEqual(reasons[reasons.length - 1], ['All reasons', '11']);

    // Every rejected and failed item: rejected first, by reason; the hostile one exactly as text.
    const problems = doc.tables['problems-table']!;
    t.is(problems.length, 1 + account.problems.length);
    t.deepEqual(problems[0], ['Outcome', 'Reason', 'Item', 'Conversation', 'Mailbox', 'Detail', 'Original kept at', 'Run', 'At']);
    t.deepEqual(problems[1], ['rejected', 'invalid-field:sentAt', shown(HOSTILE.itemId), 'c_0097', '—', HOSTILE.detail, HOSTILE.kept, RUN_IDS[1], '2026-11-24T02:39:50.120Z']);
    t.true(shown(HOSTILE.itemId).includes('m_<script>alert("x")</script>&amp;\'"⟨U+202E⟩gnp.exe'));
    const notKept = problems.find((r) => r[1] === 'not-kept')!;
    t.deepEqual([notKept[0], notKept[2], notKept[6]], ['failed', 'm_200077', 'not kept']);
    const failed = problems.filter((r) => r[1] === 'sink-error');
    t.deepEqual(failed.map((r) => [r[0], r[4], r[6]]), [['failed', 'carla.rossi@acme.example', '—'], ['failed', 'dev.patel@acme.example', '—']]);
    t.deepEqual(problems.slice(1).map((r) => r[0]), [...Array(10).fill('rejected'), 'failed', 'failed', 'failed']);
    t.is(k['problems.split'], '10 rejected items kept in the rejects folder, 1 rejected item that could not be kept, 2 failed (mailbox, item) pairs. Rejected items reach no mailbox; a failed pair did not reach its mailbox.');

    // The ledger.
    t.is(k['ledger.head'], ledger.head);
    t.is(k['ledger.records'], n(ledger.records));
    t.is(k['ledger.checkpoints'], '1');
    t.regex(k['ledger.signature']!, /^verified/);
    t.regex(k['ledger.chain']!, /^intact/);
    t.is(k['ledger.path'], ledger.path);
    t.is(k['ledger.verdict'], 'The ledger passes its check.');

    // Hostile strings are text: present in the text, absent as markup.
    for (const s of [HOSTILE.detail, HOSTILE.kept, HOSTILE.host, HOSTILE.reason, HOSTILE.mailbox]) t.true(doc.text.includes(s), s);
    t.false(doc.text.includes('\u202E'));
  });

  test('the banner: COMPLETE when everything is accounted for and the ledger holds; why not otherwise', async (t) => {
    const ok = reportFixture();
    t.true(ok.account.complete);
    const good = await parsed(ok.account, ok.ledger);
    t.is(good.keyed.verdict, 'COMPLETE');
    t.true(good.attrs.some(([tag, name, value]) => tag === 'div' && name === 'class' && value === 'banner complete'));
    t.is(good.keyed.ledgerVerdict, `Ledger: chain intact, ${n(ok.ledger.records)} records, signature verified.`);
    t.is(good.tables['problems-table']!.length, 1 + 11);
    t.false('archiveChanged' in good.keyed);

    const bad = await parsed(reportFixture({ failed: true }).account);
    t.is(bad.keyed.verdict, 'INCOMPLETE');
    t.true(bad.attrs.some(([tag, name, value]) => tag === 'div' && name === 'class' && value === 'banner incomplete'));
    t.true(bad.text.includes('2 (mailbox, item) pairs failed.'));
    t.true(bad.text.includes('1 rejected item could not be kept.'));

    // Complete by its counters, but the ledger fails its check: a red banner that says so.
    const broken = await parsed(ok.account, { ...ok.ledger, chainIntact: false, signature: 'failed', unsealed: 4, problems: ['line 1,207: its prev hash is not the hash of line 1,206 <edited>'] });
    t.is(broken.keyed.verdict, 'NOT PROVEN');
    t.true(broken.attrs.some(([tag, name, value]) => tag === 'div' && name === 'class' && value === 'banner incomplete'));
    t.regex(broken.keyed.ledgerVerdict!, /^Ledger FAILS its check: chain BROKEN, signature FAILED, 1 problem: these numbers cannot be relied on/);
    t.is(broken.keyed['ledger.verdict'], 'The ledger FAILS its check.');
    t.regex(broken.keyed['ledger.signature']!, /^FAILED/);
    t.regex(broken.keyed['ledger.unsealed']!, /^4 \(not covered by a signature/);
    t.deepEqual(broken.tables['ledger-problems'], [['Problems the check found'], ['line 1,207: its prev hash is not the hash of line 1,206 <edited>']]);

    for (const signature of ['unsigned', 'not checked'] as const) {
      const doc = await parsed(ok.account, { ...ok.ledger, signature });
      t.is(doc.keyed['ledger.signature']!.split(/[ :]/)[0], signature.split(' ')[0]);
    }
  });

  test('an archive that changed between runs is a warning, and its runs show which content they read', async (t) => {
    const { account, ledger } = reportFixture({ archiveChanged: true });
    const doc = await parsed(account, ledger);
    t.regex(doc.keyed.archiveChanged!, /^The archive changed between runs: its runs read 2 different contents/);
    t.is(doc.keyed['export.sha256'], `${account.sha256s[0]} ${account.sha256s[1]}`);
    t.is(doc.tables['runs-table']![2]![8], `${'beef'.padEnd(12, '1')}…`);
    t.true(doc.attrs.some(([tag, name, value]) => tag === 'td' && name === 'class' && value === 'mono bad'));
  });

  test('counters that do not add up, and an archive never read to the end, say so', async (t) => {
    const { account, ledger } = reportFixture();
    const off = await parsed({ ...account, balanced: false, items: { ...account.items, routed: account.items.routed - 3 }, pairs: { ...account.pairs, total: account.pairs.total + 1 } }, ledger);
    t.is(off.keyed.verdict, 'INCOMPLETE');
    t.is(off.keyed['items.check'], `✗ Does not add up: the terms make ${n(account.items.inArchive! - 3)}, the archive holds ${n(account.items.inArchive!)} (a difference of 3).`);
    t.is(off.keyed['pairs.check'], `✗ Does not add up: the terms make ${n(account.pairs.total)}, ${n(account.pairs.total + 1)} pairs were routed (a difference of 1).`);
    t.true(off.text.includes('The counters do not add up'));

    const unread = await parsed({ ...account, complete: false, items: { ...account.items, inArchive: undefined, notYetRead: undefined } }, ledger);
    t.is(unread.keyed['items.inArchive'], '—');
    t.is(unread.keyed['items.notYetRead'], '—');
    t.regex(unread.keyed['items.check']!, /^The archive's item count is not known/);
    t.true(unread.text.includes('no run read it to the end'));

    const notYet = await parsed({ ...account, complete: false, items: { ...account.items, routed: account.items.routed - 40, notYetRead: 40 } }, ledger);
    t.true(notYet.text.includes('40 items of the archive not read by any run yet.'));
    t.is(notYet.keyed['items.notYetRead'], '40');
  });

  test('the chart has a bar per hour with items, and its numbers are in a table that adds up to the items', async (t) => {
    const { account, ledger } = reportFixture({ failed: true });
    const doc = await parsed(account, ledger);
    const bars = doc.attrs.filter(([tag, name, value]) => tag === 'rect' && name === 'fill' && value !== '#ffffff');
    const kinds = account.hours.reduce((s, h) => s + (h.delivered > 0 ? 1 : 0) + (h.rejected > 0 ? 1 : 0) + (h.failed > 0 ? 1 : 0), 0);
    t.is(bars.length, kinds);
    t.true(doc.tags.includes('svg'));
    const hours = doc.tables.hours!;
    t.is(hours.length, 1 + account.hours.length);
    const sum = (col: number) => hours.slice(1).reduce((s, r) => s + Number(r[col]!.replace(/,/g, '')), 0);
    t.is(sum(1), account.pairs.delivered);
    t.is(sum(2), 11);
    t.is(sum(3), 2);
    // Hours across midnight: every hour between is a slot; an hour that is not one is left out.
    const late = await parsed({ ...account, hours: [{ hour: '2026-11-23T22', delivered: 5, rejected: 1, failed: 0 }, { hour: '<b>x</b>', delivered: 9, rejected: 0, failed: 0 }, { hour: '2026-11-24T02', delivered: 3, rejected: 0, failed: 2 }] }, ledger);
    t.deepEqual(late.tables.hours, [['Hour (UTC)', 'Delivered', 'Rejected', 'Failed'], ['2026-11-23T22:00', '5', '1', '0'], ['2026-11-24T02:00', '3', '0', '2']]);
    t.is(late.attrs.filter(([tag, name, value]) => tag === 'rect' && name === 'fill' && value !== '#ffffff').length, 4);
    t.true(late.text.includes('2026-11-23') && late.text.includes('2026-11-24'), 'both days are named under the axis');
    const empty = await parsed({ ...account, hours: [] }, ledger);
    t.false(empty.tags.includes('svg'));
    t.true(empty.text.includes('No item has a recorded time.'));
  });

  test('an export id from a hostile archive is text in the title and the heading too', async (t) => {
    const { account, ledger } = reportFixture();
    const doc = await parsed({ ...account, exportId: 'acme</title><script>x()</script>\u202E"' }, ledger);
    assertSafe(t, doc);
    t.is(doc.title, 'Export acme</title><script>x()</script>⟨U+202E⟩": COMPLETE');
    t.is(doc.keyed.exportId, 'acme</title><script>x()</script>⟨U+202E⟩"');
  });

  test('a long list of problem items stops at the limit and says how many more the CSV holds', async (t) => {
    const { account, ledger } = reportFixture({ failed: true });
    const doc = await parsed(account, ledger, { ...META, maxItemRows: 5 });
    t.is(doc.tables['problems-table']!.length, 1 + 5);
    t.is(doc.keyed['problems.more'], '… and 8 more items not listed here: every one is in the CSV item list (report --csv FILE).');
    const named = await parsed(account, ledger, { ...META, maxItemRows: 12, csv: 'items-<1>.csv' });
    t.is(named.keyed['problems.more'], '… and 1 more item not listed here: every one is in the CSV item list items-<1>.csv.');
    const all = await parsed(account, ledger);
    t.false('problems.more' in all.keyed);
  });

  test('large exports: the size grows linearly, the item list stops at 5,000 rows, and rendering time grows linearly', async (t) => {
    const small = reportFixture({ mailboxes: 2000, extraRejects: 20_000 });
    const large = reportFixture({ mailboxes: 4000, extraRejects: 40_000 });
    const a = renderReport(small.account, small.ledger, META);
    const b = renderReport(large.account, large.ledger, META);
    // The item list is capped, so the mailboxes drive the size: twice the mailboxes, about twice the size over a fixed part.
    const base = renderReport({ ...small.account, mailboxes: [] }, small.ledger, META).length;
    const ratio = (b.length - base) / (a.length - base);
    t.true(ratio > 1.9 && ratio < 2.1, `size ratio ${ratio.toFixed(3)} (${a.length} -> ${b.length} bytes)`);
    // Sixteen times the mailboxes and items (the list uncapped, so every item is rendered): linear
    // is at most 16 times the time, quadratic 256. The process's CPU time, not the clock's: on a loaded
    // host (CI beside other work) a render waits for a core, measured up to 5 times its time. The
    // rounds alternate the two sizes, and the quickest of each is compared.
    const uncapped = { ...META, maxItemRows: Infinity };
    const one = reportFixture({ mailboxes: 250, extraRejects: 2_500 });
    const sixteen = reportFixture({ mailboxes: 4000, extraRejects: 40_000 });
    const ms = (f: typeof one) => {
      const started = process.cpuUsage();
      renderReport(f.account, f.ledger, uncapped);
      const used = process.cpuUsage(started);
      return (used.user + used.system) / 1e3;
    };
    let [oneMs, sixteenMs] = [Infinity, Infinity];
    for (let round = 0; round < 5; round++) [oneMs, sixteenMs] = [Math.min(oneMs, ms(one)), Math.min(sixteenMs, ms(sixteen))];
    t.true(sixteenMs / oneMs < 40, `rendered in ${oneMs.toFixed(1)} ms of CPU, then ${sixteenMs.toFixed(0)} ms for sixteen times the input`);
    t.log(`250 mailboxes + 2,511 items: ${oneMs.toFixed(1)} ms; 4,000 + 40,011: ${sixteenMs.toFixed(0)} ms (CPU, quickest of 5, uncapped)`);
    const doc = await parseHtmlIndependently(b);
    t.deepEqual(doc.errors, []);
    t.is(doc.tables['mailboxes-table']!.length, 1 + 4000 + 1);
    t.is(doc.tables['problems-table']!.length, 1 + 5000);
    t.is(doc.keyed['problems.more'], `… and ${n(40_011 - 5000)} more items not listed here: every one is in the CSV item list (report --csv FILE).`);
    t.is(doc.keyed['rejects.total'], n(40_011));

    // Uncapped, the item list grows linearly too.
    const all = { ...META, maxItemRows: Infinity };
    const [x, y] = [reportFixture({ extraRejects: 20_000 }), reportFixture({ extraRejects: 40_000 })].map((f) => renderReport(f.account, f.ledger, all).length);
    const none = renderReport({ ...small.account, mailboxes: [], problems: [] }, small.ledger, all).length;
    const listRatio = (y! - none) / (x! - none);
    t.true(listRatio > 1.9 && listRatio < 2.1, `item list size ratio ${listRatio.toFixed(3)}`);
  });
});

test('the banner colours are the ones the rendering test looks for', (t) => {
  t.deepEqual(BANNER_COLOURS, { complete: '#1f7a3a', incomplete: '#b42318', part: '#8a5a00' });
});
