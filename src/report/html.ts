/**
 * `report`: one export's account as a self-contained HTML5 document an auditor can read and keep.
 *
 * No network and nothing that runs: inline CSS, an inline SVG chart, no script, no external
 * asset, and a Content-Security-Policy that forbids loading anything but inline styles and
 * `data:` images. Everything that comes from the data (item ids, details, mailbox and file
 * names come from archives we do not trust) is HTML-escaped and only ever placed in element
 * text, never in an attribute; invisible and direction-changing characters (bidi overrides
 * such as U+202E, zero-width characters, C0/C1 controls) are shown as a visible `⟨U+202E⟩`
 * marker so that a hostile id cannot display as something it is not (the CSV item list keeps
 * the exact values). The document is built from a list of chunks joined once, so its size
 * and the time to build it grow linearly with the data; the list of rejected and failed items
 * stops after `maxItemRows` rows and says how many more the CSV holds.
 */
import type { ExportAccount, ItemProblem, LedgerCheck, MailboxAccount, ProblemCount, RunOfExport } from '../ledger/account.js';
import { visibleKeepingWhiteSpace } from '../formats/one-line.js';

export interface ReportMeta {
  /** When the report was made (ISO 8601). */
  generatedAt: string;
  /** The tool and its version, e.g. `pivot-archive 0.2.0`. */
  tool: string;
  /**
   * Rows of the rejected-and-failed list before it stops and points at the CSV (default 5,000). An
   * account read from the ledger (`exportAccount`) lists at most PROBLEMS_LISTED (5,000) rejected
   * items and as many failed pairs, to keep its memory bounded: more rows than it lists are never
   * shown, whatever this says (the "and N more" line counts the rest, which the CSV holds).
   */
  maxItemRows?: number;
  /** The CSV item list written with this report (its file name), if any. */
  csv?: string;
}

/** The Content-Security-Policy the document carries: nothing loads, nothing runs. */
export const REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/** The banner's background colours (the rendering test looks for them in the screenshot); `part`: one shard's part, accounted for. */
export const BANNER_COLOURS = { complete: '#1f7a3a', incomplete: '#b42318', part: '#8a5a00' } as const;

const DEFAULT_MAX_ITEM_ROWS = 5000;

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text from the data for an element's content (never used for attributes). */
export function escapeHtml(value: unknown): string {
  const s = value === undefined || value === null ? '' : String(value);
  return visibleKeepingWhiteSpace(s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!), (marker) => `<span class="ctl">${marker}</span>`);
}

/** The same, with the marker as bare text: for `<title>` (which holds no markup) and SVG. */
function escapePlain(value: unknown): string {
  const s = value === undefined || value === null ? '' : String(value);
  return visibleKeepingWhiteSpace(s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!));
}

