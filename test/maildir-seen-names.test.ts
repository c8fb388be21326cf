// The filter a Maildir listing keeps of the names it saw: never a false "not seen" (that would be
// a second copy of a renamed message), false "seen" rare (each costs a listing), and a new seed
// per listing so the same name is not falsely seen again and again.
import test from 'ava';
import { createHash } from 'node:crypto';
import { dayOfName, dayOfTime, NameHashes } from '../src/sinks/maildir/seen-names.js';

/** A base name of ours for item `n` at `seconds`, variant `c` if given. */
function base(n: number, seconds = 1_795_000_000 + n, c?: string): string {
  const hex = createHash('sha256').update(`<m_${n}@pivot.test>`).digest('hex').slice(0, 32);
  return `${seconds}.P${hex}${c === undefined ? '' : `.C${c}`}.pivot-archive`;
}

function filterOf(names: string[], seed: number) {
  const hashes = new NameHashes();
  for (const name of names) hashes.push(name);
  return hashes.filter(seed)!;
}

test('seen names: every name added is seen; names not added are seen falsely about 1 in 2,000 at most', (t) => {
  const added = Array.from({ length: 50_000 }, (_, n) => base(n));
  const seen = filterOf(added, 12345);
  t.true(added.every((name) => seen.has(name)));
  const absent = Array.from({ length: 200_000 }, (_, n) => base(n + 1_000_000));
  const falsely = absent.filter((name) => seen.has(name)).length;
  t.log(`false "seen": ${falsely} of ${absent.length}`);
  t.true(falsely < absent.length / 1000, `${falsely} false positives`);
});

test('seen names: small filters (a folder\'s few names of the day) are as sure as large ones', (t) => {
  const absent = Array.from({ length: 100_000 }, (_, n) => base(n + 1_000_000));
  for (const count of [1, 4, 5, 19, 100, 1000]) {
    const seen = filterOf(Array.from({ length: count }, (_, n) => base(n)), 99 + count);
    const falsely = absent.filter((name) => seen.has(name)).length;
    t.log(`${count} names: ${falsely} false "seen" of ${absent.length}`);
    t.true(falsely < absent.length / 1000, `${count} names: ${falsely} false positives`);
  }
});

test('seen names: the same identity at another second, and a variant, are other names', (t) => {
  const seen = filterOf([base(1)], 7);
  t.true(seen.has(base(1)));
  t.false(seen.has(base(1, 1_795_000_002)));
  t.false(seen.has(base(1, undefined, '0123456789abcdef')));
  t.false(filterOf([base(1, undefined, '0123456789abcdef')], 7).has(base(1)));
});

test('seen names: two seeds\' false "seen" are (nearly) different names, so listing again settles a false one', (t) => {
  const added = Array.from({ length: 2_000 }, (_, n) => base(n));
  const [first, second] = [filterOf(added, 1), filterOf(added, 2)];
  const absent = Array.from({ length: 400_000 }, (_, n) => base(n + 1_000_000));
  const falselyFirst = absent.filter((name) => first.has(name));
  t.true(falselyFirst.length > 0, 'the sample is big enough to meet false positives');
  const both = falselyFirst.filter((name) => second.has(name)).length;
  t.log(`false under seed 1: ${falselyFirst.length}; under both: ${both}`);
  t.true(both <= 1);
});

test('seen names: a name\'s day is the UTC day of its seconds, before 1970 too, as a delivery\'s time reckons it', (t) => {
  t.is(dayOfName(base(0, 86_399)), 0);
  t.is(dayOfName(base(0, 86_400)), 1);
  t.is(dayOfName(base(0, -1)), -1);
  t.is(dayOfTime(-1), -1);
  t.is(dayOfTime(Date.parse('2026-11-23T23:59:59.999Z')), dayOfName(`${Math.floor(Date.parse('2026-11-23T23:59:59Z') / 1000)}.Pab.pivot-archive`));
});
