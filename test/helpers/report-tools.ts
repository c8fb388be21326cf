// Independent readers of what `report` writes (Python's html.parser, csv and zlib: none of our
// code), and headless Chromium (Debian package chromium) to render the HTML as a browser does.
import { execFile, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { REPO_ROOT } from './cli.js';
import { withServer } from './sink-conformance.js';

const run = promisify(execFile);

export const PYTHON_MISSING = spawnSync('python3', ['--version']).status === 0 ? undefined : 'python3 is not installed: the independent HTML, CSV and PNG readers cannot run. `npm test` installs it as root.';

export const CHROMIUM_BINARY = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/local/bin/chromium'].find((p) => spawnSync(p, ['--version']).status === 0);
export const CHROMIUM_MISSING = CHROMIUM_BINARY ? undefined : 'Chromium is not installed (Debian package chromium): the report cannot be rendered. `npm test` installs it as root.';

/** Registers tests that need tools the test command installs, as `withServer` does for servers (CI: a failure; elsewhere: a visible skip). */
export function needingTools(what: string, missing: (string | undefined)[], register: () => void): void {
  withServer(what, missing.filter((m): m is string => m !== undefined).join('; ') || undefined, register);
}

async function python(script: string, args: string[], input?: string): Promise<unknown> {
  const child = execFile('python3', ['-c', script, ...args], { maxBuffer: 1 << 30, encoding: 'utf8' });
  const done = new Promise<string>((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: string) => (stdout += d));
    child.stderr!.on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`python3 exited with ${code}: ${stderr}`))));
  });
  child.stdin!.end(input ?? '');
  return JSON.parse(await done) as unknown;
}

/** What Python's html.parser saw in a document. */
export interface ParsedHtml {
  doctype: string | null;
  /** Every start tag, in order. */
  tags: string[];
  /** Every attribute: [tag, name, value]. */
  attrs: [string, string, string | null][];
  /** The text of each element with a `data-k` attribute (entities decoded), by that key. */
  keyed: Record<string, string>;
  /** Each table's rows (thead, tbody, tfoot), each row its cells' text (whitespace folded), by the table's id. */
  tables: Record<string, string[][]>;
  /** The document's text outside `<style>`, entities decoded. */
  text: string;
  title: string;
  /** End tags that did not close the open element (the document is not well nested). */
  errors: string[];
  comments: number;
}

const HTML_PARSER = String.raw`
import sys, json
from html.parser import HTMLParser
VOID = {'area','base','br','col','embed','hr','img','input','link','meta','source','track','wbr'}
class P(HTMLParser):
    def __init__(s):
        super().__init__(convert_charrefs=True)
        s.doctype = None; s.stack = []; s.tags = []; s.attrs = []; s.keyed = {}; s.tables = {}
        s.errors = []; s.text = []; s.title = []; s.comments = 0
        s.table = None; s.row = None; s.cell = None; s.capture = []
    def handle_decl(s, d): s.doctype = d
    def handle_comment(s, d): s.comments += 1
    def handle_pi(s, d): s.errors.append('processing instruction')
    def handle_starttag(s, tag, attrs):
        s.tags.append(tag)
        s.attrs.extend([tag, k, v] for k, v in attrs)
        a = dict(attrs)
        if tag == 'table':
            s.table = a.get('id') or 'table%d' % len(s.tables); s.tables[s.table] = []
        elif tag == 'tr' and s.table is not None:
            s.row = []; s.tables[s.table].append(s.row)
        elif tag in ('td', 'th') and s.row is not None:
            s.cell = []
        if tag not in VOID:
            s.stack.append(tag)
            if 'data-k' in a: s.capture.append([a['data-k'], [], len(s.stack)])
    def handle_startendtag(s, tag, attrs):
        s.tags.append(tag)
        s.attrs.extend([tag, k, v] for k, v in attrs)
    def handle_endtag(s, tag):
        if tag in VOID: return
        if not s.stack or s.stack[-1] != tag:
            s.errors.append('</%s> closes <%s>' % (tag, s.stack[-1] if s.stack else None)); return
        while s.capture and s.capture[-1][2] == len(s.stack):
            k, parts, _ = s.capture.pop()
            if k in s.keyed: s.errors.append('data-k %s twice' % k)
            s.keyed[k] = ' '.join(''.join(parts).split())
        s.stack.pop()
        if tag in ('td', 'th') and s.cell is not None:
            s.row.append(' '.join(''.join(s.cell).split())); s.cell = None
        elif tag == 'tr': s.row = None
        elif tag == 'table': s.table = None
    def handle_data(s, d):
        if 'style' in s.stack: return
        if s.stack and s.stack[-1] == 'title' and 'svg' not in s.stack: s.title.append(d)
        s.text.append(d)
        for c in s.capture: c[1].append(d)
        if s.cell is not None: s.cell.append(d)
p = P(); p.feed(sys.stdin.read()); p.close()
if p.stack: p.errors.append('left open: ' + ' '.join(p.stack))
print(json.dumps({'doctype': p.doctype, 'tags': p.tags, 'attrs': p.attrs, 'keyed': p.keyed, 'tables': p.tables,
  'text': ''.join(p.text), 'title': ''.join(p.title), 'errors': p.errors, 'comments': p.comments}))
`;