/** 1234567 -> `1,234,567` (no locale data needed). */
function num(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '—';
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${num(n)} ${n === 1 ? one : many}`;
}

/** An ISO 8601 time from the data, allowed to wrap after its `T` (the text stays the same). */
function time(value: string | undefined): string {
  return value ? cell(value).replace(/^(\d{4}-\d\d-\d\d)T/, '$1T<wbr>') : cell(value);
}

/** Column widths (percent) of a fixed-layout table. */
function cols(widths: number[]): string {
  return `<colgroup>${widths.map((w) => `<col style="width:${w}%">`).join('')}</colgroup>`;
}

/** Text from the data, or a dash when there is none. */
function cell(value: unknown): string {
  return value === undefined || value === null || value === '' ? '<span class="none">—</span>' : escapeHtml(value);
}

const STYLE = `
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; background: #ffffff; color: #1b1f24; font: 14px/1.45 "DejaVu Sans", "Liberation Sans", Arial, Helvetica, sans-serif; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 2px solid #d0d7de; }
p.meta { margin: 0 0 16px; color: #57606a; }
.banner { padding: 14px 20px; border-radius: 6px; color: #ffffff; margin: 12px 0 8px; }
.banner.complete { background: ${BANNER_COLOURS.complete}; }
.banner.incomplete { background: ${BANNER_COLOURS.incomplete}; }
.banner.part { background: ${BANNER_COLOURS.part}; }
.banner .verdict { font-size: 26px; font-weight: bold; letter-spacing: 0.06em; display: block; }
.banner ul { margin: 6px 0 0; padding-left: 20px; }
.warning { background: #fff4e5; border-left: 5px solid #d97706; padding: 8px 12px; margin: 8px 0; }
.bad { color: #b42318; font-weight: bold; }
.good { color: #1f7a3a; font-weight: bold; }
table { border-collapse: collapse; margin: 6px 0 12px; width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; unicode-bidi: isolate; }
th { background: #f3f4f6; font-weight: 600; }
thead { display: table-header-group; }
tr { page-break-inside: avoid; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { width: 220px; }
.mono { font-family: "DejaVu Sans Mono", "Liberation Mono", Consolas, monospace; font-size: 12px; overflow-wrap: anywhere; }
table.fixed { table-layout: fixed; font-size: 13px; }
table.fixed td, table.fixed th { overflow-wrap: anywhere; }
tr.killed td, tr.failure td { background: #fff1f0; }
tr.failed td { background: #fff7f6; }
.none { color: #8c959f; }
.ctl { color: #b42318; background: #fff1f0; border: 1px solid #f5b5ae; border-radius: 3px; font-size: 11px; padding: 0 2px; }
.eq { display: flex; flex-wrap: wrap; align-items: stretch; gap: 6px; margin: 8px 0 4px; }
.eq .term { border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 12px; min-width: 120px; background: #f8fafc; }
.eq .term.total { background: #eef2ff; border-color: #a5b4fc; }
.eq .term .n { display: block; font-size: 22px; font-weight: bold; font-variant-numeric: tabular-nums; }
.eq .term .l { display: block; color: #57606a; font-size: 12px; }
.eq .op { align-self: center; font-size: 24px; font-weight: bold; padding: 0 2px; }
.check { margin: 0 0 14px; }
.legend span { display: inline-block; margin-right: 16px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 5px; vertical-align: -1px; }
.more { font-style: italic; }
footer { margin-top: 40px; color: #57606a; font-size: 12px; border-top: 1px solid #d0d7de; padding-top: 8px; }
@media print { body { padding: 0; } h2 { page-break-after: avoid; } .banner { -webkit-print-color-adjust: exact; print-color-adjust: exact; } }
`;

const CHART_COLOURS = { delivered: '#4c9a5f', rejected: '#e0a030', failed: '#c4453c' } as const;

/** Renders the report. `meta.generatedAt` and `meta.tool` are shown as given. */
export function renderReport(account: ExportAccount, ledger: LedgerCheck, meta: ReportMeta): string {
  const out: string[] = [];
  const ledgerOk = ledger.chainIntact && ledger.signature !== 'failed' && ledger.problems.length === 0;
  // One shard's ledger: at best its part is accounted for; the export is the union of every shard's (status --state-dir ...).
  const shard = account.shard;
  const complete = (shard ? account.shardComplete === true : account.complete) && account.balanced;
  // Counters that add up prove nothing when the ledger they come from fails its check.
  const verdict = !complete ? 'INCOMPLETE' : !ledgerOk ? 'NOT PROVEN' : shard ? `SHARD ${shard}'S PART ONLY` : 'COMPLETE';
  const title = shard ? `Export ${escapePlain(account.exportId)}, shard ${escapePlain(shard)}'s part only (not the whole export): ${complete && ledgerOk ? 'part accounted for' : verdict}` : `Export ${escapePlain(account.exportId)}: ${verdict}`;

  out.push(
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
    `<meta http-equiv="Content-Security-Policy" content="${REPORT_CSP}">\n`,
    '<meta name="referrer" content="no-referrer">\n',
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
    `<title>${title}</title>\n`,
    `<style>${STYLE}</style>\n</head>\n<body>\n`,
    `<h1>Archive report: export <span data-k="exportId">${escapeHtml(account.exportId)}</span></h1>\n`,
    `<p class="meta">Generated <span data-k="generatedAt">${escapeHtml(meta.generatedAt)}</span> by <span data-k="tool">${escapeHtml(meta.tool)}</span> from the ledger <span class="mono">${escapeHtml(ledger.path)}</span>. All times are as recorded (UTC).</p>\n`,
  );

  banner(out, account, ledger, complete, verdict, ledgerOk);
  exportSection(out, account);
  countersSection(out, account);
  chartSection(out, account);
  runsSection(out, account.runs, account.sha256s);
  mailboxesSection(out, account.mailboxes);
  reasonsSection(out, account);
  problemsSection(out, account.problems, account.problemCount, meta);
  ledgerSection(out, ledger, ledgerOk);

  out.push(
    `<footer>${escapeHtml(meta.tool)} · report of export ${escapeHtml(account.exportId)} · generated ${escapeHtml(meta.generatedAt)}. `,
    'This file is self-contained: it loads nothing and runs nothing (Content-Security-Policy: ',
    `${escapeHtml(REPORT_CSP)}).</footer>\n</body>\n</html>\n`,
  );
  return out.join('');
}

const SIGNATURE: Record<LedgerCheck['signature'], string> = {
  verified: 'signature verified',
  failed: 'signature FAILED',
  unsigned: 'checkpoints not signed',
  'not checked': 'signature not checked (no public key given)',
};

/** `complete`: the export, or with `a.shard` that shard's part. */
function banner(out: string[], a: ExportAccount, ledger: LedgerCheck, complete: boolean, verdict: string, ledgerOk: boolean): void {
  const why: string[] = [];
  if (a.shard) {
    why.push(
      `This is shard ${escapeHtml(a.shard)}'s part of the export only: its ledger records the pairs of its own mailboxes and counts the other shards' items without recording them, so it cannot show the export complete. ` +
        `The export as a whole: combine every shard's state dir with <code>status --state-dir DIR1 --state-dir DIR2 ... --export ${escapeHtml(a.exportId)}</code>.`,
    );
  }
  if (complete && a.shard) {
    why.push(`Shard ${escapeHtml(a.shard)}'s part is accounted for: every pair of its mailboxes delivered or already there, nothing failed, the archive read to its end.`);
  } else if (complete) {
    why.push('Every item of the archive is accounted for: delivered, already in its mailbox, or rejected for a stated reason and kept. Nothing failed.');
  } else {
    if (!a.balanced) why.push('The counters do not add up (see <a href="#counters">Counters</a>).');
    if (a.items.inArchive === undefined) why.push('The number of items in the archive is not known: no run read it to the end.');
    if ((a.items.notYetRead ?? 0) > 0) why.push(`${plural(a.items.notYetRead!, 'item')} of the archive not read by any run yet.`);
    if ((a.items.entriesNotRead ?? 0) > 0) why.push(`${plural(a.items.entriesNotRead!, 'archive entry', 'archive entries')} named like a messages file not read: their events are counted nowhere.`);
    if (a.pairs.failed > 0) why.push(`${plural(a.pairs.failed, '(mailbox, item) pair')} failed.`);
    if (a.items.rejectedNotKept > 0) why.push(`${plural(a.items.rejectedNotKept, 'rejected item')} could not be kept.`);
    if ((a.items.failedInShards ?? 0) > 0) why.push(`${plural(a.items.failedInShards!, 'item')} a plugin failed on in a sharded run: that shard's copies are in no mailbox and no rejects folder (run that shard again once the plugin works).`);
    if (why.length === (a.shard ? 1 : 0)) why.push('The account is not complete.');
  }
  const signature = SIGNATURE[ledger.signature] ?? `signature ${escapeHtml(ledger.signature)}`;
  const ledgerLine = ledgerOk
    ? `Ledger: chain intact, ${plural(ledger.records, 'record')}, ${signature}${ledger.unsealed > 0 ? `, ${plural(ledger.unsealed, 'record')} after the last checkpoint` : ''}.`
    : `Ledger FAILS its check: ${ledger.chainIntact ? 'chain intact' : 'chain BROKEN'}, ${signature}${ledger.problems.length ? `, ${plural(ledger.problems.length, 'problem')}` : ''}: these numbers cannot be relied on (see <a href="#ledger">Ledger</a>).`;
  out.push(
    `<div id="banner" class="banner ${!complete || !ledgerOk ? 'incomplete' : a.shard ? 'part' : 'complete'}">`,
    `<span class="verdict" data-k="verdict">${verdict}</span><ul>`,
    ...why.map((w) => `<li>${w}</li>`),
    `<li data-k="ledgerVerdict">${ledgerLine}</li></ul></div>\n`,
  );
}

function exportSection(out: string[], a: ExportAccount): void {
  out.push('<h2 id="export">Export and archive</h2>\n');
  if (a.sha256s.length > 1) {
    out.push(
      `<p class="warning" data-k="archiveChanged"><strong>The archive changed between runs:</strong> its runs read ${plural(a.sha256s.length, 'different content', 'different contents')} (${a.sha256s.length} SHA-256 values below). `,
      'Items delivered by one run may come from a different file than those of another; compare the runs table.</p>\n',
    );
  }
  const sha = a.sha256s.length === 0 ? '<span class="none">not recorded</span>' : a.sha256s.map((h) => `<div class="mono">${escapeHtml(h)}</div>`).join('\n');
  out.push(
    '<table class="kv" id="export-table"><tbody>\n',
    `<tr><th>Export id</th><td data-k="export.id">${cell(a.exportId)}</td></tr>\n`,
    `<tr><th>Tenant</th><td data-k="export.tenant">${cell(a.tenant)}</td></tr>\n`,
    `<tr><th>Archive</th><td data-k="export.archive" class="mono">${cell(a.archive)}</td></tr>\n`,
    `<tr><th>Size (bytes)</th><td data-k="export.size">${num(a.size)}</td></tr>\n`,
    `<tr><th>SHA-256</th><td data-k="export.sha256">${sha}</td></tr>\n`,
    `<tr><th>Events in the archive</th><td data-k="export.events">${num(a.eventsInArchive)}</td></tr>\n`,
    `<tr><th>Runs</th><td data-k="export.runs">${num(a.runs.length)}</td></tr>\n`,
    '</tbody></table>\n',
  );
}

function term(key: string, n: number | undefined, label: string, total = false): string {
  return `<div class="term${total ? ' total' : ''}"><span class="n" data-k="${key}">${num(n)}</span><span class="l">${label}</span></div>`;
}

/** `total = a + b + ...`, each a labelled number. */
function equation(id: string, total: [string, number | undefined, string], terms: [string, number | undefined, string][]): string {
  const sum = terms.map(([key, n, label]) => term(key, n, label)).join('<div class="op">+</div>');
  return `<div class="eq" id="${id}">${term(...total, true)}<div class="op">=</div>${sum}</div>\n`;
}

function countersSection(out: string[], a: ExportAccount): void {
  const i = a.items;
  const itemsSum = i.rejectedKept + i.rejectedNotKept + i.routed + (i.notYetRead ?? 0);
  // Items plugins added (by splitting one) are accounted for like the archive's own.
  const itemsTotal = i.inArchive === undefined ? undefined : i.inArchive + i.addedByPlugins;
  const p = a.pairs;
  const pairsSum = p.delivered + p.skipped + p.failed;
  const itemsCheck = a.shard
    ? `<p class="check" data-k="items.check">Shard ${escapeHtml(a.shard)}'s ledger: the items delivered by the other shards are counted there, not recorded here, so the items add up only across all shards (<code>status --state-dir</code> of each shard <code>--export ${escapeHtml(a.exportId)}</code>). ${a.items.notYetRead === 0 ? 'This shard read the archive to its end.' : 'This shard has NOT read the archive to its end yet.'}</p>`
    : i.inArchive === undefined
      ? `<p class="check bad" data-k="items.check">The archive's item count is not known (no run read it to the end): ${num(itemsSum)} items are accounted for so far.</p>`
      : itemsTotal === itemsSum
        ? `<p class="check good" data-k="items.check">✓ Adds up: ${num(i.rejectedKept)} + ${num(i.rejectedNotKept)} + ${num(i.routed)} + ${num(i.notYetRead ?? 0)} = ${num(itemsSum)}.</p>`
        : `<p class="check bad" data-k="items.check">✗ Does not add up: the terms make ${num(itemsSum)}, the archive holds ${num(itemsTotal)} (a difference of ${num(Math.abs(itemsTotal! - itemsSum))}).</p>`;
  const pairsCheck =
    p.total === pairsSum
      ? `<p class="check good" data-k="pairs.check">✓ Adds up: ${num(p.delivered)} + ${num(p.skipped)} + ${num(p.failed)} = ${num(pairsSum)}.</p>`
      : `<p class="check bad" data-k="pairs.check">✗ Does not add up: the terms make ${num(pairsSum)}, ${num(p.total)} pairs were routed (a difference of ${num(Math.abs(p.total - pairsSum))}).</p>`;
  out.push(
    '<h2 id="counters">Counters</h2>\n',
    '<p>Items: every event of the archive (and every item a plugin added) is rejected, or routed to at least one mailbox, or not read yet.</p>\n',
    equation('eq-items', ['items.inArchive', itemsTotal, i.addedByPlugins > 0 ? `items: ${num(i.inArchive)} in the archive + ${num(i.addedByPlugins)} added by plugins` : 'items in the archive'], [
      ['items.rejectedKept', i.rejectedKept, 'rejected, original kept'],
      ['items.rejectedNotKept', i.rejectedNotKept, 'rejected, NOT kept'],
      ['items.routed', i.routed, 'routed to mailboxes'],
      ['items.notYetRead', i.notYetRead, 'not read by any run yet'],
    ]),
    itemsCheck,
    '\n<p>Pairs: a routed item gives one (mailbox, item) pair per mailbox it is for; each pair is counted once, by its final outcome across the runs.</p>\n',
    equation('eq-pairs', ['pairs.total', p.total, '(mailbox, item) pairs routed'], [
      ['pairs.delivered', p.delivered, 'delivered'],
      ['pairs.skipped', p.skipped, 'skipped (already there)'],
      ['pairs.failed', p.failed, 'failed'],
    ]),
    pairsCheck,
    '\n',
  );
}

/** Whole hours from `YYYY-MM-DDTHH` (UTC), or NaN. */
function hourIndex(hour: string): number {
  const t = Date.parse(`${hour}:00:00Z`);
  return Number.isNaN(t) ? NaN : Math.round(t / 3_600_000);
}

function hourLabel(index: number): string {
  return new Date(index * 3_600_000).toISOString().slice(0, 13);
}

/** A round number at or above `n` for the chart's scale (1, 2, 5 × 10^k). */
function niceCeiling(n: number): number {
  if (n <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 5, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}

function chartSection(out: string[], a: ExportAccount): void {
  out.push('<h2 id="chart">Items over the day</h2>\n');
  const given = a.hours.filter((h) => !Number.isNaN(hourIndex(h.hour)));
  if (given.length === 0) {
    out.push('<p class="none">No item has a recorded time.</p>\n');
    return;
  }
  const byIndex = new Map<number, { delivered: number; rejected: number; failed: number }>();
  for (const h of given) {
    const k = hourIndex(h.hour);
    const had = byIndex.get(k) ?? { delivered: 0, rejected: 0, failed: 0 };
    byIndex.set(k, { delivered: had.delivered + h.delivered, rejected: had.rejected + h.rejected, failed: had.failed + h.failed });
  }
  const keys = [...byIndex.keys()].sort((x, y) => x - y);
  let first = keys[0]!;
  let last = keys[keys.length - 1]!;
  // One day of one export: show its 24 hours, empty ones too; a longer span shows every hour
  // between (up to a week), beyond that only the hours that have items.
  const dayStart = Math.floor(first / 24) * 24;
  if (last - dayStart < 24) {
    first = dayStart;
    last = dayStart + 23;
  }
  const slots = last - first < 24 * 7 ? Array.from({ length: last - first + 1 }, (_, n) => first + n) : keys;
  const rows = slots.map((k) => ({ k, ...(byIndex.get(k) ?? { delivered: 0, rejected: 0, failed: 0 }) }));
  const max = niceCeiling(Math.max(...rows.map((r) => r.delivered + r.rejected + r.failed)));

  const W = 1000;
  const H = 280;
  const left = 56;
  const right = 12;
  const top = 12;
  const bottom = 44;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const slotW = plotW / rows.length;
  const barW = Math.max(1, slotW * 0.72);
  const y = (v: number) => top + plotH - (v / max) * plotH;
  const f = (v: number) => v.toFixed(1);
  const labelEvery = rows.length <= 48 ? 1 : Math.ceil(rows.length / 24);
  const svg: string[] = [
    `<svg id="chart-svg" viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-labelledby="chart-title" style="max-width:${W}px;display:block">`,
    `<title id="chart-title">Items per hour (UTC) by outcome, ${escapePlain(hourLabel(slots[0]!))}:00 to ${escapePlain(hourLabel(slots[slots.length - 1]!))}:59</title>`,
    `<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`,
  ];
  for (let n = 0; n <= 4; n++) {
    const v = (max * n) / 4;
    svg.push(
      `<line x1="${left}" x2="${W - right}" y1="${f(y(v))}" y2="${f(y(v))}" stroke="${n === 0 ? '#57606a' : '#d0d7de'}" stroke-width="1"/>`,
      `<text x="${left - 6}" y="${f(y(v) + 4)}" text-anchor="end" font-size="11" fill="#57606a">${num(Math.round(v))}</text>`,
    );
  }
  rows.forEach((r, n) => {
    const x = left + n * slotW + (slotW - barW) / 2;
    let base = 0;
    for (const kind of ['delivered', 'rejected', 'failed'] as const) {
      const v = r[kind];
      if (v <= 0) continue;
      svg.push(
        `<rect x="${f(x)}" y="${f(y(base + v))}" width="${f(barW)}" height="${f(y(base) - y(base + v))}" fill="${CHART_COLOURS[kind]}"><title>${escapePlain(hourLabel(r.k))}h: ${num(v)} ${kind}</title></rect>`,
      );
      base += v;
    }
    if (n % labelEvery === 0) {
      const label = hourLabel(r.k);
      svg.push(`<text x="${f(left + n * slotW + slotW / 2)}" y="${H - bottom + 15}" text-anchor="middle" font-size="11" fill="#1b1f24">${label.slice(11, 13)}</text>`);
      if (n === 0 || r.k % 24 === 0) svg.push(`<text x="${f(left + n * slotW)}" y="${H - bottom + 31}" font-size="11" fill="#57606a">${escapePlain(label.slice(0, 10))}</text>`);
    }
  });
  svg.push('</svg>');
  out.push(
    '<p class="legend">',
    ...(['delivered', 'rejected', 'failed'] as const).map((k) => `<span><i style="background:${CHART_COLOURS[k]}"></i>${k}</span>`),
    '<span class="none">by the hour of each item\'s time (UTC)</span></p>\n',
    svg.join('\n'),
    '\n<details><summary>The numbers of the chart</summary>\n<table id="hours"><thead><tr><th>Hour (UTC)</th><th class="n">Delivered</th><th class="n">Rejected</th><th class="n">Failed</th></tr></thead><tbody>\n',
    ...rows
      .filter((r) => r.delivered + r.rejected + r.failed > 0)
      .map((r) => `<tr><td>${escapeHtml(hourLabel(r.k))}:00</td><td class="n">${num(r.delivered)}</td><td class="n">${num(r.rejected)}</td><td class="n">${num(r.failed)}</td></tr>\n`),
    '</tbody></table></details>\n',
  );
}

const ENDED: Record<RunOfExport['ended'], string> = {
  summary: 'finished (summary)',
  failure: 'failed before delivering',
  killed: 'no summary (killed, or its records could not be written)',
};

/** The first 12 hex digits of a hash, enough to tell the archive's SHA-256 values apart (the table above has them in full). */
function shortHash(h: string | undefined): string {
  if (!h) return '<span class="none">—</span>';
  return h.length > 14 ? `${escapeHtml(h.slice(0, 12))}…` : escapeHtml(h);
}

function runsSection(out: string[], runs: RunOfExport[], sha256s: string[]): void {
  out.push(
    `<h2 id="runs">Runs (${num(runs.length)})</h2>\n`,
    '<table id="runs-table" class="fixed">',
    cols([9, 8, 8, 10, 10, 8, 4, 8, 7, 7, 7, 7, 7]),
    '<thead><tr><th>Run</th><th>Command</th><th>Host</th><th>Started</th><th>Finished</th><th>Ended</th><th class="n">Exit</th><th>Problem</th><th>Archive SHA-256</th>',
    '<th class="n">Delivered</th><th class="n">Skipped</th><th class="n">Failed</th><th class="n">Rejected</th></tr></thead><tbody>\n',
  );
  for (const r of runs) {
    const changed = sha256s.length > 1 && r.sha256 !== undefined && r.sha256 !== sha256s[0];
    out.push(
      `<tr class="${r.ended}"><td class="mono">${cell(r.runId)}</td><td>${cell(r.command)}</td><td>${cell(r.host)}</td><td>${time(r.startedAt)}</td><td>${time(r.finishedAt)}</td>`,
      `<td>${ENDED[r.ended] ?? escapeHtml(r.ended)}</td><td class="n">${r.exitCode === undefined ? '<span class="none">—</span>' : num(r.exitCode)}</td><td>${cell(r.problem)}</td><td class="mono${changed ? ' bad' : ''}">${shortHash(r.sha256)}</td>`,
      `<td class="n">${num(r.delivered)}</td><td class="n">${num(r.skipped)}</td><td class="n">${num(r.failed)}</td><td class="n">${num(r.rejected)}</td></tr>\n`,
    );
  }
  out.push('</tbody></table>\n');
}

function mailboxesSection(out: string[], mailboxes: MailboxAccount[]): void {
  let d = 0;
  let s = 0;
  let f = 0;
  out.push(
    `<h2 id="mailboxes">Mailboxes (${num(mailboxes.length)})</h2>\n`,
    '<table id="mailboxes-table"><thead><tr><th>Mailbox</th><th class="n">Delivered</th><th class="n">Skipped (already there)</th><th class="n">Failed</th><th>Runs</th></tr></thead><tbody>\n',
  );
  for (const m of mailboxes) {
    d += m.delivered;
    s += m.skipped;
    f += m.failed;
    out.push(
      `<tr${m.failed > 0 ? ' class="failed"' : ''}><td>${cell(m.mailbox)}</td><td class="n">${num(m.delivered)}</td><td class="n">${num(m.skipped)}</td><td class="n">${num(m.failed)}</td>`,
      `<td class="mono">${m.runs.map((r) => escapeHtml(r)).join(', ')}</td></tr>\n`,
    );
  }
  out.push(
    `</tbody><tfoot><tr><th>All mailboxes</th><th class="n" data-k="mailboxes.delivered">${num(d)}</th><th class="n" data-k="mailboxes.skipped">${num(s)}</th><th class="n" data-k="mailboxes.failed">${num(f)}</th><th></th></tr></tfoot></table>\n`,
  );
}

function reasonsSection(out: string[], a: ExportAccount): void {
  const reasons = Object.entries(a.rejectsByReason).sort(([x, m], [y, n]) => n - m || (x < y ? -1 : x > y ? 1 : 0));
  const total = reasons.reduce((sum, [, n]) => sum + n, 0);
  out.push(`<h2 id="rejects">Rejects by reason (${num(total)})</h2>\n`);
  if (reasons.length === 0) {
    out.push('<p>No item was rejected.</p>\n');
    return;
  }
  out.push('<table id="reasons-table"><thead><tr><th>Reason</th><th class="n">Items</th></tr></thead><tbody>\n');
  for (const [reason, n] of reasons) out.push(`<tr><td>${cell(reason)}</td><td class="n">${num(n)}</td></tr>\n`);
  out.push(`</tbody><tfoot><tr><th>All reasons</th><th class="n" data-k="rejects.total">${num(total)}</th></tr></tfoot></table>\n`);
}

/** `problems`: those the account lists (see ExportAccount.problems); `count`: all of them. */
function problemsSection(out: string[], problems: ItemProblem[], count: ProblemCount, meta: ReportMeta): void {
  const limit = Math.max(0, meta.maxItemRows ?? DEFAULT_MAX_ITEM_ROWS);
  out.push(
    `<h2 id="problems">Rejected and failed items (${num(count.total)})</h2>\n`,
    `<p data-k="problems.split">${plural(count.rejectedKept, 'rejected item')} kept in the rejects folder, ${plural(count.notKept, 'rejected item')} that could not be kept, `,
    `${plural(count.total - count.rejectedKept - count.notKept, 'failed (mailbox, item) pair')}. Rejected items reach no mailbox; a failed pair did not reach its mailbox.</p>\n`,
  );
  if (problems.length === 0) return;
  // Rejected first, then failed; by reason within each; the ledger's order otherwise (stable sort).
  const order = problems.map((_, n) => n);
  order.sort((x, y) => {
    const p = problems[x]!;
    const q = problems[y]!;
    if (p.outcome !== q.outcome) return p.outcome === 'rejected' ? -1 : 1;
    return p.reason < q.reason ? -1 : p.reason > q.reason ? 1 : x - y;
  });
  out.push(
    '<table id="problems-table" class="fixed">',
    cols([7, 10, 11, 9, 12, 20, 13, 8, 10]),
    '<thead><tr><th>Outcome</th><th>Reason</th><th>Item</th><th>Conversation</th><th>Mailbox</th><th>Detail</th><th>Original kept at</th><th>Run</th><th>At</th></tr></thead><tbody>\n',
  );
  const shown = Math.min(limit, order.length);
  for (let n = 0; n < shown; n++) {
    const p = problems[order[n]!]!;
    const keptAt = p.kept ? escapeHtml(p.kept) : p.outcome === 'rejected' || p.mailbox === null ? '<span class="bad">not kept</span>' : '<span class="none">—</span>';
    out.push(
      `<tr class="${p.outcome}"><td>${escapeHtml(p.outcome)}</td><td>${cell(p.reason)}</td><td class="mono">${cell(p.itemId)}</td><td class="mono">${cell(p.conversationId)}</td>`,
      `<td>${cell(p.mailbox)}</td><td>${cell(p.detail)}</td><td class="mono">${keptAt}</td><td class="mono">${cell(p.runId)}</td><td>${time(p.at)}</td></tr>\n`,
    );
  }
  out.push('</tbody></table>\n');
  if (count.total > shown) {
    const where = meta.csv ? `the CSV item list <span class="mono">${escapeHtml(meta.csv)}</span>` : 'the CSV item list (<span class="mono">report --csv FILE</span>)';
    out.push(`<p class="more" data-k="problems.more">… and ${plural(count.total - shown, 'more item')} not listed here: every one is in ${where}.</p>\n`);
  }
}

function ledgerSection(out: string[], l: LedgerCheck, ok: boolean): void {
  const signature =
    l.signature === 'verified'
      ? '<span class="good">verified</span> with the public key given'
      : l.signature === 'failed'
        ? '<span class="bad">FAILED</span>: a checkpoint signature does not verify with the public key given'
        : l.signature === 'unsigned'
          ? '<span class="bad">unsigned</span>: the runs had no signing key'
          : 'not checked (no public key was given)';
  out.push(
    `<h2 id="ledger">Ledger</h2>\n<p class="${ok ? 'good' : 'bad'}" data-k="ledger.verdict">${ok ? 'The ledger passes its check.' : 'The ledger FAILS its check.'}</p>\n`,
    '<table class="kv" id="ledger-table"><tbody>\n',
    `<tr><th>File</th><td class="mono" data-k="ledger.path">${cell(l.path)}</td></tr>\n`,
    `<tr><th>Records</th><td data-k="ledger.records">${num(l.records)}</td></tr>\n`,
    `<tr><th>Head (SHA-256 of the last line)</th><td class="mono" data-k="ledger.head">${cell(l.head)}</td></tr>\n`,
    `<tr><th>Hash chain</th><td data-k="ledger.chain">${l.chainIntact ? '<span class="good">intact</span>: no record changed, removed, re-ordered or cut' : '<span class="bad">BROKEN</span>'}</td></tr>\n`,
    `<tr><th>Checkpoints</th><td data-k="ledger.checkpoints">${num(l.checkpoints)}</td></tr>\n`,
    `<tr><th>Signature</th><td data-k="ledger.signature">${signature}</td></tr>\n`,
    `<tr><th>Records after the last checkpoint</th><td data-k="ledger.unsealed">${num(l.unsealed)}${l.unsealed > 0 ? ' (not covered by a signature: a run killed, or one running now)' : ''}</td></tr>\n`,
    '</tbody></table>\n',
  );
  if (l.problems.length > 0) {
    out.push('<table id="ledger-problems"><thead><tr><th>Problems the check found</th></tr></thead><tbody>\n');
    for (const p of l.problems) out.push(`<tr><td>${escapeHtml(p)}</td></tr>\n`);
    out.push('</tbody></table>\n');
  }
}
