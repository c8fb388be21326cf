// The report as a browser shows it: headless Chromium renders it to a PNG (decoded and counted
// with Python's zlib) and dumps the DOM it built (read with Python's html.parser); and the CSP
// the report carries stops what a bug letting markup through would load or run.
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { BANNER_COLOURS, renderReport } from '../src/report/html.js';
import { EXPORT_ID, HOSTILE, reportFixture } from './helpers/report-account.js';
import { CHROMIUM_MISSING, PYTHON_MISSING, dumpDom, needingTools, parseHtmlIndependently, readPngIndependently, renderPng } from './helpers/report-tools.js';
import { tempDir } from './helpers/tmp.js';

const META = { generatedAt: '2026-11-24T08:00:00.000Z', tool: 'pivot-archive 0.2.0' };
const DELIVERED_BAR = '#4c9a5f';

needingTools('report rendering (headless Chromium)', [CHROMIUM_MISSING, PYTHON_MISSING], () => {
  for (const [name, options, banner, other] of [
    ['INCOMPLETE (two failed pairs, one reject not kept)', { failed: true }, BANNER_COLOURS.incomplete, BANNER_COLOURS.complete],
    ['COMPLETE', {}, BANNER_COLOURS.complete, BANNER_COLOURS.incomplete],
  ] as const) {
    test(`Chromium renders the ${name} report: a page of content, the banner in its colour, the chart`, async (t) => {
      const dir = await tempDir(t);
      const { account, ledger } = reportFixture(options);
      const html = join(dir, 'report.html');
      const png = join(dir, 'report.png');
      await writeFile(html, renderReport(account, ledger, META));
      await renderPng(html, png);
      const content = await readPngIndependently(png, [banner, other, DELIVERED_BAR]);
      t.log(JSON.stringify(content));
      t.is(content.width, 1280);
      t.is(content.height, 2000);
      const pixels = content.width * content.height;
      // Text, tables, the banner and the chart: a real page, not a blank or an error page.
      t.true(content.nonBackground / pixels > 0.08, `${((100 * content.nonBackground) / pixels).toFixed(1)}% of the pixels are not background`);
      t.true(content.rowsWithContent / content.height > 0.6, `${content.rowsWithContent} of ${content.height} rows have content`);
      // The banner: a block of its colour (over 1,200 x 60 pixels), the other colour at most in a few glyphs.
      t.true(content.colours[banner]! > 60_000, `${content.colours[banner]} pixels of the banner colour ${banner}`);
      t.true(content.colours[other]! < 5_000, `${content.colours[other]} pixels of ${other}`);
      // The chart's bars are drawn (inline SVG rendered, nothing blocked it).
      t.true(content.colours[DELIVERED_BAR]! > 5_000, `${content.colours[DELIVERED_BAR]} pixels of the delivered bars`);
    });
  }

  test("Chromium's DOM of the report holds the counters, the verdict and the hostile strings as text, and no script", async (t) => {
    const dir = await tempDir(t);
    const { account, ledger } = reportFixture({ failed: true });
    const html = join(dir, 'report.html');
    await writeFile(html, renderReport(account, ledger, META));
    const doc = await parseHtmlIndependently(await dumpDom(html));
    t.deepEqual(doc.errors, []);
    t.false(doc.tags.includes('script'));
    t.false(doc.tags.includes('iframe'));
    t.false(doc.tags.includes('b'));
    t.is(doc.keyed.verdict, 'INCOMPLETE');
    t.is(doc.keyed.exportId, EXPORT_ID);
    t.is(doc.keyed['items.inArchive'], '1,198');
    t.is(doc.keyed['items.routed'], '1,187');
    t.is(doc.keyed['items.rejectedKept'], '10');
    t.is(doc.keyed['items.rejectedNotKept'], '1');
    t.is(doc.keyed['pairs.total'], account.pairs.total.toLocaleString('en-US'));
    t.is(doc.keyed['pairs.failed'], '2');
    t.is(doc.keyed['ledger.head'], ledger.head);
    t.is(doc.tables['mailboxes-table']!.length, 32);
    t.is(doc.tables['problems-table']!.length, 1 + account.problems.length);
    for (const s of [HOSTILE.detail, HOSTILE.host, HOSTILE.reason, HOSTILE.mailbox, HOSTILE.kept]) t.true(doc.text.includes(s), s);
    t.true(doc.text.includes('m_<script>alert("x")</script>&amp;\'"⟨U+202E⟩gnp.exe'));
  });

  test('the CSP stops markup a bug let through: nothing loads, nothing runs (and without it, both would)', async (t) => {
    const dir = await tempDir(t);
    const requests: string[] = [];
    const server = createServer((req, res) => {
      requests.push(req.url ?? '');
      res.writeHead(200, { 'content-type': req.url === '/css' ? 'text/css' : 'image/png' });
      res.end('');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const { account, ledger } = reportFixture();
    const injected = `<img src="${base}/img"><link rel="stylesheet" href="${base}/css"><style>@import url("${base}/import");</style><script>document.body.setAttribute('data-ran', 'yes')</script></body>`;
    const report = renderReport(account, ledger, META).replace('</body>', injected);
    const withCsp = join(dir, 'with-csp.html');
    await writeFile(withCsp, report);
    const dom = await dumpDom(withCsp);
    t.notRegex(dom, /<body[^>]*data-ran="yes"/, 'the injected script did not run');
    t.deepEqual(requests, [], 'nothing was fetched');

    // The control: the same page without the CSP meta loads and runs all of it.
    const without = join(dir, 'without-csp.html');
    await writeFile(without, report.replace(/<meta http-equiv="Content-Security-Policy"[^>]*>/, ''));
    const open = await dumpDom(without);
    t.regex(open, /<body[^>]*data-ran="yes"/, 'without the CSP the script runs');
    t.true(requests.includes('/img') && requests.includes('/css'), `without the CSP: ${requests.join(', ')}`);
  });
});