/** Parses HTML with Python's html.parser: a parser independent of the code that wrote it. */
export async function parseHtmlIndependently(html: string): Promise<ParsedHtml> {
  return (await python(HTML_PARSER, [], html)) as ParsedHtml;
}

const CSV_READER = String.raw`
import csv, json, sys
with open(sys.argv[1], newline='', encoding='utf-8') as f:
    print(json.dumps(list(csv.reader(f, strict=True))))
`;

/** Reads a CSV file with Python's csv module (RFC 4180 dialect, strict). */
export async function readCsvIndependently(path: string): Promise<string[][]> {
  return (await python(CSV_READER, [path])) as string[][];
}

/** What a PNG holds, decoded with Python's zlib: size, how much is not background, colours asked for. */
export interface PngContent {
  width: number;
  height: number;
  /** Pixels that differ from the background (the top-left pixel) by more than a little. */
  nonBackground: number;
  /** Rows with at least one such pixel. */
  rowsWithContent: number;
  /** Pixels within 3 of each colour asked for (hex `#rrggbb`), by colour. */
  colours: Record<string, number>;
}

const PNG_READER = String.raw`
import json, struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
wanted = [c for c in sys.argv[2:]]
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
pos, idat = 8, []
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if zlib.crc32(kind + body) != struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])[0]: raise SystemExit('bad CRC in ' + kind.decode())
    if kind == b'IHDR':
        w, h, depth, ctype, _, _, interlace = struct.unpack('>IIBBBBB', body)
        if depth != 8 or ctype not in (2, 6) or interlace: raise SystemExit('unexpected PNG format %r' % ((depth, ctype, interlace),))
    elif kind == b'IDAT': idat.append(body)
    elif kind == b'IEND': break
    pos += 12 + n
bpp = 3 if ctype == 2 else 4
raw = zlib.decompress(b''.join(idat))
stride = w * bpp
assert len(raw) == h * (stride + 1), 'IDAT holds %d bytes, not %d' % (len(raw), h * (stride + 1))
targets = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in wanted]
counts = [0] * len(targets)
prev = bytearray(stride); bg = None; non_bg = 0; rows = 0
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    if f == 1:
        for i in range(bpp, stride): line[i] = (line[i] + line[i - bpp]) & 255
    elif f == 2:
        line = bytearray((a + b) & 255 for a, b in zip(line, prev))
    elif f == 3:
        for i in range(stride): line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
    elif f == 4:
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0; b = prev[i]; c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c; pa = abs(p - a); pb = abs(p - b); pc = abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    elif f != 0: raise SystemExit('bad filter %d' % f)
    prev = line
    if bg is None: bg = tuple(line[0:3])
    content = False
    for x in range(0, stride, bpp):
        r, g, b = line[x], line[x + 1], line[x + 2]
        if abs(r - bg[0]) + abs(g - bg[1]) + abs(b - bg[2]) > 24:
            non_bg += 1; content = True
            for k, t in enumerate(targets):
                if abs(r - t[0]) <= 3 and abs(g - t[1]) <= 3 and abs(b - t[2]) <= 3: counts[k] += 1
    if content: rows += 1
print(json.dumps({'width': w, 'height': h, 'nonBackground': non_bg, 'rowsWithContent': rows, 'colours': dict(zip(wanted, counts))}))
`;

/** Decodes a PNG (8-bit RGB or RGBA, not interlaced) with Python's zlib and counts its content. */
export async function readPngIndependently(path: string, colours: string[] = []): Promise<PngContent> {
  return (await python(PNG_READER, [path, ...colours])) as PngContent;
}

/** Renders an HTML file to a PNG with scripts/render-report-png.sh (headless Chromium). */
export async function renderPng(htmlPath: string, pngPath: string, size = '1280x2000'): Promise<void> {
  await run('bash', [join(REPO_ROOT, 'scripts', 'render-report-png.sh'), htmlPath, pngPath, size], { env: { ...process.env, CHROMIUM: CHROMIUM_BINARY }, timeout: 120_000 });
}

/** The DOM headless Chromium built from an HTML file (`--dump-dom`), serialised. */
export async function dumpDom(htmlPath: string): Promise<string> {
  const profile = await mkdtemp(join(tmpdir(), 'pivot-chromium-'));
  try {
    const { stdout } = await run(
      CHROMIUM_BINARY!,
      ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-extensions', '--disable-background-networking', '--disable-component-update', `--user-data-dir=${profile}`, '--dump-dom', pathToFileURL(htmlPath).href],
      { maxBuffer: 1 << 28, timeout: 120_000 },
    );
    return stdout;
  } finally {
    await rm(profile, { recursive: true, force: true });
  }
}
