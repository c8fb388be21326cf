import test from 'ava';
import { canonicalDomain, canonicalMailbox, checkAddress, needsSmtpUtf8, parseAddress } from '../src/formats/address/index.js';

test('canonical mailbox keys: local part NFC and lower-cased, domain as lower-case A-label', (t) => {
  const same: [string, string][] = [
    ['anna@BÜCHER.example', 'anna@xn--bcher-kva.example'],
    ['anna@xn--bcher-kva.example', 'anna@xn--bcher-kva.example'],
    ['ANNA@XN--BCHER-KVA.EXAMPLE', 'anna@xn--bcher-kva.example'],
    ['Jürgen@acme.example', 'jürgen@acme.example'],
    ['JU\u0308RGEN@acme.example', 'jürgen@acme.example'],
    ['用户@例子.广告', '用户@xn--fsqu00a.xn--4rr70v'],
    ['用户@例子。广告', '用户@xn--fsqu00a.xn--4rr70v'],
    ['用户@XN--FSQU00A.xn--4rr70v', '用户@xn--fsqu00a.xn--4rr70v'],
    ['  jane.doe+desk@ACME.example  ', 'jane.doe+desk@acme.example'],
    ["o'brien.ü@acme.example", "o'brien.ü@acme.example"],
    ['😀@acme.example', '😀@acme.example'],
  ];
  for (const [input, key] of same) t.is(canonicalMailbox(input), key, JSON.stringify(input));
});

test('the header form: ASCII local part with the A-label; a non-ASCII local part as UTF-8 with the U-label', (t) => {
  t.like(parseAddress('Anna@BÜCHER.example'), { header: 'Anna@xn--bcher-kva.example', smtpUtf8: false, domain: 'xn--bcher-kva.example' });
  t.like(parseAddress('Ju\u0308rgen@ACME.example'), { header: 'Jürgen@acme.example', local: 'Jürgen', smtpUtf8: true });
  t.like(parseAddress('用户@xn--fsqu00a.xn--4rr70v'), { header: '用户@例子.广告', smtpUtf8: true });
});

test('invalid addresses say why', (t) => {
  const invalid: [unknown, RegExp][] = [
    [undefined, /no address/],
    [null, /no address/],
    [42, /not text/],
    ['', /empty/],
    ['jane.acme.example', /no @/],
    ['a@b@acme.example', /more than one @/],
    ['@acme.example', /local part .* empty/],
    ['jane@', /domain .* empty/],
    ['a b@acme.example', /space/],
    ['a\u00a0b@acme.example', /space/],
    ['a..b@acme.example', /two dots/],
    ['.a@acme.example', /starts or ends with a dot/],
    ['a.@acme.example', /starts or ends with a dot/],
    ['a\r\nb@acme.example', /control character \(U\+000D\)/],
    ['jürgen\u0000@acme.example', /control character \(U\+0000\)/],
    ['a\u0085b@acme.example', /control character/],
    ['ü\u202e@acme.example', /U\+202E/],
    ['a\u00adb@acme.example', /U\+00AD/],
    ['a\ufffd@acme.example', /U\+FFFD/],
    ['\ud800x@acme.example', /surrogate/],
    ['a"b@acme.example', /needs quoting/],
    ['(x)@acme.example', /needs quoting/],
    ['x@xn--zz.example', /IDNA/],
    ['x@a/b.example', /"\/"/],
    ['x@a_b.example', /"_"/],
    ['x@[1.2.3.4]', /"\["/],
    ['x@1.2.3.4', /IP address/],
    ['x@acme', /two labels/],
    ['x@acme.example.', /empty label/],
    ['x@-acme.example', /label "-acme"/],
    ['x@exa mple.example', /space/],
    [`${'a'.repeat(65)}@acme.example`, /64 octets/],
    [`${'ü'.repeat(33)}@acme.example`, /64 octets/],
    [`x@${`${'a'.repeat(63)}.`.repeat(4)}com`, /253/],
  ];
  for (const [input, why] of invalid) {
    const check = checkAddress(input);
    t.false(check.ok, JSON.stringify(input));
    if (!check.ok) t.regex(check.reason, why, JSON.stringify(input));
    t.is(canonicalMailbox(input), undefined);
  }
  t.truthy(canonicalMailbox(`${'a'.repeat(64)}@acme.example`));
  t.truthy(canonicalMailbox(`${'ü'.repeat(32)}@acme.example`));
});

test('needsSmtpUtf8: only a non-ASCII local part needs it', (t) => {
  t.true(needsSmtpUtf8('jürgen@acme.example'));
  t.true(needsSmtpUtf8('用户@xn--fsqu00a.xn--4rr70v'));
  t.false(needsSmtpUtf8('anna@bücher.example'));
  t.false(needsSmtpUtf8('anna@xn--bcher-kva.example'));
  t.false(needsSmtpUtf8('not an address'));
});

test('canonicalDomain: A-label, lower case; undefined when not a host name', (t) => {
  t.is(canonicalDomain('BÜCHER.example'), 'xn--bcher-kva.example');
  t.is(canonicalDomain('ＡＣＭＥ.example'), 'acme.example');
  for (const bad of ['', 'acme', 'a b.example', 'a/b.example', '1.2.3.4', 'xn--zz.example', 'acme..example']) t.is(canonicalDomain(bad), undefined, bad);
});
