import test from 'ava';
import { createHash } from 'node:crypto';
import { exportIdOf, messageVersion, withoutExportId } from '../src/formats/message/export-id.js';

// The version is what the Maildir sink's `.C<hash>` names, the IMAP sink's X-Pivot-Version and
// the Graph sink's stamp are made of, in folders written by every earlier release: the bytes it
// hashes must stay those the first definition took out, a RegExp over the header read as latin1.
function reference(message: Buffer): Buffer {
  let end = message.indexOf('\r\n\r\n');
  if (end < 0) end = message.indexOf('\n\n');
  if (end < 0) end = message.length;
  const head = message.toString('latin1', 0, end);
  const without = head.replace(/(^|\n)x-pivot-export-id:[^\n]*(?:\n[ \t][^\n]*)*/i, '$1');
  return without.length === head.length ? message : Buffer.concat([Buffer.from(without, 'latin1'), message.subarray(end)]);
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** The field's value as the first definition read it. */
function referenceExportId(message: Buffer): string | undefined {
  let end = message.indexOf('\r\n\r\n');
  if (end < 0) end = message.indexOf('\n\n');
  if (end < 0) end = message.length;
  return /(?:^|\n)x-pivot-export-id:[ \t]*([^\r\n]*)/i.exec(message.toString('latin1', 0, end))?.[1]?.trimEnd();
}

function check(t: import('ava').ExecutionContext, message: Buffer, label: string): void {
  const expected = reference(message);
  t.true(withoutExportId(message).equals(expected), label);
  t.is(messageVersion(Buffer.from(message)), sha256(expected), label);
  t.is(exportIdOf(message), referenceExportId(message), label);
}

test('the field is taken out as the first definition took it: first field only, any case, folded lines, header only', (t) => {
  const cases: Record<string, string> = {
    'CRLF, in the middle': 'From: a@x\r\nX-Pivot-Export-Id: acme-1\r\nSubject: s\r\n\r\nbody\r\n',
    'first line': 'X-Pivot-Export-Id: acme-1\r\nFrom: a@x\r\n\r\nb',
    'last line of the header': 'From: a@x\r\nx-pivot-export-id: acme-1\r\n\r\nX-Pivot-Export-Id: in the body\r\n',
    'folded over two lines, then a tab': 'From: a@x\r\nX-PIVOT-EXPORT-ID: acme\r\n  -1\r\n\tmore\r\nTo: b@x\r\n\r\nb',
    'two fields: the first goes': 'X-Pivot-Export-Id: one\r\nX-Pivot-Export-Id: two\r\n\r\nb',
    'LF only': 'From: a@x\nX-Pivot-Export-Id: e\nTo: b\n\nbody',
    'no blank line: the whole message is the header': 'From: a@x\r\nX-Pivot-Export-Id: e',
    'name only, at the very end': 'From: a@x\nX-Pivot-Export-Id:',
    'name cut short at the end': 'From: a@x\nX-Pivot-Export-I',
    'not at a line start': 'From: a@x\r\nComment: X-Pivot-Export-Id: e\r\n\r\nb',
    'a space before the colon is another name': 'X-Pivot-Export-Id : e\r\n\r\nb',
    'carriage return alone is no line start': 'From: a\rX-Pivot-Export-Id: e\r\n\r\nb',
    'folding that reaches the blank line': 'X-Pivot-Export-Id: e\r\n \r\n\r\nb',
    'none': 'From: a@x\r\n\r\nX-Pivot-Export-Id: body\r\n',
    empty: '',
  };
  for (const [label, text] of Object.entries(cases)) check(t, Buffer.from(text, 'latin1'), label);
  // A name whose letters differ by more than case (0x0D | 0x20 is "-"): not the field.
  check(t, Buffer.from('X\rPivot-Export-Id: e\r\n\r\nb', 'latin1'), 'a byte that is the dash with bit 5 set');
  check(t, Buffer.from([...Buffer.from('From: a\n'), 0xd8, ...Buffer.from('-pivot-export-id: e\n\nb')]), 'a latin1 letter whose case is not ASCII');
});

test('random headers from a small alphabet: the same bytes taken out as the first definition', (t) => {
  // Seeded, so a failure shows again; the alphabet makes names, folds and blank lines common.
  let seed = 0x2545f491;
  const next = () => ((seed = Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0);
  const pieces = ['X-Pivot-Export-Id:', 'x-pivot-export-id:', 'X-PIVOT-EXPORT-ID: e', ' e\u00a0', 'acme-1', '\r\n', '\n', ' ', '\t', 'a', ':', '\r', 'From: x', '\r\n\r\n', '\n\n', '\u00e9'];
  for (let n = 0; n < 3000; n++) {
    let text = '';
    const count = next() % 14;
    for (let i = 0; i < count; i++) text += pieces[next() % pieces.length];
    check(t, Buffer.from(text, 'latin1'), JSON.stringify(text));
  }
});
